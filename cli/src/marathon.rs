//! `agora app`, `agora group`, `agora deployment` and `agora queue`: Marathon from the terminal, as `dcos marathon ...` did it.
//! Every command is one or two calls of Marathon's public `/v2` REST API (the same any client uses); tables are
//! pure functions of its JSON (unit-tested), `--json` prints the JSON itself. Marathon's errors are shown as it
//! sends them: the message, each `details` path with its errors, and the deployments that lock an app.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::inspect::Table;

/// Default `--marathon`: Marathon's own port on this machine (where `agora local` starts it).
pub const DEFAULT_MARATHON: &str = "http://127.0.0.1:8080";
/// How long one API call may take (and connecting to the event stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--wait-timeout`.
const DEFAULT_WAIT_TIMEOUT: &str = "10mins";
/// The events `--wait` follows; `event_stream_attached` (filtered like any other) says the stream is live.
const DEPLOYMENT_EVENTS: [&str; 5] = [
    "event_stream_attached",
    "deployment_success",
    "deployment_failed",
    "deployment_step_success",
    "deployment_step_failure",
];

/// Where Marathon is, and how to print.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Marathon's address, as http://HOST:PORT or HOST:PORT.
    #[arg(long, global = true, default_value = DEFAULT_MARATHON)]
    pub marathon: String,
}

/// `--wait`: follow a change's deployment to its end, as scripts that deploy need (Marathon answers at once).
#[derive(Args, Debug, Clone)]
pub struct Wait {
    /// After a change, follow its deployment: exit 0 when it has finished, 1 when it failed or was canceled.
    #[arg(long, global = true)]
    pub wait: bool,
    /// How long --wait (and `agora deployment watch`) follows a deployment, e.g. 90secs or 10mins.
    #[arg(long, global = true, default_value = DEFAULT_WAIT_TIMEOUT, value_parser = agora_proto::model::parse_duration)]
    pub wait_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct AppArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    wait: Wait,
    #[command(subcommand)]
    command: AppCommand,
}

