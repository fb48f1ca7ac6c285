//! What an agent's network must look like, decided from plain data (pure): the host side ([`host_spec`]: the
//! bridge and its address, a route to each peer's subnet through that peer, the nftables [`Ruleset`]) and one
//! container's attachment ([`attachment`]: its pinned namespace, veth names, address and gateway), the files a
//! container sees (`/etc/resolv.conf`, `/etc/hosts`), and the check that the cluster CIDR collides with no route the
//! host already has ([`check_routes`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;
use crate::ipam::gateway;
use crate::netlink::{ROUTE_PROTOCOL, Route};
use crate::nft::{PortForward, Ruleset};

/// The name of the container's end of its veth pair.
pub const CONTAINER_LINK: &str = "eth0";

/// The agent's network flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    /// The bridge containers hang off (`agora0`).
    pub bridge: String,
    /// Where container namespaces are pinned (`/run/agora/netns`).
    pub netns_dir: PathBuf,
    /// The prefix of the host ends of veth pairs.
    pub link_prefix: String,
    /// The nftables table.
    pub table: String,
    /// Masquerade and forward container traffic to outside the cluster CIDR.
    pub egress: bool,
    /// Containers' `/etc/resolv.conf`.
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
}

/// Another agent of the cluster: its subnet, reached through its address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    pub agent_id: String,
    pub subnet: Ipv4Cidr,
    pub ip: Ipv4Addr,
}

/// What the master told the agent: the network's name, the cluster CIDR, the agent's own subnet and its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub name: String,
    pub cluster: Ipv4Cidr,
    pub subnet: Ipv4Cidr,
    pub peers: Vec<Peer>,
}

/// The host side of the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    pub bridge: String,
    /// The bridge's address: the subnet's first host, the containers' gateway.
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Cidr,
    pub cluster: Ipv4Cidr,
    /// Peer subnet → the peer agent's address.
    pub routes: BTreeMap<Ipv4Cidr, Ipv4Addr>,
    pub ruleset: Ruleset,
}

/// The host side for `assignment` with the port mappings of the running containers. Peers whose subnet lies outside
/// the cluster CIDR or overlaps the agent's own are left out, and so is a second mapping of one host port.
pub fn host_spec(config: &HostConfig, assignment: &Assignment, forwards: &[PortForward]) -> HostSpec {
    let subnet = assignment.subnet;
    let routes: BTreeMap<Ipv4Cidr, Ipv4Addr> = assignment
        .peers
        .iter()
        .filter(|p| assignment.cluster.contains_cidr(&p.subnet) && !p.subnet.overlaps(&subnet))
        .map(|p| (p.subnet, p.ip))
        .collect();
    let mut owned: Vec<Ipv4Cidr> = std::iter::once(subnet).chain(routes.keys().copied()).collect();
    owned.sort();
    owned.dedup();
    let mut by_port: BTreeMap<(crate::nft::Protocol, u16), PortForward> = BTreeMap::new();
    for f in forwards {
        by_port.entry((f.protocol, f.host_port)).or_insert(*f);
    }
    HostSpec {
        bridge: config.bridge.clone(),
        gateway: gateway(&subnet),
        subnet,
        cluster: assignment.cluster,
        routes,
        ruleset: Ruleset {
            table: config.table.clone(),
            bridge: config.bridge.clone(),
            cluster: assignment.cluster,
            local: subnet,
            owned,
            forwards: by_port.into_values().collect(),
            egress: config.egress,
        },
    }
}

/// One container's place in the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    /// The pinned namespace, handed to libcontainer.
    pub netns: PathBuf,
    /// The host end of the veth pair, attached to `bridge`.
    pub host_link: String,
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// `<prefix><10 hex digits>`: a name of at most 15 bytes that depends only on the container id (so a restarted
/// agent finds it again).
pub fn host_link_name(prefix: &str, container_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let prefix: String = prefix.chars().take(5).collect();
    format!("{prefix}{:010x}", h & 0xff_ffff_ffff)
}

/// The attachment of `container_id` at `ip` in `subnet`.
pub fn attachment(config: &HostConfig, subnet: &Ipv4Cidr, container_id: &str, ip: Ipv4Addr) -> Attachment {
    Attachment {
        container_id: container_id.to_string(),
        netns: config.netns_dir.join(container_id),
        host_link: host_link_name(&config.link_prefix, container_id),
        bridge: config.bridge.clone(),
        ip,
        prefix: subnet.prefix(),
        gateway: gateway(subnet),
    }
}

/// A container's `/etc/resolv.conf`.
pub fn resolv_conf(nameservers: &[String], search: &[String]) -> String {
    let mut out = String::from("# written by the agora agent\n");
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for n in nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    out
}

/// The nameservers and search domains of a host's `resolv.conf`, leaving out loopback resolvers (unreachable from a
/// container's own namespace).
pub fn host_resolvers(resolv_conf: &str) -> (Vec<String>, Vec<String>) {
    let (mut servers, mut search) = (Vec::new(), Vec::new());
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(s) = words.next().filter(|s| !s.starts_with("127.") && *s != "::1") {
                    servers.push(s.to_string());
                }
            }
            Some("search") | Some("domain") => search = words.map(String::from).collect(),
            _ => {}
        }
    }
    (servers, search)
}

/// A container's `/etc/hosts`: loopback and its own name at its address.
pub fn hosts_file(ip: Ipv4Addr, hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n")
}

/// The cluster CIDR collides with a route the host has (one the agent did not make).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the cluster CIDR {cluster} overlaps the host's route to {route}{}; choose another --network-cidr on the master",
    via.map(|g| format!(" via {g}")).unwrap_or_default()
)]
pub struct RouteOverlap {
    pub cluster: Ipv4Cidr,
    pub route: Ipv4Cidr,
    pub via: Option<Ipv4Addr>,
}

