//! The agent's `--isolation=simulated` end to end: a real master and agent, a framework on the SDK. A task runs
//! nothing, is RUNNING until killed, survives an agent `kill -9` and restart, and is KILLED by a kill. Build the
//! binaries first: `cargo build --workspace --bins`.

use agora_framework_sdk::{FrameworkInfo, Resources, TaskInfo, TaskInfoExt, TaskState, TaskStatus};
use agora_integration_tests::{Cluster, Event, TestFramework, WAIT, spawn_agent, wait_for};

const AGENT: &str = "cpus:4;mem:4096;disk:4096;ports:[31000-31100]";

fn seen_update(fw: &TestFramework, task_id: &str, pred: impl Fn(&TaskStatus) -> bool) -> bool {
    fw.seen.iter().any(|e| matches!(e, Event::Update(s) if s.task_id == task_id && pred(s)))
}

async fn update(fw: &mut TestFramework, task_id: &str, pred: impl Fn(&TaskStatus) -> bool) -> TaskStatus {
    let seen = fw.seen.iter().find_map(|e| match e {
        Event::Update(s) if s.task_id == task_id && pred(s) => Some(s.clone()),
        _ => None,
    });
    match seen {
        Some(s) => s,
        None => fw.update_of(task_id, pred).await.unwrap_or_else(|e| panic!("{e:#}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_tasks_run_until_killed_and_survive_an_agent_restart() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent_with(AGENT, &["--isolation=simulated"]).await?;
    let work_dir = cluster.dir.path().join("agent0");
    let port: u16 = cluster.agent_addrs[0].rsplit(':').next().unwrap().parse()?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("simulated")).await?;
    let offer = fw.next_offers().await?.remove(0);
    // Were the command run, it would leave this file behind and then fail the task.
    let marker = cluster.dir.path().join("the-command-ran");
    let cmd = format!("touch {}; exit 3", marker.display());
    let res = |r: &str| r.parse::<Resources>().unwrap();
    let task = TaskInfo::command("sim", "sim", &agent, res("cpus:0.5;mem:64"), cmd.as_str());
    fw.driver.launch(&offer, vec![task]);
    update(&mut fw, "sim", |s| s.state == TaskState::Running).await;

    // The sandbox is a real one, and its stdout says the command was not run.
    let url = format!("http://{}/files/sandbox?framework_id={}&task_id=sim", cluster.agent_addrs[0], fw.id);
    let sandbox: serde_json::Value = cluster.http.get(&url).send().await?.error_for_status()?.json().await?;
    let sandbox = sandbox["directory"].as_str().unwrap_or_else(|| panic!("no sandbox directory from {url}"));
    let stdout = std::fs::read_to_string(std::path::Path::new(sandbox).join("stdout"))?;
    assert!(stdout.contains("simulated") && stdout.contains("exit 3"), "{stdout}");

    cluster.agents[0].kill9();
    cluster.agents[0] = spawn_agent(&cluster, "agent0", port, &work_dir, AGENT, &["--isolation=simulated"])?;
    let url = format!("http://{}/state", cluster.agent_addrs[0]);
    let http = cluster.http.clone();
    let state = wait_for("the restarted agent to re-register", WAIT, async || {
        let s: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (s["registered"] == true).then_some(s)
    })
    .await?;
    assert_eq!(state["id"], agent.as_str(), "the agent keeps its id");
    let tasks: Vec<serde_json::Value> = state["frameworks"][0]["executors"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["tasks"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(
        tasks.iter().any(|t| t["id"] == "sim" && t["state"] == "TASK_RUNNING"),
        "the simulated task was recovered as running: {state:#}"
    );

    fw.driver.kill("sim", &agent);
    let killed = update(&mut fw, "sim", |s| s.state.is_terminal()).await;
    assert_eq!(killed.state, TaskState::Killed, "{killed:?}");
    assert!(
        !seen_update(&fw, "sim", |s| s.state.is_terminal() && s.state != TaskState::Killed),
        "no other end was reported: {:?}",
        fw.seen
    );
    assert!(!marker.exists(), "the command of a simulated task never runs");
    fw.teardown().await;
    Ok(())
}
