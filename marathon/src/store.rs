//! Persistence behind the [`StateStore`] seam: a snapshot and a journal under `--work-dir` standalone
//! ([`FileStore`]), ZooKeeper with `--zk` ([`zk::ZkStore`]), memory in tests ([`MemoryStore`]). Both real stores
//! write the state as the records of [`nodes`], and only the changed ones ([`StateStore::save_changes`]).

pub mod nodes;
pub mod zk;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::core::Persisted;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid Marathon state file: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{path}:{line}: {message}")]
    Journal { path: PathBuf, line: usize, message: String },
    #[error("ZooKeeper failed at {path}: {message}")]
    Zk { path: String, message: String },
    #[error("{path} was changed by another Marathon (a newer leader?); this one must stop")]
    Conflict { path: String },
    #[error("{path} would hold {bytes} bytes, over ZooKeeper's node limit")]
    TooLarge { path: String, bytes: usize },
}

/// Where Marathon keeps apps, versions, instances, deployments and its framework id.
pub trait StateStore: Send + Sync + 'static {
    /// The saved state, or `None` when nothing was saved yet.
    fn load(&self) -> Result<Option<Persisted>, StoreError>;
    /// Replaces the saved state atomically: after a crash either the old or the new state is there.
    fn save(&self, state: &Persisted) -> Result<(), StoreError>;
    /// [`StateStore::save`], told which records changed since the last save: a store that can write only those
    /// does (the file store appends them to its journal), so a save costs O(changes), not O(state). The same
    /// atomicity holds.
    fn save_changes(&self, state: &Persisted, changes: &Changes) -> Result<(), StoreError> {
        let _ = changes;
        self.save(state)
    }
}

/// The records of the state that changed since the last save, by the ids of their nodes (see [`nodes`]):
/// an app's record holds its definition, its versions and its last failure; a group's its record (`GroupMeta`);
/// each group version is a record of its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub framework_id: bool,
    pub apps: BTreeSet<String>,
    pub instances: BTreeSet<String>,
    pub deployments: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    /// Group versions by group id and version.
    pub group_versions: BTreeSet<(String, String)>,
}

impl Changes {
    /// Every record of `state`.
    pub fn everything(state: &Persisted) -> Changes {
        Changes {
            framework_id: true,
            apps: state
                .apps
                .keys()
                .chain(state.versions.keys())
                .chain(state.failures.keys())
                .chain(state.relaunch.keys())
                .cloned()
                .collect(),
            instances: state.instances.keys().cloned().collect(),
            deployments: state.deployments.keys().cloned().collect(),
            groups: state.groups.keys().cloned().collect(),
            group_versions: state
                .group_versions
                .iter()
                .flat_map(|(id, versions)| versions.keys().map(|v| (id.clone(), v.clone())))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.framework_id
            && self.apps.is_empty()
            && self.instances.is_empty()
            && self.deployments.is_empty()
            && self.groups.is_empty()
            && self.group_versions.is_empty()
    }

    /// Adds `other`'s records (a save that failed is retried with the next one's).
    pub fn merge(&mut self, other: Changes) {
        self.framework_id |= other.framework_id;
        self.apps.extend(other.apps);
        self.instances.extend(other.instances);
        self.deployments.extend(other.deployments);
        self.groups.extend(other.groups);
        self.group_versions.extend(other.group_versions);
    }
}

/// Standalone Marathon's state under `--work-dir`: a snapshot, `marathon-state.json` (the whole state, written to a
/// temporary file, synced, then renamed over the old one), and a journal of the records changed since,
/// `marathon-state.<generation>.journal`, to which every [`StateStore::save_changes`] appends the changed records
/// ([`nodes`]) and syncs. A save therefore costs O(changes), not O(state); once the journal outgrows the snapshot
/// (and [`COMPACT_BYTES`]) the state is written as a new snapshot and the journal starts again.
///
/// The journal is line based: `<record path>\t<record JSON>\n` sets a record, `<record path>\t\n` removes it, and
/// each save ends with a `commit` line, so a save torn by a crash is left out whole on load (and cut off the file).
/// The snapshot names its journal's generation, so a crash between writing a new snapshot and removing the old
/// journal cannot replay stale records onto it.
pub struct FileStore {
    path: PathBuf,
    journal: Mutex<Journal>,
}

/// The journal's size past which a save compacts it into a new snapshot, unless the snapshot is larger.
pub const COMPACT_BYTES: u64 = 1 << 20;

const COMMIT: &[u8] = b"commit";

/// The journal this store appends to.
#[derive(Default)]
struct Journal {
    /// The generation the snapshot names; `None` until a load or a save told it, or after a failed append (whose
    /// bytes may be torn): then the next save writes a snapshot of a new generation.
    generation: Option<u64>,
    file: Option<std::fs::File>,
    bytes: u64,
    snapshot_bytes: u64,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    journal: u64,
    state: &'a Persisted,
}

#[derive(Deserialize)]
struct Snapshot {
    journal: u64,
    state: Persisted,
}

impl FileStore {
    pub fn new(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Write { path: dir.to_path_buf(), source })?;
        Ok(FileStore { path: dir.join("marathon-state.json"), journal: Mutex::default() })
    }

