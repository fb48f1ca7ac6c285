//! Readiness checks (`readinessChecks`, `readinessCheck.raml`): HTTP probes Marathon itself sends to the new
//! instances of an app while a deployment of it runs. An instance counts for the deployment (it may replace an old
//! one, it may finish the deployment) only once it is healthy **and** ready.
//!
//! The definition, its defaults and validation; the per-instance results and the decisions (which probes are due,
//! what a probe's answer means) as methods of the pure [`Core`] with time passed in; and [`probe`], the HTTP shell
//! the server's tick drives.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::{AppDefinition, Errors};
use crate::core::{Core, Instance};
use crate::scheduler::Shared;
use crate::time::Millis;

/// `protocol`: `HTTP` or `HTTPS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReadinessProtocol {
    Http,
    Https,
}

/// One entry of `readinessChecks`, every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    pub name: String,
    pub protocol: ReadinessProtocol,
    pub path: String,
    pub port_name: String,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
    pub http_status_codes_for_ready: Vec<u16>,
    pub preserve_last_response: bool,
}

impl Default for ReadinessCheck {
    fn default() -> ReadinessCheck {
        ReadinessCheck {
            name: "readinessCheck".into(),
            protocol: ReadinessProtocol::Http,
            path: "/".into(),
            port_name: "http-api".into(),
            interval_seconds: 30,
            timeout_seconds: 10,
            http_status_codes_for_ready: vec![200],
            preserve_last_response: false,
        }
    }
}

fn non_empty_string(v: &Value, path: &str, errs: &mut Errors) -> Option<String> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Some(s.to_string()),
        Some(_) => {
            errs.bad(path, "must not be empty");
            None
        }
        None => {
            errs.ty(path, "jsstring");
            None
        }
    }
}

fn positive(v: &Value, path: &str, errs: &mut Errors) -> Option<u64> {
    match crate::app::whole_u64(v) {
        Some(n) if n >= 1 => Some(n),
        _ if v.is_number() => {
            errs.bad(path, format!("got {v}, expected a whole number of 1 or more"));
            None
        }
        _ => {
            errs.ty(path, "jsnumber");
            None
        }
    }
}

/// Parses `readinessChecks` (at `path`).
pub(crate) fn parse(v: &Value, path: &str, errs: &mut Errors) -> Vec<ReadinessCheck> {
    let mut out = Vec::new();
    for (at, m) in errs.objects(v, path) {
        let mut rc = ReadinessCheck::default();
        for (k, val) in m {
            let p = format!("{at}/{k}");
            if val.is_null() {
                continue;
            }
            match k.as_str() {
                "name" => rc.name = non_empty_string(val, &p, errs).unwrap_or(rc.name),
                "protocol" => match val.as_str() {
                    Some("HTTP") => rc.protocol = ReadinessProtocol::Http,
                    Some("HTTPS") => rc.protocol = ReadinessProtocol::Https,
                    _ => errs.bad(&p, "must be one of HTTP, HTTPS"),
                },
                "path" => match non_empty_string(val, &p, errs) {
                    Some(s) if s.starts_with('/') => rc.path = s,
                    Some(_) => errs.bad(&p, "must start with /"),
                    None => {}
                },
                "portName" => rc.port_name = non_empty_string(val, &p, errs).unwrap_or(rc.port_name),
                "intervalSeconds" => rc.interval_seconds = positive(val, &p, errs).unwrap_or(rc.interval_seconds),
                "timeoutSeconds" => rc.timeout_seconds = positive(val, &p, errs).unwrap_or(rc.timeout_seconds),
                "httpStatusCodesForReady" => match val.as_array() {
                    Some(codes) if !codes.is_empty() => {
                        let parsed: Option<Vec<u16>> = codes
                            .iter()
                            .map(|c| c.as_u64().filter(|c| (100..=599).contains(c)).map(|c| c as u16))
                            .collect();
                        match parsed {
                            Some(codes) => rc.http_status_codes_for_ready = codes,
                            None => errs.bad(&p, "must hold HTTP status codes (100-599)"),
                        }
                    }
                    Some(_) => errs.bad(&p, "must not be empty"),
                    None => errs.ty(&p, "jsarray"),
                },
                "preserveLastResponse" => match val.as_bool() {
                    Some(b) => rc.preserve_last_response = b,
                    None => errs.ty(&p, "jsboolean"),
                },
                _ => errs.bad(&p, format!("'{k}' is not a known field")),
            }
        }
        if rc.timeout_seconds >= rc.interval_seconds {
            errs.bad(&at, "timeoutSeconds must be smaller than intervalSeconds");
        }
        out.push(rc);
    }
    out
}

