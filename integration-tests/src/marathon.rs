//! `agora-marathon` for end-to-end tests: start it against a [`Cluster`], call its REST API, follow its event
//! stream, and a small HTTP server command for apps to run.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::{Cluster, Proc, WAIT, bin_dir, wait_for};

/// A running `agora-marathon`, killed on drop.
pub struct Marathon {
    pub proc: Proc,
    pub url: String,
    pub http: reqwest::Client,
}

impl Marathon {
    pub async fn start(cluster: &Cluster, work_dir: &Path, port: u16, log_name: &str) -> Result<Marathon> {
        Marathon::start_with(cluster, work_dir, port, log_name, &[]).await
    }

    /// [`Marathon::start`] with more flags (e.g. `--zk`).
    pub async fn start_with(
        cluster: &Cluster,
        work_dir: &Path,
        port: u16,
        log_name: &str,
        flags: &[&str],
    ) -> Result<Marathon> {
        assert!(
            bin_dir().join("agora-marathon").exists(),
            "agora-marathon not built: run `cargo build --workspace --bins` first"
        );
        let args: Vec<String> = vec![
            "--master".into(),
            cluster.master_addr.clone(),
            "--http-port".into(),
            port.to_string(),
            "--http-address".into(),
            "127.0.0.1".into(),
            "--work-dir".into(),
            work_dir.display().to_string(),
            "--hostname".into(),
            "127.0.0.1".into(),
        ];
        let args: Vec<String> = args.into_iter().chain(flags.iter().map(|f| f.to_string())).collect();
        let proc = Proc::spawn(log_name, "agora-marathon", &args, cluster.dir.path())?;
        let m = Marathon { proc, url: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        crate::wait_until_ok(&m.http, &format!("{}/ping", m.url), "Marathon to answer /ping").await?;
        Ok(m)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("request {path}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok((status, headers, v))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let (status, _, v) = self.call(reqwest::Method::GET, path, None).await?;
        ensure!(status == 200, "GET {path}: {status} {v}");
        Ok(v)
    }

    pub async fn app(&self, id: &str) -> Option<Value> {
        self.get(&format!("/v2/apps{id}")).await.ok().map(|v| v["app"].clone())
    }

    /// Waits until the app has `n` running tasks and no deployment; returns the app.
    pub async fn settled(&self, id: &str, n: usize) -> Result<Value> {
        wait_for(&format!("{id} to settle with {n} running tasks"), WAIT * 2, async || {
            let app = self.app(id).await?;
            let tasks = app["tasks"].as_array()?;
            let running = tasks.iter().filter(|t| t["state"] == "TASK_RUNNING").count();
            (running == n && tasks.len() == n && app["deployments"].as_array()?.is_empty()).then_some(app)
        })
        .await
    }
}

/// A tiny HTTP server on `$PORT0`: busybox's httpd (CI installs busybox-static), else Python's.
pub fn http_server_cmd() -> String {
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if on_path("busybox") {
        "echo ok > index.html && exec busybox httpd -f -p 127.0.0.1:$PORT0 -h .".into()
    } else {
        assert!(on_path("python3"), "the Marathon test needs busybox or python3 on PATH for its HTTP server");
        "exec python3 -m http.server $PORT0 --bind 127.0.0.1".into()
    }
}

/// A tiny HTTPS server on `$PORT0` (any address, so `127.0.0.1` and `::1`): `openssl s_server -www` with a
/// self-signed certificate it makes in its sandbox first; it answers every GET with 200 and a status page.
pub fn https_server_cmd() -> String {
    crate::require_openssl();
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
     -keyout key.pem -out cert.pem 2>/dev/null && exec openssl s_server -quiet -accept $PORT0 -cert cert.pem \
     -key key.pem -www"
        .into()
}

pub fn task_ids(app: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        app["tasks"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_str().map(String::from)).collect();
    ids.sort();
    ids
}

/// Collects every event type the SSE stream delivers, in order.
pub fn follow_events(url: String) -> Arc<Mutex<Vec<Value>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let Ok(mut resp) = reqwest::Client::new().get(url).header("Accept", "text/event-stream").send().await else {
            return;
        };
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let data = frame.lines().find_map(|l| l.strip_prefix("data:"));
                if let Some(v) = data.and_then(|d| serde_json::from_str::<Value>(d.trim()).ok()) {
                    out.lock().unwrap().push(v);
                }
            }
        }
    });
    seen
}

pub fn types(seen: &Arc<Mutex<Vec<Value>>>) -> Vec<String> {
    seen.lock().unwrap().iter().map(|e| e["eventType"].as_str().unwrap_or("").to_string()).collect()
}

/// The record Marathon persists for instance `n` of `app_id` (launched with the app's `version`, staged on one of
/// ten agents): for tests and benches of its state store that need many realistic records without launching them.
pub fn instance_record(app_id: &str, n: usize, version: &str) -> Result<agora_marathon::core::Instance> {
    let key = app_id.trim_start_matches('/').replace('/', "_");
    let placement = agora_marathon::constraints::Placement {
        hostname: format!("agent-{}.example.com", n % 10),
        ..agora_marathon::constraints::Placement::default()
    };
    let v = serde_json::json!({
        "task_id": format!("{key}.instance-{n:08}-0000-4000-8000-000000000000._app.1"),
        "instance_id": format!("{key}.marathon-{n:08}-0000-4000-8000-000000000000"),
        "app_id": app_id,
        "version": version,
        "state": "TASK_STAGING",
        "healthy": null,
        "agent_id": format!("5b1c0b52-7d3a-4c7e-9d0f-2a8b3c4d5e6f-S{}", n % 10),
        "placement": placement,
        "host_ports": [31_000 + (n % 1000) as u32],
        "service_ports": [10_000],
        "staged_at": 1_700_000_000_000_u64 + n as u64,
        "started_at": null,
        "killing": false,
        "unreachable_since": null,
        "agent_ip": "127.0.0.1",
    });
    serde_json::from_value(v).context("the instance record does not match agora_marathon::core::Instance")
}