#[derive(Subcommand, Debug)]
enum AppCommand {
    /// The apps: id, resources, tasks, health, deployments, whether launches wait.
    List {
        /// Print Marathon's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create an app from a JSON app definition (a file, or stdin when FILE is `-` or left out).
    Add { file: Option<String> },
    /// Print an app's definition (and, with --version, an older one) as JSON.
    Show {
        id: String,
        /// A version from `agora app versions`.
        #[arg(long)]
        version: Option<String>,
    },
    /// Change an app: `key=value` properties (the value is JSON, or else a string), or a JSON object on stdin.
    Update {
        id: String,
        properties: Vec<String>,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
    },
    /// Set an app's number of instances.
    Scale {
        id: String,
        instances: u32,
        #[arg(long)]
        force: bool,
    },
    /// Start a stopped app with INSTANCES (default 1); an app already running is refused.
    Start {
        id: String,
        #[arg(default_value_t = 1)]
        instances: u32,
        #[arg(long)]
        force: bool,
    },
    /// Stop an app: scale it to 0, keeping its definition (`agora app start` brings it back).
    Stop {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// Replace every instance of an app (a rolling restart).
    Restart {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// Roll an app back to one of its versions.
    Rollback {
        id: String,
        version: String,
        #[arg(long)]
        force: bool,
    },
    /// Destroy an app and its tasks.
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// An app's tasks: host, ports, state, health, version.
    Tasks {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Kill an app's tasks (all, or those on --host); they are replaced unless --scale.
    Kill {
        id: String,
        /// Only the tasks on this host.
        #[arg(long)]
        host: Option<String>,
        /// Lower the app's instances by the tasks killed instead of replacing them.
        #[arg(long)]
        scale: bool,
    },
    /// An app's versions, newest first.
    Versions { id: String },
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    wait: Wait,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Every group: its apps and instances (below it, all levels), its version.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a group (with its apps and subgroups) from JSON (a file, or stdin when FILE is `-` or left out).
    Add { file: Option<String> },
    /// Print a group (and, with --version, an older one) as JSON.
    Show {
        id: String,
        /// A version from `GET /v2/groups/ID/versions`.
        #[arg(long)]
        version: Option<String>,
    },
    /// Multiply the instances of every app below a group by FACTOR, rounded up (0 stops them all).
    Scale {
        id: String,
        factor: f64,
        #[arg(long)]
        force: bool,
    },
    /// Change a group: `key=value` properties (the value is JSON, or else a string), or a JSON object on stdin.
    Update {
        id: String,
        properties: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Destroy a group with every app and group below it.
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct DeploymentArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    wait: Wait,
    #[command(subcommand)]
    command: DeploymentCommand,
}

#[derive(Subcommand, Debug)]
enum DeploymentCommand {
    /// The running deployments: apps, actions, progress.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Cancel a deployment and roll its apps back (Marathon's DELETE /v2/deployments/ID).
    Rollback { id: String },
    /// Follow a running deployment until it ends: exit 0 when it finished, 1 when it failed or was canceled.
    Watch { id: String },
    /// Stop a deployment where it is, without rolling back (force=true).
    Stop { id: String },
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    json: bool,
}

/// Talks to one Marathon.
struct Marathon {
    base: String,
    http: reqwest::Client,
    /// For the event stream, which has no end: only connecting is bounded.
    stream: reqwest::Client,
}

impl Marathon {
    fn new(target: &Target) -> Result<Marathon> {
        let t = target.marathon.trim().trim_end_matches('/');
        let base = if t.contains("://") { t.to_string() } else { format!("http://{t}") };
        let url = reqwest::Url::parse(&base).with_context(|| format!("bad --marathon {}", target.marathon))?;
        if url.scheme() != "http" || url.host_str().is_none() {
            bail!("bad --marathon {}: give http://HOST:PORT or HOST:PORT", target.marathon);
        }
        let http =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().context("cannot build an HTTP client")?;
        let stream = reqwest::Client::builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Marathon { base, http, stream })
    }

    /// Subscribes to the deployment events (`plan-format=light`) and waits for Marathon's `event_stream_attached`:
    /// from then on no deployment can end unseen, so this is called before the change is made.
    async fn deployment_events(&self) -> Result<Events> {
        let mut q: Vec<(&str, &str)> = DEPLOYMENT_EVENTS.iter().map(|t| ("event_type", *t)).collect();
        q.push(("plan-format", "light"));
        let response = self
            .stream
            .get(format!("{}/v2/events", self.base))
            .query(&q)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .with_context(|| format!("cannot reach Marathon at {}: is it running? (--marathon)", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            bail!("GET /v2/events: {}", error_text(status.as_u16(), &body));
        }
        let mut events = Events { response, pending: Vec::new() };
        let first =
            timeout(REQUEST_TIMEOUT, events.next()).await.context("no event_stream_attached from Marathon")??;
        match first {
            Some((kind, _)) if kind == "event_stream_attached" => Ok(events),
            other => bail!("Marathon's event stream began with {other:?}, not event_stream_attached"),
        }
    }

    /// One call; a status other than 2xx is an error that says what Marathon said.
    async fn call(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<Value> {
        Ok(self.call_with_status(method, path, query, body).await?.1)
    }

    /// [`Marathon::call`], with the status (a PUT answers 201 when it created the app).
    async fn call_with_status(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url).query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach Marathon at {}: is it running? (--marathon)", self.base))?;
        let status = response.status();
        let text =
            response.text().await.with_context(|| format!("cannot read Marathon's answer to {method} {path}"))?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            bail!("{method} {path}: {}", error_text(status.as_u16(), &body));
        }
        Ok((status.as_u16(), body))
    }
}

/// Marathon's error body as lines: status and message, each `details` path with its errors, and the deployments
/// that lock the app (409).
pub fn error_text(status: u16, body: &Value) -> String {
    let message = match body {
        Value::String(s) => s.clone(),
        b => b["message"].as_str().map(String::from).unwrap_or_else(|| b.to_string()),
    };
    let mut out = format!("{status} {message}");
    for d in body["details"].as_array().into_iter().flatten() {
        let errors: Vec<String> = d["errors"].as_array().into_iter().flatten().map(text).collect();
        out.push_str(&format!("\n  {}: {}", text(&d["path"]), errors.join("; ")));
    }
    let locks: Vec<String> = body["deployments"].as_array().into_iter().flatten().map(|d| text(&d["id"])).collect();
    if !locks.is_empty() {
        out.push_str(&format!("\n  deployments: {} (--force overrides)", locks.join(", ")));
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A resource figure: integers without decimals, others with at most two.
fn num(v: &Value) -> String {
    let f = v.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 { format!("{f:.0}") } else { format!("{f:.2}").trim_end_matches('0').to_string() }
}

/// `/v2/apps/ID` for an id with or without its leading slash.
fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

/// `/v2/groups/ID` for an id with or without its leading slash (`/` is the root group).
fn group_path(id: &str) -> String {
    format!("/v2/groups/{}", id.trim_start_matches('/'))
}

/// `agora group list` from `/v2/groups` with `group.groups` and `group.apps` embedded: one row per group, the
/// root first, then depth first by id; APPS and INSTANCES count everything below the group.
pub fn groups_table(root: &Value) -> String {
    fn totals(g: &Value) -> (u64, u64) {
        let apps = g["apps"].as_array().map(Vec::as_slice).unwrap_or_default();
        let own = (apps.len() as u64, apps.iter().map(|a| a["instances"].as_u64().unwrap_or(0)).sum::<u64>());
        g["groups"].as_array().into_iter().flatten().map(totals).fold(own, |(a, i), (b, j)| (a + b, i + j))
    }
    fn rows(g: &Value, t: &mut Table) {
        let (apps, instances) = totals(g);
        t.row(vec![text(&g["id"]), apps.to_string(), instances.to_string(), text(&g["version"])]);
        let mut subgroups: Vec<&Value> = g["groups"].as_array().into_iter().flatten().collect();
        subgroups.sort_by_key(|s| text(&s["id"]));
        for s in subgroups {
            rows(s, t);
        }
    }
    let mut t = Table::new(&["ID", "APPS", "INSTANCES", "VERSION"]);
    rows(root, &mut t);
    t.render()
}

/// `agora app list` from `/v2/apps` and `/v2/queue` (dcos's columns).
pub fn apps_table(apps: &Value, queue: &Value) -> String {
    let waiting: Vec<&str> = queue["queue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["count"].as_u64().unwrap_or(0) > 0)
        .filter_map(|q| q["app"]["id"].as_str())
        .collect();
    let mut t = Table::new(&["ID", "MEM", "CPUS", "TASKS", "HEALTH", "DEPLOYMENT", "WAITING", "CMD"]);
    for a in apps["apps"].as_array().into_iter().flatten() {
        let id = text(&a["id"]);
        let checked = a["healthChecks"].as_array().is_some_and(|c| !c.is_empty());
        let health =
            if checked { format!("{}/{}", num(&a["tasksHealthy"]), num(&a["tasksRunning"])) } else { "-".to_string() };
        let deploying = a["deployments"].as_array().is_some_and(|d| !d.is_empty());
        let cmd = a["cmd"].as_str().map(String::from).unwrap_or_else(|| {
            a["args"].as_array().map(|v| v.iter().map(text).collect::<Vec<_>>().join(" ")).unwrap_or_default()
        });
        t.row(vec![
            id.clone(),
            num(&a["mem"]),
            num(&a["cpus"]),
            format!("{}/{}", num(&a["tasksRunning"]), num(&a["instances"])),
            health,
            if deploying { "yes" } else { "-" }.to_string(),
            if waiting.contains(&id.as_str()) { "yes" } else { "no" }.to_string(),
            cmd,
        ]);
    }
    t.render()
}

/// `agora app tasks` from `/v2/apps/ID/tasks`.
pub fn tasks_table(tasks: &Value) -> String {
    let mut t = Table::new(&["ID", "HOST", "PORTS", "STATE", "HEALTH", "VERSION", "STARTED"]);
    for task in tasks["tasks"].as_array().into_iter().flatten() {
        let ports: Vec<String> = task["ports"].as_array().into_iter().flatten().map(text).collect();
        let results = task["healthCheckResults"].as_array().map(Vec::as_slice).unwrap_or_default();
        let health = if results.is_empty() {
            "-"
        } else if results.iter().all(|r| r["alive"] == true) {
            "healthy"
        } else {
            "unhealthy"
        };
        t.row(vec![
            text(&task["id"]),
            text(&task["host"]),
            ports.join(","),
            text(&task["state"]),
            health.to_string(),
            text(&task["version"]),
            text(&task["startedAt"]),
        ]);
    }
    t.render()
}

/// `agora deployment list` from `/v2/deployments`.
pub fn deployments_table(deployments: &Value) -> String {
    let mut t = Table::new(&["ID", "APPS", "ACTIONS", "STEP", "VERSION"]);
    for d in deployments.as_array().into_iter().flatten() {
        let apps: Vec<String> = d["affectedApps"].as_array().into_iter().flatten().map(text).collect();
        let mut actions: Vec<String> = d["currentActions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{} {}", text(&a["action"]), text(&a["app"])))
            .collect();
        actions.dedup();
        t.row(vec![
            text(&d["id"]),
            apps.join(","),
            actions.join(", "),
            format!("{}/{}", text(&d["currentStep"]), text(&d["totalSteps"])),
            text(&d["version"]),
        ]);
    }
    t.render()
}

/// `agora queue` from `/v2/queue`: what waits, its delay, and why the last offers did not fit.
pub fn queue_table(queue: &Value) -> String {
    let mut t = Table::new(&["APP", "WAITING", "DELAY", "OFFERS", "WHY NOT (last offer of each agent)"]);
    for q in queue["queue"].as_array().into_iter().flatten() {
        let delay = &q["delay"];
        let delay =
            if delay["overdue"] == true { "-".to_string() } else { format!("{}s", text(&delay["timeLeftSeconds"])) };
        let summary = &q["processedOffersSummary"];
        let why: Vec<String> = summary["rejectSummaryLastOffers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["declined"].as_u64().unwrap_or(0) > 0)
            .map(|r| format!("{} ({})", text(&r["reason"]), text(&r["declined"])))
            .collect();
        t.row(vec![
            text(&q["app"]["id"]),
            text(&q["count"]),
            delay,
            format!(
                "{} processed, {} unused",
                text(&summary["processedOffersCount"]),
                text(&summary["unusedOffersCount"])
            ),
            why.join(", "),
        ]);
    }
    t.render()
}

/// `key=value` properties as one JSON object: the value is parsed as JSON, or taken as a string.
pub fn properties(items: &[String]) -> Result<Value> {
    let mut out = serde_json::Map::new();
    let mut bad = Vec::new();
    for item in items {
        match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                let v = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
                out.insert(key.trim().to_string(), v);
            }
            _ => bad.push(format!("'{item}' is not key=value (e.g. instances=3 or cmd=\"sleep 100\")")),
        }
    }
    if !bad.is_empty() {
        bail!("{}", bad.join("\n"));
    }
    Ok(Value::Object(out))
}

/// A JSON object from `file` (or stdin for `-`/none), naming the source of a parse error.
fn read_json(file: Option<&str>) -> Result<Value> {
    let (name, content) = match file {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
            ("stdin".to_string(), s)
        }
        Some(path) => (path.to_string(), std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?),
    };
    let v: Value = serde_json::from_str(&content).with_context(|| format!("{name} is not valid JSON"))?;
    if !v.is_object() {
        bail!("{name}: an app definition is a JSON object");
    }
    Ok(v)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn force(f: bool) -> Vec<(&'static str, String)> {
    if f { vec![("force", "true".to_string())] } else { vec![] }
}

/// The deployment a change started: Marathon's `deploymentId`, or the first of a created app's `deployments`.
fn deployment_id(v: &Value) -> Option<&str> {
    v["deploymentId"].as_str().or_else(|| v["deployments"][0]["id"].as_str())
}

/// What a change started: its deployment (and the new version).
fn deployment_line(v: &Value) -> String {
    let id = deployment_id(v).unwrap_or("?");
    match v["version"].as_str() {
        Some(version) => format!("deployment {id} (version {version})"),
        None => format!("deployment {id}"),
    }
}

/// Prints `what: deployment ID (version V)` and keeps the id for `--wait`.
fn announce(started: &mut Option<String>, what: String, v: &Value) {
    println!("{what}: {}", deployment_line(v));
    *started = deployment_id(v).map(String::from);
}

/// Server-sent events as Marathon's `/v2/events` writes them (`event:` and `data:` lines, a blank line after each).
struct Events {
    response: reqwest::Response,
    pending: Vec<u8>,
}

impl Events {
    /// The next event, (type, JSON data); `None` when the stream has ended.
    async fn next(&mut self) -> Result<Option<(String, Value)>> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                if let Some(event) = parse_event(&String::from_utf8_lossy(&block)) {
                    return Ok(Some(event));
                }
                continue;
            }
            match self.response.chunk().await.context("Marathon's event stream broke")? {
                Some(bytes) => self.pending.extend(bytes.iter().filter(|b| **b != b'\r')),
                None => return Ok(None),
            }
        }
    }
}

/// One event block: its `event:` type (else the data's `eventType`) and its `data:` lines as JSON; `None` for a
/// block with neither (a keep-alive comment).
pub fn parse_event(block: &str) -> Option<(String, Value)> {
    let (mut kind, mut data) = (String::new(), Vec::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if kind.is_empty() && data.is_empty() {
        return None;
    }
    let data = data.join("\n");
    let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
    if kind.is_empty() {
        kind = value["eventType"].as_str().unwrap_or("message").to_string();
    }
    Some((kind, value))
}

/// What one deployment event means for deployment `id`: a line to print, and whether (and how) it ended.
pub fn deployment_progress(kind: &str, v: &Value, id: &str) -> Option<(String, Option<Result<(), String>>)> {
    let actions = |step: &Value| -> String {
        let list: Vec<String> = step["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{} {}", text(&a["action"]), text(&a["app"])))
            .collect();
        list.join(", ")
    };
    match kind {
        "deployment_step_success" if v["plan"]["id"] == id => {
            Some((format!("  step done: {}", actions(&v["currentStep"])), None))
        }
        "deployment_step_failure" if v["plan"]["id"] == id => {
            Some((format!("  step failed: {}", actions(&v["currentStep"])), None))
        }
        "deployment_success" if v["id"] == id => Some((format!("deployment {id} finished"), Some(Ok(())))),
        "deployment_failed" if v["id"] == id => {
            let reason = v["reason"].as_str().unwrap_or("failed");
            Some((format!("deployment {id} ended: {reason}"), Some(Err(reason.to_string()))))
        }
        _ => None,
    }
}

/// Follows `events` until deployment `id` ends, printing its steps: Ok when it finished; an error when it failed
/// or was canceled, when `limit` passed, or when the stream ended first.
async fn wait_for_deployment(events: &mut Events, id: &str, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next()).await.map_err(|_| {
            anyhow!("deployment {id} is still running after {}: see `agora deployment list`", humantime(limit))
        })??;
        let Some((kind, v)) = next else {
            bail!("Marathon's event stream ended before deployment {id} did: see `agora deployment list`");
        };
        if let Some((line, end)) = deployment_progress(&kind, &v, id) {
            println!("{line}");
            match end {
                Some(Ok(())) => return Ok(()),
                Some(Err(reason)) => bail!("deployment {id} did not finish: {reason}"),
                None => {}
            }
        }
    }
}

