//! An outage of the whole control plane, end to end: a real ZooKeeper, a master elected through it, an agent and an
//! `agora execute` framework that both follow the leader with `--master zk://...`. ZooKeeper and the master go
//! away; while they are gone the framework and the agent must wait quietly (backing off, not spinning: their CPU
//! time over the outage, read from `/proc/<pid>/stat`, stays small), and once both are back the framework
//! resubscribes and the agent re-registers, on their own.

use std::time::Duration;

use agora_integration_tests::{
    Proc, WAIT, ZooKeeper, cpu_seconds, free_port, kill_processes_matching, spawn_ha_master, wait_for, wait_for_leader,
};

const ZK_PATH: &str = "/agora";
const MASTER_FLAGS: &[&str] = &["--zk-session-timeout", "3secs", "--allocation-interval", "100ms"];
/// How long the outage is watched.
const OUTAGE: Duration = Duration::from_secs(10);
/// The CPU time (user + system) a waiting process may use over [`OUTAGE`]: a loop that backs off uses a few
/// milliseconds; the busy loop this guards against used 5–10 s.
const CPU_BOUND_SECONDS: f64 = 0.5;

/// Whether the agent at `addr` says it is registered (`/state`).
async fn agent_registered(http: &reqwest::Client, addr: &str) -> Option<()> {
    let state: serde_json::Value = http.get(format!("http://{addr}/state")).send().await.ok()?.json().await.ok()?;
    (state["registered"] == true).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_and_agent_wait_quietly_for_zookeeper_and_the_master_and_come_back() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("agora-outage-").tempdir()?;
    let mut zk = ZooKeeper::start(&dir.path().join("zk")).await?;
    let url = zk.url(ZK_PATH);
    let port = free_port();
    let master_addr = format!("127.0.0.1:{port}");
    let work = dir.path().join("master");
    let mut master = spawn_ha_master("master", port, &url, &work, dir.path(), MASTER_FLAGS)?;
    wait_for_leader(std::slice::from_ref(&master_addr), WAIT).await?;

    let agent_addr = format!("127.0.0.1:{}", free_port());
    let (_, agent_port) = agent_addr.split_once(':').expect("host:port");
    let agent_args: Vec<String> = [
        "--master",
        &url,
        "--ip",
        "127.0.0.1",
        "--port",
        agent_port,
        "--work-dir",
        &dir.path().join("agent").display().to_string(),
        "--resources",
        "cpus:1;mem:256",
        "--isolation",
        "process",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = Proc::spawn("agent", "agora-agent", &agent_args, dir.path())?;
    let http = reqwest::Client::new();
    wait_for("the agent to register", WAIT, async || agent_registered(&http, &agent_addr).await).await?;

    // A task that outlives the outage, marked so that leftovers can be found.
    let marker = format!("sleep 600.{}", free_port());
    let execute_args: Vec<String> =
        ["execute", "--master", &url, "--name", "outage", "--resources", "cpus:0.1;mem:16", "--command", &marker]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut execute = Proc::spawn("execute", "agora", &execute_args, dir.path())?;
    wait_for("the task to run", WAIT, async || execute.log_text().contains("outage-0 TASK_RUNNING").then_some(()))
        .await?;

    // The outage: the master crashes and ZooKeeper stops.
    master.kill9();
    zk.stop();
    let before = [cpu_seconds(execute.pid()), cpu_seconds(agent.pid())];
    tokio::time::sleep(OUTAGE).await;
    let after = [cpu_seconds(execute.pid()), cpu_seconds(agent.pid())];
    for (i, name) in ["agora execute", "agora-agent"].iter().enumerate() {
        let used = after[i] - before[i];
        eprintln!("{name}: {used:.3} s of CPU over the {OUTAGE:?} outage");
        assert!(
            used.is_finite() && used < CPU_BOUND_SECONDS,
            "{name} used {used:.2} s of CPU over {OUTAGE:?} without a master or ZooKeeper (bound \
             {CPU_BOUND_SECONDS} s): it must back off, not spin"
        );
    }

    // Both come back: the framework resubscribes and the agent re-registers without help.
    zk.restart().await?;
    let _master = spawn_ha_master("master-again", port, &url, &work, dir.path(), MASTER_FLAGS)?;
    wait_for_leader(std::slice::from_ref(&master_addr), WAIT).await?;
    let back = Duration::from_secs(60);
    wait_for("agora execute to resubscribe", back, async || {
        execute.log_text().contains("resubscribed as framework").then_some(())
    })
    .await?;
    wait_for("the agent to re-register", back, async || agent_registered(&http, &agent_addr).await).await?;

    execute.terminate();
    drop(agent);
    kill_processes_matching(&marker);
    Ok(())
}
