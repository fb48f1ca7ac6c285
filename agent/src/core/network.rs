//! Container networks in the core: what the master assigned (the cluster CIDR, this agent's subnet, its peers), the
//! checks of a task's `container.network_infos` before launch, the address each bridged task got, and the host's
//! desired network ([`NetworkState`]: the assignment and the port mappings of the running tasks), which the shell
//! applies through `crate::network` whenever it changes ([`Effect::ApplyNetwork`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use agora_net::{Assignment, Peer, PortForward, Protocol};
use agora_proto::model::{AgentNetwork, ContainerStatus, NetworkInfo, TaskInfo};
use tracing::{info, warn};

use super::tasks::{Container, TaskRun};
use super::{AgentCore, Effect, TaskKey};
use crate::containerizer::spec::ContainerNetwork;

/// The host's network as the core wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkState {
    pub assignment: Assignment,
    /// The port mappings of the running bridged tasks.
    pub forwards: Vec<PortForward>,
}

/// Why a task cannot join the container network it asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkRefused {
    #[error("this agent runs no container network (start it with --network-bridge and --isolation=libcontainer)")]
    Disabled,
    #[error("this agent has no subnet from the master yet (is the master's --network-cidr none?)")]
    Unassigned,
    #[error("the task joins {0} container networks; an agent runs one")]
    Several(usize),
    #[error("unknown network '{name}' in 'container.network_infos[0].name'; this agent's network is '{ours}'")]
    UnknownName { name: String, ours: String },
    #[error("'container.network_infos[0].port_mappings[{index}].protocol' is '{protocol}', not 'tcp' or 'udp'")]
    Protocol { index: usize, protocol: String },
    #[error("'container.network_infos[0].port_mappings[{index}]' maps a port outside 1-65535")]
    Port { index: usize },
}

/// A task's network request, if it makes one: its `NetworkInfo`.
fn requested(task: &TaskInfo) -> Option<&[NetworkInfo]> {
    task.container.as_ref().map(|c| c.network_infos.as_slice()).filter(|n| !n.is_empty())
}

/// The port forwards of a bridged task at `ip` (mappings whose protocol or ports do not parse are left out; the
/// launch checked them).
fn forwards_of(info: &TaskInfo, ip: Ipv4Addr) -> Vec<PortForward> {
    let Some(networks) = requested(info) else { return vec![] };
    networks[0]
        .port_mappings
        .iter()
        .filter_map(|m| {
            Some(PortForward {
                protocol: Protocol::parse(&m.protocol_name())?,
                host_port: u16::try_from(m.host_port).ok()?,
                ip,
                container_port: u16::try_from(m.container_port).ok()?,
            })
        })
        .collect()
}

impl AgentCore {
    /// What a restarted agent had been assigned (kept by the shell beside its leases), before it registers again.
    pub fn restore_network(&mut self, assignment: Option<Assignment>) {
        self.network = assignment;
    }

    /// The assignment in force.
    pub fn network(&self) -> Option<&Assignment> {
        self.network.as_ref()
    }

    /// What the agent tells the master when it (re-)registers: that it runs container networks and the subnet it
    /// holds.
    pub(super) fn agent_network(&self) -> Option<AgentNetwork> {
        self.settings.networks.then(|| AgentNetwork { subnet: self.network.as_ref().map(|a| a.subnet.to_string()) })
    }

    /// The master's assignment on (re-)registration. Without one (the master runs no address plan) the agent keeps
    /// the old one only while bridged tasks still run.
    pub(super) fn assigned(&mut self, assignment: Option<Assignment>) -> Vec<Effect> {
        if !self.settings.networks {
            return vec![];
        }
        match assignment {
            Some(a) => {
                if let Some(old) = self.network.as_ref().filter(|old| old.subnet != a.subnet) {
                    warn!(old = %old.subnet, new = %a.subnet, "the master gave this agent another subnet; running containers keep their addresses");
                }
                if self.network.as_ref() == Some(&a) {
                    return vec![];
                }
                info!(subnet = %a.subnet, cluster = %a.cluster, peers = a.peers.len(), "container network assigned");
                self.network = Some(a);
                self.apply_network().into_iter().collect()
            }
            None => {
                if self.network.is_some()
                    && !self.tasks.values().any(|t| t.ip.is_some() && t.container != Container::Gone)
                {
                    warn!("the master runs no address plan; this agent's container network is off");
                    self.network = None;
                }
                vec![]
            }
        }
    }