/// `90secs`, `10mins` (`1.5s` for a fraction): a duration as the flags spell it.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        format!("{d:?}")
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}mins", s / 60)
    } else {
        format!("{s}secs")
    }
}

/// With `--wait`, the event stream, subscribed before a command that deploys; `--wait` on one that does not is an
/// error before anything is done.
async fn events_for(m: &Marathon, wait: &Wait, deploys: bool, command: &str) -> Result<Option<Events>> {
    match (wait.wait, deploys) {
        (false, _) => Ok(None),
        (true, true) => Ok(Some(m.deployment_events().await?)),
        (true, false) => bail!("--wait applies to changes that start a deployment, not to `{command}`"),
    }
}

/// After the command: with `--wait`, follow what it started.
async fn finish(events: Option<Events>, started: Option<String>, wait: &Wait) -> Result<()> {
    match (events, started) {
        (Some(mut events), Some(id)) => wait_for_deployment(&mut events, &id, wait.wait_timeout).await,
        _ => Ok(()),
    }
}

pub async fn app(args: AppArgs) -> Result<()> {
    let m = Marathon::new(&args.target)?;
    let deploys = !matches!(
        args.command,
        AppCommand::List { .. }
            | AppCommand::Show { .. }
            | AppCommand::Tasks { .. }
            | AppCommand::Versions { .. }
            | AppCommand::Kill { scale: false, .. }
    );
    let events = events_for(&m, &args.wait, deploys, "agora app").await?;
    let mut started = None;
    match args.command {
        AppCommand::List { json } => {
            let q = [("embed", "apps.counts".to_string()), ("embed", "apps.deployments".to_string())];
            let apps = m.call(Method::GET, "/v2/apps", &q, None).await?;
            if json {
                return print_json(&apps);
            }
            let queue = m.call(Method::GET, "/v2/queue", &[], None).await?;
            print!("{}", apps_table(&apps, &queue));
        }
        AppCommand::Add { file } => {
            let definition = read_json(file.as_deref())?;
            let app = m.call(Method::POST, "/v2/apps", &[], Some(&definition)).await?;
            announce(
                &mut started,
                format!("created {} ({} instances)", text(&app["id"]), num(&app["instances"])),
                &app,
            );
        }
        AppCommand::Show { id, version } => {
            let v = match version {
                Some(version) => {
                    m.call(Method::GET, &format!("{}/versions/{version}", app_path(&id)), &[], None).await?
                }
                None => m.call(Method::GET, &app_path(&id), &[], None).await?["app"].take(),
            };
            print_json(&v)?;
        }
        AppCommand::Update { id, properties: items, force: f } => {
            let change = if items.is_empty() { read_json(None)? } else { properties(&items)? };
            let (status, v) = m.call_with_status(Method::PUT, &app_path(&id), &force(f), Some(&change)).await?;
            let done = if status == 201 { "created" } else { "updated" };
            announce(&mut started, format!("{done} {id}"), &v);
        }
        AppCommand::Scale { id, instances, force: f } => {
            let v = m.call(Method::PUT, &app_path(&id), &force(f), Some(&json!({"instances": instances}))).await?;
            announce(&mut started, format!("scaling {id} to {instances}"), &v);
        }
        AppCommand::Start { id, instances, force: f } => {
            let app = m.call(Method::GET, &app_path(&id), &[], None).await?;
            let now = app["app"]["instances"].as_u64().unwrap_or(0);
            if now > 0 {
                bail!("{id} is already started with {now} instances: use `agora app scale` to change that");
            }
            let v = m.call(Method::PUT, &app_path(&id), &force(f), Some(&json!({"instances": instances}))).await?;
            announce(&mut started, format!("starting {id} with {instances} instances"), &v);
        }
        AppCommand::Stop { id, force: f } => {
            let app = m.call(Method::GET, &app_path(&id), &[], None).await?;
            if app["app"]["instances"].as_u64() == Some(0) {
                bail!("{id} is already stopped (0 instances)");
            }
            let v = m.call(Method::PUT, &app_path(&id), &force(f), Some(&json!({"instances": 0}))).await?;
            announce(&mut started, format!("stopping {id}"), &v);
        }
        AppCommand::Restart { id, force: f } => {
            let v = m.call(Method::POST, &format!("{}/restart", app_path(&id)), &force(f), None).await?;
            announce(&mut started, format!("restarting {id}"), &v);
        }
        AppCommand::Rollback { id, version, force: f } => {
            let v = m.call(Method::PUT, &app_path(&id), &force(f), Some(&json!({"version": version}))).await?;
            announce(&mut started, format!("rolling {id} back to {version}"), &v);
        }
        AppCommand::Remove { id, force: f } => {
            let v = m.call(Method::DELETE, &app_path(&id), &force(f), None).await?;
            announce(&mut started, format!("removing {id}"), &v);
        }
        AppCommand::Tasks { id, json } => {
            let v = m.call(Method::GET, &format!("{}/tasks", app_path(&id)), &[], None).await?;
            if json {
                return print_json(&v);
            }
            print!("{}", tasks_table(&v));
        }
        AppCommand::Kill { id, host, scale } => {
            let mut q = Vec::new();
            if let Some(host) = host {
                q.push(("host", host));
            }
            if scale {
                q.push(("scale", "true".to_string()));
            }
            let v = m.call(Method::DELETE, &format!("{}/tasks", app_path(&id)), &q, None).await?;
            match v["tasks"].as_array() {
                Some(tasks) => {
                    println!("killing {} task(s) of {id}", tasks.len());
                    for t in tasks {
                        println!("  {}", text(&t["id"]));
                    }
                }
                // With scale=true Marathon answers with the deployment that lowers the instances.
                None => announce(&mut started, format!("killing the tasks of {id} and scaling down"), &v),
            }
        }
        AppCommand::Versions { id } => {
            let v = m.call(Method::GET, &format!("{}/versions", app_path(&id)), &[], None).await?;
            for version in v["versions"].as_array().into_iter().flatten() {
                println!("{}", text(version));
            }
        }
    }
    finish(events, started, &args.wait).await
}

