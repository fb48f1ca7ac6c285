//! A small Rust client of Mesos's v1 HTTP APIs, for the end-to-end tests and the benchmark: POST a JSON call, read a
//! RecordIO event stream record by record (decoded with `agora_proto::mesos`), and a scheduler that subscribes,
//! calls with its `Mesos-Stream-Id` and waits for events. It speaks to the master over plain HTTP as any v1 client
//! would; it shares no code with the master but the message definitions.

use std::collections::VecDeque;
use std::time::Duration;

use agora_proto::mesos::codec::{self, Format, V1Message};
use agora_proto::mesos::recordio;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// `POST http://{master}{path}` with a JSON body, answered in `accept`.
pub async fn post(
    http: &reqwest::Client,
    master: &str,
    path: &str,
    body: &Value,
    accept: Format,
    stream_id: Option<&str>,
) -> Result<reqwest::Response> {
    let mut req = http
        .post(format!("http://{master}{path}"))
        .header("content-type", codec::JSON)
        .header("accept", accept.media_type())
        .body(body.to_string());
    if let Some(s) = stream_id {
        req = req.header("mesos-stream-id", s);
    }
    req.send().await.with_context(|| format!("POST {path} to {master}"))
}

/// The records of a RecordIO response, as they arrive.
pub struct RecordStream {
    response: reqwest::Response,
    decoder: recordio::Decoder,
    ready: VecDeque<Vec<u8>>,
    format: Format,
}

impl RecordStream {
    pub fn new(response: reqwest::Response, format: Format) -> RecordStream {
        RecordStream { response, decoder: recordio::Decoder::default(), ready: VecDeque::new(), format }
    }

    /// The next record, `None` at the end of the stream; an error after `timeout` without one.
    pub async fn next_record(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            let chunk = tokio::time::timeout(timeout, self.response.chunk())
                .await
                .context("no record in time")?
                .context("the stream broke")?;
            match chunk {
                Some(bytes) => self.ready.extend(self.decoder.feed(&bytes)?),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// The next record decoded as `M`.
    pub async fn next<M: V1Message>(&mut self, timeout: Duration) -> Result<Option<M>> {
        match self.next_record(timeout).await? {
            Some(r) => Ok(Some(codec::decode(&r, self.format)?)),
            None => Ok(None),
        }
    }

    /// The next record as Mesos's JSON (re-encoded from protobuf when the stream is protobuf).
    pub async fn next_json<M: V1Message>(&mut self, timeout: Duration) -> Result<Option<Value>> {
        let Some(m) = self.next::<M>(timeout).await? else { return Ok(None) };
        Ok(Some(serde_json::from_slice(&codec::encode(&m, Format::Json)?)?))
    }
}

/// The calls of one subscription (its framework id and stream id); cheap to clone, for calls from other tasks.
#[derive(Clone, Debug)]
pub struct V1Calls {
    pub http: reqwest::Client,
    pub master: String,
    pub framework_id: String,
    pub stream_id: String,
}

impl V1Calls {
    /// A call of `kind` with its payload (`null`: none); fails unless answered 202 (or 200).
    pub async fn call(&self, kind: &str, payload: Value) -> Result<()> {
        let mut body = json!({"framework_id": {"value": self.framework_id}, "type": kind});
        if !payload.is_null() {
            body[kind.to_ascii_lowercase()] = payload;
        }
        let r = post(&self.http, &self.master, "/api/v1/scheduler", &body, Format::Json, Some(&self.stream_id)).await?;
        if !r.status().is_success() {
            bail!("{kind} answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }
}

/// A framework on the v1 scheduler API, in JSON.
pub struct V1Scheduler {
    pub calls: V1Calls,
    pub events: RecordStream,
}

impl V1Scheduler {
    /// SUBSCRIBE with `framework_info` (Mesos's JSON); returns once SUBSCRIBED arrived.
    pub async fn subscribe(master: &str, framework_info: Value) -> Result<V1Scheduler> {
        let http = reqwest::Client::new();
        let body = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info}});
        let r = post(&http, master, "/api/v1/scheduler", &body, Format::Json, None).await?;
        if r.status() != reqwest::StatusCode::OK {
            bail!("SUBSCRIBE answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        }
        let stream_id = r.headers()["mesos-stream-id"].to_str()?.to_string();
        let mut events = RecordStream::new(r, Format::Json);
        let first: Value = serde_json::from_slice(&events.next_record(crate::WAIT).await?.context("no SUBSCRIBED")?)?;
        let framework_id =
            first["subscribed"]["framework_id"]["value"].as_str().with_context(|| format!("{first}"))?.to_string();
        Ok(V1Scheduler { calls: V1Calls { http, master: master.to_string(), framework_id, stream_id }, events })
    }

    pub async fn call(&self, kind: &str, payload: Value) -> Result<()> {
        self.calls.call(kind, payload).await
    }

    /// The next event (Mesos's JSON); an error if the stream ends or none comes within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Value> {
        let record = self.events.next_record(timeout).await?.context("the event stream ended")?;
        Ok(serde_json::from_slice(&record)?)
    }
}
