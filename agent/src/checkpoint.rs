//! What the agent checkpoints under its work dir so a restarted agent carries on (Mesos's `meta` directory), one
//! small file per task as Mesos keeps them, so a batch of events costs what it changed, not what the agent runs:
//!
//! ```text
//! <work_dir>/meta/agent.info                                 {"version": 2, "agent_id": ..}
//! <work_dir>/meta/frameworks/<framework>/framework.info      the FrameworkInfo
//! <work_dir>/meta/frameworks/<framework>/tasks/<task>.info   the task (container id, sandbox, live, kill in
//!                                                            progress) and its unacknowledged status updates
//! ```
//!
//! All are JSON. Ids become file names through [`file_name`] (anything but `[A-Za-z0-9._-]` percent-encoded, very
//! long ids shortened with a hash), and each file names its ids again, which recovery checks against its path. The
//! containers' own checkpoints (monitor pids, exit records) live beside them under `<work_dir>/containers/` (see
//! [`crate::containerizer::LibcontainerContainerizer`]).
//!
//! [`CheckpointDir::write`] writes a batch's [`Changes`] (the records that changed, from
//! [`crate::core::AgentCore::take_changes`]). A task's file is a log of its records, one JSON line each, the last
//! complete line being the task's checkpoint (as Mesos appends to a task's `task.updates`): a change appends a line.
//! The agent's and frameworks' files, a new task's file, and a task file that reached [`MAX_TASK_RECORDS`] lines are
//! written whole instead: beside the old one as `.tmp`, then renamed over it. Appending creates no file; replacing
//! a file creates one and frees one per write. On ext4 without a journal (this project's CI machine) every file
//! creation scans the recently freed inodes, which made a task's five rewrites the agent's main cost when a
//! thousand tasks started at once. Everything written is made durable — an fsync each, or one `syncfs` for a large
//! batch — before the renames, and then one fsync per directory touched; a task that is gone has its file removed.
//! So a `kill -9` or a crash at any moment leaves each file old or new: an append it interrupted is an incomplete
//! last line, which recovery ignores. The shell sends nothing before the batch is on disk. Within a batch frameworks
//! are written before their tasks and `agent.info` last.
//!
//! [`read`] reads it all back. A corrupt `agent.info` stops the agent naming the file; a corrupt task or framework
//! file does too, as Mesos's `--strict=true` (the default) makes every recovery error fatal, unless the agent runs
//! with `--strict=false`, which recovers the rest and reports what it skipped. Agents before this layout wrote the
//! whole checkpoint to one file, `<work_dir>/meta/agent.json` (format 1); [`read`] still reads it, the agent then
//! rewrites everything in this layout and, once `agent.info` is written, removes the old file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use agora_proto::model::{FrameworkInfo, TaskInfo, TaskState};
use serde::{Deserialize, Serialize};

use crate::status_updates::{QueuedUpdates, TaskKey};

/// The version of the per-task layout, in `agent.info`; another version is refused.
pub const VERSION: u32 = 2;
/// The version of the old single-file checkpoint (`meta/agent.json`), still recovered.
pub const LEGACY_VERSION: u32 = 1;

const AGENT_FILE: &str = "agent.info";
const FRAMEWORKS_DIR: &str = "frameworks";
const FRAMEWORK_FILE: &str = "framework.info";
const TASKS_DIR: &str = "tasks";
const TASK_SUFFIX: &str = ".info";
const LEGACY_FILE: &str = "agent.json";
/// A task file holds at most this many records (lines); the next write replaces it with one.
pub const MAX_TASK_RECORDS: u32 = 8;
/// File names longer than this are shortened with a hash (most file systems allow 255 bytes).
const MAX_NAME: usize = 200;

/// Everything a restarted agent needs to carry on, as recovery reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCheckpoint {
    pub agent_id: Option<String>,
    pub frameworks: Vec<FrameworkInfo>,
    pub tasks: Vec<TaskCheckpoint>,
    pub updates: Vec<QueuedUpdates>,
}

/// One task the agent tracks, identified by `framework_id` and `info.task_id` together (task ids are unique only per
/// framework).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    pub framework_id: String,
    pub info: TaskInfo,
    pub state: TaskState,
    pub container_id: String,
    pub sandbox: PathBuf,
    /// A container was launched (or launching) and has not been seen to end.
    pub live: bool,
    /// A kill is in progress, with this grace period.
    pub kill_grace_secs: Option<f64>,
    pub orphaned: bool,
    /// Killed for failing its health checks, with why (absent in checkpoints of older agents).
    #[serde(default)]
    pub unhealthy_kill: Option<String>,
}

/// `meta/agent.info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub version: u32,
    pub agent_id: Option<String>,
}

/// A line of `meta/frameworks/<framework>/tasks/<task>.info` (the last complete one counts): a task the agent
/// tracks, its unacknowledged updates, or both (a `run_task` the agent refused has updates but no task; a task whose
/// updates are all acknowledged has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub framework_id: String,
    pub task_id: String,
    #[serde(default)]
    pub task: Option<TaskCheckpoint>,
    #[serde(default)]
    pub updates: Option<QueuedUpdates>,
}

