//! The seam between the agent's network decisions and the kernel: [`NetworkDriver`] applies a [`HostSpec`] and
//! attaches or detaches containers; [`LinuxDriver`] does it with nftables, rtnetlink and pinned namespaces;
//! [`RecordingDriver`] (beside it) records what it was asked, for tests without root.
//!
//! [`LinuxDriver::apply_host`] keeps the order the safety rules need: it refuses a cluster CIDR that overlaps a route
//! of the host, installs the nftables table (the rejection of unknown cluster addresses and of forwarding to the
//! outside) before any bridge or route exists, then the bridge, the peer routes, and only then turns on
//! `ip_forward`. Every step is idempotent, so the agent re-applies the whole spec whenever it changes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cidr::Ipv4Cidr;
use crate::netlink::{Netlink, NetlinkError, ROUTE_PROTOCOL};
use crate::netns::{self, NetnsError};
use crate::nft::{self, NftError, Ruleset};
use crate::plan::{Attachment, CONTAINER_LINK, HostSpec, RouteOverlap, check_routes};

/// The kernel setting that lets the host route between the bridge and its peers.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// Where the driver keeps `ip_forward`'s value from before it turned it on, to restore it on teardown.
pub const SAVED_IP_FORWARD: &str = "ip_forward.saved";

/// Why a network step failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Overlap(#[from] RouteOverlap),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("link {0} is missing")]
    NoLink(String),
    #[error("cannot set {path}: {source}")]
    Sysctl { path: PathBuf, source: std::io::Error },
    #[error("told to fail: {0}")]
    Fake(String),
}

/// Applies the network to the kernel. Methods block; callers run them off the async threads.
pub trait NetworkDriver: Send + Sync + 'static {
    /// Makes the host side match `host` (see the module doc for the order).
    fn apply_host(&self, host: &HostSpec) -> Result<(), NetError>;
    /// Replaces only the nftables table (the rest of the host side is as [`NetworkDriver::apply_host`] left it):
    /// what a changed set of port mappings needs.
    fn apply_rules(&self, ruleset: &Ruleset) -> Result<(), NetError>;
    /// Removes the host side: peer routes, the bridge, the table; restores `ip_forward`.
    fn remove_host(&self, host: &HostSpec) -> Result<(), NetError>;
    /// Gives a container its namespace, veth pair, address and default route (a half-done attachment is redone).
    fn attach(&self, attachment: &Attachment) -> Result<(), NetError>;
    /// Removes a container's veth pair and namespace pin; what is already gone is fine.
    fn detach(&self, netns: &Path, host_link: &str) -> Result<(), NetError>;
}

/// The real driver, acting on the network namespace the agent runs in.
pub struct LinuxDriver {
    /// Where `ip_forward`'s previous value is kept.
    state_dir: PathBuf,
}

impl LinuxDriver {
    pub fn new(state_dir: &Path) -> LinuxDriver {
        LinuxDriver { state_dir: state_dir.to_path_buf() }
    }

    fn sysctl(path: &Path, value: &str) -> Result<(), NetError> {
        std::fs::write(path, value).map_err(|source| NetError::Sysctl { path: path.to_path_buf(), source })
    }
}

fn ignore_errno(r: Result<(), NetlinkError>, errno: i32) -> Result<(), NetlinkError> {
    match r {
        Err(e) if e.errno() == Some(errno) => Ok(()),
        other => other,
    }
}

impl NetworkDriver for LinuxDriver {
    fn apply_host(&self, host: &HostSpec) -> Result<(), NetError> {
        let mut nl = Netlink::open()?;
        let bridge = nl.link_index(&host.bridge)?;
        check_routes(&host.cluster, &nl.routes()?, bridge)?;
        nft::apply(&host.ruleset.render())?;
        let bridge = match bridge {
            Some(i) => i,
            None => {
                ignore_errno(nl.add_bridge(&host.bridge), nix::libc::EEXIST)?;
                nl.link_index(&host.bridge)?.ok_or_else(|| NetError::NoLink(host.bridge.clone()))?
            }
        };
        nl.add_address(bridge, host.gateway, host.subnet.prefix())?;
        nl.set_controller_and_up(bridge, None)?;
        for route in nl.routes()?.into_iter().filter(|r| r.protocol == ROUTE_PROTOCOL) {
            if !host.routes.contains_key(&route.destination) {
                ignore_errno(nl.delete_route(route.destination), nix::libc::ESRCH)?;
            }
        }
        for (subnet, via) in &host.routes {
            nl.add_route(*subnet, Some(*via), None)?;
        }
        let saved = self.state_dir.join(SAVED_IP_FORWARD);
        if !saved.exists() {
            let before = std::fs::read_to_string(IP_FORWARD).unwrap_or_else(|_| "0".into());
            std::fs::create_dir_all(&self.state_dir)
                .map_err(|source| NetError::Sysctl { path: saved.clone(), source })?;
            std::fs::write(&saved, before.trim()).map_err(|source| NetError::Sysctl { path: saved.clone(), source })?;
        }
        LinuxDriver::sysctl(Path::new(IP_FORWARD), "1")
    }

    fn apply_rules(&self, ruleset: &Ruleset) -> Result<(), NetError> {
        nft::apply(&ruleset.render())?;
        Ok(())
    }

