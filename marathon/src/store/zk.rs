//! Marathon's state in ZooKeeper (`--zk zk://HOST:PORT/PATH`), under `PATH/state`, split so that no node nears
//! ZooKeeper's 1 MB limit: one node per record of [`super::nodes`] — per app (its definition, its versions, its last
//! failure), per instance, per deployment and per group, plus the framework id:
//!
//! ```text
//! PATH/state/framework-id
//! PATH/state/apps/_shop_web          {"app": ..., "versions": {...}, "failure": ...}
//! PATH/state/instances/<task id>     the instance record
//! PATH/state/deployments/<id>        the deployment
//! PATH/state/groups/_shop            {"meta": ..., "versions": {...}}
//! ```
//!
//! A save writes only the nodes that changed ([`plan`]), all in one ZooKeeper `multi` request: either the whole
//! save is applied or none of it, and a launch whose instance record is in it is sent only after it returns. Each
//! operation is conditional on the node's version as this store last read or wrote it, and every request also sets
//! the root `PATH/state` (the *guard*) at the version this store last saw, so a save after any write of another
//! Marathon fails whole ([`StoreError::Conflict`]) and the caller stops leading. A load claims the guard first (a
//! conditional write of it), so a leader that has not noticed its replacement fails its very next save. Only a save
//! over ZooKeeper's 1 MB request limit is split into several requests ([`batches`]); see [`ZkStore`]'s `save` for
//! what that means after a crash.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

pub use super::nodes::{assemble, split};
use super::{StateStore, StoreError};
use crate::core::Persisted;

/// ZooKeeper's default `jute.maxbuffer` is 1 MB; stay clearly below it.
pub const MAX_NODE_BYTES: usize = 1_000_000;

const DIRS: [&str; 5] = ["apps", "instances", "deployments", "groups", "group-versions"];

/// A node as this store last read or wrote it: (data, node version).
type Known = (Vec<u8>, i32);

/// One write of a save, relative to the store's root.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A node this store has not seen: created (fails if another wrote it meanwhile).
    Create { path: String, data: Vec<u8> },
    /// A node whose data changed: set, if still at `version`.
    Set { path: String, data: Vec<u8>, version: i32 },
    /// A node the state no longer has: deleted, if still at `version`.
    Delete { path: String, version: i32 },
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. } | Op::Set { path, .. } | Op::Delete { path, .. } => path,
        }
    }

    /// An upper bound of the bytes this operation adds to a `multi` request (jute: op header, path, data, version
    /// or ACL and flags), with the root the store prefixes to its path.
    pub fn request_bytes(&self, root: &str) -> usize {
        let data = match self {
            Op::Create { data, .. } | Op::Set { data, .. } => data.len(),
            Op::Delete { .. } => 0,
        };
        OP_OVERHEAD_BYTES + root.len() + 1 + self.path().len() + data
    }
}

/// The per-operation bytes of a `multi` request beyond path and data (op header 9, two length prefixes 8, version
/// or ACL + flags ≤ 35), rounded up.
pub const OP_OVERHEAD_BYTES: usize = 64;

/// ZooKeeper refuses a request larger than its `jute.maxbuffer` (1 MiB − 1 = 1,048,575 bytes by default). One
/// `multi` of a save stays below this, leaving room for the request header and the guard's operation; a node is
/// at most [`MAX_NODE_BYTES`], so any one operation fits.
pub const MAX_REQUEST_BYTES: usize = 1_040_000;

/// The writes that turn what this store knows (`known`) into `wanted`: creates and sets in path order, then
/// deletes, so that if a save has to be split (see [`batches`]) a node is never gone before its replacement is
/// there, and an instance's record is written before anything the save removes.
pub fn plan(known: &BTreeMap<String, Known>, wanted: BTreeMap<String, Vec<u8>>) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut deletes = Vec::new();
    for (path, (_, version)) in known {
        if !wanted.contains_key(path) {
            deletes.push(Op::Delete { path: path.clone(), version: *version });
        }
    }
    for (path, data) in wanted {
        match known.get(&path) {
            None => ops.push(Op::Create { path, data }),
            Some((old, _)) if *old == data => {}
            Some((_, version)) => ops.push(Op::Set { path, data, version: *version }),
        }
    }
    ops.extend(deletes);
    ops
}

