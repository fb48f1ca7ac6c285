//! Marathon's state in ZooKeeper (`--zk zk://HOST:PORT/PATH`), under `PATH/state`, split so that no node nears
//! ZooKeeper's 1 MB limit: one node per app (its definition, its versions, its last failure), per instance, per
//! deployment and per group, plus the framework id:
//!
//! ```text
//! PATH/state/framework-id
//! PATH/state/apps/_shop_web          {"app": ..., "versions": {...}, "failure": ...}
//! PATH/state/instances/<task id>     the instance record
//! PATH/state/deployments/<id>        the deployment
//! PATH/state/groups/_shop            {"meta": ..., "versions": {...}}
//! ```
//!
//! Ids become node names with `/` → `_` (`_` is not allowed in Marathon ids, so this is reversible). Every write is
//! conditional on the node's version as this store last read or wrote it: a write over another leader's is refused
//! ([`StoreError::Conflict`]) and the caller stops leading. A save writes only the nodes that changed, new and
//! changed ones before removals, so a record of an instance is durable before its launch is sent.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

use super::{StateStore, StoreError};
use crate::app::AppDefinition;
use crate::core::{Deployment, Instance, Persisted, TaskFailure};
use crate::groups::{GroupMeta, GroupVersion};

/// ZooKeeper's default `jute.maxbuffer` is 1 MB; stay clearly below it.
pub const MAX_NODE_BYTES: usize = 1_000_000;

const DIRS: [&str; 4] = ["apps", "instances", "deployments", "groups"];

#[derive(Serialize, Deserialize, Default)]
struct AppNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app: Option<AppDefinition>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    versions: BTreeMap<String, AppDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<TaskFailure>,
}

#[derive(Serialize, Deserialize, Default)]
struct GroupNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<GroupMeta>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    versions: BTreeMap<String, GroupVersion>,
}

fn key(id: &str) -> String {
    id.replace('/', "_")
}

fn unkey(name: &str) -> String {
    name.replace('_', "/")
}

fn bytes<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The state as nodes: relative path → data.
pub fn split(state: &Persisted) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Some(id) = &state.framework_id {
        out.insert("framework-id".to_string(), id.as_bytes().to_vec());
    }
    let mut apps: BTreeMap<&String, AppNode> = BTreeMap::new();
    for (id, app) in &state.apps {
        apps.entry(id).or_default().app = Some(app.clone());
    }
    for (id, versions) in &state.versions {
        apps.entry(id).or_default().versions = versions.clone();
    }
    for (id, failure) in &state.failures {
        apps.entry(id).or_default().failure = Some(failure.clone());
    }
    for (id, node) in apps {
        out.insert(format!("apps/{}", key(id)), bytes(&node));
    }
    for (id, i) in &state.instances {
        out.insert(format!("instances/{id}"), bytes(i));
    }
    for (id, d) in &state.deployments {
        out.insert(format!("deployments/{id}"), bytes(d));
    }
    let mut groups: BTreeMap<&String, GroupNode> = BTreeMap::new();
    for (id, meta) in &state.groups {
        groups.entry(id).or_default().meta = Some(meta.clone());
    }
    for (id, versions) in &state.group_versions {
        groups.entry(id).or_default().versions = versions.clone();
    }
    for (id, node) in groups {
        out.insert(format!("groups/{}", key(id)), bytes(&node));
    }
    out
}

