//! Container networks end to end, as root, in a [`NetLab`]: two agent hosts (network namespaces with no route out)
//! hang off a switch namespace where the master and this test run. Each agent runs `--network-bridge` and gets its
//! subnet from the master. A receiver task on host 1 and a sender task on host 0 each get their own address; the
//! sender reaches the receiver by its address and the receiver sees the sender's own address (no NAT), routed
//! through host 1 (`ip route get` on host 0 names it as next hop); the receiver's port mapping answers from another
//! host; its health check reaches it; the agent's safety rules reject unknown cluster addresses and keep containers
//! from the agent's host and the outside. Host 1's agent is then `kill -9`ed and restarted: addresses, routes and
//! mappings survive. At the end the tasks are killed and the agents stopped, and neither host keeps a link, route,
//! nft object, pinned namespace or address lease. Build the binaries first: `cargo build --workspace --bins`.

use std::path::{Path, PathBuf};

use agora_framework_sdk::{FrameworkInfo, Resources, TaskBuilder, TaskState, TaskStatus};
use agora_integration_tests::netlab::{NetLab, SWITCH_IP, expect_contains, host_ip};
use agora_integration_tests::{Proc, TestFramework, WAIT, wait_for, wait_until_ok};
use agora_proto::model::{ContainerInfo, ContainerType, HealthCheck, HealthCheckType, NetworkInfo, PortMapping};
use anyhow::{Context, Result};
use serde_json::Value;

const MASTER_PORT: u16 = 5050;
const AGENT_PORT: u16 = 5051;
const RESOURCES: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-31010]";

struct Host {
    work_dir: PathBuf,
    netns_dir: PathBuf,
    args: Vec<String>,
}