    /// The snapshot's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the journal of `generation`.
    pub fn journal_path(&self, generation: u64) -> PathBuf {
        self.path.with_file_name(format!("marathon-state.{generation}.journal"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The snapshot: its journal's generation, the state and its size (generation 0 and nothing when there is none;
    /// a snapshot written before the journal existed is the bare state).
    fn read_snapshot(&self) -> Result<(u64, Option<Persisted>, u64), StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, None, 0)),
            Err(source) => return Err(StoreError::Read { path: self.path.clone(), source }),
        };
        let size = bytes.len() as u64;
        match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) => Ok((s.journal, Some(s.state), size)),
            Err(source) => match serde_json::from_slice::<Persisted>(&bytes) {
                Ok(state) => Ok((0, Some(state), size)),
                Err(_) => Err(StoreError::Corrupt { path: self.path.clone(), source }),
            },
        }
    }

    /// Writes `state` as the snapshot of a new generation and drops the old journals.
    fn snapshot(&self, journal: &mut Journal, state: &Persisted) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let generation = (now as u64).max(journal.generation.map_or(0, |g| g + 1));
        // Until the snapshot is in place, a failure leaves the journal unusable (its generation may be stale).
        journal.generation = None;
        journal.file = None;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&SnapshotRef { journal: generation, state })
            .map_err(|e| StoreError::Write { path: self.path.clone(), source: std::io::Error::other(e) })?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            self.sync_dir()
        };
        write().map_err(|source| StoreError::Write { path: self.path.clone(), source })?;
        *journal = Journal { generation: Some(generation), file: None, bytes: 0, snapshot_bytes: bytes.len() as u64 };
        self.remove_journals_but(generation);
        Ok(())
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        match self.path.parent() {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    /// Removes the journals of other generations (stale: their records are in the snapshot).
    fn remove_journals_but(&self, generation: u64) {
        let Some(dir) = self.path.parent() else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let keep = self.journal_path(generation);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("marathon-state.")
                && name.ends_with(".journal")
                && entry.path() != keep
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a stale journal");
            }
        }
    }

    /// Appends one save to the journal and syncs it.
    fn append(&self, journal: &mut Journal, generation: u64, records: &[u8]) -> std::io::Result<()> {
        let file = match &mut journal.file {
            Some(file) => file,
            slot => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(self.journal_path(generation))?;
                journal.bytes = file.metadata()?.len();
                self.sync_dir()?;
                slot.insert(file)
            }
        };
        file.write_all(records)?;
        file.sync_data()?;
        journal.bytes += records.len() as u64;
        Ok(())
    }
}

