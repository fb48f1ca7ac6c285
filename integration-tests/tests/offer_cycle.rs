//! The offer cycle end to end: real master and agent processes on loopback, real task processes, frameworks on
//! the real SDK and the real `agora execute`.

use std::time::{Duration, Instant};

use agora_framework_sdk::{FrameworkInfo, Reason, Resources, TaskInfo, TaskInfoExt, TaskState};
use agora_integration_tests::{Cluster, Event, TestFramework, WAIT, kill_processes_matching, run_agora, wait_for};
use agora_proto::model::Capability;

const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";

fn res(s: &str) -> Resources {
    s.parse().expect("test resources")
}

/// A `sleep` whose command line is unique to this test, so leftovers can be found and killed.
fn unique_sleep() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("sleep 600.{:06}{n}", (nanos ^ std::process::id()) % 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_execute_runs_20_tasks_on_two_agents() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    cluster.add_agent(AGENT).await?;
    cluster.add_agent(AGENT).await?;
    let (code, out, err) = cluster
        .agora(&[
            "execute",
            "--master",
            &cluster.master_addr,
            "--name",
            "twenty",
            "--command",
            "echo hello from $AGORA_TASK_ID",
            "--instances",
            "20",
            "--resources",
            "cpus:0.2;mem:32",
        ])
        .await?;
    assert_eq!(code, 0, "agora execute failed\nstdout:\n{out}\nstderr:\n{err}");
    let finished: Vec<&str> = out.lines().filter(|l| l.contains(" TASK_FINISHED")).collect();
    assert_eq!(finished.len(), 20, "stdout:\n{out}");
    // Both agents ran tasks, and the master shows them all completed.
    let state = cluster.state().await?;
    let completed: Vec<serde_json::Value> = state["completed_frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(state["frameworks"].as_array().into_iter().flatten())
        .flat_map(|f| f["completed_tasks"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(completed.len(), 20, "{state:#}");
    assert!(completed.iter().all(|t| t["state"] == "TASK_FINISHED"));
    let agents: std::collections::BTreeSet<&str> = completed.iter().filter_map(|t| t["slave_id"].as_str()).collect();
    assert_eq!(agents.len(), 2, "tasks should have been spread over both agents: {agents:?}");
    // Each task's stdout is in its sandbox.
    let sandboxes = walk(cluster.dir.path(), "stdout");
    let hellos =
        sandboxes.iter().filter(|p| std::fs::read_to_string(p).unwrap_or_default().contains("hello from twenty"));
    assert_eq!(hellos.count(), 20);
    Ok(())
}

fn walk(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p, name));
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_execute_exits_non_zero_when_a_task_fails() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    cluster.add_agent(AGENT).await?;
    let (code, out, _err) =
        cluster.agora(&["execute", "--master", &cluster.master_addr, "--name", "bad", "--command", "exit 3"]).await?;
    assert_ne!(code, 0);
    let line = out.lines().find(|l| l.contains("TASK_FAILED")).expect("a TASK_FAILED line");
    assert!(line.contains("status 3"), "{line}");
    Ok(())
}

/// Launches as many `cpus:1;mem:32` sleeps as each offer holds; returns the tasks launched.
fn fill(fw: &TestFramework, offers: &[agora_framework_sdk::Offer], cmd: &str, next: &mut usize) -> usize {
    let mut launched = 0;
    for o in offers {
        let n = o.resources.scalar("cpus").as_f64().floor() as usize;
        let tasks: Vec<TaskInfo> = (0..n)
            .map(|_| {
                *next += 1;
                TaskInfo::command(format!("{}-{}", fw.id, next), "fill", &o.agent_id, res("cpus:1;mem:32"), cmd)
            })
            .collect();
        launched += tasks.len();
        fw.driver.accept(vec![o.id.clone()], tasks, Some(3600.0));
    }
    launched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frameworks_with_equal_weights_get_drf_fair_shares() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let sleep = unique_sleep();
    let mut a = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("fair-a")).await?;
    let mut b = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("fair-b")).await?;
    for _ in 0..4 {
        cluster.add_agent(AGENT).await?;
    }
    // Each framework greedily fills every offer it gets; DRF decides who gets which agent.
    let (mut na, mut nb, mut ia, mut ib) = (0, 0, 0, 0);
    let deadline = Instant::now() + WAIT;
    while na + nb < 8 && Instant::now() < deadline {
        tokio::select! {
            o = a.next_offers() => na += fill(&a, &o?, &sleep, &mut ia),
            o = b.next_offers() => nb += fill(&b, &o?, &sleep, &mut ib),
        }
    }
    assert_eq!((na, nb), (4, 4), "8 cpus over two equal frameworks");
    let used = wait_for("both frameworks to run 4 tasks", WAIT, async || {
        let s = cluster.state().await.ok()?;
        let cpus: Vec<f64> = s["frameworks"]
            .as_array()?
            .iter()
            .map(|f| {
                f["tasks"].as_array().map_or(0, |t| t.iter().filter(|t| t["state"] == "TASK_RUNNING").count()) as f64
            })
            .collect();
        (cpus == [4.0, 4.0]).then_some(cpus)
    })
    .await?;
    assert_eq!(used, vec![4.0, 4.0]);
    a.teardown().await;
    b.teardown().await;
    kill_processes_matching(&sleep);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_offer_is_not_offered_again_within_refuse_seconds() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("decliner")).await?;
    let offer = fw.next_offers().await?.remove(0);
    assert_eq!(offer.agent_id, agent);
    let refuse = 3.0;
    let declined_at = Instant::now();
    fw.driver.decline(&offer.id, Some(refuse));
    let again = fw.next_offers().await?;
    let waited = declined_at.elapsed();
    assert_eq!(again[0].agent_id, agent);
    assert!(
        waited >= Duration::from_secs_f64(refuse),
        "offered again after {waited:?}, within refuse_seconds = {refuse}"
    );
    fw.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_makes_its_tasks_unreachable_or_lost_within_the_ping_timeouts() -> anyhow::Result<()> {
    let ping = Duration::from_millis(500);
    let max_pings = 3;
    let mut cluster = Cluster::start(&[
        "--allocation-interval",
        "100ms",
        "--agent-ping-timeout",
        "500ms",
        "--max-agent-ping-timeouts",
        "3",
    ])
    .await?;
    let agent = cluster.add_agent(AGENT).await?;
    let sleep = unique_sleep();
    let mut pa_info = FrameworkInfo::new("partition-aware");
    pa_info.capabilities.push(Capability::PartitionAware);
    let mut fw = TestFramework::start(&cluster.master_addr, pa_info).await?;
    let offer = fw.next_offers().await?.remove(0);
    let task = TaskInfo::command("doomed", "doomed", &agent, res("cpus:1;mem:64"), sleep.as_str());
    fw.driver.launch(&offer, vec![task]);
    fw.update_of("doomed", |s| s.state == TaskState::Running).await?;

    cluster.agents[0].kill9();
    let killed_at = Instant::now();
    let status = fw.update_of("doomed", |s| s.state != TaskState::Running).await?;
    let took = killed_at.elapsed();
    assert_eq!(status.state, TaskState::Unreachable, "{status:?}");
    assert_eq!(status.reason, Some(Reason::AgentRemoved));
    assert!(status.unreachable_time.is_some());
    // Declared within the configured timeouts (plus one ping period of phase and scheduling slack).
    let bound = ping * (max_pings + 2) + Duration::from_secs(2);
    assert!(took <= bound, "took {took:?}, configured {max_pings} × {ping:?}");
    fw.next_matching("FAILURE for the agent", |e| match e {
        Event::Failure(a) if *a == agent => Some(()),
        _ => None,
    })
    .await
    .or_else(|_| {
        // The FAILURE may have been read while waiting for the update.
        fw.seen
            .iter()
            .any(|e| matches!(e, Event::Failure(a) if *a == agent))
            .then_some(())
            .ok_or(anyhow::anyhow!("no FAILURE"))
    })?;
    let state = cluster.state().await?;
    assert_eq!(state["unreachable_slaves"], 1);
    kill_processes_matching(&sleep);
    fw.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_partition_aware_framework_gets_task_lost() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--agent-ping-timeout", "300ms", "--max-agent-ping-timeouts", "2"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let sleep = unique_sleep();
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("plain")).await?;
    let offer = fw.next_offers().await?.remove(0);
    fw.driver.launch(&offer, vec![TaskInfo::command("t", "t", &agent, res("cpus:1;mem:64"), sleep.as_str())]);
    fw.update_of("t", |s| s.state == TaskState::Running).await?;
    cluster.agents[0].kill9();
    let status = fw.update_of("t", |s| s.state != TaskState::Running).await?;
    assert_eq!(status.state, TaskState::Lost);
    kill_processes_matching(&sleep);
    fw.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_that_exceed_their_offer_or_reuse_a_task_id_are_refused() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let sleep = unique_sleep();
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("bad-launches")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let too_big = TaskInfo::command("too-big", "x", &agent, res("cpus:3;mem:64"), "true");
    let first = TaskInfo::command("dup", "x", &agent, res("cpus:0.5;mem:64"), sleep.as_str());
    let second = TaskInfo::command("dup", "x", &agent, res("cpus:0.5;mem:64"), sleep.as_str());
    fw.driver.accept(vec![offer.id.clone()], vec![too_big, first, second], Some(0.0));

    // The master answers at once; the agent's updates and the next offer arrive in any order.
    let (mut big, mut dup_error, mut dup_running, mut again) = (None, None, false, None);
    while big.is_none() || dup_error.is_none() || !dup_running || again.is_none() {
        let ev = fw.next_matching("the launch results", |e| Some(e.clone())).await?;
        match ev {
            Event::Update(s) if s.task_id == "too-big" => big = Some(s),
            Event::Update(s) if s.task_id == "dup" && s.state == TaskState::Error => dup_error = Some(s),
            Event::Update(s) if s.task_id == "dup" && s.state == TaskState::Running => dup_running = true,
            Event::Offers(o) => again = Some(o),
            _ => {}
        }
    }
    let (big, dup) = (big.unwrap(), dup_error.unwrap());
    assert_eq!((big.state, big.reason), (TaskState::Error, Some(Reason::TaskInvalid)));
    assert!(big.message.contains("more resources"), "{}", big.message);
    assert!(dup.message.contains("duplicate"), "{}", dup.message);
    // The offer was not leaked: with refuse_seconds 0 the rest of the agent comes right back.
    let again = again.unwrap();
    assert_eq!(again[0].resources.scalar("cpus").to_string(), "1.5");

    // A task id that is already running is refused on a later launch too.
    let again_dup = TaskInfo::command("dup", "x", &agent, res("cpus:0.5;mem:64"), "true");
    fw.driver.accept(vec![again[0].id.clone()], vec![again_dup], None);
    let refused = fw.update_of("dup", |s| s.state == TaskState::Error).await?;
    assert!(refused.message.contains("duplicate"));
    // An offer id that does not exist drops the task.
    fw.driver.accept(
        vec!["no-such-offer".into()],
        vec![TaskInfo::command("ghost", "x", &agent, res("cpus:0.1"), "true")],
        None,
    );
    let ghost = fw.update_of("ghost", |_| true).await?;
    assert_eq!((ghost.state, ghost.reason), (TaskState::Lost, Some(Reason::InvalidOffers)));
    fw.driver.kill("dup", &agent);
    fw.update_of("dup", |s| s.state == TaskState::Killed).await?;
    fw.teardown().await;
    kill_processes_matching(&sleep);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frameworks_run_the_same_task_id_on_one_agent() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let (sleep_a, sleep_b) = (unique_sleep(), unique_sleep());
    let mut a = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("same-id-a")).await?;
    let offer = a.next_offers().await?.remove(0);
    let task = TaskInfo::command("same-id", "a", &agent, res("cpus:1;mem:64"), sleep_a.as_str());
    a.driver.accept(vec![offer.id.clone()], vec![task], Some(3600.0));
    a.update_of("same-id", |s| s.state == TaskState::Running).await?;

    // The rest of the agent goes to the second framework, which launches a task of the same id there.
    let mut b = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("same-id-b")).await?;
    let offer = b.next_offers().await?.remove(0);
    assert_eq!(offer.agent_id, agent);
    let task = TaskInfo::command("same-id", "b", &agent, res("cpus:0.5;mem:64"), sleep_b.as_str());
    b.driver.launch(&offer, vec![task]);
    let running = b.update_of("same-id", |s| s.state != TaskState::Staging && s.state != TaskState::Starting).await?;
    assert_eq!(running.state, TaskState::Running, "{running:?}");

    // The agent runs both, one per framework.
    let url = format!("http://{}/state", cluster.agent_addrs[0]);
    let states = wait_for("the agent to run both tasks", WAIT, async || {
        let s: serde_json::Value = cluster.http.get(&url).send().await.ok()?.json().await.ok()?;
        let mut states: Vec<(String, String)> = s["frameworks"]
            .as_array()?
            .iter()
            .flat_map(|f| f["executors"].as_array().cloned().unwrap_or_default())
            .flat_map(|e| e["tasks"].as_array().cloned().unwrap_or_default())
            .map(|t| (t["framework_id"].as_str().unwrap_or("").to_string(), t["id"].as_str().unwrap_or("").to_string()))
            .collect();
        states.sort();
        (states.len() == 2).then_some(states)
    })
    .await?;
    let mut expected = vec![(a.id.clone(), "same-id".to_string()), (b.id.clone(), "same-id".to_string())];
    expected.sort();
    assert_eq!(states, expected);

    // Killing one framework's task kills only it.
    b.driver.kill("same-id", &agent);
    b.update_of("same-id", |s| s.state == TaskState::Killed).await?;
    let a_id = a.id.clone();
    wait_for("the first framework's task to be running alone", WAIT, async || {
        let s = cluster.state().await.ok()?;
        let running: Vec<String> = s["frameworks"]
            .as_array()?
            .iter()
            .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["state"] == "TASK_RUNNING")
            .map(|t| format!("{}/{}", t["framework_id"].as_str().unwrap_or(""), t["id"].as_str().unwrap_or("")))
            .collect();
        (running == [format!("{a_id}/same-id")]).then_some(())
    })
    .await?;
    assert!(!a.seen.iter().any(|e| matches!(e, Event::Update(s) if s.state == TaskState::Killed)));

    a.driver.kill("same-id", &agent);
    a.update_of("same-id", |s| s.state == TaskState::Killed).await?;
    a.teardown().await;
    b.teardown().await;
    kill_processes_matching(&sleep_a);
    kill_processes_matching(&sleep_b);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_are_reported_with_the_bad_item() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let work = dir.path().display().to_string();
    let bin = agora_integration_tests::bin_dir();
    let master = std::process::Command::new(bin.join("agora-master"))
        .args(["--work-dir", &work, "--agent-ping-timeout", "15parsecs", "--ip", "not-an-ip"])
        .output()?;
    assert_eq!(master.status.code(), Some(2));
    let err = String::from_utf8_lossy(&master.stderr);
    assert!(err.contains("--agent-ping-timeout") && err.contains("--ip"), "every bad value reported: {err}");

    let agent = std::process::Command::new(bin.join("agora-agent"))
        .args(["--master", "127.0.0.1:1", "--work-dir", &work, "--resources", "cpus:two;mem:1024"])
        .output()?;
    assert_ne!(agent.status.code(), Some(0));
    let err = String::from_utf8_lossy(&agent.stderr);
    assert!(err.contains("cpus:two"), "names the bad item: {err}");

    let (code, _out, err) = run_agora(&[
        "execute",
        "--master",
        "127.0.0.1:1",
        "--name",
        "x",
        "--command",
        "true",
        "--resources",
        "mem:lots",
    ])
    .await?;
    assert_eq!(code, 2);
    assert!(err.contains("mem:lots"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_state_and_http_endpoints_have_mesos_shapes() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    let agent = cluster.add_agent("cpus:2;mem:1024;disk:4096;ports:[31000-32000]").await?;
    let http = &cluster.http;
    let base = format!("http://{}", cluster.master_addr);
    let version: serde_json::Value = http.get(format!("{base}/version")).send().await?.json().await?;
    assert!(version["version"].is_string());
    let state = cluster.state().await?;
    assert_eq!(state["slaves"][0]["id"], agent.as_str());
    assert_eq!(
        state["slaves"][0]["resources"],
        serde_json::json!({"cpus":2,"gpus":0,"mem":1024,"disk":4096,"ports":"[31000-32000]"})
    );
    assert!(state["leader"].as_str().is_some_and(|l| l.starts_with("master@127.0.0.1:")));
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let r = no_redirect.get(format!("{base}/master/redirect")).send().await?;
    assert_eq!(r.status(), 307);
    assert!(r.headers()["location"].to_str()?.starts_with("//"));
    // The agent answers on its own port, in Mesos's agent shape.
    let agent_base = format!("http://{}", cluster.agent_addrs[0]);
    assert!(http.get(format!("{agent_base}/health")).send().await?.status().is_success());
    // The master answers as soon as it registered the agent; the agent learns its id when the answer arrives.
    let agent_state = wait_for("the agent's /state to show its id", WAIT, async || {
        let s: serde_json::Value = http.get(format!("{agent_base}/state")).send().await.ok()?.json().await.ok()?;
        (s["id"] == agent.as_str()).then_some(s)
    })
    .await?;
    assert_eq!(agent_state["resources"]["cpus"], 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_calls_is_applied_in_order_and_answered_call_by_call() -> anyhow::Result<()> {
    use agora_proto::wire::{self, call, event, scheduler_client::SchedulerClient};
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let mut client = SchedulerClient::connect(format!("http://{}", cluster.master_addr)).await?;
    // Subscribed with offers suppressed: offers come only once a REVIVE is applied after the SUPPRESS below.
    let info = wire::FrameworkInfo::from(&FrameworkInfo::new("batcher"));
    let subscribe = wire::SubscribeRequest { framework_info: Some(info), suppressed_roles: vec!["*".into()] };
    let mut events = client.subscribe(subscribe).await?.into_inner();
    let Some(event::Event::Subscribed(s)) = events.message().await?.and_then(|e| e.event) else {
        anyhow::bail!("the first event is not SUBSCRIBED");
    };
    let call = |stream_id: &str, c: call::Call| wire::Call {
        framework_id: s.framework_id.clone(),
        stream_id: stream_id.to_string(),
        call: Some(c),
    };
    let batch = wire::CallBatch {
        calls: vec![
            call(&s.stream_id, call::Call::Suppress(call::Suppress { roles: vec![] })),
            call(
                &s.stream_id,
                call::Call::Acknowledge(call::Acknowledge {
                    agent_id: agent.clone(),
                    task_id: "t".into(),
                    uuid: vec![],
                }),
            ),
            call(&s.stream_id, call::Call::Revive(call::Revive { roles: vec![] })),
            call("not-my-stream", call::Call::Suppress(call::Suppress { roles: vec![] })),
        ],
    };
    let results = client.calls(batch).await?.into_inner().results;
    let codes: Vec<tonic::Code> = results.iter().map(|r| tonic::Code::from_i32(r.code)).collect();
    assert_eq!(
        codes,
        [tonic::Code::Ok, tonic::Code::InvalidArgument, tonic::Code::Ok, tonic::Code::PermissionDenied],
        "{results:?}"
    );
    assert!(results[1].message.contains("uuid"), "the refusal says what is wrong: {results:?}");
    // SUPPRESS then REVIVE, in that order: the agent is offered (had the REVIVE been applied first, the framework
    // would be left suppressed and nothing offered); the refused calls changed nothing.
    let offered = tokio::time::timeout(WAIT, async {
        loop {
            match events.message().await?.and_then(|e| e.event) {
                Some(event::Event::Offers(o)) => return anyhow::Ok(o.offers),
                Some(_) => continue,
                None => anyhow::bail!("the event stream ended"),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no offer within {WAIT:?} after SUPPRESS, REVIVE"))??;
    assert_eq!(offered[0].agent_id, agent);
    Ok(())
}

/// Sandboxes of ended containers are deleted `--gc-delay` after they ended (Mesos's sandbox GC), with their emptied
/// task directory; a running task's sandbox stays, and so does everything of a task the agent still tracks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sandboxes_are_deleted_after_the_gc_delay_and_running_ones_stay() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    // Headroom 0: the sandbox is kept 10 s × the free fraction of the disk (the formula is unit-tested in gc.rs),
    // long enough to see it after the task ended even on a disk 95 % full.
    let agent_flags = ["--gc-delay", "10secs", "--gc-disk-headroom", "0", "--disk-watch-interval", "200ms"];
    cluster.add_agent_with(AGENT, &agent_flags).await?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("gc")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let (done, sleeper) = (format!("{}-done", fw.id), format!("{}-sleeper", fw.id));
    let sleep = unique_sleep();
    let tasks = vec![
        TaskInfo::command(&done, "done", &offer.agent_id, res("cpus:0.5;mem:32"), "echo bye"),
        TaskInfo::command(&sleeper, "sleeper", &offer.agent_id, res("cpus:0.5;mem:32"), format!("echo hi; {sleep}")),
    ];
    fw.driver.accept(vec![offer.id.clone()], tasks, None);
    fw.update_of(&sleeper, |s| s.state == TaskState::Running).await?;
    fw.update_of(&done, |s| s.state == TaskState::Finished).await?;

    // Right after it ended, the finished task's output is still there.
    let executors = |task: &str| -> Vec<std::path::PathBuf> {
        walk(&cluster.dir.path().join("agent0"), "stdout")
            .into_iter()
            .filter(|p| p.components().any(|c| c.as_os_str() == task))
            .collect()
    };
    let out = executors(&done);
    assert_eq!(out.len(), 1, "one sandbox of {done}: {out:?}");
    assert_eq!(std::fs::read_to_string(&out[0])?, "bye\n");
    let task_dir = out[0].ancestors().nth(3).expect("executors/<task_id>").to_path_buf();
    assert!(task_dir.ends_with(format!("executors/{done}")), "{}", task_dir.display());

    // Then it goes, with its task directory; the sleeper's stays.
    wait_for("the finished task's sandbox to be deleted", WAIT, async || (!task_dir.exists()).then_some(())).await?;
    let kept = executors(&sleeper);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read_to_string(&kept[0])?, "hi\n");
    let log = cluster.agents[0].log_text();
    assert!(log.contains("sandbox garbage collection") && log.contains("deleted=1"), "{log}");
    let url = format!("http://{}/metrics/snapshot", cluster.agent_addrs[0]);
    let metrics: serde_json::Value = cluster.http.get(url).send().await?.json().await?;
    assert_eq!(metrics["gc/path_removals_succeeded"], 1.0, "{metrics}");
    assert_eq!(metrics["gc/path_removals_failed"], 0.0, "{metrics}");

    fw.teardown().await;
    kill_processes_matching(&sleep);
    Ok(())
}
