//! What the in-process tests of the master's HTTP side share: a standalone master on `127.0.0.1:0`, waited for until
//! it leads, and a reader of RecordIO event streams.

use std::time::{Duration, Instant};

use agora_proto::mesos::recordio;
use axum::http::StatusCode;
use clap::Parser;

/// A running standalone master; stopped (and its work dir removed) when dropped.
pub(crate) struct TestMaster {
    pub base: String,
    pub http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// Starts a master with `flags` and waits until it leads (it has loaded its registry and serves `/master/state`).
pub(crate) async fn start_master(flags: &[&str]) -> TestMaster {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["agora-master", "--work-dir", dir.path().to_str().unwrap()];
    args.extend_from_slice(flags);
    let flags = crate::Flags::parse_from(args);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::run(flags.config().unwrap(), listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/master/state")).send().await.map(|r| r.status()).ok() != Some(StatusCode::OK) {
        assert!(Instant::now() < deadline, "the master at {base} never served /master/state");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestMaster { base, http, _stop: stop, _dir: dir }
}

/// Reads whole RecordIO records from a streaming response.
pub(crate) struct Records {
    response: reqwest::Response,
    decoder: recordio::Decoder,
    ready: std::collections::VecDeque<Vec<u8>>,
}

impl Records {
    pub fn new(response: reqwest::Response) -> Records {
        Records { response, decoder: recordio::Decoder::default(), ready: Default::default() }
    }

    /// The next record, or `None` when the stream ends; fails the test after 10 s.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("a record within 10 s")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.ready.extend(self.decoder.feed(&bytes).expect("valid recordio")),
                None => {
                    self.decoder.finish().expect("the stream ends between records");
                    return None;
                }
            }
        }
    }
}