/// What a batch changed: records to write (`Some`) or remove (`None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub agent: Option<AgentRecord>,
    pub frameworks: BTreeMap<String, Option<FrameworkInfo>>,
    pub tasks: BTreeMap<TaskKey, Option<TaskRecord>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.agent.is_none() && self.frameworks.is_empty() && self.tasks.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "checkpoint {path} is corrupt ({message}); move the agent's meta directory away to start this agent afresh \
         (its tasks are then lost)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "checkpoint file {path} is corrupt ({message}); with --strict (the default, as Mesos's) the agent does not \
         start on a damaged checkpoint: move the file away, or start the agent with --strict=false to recover the \
         rest (what the file held is then lost)"
    )]
    CorruptFile { path: PathBuf, message: String },
    #[error("cannot write checkpoint {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Recovered {
    pub checkpoint: AgentCheckpoint,
    /// Read from the old single file: the agent must rewrite everything in the per-task layout.
    pub legacy: bool,
    /// Corrupt task or framework files skipped under `--strict=false`.
    pub skipped: Vec<CheckpointError>,
}

/// `<work_dir>/meta`.
pub fn meta_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("meta")
}

/// `<work_dir>/meta/agent.json`, the single-file checkpoint of older agents.
pub fn legacy_path(work_dir: &Path) -> PathBuf {
    meta_dir(work_dir).join(LEGACY_FILE)
}

/// The old single-file format of `checkpoint` (for tests of the migration and the benchmark that compares both).
pub fn legacy_bytes(checkpoint: &AgentCheckpoint) -> Vec<u8> {
    #[derive(Serialize)]
    struct Legacy<'a> {
        version: u32,
        #[serde(flatten)]
        checkpoint: &'a AgentCheckpoint,
    }
    serde_json::to_vec(&Legacy { version: LEGACY_VERSION, checkpoint }).unwrap_or_default()
}

/// An id as a file name: `[A-Za-z0-9._-]` kept (a leading `.` excepted), every other byte `%XX`, the empty id `%`;
/// one longer than 200 bytes is cut and ends in `~` and a hash of the whole id. Distinct ids get distinct names.
pub fn file_name(id: &str) -> String {
    if id.is_empty() {
        return "%".into();
    }
    let mut name = String::with_capacity(id.len());
    for (i, b) in id.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() > MAX_NAME {
        name.truncate(MAX_NAME - 17);
        name.push_str(&format!("~{:016x}", fnv1a(id.as_bytes())));
    }
    name
}

/// FNV-1a, 64 bits: stable across Rust releases, unlike the standard hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Reads the checkpoint of the agent whose work dir is `work_dir`; `None` for a fresh agent. With `strict`, a
/// corrupt task or framework file is an error; without, it is skipped and reported in [`Recovered::skipped`].
pub fn read(work_dir: &Path, strict: bool) -> Result<Option<Recovered>, CheckpointError> {
    let meta = meta_dir(work_dir);
    let agent_path = meta.join(AGENT_FILE);
    let corrupt = |path: &Path, message: String| CheckpointError::Corrupt { path: path.to_path_buf(), message };
    let Some(agent) = read_json::<AgentRecord>(&agent_path).map_err(|e| e.into_error(&agent_path, false))? else {
        let legacy = meta.join(LEGACY_FILE);
        if let Some(checkpoint) = read_legacy(&legacy)? {
            return Ok(Some(Recovered { checkpoint, legacy: true, skipped: vec![] }));
        }
        let frameworks = meta.join(FRAMEWORKS_DIR);
        if list(&frameworks)?.next().is_some() {
            let message = format!("it is missing while {} holds task checkpoints", frameworks.display());
            return Err(corrupt(&agent_path, message));
        }
        return Ok(None);
    };
    if agent.version != VERSION {
        return Err(corrupt(&agent_path, format!("version {} where {VERSION} is expected", agent.version)));
    }
    let mut skipped = Vec::new();
    let mut skip_or_fail = |error: CheckpointError| {
        if strict {
            return Err(error);
        }
        skipped.push(error);
        Ok(())
    };
    let mut frameworks = Vec::new();
    let mut records = BTreeMap::new();
    for dir in list(&meta.join(FRAMEWORKS_DIR))?.filter(|d| d.is_dir()) {
        let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let path = dir.join(FRAMEWORK_FILE);
        match read_json::<FrameworkInfo>(&path) {
            Ok(None) => {}
            Ok(Some(f)) if file_name(f.id.as_deref().unwrap_or_default()) == dir_name => frameworks.push(f),
            Ok(Some(f)) => {
                let id = f.id.unwrap_or_default();
                let message = format!("it holds framework '{id}', whose directory is {}", file_name(&id));
                skip_or_fail(CheckpointError::CorruptFile { path, message })?;
            }
            Err(e) => skip_or_fail(e.into_error(&path, true))?,
        }
        for path in list(&dir.join(TASKS_DIR))? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // Temporary files are writes a crash interrupted; their task's previous file is the checkpoint.
            let Some(stem) = name.strip_suffix(TASK_SUFFIX) else { continue };
            match read_task_record(&path) {
                Ok(None) => {}
                Ok(Some(r)) => match check_record(&r, &dir_name, stem) {
                    Ok(()) => {
                        records.insert(TaskKey::new(r.framework_id.clone(), r.task_id.clone()), r);
                    }
                    Err(e) => skip_or_fail(CheckpointError::CorruptFile { path, message: e.to_string() })?,
                },
                Err(e) => skip_or_fail(e.into_error(&path, true))?,
            }
        }
    }
    let (mut tasks, mut updates) = (Vec::new(), Vec::new());
    for r in records.into_values() {
        tasks.extend(r.task);
        updates.extend(r.updates);
    }
    let checkpoint = AgentCheckpoint { agent_id: agent.agent_id, frameworks, tasks, updates };
    Ok(Some(Recovered { checkpoint, legacy: false, skipped }))
}

