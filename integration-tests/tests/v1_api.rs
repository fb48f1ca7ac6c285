//! Mesos's v1 HTTP APIs end to end, with real masters, agents and ZooKeeper on loopback:
//!
//! - a framework that shares no code with Agora — `py/v1_framework.py`, Python's standard library only — launches,
//!   declines with a filter, revives, kills, reconciles and tears down through `POST /api/v1/scheduler`, and survives
//!   a `kill -9` of the leading master (following 307s and 503s to the new leader, resubscribing, reconciling);
//! - the operator event stream loses nothing across a reconnect: a snapshot with the events after it folded in
//!   equals `GET_STATE`, before a disconnection and after resubscribing (once in JSON, once in protobuf).
//!
//! The Python tests need `python3` (`apt-get install -y python3`); they fail, saying so, when it is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use agora_framework_sdk::{FrameworkInfo, Resources, TaskInfo, TaskInfoExt, TaskState};
use agora_integration_tests::v1::{RecordStream, post};
use agora_integration_tests::{
    Cluster, Proc, TestFramework, WAIT, ZooKeeper, agent_args, free_port, kill_processes_matching, spawn_ha_master,
    wait_for, wait_for_leader,
};
use agora_proto::mesos::codec::Format;
use agora_proto::mesos::v1::master;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const AGENT: &str = "cpus:2;mem:1024;disk:1024;ports:[31000-31100]";

/// A `sleep` argument unique to this run, so leftover task processes can be found and killed.
fn marker() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{:06}", (nanos ^ std::process::id()) % 1_000_000)
}

fn python_framework() -> PathBuf {
    let python = std::process::Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "these tests run a framework written in Python: install python3 (`apt-get install -y python3`)"
    );
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/v1_framework.py")
}

/// The Python framework's lines, as they come, and its exit; the test fails with its output on a failure.
struct PythonFramework {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl PythonFramework {
    fn start(scenario: &str, masters: &[String], marker: &str) -> Result<PythonFramework> {
        let mut child = tokio::process::Command::new("python3")
            .arg(python_framework())
            .args([scenario, "--masters", &masters.join(","), "--marker", marker])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn python3")?;
        let lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(PythonFramework { child, lines, seen: vec![] })
    }

    /// Reads lines until one has `"step": step`; returns it.
    async fn step(&mut self, step: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .with_context(|| {
                    format!("no '{step}' from the framework in time; it said:\n{}", self.seen.join("\n"))
                })??
                .with_context(|| format!("the framework ended before '{step}'; it said:\n{}", self.seen.join("\n")))?;
            self.seen.push(line.clone());
            let v: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
            if v["result"] == "failed" {
                bail!("the framework failed: {}\nit said:\n{}", v["why"], self.seen.join("\n"));
            }
            if v["step"] == step {
                return Ok(v);
            }
        }
    }

