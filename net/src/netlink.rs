//! A small synchronous rtnetlink client on `netlink-packet-route` and `netlink-sys`: the links, addresses and IPv4
//! routes the agent needs, in the network namespace of the thread that opens it. Each request waits for the
//! kernel's acknowledgement (or the end of a dump); a refusal is an error naming the request and the errno.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::cidr::Ipv4Cidr;

/// The routing protocol number the agent marks its routes with (`ip route` shows `proto 233`; iproute2 names no protocol 233), so that they are
/// told apart from the host's own when the cluster CIDR is checked against the routing table and when stale peer
/// routes are removed.
pub const ROUTE_PROTOCOL: u8 = 233;

/// A refused or failed netlink request.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("netlink {what}: cannot decode the kernel's answer: {message}")]
    Decode { what: String, message: String },
    #[error("netlink {what} refused: {source}")]
    Refused { what: String, source: std::io::Error },
}

impl NetlinkError {
    /// The errno of a refusal (`EEXIST`, `ENODEV`, ...).
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A link as a dump lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The bridge it is attached to.
    pub controller: Option<u32>,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub protocol: u8,
}

/// One rtnetlink socket.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

fn ipv4(addr: &RouteAddress) -> Option<Ipv4Addr> {
    match addr {
        RouteAddress::Inet(a) => Some(*a),
        _ => None,
    }
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
        Ok(Netlink { socket, sequence: 0 })
    }

    /// Sends `message` with `flags` and collects the answers up to the acknowledgement or the end of the dump.
    fn request(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        let io = |source| NetlinkError::Io { what: what.to_string(), source };
        self.socket.send(&buf, 0).map_err(io)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut recv = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut recv[..], 0).map_err(io)?;
            let mut offset = 0;
            while offset < n {
                let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&recv[offset..n])
                    .map_err(|e| NetlinkError::Decode { what: what.to_string(), message: e.to_string() })?;
                let len = packet.header.length as usize;
                if packet.header.sequence_number != self.sequence {
                    offset += len.max(1);
                    continue;
                }
                match packet.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(code) => {
                            let source = std::io::Error::from_raw_os_error(-code.get());
                            return Err(NetlinkError::Refused { what: what.to_string(), source });
                        }
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    fn ack(&mut self, what: &str, message: RouteNetlinkMessage, flags: u16) -> Result<(), NetlinkError> {
        self.request(what, message, flags | NLM_F_ACK).map(drop)
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let answers = self.request("dump links", RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .map(|l| {
                let mut link = Link { index: l.header.index, name: String::new(), controller: None };
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => link.name = n,
                        LinkAttribute::Controller(c) => link.controller = Some(c),
                        _ => {}
                    }
                }
                link
            })
            .collect())
    }

    /// The index of the link named `name`, if there is one (asked by name, not by dumping every link).
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(&format!("get link {name}"), RouteNetlinkMessage::GetLink(m), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.errno() == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a bridge (an existing one is an `EEXIST` refusal).
    pub fn add_bridge(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.ack(&format!("add bridge {name}"), RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates a veth pair: `name` here, `peer` (named `peer_name`) directly in the namespace `peer_netns`.
    pub fn add_veth(&mut self, name: &str, peer_name: &str, peer_netns: BorrowedFd<'_>) -> Result<(), NetlinkError> {
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(&format!("add veth {name}"), RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Attaches a link to a bridge (`controller`) and brings it up.
    pub fn set_controller_and_up(&mut self, index: u32, controller: Option<u32>) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags |= LinkFlags::Up;
        m.header.change_mask |= LinkFlags::Up;
        if let Some(c) = controller {
            m.attributes.push(LinkAttribute::Controller(c));
        }
        self.ack(&format!("set link {index} up"), RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Deletes a link (for a veth, both ends).
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.ack(&format!("delete link {index}"), RouteNetlinkMessage::DelLink(m), 0)
    }

    /// Gives link `index` the address `ip/prefix` (replacing it if present).
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        let what = format!("add address {ip}/{prefix} to link {index}");
        self.ack(&what, RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let answers = self.request("dump routes", RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            let mut table = u32::from(r.header.table);
            let (mut dst, mut gateway, mut oif) = (None, None, None);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = ipv4(d),
                    RouteAttribute::Gateway(g) => gateway = ipv4(g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast {
                continue;
            }
            let destination = Ipv4Cidr::new(dst.unwrap_or(Ipv4Addr::UNSPECIFIED), r.header.destination_prefix_length);
            out.push(Route { destination, gateway, oif, protocol: u8::from(r.header.protocol) });
        }
        Ok(out)
    }

    fn route_message(destination: Ipv4Cidr, gateway: Option<Ipv4Addr>, oif: Option<u32>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = destination.prefix();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
        m.header.kind = RouteType::Unicast;
        m.header.scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        if destination.prefix() > 0 {
            m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(destination.network())));
        }
        if let Some(g) = gateway {
            m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(g)));
        }
        if let Some(i) = oif {
            m.attributes.push(RouteAttribute::Oif(i));
        }
        m
    }

    /// Adds (or replaces) the route to `destination` through `gateway` and/or out of link `oif`.
    pub fn add_route(
        &mut self,
        destination: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        oif: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let m = Netlink::route_message(destination, gateway, oif);
        let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let what = format!("add route {destination}{via}");
        self.ack(&what, RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Deletes the route to `destination`.
    pub fn delete_route(&mut self, destination: Ipv4Cidr) -> Result<(), NetlinkError> {
        let mut m = Netlink::route_message(destination, None, None);
        m.header.scope = RouteScope::NoWhere;
        self.ack(&format!("delete route {destination}"), RouteNetlinkMessage::DelRoute(m), 0)
    }
}