/// [`plan`] for the changed records only (`None`: the record is gone): creates and sets in path order, then
/// deletes; a record whose data is what this store knows is not written.
pub fn plan_changes(known: &BTreeMap<String, Known>, mut changed: Vec<(String, Option<Vec<u8>>)>) -> Vec<Op> {
    changed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ops = Vec::new();
    let mut deletes = Vec::new();
    for (path, data) in changed {
        match (known.get(&path), data) {
            (None, Some(data)) => ops.push(Op::Create { path, data }),
            (Some((old, _)), Some(data)) if *old == data => {}
            (Some((_, version)), Some(data)) => ops.push(Op::Set { path, data, version: *version }),
            (Some((_, version)), None) => deletes.push(Op::Delete { path, version: *version }),
            (None, None) => {}
        }
    }
    ops.extend(deletes);
    ops
}

/// Splits `ops`, in order, into as few `multi` requests as fit `limit` bytes each (with `root` prefixed to every
/// path and `reserved` bytes per request kept for the guard's operation). Usually that is one. An operation larger
/// than `limit` still gets a request of its own, which ZooKeeper would refuse; `save` never builds one, as it
/// refuses a node over [`MAX_NODE_BYTES`] first.
pub fn batches(ops: Vec<Op>, root: &str, limit: usize, reserved: usize) -> Vec<Vec<Op>> {
    let mut out: Vec<Vec<Op>> = Vec::new();
    let mut size = 0;
    for op in ops {
        let bytes = op.request_bytes(root);
        match out.last_mut() {
            Some(batch) if size + bytes <= limit => {
                batch.push(op);
                size += bytes;
            }
            _ => {
                size = reserved + bytes;
                out.push(vec![op]);
            }
        }
    }
    out
}

/// What the guard node (the store's root, `PATH/state`) holds: the last save's request count, so that a load can
/// tell a save split across requests that stopped half-way.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Marker {
    batch: usize,
    of: usize,
}

/// What this store knows of ZooKeeper: its nodes as last read or written, and the guard's version.
#[derive(Default)]
struct Seen {
    nodes: BTreeMap<String, Known>,
    /// The version of the root node this store last read or wrote; `None` before [`StateStore::load`].
    guard: Option<i32>,
}

/// The store. ZooKeeper calls run on a small runtime of the store's own, so the synchronous [`StateStore`] calls
/// work from any thread, inside or outside the caller's runtime.
pub struct ZkStore {
    client: zk::Client,
    root: String,
    rt: Option<tokio::runtime::Runtime>,
    seen: Mutex<Seen>,
}

/// How many reads a load keeps in flight on the session at once.
const READ_PIPELINE: usize = 512;

/// A failed ZooKeeper request: the relative path it concerned and the error.
type Failed = (String, zk::Error);

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
        Ok(ZkStore { client, root: root.to_string(), rt: Some(rt), seen: Mutex::new(Seen::default()) })
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

    /// `path` relative to the root, absolute; `""` is the root (the guard) itself.
    fn full(root: &str, path: &str) -> String {
        if path.is_empty() { root.to_string() } else { format!("{root}/{path}") }
    }

    /// A failed request as a store error: a node at another version than expected, one that exists when this store
    /// creates it, or one gone that it expected, means another Marathon wrote ([`StoreError::Conflict`]).
    fn error(&self, (path, e): Failed) -> StoreError {
        let path = Self::full(&self.root, &path);
        match e {
            zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode => StoreError::Conflict { path },
            e => StoreError::Zk { path, message: e.to_string() },
        }
    }
}

