//! Host-local IPAM, as CNI's `host-local` plugin keeps it: one file per address handed out in a directory
//! (`<dir>/<ip>`, holding the container id), created with `O_EXCL` so that no address is ever handed out twice, not
//! even across an agent crash; `last_reserved_ip` makes the next allocation continue after the last address handed
//! out rather than reuse a just-freed one at once.
//!
//! Leases are not fsynced: they must survive the agent being killed (the page cache does), and a machine crash ends
//! every container that held one, along with the namespaces pinned under `/run`, so a lease lost with it names an
//! address nobody uses any more.
//!
//! The choice of the next address is pure ([`next_free`]); [`Ipam`] is the directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::cidr::Ipv4Cidr;

/// The file that remembers the last address handed out.
pub const LAST_RESERVED: &str = "last_reserved_ip";

/// The addresses of `subnet` containers may get: all but the network address, the first host (the bridge, the
/// containers' gateway) and the broadcast address.
pub fn usable(subnet: &Ipv4Cidr) -> impl Iterator<Item = Ipv4Addr> + '_ {
    (2..subnet.size().saturating_sub(1)).filter_map(|n| subnet.nth(n))
}

/// The gateway of `subnet` (its first host), which the agent's bridge holds.
pub fn gateway(subnet: &Ipv4Cidr) -> Ipv4Addr {
    subnet.nth(1).unwrap_or(subnet.network())
}

/// The next address to hand out: the first usable one after `last` that `taken` does not hold, wrapping around.
pub fn next_free(subnet: &Ipv4Cidr, last: Option<Ipv4Addr>, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let all: Vec<Ipv4Addr> = usable(subnet).collect();
    let start = last.and_then(|l| all.iter().position(|a| *a == l)).map_or(0, |i| i + 1);
    (0..all.len()).map(|k| all[(start + k) % all.len()]).find(|a| !taken(*a))
}

/// Why an address could not be handed out or freed; names the path.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("cannot use the IPAM directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot write the lease {path}: {source}")]
    Lease { path: PathBuf, source: std::io::Error },
    #[error("no free address left in {subnet} ({used} in use)")]
    Exhausted { subnet: Ipv4Cidr, used: usize },
    #[error(transparent)]
    Write(#[from] agora_runtime::WriteError),
}

/// The leases of one agent: a directory of files named by address.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
}

