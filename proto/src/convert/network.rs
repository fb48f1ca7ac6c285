//! Container networks between wire and model: `NetworkInfo` (with port mappings and addresses), `ContainerStatus`
//! and the address plan messages between master and agents.

use super::{ConvertError, non_empty};
use crate::model;
use crate::wire;

fn labels_to_wire(labels: &model::Labels) -> Option<wire::Labels> {
    (!labels.is_empty()).then(|| wire::Labels {
        labels: labels.iter().map(|(k, v)| wire::Label { key: k.clone(), value: v.clone() }).collect(),
    })
}

pub fn network_info_to_wire(n: &model::NetworkInfo) -> wire::NetworkInfo {
    wire::NetworkInfo {
        ip_addresses: n
            .ip_addresses
            .iter()
            .map(|ip| wire::network_info::IpAddress {
                protocol: if ip.contains(':') {
                    wire::network_info::Protocol::IPv6
                } else {
                    wire::network_info::Protocol::IPv4
                } as i32,
                ip_address: ip.clone(),
            })
            .collect(),
        name: n.name.clone().unwrap_or_default(),
        labels: labels_to_wire(&n.labels),
        port_mappings: n
            .port_mappings
            .iter()
            .map(|p| wire::network_info::PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// A port must be 1-65535 (a host port 0 was to be chosen by the framework before the launch).
fn port(value: u32, field: String) -> Result<u32, ConvertError> {
    if (1..=65535).contains(&value) {
        Ok(value)
    } else {
        Err(ConvertError::new(field, format!("{value} is not a port (1-65535)")))
    }
}

pub fn network_info_from_wire(n: wire::NetworkInfo, field: &str) -> Result<model::NetworkInfo, ConvertError> {
    let mut port_mappings = Vec::with_capacity(n.port_mappings.len());
    for (i, p) in n.port_mappings.into_iter().enumerate() {
        let at = |name: &str| format!("{field}.port_mappings[{i}].{name}");
        let protocol = non_empty(p.protocol);
        if let Some(proto) = protocol.as_deref().filter(|p| !matches!(p.to_ascii_lowercase().as_str(), "tcp" | "udp")) {
            return Err(ConvertError::new(at("protocol"), format!("'{proto}' is not 'tcp' or 'udp'")));
        }
        port_mappings.push(model::PortMapping {
            host_port: port(p.host_port, at("host_port"))?,
            container_port: port(p.container_port, at("container_port"))?,
            protocol,
        });
    }
    Ok(model::NetworkInfo {
        name: non_empty(n.name),
        ip_addresses: n.ip_addresses.into_iter().map(|a| a.ip_address).filter(|a| !a.is_empty()).collect(),
        port_mappings,
        labels: n.labels.map(|l| l.labels.into_iter().map(|l| (l.key, l.value)).collect()).unwrap_or_default(),
    })
}

pub fn network_infos_from_wire(
    items: Vec<wire::NetworkInfo>,
    field: &str,
) -> Result<Vec<model::NetworkInfo>, ConvertError> {
    items.into_iter().enumerate().map(|(i, n)| network_info_from_wire(n, &format!("{field}[{i}]"))).collect()
}

pub fn container_status_to_wire(c: &model::ContainerStatus) -> wire::ContainerStatus {
    wire::ContainerStatus { network_infos: c.network_infos.iter().map(network_info_to_wire).collect() }
}

pub fn container_status_from_wire(c: wire::ContainerStatus) -> Result<model::ContainerStatus, ConvertError> {
    Ok(model::ContainerStatus {
        network_infos: network_infos_from_wire(c.network_infos, "status.container_status.network_infos")?,
    })
}

pub fn agent_network_to_wire(n: &model::AgentNetwork) -> wire::AgentNetwork {
    wire::AgentNetwork { subnet: n.subnet.clone().unwrap_or_default() }
}

pub fn agent_network_from_wire(n: wire::AgentNetwork) -> model::AgentNetwork {
    model::AgentNetwork { subnet: non_empty(n.subnet) }
}

fn peer_to_wire(p: &model::NetworkPeer) -> wire::NetworkPeer {
    wire::NetworkPeer { agent_id: p.agent_id.clone(), subnet: p.subnet.clone(), ip: p.ip.clone() }
}

fn peer_from_wire(p: wire::NetworkPeer) -> model::NetworkPeer {
    model::NetworkPeer { agent_id: p.agent_id, subnet: p.subnet, ip: p.ip }
}

pub fn peers_to_wire(peers: &[model::NetworkPeer]) -> wire::NetworkPeers {
    wire::NetworkPeers { peers: peers.iter().map(peer_to_wire).collect() }
}

pub fn peers_from_wire(peers: wire::NetworkPeers) -> Vec<model::NetworkPeer> {
    peers.peers.into_iter().map(peer_from_wire).collect()
}

pub fn assignment_to_wire(a: &model::NetworkAssignment) -> wire::NetworkAssignment {
    wire::NetworkAssignment {
        name: a.name.clone(),
        cluster_cidr: a.cluster_cidr.clone(),
        subnet: a.subnet.clone(),
        peers: a.peers.iter().map(peer_to_wire).collect(),
    }
}

pub fn assignment_from_wire(a: wire::NetworkAssignment) -> model::NetworkAssignment {
    model::NetworkAssignment {
        name: a.name,
        cluster_cidr: a.cluster_cidr,
        subnet: a.subnet,
        peers: a.peers.into_iter().map(peer_from_wire).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_with_mappings_and_addresses_round_trips() {
        let n = model::NetworkInfo {
            name: Some("agora".into()),
            ip_addresses: vec!["10.233.1.2".into()],
            port_mappings: vec![
                model::PortMapping { host_port: 31000, container_port: 8080, protocol: None },
                model::PortMapping { host_port: 31001, container_port: 53, protocol: Some("udp".into()) },
            ],
            labels: vec![("k".into(), "v".into())],
        };
        let w = network_info_to_wire(&n);
        assert_eq!(w.ip_addresses[0].protocol, wire::network_info::Protocol::IPv4 as i32);
        assert_eq!(network_info_from_wire(w, "n").unwrap(), n);
    }

    #[test]
    fn bad_ports_and_protocols_name_their_field() {
        let mut w = network_info_to_wire(&model::NetworkInfo::default());
        w.port_mappings.push(wire::network_info::PortMapping {
            host_port: 0,
            container_port: 80,
            protocol: String::new(),
        });
        let e = network_infos_from_wire(vec![w.clone()], "container.network_infos").unwrap_err();
        assert_eq!(e.field, "container.network_infos[0].port_mappings[0].host_port");
        w.port_mappings[0] =
            wire::network_info::PortMapping { host_port: 1, container_port: 70000, protocol: String::new() };
        let e = network_info_from_wire(w.clone(), "n").unwrap_err();
        assert_eq!(e.to_string(), "invalid n.port_mappings[0].container_port: 70000 is not a port (1-65535)");
        w.port_mappings[0] =
            wire::network_info::PortMapping { host_port: 1, container_port: 2, protocol: "sctp".into() };
        assert_eq!(network_info_from_wire(w, "n").unwrap_err().field, "n.port_mappings[0].protocol");
    }
}