impl Drop for ZkStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Creates the directories, claims the guard (a conditional write of the root, so that a leader still writing with
/// an older view of the state fails from now on), then reads every node, many requests in flight at once.
async fn read_all(client: zk::Client, root: String) -> Result<(BTreeMap<String, Known>, i32, Vec<u8>), Failed> {
    let acl = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for dir in DIRS {
        match client.mkdir(&format!("{root}/{dir}"), &acl).await {
            Ok(()) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err((dir.to_string(), e)),
        }
    }
    let (marker, stat) = client.get_data(&root).await.map_err(|e| (String::new(), e))?;
    let guard = client.set_data(&root, &marker, Some(stat.version)).await.map_err(|e| (String::new(), e))?.version;
    let mut paths = vec!["framework-id".to_string()];
    for dir in DIRS {
        let names = client.list_children(&format!("{root}/{dir}")).await.map_err(|e| (dir.to_string(), e))?;
        paths.extend(names.into_iter().map(|name| format!("{dir}/{name}")));
    }
    let mut nodes = BTreeMap::new();
    for chunk in paths.chunks(READ_PIPELINE) {
        // Each request is sent when its future is made; they are awaited together.
        let reads: Vec<_> = chunk.iter().map(|rel| client.get_data(&format!("{root}/{rel}"))).collect();
        for (rel, read) in chunk.iter().zip(reads) {
            match read.await {
                Ok((data, stat)) => {
                    nodes.insert(rel.clone(), (data, stat.version));
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err((rel.clone(), e)),
            }
        }
    }
    Ok((nodes, guard, marker))
}

/// Commits `batches` in order, each one `multi` that first sets the guard (the root) at the version this store
/// last saw — so that it fails whole if another Marathon wrote anything since — then applies its operations, each
/// at its own expected version. Returns what each committed batch changed (relative path → the node now, `None`
/// when deleted) and the guard's version after it, and the first failure.
async fn commit(
    client: zk::Client,
    root: String,
    batches: Vec<Vec<Op>>,
    mut guard: i32,
) -> (Vec<(Vec<(String, Option<Known>)>, i32)>, Option<Failed>) {
    let acl = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let of = batches.len();
    let mut done = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        let marker = serde_json::to_vec(&Marker { batch: i + 1, of }).unwrap_or_default();
        let mut multi = client.new_multi_writer();
        let added = std::iter::once(multi.add_set_data(&root, &marker, Some(guard)).map_err(|e| (String::new(), e)))
            .chain(batch.iter().map(|op| {
                let full = format!("{root}/{}", op.path());
                match op {
                    Op::Create { data, .. } => multi.add_create(&full, data, &acl),
                    Op::Set { data, version, .. } => multi.add_set_data(&full, data, Some(*version)),
                    Op::Delete { version, .. } => multi.add_delete(&full, Some(*version)),
                }
                .map_err(|e| (op.path().to_string(), e))
            }))
            .collect::<Result<Vec<()>, Failed>>();
        if let Err(failed) = added {
            return (done, Some(failed));
        }
        let results = match multi.commit().await {
            Ok(results) => results,
            Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                let path = index.checked_sub(1).and_then(|i| batch.get(i)).map_or(String::new(), |op| op.path().into());
                return (done, Some((path, source)));
            }
            // The request as a whole (the session, the connection): named by the root.
            Err(zk::MultiWriteError::RequestFailed { source }) => return (done, Some((String::new(), source))),
        };
        let mut results = results.into_iter();
        if let Some(zk::MultiWriteResult::SetData { stat }) = results.next() {
            guard = stat.version;
        }
        let mut changed = Vec::with_capacity(batch.len());
        for (op, result) in batch.into_iter().zip(results) {
            match (op, result) {
                // A created node is at version 0 (the stat of a create in a multi may be invalid: ZOOKEEPER-4026).
                (Op::Create { path, data }, _) => changed.push((path, Some((data, 0)))),
                (Op::Set { path, data, .. }, zk::MultiWriteResult::SetData { stat }) => {
                    changed.push((path, Some((data, stat.version))))
                }
                (Op::Set { path, data, version }, _) => changed.push((path, Some((data, version + 1)))),
                (Op::Delete { path, .. }, _) => changed.push((path, None)),
            }
        }
        done.push((changed, guard));
    }
    (done, None)
}

impl StateStore for ZkStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let read = self.block(read_all(self.client.clone(), self.root.clone()));
        let (nodes, guard, marker) = read.map_err(|failed| self.error(failed))?;
        if let Ok(Marker { batch, of }) = serde_json::from_slice::<Marker>(&marker)
            && batch < of
        {
            tracing::warn!(
                store = %self.location(),
                batch,
                of,
                "the last save was split into {of} ZooKeeper requests and only {batch} were committed: the state \
                 mixes the old and the new (each node whole); reconciliation with the master settles the instances"
            );
        }
        let data: BTreeMap<String, Vec<u8>> = nodes.iter().map(|(k, (d, _))| (k.clone(), d.clone())).collect();
        let state = assemble(&data, &self.location())?;
        let empty = nodes.is_empty();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Seen { nodes, guard: Some(guard) };
        Ok((!empty).then_some(state))
    }

    /// One `multi` request (several only past ZooKeeper's request limit): either all of the save is written or
    /// none of it. Every request is conditional on the guard's version and each node's, so a save over another
    /// Marathon's writes fails whole with [`StoreError::Conflict`].
    ///
    /// Caveat: a save larger than [`MAX_REQUEST_BYTES`] (thousands of changed apps, or about 1,500 new instance
    /// records at once) is split into several requests, each atomic on its own; a crash between them leaves the
    /// earlier ones applied — every node whole, creates and sets before deletes — and the next load warns of it.
    /// A request whose answer is lost with the connection may or may not have been applied: this store then no
    /// longer knows the versions, so its next save is refused as a conflict and the leader stops (the safe side).
    fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let wanted = split(state);
        self.check_sizes(wanted.iter().map(|(path, data)| (path, Some(data))))?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let ops = plan(&seen.nodes, wanted);
        self.write(&mut seen, ops)
    }

    /// Writes only the nodes of the changed records ([`plan_changes`]); the same one `multi`, guard and versions.
    fn save_changes(&self, state: &Persisted, changes: &super::Changes) -> Result<(), StoreError> {
        let changed = super::nodes::changed_nodes(state, changes);
        self.check_sizes(changed.iter().map(|(path, data)| (path, data.as_ref())))?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let ops = plan_changes(&seen.nodes, changed);
        self.write(&mut seen, ops)
    }
}