/// The records of a journal, applied in order onto `nodes`: only whole saves (up to their `commit` line). Returns
/// the length of the journal's committed part (a torn save after it is to be cut off).
fn replay(journal: &[u8], path: &Path, nodes: &mut BTreeMap<String, Vec<u8>>) -> Result<u64, StoreError> {
    let mut pending: Vec<(&[u8], &[u8])> = Vec::new();
    let mut committed = 0;
    let mut at = 0;
    for (n, line) in journal.split_inclusive(|b| *b == b'\n').enumerate() {
        at += line.len();
        let Some(line) = line.strip_suffix(b"\n") else { break };
        if line == COMMIT {
            for (record, data) in pending.drain(..) {
                let record = String::from_utf8_lossy(record).into_owned();
                match data {
                    [] => nodes.remove(&record),
                    data => nodes.insert(record, data.to_vec()),
                };
            }
            committed = at;
            continue;
        }
        let tab = line.iter().position(|b| *b == b'\t').ok_or_else(|| StoreError::Journal {
            path: path.to_path_buf(),
            line: n + 1,
            message: "neither a record (path, tab, JSON) nor a commit".into(),
        })?;
        pending.push((&line[..tab], &line[tab + 1..]));
    }
    Ok(committed as u64)
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let mut journal = self.lock();
        let (generation, state, snapshot_bytes) = self.read_snapshot()?;
        let path = self.journal_path(generation);
        let (state, bytes) = match std::fs::read(&path) {
            Ok(records) if !records.is_empty() => {
                let mut nodes = state.as_ref().map(nodes::split).unwrap_or_default();
                let committed = replay(&records, &path, &mut nodes)?;
                if committed < records.len() as u64 {
                    tracing::warn!(path = %path.display(), bytes = records.len() as u64 - committed,
                        "the journal ends in a save torn by a crash: it is left out");
                    let cut = std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(committed));
                    cut.map_err(|source| StoreError::Write { path: path.clone(), source })?;
                }
                let state = match state.is_some() || committed > 0 {
                    true => Some(nodes::assemble(&nodes, &path.display().to_string())?),
                    false => None,
                };
                (state, committed)
            }
            Ok(_) => (state, 0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (state, 0),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        self.remove_journals_but(generation);
        *journal = Journal { generation: Some(generation), file: None, bytes, snapshot_bytes };
        Ok(state)
    }

    fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let mut journal = self.lock();
        self.snapshot(&mut journal, state)
    }

    fn save_changes(&self, state: &Persisted, changes: &Changes) -> Result<(), StoreError> {
        let mut journal = self.lock();
        let Some(generation) = journal.generation else {
            return self.snapshot(&mut journal, state);
        };
        if changes.is_empty() {
            return Ok(());
        }
        let mut records = Vec::new();
        for (record, data) in nodes::changed_nodes(state, changes) {
            if record.contains(['\t', '\n']) {
                return Err(StoreError::Write {
                    path: self.journal_path(generation),
                    source: std::io::Error::other(format!("record {record:?} has a tab or a newline in its name")),
                });
            }
            records.extend_from_slice(record.as_bytes());
            records.push(b'\t');
            records.extend_from_slice(data.as_deref().unwrap_or_default());
            records.push(b'\n');
        }
        records.extend_from_slice(COMMIT);
        records.push(b'\n');
        if let Err(source) = self.append(&mut journal, generation, &records) {
            // The journal may now end in a torn save: the next save starts a new snapshot rather than append to it.
            journal.generation = None;
            journal.file = None;
            return Err(StoreError::Write { path: self.journal_path(generation), source });
        }
        if journal.bytes > journal.snapshot_bytes.max(COMPACT_BYTES) {
            // The save is in the journal already; a failed compaction is retried at the next save.
            if let Err(e) = self.snapshot(&mut journal, state) {
                tracing::warn!(error = %e, "cannot compact the journal into a new snapshot");
            }
        }
        Ok(())
    }
}

/// A store in memory, for tests.
#[derive(Default)]
pub struct MemoryStore(pub std::sync::Mutex<Option<Persisted>>);