pub async fn group(args: GroupArgs) -> Result<()> {
    let m = Marathon::new(&args.target)?;
    let deploys = !matches!(args.command, GroupCommand::List { .. } | GroupCommand::Show { .. });
    let events = events_for(&m, &args.wait, deploys, "agora group").await?;
    let mut started = None;
    match args.command {
        GroupCommand::List { json } => {
            let q = [("embed", "group.groups".to_string()), ("embed", "group.apps".to_string())];
            let v = m.call(Method::GET, "/v2/groups", &q, None).await?;
            if json {
                return print_json(&v);
            }
            print!("{}", groups_table(&v));
        }
        GroupCommand::Add { file } => {
            let definition = read_json(file.as_deref())?;
            let v = m.call(Method::POST, "/v2/groups", &[], Some(&definition)).await?;
            announce(&mut started, format!("created {}", text(&definition["id"])), &v);
        }
        GroupCommand::Show { id, version } => {
            let path = match version {
                Some(version) => format!("{}/versions/{version}", group_path(&id)),
                None => group_path(&id),
            };
            print_json(&m.call(Method::GET, &path, &[], None).await?)?;
        }
        GroupCommand::Scale { id, factor, force: f } => {
            let v = m.call(Method::PUT, &group_path(&id), &force(f), Some(&json!({"scaleBy": factor}))).await?;
            announce(&mut started, format!("scaling {id} by {factor}"), &v);
        }
        GroupCommand::Update { id, properties: items, force: f } => {
            let change = if items.is_empty() { read_json(None)? } else { properties(&items)? };
            let (status, v) = m.call_with_status(Method::PUT, &group_path(&id), &force(f), Some(&change)).await?;
            let done = if status == 201 { "created" } else { "updated" };
            announce(&mut started, format!("{done} {id}"), &v);
        }
        GroupCommand::Remove { id, force: f } => {
            let v = m.call(Method::DELETE, &group_path(&id), &force(f), None).await?;
            announce(&mut started, format!("removing {id}"), &v);
        }
    }
    finish(events, started, &args.wait).await
}

