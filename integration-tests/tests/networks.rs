//! Container networks end to end, as root, in a [`NetLab`]: two agent hosts (network namespaces with no route out)
//! hang off a switch namespace where the master and this test run. Each agent runs `--network-bridge` and gets its
//! subnet from the master. A receiver task on host 1 and a sender task on host 0 each get their own address; the
//! sender reaches the receiver by its address and the receiver sees the sender's own address (no NAT), routed
//! through host 1 (`ip route get` on host 0 names it as next hop); the receiver's port mapping answers from another
//! host; its health check reaches it; the agent's safety rules reject unknown cluster addresses and keep containers
//! from the agent's host and the outside. Host 1's agent is then `kill -9`ed and restarted: addresses, routes and
//! mappings survive. At the end the tasks are killed and the agents stopped, and neither host keeps a link, route,
//! nft object, pinned namespace or address lease. Build the binaries first: `cargo build --workspace --bins`.

use std::path::Path;

use agora_framework_sdk::{FrameworkInfo, TaskInfo};
use agora_integration_tests::netlab::cluster::{
    AGENT_PORT, LabAgent, MASTER_PORT, agents_with_subnets, ip_of, lab_task, launch_and_run, master_addr, master_state,
    spawn_master,
};
use agora_integration_tests::netlab::{NetLab, SWITCH_IP, expect_contains, host_ip};
use agora_integration_tests::{Proc, TestFramework, WAIT, wait_for, wait_until_ok};
use agora_proto::model::HealthCheck;
use anyhow::{Context, Result};
use serde_json::Value;

