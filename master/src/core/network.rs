//! Container networks, the master's part: the address plan. Each agent that runs container networks gets its own
//! subnet of the cluster CIDR ([`agora_net::AddressPlan`]), kept in the registry with the agent's address (so a new
//! leader knows every subnet and where it routes before the agents come back), and every such agent is told the
//! others' subnets and addresses, again whenever they change. Tasks that join a network are checked here before
//! they reach an agent: a network the cluster has, an agent that runs it, host ports among the task's `ports`.

use std::collections::{BTreeMap, BTreeSet};

use agora_net::{AddressPlan, Ipv4Cidr};
use agora_proto::model::{AgentNetwork, NetworkAssignment, NetworkPeer, TaskInfo};

use super::{AgentCommand, AgentState, Master};
use crate::registry::NetworkLease;

/// The cluster's container network (`--network-name`, `--network-cidr`, `--network-subnet-prefix`).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    pub name: String,
    pub plan: AddressPlan,
}

impl Master {
    /// An agent that runs container networks (re-)registered from `ip`, holding `network.subnet` if any: its subnet
    /// (the one it holds, or the one the registry has for it, when still free; else a new one), recorded in the
    /// registry, and what to tell it. `None` when the master has no address plan or the plan is full (logged).
    pub(crate) fn lease_subnet(
        &mut self,
        agent_id: &str,
        ip: &str,
        network: &AgentNetwork,
    ) -> Option<NetworkAssignment> {
        let config = self.config.network.clone()?;
        let taken: BTreeSet<Ipv4Cidr> =
            self.registry.subnets.iter().filter(|(id, _)| *id != agent_id).map(|(_, l)| l.subnet).collect();
        let held = network.subnet.as_deref().and_then(|s| s.parse::<Ipv4Cidr>().ok());
        let wanted = held.or_else(|| self.registry.subnets.get(agent_id).map(|l| l.subnet));
        let subnet = match config.plan.allocate(&taken, wanted) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(agent_id, error = %e, "cannot give the agent a subnet; its tasks get no container network");
                return None;
            }
        };
        if held.is_some_and(|h| h != subnet) {
            tracing::warn!(agent_id, held = ?network.subnet, subnet = %subnet, "the agent's subnet is taken or outside the plan; it gets another");
        }
        let lease = NetworkLease { subnet, ip: ip.to_string() };
        if self.registry.subnets.get(agent_id) != Some(&lease) {
            tracing::info!(agent_id, subnet = %subnet, ip, "agent subnet");
            self.registry.subnets.insert(agent_id.to_string(), lease);
            self.persist();
            self.broadcast_peers(agent_id);
        }
        Some(NetworkAssignment {
            name: config.name,
            cluster_cidr: config.plan.cluster.to_string(),
            subnet: subnet.to_string(),
            peers: self.peers(),
        })
    }

    /// Every agent subnet with the address it routes through.
    pub(crate) fn peers(&self) -> Vec<NetworkPeer> {
        self.registry
            .subnets
            .iter()
            .map(|(id, l)| NetworkPeer { agent_id: id.clone(), subnet: l.subnet.to_string(), ip: l.ip.clone() })
            .collect()
    }

    /// Tells every connected agent with a subnet, but `changed`, the new list of peers.
    pub(crate) fn broadcast_peers(&mut self, changed: &str) {
        let peers = self.peers();
        let to: Vec<String> = self
            .registry
            .subnets
            .keys()
            .filter(|id| id.as_str() != changed)
            .filter(|id| self.agents.get(*id).is_some_and(|a| a.conn.is_some() && a.state == AgentState::Active))
            .cloned()
            .collect();
        for id in to {
            self.send_agent(&id, AgentCommand::NetworkPeers(peers.clone()));
        }
    }

    /// The agents' subnets, for `/master/state`.
    pub fn subnets(&self) -> BTreeMap<String, String> {
        self.registry.subnets.iter().map(|(id, l)| (id.clone(), l.subnet.to_string())).collect()
    }

    /// Mesos's checks of a task's `container.network_infos`, with Agora's address plan: at most one network, one the
    /// cluster has (unnamed means the cluster's), an agent that runs it, and port mappings whose host ports are among
    /// the task's `ports` resources, each used once per protocol. The error names the field.
    pub(crate) fn validate_networks(&self, task: &TaskInfo, agent_id: &str) -> Result<(), String> {
        let Some(networks) = task.container.as_ref().map(|c| &c.network_infos).filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        let Some(config) = &self.config.network else {
            return Err("Task asks for a container network ('container.network_infos') but this cluster has none \
                        (the master runs with --network-cidr=none)"
                .into());
        };
        if networks.len() > 1 {
            return Err(format!(
                "Task joins {} container networks ('container.network_infos'); an agent runs one",
                networks.len()
            ));
        }
        let network = &networks[0];
        if let Some(name) = network.name.as_deref().filter(|n| *n != config.name) {
            return Err(format!(
                "Unknown network '{name}' in 'container.network_infos[0].name'; this cluster's network is '{}'",
                config.name
            ));
        }
        if !self.registry.subnets.contains_key(agent_id) {
            return Err(format!("Agent '{agent_id}' runs no container network (start it with --network-bridge)"));
        }
        let ports = task.resources.ranges("ports");
        let mut used = BTreeSet::new();
        for (i, m) in network.port_mappings.iter().enumerate() {
            let at = format!("container.network_infos[0].port_mappings[{i}]");
            if !ports.iter().any(|(b, e)| (b..=e).contains(&u64::from(m.host_port))) {
                return Err(format!(
                    "Host port {} of '{at}.host_port' is not among the task's 'ports' resources {ports}",
                    m.host_port
                ));
            }
            if !used.insert((m.protocol_name(), m.host_port)) {
                return Err(format!("Host port {} of '{at}.host_port' is mapped twice", m.host_port));
            }
        }
        Ok(())
    }
}