impl StateStore for MemoryStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        Ok(self.0.lock().map(|s| s.clone()).unwrap_or_default())
    }
    fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(state.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Core;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000;

    /// A core with `n` apps created (each a deployment) and a framework id; its changes are pending.
    fn core_with_apps(n: usize) -> Core {
        let mut core = Core::new(Persisted::default());
        core.set_framework_id("fw-1");
        for i in 0..n {
            let app = json!({"id": format!("/app-{i}"), "cmd": "sleep 1000", "cpus": 0.1, "mem": 8});
            core.create_app(&app, false, NOW, format!("d{i}")).unwrap();
        }
        core
    }

    fn save(store: &FileStore, core: &mut Core) {
        let changes = core.take_changes();
        store.save_changes(&core.state, &changes).unwrap();
    }

    fn journal_of(store: &FileStore) -> PathBuf {
        let dir = store.path().parent().unwrap();
        let mut journals: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "journal"))
            .collect();
        assert_eq!(journals.len(), 1, "one journal: {journals:?}");
        journals.pop().unwrap()
    }

    #[test]
    fn changes_go_to_the_journal_and_come_back_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        assert!(store.load().unwrap().is_none());
        let mut core = core_with_apps(3);
        save(&store, &mut core);
        assert!(!store.path().exists(), "a small save goes to the journal only");
        core.delete_app("/app-1", true, NOW + 1, "d9".into()).unwrap();
        save(&store, &mut core);
        let journal = std::fs::read_to_string(journal_of(&store)).unwrap();
        assert_eq!(journal.lines().filter(|l| *l == "commit").count(), 2, "{journal}");
        assert!(journal.lines().any(|l| l.starts_with("apps/_app-1\t")), "the deleted app's record: {journal}");

        let reopened = FileStore::new(dir.path()).unwrap();
        assert_eq!(reopened.load().unwrap(), Some(core.state.clone()));
        // Saving after a load appends to the same journal.
        core.set_framework_id("fw-2");
        save(&reopened, &mut core);
        assert_eq!(FileStore::new(dir.path()).unwrap().load().unwrap(), Some(core.state));
    }

    #[test]
    fn a_torn_save_is_left_out_whole_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.load().unwrap();
        let mut core = core_with_apps(2);
        save(&store, &mut core);
        let before = core.state.clone();
        let journal = journal_of(&store);
        let whole = std::fs::read(&journal).unwrap();
        // A crash in the middle of the next save: its first record whole, the second cut, no commit.
        let mut torn = whole.clone();
        torn.extend_from_slice(b"framework-id\tfw-9\napps/_app-0\t{\"app\":");
        std::fs::write(&journal, &torn).unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), Some(before), "the torn save is not applied, not even its whole record");
        assert_eq!(std::fs::read(&journal).unwrap(), whole, "and it is cut off the journal");
        core.set_framework_id("fw-3");
        save(&store, &mut core);
        assert_eq!(FileStore::new(dir.path()).unwrap().load().unwrap(), Some(core.state));
    }

    #[test]
    fn a_corrupt_journal_line_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.load().unwrap();
        let mut core = core_with_apps(1);
        save(&store, &mut core);
        let journal = journal_of(&store);
        let mut bytes = std::fs::read(&journal).unwrap();
        let lines = bytes.iter().filter(|b| **b == b'\n').count();
        bytes.extend_from_slice(b"garbage\ncommit\n");
        std::fs::write(&journal, &bytes).unwrap();
        let err = FileStore::new(dir.path()).unwrap().load().unwrap_err().to_string();
        let at = format!("{}:{}", journal.display(), lines + 1);
        assert!(err.contains(&at), "{err} names {at}");
        // A record whose JSON is broken names the record.
        bytes.truncate(bytes.len() - b"garbage\ncommit\n".len());
        bytes.extend_from_slice(b"instances/t1\t{broken\ncommit\n");
        std::fs::write(&journal, &bytes).unwrap();
        let err = FileStore::new(dir.path()).unwrap().load().unwrap_err().to_string();
        assert!(err.contains("instances/t1"), "{err}");
    }

    #[test]
    fn a_long_journal_is_compacted_into_a_new_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.load().unwrap();
        let mut core = core_with_apps(1);
        save(&store, &mut core);
        let first = journal_of(&store);
        // Rewrite the app record until the journal passes COMPACT_BYTES, which compacts it.
        let mut i = 0;
        while first.exists() {
            i += 1;
            assert!(i < 10_000, "never compacted");
            let id = format!("s{i}");
            core.update_app("/app-0", &json!({"cmd": format!("sleep {i}")}), true, true, NOW + i, id).unwrap();
            save(&store, &mut core);
        }
        assert!(i > 1, "compacted only once the journal passed {COMPACT_BYTES} bytes");
        assert!(store.path().exists(), "a snapshot was written");
        assert!(!first.exists(), "the old journal is gone");
        assert_eq!(FileStore::new(dir.path()).unwrap().load().unwrap(), Some(core.state.clone()));
        core.set_framework_id("fw-after");
        save(&store, &mut core);
        assert_ne!(journal_of(&store), first, "a new generation's journal");
        assert_eq!(FileStore::new(dir.path()).unwrap().load().unwrap(), Some(core.state));
    }

    #[test]
    fn a_journal_of_an_older_snapshot_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.load().unwrap();
        let mut core = core_with_apps(2);
        save(&store, &mut core);
        let journal = journal_of(&store);
        let stale = std::fs::read(&journal).unwrap();
        // A full save (a new snapshot); then a crash is simulated that left the old journal in place.
        core.delete_app("/app-0", true, NOW + 1, "d9".into()).unwrap();
        core.take_changes();
        store.save(&core.state).unwrap();
        std::fs::write(&journal, &stale).unwrap();
        assert_eq!(FileStore::new(dir.path()).unwrap().load().unwrap(), Some(core.state));
        assert!(!journal.exists(), "the stale journal is removed on load");
    }

    #[test]
    fn a_snapshot_from_before_the_journal_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let core = core_with_apps(1);
        std::fs::write(dir.path().join("marathon-state.json"), serde_json::to_vec(&core.state).unwrap()).unwrap();
        assert_eq!(FileStore::new(dir.path()).unwrap().load().unwrap(), Some(core.state));
    }

    #[test]
    fn file_store_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("m")).unwrap();
        assert!(store.load().unwrap().is_none());
        let state = Persisted { framework_id: Some("fw-1".into()), ..Persisted::default() };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        assert!(!store.path().with_extension("json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        std::fs::write(store.path(), b"{not json").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("marathon-state.json"), "{err}");
    }
}
