//! `marathon-bench`: Marathon's API → TASK_RUNNING latency and `GET /v2/apps` latency at scale (issue 5, item 10).
//!
//! It starts a real `agora-master`, `--agents` real `agora-agent`s in `--isolation=simulated` mode (tasks run no
//! process, so thousands fit on this machine) and a real `agora-marathon`, all on loopback through the harness of
//! this crate, attaches to Marathon's `/v2/events` (`event_type=status_update_event`) and measures:
//!
//! 1. **one app × N instances**: `POST /v2/apps` of one app with `--instances` instances; per instance the time from
//!    the POST to its `TASK_RUNNING` event, and the time until all run;
//! 2. **N apps × 1 instance**: `--apps` apps POSTed one after another; per app the time from its own POST to its
//!    `TASK_RUNNING` event, and the time from the first POST until all run;
//! 3. **fill**: one more app bringing the running tasks to `--tasks` (timed like 1);
//! 4. **GET**: `--requests` sequential `GET /v2/apps?embed=apps.tasks` and `GET /v2/apps` at that size, each timed
//!    until its whole body is read (the first answer is checked to hold every task).
//!
//! It prints one JSON object on stdout (milliseconds), progress on stderr, and the CPU seconds each process used per
//! phase. Usage (binaries built first, release for meaningful numbers):
//! `cargo build --release --workspace --bins && cargo run --release -p agora-integration-tests --bin marathon-bench`
//! `-- [--agents 10] [--instances 1000] [--apps 1000] [--tasks 10000] [--requests 100]`
//! A phase given a count of 0 is skipped. With `MARATHON_BENCH_KEEP=1` in the environment the cluster's directory
//! (every process's log) is kept.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_integration_tests::marathon::Marathon;
use agora_integration_tests::{Cluster, Proc, cpu_seconds, free_port};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Every task asks for this much (Marathon's defaults are cpus 1, mem 128; smaller so 10,000 fit on few agents).
const TASK_CPUS: f64 = 0.01;
const TASK_MEM: f64 = 8.0;
/// How long one phase may take before the bench gives up, naming what it was waiting for.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

struct Args {
    agents: usize,
    instances: usize,
    apps: usize,
    tasks: usize,
    requests: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { agents: 10, instances: 1000, apps: 1000, tasks: 10_000, requests: 100 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: usize = value.parse().with_context(|| format!("{flag}: '{value}' is not a count"))?;
        match flag.as_str() {
            "--agents" => a.agents = n.max(1),
            "--instances" => a.instances = n,
            "--apps" => a.apps = n,
            "--tasks" => a.tasks = n,
            "--requests" => a.requests = n.max(1),
            other => bail!("unknown flag {other}; flags: --agents N --instances N --apps N --tasks N --requests N"),
        }
    }
    Ok(a)
}

/// A `status_update_event` as the bench needs it, stamped when it was read off the stream.
struct Update {
    at: Instant,
    app_id: String,
    task_id: String,
    state: String,
}

/// Reads Marathon's SSE stream and forwards every status update; stamps are taken as each chunk arrives.
async fn follow_events(mut resp: reqwest::Response, tx: mpsc::UnboundedSender<Update>) -> Result<()> {
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await? {
        let at = Instant::now();
        buf.push_str(std::str::from_utf8(&chunk).context("the event stream is not UTF-8")?);
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else { continue };
            let e: Value = serde_json::from_str(data.trim()).context("an event's data is not JSON")?;
            if e["eventType"] != "status_update_event" {
                continue;
            }
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            let u = Update { at, app_id: field("appId"), task_id: field("taskId"), state: field("taskStatus") };
            if tx.send(u).is_err() {
                return Ok(());
            }
        }
    }
    bail!("Marathon closed the event stream")
}

/// Per app, when each of its tasks was first seen RUNNING.
#[derive(Default)]
struct Running {
    by_app: HashMap<String, HashMap<String, Instant>>,
    count: usize,
    /// Tasks that ended (they should not, in a simulation nobody kills).
    ended: Vec<(String, String)>,
}

impl Running {
    fn take(&mut self, u: Update) {
        if u.state == "TASK_RUNNING" {
            if let std::collections::hash_map::Entry::Vacant(e) =
                self.by_app.entry(u.app_id).or_default().entry(u.task_id)
            {
                e.insert(u.at);
                self.count += 1;
            }
        } else if !matches!(u.state.as_str(), "TASK_STAGING" | "TASK_STARTING") {
            self.ended.push((u.task_id, u.state));
        }
    }

    fn of(&self, app: &str) -> usize {
        self.by_app.get(app).map_or(0, HashMap::len)
    }

    /// Reads updates until `done` holds, bounded by [`PHASE_TIMEOUT`].
    async fn until(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Update>,
        what: &str,
        done: impl Fn(&Running) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        let mut last_report = Instant::now();
        while !done(self) {
            let u = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .with_context(|| format!("timed out waiting for {what}; {} tasks running", self.count))?
                .context("the event stream ended")?;
            self.take(u);
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!("  ... {what}: {} tasks running", self.count);
                last_report = Instant::now();
            }
        }
        ensure!(self.ended.is_empty(), "tasks ended during the bench: {:?}", &self.ended[..self.ended.len().min(10)]);
        Ok(())
    }
}