/// A task file whose content is not the task its path names.
#[derive(Debug, thiserror::Error)]
enum Misfiled {
    #[error("it holds task '{task_id}' of framework '{framework_id}', whose file is {expected}")]
    Elsewhere { task_id: String, framework_id: String, expected: String },
    #[error("its task or updates are not those of task '{task_id}' of '{framework_id}'")]
    Mixed { task_id: String, framework_id: String },
}

/// A task file's ids must be the ones its path names.
fn check_record(r: &TaskRecord, framework_dir: &str, stem: &str) -> Result<(), Misfiled> {
    if file_name(&r.framework_id) != framework_dir || file_name(&r.task_id) != stem {
        return Err(Misfiled::Elsewhere {
            task_id: r.task_id.clone(),
            framework_id: r.framework_id.clone(),
            expected: format!("{}/{TASKS_DIR}/{}{TASK_SUFFIX}", file_name(&r.framework_id), file_name(&r.task_id)),
        });
    }
    let task_ok = r.task.as_ref().is_none_or(|t| t.framework_id == r.framework_id && t.info.task_id == r.task_id);
    let updates_ok = r.updates.as_ref().is_none_or(|u| u.framework_id == r.framework_id && u.task_id == r.task_id);
    if !task_ok || !updates_ok {
        return Err(Misfiled::Mixed { task_id: r.task_id.clone(), framework_id: r.framework_id.clone() });
    }
    Ok(())
}

/// The old single file, if there is one.
fn read_legacy(path: &Path) -> Result<Option<AgentCheckpoint>, CheckpointError> {
    #[derive(Deserialize)]
    struct Legacy {
        version: u32,
        #[serde(flatten)]
        checkpoint: AgentCheckpoint,
    }
    let Some(legacy) = read_json::<Legacy>(path).map_err(|e| e.into_error(path, false))? else { return Ok(None) };
    if legacy.version != LEGACY_VERSION {
        let message = format!("version {} where {LEGACY_VERSION} is expected", legacy.version);
        return Err(CheckpointError::Corrupt { path: path.to_path_buf(), message });
    }
    Ok(Some(legacy.checkpoint))
}

enum ReadError {
    Io(std::io::Error),
    Parse(String),
}

impl ReadError {
    /// `per_file`: a task or framework file, which `--strict=false` may skip.
    fn into_error(self, path: &Path, per_file: bool) -> CheckpointError {
        let path = path.to_path_buf();
        match self {
            ReadError::Io(source) => CheckpointError::Read { path, source },
            ReadError::Parse(message) if per_file => CheckpointError::CorruptFile { path, message },
            ReadError::Parse(message) => CheckpointError::Corrupt { path, message },
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ReadError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| ReadError::Parse(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// The last complete record of a task file. Records end with a newline; what follows the last newline is an
/// append a crash interrupted, ignored. A file without any newline is one record written whole by an agent before
/// task files were logs.
fn read_task_record(path: &Path) -> Result<Option<TaskRecord>, ReadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let last = match bytes.iter().rposition(|&b| b == b'\n') {
        None => &bytes[..],
        Some(end) => &bytes[bytes[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)..end],
    };
    serde_json::from_slice(last).map(Some).map_err(|e| ReadError::Parse(e.to_string()))
}

/// The entries of `dir`, sorted; none when it does not exist.
fn list(dir: &Path) -> Result<std::vec::IntoIter<PathBuf>, CheckpointError> {
    let read_error = |source| CheckpointError::Read { path: dir.to_path_buf(), source };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new().into_iter()),
        Err(e) => return Err(read_error(e)),
    };
    let mut paths = entries.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>().map_err(read_error)?;
    paths.sort();
    Ok(paths.into_iter())
}

/// Writes batches of [`Changes`] under `<work_dir>/meta`.
#[derive(Debug)]
pub struct CheckpointDir {
    meta: PathBuf,
    /// Directories known to exist, so a batch does not ask again.
    existing: HashSet<PathBuf>,
    /// The old single file may still be there: it goes once `agent.info` is written.
    legacy: bool,
    /// How many records each task file this agent wrote holds. A file not listed (written before this agent
    /// started, or by a write that failed) is replaced whole at its next write.
    records: HashMap<PathBuf, u32>,
}

impl CheckpointDir {
    /// The checkpoint of the agent whose work dir is `work_dir`; `<work_dir>/meta` is created if missing.
    pub fn open(work_dir: &Path) -> Result<CheckpointDir, CheckpointError> {
        let meta = meta_dir(work_dir);
        std::fs::create_dir_all(&meta)
            .map_err(|e| CheckpointError::Write { path: meta.clone(), message: e.to_string() })?;
        let legacy = meta.join(LEGACY_FILE).exists();
        Ok(CheckpointDir { existing: HashSet::from([meta.clone()]), meta, legacy, records: HashMap::new() })
    }

