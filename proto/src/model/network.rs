//! Container networks in the model: what a task asks for ([`NetworkInfo`] in `ContainerInfo.network_infos`: a
//! network by name and its port mappings), what it got ([`ContainerStatus`] in `TaskStatus.container_status`: the
//! same with the addresses), and the address plan between master and agents ([`AgentNetwork`],
//! [`NetworkAssignment`], [`NetworkPeer`]). Addresses are text here, as on the wire; `agora_net` parses them.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ContainerInfo, ContainerType, Labels};

/// `hostPort` (one of the task's `ports`) → `containerPort` on the container's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    /// `tcp` (when unset) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl PortMapping {
    /// The protocol, `tcp` when unset.
    pub fn protocol_name(&self) -> String {
        self.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "tcp".to_string()).to_ascii_lowercase()
    }
}

/// A container network (Mesos's `NetworkInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The network's name; `None` is the agent's default container network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The container's addresses on it (in a status).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Labels,
}

impl NetworkInfo {
    /// A request to join the network `name` (`None`: the cluster's) with TCP mappings `hostPort → containerPort`.
    pub fn join(name: Option<&str>, mappings: &[(u32, u32)]) -> NetworkInfo {
        NetworkInfo {
            name: name.map(String::from),
            port_mappings: mappings
                .iter()
                .map(|(host_port, container_port)| PortMapping {
                    host_port: *host_port,
                    container_port: *container_port,
                    protocol: None,
                })
                .collect(),
            ..NetworkInfo::default()
        }
    }

    /// Mesos's JSON of a `NetworkInfo` (`/master/state`, the agent's `/state`): `ip_addresses` as objects with
    /// `protocol` and `ip_address`, `port_mappings` with `host_port`, `container_port` and `protocol`.
    pub fn mesos_json(&self) -> Value {
        let mut v = json!({});
        if let Some(name) = &self.name {
            v["name"] = json!(name);
        }
        if !self.ip_addresses.is_empty() {
            let ips: Vec<Value> = self
                .ip_addresses
                .iter()
                .map(|ip| json!({"protocol": if ip.contains(':') { "IPv6" } else { "IPv4" }, "ip_address": ip}))
                .collect();
            v["ip_addresses"] = json!(ips);
        }
        if !self.port_mappings.is_empty() {
            let mappings: Vec<Value> = self
                .port_mappings
                .iter()
                .map(|m| json!({"host_port": m.host_port, "container_port": m.container_port, "protocol": m.protocol_name()}))
                .collect();
            v["port_mappings"] = json!(mappings);
        }
        if !self.labels.is_empty() {
            let labels: Vec<Value> = self.labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
            v["labels"] = json!({"labels": labels});
        }
        v
    }
}

impl ContainerInfo {
    /// A MESOS container on the host's filesystem that joins `network`.
    pub fn on_network(network: NetworkInfo) -> ContainerInfo {
        ContainerInfo {
            kind: ContainerType::Mesos,
            rootfs: None,
            volumes: vec![],
            hostname: None,
            image: None,
            network_infos: vec![network],
        }
    }
}

/// What became of a task's container (Mesos's `ContainerStatus`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub network_infos: Vec<NetworkInfo>,
}

impl ContainerStatus {
    /// Mesos's JSON of a `ContainerStatus`: `{"network_infos": [...]}`.
    pub fn mesos_json(&self) -> Value {
        json!({"network_infos": self.network_infos.iter().map(NetworkInfo::mesos_json).collect::<Vec<_>>()})
    }

    /// Every address of every network, in order.
    pub fn ip_addresses(&self) -> impl Iterator<Item = &str> {
        self.network_infos.iter().flat_map(|n| n.ip_addresses.iter().map(String::as_str))
    }
}

/// An agent's side of the address plan: it runs container networks; `subnet` is the one it already holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNetwork {
    pub subnet: Option<String>,
}

/// Another agent's subnet and the address that routes to it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkPeer {
    pub agent_id: String,
    pub subnet: String,
    pub ip: String,
}

/// The cluster's container network as the master tells an agent: its name, the cluster CIDR, the agent's subnet,
/// and every peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAssignment {
    pub name: String,
    pub cluster_cidr: String,
    pub subnet: String,
    pub peers: Vec<NetworkPeer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_mesos_shape() {
        let status = ContainerStatus {
            network_infos: vec![NetworkInfo {
                name: Some("agora".into()),
                ip_addresses: vec!["10.233.1.2".into()],
                port_mappings: vec![PortMapping { host_port: 31000, container_port: 8080, protocol: None }],
                labels: vec![],
            }],
        };
        assert_eq!(
            status.mesos_json(),
            json!({"network_infos": [{
                "name": "agora",
                "ip_addresses": [{"protocol": "IPv4", "ip_address": "10.233.1.2"}],
                "port_mappings": [{"host_port": 31000, "container_port": 8080, "protocol": "tcp"}],
            }]})
        );
        assert_eq!(status.ip_addresses().collect::<Vec<_>>(), ["10.233.1.2"]);
    }
}