    /// Reads to the end: it must say `{"result": "ok"}` and exit 0.
    async fn succeeds(mut self, timeout: Duration) -> Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        while let Some(line) = tokio::time::timeout_at(deadline, self.lines.next_line())
            .await
            .with_context(|| format!("the framework did not finish in time; it said:\n{}", self.seen.join("\n")))??
        {
            self.seen.push(line);
        }
        let status = tokio::time::timeout_at(deadline, self.child.wait()).await??;
        let said = self.seen.join("\n");
        anyhow::ensure!(status.success() && said.ends_with(r#"{"result": "ok"}"#), "{status}; it said:\n{said}");
        Ok(self.seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_framework_launches_declines_kills_and_reconciles() -> Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms", "--heartbeat-interval", "1secs"]).await?;
    cluster.add_agent_with(AGENT, &["--isolation", "process"]).await?;
    let marker = marker();
    let python = PythonFramework::start("basic", std::slice::from_ref(&cluster.master_addr), &marker)?;
    let said = python.succeeds(WAIT * 2).await;
    kill_processes_matching(&format!("sleep 1000.{marker}"));
    let said = said?;
    for step in ["running and finished", "declined with a filter, revived", "killed", "reconciled", "torn down"] {
        assert!(said.iter().any(|l| l.contains(&format!(r#""step": "{step}""#))), "no '{step}' in {said:?}");
    }

    // The master's books agree: the framework is gone, its tasks ended as the framework saw them end.
    let state = cluster.state().await?;
    let done = &state["completed_frameworks"][0];
    assert_eq!(done["name"], "python-v1");
    let mut ended: BTreeMap<String, String> = BTreeMap::new();
    for t in done["completed_tasks"].as_array().into_iter().flatten() {
        ended.insert(t["id"].as_str().unwrap_or_default().into(), t["state"].as_str().unwrap_or_default().into());
    }
    let want: BTreeMap<String, String> =
        [("py-long", "TASK_KILLED"), ("py-short", "TASK_FINISHED"), ("py-third", "TASK_KILLED")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(ended, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_framework_survives_a_master_failover() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("agora-v1-ha-").tempdir()?;
    let zk = ZooKeeper::start(&dir.path().join("zk")).await?;
    let url = zk.url("/agora-v1");
    let flags = ["--zk-session-timeout", "3secs", "--allocation-interval", "100ms", "--heartbeat-interval", "1secs"];
    let ports = [free_port(), free_port()];
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut masters: Vec<Proc> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let work = dir.path().join(format!("master{i}"));
        masters.push(spawn_ha_master(&format!("master{i}"), *port, &url, &work, dir.path(), &flags)?);
    }
    let leader = wait_for_leader(&addrs, WAIT).await?;
    let mut agent_args = agent_args(&url, free_port(), &dir.path().join("agent"), AGENT, "agent0");
    agent_args.extend(["--registration-backoff-factor", "200ms", "--isolation", "process"].map(String::from));
    let _agent = Proc::spawn("agent", "agora-agent", &agent_args, dir.path())?;
    let http = reqwest::Client::new();
    wait_for("the agent on the leader", WAIT, async || {
        let s: Value = http.get(format!("http://{leader}/master/state")).send().await.ok()?.json().await.ok()?;
        (s["slaves"].as_array()?.len() == 1).then_some(())
    })
    .await?;

    // The framework is given both masters, the follower first, and finds the leader itself: the follower answers 307
    // to the leader's `/api/v1/scheduler`.
    let marker = marker();
    let follower = addrs.iter().find(|a| **a != leader).context("two masters")?.clone();
    let mut python = PythonFramework::start("failover", &[follower.clone(), leader.clone()], &marker)?;
    let redirected = python.step("redirected", WAIT).await?;
    assert_eq!(
        (redirected["frm"].as_str(), redirected["to"].as_str()),
        (Some(follower.as_str()), Some(leader.as_str()))
    );
    let ready = python.step("ready", WAIT).await?;
    assert_eq!(ready["leader"], leader.as_str());
    let i = addrs.iter().position(|a| *a == leader).context("the leader is one of ours")?;
    masters[i].kill9();
    let resubscribed = python.step("resubscribed", WAIT * 2).await?;
    assert_ne!(resubscribed["leader"], leader.as_str());
    let said = python.succeeds(WAIT * 2).await;
    kill_processes_matching(&format!("sleep 1000.{marker}"));
    let said = said?;
    assert!(
        said.iter().any(|l| l.contains(r#""step": "reconciled after failover", "state": "TASK_RUNNING""#)),
        "{said:?}"
    );
    drop(masters);
    drop(zk);
    Ok(())
}

/// What the operator stream reports (see `agora_proto::model::cluster::OperatorEvent`), from Mesos's JSON: agents
/// with their info, frameworks with their info and activity, tasks with their states.
#[derive(Debug, Default, PartialEq)]
struct Cluster1 {
    agents: BTreeMap<String, Value>,
    frameworks: BTreeMap<String, (Value, Value)>,
    tasks: BTreeMap<(String, String), Value>,
}

/// The `value` of an id message.
fn id(v: &Value) -> String {
    v["value"].as_str().unwrap_or_default().to_string()
}

impl Cluster1 {
    fn of_state(s: &Value) -> Cluster1 {
        let mut c = Cluster1::default();
        for a in s["get_agents"]["agents"].as_array().into_iter().flatten() {
            c.agents.insert(id(&a["agent_info"]["id"]), a["agent_info"].clone());
        }
        for f in s["get_frameworks"]["frameworks"].as_array().into_iter().flatten() {
            c.add_framework(f);
        }
        let t = &s["get_tasks"];
        for task in ["tasks", "unreachable_tasks", "completed_tasks"]
            .iter()
            .flat_map(|k| t[*k].as_array().into_iter().flatten())
        {
            c.add_task(task);
        }
        c
    }

    fn add_framework(&mut self, f: &Value) {
        self.frameworks.insert(id(&f["framework_info"]["id"]), (f["framework_info"].clone(), f["active"].clone()));
    }

    fn add_task(&mut self, t: &Value) {
        self.tasks.insert((id(&t["framework_id"]), id(&t["task_id"])), t["state"].clone());
    }

    fn apply(&mut self, e: &Value) -> Result<()> {
        match e["type"].as_str().unwrap_or_default() {
            "TASK_ADDED" => self.add_task(&e["task_added"]["task"]),
            "TASK_UPDATED" => {
                let u = &e["task_updated"];
                let key = (id(&u["framework_id"]), id(&u["status"]["task_id"]));
                self.tasks.insert(key, u["state"].clone());
            }
            "AGENT_ADDED" => {
                let info = &e["agent_added"]["agent"]["agent_info"];
                self.agents.insert(id(&info["id"]), info.clone());
            }
            "AGENT_REMOVED" => {
                self.agents.remove(&id(&e["agent_removed"]["agent_id"]));
            }
            "FRAMEWORK_ADDED" => self.add_framework(&e["framework_added"]["framework"]),
            "FRAMEWORK_UPDATED" => self.add_framework(&e["framework_updated"]["framework"]),
            "FRAMEWORK_REMOVED" => {
                self.frameworks.remove(&id(&e["framework_removed"]["framework_info"]["id"]));
            }
            "HEARTBEAT" => {}
            other => bail!("unexpected operator event {other}: {e}"),
        }
        Ok(())
    }
}

async fn get_state(http: &reqwest::Client, master: &str) -> Result<Value> {
    let r = post(http, master, "/api/v1", &json!({"type": "GET_STATE"}), Format::Json, None).await?;
    let v: Value = r.error_for_status()?.json().await?;
    Ok(v["get_state"].clone())
}

/// Subscribes to the operator stream; the folded SUBSCRIBED snapshot and the stream.
async fn operator_stream(http: &reqwest::Client, master: &str, format: Format) -> Result<(Cluster1, RecordStream)> {
    let r = post(http, master, "/api/v1", &json!({"type": "SUBSCRIBE"}), format, None).await?;
    anyhow::ensure!(r.status().is_success(), "SUBSCRIBE answered {}", r.status());
    let mut stream = RecordStream::new(r, format);
    let first = stream.next_json::<master::Event>(WAIT).await?.context("no SUBSCRIBED")?;
    anyhow::ensure!(first["type"] == "SUBSCRIBED", "{first}");
    Ok((Cluster1::of_state(&first["subscribed"]["get_state"]), stream))
}

/// Folds events into `c` until it equals `GET_STATE` (bounded); the event types seen.
async fn fold_until_current(
    http: &reqwest::Client,
    master: &str,
    c: &mut Cluster1,
    stream: &mut RecordStream,
) -> Result<Vec<String>> {
    let mut types = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = Cluster1::of_state(&get_state(http, master).await?);
        if *c == now {
            return Ok(types);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the stream never caught up with GET_STATE:\nfolded {c:#?}\nGET_STATE {now:#?}\nevents {types:?}");
        }
        if let Ok(Some(e)) = stream.next_json::<master::Event>(Duration::from_millis(300)).await {
            types.push(e["type"].as_str().unwrap_or_default().to_string());
            c.apply(&e)?;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_stream_loses_nothing_across_a_reconnect() -> Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms", "--heartbeat-interval", "1secs"]).await?;
    let http = cluster.http.clone();
    let master = cluster.master_addr.clone();
    let agent = cluster.add_agent_with(AGENT, &["--isolation", "simulated"]).await?;

    // First subscription (JSON): two tasks are launched; the stream reports it all.
    let (mut folded, mut stream) = operator_stream(&http, &master, Format::Json).await?;
    let mut fw = TestFramework::start(&master, FrameworkInfo::new("operator-stream")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let res: Resources = "cpus:0.5;mem:64".parse().expect("resources");
    let tasks = (0..2).map(|i| TaskInfo::command(format!("op-{i}"), "op", &agent, res.clone(), "sleep 1000")).collect();
    fw.driver.launch(&offer, tasks);
    for i in 0..2 {
        fw.update_of(&format!("op-{i}"), |s| s.state == TaskState::Running).await?;
    }
    let seen = fold_until_current(&http, &master, &mut folded, &mut stream).await?;
    for t in ["FRAMEWORK_ADDED", "TASK_ADDED", "TASK_UPDATED"] {
        assert!(seen.iter().any(|s| s == t), "no {t} in {seen:?}");
    }

    // Disconnected, the operator misses a kill and a second agent...
    drop(stream);
    fw.driver.kill("op-0", &agent);
    fw.update_of("op-0", |s| s.state == TaskState::Killed).await?;
    cluster.add_agent_with(AGENT, &["--isolation", "simulated"]).await?;

    // ...which the new snapshot (protobuf this time) holds; the changes after it arrive as events.
    let (mut folded, mut stream) = operator_stream(&http, &master, Format::Protobuf).await?;
    assert_eq!(folded.agents.len(), 2);
    assert_eq!(folded.tasks.get(&(fw.id.clone(), "op-0".to_string())), Some(&json!("TASK_KILLED")));
    fw.driver.kill("op-1", &agent);
    fw.update_of("op-1", |s| s.state == TaskState::Killed).await?;
    let seen = fold_until_current(&http, &master, &mut folded, &mut stream).await?;
    assert!(seen.iter().any(|s| s == "TASK_UPDATED"), "{seen:?}");
    assert_eq!(folded.tasks.get(&(fw.id.clone(), "op-1".to_string())), Some(&json!("TASK_KILLED")));
    fw.teardown().await;
    let seen = fold_until_current(&http, &master, &mut folded, &mut stream).await?;
    assert!(seen.iter().any(|s| s == "FRAMEWORK_REMOVED"), "{seen:?}");
    Ok(())
}
