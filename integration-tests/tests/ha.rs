//! High availability end to end: three masters electing a leader through a real ZooKeeper (Debian's package,
//! started by the harness), agents and a framework following the leader with `--master zk://...`, `kill -9` of the
//! leader, the old leader coming back as a follower, ZooKeeper restarting, and a corrupt or conflicting registry.

use agora_framework_sdk::{FrameworkInfo, Reason, Resources, TaskInfo, TaskInfoExt, TaskState};
use agora_integration_tests::{
    Event, Proc, TestFramework, WAIT, ZooKeeper, free_port, kill_processes_matching, master_leads, spawn_ha_master,
    wait_for, wait_for_leader,
};
use agora_proto::model::Capability;
use std::collections::BTreeMap;

const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";
const ZK_PATH: &str = "/agora";
/// Short sessions so a crashed leader's member disappears quickly (the failover time is about this).
const MASTER_FLAGS: &[&str] = &["--zk-session-timeout", "3secs", "--allocation-interval", "100ms"];

/// A `sleep` unique to this test run, so its processes can be counted and leftovers killed.
fn unique_sleep() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("sleep 700.{:06}", (nanos ^ std::process::id()) % 1_000_000)
}

/// How many `sleep` processes run with the argument of `marker` (`sleep ARG`): one per live task.
fn processes_running(marker: &str) -> usize {
    let arg = marker.strip_prefix("sleep ").unwrap_or(marker).as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"sleep")) && args.get(1) == Some(&arg)
        })
        .count()
}

/// Task id → state, on the master at `addr`, for every framework.
async fn task_states(addr: &str) -> Option<BTreeMap<String, String>> {
    let s: serde_json::Value =
        reqwest::get(format!("http://{addr}/master/state")).await.ok()?.error_for_status().ok()?.json().await.ok()?;
    let mut out = BTreeMap::new();
    for f in s["frameworks"].as_array()? {
        for t in f["tasks"].as_array().into_iter().flatten() {
            out.insert(t["id"].as_str()?.to_string(), t["state"].as_str()?.to_string());
        }
    }
    Some(out)
}

async fn agent_count(addr: &str) -> Option<usize> {
    let s: serde_json::Value =
        reqwest::get(format!("http://{addr}/master/state")).await.ok()?.error_for_status().ok()?.json().await.ok()?;
    Some(s["slaves"].as_array()?.iter().filter(|a| a["active"] == true).count())
}

struct HaCluster {
    dir: tempfile::TempDir,
    zk: ZooKeeper,
    masters: Vec<Option<Proc>>,
    addrs: Vec<String>,
    ports: Vec<u16>,
    agents: Vec<Proc>,
}

impl HaCluster {
    async fn start(masters: usize) -> anyhow::Result<HaCluster> {
        let dir = tempfile::Builder::new().prefix("agora-ha-").tempdir()?;
        let zk = ZooKeeper::start(&dir.path().join("zk")).await?;
        let mut c = HaCluster { dir, zk, masters: vec![], addrs: vec![], ports: vec![], agents: vec![] };
        for i in 0..masters {
            let port = free_port();
            c.ports.push(port);
            c.addrs.push(format!("127.0.0.1:{port}"));
            c.masters.push(None);
            c.start_master(i)?;
        }
        Ok(c)
    }

    fn start_master(&mut self, i: usize) -> anyhow::Result<()> {
        let work = self.dir.path().join(format!("master{i}"));
        let url = self.zk.url(ZK_PATH);
        self.masters[i] =
            Some(spawn_ha_master(&format!("master{i}"), self.ports[i], &url, &work, self.dir.path(), MASTER_FLAGS)?);
        Ok(())
    }

