//! `v1-bench`: what Mesos's v1 HTTP API in JSON costs beside Agora's gRPC SDK, on one workload: a framework gets an
//! offer, launches N tasks in one ACCEPT, and acknowledges every update until all N are TASK_RUNNING.
//!
//! It starts a real `agora-master` and one real `agora-agent` (`--isolation=simulated`: tasks run nothing, so the
//! figures are the control path), then alternates rounds of the two front doors on that cluster, a new framework per
//! round (torn down after it, and the agent drained before the next):
//!
//! - **v1 JSON**: [`agora_integration_tests::v1::V1Scheduler`] — SUBSCRIBE, ACCEPT, one ACKNOWLEDGE request per
//!   update (up to 16 in flight), events read from the RecordIO stream and parsed as JSON;
//! - **gRPC SDK**: the SDK's driver, whose acknowledgements go out batched.
//!
//! The time of a round runs from the offer's arrival to the N-th TASK_RUNNING. It prints one JSON object.
//!
//! Usage (binaries built first: `cargo build --workspace --bins`, or `--release`):
//! `cargo run --release -p agora-integration-tests --bin v1-bench -- --tasks 1000 --rounds 5`

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_framework_sdk::{FrameworkInfo, Resources, TaskInfo, TaskInfoExt, TaskState};
use agora_integration_tests::v1::V1Scheduler;
use agora_integration_tests::{Cluster, Event, TestFramework, WAIT, wait_for};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const TASK: &str = "cpus:0.01;mem:1";

struct Args {
    tasks: usize,
    rounds: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { tasks: 1000, rounds: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("v1-bench [--tasks N (1000)] [--rounds N (5)]: v1 HTTP JSON vs gRPC SDK, offers to TASK_RUNNING");
            std::process::exit(0);
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tasks" => a.tasks = value.parse().with_context(|| format!("--tasks {value}"))?,
            "--rounds" => a.rounds = value.parse().with_context(|| format!("--rounds {value}"))?,
            other => bail!("unknown flag {other}; flags: --tasks N --rounds N"),
        }
    }
    Ok(a)
}

fn task_json(id: &str, agent: &Value) -> Value {
    json!({"name": id, "task_id": {"value": id}, "agent_id": agent, "command": {"value": "sleep 1000"},
           "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.01}},
                         {"name": "mem", "type": "SCALAR", "scalar": {"value": 1}}]})
}

/// One round through the v1 API in JSON; the time from the offer to the last TASK_RUNNING.
async fn v1_round(master: &str, tasks: usize) -> Result<Duration> {
    let info = json!({"user": "root", "name": "v1-bench", "failover_timeout": 0});
    let mut s = V1Scheduler::subscribe(master, info).await?;
    let offer = loop {
        let e = s.next_event(WAIT).await?;
        if e["type"] == "OFFERS" {
            break e["offers"]["offers"][0].clone();
        }
    };
    let started = Instant::now();
    let infos: Vec<Value> = (0..tasks).map(|i| task_json(&format!("v1-{i}"), &offer["agent_id"])).collect();
    let accept = json!({"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH", "launch": {"task_infos": infos}}],
                        "filters": {"refuse_seconds": 3600}});
    s.call("ACCEPT", accept).await?;
    let inflight = Arc::new(Semaphore::new(16));
    let mut running = HashSet::new();
    while running.len() < tasks {
        let e = s.next_event(WAIT).await?;
        if e["type"] != "UPDATE" {
            continue;
        }
        let status = e["update"]["status"].clone();
        if status["state"] == "TASK_RUNNING" {
            running.insert(status["task_id"]["value"].as_str().unwrap_or_default().to_string());
        } else if status["state"] != "TASK_STARTING" && status["state"] != "TASK_STAGING" {
            bail!("a task did not start: {status}");
        }
        if status.get("uuid").is_some() {
            let permit = inflight.clone().acquire_owned().await?;
            let calls = s.calls.clone();
            tokio::spawn(async move {
                let ack = json!({"agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]});
                if let Err(e) = calls.call("ACKNOWLEDGE", ack).await {
                    eprintln!("acknowledgement failed: {e:#}");
                }
                drop(permit);
            });
        }
    }
    let took = started.elapsed();
    // Let the acknowledgements in flight finish before the framework goes away.
    let _all = inflight.acquire_many(16).await?;
    s.call("TEARDOWN", Value::Null).await?;
    Ok(took)
}

/// One round through the SDK's driver (gRPC); the time from the offer to the last TASK_RUNNING.
async fn grpc_round(master: &str, tasks: usize) -> Result<Duration> {
    let mut fw = TestFramework::start(master, FrameworkInfo::new("grpc-bench")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let started = Instant::now();
    let res: Resources = TASK.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let infos: Vec<TaskInfo> = (0..tasks)
        .map(|i| TaskInfo::command(format!("grpc-{i}"), "b", &offer.agent_id, res.clone(), "sleep 1000"))
        .collect();
    fw.driver.accept(vec![offer.id.clone()], infos, Some(3600.0));
    let mut running = 0;
    while running < tasks {
        let state = fw
            .next_matching("an update", |e| match e {
                Event::Update(s) => Some(s.state),
                _ => None,
            })
            .await?;
        match state {
            TaskState::Running => running += 1,
            TaskState::Starting | TaskState::Staging => {}
            other => bail!("a task did not start: {other:?}"),
        }
        fw.seen.clear();
    }
    let took = started.elapsed();
    fw.teardown().await;
    Ok(took)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() { 0.0 } else { s[s.len() / 2] }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent_resources = format!("cpus:{};mem:{};disk:1000", a.tasks as f64 * 0.01 + 1.0, a.tasks + 64);
    cluster.add_agent_with(&agent_resources, &["--isolation=simulated"]).await?;
    let master = cluster.master_addr.clone();
    let drained = async || {
        let http = cluster.http.clone();
        let url = format!("http://{master}/master/state");
        wait_for("the agent to be drained", WAIT, async || {
            let s: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            let used = &s["slaves"][0]["used_resources"]["cpus"];
            (used.as_f64() == Some(0.0) && s["frameworks"].as_array()?.is_empty()).then_some(())
        })
        .await
    };
    let (mut v1, mut grpc) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        // Alternate which goes first, so neither always runs on a warmer master.
        for json_first in [round % 2 == 0, round % 2 != 0] {
            if json_first {
                v1.push(v1_round(&master, a.tasks).await?.as_secs_f64() * 1000.0);
            } else {
                grpc.push(grpc_round(&master, a.tasks).await?.as_secs_f64() * 1000.0);
            }
            drained().await?;
        }
    }
    let (v1_median, grpc_median) = (median(&v1), median(&grpc));
    let report = json!({
        "bench": "v1-bench",
        "workload": format!("offer -> one ACCEPT of {} tasks -> all TASK_RUNNING, updates acknowledged", a.tasks),
        "tasks": a.tasks,
        "rounds": a.rounds,
        "v1_json_ms": v1,
        "grpc_sdk_ms": grpc,
        "v1_json_median_ms": v1_median,
        "grpc_sdk_median_ms": grpc_median,
        "v1_over_grpc": if grpc_median > 0.0 { v1_median / grpc_median } else { 0.0 },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