/// What needs the whole app: at most one check, and its `portName` names one of the app's ports.
pub(crate) fn validate(app: &AppDefinition, errs: &mut Errors) {
    if app.readiness_checks.len() > 1 {
        errs.bad("/readinessChecks", "Only one readinessCheck is supported at the moment");
    }
    for (i, rc) in app.readiness_checks.iter().enumerate() {
        if port_index(app, rc).is_none() {
            let names: Vec<&str> = app.port_definitions.iter().filter_map(|p| p.name.as_deref()).collect();
            errs.bad(
                format!("/readinessChecks({i})/portName"),
                format!("'{}' must name one of the app's ports {names:?}", rc.port_name),
            );
        }
    }
}

fn port_index(app: &AppDefinition, rc: &ReadinessCheck) -> Option<usize> {
    app.port_definitions.iter().position(|p| p.name.as_deref() == Some(rc.port_name.as_str()))
}

/// An HTTP answer, as `lastResponse` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// The readiness of one new instance during its app's deployment (kept in memory, as Marathon does).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    pub last_response: Option<HttpResponse>,
    next_probe: Millis,
    in_flight: bool,
}

/// A probe the shell must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub task_id: String,
    pub url: String,
    pub timeout: Duration,
}

impl Core {
    /// The readiness check that applies to `i` now: its app is being deployed and it runs the target version.
    fn readiness_check(&self, i: &Instance) -> Option<(&AppDefinition, &ReadinessCheck)> {
        let app = self.state.apps.get(&i.app_id)?;
        let rc = app.readiness_checks.first()?;
        (i.version == app.version && self.deploying(&i.app_id)).then_some((app, rc))
    }

    /// The version whose instances wait for their readiness check before they count: the app's, while it has a
    /// readiness check and deploys. An instance is ready for the deployment unless it runs that version and its last
    /// probe did not say ready.
    pub(crate) fn waiting_for_readiness(&self, app_id: &str) -> Option<&str> {
        let app = self.state.apps.get(app_id)?;
        (!app.readiness_checks.is_empty() && self.deploying(app_id)).then_some(app.version.as_str())
    }

    /// Ready for the deployment, given its app's [`Core::waiting_for_readiness`].
    pub(crate) fn ready(&self, i: &Instance, waiting: Option<&str>) -> bool {
        waiting != Some(i.version.as_str()) || self.readiness.get(&i.task_id).is_some_and(|r| r.ready)
    }

    /// The probes due at `now`: new instances of deploying apps with a readiness check, RUNNING and healthy, not
    /// yet ready, not probed within the interval, none in flight. They are marked in flight.
    pub fn readiness_probes(&mut self, now: Millis) -> Vec<Probe> {
        let instances = &self.state.instances;
        self.readiness.retain(|task_id, _| instances.contains_key(task_id));
        let mut due = Vec::new();
        for i in self.state.instances.values() {
            let Some((app, rc)) = self.readiness_check(i) else { continue };
            if !self.counts_healthy(i, app) {
                continue;
            }
            let r = self.readiness.get(&i.task_id);
            if r.is_some_and(|r| r.ready || r.in_flight || r.next_probe > now) {
                continue;
            }
            let Some(port) = port_index(app, rc).and_then(|idx| i.host_ports.get(idx)) else { continue };
            let host = i.agent_ip.clone().unwrap_or_else(|| i.placement.hostname.clone());
            let scheme = match rc.protocol {
                ReadinessProtocol::Http => "http",
                ReadinessProtocol::Https => "https",
            };
            due.push((
                i.task_id.clone(),
                Probe {
                    task_id: i.task_id.clone(),
                    url: format!("{scheme}://{host}:{port}{}", rc.path),
                    timeout: Duration::from_secs(rc.timeout_seconds),
                },
            ));
        }
        for (task_id, _) in &due {
            self.readiness.entry(task_id.clone()).or_default().in_flight = true;
        }
        due.into_iter().map(|(_, p)| p).collect()
    }

    /// A probe's answer (or why there was none): ready when the status is one of `httpStatusCodesForReady`; the
    /// next probe follows after `intervalSeconds` otherwise.
    pub fn readiness_result(&mut self, task_id: &str, answer: Result<HttpResponse, String>, now: Millis) {
        let Some(i) = self.state.instances.get(task_id) else { return };
        let Some((_, rc)) = self.readiness_check(i) else { return };
        let app_id = i.app_id.clone();
        let (codes, interval, preserve) =
            (rc.http_status_codes_for_ready.clone(), rc.interval_seconds, rc.preserve_last_response);
        let r = self.readiness.entry(task_id.to_string()).or_default();
        r.in_flight = false;
        r.next_probe = now + interval * 1000;
        match answer {
            Ok(resp) => {
                r.ready = codes.contains(&resp.status);
                r.last_response = preserve.then_some(resp);
            }
            Err(why) => {
                tracing::debug!(task_id, error = %why, "readiness probe failed");
                r.ready = false;
            }
        }
        self.touch(&app_id);
        self.finish_deployments(now);
    }