    /// The master's new list of peers.
    pub(super) fn peers_changed(&mut self, peers: Vec<Peer>) -> Vec<Effect> {
        let Some(a) = self.network.as_mut() else { return vec![] };
        if a.peers == peers {
            return vec![];
        }
        info!(peers = peers.len(), "peers changed");
        a.peers = peers;
        self.apply_network().into_iter().collect()
    }

    /// The host's network as it should be now.
    pub fn network_state(&self) -> Option<NetworkState> {
        let assignment = self.network.clone()?;
        let forwards = self
            .tasks
            .values()
            .filter(|t| t.container != Container::Gone)
            .filter_map(|t| t.ip.map(|ip| forwards_of(&t.info, ip)))
            .flatten()
            .collect();
        Some(NetworkState { assignment, forwards })
    }

    pub(super) fn apply_network(&self) -> Option<Effect> {
        self.network_state().map(|s| Effect::ApplyNetwork(Box::new(s)))
    }

    /// The host's network again when a bridged task with port mappings started or ended.
    pub(super) fn forwards_changed(&self, t: &TaskRun) -> Option<Effect> {
        let ip = t.ip?;
        if forwards_of(&t.info, ip).is_empty() { None } else { self.apply_network() }
    }

    /// Checks a task's `container.network_infos` and says which network it joins (`None`: the host's).
    pub(super) fn network_request(
        &self,
        info: &TaskInfo,
        hostname: &str,
    ) -> Result<Option<ContainerNetwork>, NetworkRefused> {
        let Some(networks) = requested(info) else { return Ok(None) };
        if !self.settings.networks {
            return Err(NetworkRefused::Disabled);
        }
        let assignment = self.network.as_ref().ok_or(NetworkRefused::Unassigned)?;
        if networks.len() > 1 {
            return Err(NetworkRefused::Several(networks.len()));
        }
        if let Some(name) = networks[0].name.as_ref().filter(|n| **n != assignment.name) {
            return Err(NetworkRefused::UnknownName { name: name.clone(), ours: assignment.name.clone() });
        }
        for (index, m) in networks[0].port_mappings.iter().enumerate() {
            if Protocol::parse(&m.protocol_name()).is_none() {
                return Err(NetworkRefused::Protocol { index, protocol: m.protocol_name() });
            }
            let port = |p: u32| (1..=65535).contains(&p);
            if !port(m.host_port) || !port(m.container_port) {
                return Err(NetworkRefused::Port { index });
            }
        }
        Ok(Some(ContainerNetwork {
            name: assignment.name.clone(),
            subnet: assignment.subnet,
            hostname: hostname.to_string(),
            attached: None,
        }))
    }

    /// The launcher attached a container at `ip`, before the launch result comes: its port mappings are applied at
    /// once, while the container starts (the shell handles this before the launch result, so they are in place
    /// before the task is reported running).
    pub fn network_attached(&mut self, key: &TaskKey, container_id: &str, ip: Ipv4Addr) -> Vec<Effect> {
        if !self.tasks.set_ip(key, container_id, ip) {
            return vec![];
        }
        self.tasks.get(key).and_then(|t| self.forwards_changed(t)).into_iter().collect()
    }

    /// A task's `container_status`: its network with its address and port mappings.
    pub(super) fn container_status(&self, t: &TaskRun) -> Option<ContainerStatus> {
        let ip = t.ip?;
        let requested = requested(&t.info).and_then(|n| n.first()).cloned().unwrap_or_default();
        let name = requested.name.or_else(|| self.network.as_ref().map(|a| a.name.clone()));
        Some(ContainerStatus {
            network_infos: vec![NetworkInfo {
                name,
                ip_addresses: vec![ip.to_string()],
                port_mappings: requested.port_mappings,
                labels: requested.labels,
            }],
        })
    }

    /// After recovery: the effects that bring the host's network back (its assignment and the port mappings of the
    /// recovered tasks) and free the addresses and namespaces no live container holds.
    pub(super) fn recover_network(&self) -> Vec<Effect> {
        if !self.settings.networks {
            return vec![];
        }
        let live: BTreeSet<String> =
            self.tasks.values().filter(|t| t.container != Container::Gone).map(|t| t.container_id.clone()).collect();
        let mut effects: Vec<Effect> = self.apply_network().into_iter().collect();
        effects.push(Effect::ReconcileNetwork { live });
        effects
    }
}