    fn remove_host(&self, host: &HostSpec) -> Result<(), NetError> {
        let saved = self.state_dir.join(SAVED_IP_FORWARD);
        if let Ok(before) = std::fs::read_to_string(&saved) {
            LinuxDriver::sysctl(Path::new(IP_FORWARD), before.trim())?;
            let _ = std::fs::remove_file(&saved);
        }
        let mut nl = Netlink::open()?;
        for route in nl.routes()?.into_iter().filter(|r| r.protocol == ROUTE_PROTOCOL) {
            ignore_errno(nl.delete_route(route.destination), nix::libc::ESRCH)?;
        }
        if let Some(bridge) = nl.link_index(&host.bridge)? {
            ignore_errno(nl.delete_link(bridge), nix::libc::ENODEV)?;
        }
        nft::delete_table(&host.ruleset.table)?;
        Ok(())
    }

    fn attach(&self, a: &Attachment) -> Result<(), NetError> {
        let mut nl = Netlink::open()?;
        if let Some(stale) = nl.link_index(&a.host_link)? {
            ignore_errno(nl.delete_link(stale), nix::libc::ENODEV)?;
        }
        netns::create(&a.netns)?;
        let ns = std::fs::File::open(&a.netns).map_err(|source| NetnsError::Open { path: a.netns.clone(), source })?;
        // A half-done attachment left an eth0 in the namespace.
        netns::run_in(&a.netns, || -> Result<(), NetlinkError> {
            let mut inner = Netlink::open()?;
            if let Some(old) = inner.link_index(CONTAINER_LINK)? {
                ignore_errno(inner.delete_link(old), nix::libc::ENODEV)?;
            }
            Ok(())
        })??;
        nl.add_veth(&a.host_link, CONTAINER_LINK, std::os::fd::AsFd::as_fd(&ns))?;
        let bridge = nl.link_index(&a.bridge)?.ok_or_else(|| NetError::NoLink(a.bridge.clone()))?;
        let host_end = nl.link_index(&a.host_link)?.ok_or_else(|| NetError::NoLink(a.host_link.clone()))?;
        nl.set_controller_and_up(host_end, Some(bridge))?;
        let (ip, prefix, gateway) = (a.ip, a.prefix, a.gateway);
        netns::run_in(&a.netns, move || configure_container(ip, prefix, gateway))??;
        Ok(())
    }

    fn detach(&self, netns: &Path, host_link: &str) -> Result<(), NetError> {
        let mut nl = Netlink::open()?;
        if let Some(index) = nl.link_index(host_link)? {
            ignore_errno(nl.delete_link(index), nix::libc::ENODEV)?;
        }
        netns::remove(netns)?;
        Ok(())
    }
}

/// Inside the container's namespace: loopback up, `eth0` with its address, up, the default route through the
/// bridge.
fn configure_container(ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<(), NetError> {
    let mut nl = Netlink::open()?;
    let lo = nl.link_index("lo")?.ok_or_else(|| NetError::NoLink("lo".into()))?;
    nl.set_controller_and_up(lo, None)?;
    let eth = nl.link_index(CONTAINER_LINK)?.ok_or_else(|| NetError::NoLink(CONTAINER_LINK.into()))?;
    nl.add_address(eth, ip, prefix)?;
    nl.set_controller_and_up(eth, None)?;
    nl.add_route(Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0), Some(gateway), Some(eth))?;
    Ok(())
}

/// What a [`RecordingDriver`] was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverCall {
    ApplyHost(Box<HostSpec>),
    ApplyRules(Box<Ruleset>),
    RemoveHost(String),
    Attach(Box<Attachment>),
    Detach { netns: PathBuf, host_link: String },
}

/// A fake driver: records every call, touches nothing, and fails the calls it is told to.
#[derive(Default)]
pub struct RecordingDriver {
    calls: Mutex<Vec<DriverCall>>,
    /// Attachments of these container ids fail.
    pub fail_attach: Mutex<Vec<String>>,
    /// Applying the host side fails with this message while set.
    pub fail_host: Mutex<Option<String>>,
}

impl RecordingDriver {
    pub fn calls(&self) -> Vec<DriverCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: DriverCall) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }
}

impl NetworkDriver for RecordingDriver {
    fn apply_host(&self, host: &HostSpec) -> Result<(), NetError> {
        self.record(DriverCall::ApplyHost(Box::new(host.clone())));
        match self.fail_host.lock().ok().and_then(|f| f.clone()) {
            Some(why) => Err(NetError::Fake(why)),
            None => Ok(()),
        }
    }

    fn apply_rules(&self, ruleset: &Ruleset) -> Result<(), NetError> {
        self.record(DriverCall::ApplyRules(Box::new(ruleset.clone())));
        Ok(())
    }

    fn remove_host(&self, host: &HostSpec) -> Result<(), NetError> {
        self.record(DriverCall::RemoveHost(host.bridge.clone()));
        Ok(())
    }

    fn attach(&self, attachment: &Attachment) -> Result<(), NetError> {
        self.record(DriverCall::Attach(Box::new(attachment.clone())));
        if self.fail_attach.lock().is_ok_and(|f| f.contains(&attachment.container_id)) {
            return Err(NetError::Fake(attachment.container_id.clone()));
        }
        Ok(())
    }

    fn detach(&self, netns: &Path, host_link: &str) -> Result<(), NetError> {
        self.record(DriverCall::Detach { netns: netns.to_path_buf(), host_link: host_link.to_string() });
        Ok(())
    }
}