impl ZkStore {
    fn check_sizes<'a>(
        &self,
        nodes: impl Iterator<Item = (&'a String, Option<&'a Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        for (path, data) in nodes {
            if let Some(data) = data.filter(|d| d.len() > MAX_NODE_BYTES) {
                return Err(StoreError::TooLarge { path: format!("{}/{path}", self.root), bytes: data.len() });
            }
        }
        Ok(())
    }

    /// Commits `ops` (see `save`) and records the nodes' new versions.
    fn write(&self, seen: &mut Seen, ops: Vec<Op>) -> Result<(), StoreError> {
        let Some(guard) = seen.guard else {
            return Err(StoreError::Zk { path: self.root.clone(), message: "saving before loading the state".into() });
        };
        if ops.is_empty() {
            return Ok(());
        }
        let reserved = OP_OVERHEAD_BYTES + self.root.len() + 64;
        let batches = batches(ops, &self.root, MAX_REQUEST_BYTES, reserved);
        if batches.len() > 1 {
            tracing::warn!(store = %self.location(), requests = batches.len(), "a save over ZooKeeper's request limit is split");
        }
        let (done, failed) = self.block(commit(self.client.clone(), self.root.clone(), batches, guard));
        for (changed, guard) in done {
            for (path, now) in changed {
                match now {
                    Some(node) => seen.nodes.insert(path, node),
                    None => seen.nodes.remove(&path),
                };
            }
            seen.guard = Some(guard);
        }
        match failed {
            None => Ok(()),
            Some(failed) => Err(self.error(failed)),
        }
    }
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
        let version = format!("group-versions/_shop@{}", crate::time::format_iso(1_700_000_000_000));
        assert_eq!(names, ["apps/_shop_web", "deployments/d1", "framework-id", &version, "groups/_shop"]);
        let back = assemble(&nodes, "zk:/m/state").unwrap();
        assert_eq!(back, core.state);
        // The layout before group versions had records of their own (versions inside the group's) still loads.
        let mut old = nodes.clone();
        let v: serde_json::Value = serde_json::from_slice(&old.remove(&version).unwrap()).unwrap();
        let mut group: serde_json::Value = serde_json::from_slice(&old["groups/_shop"]).unwrap();
        group["versions"] = json!({crate::time::format_iso(1_700_000_000_000): v});
        old.insert("groups/_shop".into(), serde_json::to_vec(&group).unwrap());
        assert_eq!(assemble(&old, "zk:/m/state").unwrap(), core.state);
        let mut bad = nodes.clone();
        bad.insert("apps/_x".into(), b"{".to_vec());
        let err = assemble(&bad, "zk:/m/state").unwrap_err().to_string();
        assert!(err.contains("zk:/m/state/apps/_x"), "{err}");
    }

    /// Writing only the changed records gives the same operations as comparing the whole state.
    #[test]
    fn a_save_of_the_changes_plans_what_a_whole_save_does() {
        let now = 1_700_000_000_000;
        let mut core = Core::new(Persisted::default());
        for i in 0..3 {
            let app = json!({"id": format!("/a{i}"), "cmd": "x", "cpus": 0.1, "mem": 8});
            core.create_app(&app, false, now, format!("d{i}")).unwrap();
        }
        core.set_framework_id("fw-1");
        let known: BTreeMap<String, Known> = split(&core.state).into_iter().map(|(p, d)| (p, (d, 3))).collect();
        core.take_changes();
        core.delete_app("/a0", true, now + 1, "d9".into()).unwrap();
        core.update_app("/a1", &json!({"cmd": "y"}), true, true, now + 2, "d10".into()).unwrap();
        let changes = core.take_changes();
        let partial = plan_changes(&known, crate::store::nodes::changed_nodes(&core.state, &changes));
        let whole = plan(&known, split(&core.state));
        assert!(!whole.is_empty());
        assert_eq!(partial, whole);
    }

    fn known(nodes: &[(&str, &str, i32)]) -> BTreeMap<String, Known> {
        nodes.iter().map(|(p, d, v)| (p.to_string(), (d.as_bytes().to_vec(), *v))).collect()
    }

    fn wanted(nodes: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        nodes.iter().map(|(p, d)| (p.to_string(), d.as_bytes().to_vec())).collect()
    }

    #[test]
    fn a_plan_writes_what_changed_at_the_known_versions_and_deletes_last() {
        let known = known(&[("apps/_a", "a1", 3), ("instances/t1", "i1", 0), ("instances/t2", "i2", 7)]);
        let wanted = wanted(&[("apps/_a", "a2"), ("instances/t1", "i1"), ("instances/t3", "i3")]);
        let ops = plan(&known, wanted);
        assert_eq!(
            ops,
            [
                Op::Set { path: "apps/_a".into(), data: b"a2".to_vec(), version: 3 },
                Op::Create { path: "instances/t3".into(), data: b"i3".to_vec() },
                Op::Delete { path: "instances/t2".into(), version: 7 },
            ]
        );
        assert_eq!(plan(&known, known.iter().map(|(p, (d, _))| (p.clone(), d.clone())).collect()), []);
    }

    fn create(path: &str, bytes: usize) -> Op {
        Op::Create { path: path.into(), data: vec![b'x'; bytes] }
    }

    #[test]
    fn a_save_is_one_request_unless_it_would_pass_the_limit() {
        let root = "/marathon/state";
        // A burst of 1,000 launches (an instance record is about 500 bytes): one request.
        let launches: Vec<Op> = (0..1000).map(|n| create(&format!("instances/t{n:04}"), 500)).collect();
        let total: usize = launches.iter().map(|op| op.request_bytes(root)).sum();
        assert!(total < MAX_REQUEST_BYTES, "{total}");
        assert_eq!(batches(launches.clone(), root, MAX_REQUEST_BYTES, 128), [launches]);
        assert!(batches(Vec::new(), root, MAX_REQUEST_BYTES, 128).is_empty());

        // Three 400 kB app nodes: two fit in one request, the third goes to a second, in order.
        let big: Vec<Op> = ["apps/_a", "apps/_b", "apps/_c"].iter().map(|p| create(p, 400_000)).collect();
        let split = batches(big.clone(), root, MAX_REQUEST_BYTES, 128);
        assert_eq!(split, [big[..2].to_vec(), big[2..].to_vec()]);
        for batch in &split {
            let bytes: usize = 128 + batch.iter().map(|op| op.request_bytes(root)).sum::<usize>();
            assert!(bytes <= MAX_REQUEST_BYTES, "{bytes}");
        }

        // A node at the limit fits a request of its own; one over it is still sent, alone, for ZooKeeper to refuse.
        let largest = create("apps/_max", MAX_NODE_BYTES);
        assert!(largest.request_bytes(root) + 128 <= MAX_REQUEST_BYTES);
        let over = create("apps/_over", MAX_REQUEST_BYTES);
        let small = Op::Delete { path: "instances/t1".into(), version: 2 };
        assert_eq!(
            batches(vec![small.clone(), over.clone(), small.clone()], root, MAX_REQUEST_BYTES, 128),
            [vec![small.clone()], vec![over], vec![small]]
        );
    }

    #[test]
    fn batches_keep_every_operation_in_order() {
        let root = "/m/state";
        let ops: Vec<Op> = (0..50).map(|n| create(&format!("apps/_{n}"), (n * 7919) % 3000)).collect();
        for limit in [200, 1000, 5000, 100_000] {
            let split = batches(ops.clone(), root, limit, 10);
            assert_eq!(split.concat(), ops, "limit {limit}");
            for batch in &split {
                let bytes: usize = 10 + batch.iter().map(|op| op.request_bytes(root)).sum::<usize>();
                assert!(bytes <= limit || batch.len() == 1, "limit {limit}: {bytes} in {} ops", batch.len());
            }
        }
    }
}