    /// `readinessCheckResults` of the new instances of `app_id` in its deployment.
    pub fn readiness_results(&self, app_id: &str) -> Vec<Value> {
        self.instances_of(app_id)
            .filter_map(|i| {
                let (_, rc) = self.readiness_check(i)?;
                let r = self.readiness.get(&i.task_id).cloned().unwrap_or_default();
                let mut v = json!({"taskId": i.task_id, "name": rc.name, "ready": r.ready});
                if let Some(resp) = &r.last_response {
                    v["lastResponse"] = json!(resp);
                }
                Some(v)
            })
            .collect()
    }
}

/// Sends one probe: `GET` with the probe's timeout. HTTPS goes through `curl -k` (certificates are not verified, as
/// Marathon's probes do not; the tree has no TLS stack), HTTP through `client`.
pub async fn probe(client: &reqwest::Client, p: &Probe) -> Result<HttpResponse, String> {
    if p.url.starts_with("https:") {
        return curl(p).await;
    }
    let resp = client.get(&p.url).timeout(p.timeout).send().await.map_err(|e| format!("GET {}: {e}", p.url))?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.text().await.unwrap_or_default();
    Ok(HttpResponse { status, content_type, body })
}

async fn curl(p: &Probe) -> Result<HttpResponse, String> {
    let timeout = p.timeout.as_secs().max(1).to_string();
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-S", "-k", "-g", "-m", &timeout, "-w", "\n%{http_code} %{content_type}", &p.url])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            format!("cannot run curl for an HTTPS readiness probe ({e}); install curl (apt-get install curl)")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, content_type) = last.split_once(' ').unwrap_or((last, ""));
    match code.trim().parse::<u16>() {
        Ok(status) if status > 0 => {
            Ok(HttpResponse { status, content_type: content_type.trim().to_string(), body: body.to_string() })
        }
        _ => Err(format!("GET {}: {}", p.url, String::from_utf8_lossy(&out.stderr).trim())),
    }
}

/// The shell, on every tick: sends the probes due now, each in a task of its own, and hands the answers to the core
/// (then settles, so that an old instance goes as soon as a new one is ready).
pub fn send_due_probes(shared: &Arc<Shared>, client: &reqwest::Client, now: Millis) {
    let probes = shared.lock().readiness_probes(now);
    for p in probes {
        let (shared, client) = (shared.clone(), client.clone());
        tokio::spawn(async move {
            let answer = probe(&client, &p).await;
            let now = crate::time::now_millis();
            let mut core = shared.lock();
            core.readiness_result(&p.task_id, answer, now);
            shared.settle(&mut core, now);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{Invalid, parse_app};

    fn app(checks: Value) -> Result<AppDefinition, Invalid> {
        parse_app(
            &json!({"id": "web", "cmd": "httpd", "portDefinitions": [{"port": 0, "name": "http"}],
                    "readinessChecks": checks}),
            None,
            None,
        )
    }

    fn paths(r: Result<AppDefinition, Invalid>) -> Vec<String> {
        r.unwrap_err().details().iter().map(|d| d.path.clone()).collect()
    }

    #[test]
    fn defaults_and_validation_are_marathons() {
        let a = app(json!([{"portName": "http"}])).unwrap();
        let out = serde_json::to_value(&a).unwrap();
        assert_eq!(
            out["readinessChecks"],
            json!([{"name": "readinessCheck", "protocol": "HTTP", "path": "/", "portName": "http",
                    "intervalSeconds": 30, "timeoutSeconds": 10, "httpStatusCodesForReady": [200],
                    "preserveLastResponse": false}])
        );
        assert_eq!(paths(app(json!([{}]))), vec!["/readinessChecks(0)/portName"], "http-api names no port");
        assert_eq!(paths(app(json!([{"portName": "http"}, {"portName": "http"}]))), vec!["/readinessChecks"]);
        assert_eq!(paths(app(json!([{"portName": "http", "protocol": "TCP"}]))), vec!["/readinessChecks(0)/protocol"]);
        assert_eq!(
            paths(app(json!([{"portName": "http", "intervalSeconds": 5, "timeoutSeconds": 5}]))),
            vec!["/readinessChecks(0)"]
        );
        assert_eq!(
            paths(app(json!([{"portName": "http", "httpStatusCodesForReady": []}]))),
            vec!["/readinessChecks(0)/httpStatusCodesForReady"]
        );
        assert_eq!(paths(app(json!([{"portName": "http", "name": ""}]))), vec!["/readinessChecks(0)/name"]);
        assert_eq!(paths(app(json!([{"portName": "http", "bogus": 1}]))), vec!["/readinessChecks(0)/bogus"]);
    }
}