    fn add_agent(&mut self) -> anyhow::Result<()> {
        let n = self.agents.len();
        let args: Vec<String> = [
            "--master",
            &self.zk.url(ZK_PATH),
            "--ip",
            "127.0.0.1",
            "--port",
            &free_port().to_string(),
            "--work-dir",
            &self.dir.path().join(format!("agent{n}")).display().to_string(),
            "--resources",
            AGENT,
            "--hostname",
            &format!("agent{n}"),
            "--registration-backoff-factor",
            "200ms",
            // Plain processes: these tests are about the masters, not isolation (and need no root).
            "--isolation",
            "process",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.agents.push(Proc::spawn(&format!("agent{n}"), "agora-agent", &args, self.dir.path())?);
        Ok(())
    }

    fn index_of(&self, addr: &str) -> usize {
        self.addrs.iter().position(|a| a == addr).expect("a master of this cluster")
    }
}

/// Launches one long-running task on each of two agents; returns the task ids.
async fn launch_two(fw: &mut TestFramework, cmd: &str) -> anyhow::Result<Vec<String>> {
    let mut agents_used = std::collections::BTreeSet::new();
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let offers = fw.next_offers().await?;
        for o in offers {
            if ids.len() < 2 && agents_used.insert(o.agent_id.clone()) {
                let id = format!("ha-{}", ids.len());
                let res: Resources = "cpus:0.5;mem:32".parse().expect("resources");
                fw.driver.accept(vec![o.id.clone()], vec![TaskInfo::command(&id, "ha", &o.agent_id, res, cmd)], None);
                ids.push(id);
            } else {
                fw.driver.decline(&o.id, Some(3600.0));
            }
        }
    }
    let running = |seen: &[Event], id: &str| {
        seen.iter().any(|e| matches!(e, Event::Update(s) if s.task_id == id && s.state == TaskState::Running))
    };
    while !ids.iter().all(|id| running(&fw.seen, id)) {
        fw.next_matching("RUNNING updates", |e| matches!(e, Event::Update(_)).then_some(())).await?;
    }
    Ok(ids)
}

