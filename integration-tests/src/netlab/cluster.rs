//! A cluster in a [`NetLab`]: the master on the switch, one agent per host with `--network-bridge`, and the helpers
//! tests and the network bench share to run bridged tasks on it through the SDK.

use std::path::{Path, PathBuf};

use agora_framework_sdk::{Offer, Resources, TaskBuilder, TaskInfo, TaskState, TaskStatus};
use agora_proto::model::{ContainerInfo, NetworkInfo};
use anyhow::{Context, Result};
use serde_json::Value;

use super::{NetLab, SWITCH_IP, host_ip};
use crate::{Event, Proc, TestFramework, WAIT, wait_for, wait_until_ok};

/// The master's port on the switch.
pub const MASTER_PORT: u16 = 5050;
/// Every agent's port on its own host.
pub const AGENT_PORT: u16 = 5051;
/// What each lab agent offers.
pub const AGENT_RESOURCES: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-31010]";

/// `198.51.100.1:5050`.
pub fn master_addr() -> String {
    format!("{SWITCH_IP}:{MASTER_PORT}")
}

/// One lab agent: its work dir, where it pins container namespaces, and its flags.
pub struct LabAgent {
    pub work_dir: PathBuf,
    pub netns_dir: PathBuf,
    pub args: Vec<String>,
}

impl LabAgent {
    /// The agent of host `n` with its state under `dir`: libcontainer isolation, the container network on bridge
    /// `agora0`, quick re-registration and kills.
    pub fn new(dir: &Path, n: usize) -> LabAgent {
        let work_dir = dir.join(format!("agent{n}"));
        let netns_dir = work_dir.join("netns");
        let args = [
            "--master",
            &master_addr(),
            "--ip",
            &host_ip(n),
            "--port",
            &AGENT_PORT.to_string(),
            "--work-dir",
            &work_dir.display().to_string(),
            "--resources",
            AGENT_RESOURCES,
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
        LabAgent { work_dir, netns_dir, args }
    }

    /// Starts it in host `n` of `lab`, logging to `log_dir/<name>.log`.
    pub fn spawn(&self, lab: &NetLab, n: usize, name: &str, log_dir: &Path) -> Result<Proc> {
        NetLab::spawn_in(&lab.host(n), name, "agora-agent", &self.args, log_dir)
    }

    /// The only pinned namespace of the agent (its one bridged task).
    pub fn only_pin(&self) -> Result<PathBuf> {
        let pins: Vec<PathBuf> = std::fs::read_dir(&self.netns_dir)?.flatten().map(|e| e.path()).collect();
        anyhow::ensure!(pins.len() == 1, "expected one pinned namespace in {}: {pins:?}", self.netns_dir.display());
        Ok(pins[0].clone())
    }
}

/// Starts the master on the lab's switch with its state under `dir`.
pub fn spawn_master(lab: &NetLab, dir: &Path) -> Result<Proc> {
    let args: Vec<String> = [
        "--ip",
        SWITCH_IP,
        "--port",
        &MASTER_PORT.to_string(),
        "--work-dir",
        &dir.join("master").display().to_string(),
        "--allocation-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    NetLab::spawn_in(&lab.switch(), "master", "agora-master", &args, dir)
}

/// `GET /master/state` (from the switch namespace).
pub async fn master_state(http: &reqwest::Client) -> Option<Value> {
    http.get(format!("http://{}/master/state", master_addr())).send().await.ok()?.json().await.ok()
}

/// Waits until the master answers and `hosts` agents registered with a subnet; returns their ids by host.
pub async fn agents_with_subnets(http: &reqwest::Client, hosts: usize) -> Result<Vec<(String, String)>> {
    wait_until_ok(http, &format!("http://{}/health", master_addr()), "the master").await?;
    let slaves = wait_for("every agent with a subnet", WAIT, async || {
        let slaves = master_state(http).await?["slaves"].as_array()?.clone();
        (slaves.len() == hosts && slaves.iter().all(|a| a["network"]["subnet"].is_string())).then_some(slaves)
    })
    .await?;
    (0..hosts)
        .map(|n| {
            let host = format!("agent{n}");
            let a = slaves
                .iter()
                .find(|a| a["hostname"] == host.as_str())
                .with_context(|| format!("{host} in /master/state"))?;
            let id = a["id"].as_str().unwrap_or_default().to_string();
            Ok((id, a["network"]["subnet"].as_str().unwrap_or_default().to_string()))
        })
        .collect()
}

/// A task on `agent_id` running `cmd` with `cpus:0.1;mem:32` and the host port `host_port`; with `bridged` it joins
/// the cluster's network, mapping `host_port` to `container_port` when there is one.
pub fn lab_task(
    id: &str,
    agent_id: &str,
    cmd: &str,
    bridged: bool,
    host_port: u32,
    container_port: Option<u32>,
) -> TaskInfo {
    let resources: Resources = format!("cpus:0.1;mem:32;ports:[{host_port}-{host_port}]").parse().expect("resources");
    let mut task = TaskBuilder::new(id, id).agent(agent_id).resources(resources).shell(cmd).build();
    if bridged {
        let mappings: Vec<(u32, u32)> = container_port.map(|c| (host_port, c)).into_iter().collect();
        task.container = Some(ContainerInfo::on_network(NetworkInfo::join(None, &mappings)));
    }
    task
}

/// The lowest port an offer holds.
pub fn first_port(offer: &Offer) -> Option<u32> {
    offer.resources.ranges("ports").iter().next().map(|(b, _)| b as u32)
}

/// The first address in a status's `container_status`.
pub fn ip_of(status: &TaskStatus) -> Option<String> {
    status.container_status.as_ref()?.ip_addresses().next().map(String::from)
}

/// An offer of `agent_id` with a port, not `spent` yet (one already received, else the next), now spent.
pub async fn fresh_offer(fw: &mut TestFramework, spent: &mut Vec<String>, agent_id: &str) -> Result<Offer> {
    let fresh = |e: &Event, spent: &[String]| match e {
        Event::Offers(o) => {
            o.iter().find(|o| o.agent_id == agent_id && !spent.contains(&o.id) && first_port(o).is_some()).cloned()
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
    Ok(offer)
}

/// Launches `task` on `offer` (its remaining resources come back at the next allocation) and waits until it runs;
/// returns its TASK_RUNNING.
pub async fn run_on(fw: &mut TestFramework, offer: &Offer, task: TaskInfo) -> Result<TaskStatus> {
    let id = task.task_id.clone();
    fw.driver.accept(vec![offer.id.clone()], vec![task], Some(0.0));
    let running = fw.update_of(&id, |s| s.state == TaskState::Running || s.state.is_terminal()).await?;
    anyhow::ensure!(running.state == TaskState::Running, "{id} did not run: {running:?}");
    Ok(running)
}

/// [`fresh_offer`] then [`run_on`].
pub async fn launch_and_run(fw: &mut TestFramework, spent: &mut Vec<String>, task: TaskInfo) -> Result<TaskStatus> {
    let offer = fresh_offer(fw, spent, &task.agent_id.clone()).await?;
    run_on(fw, &offer, task).await
}