    /// Writes `changes`: frameworks, then tasks (written or removed), then removed frameworks, then `agent.info`;
    /// each file atomically, then one fsync per directory touched. When this returns `Ok`, all of it is durable.
    ///
    /// Task records are appended to their files; files written whole go first beside the old ones (`.tmp`). All is
    /// then made durable — for a large batch by one `syncfs` rather than an fsync per file, which made a batch of
    /// 1,000 launches cost seconds — and only then do the new files replace the old ones.
    pub fn write(&mut self, changes: &Changes) -> Result<(), CheckpointError> {
        let mut touched = BTreeSet::new();
        let mut staged = Staged::default();
        let result = self.stage_all(changes, &mut staged, &mut touched);
        let result = result.and_then(|()| staged.commit(&self.meta));
        if result.is_err() {
            // Files whose write may be incomplete are replaced whole next time.
            for path in staged.appended.iter().map(|(p, _)| p).chain(staged.files.iter().map(|(_, p)| p)) {
                self.records.remove(path);
            }
            staged.discard();
        }
        result?;
        for (path, _) in &staged.appended {
            *self.records.entry(path.clone()).or_default() += 1;
        }
        for (_, path) in &staged.renamed {
            self.records.insert(path.clone(), 1);
        }
        for (key, record) in &changes.tasks {
            if record.is_none() {
                let dir = self.framework_dir(&key.framework_id).join(TASKS_DIR);
                let path = dir.join(format!("{}{TASK_SUFFIX}", file_name(&key.task_id)));
                self.records.remove(&path);
                if remove(&path)? {
                    touched.insert(dir);
                }
            }
        }
        for (id, info) in &changes.frameworks {
            if info.is_some() {
                continue;
            }
            let dir = self.framework_dir(id);
            if remove(&dir.join(FRAMEWORK_FILE))? {
                touched.insert(dir.clone());
            }
            // Tidy up when nothing is left; a refused task's updates may still live there.
            for empty in [dir.join(TASKS_DIR), dir] {
                if std::fs::remove_dir(&empty).is_err() {
                    break;
                }
                self.existing.remove(&empty);
                touched.remove(&empty);
                touched.extend(empty.parent().map(Path::to_path_buf));
            }
        }
        for dir in &touched {
            sync_dir(dir)?;
        }
        if self.legacy && self.meta.join(AGENT_FILE).exists() {
            // The layout is complete: the old single file has served its last recovery.
            remove(&self.meta.join(LEGACY_FILE))?;
            sync_dir(&self.meta)?;
            self.legacy = false;
        }
        Ok(())
    }

    /// Writes the new files of `changes` beside the old ones, in the order they replace them.
    fn stage_all(
        &mut self,
        changes: &Changes,
        staged: &mut Staged,
        touched: &mut BTreeSet<PathBuf>,
    ) -> Result<(), CheckpointError> {
        for (id, info) in &changes.frameworks {
            let Some(info) = info else { continue };
            let dir = self.framework_dir(id);
            self.ensure_dir(&dir, touched)?;
            staged.stage(dir.join(FRAMEWORK_FILE), info)?;
            touched.insert(dir);
        }
        for (key, record) in &changes.tasks {
            let Some(record) = record else { continue };
            let dir = self.framework_dir(&key.framework_id).join(TASKS_DIR);
            let path = dir.join(format!("{}{TASK_SUFFIX}", file_name(&key.task_id)));
            if self.records.get(&path).is_some_and(|n| *n < MAX_TASK_RECORDS) {
                staged.append(path, record)?;
                continue;
            }
            self.ensure_dir(&dir, touched)?;
            staged.stage(path, record)?;
            touched.insert(dir);
        }
        if let Some(agent) = &changes.agent {
            staged.stage(self.meta.join(AGENT_FILE), agent)?;
            touched.insert(self.meta.clone());
        }
        Ok(())
    }

    fn framework_dir(&self, framework_id: &str) -> PathBuf {
        self.meta.join(FRAMEWORKS_DIR).join(file_name(framework_id))
    }

    /// Creates `dir` and its missing parents up to `meta`; the parents of what was created must be fsynced.
    fn ensure_dir(&mut self, dir: &Path, touched: &mut BTreeSet<PathBuf>) -> Result<(), CheckpointError> {
        if self.existing.contains(dir) {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.ensure_dir(parent, touched)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {
                touched.extend(dir.parent().map(Path::to_path_buf));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CheckpointError::Write { path: dir.to_path_buf(), message: e.to_string() }),
        }
        self.existing.insert(dir.to_path_buf());
        Ok(())
    }
}

/// From this many files in one write on, one `syncfs` makes them durable rather than an fsync each.
const SYNCFS_FROM: usize = 16;

/// A batch's writes before they are durable: new files beside the ones they replace (`<file>.tmp`), records
/// appended to task files (each with its file, to sync it), and, once committed, the files renamed.
#[derive(Default)]
struct Staged {
    files: Vec<(PathBuf, PathBuf)>,
    appended: Vec<(PathBuf, std::fs::File)>,
    renamed: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    /// Appends `record` as a line to the task file `path`. A failed append is cut off again, so that the file
    /// never holds an incomplete line followed by complete ones.
    fn append(&mut self, path: PathBuf, record: &TaskRecord) -> Result<(), CheckpointError> {
        let write_error = |message: String| CheckpointError::Write { path: path.clone(), message };
        let mut line = serde_json::to_vec(record).map_err(|e| write_error(e.to_string()))?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| write_error(format!("cannot open it to append: {e}")))?;
        let len = f.metadata().map_err(|e| write_error(format!("cannot read its length: {e}")))?.len();
        if let Err(e) = f.write_all(&line) {
            let _ = f.set_len(len);
            return Err(write_error(format!("cannot append to it: {e}")));
        }
        self.appended.push((path, f));
        Ok(())
    }