pub async fn deployment(args: DeploymentArgs) -> Result<()> {
    let m = Marathon::new(&args.target)?;
    let deploys = matches!(args.command, DeploymentCommand::Rollback { .. });
    let events = events_for(&m, &args.wait, deploys, "agora deployment").await?;
    let mut started = None;
    match args.command {
        DeploymentCommand::List { json } => {
            let v = m.call(Method::GET, "/v2/deployments", &[], None).await?;
            if json {
                return print_json(&v);
            }
            print!("{}", deployments_table(&v));
        }
        DeploymentCommand::Rollback { id } => {
            let v = m.call(Method::DELETE, &format!("/v2/deployments/{id}"), &[], None).await?;
            announce(&mut started, format!("rolling back {id}"), &v);
        }
        DeploymentCommand::Stop { id } => {
            m.call(Method::DELETE, &format!("/v2/deployments/{id}"), &force(true), None).await?;
            println!("stopped {id}");
        }
        DeploymentCommand::Watch { id } => {
            // Subscribed first, then asked: a deployment that ends in between is still seen.
            let mut events = m.deployment_events().await?;
            let running = m.call(Method::GET, "/v2/deployments", &[], None).await?;
            if !running.as_array().into_iter().flatten().any(|d| d["id"] == id.as_str()) {
                println!("deployment {id} is not running (it has ended, or never was)");
                return Ok(());
            }
            println!("watching deployment {id}");
            return wait_for_deployment(&mut events, &id, args.wait.wait_timeout).await;
        }
    }
    finish(events, started, &args.wait).await
}

