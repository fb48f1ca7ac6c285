//! The registry in ZooKeeper: the persistent node `<path>/registry` beside the masters' `json.info_` members
//! (detectors ignore it). Writes are conditional on the node's ZooKeeper version, so a write from a master that is no
//! longer the only writer fails with `BadVersion` instead of overwriting.

use zookeeper_client as zk;

use super::{Registry, RegistryError, StateStore, StoreFuture, decode, encode};

/// The registry node's name under the election path.
pub const NODE: &str = "registry";

pub struct ZkStore {
    client: zk::Client,
    path: String,
    /// (ZooKeeper node version, envelope version) last read or written; `None` inside: the node did not exist.
    known: Option<Option<(i32, u64)>>,
}

impl ZkStore {
    /// A store at `<election_path>/registry` using `client`'s session.
    pub fn new(client: zk::Client, election_path: &str) -> ZkStore {
        ZkStore { client, path: format!("{election_path}/{NODE}"), known: None }
    }

    fn zk(&self, source: zk::Error) -> RegistryError {
        RegistryError::ZooKeeper { location: self.location(), source }
    }

    fn conflict(&self, found: String) -> RegistryError {
        let expected = match self.known {
            Some(Some((_, v))) => v.to_string(),
            _ => "none".to_string(),
        };
        RegistryError::Conflict { location: self.location(), expected, found }
    }
}

impl StateStore for ZkStore {
    fn fetch(&mut self) -> StoreFuture<'_, Registry> {
        Box::pin(async move {
            match self.client.get_data(&self.path).await {
                Ok((bytes, stat)) => {
                    let (registry, version) = decode(&bytes, &self.location())?;
                    self.known = Some(Some((stat.version, version)));
                    Ok(registry)
                }
                Err(zk::Error::NoNode) => {
                    self.known = Some(None);
                    Ok(Registry::default())
                }
                Err(e) => Err(self.zk(e)),
            }
        })
    }

    fn store<'a>(&'a mut self, registry: &'a Registry) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match self.known {
                Some(Some((zk_version, version))) => {
                    let bytes = encode(registry, version + 1);
                    match self.client.set_data(&self.path, &bytes, Some(zk_version)).await {
                        Ok(stat) => {
                            self.known = Some(Some((stat.version, version + 1)));
                            Ok(())
                        }
                        Err(zk::Error::BadVersion) => Err(self.conflict("a newer ZooKeeper version".into())),
                        Err(zk::Error::NoNode) => Err(self.conflict("deleted".into())),
                        Err(e) => Err(self.zk(e)),
                    }
                }
                _ => {
                    let bytes = encode(registry, 1);
                    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                    match self.client.create(&self.path, &bytes, &opts).await {
                        Ok((stat, _)) => {
                            self.known = Some(Some((stat.version, 1)));
                            Ok(())
                        }
                        Err(zk::Error::NodeExists) => Err(self.conflict("created by another master".into())),
                        Err(e) => Err(self.zk(e)),
                    }
                }
            }
        })
    }

    fn location(&self) -> String {
        format!("zk:{}", self.path)
    }
}