/// The state from its nodes (relative path → data); `location` names the store in errors.
pub fn assemble(nodes: &BTreeMap<String, Vec<u8>>, location: &str) -> Result<Persisted, StoreError> {
    let mut state = Persisted::default();
    let corrupt = |path: &str, source: serde_json::Error| StoreError::Corrupt {
        path: format!("{location}/{path}").into(),
        source,
    };
    for (path, data) in nodes {
        let (dir, name) = path.split_once('/').unwrap_or(("", path.as_str()));
        match dir {
            "" if name == "framework-id" => {
                state.framework_id = Some(String::from_utf8_lossy(data).into_owned());
            }
            "apps" => {
                let node: AppNode = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                let id = unkey(name);
                if let Some(app) = node.app {
                    state.apps.insert(id.clone(), app);
                }
                if !node.versions.is_empty() {
                    state.versions.insert(id.clone(), node.versions);
                }
                if let Some(f) = node.failure {
                    state.failures.insert(id, f);
                }
            }
            "instances" => {
                let i: Instance = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                state.instances.insert(i.task_id.clone(), i);
            }
            "deployments" => {
                let d: Deployment = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                state.deployments.insert(d.id.clone(), d);
            }
            "groups" => {
                let node: GroupNode = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                let id = unkey(name);
                if let Some(meta) = node.meta {
                    state.groups.insert(id.clone(), meta);
                }
                if !node.versions.is_empty() {
                    state.group_versions.insert(id, node.versions);
                }
            }
            _ => {}
        }
    }
    Ok(state)
}

/// A node as this store last read or wrote it: (data, node version).
type Known = (Vec<u8>, i32);

/// The store. ZooKeeper calls run on a small runtime of the store's own, so the synchronous [`StateStore`] calls
/// work from any thread, inside or outside the caller's runtime.
pub struct ZkStore {
    client: zk::Client,
    root: String,
    rt: Option<tokio::runtime::Runtime>,
    /// What this store last read or wrote: relative path → (data, node version).
    known: Mutex<BTreeMap<String, Known>>,
}

impl ZkStore {
    /// A store under `root` (e.g. `/marathon/state`) through `client` — the session that won the election, so that
    /// a leader whose session ended cannot write.
    pub fn new(client: zk::Client, root: &str) -> Result<ZkStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zk-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Zk { path: root.into(), message: format!("cannot start a runtime: {e}") })?;
        Ok(ZkStore { client, root: root.to_string(), rt: Some(rt), known: Mutex::new(BTreeMap::new()) })
    }

    pub fn location(&self) -> String {
        format!("zk:{}", self.root)
    }

    fn block<T: Send + 'static>(&self, fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let rt = self.rt.as_ref().expect("the runtime lives as long as the store");
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("the store's runtime runs every call to its end")
    }

    fn err(&self, path: &str, e: zk::Error) -> StoreError {
        StoreError::Zk { path: format!("{}/{path}", self.root), message: e.to_string() }
    }
}