/// p50, p99, max and mean of durations, in milliseconds.
fn summary(mut ms: Vec<f64>) -> Value {
    if ms.is_empty() {
        return json!(null);
    }
    ms.sort_by(f64::total_cmp);
    let pct = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    let round = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "n": ms.len(), "p50": round(pct(0.5)), "p99": round(pct(0.99)), "max": round(ms[ms.len() - 1]),
        "mean": round(ms.iter().sum::<f64>() / ms.len() as f64),
    })
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn app(id: &str, instances: usize) -> Value {
    json!({"id": id, "cmd": "sleep 3600", "cpus": TASK_CPUS, "mem": TASK_MEM, "instances": instances})
}

/// CPU seconds per process, to tell where a phase spent its time.
struct Cpu<'a> {
    procs: Vec<(&'static str, &'a Proc)>,
    before: Vec<f64>,
}

impl<'a> Cpu<'a> {
    fn start(procs: Vec<(&'static str, &'a Proc)>) -> Cpu<'a> {
        let before = procs.iter().map(|(_, p)| cpu_seconds(p.pid())).collect();
        Cpu { procs, before }
    }

    fn used(&self) -> Value {
        let mut out = serde_json::Map::new();
        for ((name, p), before) in self.procs.iter().zip(&self.before) {
            let used = cpu_seconds(p.pid()) - before;
            let e = out.entry(name.to_string()).or_insert(json!(0.0));
            *e = json!(((e.as_f64().unwrap_or(0.0) + used) * 100.0).round() / 100.0);
        }
        Value::Object(out)
    }
}

/// The phases' results, also shown on stderr as each completes (a run cut short still tells something).
#[derive(Default)]
struct Report(serde_json::Map<String, Value>);

impl Report {
    fn insert(&mut self, phase: &str, result: Value) {
        eprintln!("{phase}: {result}");
        self.0.insert(phase.to_string(), result);
    }
}

struct Bench {
    http: reqwest::Client,
    url: String,
}

impl Bench {
    /// POSTs an app; returns how long the answer took.
    async fn post(&self, body: &Value) -> Result<Duration> {
        let t = Instant::now();
        let resp = self.http.post(format!("{}/v2/apps", self.url)).json(body).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(status.as_u16() == 201, "POST /v2/apps {}: {status} {text}", body["id"]);
        Ok(t.elapsed())
    }