fn host(dir: &Path, n: usize) -> Host {
    let work_dir = dir.join(format!("agent{n}"));
    let netns_dir = work_dir.join("netns");
    let args = [
        "--master",
        &format!("{SWITCH_IP}:{MASTER_PORT}"),
        "--ip",
        &host_ip(n),
        "--port",
        &AGENT_PORT.to_string(),
        "--work-dir",
        &work_dir.display().to_string(),
        "--resources",
        RESOURCES,
        "--hostname",
        &format!("agent{n}"),
        "--isolation",
        "libcontainer",
        "--registration-backoff-factor",
        "100ms",
        "--executor-shutdown-grace-period",
        "1secs",
        "--network-bridge",
        "agora0",
        "--network-netns-dir",
        &netns_dir.display().to_string(),
        "--dns-nameserver",
        SWITCH_IP,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Host { work_dir, netns_dir, args }
}

/// A task on `agent_id` joining the cluster's network with `mappings`, and an HTTP health check on `check_port`.
fn bridged(
    id: &str,
    agent_id: &str,
    cmd: &str,
    mappings: &[(u32, u32)],
    check_port: Option<u32>,
) -> agora_framework_sdk::TaskInfo {
    let resources: Resources = "cpus:0.1;mem:32;ports:[31000-31000]".parse().expect("resources");
    let mut task = TaskBuilder::new(id, id).agent(agent_id).resources(resources).shell(cmd).build();
    task.container = Some(ContainerInfo {
        kind: ContainerType::Mesos,
        rootfs: None,
        volumes: vec![],
        hostname: None,
        image: None,
        network_infos: vec![NetworkInfo {
            port_mappings: mappings
                .iter()
                .map(|(h, c)| PortMapping { host_port: *h, container_port: *c, protocol: None })
                .collect(),
            ..NetworkInfo::default()
        }],
    });
    task.health_check = check_port.map(|port| HealthCheck {
        kind: HealthCheckType::Http,
        port: Some(port),
        path: Some("/".into()),
        scheme: None,
        statuses: vec![],
        ip_protocol: Default::default(),
        ignore_http1xx: false,
        command: None,
        delay_seconds: 0.0,
        interval_seconds: 1.0,
        timeout_seconds: 2.0,
        consecutive_failures: 3,
        grace_period_seconds: 10.0,
    });
    task
}

fn ip_of(status: &TaskStatus) -> Option<String> {
    status.container_status.as_ref()?.ip_addresses().next().map(String::from)
}

/// Launches `task` on an offer of its agent not `spent` yet (one already received, else the next) and waits until
/// it runs; returns its address.
async fn launch(
    fw: &mut TestFramework,
    spent: &mut Vec<String>,
    task: agora_framework_sdk::TaskInfo,
) -> Result<String> {
    let agent = task.agent_id.clone();
    let fresh = |e: &agora_integration_tests::Event, spent: &[String]| match e {
        agora_integration_tests::Event::Offers(o) => {
            o.iter().find(|o| o.agent_id == agent && !spent.contains(&o.id)).cloned()
        }
        _ => None,
    };
    let seen = fw.seen.iter().rev().find_map(|e| fresh(e, spent));
    let offer = match seen {
        Some(o) => o,
        None => {
            let spent_now = spent.clone();
            fw.next_matching("an offer of the task's agent", |e| fresh(e, &spent_now)).await?
        }
    };
    spent.push(offer.id.clone());
    let id = task.task_id.clone();
    fw.driver.launch(&offer, vec![task]);
    let running = fw.update_of(&id, |s| s.state == TaskState::Running || s.state.is_terminal()).await?;
    anyhow::ensure!(running.state == TaskState::Running, "{id} did not run: {running:?}");
    ip_of(&running).with_context(|| format!("{id}'s TASK_RUNNING has no container_status address: {running:?}"))
}

/// The only pinned namespace of an agent (its one bridged task).
fn pin_of(netns_dir: &Path) -> Result<PathBuf> {
    let pins: Vec<PathBuf> = std::fs::read_dir(netns_dir)?.flatten().map(|e| e.path()).collect();
    anyhow::ensure!(pins.len() == 1, "expected one pinned namespace in {}: {pins:?}", netns_dir.display());
    Ok(pins[0].clone())
}

/// The receiver's httpd log (its sandbox's stderr).
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

#[test]
fn containers_on_two_agents_talk_by_address_without_nat_and_keep_their_network_across_kill_9() -> Result<()> {
    let lab = NetLab::new("two", 2)?;
    let dir = tempfile::Builder::new().prefix("agora-networks-").tempdir()?;
    let hosts = [host(dir.path(), 0), host(dir.path(), 1)];
    let log_dir = dir.path().to_path_buf();
    let master_args: Vec<String> = [
        "--ip",
        SWITCH_IP,
        "--port",
        &MASTER_PORT.to_string(),
        "--work-dir",
        &dir.path().join("master").display().to_string(),
        "--allocation-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _master = NetLab::spawn_in(&lab.switch(), "master", "agora-master", &master_args, &log_dir)?;
    let mut agents: Vec<Proc> = Vec::new();
    for (n, h) in hosts.iter().enumerate() {
        agents.push(NetLab::spawn_in(&lab.host(n), &format!("agent{n}"), "agora-agent", &h.args, &log_dir)?);
    }

    let result = lab.run(|| async {
        let http = reqwest::Client::new();
        let master = format!("http://{SWITCH_IP}:{MASTER_PORT}");
        wait_until_ok(&http, &format!("{master}/health"), "the master").await?;
        let state = async || -> Option<Value> { http.get(format!("{master}/master/state")).send().await.ok()?.json().await.ok() };
        let slaves = wait_for("both agents with a subnet", WAIT, async || {
            let s = state().await?;
            let slaves = s["slaves"].as_array()?.clone();
            (slaves.len() == 2 && slaves.iter().all(|a| a["network"]["subnet"].is_string())).then_some(slaves)
        })
        .await?;
        let agent_id = |n: usize| -> String {
            let host = format!("agent{n}");
            slaves.iter().find(|a| a["hostname"] == host.as_str()).map(|a| a["id"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
        };
        let (a0, a1) = (agent_id(0), agent_id(1));

        let mut info = FrameworkInfo::new("net-test");
        info.failover_timeout = 60.0;
        let mut fw = TestFramework::start(&format!("{SWITCH_IP}:{MASTER_PORT}"), info).await?;
        let receiver = "echo receiver > index.html && exec busybox httpd -f -vv -p 8080 -h .";
        let mut spent = Vec::new();
        let ip_b = launch(&mut fw, &mut spent, bridged("receiver", &a1, receiver, &[(31000, 8080)], Some(8080))).await?;
        let sender = format!("while true; do busybox timeout 2 busybox wget -q -O /dev/null http://{ip_b}:8080/sender; sleep 0.3; done");
        let ip_a = launch(&mut fw, &mut spent, bridged("sender", &a0, &sender, &[], None)).await?;
        assert_ne!(ip_a, ip_b);
        assert!(ip_a.starts_with("10.233.") && ip_b.starts_with("10.233."), "{ip_a} {ip_b}");

        // The receiver sees the sender's own container address.
        wait_for("the receiver to log the sender's address", WAIT, async || {
            receiver_log(&hosts[1].work_dir).lines().any(|l| l.starts_with(&format!("[::ffff:{ip_a}]:")) && l.contains("url:/sender")).then_some(())
        })
        .await
        .with_context(|| format!("{}\n{}", lab.describe(0), lab.describe(1)))?;
        // Routed through host 1.
        let route = lab.ip(0, &["route", "get", &ip_b])?;
        expect_contains(&route, &format!("via {}", host_ip(1)))?;
        // The port mapping answers from another host (the switch) and from host 0 itself.
        let body = http.get(format!("http://{}:31000/", host_ip(1))).send().await?.text().await?;
        assert_eq!(body.trim(), "receiver");
        let body = NetLab::exec_in(&lab.host(0), "busybox", &["timeout", "3", "busybox", "wget", "-q", "-O", "-", &format!("http://{}:31000/", host_ip(1))])?;
        assert_eq!(body.trim(), "receiver");
        // The health check reaches the receiver's own address.
        fw.seen_or_next_update("receiver", |s| s.healthy == Some(true)).await?;
        // Both addresses are in /master/state as Mesos shows them.
        let s = state().await.context("/master/state")?;
        let tasks = s["frameworks"][0]["tasks"].as_array().cloned().unwrap_or_default();
        for (id, ip) in [("receiver", &ip_b), ("sender", &ip_a)] {
            let t = tasks.iter().find(|t| t["id"] == id).with_context(|| format!("{id} in /master/state"))?;
            let last = t["statuses"].as_array().and_then(|s| s.last()).cloned().unwrap_or_default();
            assert_eq!(last["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"], ip.as_str(), "{t}");
        }

        // Safety, from inside the sender's namespace: an address of the cluster CIDR nobody owns is rejected, the
        // agent's own port on the bridge is closed, and the outside (here the switch) is unreachable.
        let pin_a = pin_of(&hosts[0].netns_dir)?;
        let subnet0 = slaves.iter().find(|a| a["id"] == a0.as_str()).and_then(|a| a["network"]["subnet"].as_str()).unwrap_or_default().to_string();
        let gateway0 = subnet0.replace(".0/24", ".1");
        for target in ["http://10.233.250.9:80/".to_string(), format!("http://{gateway0}:{AGENT_PORT}/state"), format!("http://{SWITCH_IP}:{MASTER_PORT}/health")] {
            let reached = NetLab::exec_in(&pin_a, "busybox", &["timeout", "1", "busybox", "wget", "-q", "-O", "-", &target]);
            assert!(reached.is_err(), "the sender reached {target}: {reached:?}");
        }

        // Host 1's agent dies hard and comes back: the receiver keeps its address, route and mapping.
        agents[1].kill9();
        agents[1] = NetLab::spawn_in(&lab.host(1), "agent1-restarted", "agora-agent", &hosts[1].args, &log_dir)?;
        wait_until_ok(&http, &format!("http://{}:{AGENT_PORT}/state", host_ip(1)), "the restarted agent").await?;
        wait_for("the restarted agent to re-register", WAIT, async || {
            let s: Value = http.get(format!("http://{}:{AGENT_PORT}/state", host_ip(1))).send().await.ok()?.json().await.ok()?;
            (s["registered"] == true).then_some(())
        })
        .await?;
        let agent_state: Value = http.get(format!("http://{}:{AGENT_PORT}/state", host_ip(1))).send().await?.json().await?;
        let shown = &agent_state["frameworks"][0]["executors"][0]["tasks"][0]["statuses"][0]["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"];
        assert_eq!(shown, ip_b.as_str(), "{agent_state}");
        let before = receiver_log(&hosts[1].work_dir).lines().count();
        wait_for("the sender to reach the receiver again", WAIT, async || (receiver_log(&hosts[1].work_dir).lines().count() > before + 2).then_some(())).await?;
        expect_contains(&lab.ip(0, &["route", "get", &ip_b])?, &format!("via {}", host_ip(1)))?;
        let body = http.get(format!("http://{}:31000/", host_ip(1))).send().await?.text().await?;
        assert_eq!(body.trim(), "receiver");

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