/// Refuses a cluster CIDR that overlaps a route of the host other than the default route, the agent's own routes
/// (marked with [`ROUTE_PROTOCOL`]) and the bridge's connected route (`bridge_index`).
pub fn check_routes(cluster: &Ipv4Cidr, routes: &[Route], bridge_index: Option<u32>) -> Result<(), RouteOverlap> {
    let foreign = routes.iter().filter(|r| {
        r.destination.prefix() > 0
            && r.protocol != ROUTE_PROTOCOL
            && !(bridge_index.is_some() && r.oif == bridge_index && r.gateway.is_none())
    });
    match foreign.into_iter().find(|r| r.destination.overlaps(cluster)) {
        Some(r) => Err(RouteOverlap { cluster: *cluster, route: r.destination, via: r.gateway }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Protocol;

    fn config() -> HostConfig {
        HostConfig {
            bridge: "agora0".into(),
            netns_dir: "/run/agora/netns".into(),
            link_prefix: "ag".into(),
            table: "agora".into(),
            egress: false,
            nameservers: vec![],
            search: vec![],
        }
    }

    fn peer(id: &str, subnet: &str, ip: &str) -> Peer {
        Peer { agent_id: id.into(), subnet: subnet.parse().unwrap(), ip: ip.parse().unwrap() }
    }

    fn forward(port: u16, ip: &str) -> PortForward {
        PortForward { protocol: Protocol::Tcp, host_port: port, ip: ip.parse().unwrap(), container_port: 80 }
    }

    #[test]
    fn the_host_routes_to_each_peer_and_owns_every_known_subnet() {
        let assignment = Assignment {
            name: "agora".into(),
            cluster: "10.233.0.0/16".parse().unwrap(),
            subnet: "10.233.1.0/24".parse().unwrap(),
            peers: vec![
                peer("S2", "10.233.2.0/24", "198.51.100.12"),
                peer("self", "10.233.1.0/24", "198.51.100.11"),
                peer("outside", "10.9.0.0/24", "198.51.100.13"),
            ],
        };
        let forwards = [forward(31000, "10.233.1.2"), forward(31000, "10.233.1.3"), forward(31001, "10.233.1.3")];
        let spec = host_spec(&config(), &assignment, &forwards);
        assert_eq!(spec.gateway.to_string(), "10.233.1.1");
        let routes: Vec<String> = spec.routes.iter().map(|(s, via)| format!("{s} via {via}")).collect();
        assert_eq!(routes, ["10.233.2.0/24 via 198.51.100.12"]);
        let owned: Vec<String> = spec.ruleset.owned.iter().map(|s| s.to_string()).collect();
        assert_eq!(owned, ["10.233.1.0/24", "10.233.2.0/24"]);
        assert_eq!(spec.ruleset.forwards, vec![forward(31000, "10.233.1.2"), forward(31001, "10.233.1.3")]);
    }

    #[test]
    fn an_attachment_is_named_after_its_container() {
        let a = attachment(&config(), &"10.233.1.0/24".parse().unwrap(), "c-1", "10.233.1.7".parse().unwrap());
        assert_eq!(a.netns, PathBuf::from("/run/agora/netns/c-1"));
        assert_eq!((a.prefix, a.gateway.to_string()), (24, "10.233.1.1".to_string()));
        assert_eq!(a.host_link, host_link_name("ag", "c-1"));
        assert!(a.host_link.len() <= 15 && a.host_link.starts_with("ag"));
        assert_ne!(host_link_name("ag", "c-1"), host_link_name("ag", "c-2"));
        assert!(host_link_name("toolongprefix", "c").len() <= 15);
    }

    #[test]
    fn resolvers_and_hosts() {
        let host = "# x\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch a.example b.example\n";
        let (servers, search) = host_resolvers(host);
        assert_eq!(
            (servers.clone(), search.clone()),
            (vec!["192.0.2.53".to_string()], vec!["a.example".into(), "b.example".into()])
        );
        assert_eq!(
            resolv_conf(&servers, &search),
            "# written by the agora agent\nsearch a.example b.example\nnameserver 192.0.2.53\n"
        );
        assert!(hosts_file("10.233.1.7".parse().unwrap(), "agora").ends_with("10.233.1.7\tagora\n"));
    }

    #[test]
    fn only_foreign_routes_that_overlap_the_cluster_are_refused() {
        let cluster: Ipv4Cidr = "10.233.0.0/16".parse().unwrap();
        let route = |dst: &str, gw: Option<&str>, oif: u32, protocol: u8| Route {
            destination: dst.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            oif: Some(oif),
            protocol,
        };
        let fine = [
            route("0.0.0.0/0", Some("192.0.2.1"), 2, 4),
            route("192.0.2.0/24", None, 2, 2),
            route("10.233.1.0/24", None, 9, 2),
            route("10.233.2.0/24", Some("198.51.100.12"), 3, ROUTE_PROTOCOL),
        ];
        assert_eq!(check_routes(&cluster, &fine, Some(9)), Ok(()));
        let bad = [route("10.0.0.0/8", Some("192.0.2.1"), 2, 4)];
        let e = check_routes(&cluster, &bad, Some(9)).unwrap_err().to_string();
        assert_eq!(
            e,
            "the cluster CIDR 10.233.0.0/16 overlaps the host's route to 10.0.0.0/8 via 192.0.2.1; choose another \
             --network-cidr on the master"
        );
        // The connected route of a bridge that is not the agent's is foreign too.
        assert!(check_routes(&cluster, &[route("10.233.1.0/24", None, 9, 2)], Some(8)).is_err());
    }
}