/// The receiver's httpd log (its sandbox's stderr); busybox logs each client as `[::ffff:IP]:PORT: url:/path`.
fn receiver_log(work_dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![work_dir.join("slaves")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "stderr") && p.to_string_lossy().contains("/receiver/") {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// An HTTP check of port 8080 at the task's address, every second.
fn http_check(mut task: TaskInfo) -> TaskInfo {
    let check = HealthCheck::http(8080, "/");
    task.health_check =
        Some(HealthCheck { interval_seconds: 1.0, timeout_seconds: 2.0, grace_period_seconds: 10.0, ..check });
    task
}

/// `busybox wget` of `url` in the namespace `netns`, bounded by `secs` (busybox's own `-T` crashes in Debian's
/// static 1.35 build).
fn fetch_in(netns: &Path, url: &str, secs: u32) -> Result<String> {
    NetLab::exec_in(netns, "busybox", &["timeout", &secs.to_string(), "busybox", "wget", "-q", "-O", "-", url])
}

#[test]
fn containers_on_two_agents_talk_by_address_without_nat_and_keep_their_network_across_kill_9() -> Result<()> {
    let lab = NetLab::new("two", 2)?;
    let dir = tempfile::Builder::new().prefix("agora-networks-").tempdir()?;
    let hosts = [LabAgent::new(dir.path(), 0), LabAgent::new(dir.path(), 1)];
    let log_dir = dir.path().to_path_buf();
    let _master = spawn_master(&lab, dir.path())?;
    let mut agents: Vec<Proc> = Vec::new();
    for (n, h) in hosts.iter().enumerate() {
        agents.push(h.spawn(&lab, n, &format!("agent{n}"), &log_dir)?);
    }

    let result = lab.run(|| async {
        let http = reqwest::Client::new();
        let ids = agents_with_subnets(&http, 2).await?;
        let (a0, a1) = (ids[0].0.clone(), ids[1].0.clone());
        let mut info = FrameworkInfo::new("net-test");
        info.failover_timeout = 60.0;
        let mut fw = TestFramework::start(&master_addr(), info).await?;
        let mut spent = Vec::new();
        let receiver = "echo receiver > index.html && exec busybox httpd -f -vv -p 8080 -h .";
        let task = http_check(lab_task("receiver", &a1, receiver, true, 31000, Some(8080)));
        let ip_b = ip_of(&launch_and_run(&mut fw, &mut spent, task).await?).context("the receiver's address")?;
        let sender = format!(
            "while true; do busybox timeout 2 busybox wget -q -O /dev/null http://{ip_b}:8080/sender; sleep 0.3; done"
        );
        let task = lab_task("sender", &a0, &sender, true, 31000, None);
        let ip_a = ip_of(&launch_and_run(&mut fw, &mut spent, task).await?).context("the sender's address")?;
        assert_ne!(ip_a, ip_b);
        assert!(ip_a.starts_with("10.233.") && ip_b.starts_with("10.233."), "{ip_a} {ip_b}");

        // The receiver sees the sender's own container address.
        wait_for("the receiver to log the sender's address", WAIT, async || {
            let log = receiver_log(&hosts[1].work_dir);
            log.lines().any(|l| l.starts_with(&format!("[::ffff:{ip_a}]:")) && l.contains("url:/sender")).then_some(())
        })
        .await
        .with_context(|| format!("{}\n{}", lab.describe(0), lab.describe(1)))?;
        // Routed through host 1.
        expect_contains(&lab.ip(0, &["route", "get", &ip_b])?, &format!("via {}", host_ip(1)))?;
        // The port mapping answers from another host (the switch) and from host 0 itself.
        let mapped = format!("http://{}:31000/", host_ip(1));
        assert_eq!(http.get(&mapped).send().await?.text().await?.trim(), "receiver");
        assert_eq!(fetch_in(&lab.host(0), &mapped, 3)?.trim(), "receiver");
        // The health check reaches the receiver's own address.
        fw.seen_or_next_update("receiver", |s| s.healthy == Some(true)).await?;
        // Both addresses are in /master/state as Mesos shows them.
        let state = master_state(&http).await.context("/master/state")?;
        let tasks = state["frameworks"][0]["tasks"].as_array().cloned().unwrap_or_default();
        for (id, ip) in [("receiver", &ip_b), ("sender", &ip_a)] {
            let t = tasks.iter().find(|t| t["id"] == id).with_context(|| format!("{id} in /master/state"))?;
            let last = t["statuses"].as_array().and_then(|s| s.last()).cloned().unwrap_or_default();
            let shown = &last["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"];
            assert_eq!(shown, ip.as_str(), "{t}");
        }

        // Safety, from inside the sender's namespace: an address of the cluster CIDR nobody owns is rejected, the
        // agent's own port on the bridge is closed, and the outside (here the switch) is unreachable.
        let pin_a = hosts[0].only_pin()?;
        let gateway0 = ids[0].1.replace(".0/24", ".1");
        for target in [
            "http://10.233.250.9:80/".to_string(),
            format!("http://{gateway0}:{AGENT_PORT}/state"),
            format!("http://{SWITCH_IP}:{MASTER_PORT}/health"),
        ] {
            let reached = fetch_in(&pin_a, &target, 1);
            assert!(reached.is_err(), "the sender reached {target}: {reached:?}");
        }

        // Host 1's agent dies hard and comes back: the receiver keeps its address, route and mapping.
        agents[1].kill9();
        agents[1] = hosts[1].spawn(&lab, 1, "agent1-restarted", &log_dir)?;
        let agent1 = format!("http://{}:{AGENT_PORT}/state", host_ip(1));
        wait_until_ok(&http, &agent1, "the restarted agent").await?;
        let agent_state = wait_for("the restarted agent to re-register", WAIT, async || {
            let s: Value = http.get(&agent1).send().await.ok()?.json().await.ok()?;
            (s["registered"] == true).then_some(s)
        })
        .await?;
        let task = &agent_state["frameworks"][0]["executors"][0]["tasks"][0];
        let shown = &task["statuses"][0]["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"];
        assert_eq!(shown, ip_b.as_str(), "{agent_state}");
        let before = receiver_log(&hosts[1].work_dir).lines().count();
        wait_for("the sender to reach the receiver again", WAIT, async || {
            (receiver_log(&hosts[1].work_dir).lines().count() > before + 2).then_some(())
        })
        .await?;
        expect_contains(&lab.ip(0, &["route", "get", &ip_b])?, &format!("via {}", host_ip(1)))?;
        assert_eq!(http.get(&mapped).send().await?.text().await?.trim(), "receiver");

        // The end: tasks killed, agents stopped; nothing is left on either host.
        fw.driver.kill("receiver", &a1);
        fw.driver.kill("sender", &a0);
        for id in ["receiver", "sender"] {
            fw.seen_or_next_update(id, |s| s.state.is_terminal()).await?;
        }
        fw.teardown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    result?;
    for (n, agent) in agents.iter_mut().enumerate() {
        let status = agent.terminate();
        assert!(status.is_some_and(|s| s.success()), "agent {n} did not stop cleanly: {status:?}");
        let left = lab.leftovers(n, &hosts[n].work_dir, &hosts[n].netns_dir)?;
        assert!(left.is_empty(), "host {n} keeps {left:?}");
    }
    Ok(())
}
