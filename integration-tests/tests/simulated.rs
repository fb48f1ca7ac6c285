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

/// The agent's running tasks as its `/state` lists them: (task id, state).
async fn agent_tasks(cluster: &Cluster) -> Option<Vec<(String, String)>> {
    let url = format!("http://{}/state", cluster.agent_addrs[0]);
    let s: serde_json::Value = cluster.http.get(&url).send().await.ok()?.json().await.ok()?;
    if s["registered"] != true {
        return None;
    }
    let executors =
        s["frameworks"].as_array()?.iter().flat_map(|f| f["executors"].as_array().cloned().unwrap_or_default());
    let tasks = executors.flat_map(|e| e["tasks"].as_array().cloned().unwrap_or_default());
    Some(
        tasks
            .map(|t| (t["id"].as_str().unwrap_or("").to_string(), t["state"].as_str().unwrap_or("").to_string()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_agent_migrates_its_single_file_checkpoint_and_refuses_a_corrupt_task_file() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent_with(AGENT, &["--isolation=simulated"]).await?;
    let work_dir = cluster.dir.path().join("agent0");
    let meta = work_dir.join("meta");
    let port: u16 = cluster.agent_addrs[0].rsplit(':').next().unwrap().parse()?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("upgrade")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let res = |r: &str| r.parse::<Resources>().unwrap();
    let tasks = ["a", "b"].map(|id| TaskInfo::command(id, id, &agent, res("cpus:0.5;mem:64"), "sleep 3600"));
    fw.driver.launch(&offer, tasks.to_vec());
    update(&mut fw, "a", |s| s.state == TaskState::Running).await;
    update(&mut fw, "b", |s| s.state == TaskState::Running).await;
    let task_file = |id: &str| meta.join(format!("frameworks/{}/tasks/{id}.info", fw.id));
    assert!(task_file("a").is_file() && meta.join("agent.info").is_file(), "one file per task");

    // The agent of the previous release kept everything in meta/agent.json: make this work dir look like its.
    cluster.agents[0].kill9();
    let old = agora_agent::checkpoint::read(&work_dir, true)?.expect("a checkpoint").checkpoint;
    assert_eq!(old.tasks.len(), 2);
    std::fs::remove_file(meta.join("agent.info"))?;
    std::fs::remove_dir_all(meta.join("frameworks"))?;
    std::fs::write(meta.join("agent.json"), agora_agent::checkpoint::legacy_bytes(&old))?;
    cluster.agents[0] = spawn_agent(&cluster, "agent0", port, &work_dir, AGENT, &["--isolation=simulated"])?;
    let running = wait_for("the upgraded agent to re-register with both tasks", WAIT, async || {
        let tasks = agent_tasks(&cluster).await?;
        (tasks.len() == 2 && tasks.iter().all(|(_, s)| s == "TASK_RUNNING")).then_some(tasks)
    })
    .await?;
    assert_eq!(running.len(), 2);
    assert!(!meta.join("agent.json").exists(), "the single file is gone once migrated");
    assert!(task_file("a").is_file() && task_file("b").is_file());

    // A damaged task file: the agent does not start, and says which file.
    cluster.agents[0].kill9();
    let bytes = std::fs::read(task_file("b"))?;
    std::fs::write(task_file("b"), &bytes[..bytes.len() / 2])?;
    cluster.agents[0] = spawn_agent(&cluster, "agent0", port, &work_dir, AGENT, &["--isolation=simulated"])?;
    let status = wait_for("the agent to refuse the corrupt checkpoint", WAIT, async || {
        cluster.agents[0].child.try_wait().ok().flatten()
    })
    .await?;
    assert!(!status.success());
    let log = cluster.agents[0].log_text();
    assert!(log.contains(&task_file("b").display().to_string()) && log.contains("--strict=false"), "{log}");

    // --strict=false recovers the rest.
    let lenient = ["--isolation=simulated", "--strict=false"];
    cluster.agents[0] = spawn_agent(&cluster, "agent0", port, &work_dir, AGENT, &lenient)?;
    wait_for("the lenient agent to re-register with task a", WAIT, async || {
        let tasks = agent_tasks(&cluster).await?;
        tasks.iter().any(|(id, s)| id == "a" && s == "TASK_RUNNING").then_some(())
    })
    .await?;
    let log = cluster.agents[0].log_text();
    assert!(log.contains("skipping a corrupt checkpoint file") && log.contains("b.info"), "{log}");
    fw.teardown().await;
    Ok(())
}