impl Drop for ZkStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl StateStore for ZkStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let client = self.client.clone();
        let root = self.root.clone();
        let read = self.block(async move {
            let acl = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            let mut nodes: BTreeMap<String, (Vec<u8>, i32)> = BTreeMap::new();
            for dir in DIRS {
                let path = format!("{root}/{dir}");
                match client.mkdir(&path, &acl).await {
                    Ok(()) | Err(zk::Error::NodeExists) => {}
                    Err(e) => return Err((dir.to_string(), e)),
                }
                let names = client.list_children(&path).await.map_err(|e| (dir.to_string(), e))?;
                for name in names {
                    let rel = format!("{dir}/{name}");
                    match client.get_data(&format!("{root}/{rel}")).await {
                        Ok((data, stat)) => {
                            nodes.insert(rel, (data, stat.version));
                        }
                        Err(zk::Error::NoNode) => {}
                        Err(e) => return Err((rel, e)),
                    }
                }
            }
            match client.get_data(&format!("{root}/framework-id")).await {
                Ok((data, stat)) => {
                    nodes.insert("framework-id".into(), (data, stat.version));
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(("framework-id".into(), e)),
            }
            Ok(nodes)
        });
        let nodes = read.map_err(|(path, e)| self.err(&path, e))?;
        let data: BTreeMap<String, Vec<u8>> = nodes.iter().map(|(k, (d, _))| (k.clone(), d.clone())).collect();
        let state = assemble(&data, &self.location())?;
        let empty = nodes.is_empty();
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
        Ok((!empty).then_some(state))
    }

    fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let wanted = split(state);
        for (path, data) in &wanted {
            if data.len() > MAX_NODE_BYTES {
                return Err(StoreError::TooLarge { path: format!("{}/{path}", self.root), bytes: data.len() });
            }
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let writes: Vec<(String, Vec<u8>, Option<i32>)> = wanted
            .into_iter()
            .filter(|(path, data)| known.get(path).is_none_or(|(d, _)| d != data))
            .map(|(path, data)| {
                let version = known.get(&path).map(|(_, v)| *v);
                (path, data, version)
            })
            .collect();
        let removals: Vec<(String, i32)> = {
            let keep: std::collections::BTreeSet<&String> = writes.iter().map(|(p, _, _)| p).collect();
            let wanted_paths = split_paths(state);
            known
                .iter()
                .filter(|(p, _)| !keep.contains(p) && !wanted_paths.contains(p.as_str()))
                .map(|(p, (_, v))| (p.clone(), *v))
                .collect()
        };
        if writes.is_empty() && removals.is_empty() {
            return Ok(());
        }
        let client = self.client.clone();
        let root = self.root.clone();
        let result = self.block(async move {
            let acl = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            let mut done: Vec<(String, Option<Known>)> = Vec::new();
            for (path, data, version) in writes {
                let full = format!("{root}/{path}");
                let r = match version {
                    Some(v) => client.set_data(&full, &data, Some(v)).await.map(|stat| stat.version),
                    None => client.create(&full, &data, &acl).await.map(|(stat, _)| stat.version),
                };
                match r {
                    Ok(v) => done.push((path, Some((data, v)))),
                    Err(e) => return (done, Some((path, e))),
                }
            }
            for (path, version) in removals {
                match client.delete(&format!("{root}/{path}"), Some(version)).await {
                    Ok(()) | Err(zk::Error::NoNode) => done.push((path, None)),
                    Err(e) => return (done, Some((path, e))),
                }
            }
            (done, None)
        });
        let (done, failed) = result;
        for (path, now) in done {
            match now {
                Some(x) => known.insert(path, x),
                None => known.remove(&path),
            };
        }
        match failed {
            None => Ok(()),
            Some((path, zk::Error::BadVersion | zk::Error::NodeExists)) => {
                Err(StoreError::Conflict { path: format!("{}/{path}", self.root) })
            }
            Some((path, e)) => Err(self.err(&path, e)),
        }
    }
}

/// The relative paths [`split`] gives, without serialising.
fn split_paths(state: &Persisted) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    if state.framework_id.is_some() {
        out.insert("framework-id".to_string());
    }
    for id in state.apps.keys().chain(state.versions.keys()).chain(state.failures.keys()) {
        out.insert(format!("apps/{}", key(id)));
    }
    out.extend(state.instances.keys().map(|id| format!("instances/{id}")));
    out.extend(state.deployments.keys().map(|id| format!("deployments/{id}")));
    for id in state.groups.keys().chain(state.group_versions.keys()) {
        out.insert(format!("groups/{}", key(id)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Core;
    use serde_json::json;

    #[test]
    fn state_splits_into_nodes_and_back() {
        let mut core = Core::new(Persisted::default());
        core.create_group(
            "/",
            &json!({"id": "/shop", "dependencies": [], "apps": [{"id": "web", "cmd": "x", "cpus": 0.1, "mem": 8}]}),
            false,
            1_700_000_000_000,
            "d1".into(),
        )
        .unwrap();
        core.set_framework_id("fw-1");
        let nodes = split(&core.state);
        let names: Vec<&String> = nodes.keys().collect();
        assert_eq!(names, ["apps/_shop_web", "deployments/d1", "framework-id", "groups/_shop"]);
        assert_eq!(
            split_paths(&core.state).into_iter().collect::<Vec<_>>(),
            names.into_iter().cloned().collect::<Vec<_>>()
        );
        let back = assemble(&nodes, "zk:/m/state").unwrap();
        assert_eq!(back, core.state);
        let mut bad = nodes.clone();
        bad.insert("apps/_x".into(), b"{".to_vec());
        let err = assemble(&bad, "zk:/m/state").unwrap_err().to_string();
        assert!(err.contains("zk:/m/state/apps/_x"), "{err}");
    }
}