    fn stage<T: Serialize>(&mut self, path: PathBuf, value: &T) -> Result<(), CheckpointError> {
        let write_error = |message: String| CheckpointError::Write { path: path.clone(), message };
        // One line: a task file goes on with appended lines (JSON readers take the newline as whitespace).
        let mut bytes = serde_json::to_vec(value).map_err(|e| write_error(e.to_string()))?;
        bytes.push(b'\n');
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(|e| write_error(format!("cannot write {}: {e}", tmp.display())))?;
        self.files.push((tmp, path));
        Ok(())
    }

    /// Makes the staged data durable, then renames every file over the one it replaces. A few files are synced
    /// one by one; from [`SYNCFS_FROM`] files on, one `syncfs` of the file system holding `meta` does it for all
    /// (it also flushes whatever else is dirty on that file system, which costs less than hundreds of fsyncs).
    fn commit(&mut self, meta: &Path) -> Result<(), CheckpointError> {
        let fsync_error = |path: &Path, e: std::io::Error| CheckpointError::Write {
            path: path.to_path_buf(),
            message: format!("cannot fsync it: {e}"),
        };
        if self.files.len() + self.appended.len() < SYNCFS_FROM {
            for (tmp, _) in &self.files {
                std::fs::File::open(tmp).and_then(|f| f.sync_data()).map_err(|e| fsync_error(tmp, e))?;
            }
            for (path, f) in &self.appended {
                f.sync_data().map_err(|e| fsync_error(path, e))?;
            }
        } else {
            let flush_error = |e: String| CheckpointError::Write { path: meta.to_path_buf(), message: e };
            let dir = std::fs::File::open(meta).map_err(|e| flush_error(format!("cannot open it: {e}")))?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
                .map_err(|e| flush_error(format!("cannot flush its file system (syncfs): {e}")))?;
        }
        let mut files = std::mem::take(&mut self.files).into_iter();
        while let Some((tmp, path)) = files.next() {
            if let Err(e) = std::fs::rename(&tmp, &path) {
                let message = format!("cannot rename {} over it: {e}", tmp.display());
                // The rest stay staged, for `discard`.
                self.files = std::iter::once((tmp, path.clone())).chain(files).collect();
                return Err(CheckpointError::Write { path, message });
            }
            self.renamed.push((tmp, path));
        }
        Ok(())
    }

    /// Removes what a failed write staged, leaving the old files.
    fn discard(&mut self) {
        for (tmp, _) in self.files.drain(..) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Removes `path`; false when it was not there.
fn remove(path: &Path) -> Result<bool, CheckpointError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CheckpointError::Write { path: path.to_path_buf(), message: format!("cannot remove it: {e}") }),
    }
}

