//! The registry: what must survive a master failover, as Mesos's `Registry` (`src/master/registry.proto`): admitted
//! agents, unreachable agents with the time they became unreachable, removed agents, the frameworks this cluster
//! knows with their failover timeouts, and each agent's subnet of the cluster CIDR (container networks). Frameworks' tasks, offers and filters are not persisted: they are rebuilt from
//! re-registering agents and re-subscribing frameworks.
//!
//! [`Registry`] is plain data the core edits; the core asks for it to be written with
//! [`crate::core::Effect::PersistRegistry`] and the shell writes it through a [`StateStore`] before it carries out
//! the effects that depend on it ("registry writes precede acknowledgement").
//!
//! Stores: [`FileStore`] (standalone, `<work_dir>/registry.json`), [`ZkStore`] (with `--zk`, the node
//! `<path>/registry`) and [`MemoryStore`] (the fake for tests). Every store writes the same envelope: a format tag, a
//! version that grows by one per write, and a checksum of the registry; a store refuses to write over a version it
//! did not read or write itself (a conflicting writer) and refuses to load an envelope whose checksum does not match
//! (corruption).

mod file;
mod zk;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use file::FileStore;
pub use zk::ZkStore;

/// The envelope's format tag.
pub const FORMAT: &str = "agora-registry/1";

/// What survives a failover.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Admitted agents by id.
    #[serde(default)]
    pub agents: BTreeMap<String, AdmittedAgent>,
    /// Unreachable agents by id, with the Unix time they became unreachable.
    #[serde(default)]
    pub unreachable: BTreeMap<String, f64>,
    /// Agents removed for good: they are refused if they come back and must register anew.
    #[serde(default)]
    pub removed: BTreeSet<String>,
    /// Frameworks this cluster knows, by id.
    #[serde(default)]
    pub frameworks: BTreeMap<String, RegisteredFramework>,
    /// The subnet of the cluster CIDR each agent that runs container networks holds, with the address it routes
    /// through. Left out of the JSON when empty, so registries written before it keep their checksum.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subnets: BTreeMap<String, NetworkLease>,
}

/// An agent's subnet and the address peers route it through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLease {
    pub subnet: agora_net::Ipv4Cidr,
    pub ip: String,
}

/// An admitted agent: enough to show it while it is recovering (the agent re-registers with its full info).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdmittedAgent {
    pub hostname: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisteredFramework {
    pub name: String,
    /// Seconds the framework may stay away before it is torn down.
    pub failover_timeout: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry at {location} is corrupt: {why}")]
    Corrupt { location: String, why: String },
    #[error(
        "registry at {location} was written by someone else (version {found}, this master expected {expected}); \
         not overwriting it"
    )]
    Conflict { location: String, expected: String, found: String },
    #[error("registry at {location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registry at {location}: ZooKeeper: {source}")]
    ZooKeeper {
        location: String,
        #[source]
        source: zookeeper_client::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    version: u64,
    checksum: String,
    registry: Registry,
}

/// FNV-1a, 64 bits: enough to notice a torn or hand-edited registry (not a defence against an adversary).
fn checksum(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

/// Serialises `registry` as version `version`.
pub fn encode(registry: &Registry, version: u64) -> Vec<u8> {
    let body = serde_json::to_vec(registry).expect("the registry serialises");
    let env = Envelope { format: FORMAT.to_string(), version, checksum: checksum(&body), registry: registry.clone() };
    serde_json::to_vec(&env).expect("the envelope serialises")
}

/// Parses an envelope, checking its format and checksum; returns the registry and its version.
pub fn decode(bytes: &[u8], location: &str) -> Result<(Registry, u64), RegistryError> {
    let corrupt = |why: String| RegistryError::Corrupt { location: location.to_string(), why };
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a registry envelope: {e}")))?;
    if env.format != FORMAT {
        return Err(corrupt(format!("format is '{}', expected '{FORMAT}'", env.format)));
    }
    let body = serde_json::to_vec(&env.registry).expect("the registry serialises");
    let sum = checksum(&body);
    if sum != env.checksum {
        return Err(corrupt(format!("checksum is {}, the contents hash to {sum}", env.checksum)));
    }
    Ok((env.registry, env.version))
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RegistryError>> + Send + 'a>>;

/// Where the registry lives. A store remembers the version it last read or wrote; `store` fails with
/// [`RegistryError::Conflict`] if the stored version moved on since (another master wrote), and writes nothing.
pub trait StateStore: Send {
    /// Reads the registry (empty if none was ever written).
    fn fetch(&mut self) -> StoreFuture<'_, Registry>;
    /// Writes `registry` as the next version.
    fn store<'a>(&'a mut self, registry: &'a Registry) -> StoreFuture<'a, ()>;
    /// Where the registry lives, for messages.
    fn location(&self) -> String;
}

/// The fake store: the "stored bytes" live in memory shared between clones, so a test can play a second master or
/// corrupt the bytes.
#[derive(Clone, Default)]
pub struct MemoryStore {
    pub bytes: Arc<Mutex<Option<Vec<u8>>>>,
    known: Option<u64>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn current(&self) -> Result<Option<(Registry, u64)>, RegistryError> {
        let bytes = self.bytes.lock().expect("not poisoned").clone();
        bytes.map(|b| decode(&b, "memory")).transpose()
    }
}

impl StateStore for MemoryStore {
    fn fetch(&mut self) -> StoreFuture<'_, Registry> {
        Box::pin(async move {
            let cur = self.current()?;
            self.known = Some(cur.as_ref().map_or(0, |(_, v)| *v));
            Ok(cur.map(|(r, _)| r).unwrap_or_default())
        })
    }

    fn store<'a>(&'a mut self, registry: &'a Registry) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let found = match self.current() {
                Ok(cur) => cur.map_or(0, |(_, v)| v),
                // A corrupt registry is someone else's write: refuse to paper over it.
                Err(e) => return Err(e),
            };
            let expected = self.known.unwrap_or(0);
            if found != expected {
                return Err(RegistryError::Conflict {
                    location: "memory".into(),
                    expected: expected.to_string(),
                    found: found.to_string(),
                });
            }
            *self.bytes.lock().expect("not poisoned") = Some(encode(registry, expected + 1));
            self.known = Some(expected + 1);
            Ok(())
        })
    }

    fn location(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests;