pub async fn queue(args: QueueArgs) -> Result<()> {
    let m = Marathon::new(&args.target)?;
    let v = m.call(Method::GET, "/v2/queue", &[], None).await?;
    if args.json {
        return print_json(&v);
    }
    print!("{}", queue_table(&v));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_message_every_path_and_the_locking_deployments() {
        let invalid = json!({"message": "Object is not valid", "details": [
            {"path": "/cpus", "errors": ["error.min"]},
            {"path": "/id", "errors": ["must be lowercase", "must not be empty"]}]});
        assert_eq!(
            error_text(422, &invalid),
            "422 Object is not valid\n  /cpus: error.min\n  /id: must be lowercase; must not be empty"
        );
        let locked = json!({"message": "App is locked by one or more deployments.", "deployments": [{"id": "d1"}]});
        assert_eq!(
            error_text(409, &locked),
            "409 App is locked by one or more deployments.\n  deployments: d1 (--force overrides)"
        );
        assert_eq!(error_text(502, &Value::String("Bad Gateway".into())), "502 Bad Gateway");
    }

    #[test]
    fn properties_are_json_values_or_strings_and_every_bad_one_is_named() {
        let items = ["instances=3", "cmd=sleep 100", "env={\"A\":\"b\"}", "cpus=0.5"].map(String::from);
        assert_eq!(
            properties(&items).unwrap(),
            json!({"instances": 3, "cmd": "sleep 100", "env": {"A": "b"}, "cpus": 0.5})
        );
        let e = properties(&["instances".to_string(), "=3".to_string()]).unwrap_err().to_string();
        assert!(e.contains("'instances' is not key=value") && e.contains("'=3' is not key=value"), "{e}");
    }

    #[test]
    fn the_app_list_says_tasks_health_deployments_and_what_waits() {
        let apps = json!({"apps": [
            {"id": "/web", "mem": 32, "cpus": 0.1, "instances": 3, "tasksRunning": 2, "tasksHealthy": 1,
             "healthChecks": [{"protocol": "HTTP"}], "deployments": [{"id": "d"}], "cmd": "serve"},
            {"id": "/batch/job", "mem": 64.5, "cpus": 1, "instances": 1, "tasksRunning": 1, "tasksHealthy": 0,
             "healthChecks": [], "deployments": [], "cmd": null, "args": ["run", "--fast"]}]});
        let queue = json!({"queue": [{"app": {"id": "/web"}, "count": 1}]});
        let table = apps_table(&apps, &queue);
        let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["ID", "MEM", "CPUS", "TASKS", "HEALTH", "DEPLOYMENT", "WAITING", "CMD"]);
        assert_eq!(lines[1], ["/web", "32", "0.1", "2/3", "1/2", "yes", "yes", "serve"]);
        assert_eq!(lines[2], ["/batch/job", "64.5", "1", "1/1", "-", "-", "no", "run", "--fast"]);
    }

    #[test]
    fn the_queue_says_why_the_last_offers_did_not_fit() {
        let queue = json!({"queue": [{"app": {"id": "/big"}, "count": 2,
            "delay": {"timeLeftSeconds": 0, "overdue": true},
            "processedOffersSummary": {"processedOffersCount": 7, "unusedOffersCount": 7,
                "rejectSummaryLastOffers": [
                    {"reason": "UnfulfilledRole", "declined": 0, "processed": 2},
                    {"reason": "InsufficientCpus", "declined": 2, "processed": 2}]}}]});
        let table = queue_table(&queue);
        let row = table.lines().nth(1).unwrap();
        assert!(row.starts_with("/big"), "{table}");
        assert!(row.contains("7 processed, 7 unused") && row.ends_with("InsufficientCpus (2)"), "{table}");
        assert!(!row.contains("UnfulfilledRole"), "{table}");
    }

    #[test]
    fn deployments_show_apps_actions_and_progress() {
        let d = json!([{"id": "d1", "version": "2026-11-24T20:00:00.000Z", "affectedApps": ["/a", "/b"],
            "currentActions": [{"action": "ScaleApplication", "app": "/a"}], "currentStep": 1, "totalSteps": 2}]);
        let row: Vec<String> = deployments_table(&d)
            .lines()
            .nth(1)
            .unwrap()
            .split("  ")
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().to_string())
            .collect();
        assert_eq!(row, ["d1", "/a,/b", "ScaleApplication /a", "1/2", "2026-11-24T20:00:00.000Z"]);
    }

    #[test]
    fn groups_count_the_apps_and_instances_below_them_root_first_then_by_id() {
        let root = json!({"id": "/", "version": "v0", "apps": [{"id": "/top", "instances": 1}], "groups": [
            {"id": "/shop", "version": "v2", "apps": [{"id": "/shop/db", "instances": 2}], "groups": [
                {"id": "/shop/web", "version": "v2", "apps": [{"id": "/shop/web/a", "instances": 3},
                    {"id": "/shop/web/b", "instances": 0}], "groups": []}]},
            {"id": "/empty", "version": "v1", "apps": [], "groups": []}]});
        let rows: Vec<Vec<String>> =
            groups_table(&root).lines().map(|l| l.split_whitespace().map(String::from).collect()).collect();
        assert_eq!(
            rows,
            [
                ["ID", "APPS", "INSTANCES", "VERSION"],
                ["/", "4", "6", "v0"],
                ["/empty", "0", "0", "v1"],
                ["/shop", "3", "5", "v2"],
                ["/shop/web", "2", "3", "v2"],
            ]
        );
    }

    #[test]
    fn server_sent_events_are_parsed_by_type_and_keep_alives_skipped() {
        let e = parse_event("event: deployment_success\ndata: {\"id\":\"d1\"}\n\n").unwrap();
        assert_eq!(e, ("deployment_success".to_string(), json!({"id": "d1"})));
        // No `event:` line: the data's eventType; data split over lines is joined.
        let e = parse_event("data: {\"eventType\":\"x\",\ndata: \"a\":1}\n\n").unwrap();
        assert_eq!(e, ("x".to_string(), json!({"eventType": "x", "a": 1})));
        assert_eq!(parse_event(": keep-alive\n\n"), None);
    }

    #[test]
    fn a_deployment_is_followed_by_its_own_events_to_its_end() {
        let step =
            json!({"plan": {"id": "d1"}, "currentStep": {"actions": [{"action": "ScaleApplication", "app": "/a"}]}});
        let (line, end) = deployment_progress("deployment_step_success", &step, "d1").unwrap();
        assert_eq!((line.as_str(), end), ("  step done: ScaleApplication /a", None));
        assert_eq!(deployment_progress("deployment_step_success", &step, "d2"), None, "another deployment's");
        let done = deployment_progress("deployment_success", &json!({"id": "d1"}), "d1").unwrap();
        assert_eq!(done, ("deployment d1 finished".to_string(), Some(Ok(()))));
        let failed =
            deployment_progress("deployment_failed", &json!({"id": "d1", "reason": "canceled"}), "d1").unwrap();
        assert_eq!(failed.1, Some(Err("canceled".to_string())));
        assert_eq!(deployment_progress("deployment_failed", &json!({"id": "d0"}), "d1"), None);
        assert_eq!(humantime(Duration::from_secs(600)), "10mins");
        assert_eq!(humantime(Duration::from_secs(90)), "90secs");
        assert_eq!(humantime(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn a_bad_address_is_refused_naming_the_flag() {
        let bad = Marathon::new(&Target { marathon: "ftp://x".into() }).err().unwrap().to_string();
        assert!(bad.contains("--marathon ftp://x"), "{bad}");
        assert_eq!(
            Marathon::new(&Target { marathon: "127.0.0.1:8080/".into() }).unwrap().base,
            "http://127.0.0.1:8080"
        );
    }
}