impl Ipam {
    /// The IPAM directory `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Ipam, IpamError> {
        std::fs::create_dir_all(dir).map_err(|source| IpamError::Dir { path: dir.to_path_buf(), source })?;
        Ok(Ipam { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every lease: address → container id (empty when an allocation was cut short by a crash).
    pub fn leases(&self) -> Result<BTreeMap<Ipv4Addr, String>, IpamError> {
        let dir_error = |source| IpamError::Dir { path: self.dir.clone(), source };
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else { continue };
            let owner = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.insert(ip, owner.trim().to_string());
        }
        Ok(out)
    }

    /// The address of `container_id` in `subnet`: the one it already holds, else a new one.
    pub fn allocate(&self, subnet: &Ipv4Cidr, container_id: &str) -> Result<Ipv4Addr, IpamError> {
        let leases = self.leases()?;
        if let Some((ip, _)) = leases.iter().find(|(ip, owner)| *owner == container_id && subnet.contains(**ip)) {
            return Ok(*ip);
        }
        let last = std::fs::read_to_string(self.dir.join(LAST_RESERVED)).ok().and_then(|t| t.trim().parse().ok());
        let mut tried = std::collections::BTreeSet::new();
        loop {
            let Some(ip) = next_free(subnet, last, |a| leases.contains_key(&a) || tried.contains(&a)) else {
                return Err(IpamError::Exhausted { subnet: *subnet, used: leases.len() + tried.len() });
            };
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let lease_error = |source| IpamError::Lease { path: path.clone(), source };
                    file.write_all(container_id.as_bytes()).map_err(lease_error)?;
                    agora_runtime::write_atomically(
                        &self.dir.join(LAST_RESERVED),
                        ip.to_string().as_bytes(),
                        agora_runtime::Durability::ProcessCrash,
                    )?;
                    return Ok(ip);
                }
                // Taken since the directory was read (a concurrent allocation): try the next one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    tried.insert(ip);
                }
                Err(source) => return Err(IpamError::Lease { path, source }),
            }
        }
    }

    /// Frees the address of a lease; freeing one that is gone is no error.
    pub fn release(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let path = self.dir.join(ip.to_string());
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(IpamError::Lease { path, source: e }),
            _ => Ok(()),
        }
    }

    /// Frees every lease `container_id` holds; returns the addresses freed.
    pub fn release_container(&self, container_id: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mine: Vec<Ipv4Addr> =
            self.leases()?.into_iter().filter(|(_, owner)| owner == container_id).map(|(ip, _)| ip).collect();
        for ip in &mine {
            self.release(*ip)?;
        }
        Ok(mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subnet() -> Ipv4Cidr {
        "10.233.7.0/29".parse().unwrap()
    }

    #[test]
    fn usable_addresses_skip_network_gateway_and_broadcast() {
        let all: Vec<String> = usable(&subnet()).map(|a| a.to_string()).collect();
        assert_eq!(all, ["10.233.7.2", "10.233.7.3", "10.233.7.4", "10.233.7.5", "10.233.7.6"]);
        assert_eq!(gateway(&subnet()).to_string(), "10.233.7.1");
    }

    #[test]
    fn allocation_continues_after_the_last_and_wraps() {
        let s = subnet();
        let ip = |t: &str| t.parse::<Ipv4Addr>().unwrap();
        assert_eq!(next_free(&s, None, |_| false), Some(ip("10.233.7.2")));
        assert_eq!(next_free(&s, Some(ip("10.233.7.3")), |_| false), Some(ip("10.233.7.4")));
        assert_eq!(next_free(&s, Some(ip("10.233.7.6")), |a| a == ip("10.233.7.2")), Some(ip("10.233.7.3")));
        assert_eq!(next_free(&s, None, |_| true), None);
    }

    #[test]
    fn leases_are_files_and_a_container_keeps_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(&dir.path().join("ipam")).unwrap();
        let a = ipam.allocate(&subnet(), "c1").unwrap();
        assert_eq!(ipam.allocate(&subnet(), "c1").unwrap(), a, "idempotent");
        let b = ipam.allocate(&subnet(), "c2").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read_to_string(dir.path().join("ipam").join(b.to_string())).unwrap(), "c2");
        assert_eq!(ipam.release_container("c1").unwrap(), vec![a]);
        let c = ipam.allocate(&subnet(), "c3").unwrap();
        assert!(c != a && c != b, "a freed address is not handed out again at once");
        for n in 4..=6 {
            ipam.allocate(&subnet(), &format!("c{n}")).unwrap();
        }
        let e = ipam.allocate(&subnet(), "c9").unwrap_err().to_string();
        assert_eq!(e, "no free address left in 10.233.7.0/29 (5 in use)");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u8),
        Free(u8),
        /// The agent dies with an allocation cut short (the file created, nothing written) and starts anew.
        CrashMidAllocation,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12).prop_map(Op::Allocate),
            3 => (0u8..12).prop_map(Op::Free),
            1 => Just(Op::CrashMidAllocation),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn an_address_is_never_held_twice(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ipam");
            let s: Ipv4Cidr = "10.233.9.0/28".parse().unwrap();
            let mut ipam = Ipam::open(&path).unwrap();
            let mut held: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Allocate(n) => {
                        let id = format!("c{n}");
                        match ipam.allocate(&s, &id) {
                            Ok(ip) => {
                                if let Some(old) = held.get(&id) {
                                    prop_assert_eq!(*old, ip);
                                }
                                prop_assert!(!held.iter().any(|(other, a)| *a == ip && *other != id));
                                held.insert(id, ip);
                            }
                            Err(IpamError::Exhausted { .. }) => {}
                            Err(e) => prop_assert!(false, "{}", e),
                        }
                    }
                    Op::Free(n) => {
                        let id = format!("c{n}");
                        ipam.release_container(&id).unwrap();
                        held.remove(&id);
                    }
                    Op::CrashMidAllocation => {
                        if let Some(ip) = next_free(&s, None, |a| ipam.leases().unwrap().contains_key(&a)) {
                            std::fs::File::create(path.join(ip.to_string())).unwrap();
                        }
                        ipam = Ipam::open(&path).unwrap();
                    }
                    Op::Restart => ipam = Ipam::open(&path).unwrap(),
                }
                let leases = ipam.leases().unwrap();
                for (id, ip) in &held {
                    prop_assert_eq!(leases.get(ip), Some(id));
                }
            }
        }
    }
}