    /// GETs `path` `n` times in a row; returns the durations and the last body.
    async fn get_times(&self, path: &str, n: usize) -> Result<(Vec<f64>, usize, Value)> {
        let mut times = Vec::with_capacity(n);
        let mut last = (0, Value::Null);
        for i in 0..n {
            let t = Instant::now();
            let resp = self.http.get(format!("{}{path}", self.url)).send().await?.error_for_status()?;
            let bytes = resp.bytes().await?;
            times.push(millis(t.elapsed()));
            if i == 0 {
                last = (bytes.len(), serde_json::from_slice(&bytes).with_context(|| format!("GET {path}: not JSON"))?);
            }
        }
        Ok((times, last.0, last.1))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let agent_resources = |share: usize| {
        // Room for `share` tasks (and then some) on each agent, plus a port each.
        let n = (share as f64 * 1.25).ceil() + 10.0;
        format!(
            "cpus:{};mem:{};disk:100000;ports:[20000-{}]",
            (n * TASK_CPUS).ceil(),
            (n * TASK_MEM).ceil(),
            20000 + n as u64
        )
    };
    let per_agent = a.tasks.max(a.instances + a.apps).div_ceil(a.agents);
    let mut cluster = Cluster::start(&[]).await?;
    if std::env::var_os("MARATHON_BENCH_KEEP").is_some() {
        eprintln!("cluster in {} (kept: MARATHON_BENCH_KEEP is set)", cluster.dir.path().display());
        cluster.dir.disable_cleanup(true);
    } else {
        eprintln!("cluster in {} (logs kept there until the end)", cluster.dir.path().display());
    }
    for _ in 0..a.agents {
        cluster.add_agent_with(&agent_resources(per_agent), &["--isolation=simulated"]).await?;
    }
    let port = free_port();
    // Every one of the many apps' deployments may still run when the last is POSTed: lift Marathon's limit of 100
    // running deployments (`--max_running_deployments`) so the bench measures latency, not 403s.
    let max_deployments = (a.apps + 10).to_string();
    let flags = ["--max-running-deployments", max_deployments.as_str()];
    let marathon =
        Marathon::start_with(&cluster, &cluster.dir.path().join("marathon"), port, "marathon", &flags).await?;
    let bench = Bench { http: reqwest::Client::new(), url: format!("http://127.0.0.1:{port}") };
    let procs = || {
        let mut p: Vec<(&'static str, &Proc)> = vec![("master", &cluster.master), ("marathon", &marathon.proc)];
        p.extend(cluster.agents.iter().map(|a| ("agents", a)));
        p
    };

    let events = bench.http.get(format!("{}/v2/events?event_type=status_update_event", bench.url)).send().await?;
    ensure!(events.status().is_success(), "GET /v2/events: {}", events.status());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let follower = tokio::spawn(follow_events(events, tx));
    let mut running = Running::default();
    let mut report = Report::default();
    report.insert(
        "setup",
        json!({"agents": a.agents, "agent_resources": agent_resources(per_agent), "isolation": "simulated",
               "task": {"cpus": TASK_CPUS, "mem": TASK_MEM, "ports": 1}}),
    );

    // 1. One app × N instances.
    if a.instances > 0 {
        eprintln!("1 app x {} instances", a.instances);
        let cpu = Cpu::start(procs());
        let t0 = Instant::now();
        let post = bench.post(&app("/bench/one", a.instances)).await?;
        running.until(&mut rx, "/bench/one to run", |r| r.of("/bench/one") == a.instances).await?;
        let lat: Vec<f64> = running.by_app["/bench/one"].values().map(|t| millis(*t - t0)).collect();
        let all = lat.iter().copied().fold(0.0, f64::max);
        report.insert(
            "one_app",
            json!({"instances": a.instances, "post_ms": millis(post), "to_running_ms": summary(lat),
                   "all_running_ms": all, "cpu_seconds": cpu.used()}),
        );
    }

    // 2. N apps × 1 instance, POSTed one after another.
    if a.apps > 0 {
        eprintln!("{} apps x 1 instance", a.apps);
        let cpu = Cpu::start(procs());
        let first = Instant::now();
        let mut posted: Vec<(String, Instant)> = Vec::with_capacity(a.apps);
        let mut posts = Vec::with_capacity(a.apps);
        for i in 0..a.apps {
            let id = format!("/bench/many/app-{i:04}");
            let t = Instant::now();
            posts.push(millis(bench.post(&app(&id, 1)).await?));
            posted.push((id, t));
            while let Ok(u) = rx.try_recv() {
                running.take(u);
            }
        }
        let ids: HashSet<String> = posted.iter().map(|(id, _)| id.clone()).collect();
        running.until(&mut rx, "every /bench/many app to run", |r| ids.iter().all(|id| r.of(id) == 1)).await?;
        let lat: Vec<f64> =
            posted.iter().map(|(id, t)| millis(*running.by_app[id].values().next().expect("counted") - *t)).collect();
        let last = posted.iter().map(|(id, _)| *running.by_app[id].values().next().expect("counted")).max();
        report.insert(
            "many_apps",
            json!({"apps": a.apps, "post_ms": summary(posts), "to_running_ms": summary(lat),
                   "all_running_ms": last.map(|l| millis(l - first)), "cpu_seconds": cpu.used()}),
        );
    }

    // 3. Fill up to the target number of running tasks.
    let fill = a.tasks.saturating_sub(running.count);
    if fill > 0 {
        eprintln!("filling up with 1 app x {fill} instances");
        let cpu = Cpu::start(procs());
        let t0 = Instant::now();
        let post = bench.post(&app("/bench/fill", fill)).await?;
        running.until(&mut rx, "/bench/fill to run", |r| r.of("/bench/fill") == fill).await?;
        let lat: Vec<f64> = running.by_app["/bench/fill"].values().map(|t| millis(*t - t0)).collect();
        let all = lat.iter().copied().fold(0.0, f64::max);
        report.insert(
            "fill",
            json!({"instances": fill, "post_ms": millis(post), "to_running_ms": summary(lat),
                   "all_running_ms": all, "cpu_seconds": cpu.used()}),
        );
    }

    // 4. GET /v2/apps at this size.
    let total = running.count;
    eprintln!("GET /v2/apps x {} at {total} running tasks", a.requests);
    let cpu = Cpu::start(procs());
    let (embed, embed_bytes, body) = bench.get_times("/v2/apps?embed=apps.tasks", a.requests).await?;
    let tasks_listed: usize =
        body["apps"].as_array().into_iter().flatten().map(|a| a["tasks"].as_array().map_or(0, Vec::len)).sum();
    ensure!(tasks_listed == total, "GET /v2/apps?embed=apps.tasks listed {tasks_listed} tasks, {total} run");
    let (plain, plain_bytes, body) = bench.get_times("/v2/apps", a.requests).await?;
    let apps_listed = body["apps"].as_array().map_or(0, Vec::len);
    report.insert(
        "get_apps",
        json!({"running_tasks": total, "apps": apps_listed, "requests": a.requests,
               "embed_tasks_ms": summary(embed), "embed_tasks_bytes": embed_bytes,
               "plain_ms": summary(plain), "plain_bytes": plain_bytes, "cpu_seconds": cpu.used()}),
    );

    follower.abort();
    println!("{}", serde_json::to_string_pretty(&Value::Object(report.0))?);
    drop(marathon);
    drop(cluster);
    Ok(())
}