/// No update of `ids` in `seen` is terminal, lost, unreachable or unknown.
fn assert_no_loss(seen: &[Event], ids: &[String]) {
    for e in seen {
        if let Event::Update(s) = e
            && ids.contains(&s.task_id)
        {
            {
                assert!(
                    matches!(s.state, TaskState::Staging | TaskState::Starting | TaskState::Running),
                    "task {} was reported {:?} ({:?}): {:?}",
                    s.task_id,
                    s.state,
                    s.message,
                    seen
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_task_and_the_old_leader_returns_as_a_follower() -> anyhow::Result<()> {
    let mut c = HaCluster::start(3).await?;
    let leader = wait_for_leader(&c.addrs, WAIT).await?;
    // The others redirect to it.
    let expected = format!("http://{leader}/master/state");
    for a in c.addrs.iter().filter(|a| **a != leader) {
        wait_for("a follower to redirect to the leader", WAIT, async || {
            let (leads, location, code) = master_leads(a).await.ok()?;
            (!leads && code == 307 && location.as_deref() == Some(expected.as_str())).then_some(())
        })
        .await?;
    }

    c.add_agent()?;
    c.add_agent()?;
    wait_for("two agents on the leader", WAIT, async || (agent_count(&leader).await? == 2).then_some(())).await?;

    let sleep = unique_sleep();
    let mut info = FrameworkInfo::new("ha");
    info.failover_timeout = 3600.0;
    info.capabilities.push(Capability::PartitionAware);
    let mut fw = TestFramework::start(&c.zk.url(ZK_PATH), info).await?;
    let ids = launch_two(&mut fw, &sleep).await?;
    wait_for("two task processes", WAIT, async || (processes_running(&sleep) == 2).then_some(())).await?;

    // kill -9 the leader.
    let old = c.index_of(&leader);
    c.masters[old].as_mut().expect("running").kill9();
    let others: Vec<String> = c.addrs.iter().filter(|a| **a != leader).cloned().collect();
    let new_leader = wait_for_leader(&others, WAIT).await?;
    assert_ne!(new_leader, leader);

    // Agents and the framework move to the new leader; every task is RUNNING there.
    wait_for("both agents to re-register with the new leader", WAIT, async || {
        (agent_count(&new_leader).await? == 2).then_some(())
    })
    .await?;
    fw.next_matching("re-subscription", |e| matches!(e, Event::Subscribed(_)).then_some(())).await?;
    let states = wait_for("both tasks RUNNING on the new leader", WAIT, async || {
        let s = task_states(&new_leader).await?;
        (s.len() == 2 && s.values().all(|v| v == "TASK_RUNNING")).then_some(s)
    })
    .await?;
    assert_eq!(states.keys().cloned().collect::<Vec<_>>(), ids);

    // Explicit reconciliation confirms it.
    fw.driver.reconcile(ids.iter().map(|id| (id.clone(), String::new())).collect());
    for id in &ids {
        let s = fw.update_of(id, |s| s.reason == Some(Reason::Reconciliation)).await?;
        assert_eq!(s.state, TaskState::Running, "{s:?}");
    }
    // Nothing was launched twice, nothing was reported lost.
    assert_eq!(processes_running(&sleep), 2);
    assert_no_loss(&fw.seen, &ids);

    // The old leader restarts and becomes a follower that redirects to the new leader.
    c.start_master(old)?;
    let old_addr = c.addrs[old].clone();
    wait_for("the old leader to come back as a follower", WAIT, async || {
        let (leads, location, _) = master_leads(&old_addr).await.ok()?;
        (!leads && location.as_deref() == Some(format!("http://{new_leader}/master/state").as_str())).then_some(())
    })
    .await?;
    assert_eq!(wait_for_leader(&c.addrs, WAIT).await?, new_leader);

    // ZooKeeper restarts: no task is killed; a leader is in charge again with both tasks RUNNING.
    c.zk.restart().await?;
    let leader_after = wait_for_leader(&c.addrs, WAIT).await?;
    wait_for("both tasks RUNNING after the ZooKeeper restart", WAIT, async || {
        let s = task_states(&leader_after).await?;
        let agents = agent_count(&leader_after).await?;
        (agents == 2 && s.len() == 2 && s.values().all(|v| v == "TASK_RUNNING")).then_some(())
    })
    .await?;
    assert_eq!(processes_running(&sleep), 2);
    assert_no_loss(&fw.seen, &ids);

    // The restart may have made the leader step down for a moment: the framework then resubscribes after its
    // backoff, and only a subscribed driver can send the TEARDOWN.
    fw.subscribed().await?;
    fw.teardown().await;
    wait_for("the tasks to be killed after teardown", WAIT, async || (processes_running(&sleep) == 0).then_some(()))
        .await?;
    kill_processes_matching(&sleep);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_or_corrupt_registry_is_reported_and_not_applied() -> anyhow::Result<()> {
    use zookeeper_client as zk;
    let mut c = HaCluster::start(1).await?;
    let leader = wait_for_leader(&c.addrs, WAIT).await?;
    c.add_agent()?;
    wait_for("the agent to register", WAIT, async || (agent_count(&leader).await? == 1).then_some(())).await?;

    // Another writer changes the registry behind the leader's back (a valid envelope, but not the leader's write).
    let client = zk::Client::connect(&c.zk.servers()).await?;
    let node = format!("{ZK_PATH}/registry");
    let (bytes, _) = client.get_data(&node).await?;
    let theirs = String::from_utf8(bytes)?;
    assert!(theirs.contains("agent0"), "the admitted agent is in the registry: {theirs}");
    client.set_data(&node, theirs.as_bytes(), None).await?;

    // The leader's next write (a second agent registering) is refused as a conflict; the master stops rather than
    // act on state it cannot persist, and the agent is never told it registered.
    c.add_agent()?;
    let m = c.masters[0].as_mut().expect("running");
    let status =
        wait_for("the leader to stop on the conflict", WAIT, async || m.child.try_wait().ok().flatten()).await?;
    assert!(!status.success());
    let log = m.log_text();
    assert!(log.contains("written by someone else"), "{log}");
    let (after, _) = client.get_data(&node).await?;
    assert_eq!(String::from_utf8(after)?, theirs, "the conflicting write was not applied");
    assert!(!c.agents[1].log_text().contains("registered with the master"), "agent1 must not be told it registered");

    // A corrupt registry: a new master refuses to lead on it and says why.
    client
        .set_data(&node, b"{\"format\":\"agora-registry/1\",\"version\":3,\"checksum\":\"x\",\"registry\":{}}", None)
        .await?;
    c.start_master(0)?;
    let m = c.masters[0].as_mut().expect("running");
    let status =
        wait_for("the master to refuse the corrupt registry", WAIT, async || m.child.try_wait().ok().flatten()).await?;
    assert!(!status.success());
    let log = m.log_text();
    assert!(log.contains("corrupt"), "{log}");
    let (after, _) = client.get_data(&node).await?;
    assert!(String::from_utf8(after)?.contains("\"checksum\":\"x\""), "the corrupt registry was left for an operator");
    Ok(())
}