/// Makes the renames and removals in `dir` durable ([`agora_runtime::fs::sync_dir`]).
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    agora_runtime::fs::sync_dir(dir).map_err(|e| CheckpointError::Write {
        path: dir.to_path_buf(),
        message: format!("cannot fsync it: {}", e.io()),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use agora_proto::model::{CommandInfo, Source, TaskStatus};

    use super::*;

    fn task(framework_id: &str, task_id: &str, state: TaskState) -> TaskCheckpoint {
        TaskCheckpoint {
            framework_id: framework_id.into(),
            info: TaskInfo {
                name: task_id.into(),
                task_id: task_id.into(),
                agent_id: "a-S0".into(),
                resources: agora_proto::model::Resources::parse("cpus:0.1").unwrap(),
                command: Some(CommandInfo::shell("sleep 60")),
                container: None,
                health_check: None,
                kill_grace_period: None,
                labels: vec![],
                discovery: None,
                data: vec![],
            },
            state,
            container_id: format!("c-{task_id}"),
            sandbox: PathBuf::from("/w/sandbox"),
            live: true,
            kill_grace_secs: None,
            orphaned: false,
            unhealthy_kill: None,
        }
    }

    fn updates(framework_id: &str, task_id: &str, state: TaskState) -> QueuedUpdates {
        let status = TaskStatus {
            task_id: task_id.into(),
            state,
            reason: None,
            source: Source::Executor,
            message: String::new(),
            uuid: Some(vec![7; 16]),
            timestamp: 1.0,
            healthy: None,
            agent_id: "a-S0".into(),
            unreachable_time: None,
            container_status: None,
        };
        QueuedUpdates {
            task_id: task_id.into(),
            framework_id: framework_id.into(),
            pending: vec![status],
            latest_state: state,
        }
    }

    fn record(framework_id: &str, task_id: &str, state: TaskState) -> Option<TaskRecord> {
        Some(TaskRecord {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
            task: Some(task(framework_id, task_id, state)),
            updates: Some(updates(framework_id, task_id, state)),
        })
    }

    fn framework(id: &str) -> FrameworkInfo {
        let mut f = FrameworkInfo::new("marathon");
        f.id = Some(id.into());
        f
    }

    fn task_path(work_dir: &Path, framework_id: &str, task_id: &str) -> PathBuf {
        meta_dir(work_dir).join(format!("frameworks/{framework_id}/tasks/{task_id}.info"))
    }

    /// Three tasks of framework `f`, one of `g`, written as a fresh agent's first batch.
    fn written(work_dir: &Path) -> CheckpointDir {
        let mut dir = CheckpointDir::open(work_dir).unwrap();
        let mut changes = Changes {
            agent: Some(AgentRecord { version: VERSION, agent_id: Some("a-S0".into()) }),
            ..Changes::default()
        };
        changes.frameworks.insert("f".into(), Some(framework("f")));
        changes.frameworks.insert("g".into(), Some(framework("g")));
        for (f, t) in [("f", "t1"), ("f", "t2"), ("f", "t3"), ("g", "t1")] {
            changes.tasks.insert(TaskKey::new(f, t), record(f, t, TaskState::Starting));
        }
        dir.write(&changes).unwrap();
        dir
    }

    fn lines(path: &Path) -> usize {
        std::fs::read(path).unwrap().iter().filter(|&&b| b == b'\n').count()
    }

    fn state_of(work_dir: &Path, task_id: &str) -> TaskState {
        let r = read(work_dir, true).unwrap().expect("a checkpoint");
        r.checkpoint.tasks.iter().find(|t| t.framework_id == "f" && t.info.task_id == task_id).expect("the task").state
    }

    /// A batch that changes only task `f/<task_id>`, to `state`.
    fn change(task_id: &str, state: TaskState) -> Changes {
        let mut changes = Changes::default();
        changes.tasks.insert(TaskKey::new("f", task_id), record("f", task_id, state));
        changes
    }

    #[test]
    fn a_task_file_is_a_log_of_records_replaced_by_one_when_full_or_after_a_restart() {
        let work = tempfile::tempdir().unwrap();
        let mut dir = written(work.path());
        let path = task_path(work.path(), "f", "t1");
        let first = inode(&path);
        let states = [TaskState::Running, TaskState::Killing, TaskState::Running];
        for n in 2..=MAX_TASK_RECORDS as usize {
            let state = states[n % states.len()];
            dir.write(&change("t1", state)).unwrap();
            assert_eq!((lines(&path), inode(&path)), (n, first), "record {n} is appended");
            assert_eq!(state_of(work.path(), "t1"), state, "the last record counts");
        }
        dir.write(&change("t1", TaskState::Finished)).unwrap();
        assert_eq!(lines(&path), 1, "a full file is replaced by one record");
        assert_ne!(inode(&path), first);
        assert_eq!(state_of(work.path(), "t1"), TaskState::Finished);
        dir.write(&change("t1", TaskState::Running)).unwrap();
        assert_eq!(lines(&path), 2);

        // A restarted agent does not know how long the files are: it replaces each whole at its first write.
        let mut dir = CheckpointDir::open(work.path()).unwrap();
        let before = inode(&path);
        dir.write(&change("t1", TaskState::Killing)).unwrap();
        assert_eq!(lines(&path), 1);
        assert_ne!(inode(&path), before);
        assert_eq!(state_of(work.path(), "t1"), TaskState::Killing);
    }

    #[test]
    fn an_interrupted_append_is_ignored_but_a_corrupt_last_record_is_not() {
        let work = tempfile::tempdir().unwrap();
        let mut dir = written(work.path());
        dir.write(&change("t1", TaskState::Running)).unwrap();
        let path = task_path(work.path(), "f", "t1");
        let complete = std::fs::read(&path).unwrap();

        // A crash in the middle of an append leaves part of a line: the record before it is the checkpoint.
        let torn = serde_json::to_vec(&record("f", "t1", TaskState::Finished)).unwrap();
        let mut bytes = complete.clone();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(state_of(work.path(), "t1"), TaskState::Running);

        // A complete last line that does not parse is damage, not an interrupted write.
        let mut bytes = complete;
        bytes.extend_from_slice(b"{\"framework_id\": 7}\n");
        std::fs::write(&path, &bytes).unwrap();
        let err = read(work.path(), true).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("corrupt"), "{err}");

        // A task file of an agent before the logs (one record, no newline) is read as it is.
        std::fs::write(&path, serde_json::to_vec(&record("f", "t1", TaskState::Killing)).unwrap()).unwrap();
        assert_eq!(state_of(work.path(), "t1"), TaskState::Killing);
    }

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).ino()
    }

    #[test]
    fn ids_become_safe_distinct_bounded_file_names() {
        assert_eq!(file_name("web.1f3e-a_b"), "web.1f3e-a_b");
        assert_eq!(file_name("a/b c"), "a%2Fb%20c");
        assert_eq!(file_name("."), "%2E");
        assert_eq!(file_name(".."), "%2E.");
        assert_eq!(file_name(""), "%");
        assert_eq!(file_name("%2F"), "%252F", "an id that looks encoded is not confused with one that was");
        let long = |tail: &str| format!("{}{tail}", "x".repeat(300));
        let (a, b) = (file_name(&long("a")), file_name(&long("b")));
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME, "{a}");
        assert_ne!(a, b);
        assert_eq!(a, file_name(&long("a")), "the same id, the same name");
    }

    #[test]
    fn a_batch_writes_only_what_changed_removes_what_is_gone_and_recovery_reads_it_back() {
        let work = tempfile::tempdir().unwrap();
        let mut dir = written(work.path());
        let read_back = || read(work.path(), true).unwrap().expect("a checkpoint");
        let r = read_back();
        assert!(!r.legacy && r.skipped.is_empty());
        assert_eq!(r.checkpoint.agent_id.as_deref(), Some("a-S0"));
        assert_eq!(r.checkpoint.frameworks, vec![framework("f"), framework("g")]);
        let ids: Vec<(String, String)> =
            r.checkpoint.tasks.iter().map(|t| (t.framework_id.clone(), t.info.task_id.clone())).collect();
        let pairs = [("f", "t1"), ("f", "t2"), ("f", "t3"), ("g", "t1")].map(|(f, t)| (f.to_string(), t.to_string()));
        assert_eq!(ids, pairs.to_vec(), "the same task id in two frameworks is two tasks");
        assert_eq!(r.checkpoint.updates.len(), 4);

        // One task changes: only its file grows, by one line (appended: the same inode); another one is gone.
        let untouched = [task_path(work.path(), "f", "t1"), task_path(work.path(), "g", "t1")];
        let before: Vec<u64> = untouched.iter().map(|p| inode(p)).collect();
        let changed = task_path(work.path(), "f", "t2");
        let changed_before = inode(&changed);
        let mut changes = Changes::default();
        let mut running = record("f", "t2", TaskState::Running).unwrap();
        running.updates = None;
        changes.tasks.insert(TaskKey::new("f", "t2"), Some(running));
        changes.tasks.insert(TaskKey::new("f", "t3"), None);
        dir.write(&changes).unwrap();
        assert_eq!(untouched.iter().map(|p| inode(p)).collect::<Vec<_>>(), before, "unchanged tasks are not rewritten");
        assert_eq!(inode(&changed), changed_before, "the changed task's record is appended");
        assert_eq!(lines(&changed), 2);
        assert!(untouched.iter().all(|p| lines(p) == 1));
        assert!(!task_path(work.path(), "f", "t3").exists(), "a task that is gone leaves no file");

        let r = read_back();
        let states: Vec<(String, TaskState)> =
            r.checkpoint.tasks.iter().map(|t| (t.info.task_id.clone(), t.state)).collect();
        let expected = [("t1", TaskState::Starting), ("t2", TaskState::Running), ("t1", TaskState::Starting)];
        assert_eq!(states, expected.map(|(t, s)| (t.to_string(), s)).to_vec());
        assert_eq!(r.checkpoint.updates.len(), 2, "t2's updates were all acknowledged, t3 is gone");

        // A framework that is gone, with its last task: its directory goes too.
        let mut changes = Changes::default();
        changes.tasks.insert(TaskKey::new("g", "t1"), None);
        changes.frameworks.insert("g".into(), None);
        dir.write(&changes).unwrap();
        assert!(!meta_dir(work.path()).join("frameworks/g").exists());
        assert_eq!(read_back().checkpoint.frameworks, vec![framework("f")]);
    }

    /// A large batch (made durable by one `syncfs`) is written whole, replaces the old files and leaves no
    /// temporary file.
    #[test]
    fn a_large_batch_is_written_whole() {
        let work = tempfile::tempdir().unwrap();
        let mut dir = written(work.path());
        let ids: Vec<String> = (0..SYNCFS_FROM * 2).map(|i| format!("big{i}")).collect();
        let mut changes = Changes::default();
        for t in &ids {
            changes.tasks.insert(TaskKey::new("f", t), record("f", t, TaskState::Running));
        }
        changes.tasks.insert(TaskKey::new("f", "t1"), record("f", "t1", TaskState::Running));
        dir.write(&changes).unwrap();
        let r = read(work.path(), true).unwrap().expect("a checkpoint");
        let running = r.checkpoint.tasks.iter().filter(|t| t.state == TaskState::Running).count();
        assert_eq!(running, ids.len() + 1, "every new task and the changed one");
        assert_eq!(r.checkpoint.tasks.len(), ids.len() + 4);
        let tasks_dir = meta_dir(work.path()).join("frameworks/f/tasks");
        let leftovers: Vec<_> = std::fs::read_dir(&tasks_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !n.to_string_lossy().ends_with(TASK_SUFFIX))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file left: {leftovers:?}");
    }

    #[test]
    fn odd_ids_round_trip_through_their_file_names() {
        let work = tempfile::tempdir().unwrap();
        let mut dir = CheckpointDir::open(work.path()).unwrap();
        let mut changes =
            Changes { agent: Some(AgentRecord { version: VERSION, agent_id: None }), ..Changes::default() };
        // A refused run_task with a '/' in its id has a TASK_FAILED to deliver and no task.
        let mut refused = record("fw/1", "../x", TaskState::Failed).unwrap();
        refused.task = None;
        changes.tasks.insert(TaskKey::new("fw/1", "../x"), Some(refused.clone()));
        dir.write(&changes).unwrap();
        assert!(meta_dir(work.path()).join("frameworks/fw%2F1/tasks/%2E.%2Fx.info").is_file());
        let r = read(work.path(), true).unwrap().unwrap();
        assert_eq!(r.checkpoint.updates, vec![refused.updates.unwrap()]);
        assert!(r.checkpoint.tasks.is_empty());
    }

    #[test]
    fn a_corrupt_or_partial_task_file_stops_recovery_naming_it_unless_strict_is_off() {
        let work = tempfile::tempdir().unwrap();
        written(work.path());
        let partial = task_path(work.path(), "f", "t2");
        let bytes = std::fs::read(&partial).unwrap();
        std::fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();

        let err = read(work.path(), true).unwrap_err().to_string();
        assert!(err.contains(&partial.display().to_string()) && err.contains("corrupt"), "{err}");
        assert!(err.contains("--strict=false"), "says how to start anyway: {err}");

        let r = read(work.path(), false).unwrap().unwrap();
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].to_string().contains(&partial.display().to_string()));
        let ids: Vec<&str> = r.checkpoint.tasks.iter().map(|t| t.info.task_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t3", "t1"], "the rest is recovered");

        // A file moved under another task's name is refused too.
        std::fs::copy(task_path(work.path(), "f", "t1"), &partial).unwrap();
        let err = read(work.path(), true).unwrap_err().to_string();
        assert!(err.contains(&partial.display().to_string()) && err.contains("task 't1' of framework 'f'"), "{err}");
    }

    #[test]
    fn a_corrupt_agent_file_always_stops_recovery_and_leftover_temporary_files_are_ignored() {
        let work = tempfile::tempdir().unwrap();
        written(work.path());
        // A write a crash interrupted leaves a temporary file; the task's previous file is the checkpoint.
        std::fs::write(task_path(work.path(), "f", "t1").with_extension("tmp"), b"{\"framework_id\":").unwrap();
        assert_eq!(read(work.path(), true).unwrap().unwrap().checkpoint.tasks.len(), 4);

        let agent = meta_dir(work.path()).join(AGENT_FILE);
        std::fs::write(&agent, br#"{"version": 9, "agent_id": null}"#).unwrap();
        let err = read(work.path(), false).unwrap_err().to_string();
        assert!(err.contains(&agent.display().to_string()) && err.contains("version 9"), "{err}");
        std::fs::remove_file(&agent).unwrap();
        let err = read(work.path(), false).unwrap_err().to_string();
        assert!(err.contains("agent.info") && err.contains("missing"), "{err}");
        std::fs::remove_dir_all(meta_dir(work.path()).join(FRAMEWORKS_DIR)).unwrap();
        assert!(read(work.path(), true).unwrap().is_none(), "a fresh agent");
    }

    #[test]
    fn the_single_file_checkpoint_is_read_and_removed_once_the_new_layout_is_complete() {
        let work = tempfile::tempdir().unwrap();
        let old = AgentCheckpoint {
            agent_id: Some("a-S0".into()),
            frameworks: vec![framework("f")],
            tasks: vec![task("f", "t1", TaskState::Running)],
            updates: vec![updates("f", "t1", TaskState::Running)],
        };
        std::fs::create_dir_all(meta_dir(work.path())).unwrap();
        std::fs::write(legacy_path(work.path()), legacy_bytes(&old)).unwrap();
        let r = read(work.path(), true).unwrap().unwrap();
        assert!(r.legacy);
        assert_eq!(r.checkpoint, old);

        // The agent rewrites everything (what `AgentCore::mark_all_changed` yields); the old file goes last.
        let mut dir = CheckpointDir::open(work.path()).unwrap();
        let mut changes = Changes::default();
        changes.frameworks.insert("f".into(), Some(framework("f")));
        changes.tasks.insert(TaskKey::new("f", "t1"), record("f", "t1", TaskState::Running));
        dir.write(&changes).unwrap();
        assert!(legacy_path(work.path()).exists(), "kept until agent.info marks the new layout complete");
        assert!(read(work.path(), true).unwrap().unwrap().legacy, "an interrupted migration starts again");
        changes.agent = Some(AgentRecord { version: VERSION, agent_id: old.agent_id.clone() });
        dir.write(&changes).unwrap();
        assert!(!legacy_path(work.path()).exists());
        let r = read(work.path(), true).unwrap().unwrap();
        assert!(!r.legacy);
        assert_eq!(r.checkpoint, old);

        std::fs::write(legacy_path(work.path()), b"{\"version\": 1, \"tasks\": [").unwrap();
        std::fs::remove_file(meta_dir(work.path()).join(AGENT_FILE)).unwrap();
        let err = read(work.path(), true).unwrap_err().to_string();
        assert!(err.contains("agent.json") && err.contains("corrupt"), "{err}");
    }
}
