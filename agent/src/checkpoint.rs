//! What the agent checkpoints under its work dir so a restarted agent carries on (Mesos's `meta` directory):
//! `<work_dir>/meta/agent.json` holds the agent id, the frameworks, the tasks with their container ids and
//! sandboxes, and every unacknowledged status update. The containers' own checkpoints (monitor pids, exit records)
//! live beside them under `<work_dir>/containers/` (see [`crate::containerizer::LibcontainerContainerizer`]).
//!
//! Writes are atomic (a temporary file, fsync, rename), so a `kill -9` at any moment leaves the old or the new
//! checkpoint, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use agora_proto::model::{FrameworkInfo, TaskInfo, TaskState};
use serde::{Deserialize, Serialize};

use crate::status_updates::QueuedUpdates;

/// The version of the checkpoint format; a checkpoint of another version is refused.
pub const VERSION: u32 = 1;

/// The agent's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCheckpoint {
    pub version: u32,
    pub agent_id: Option<String>,
    pub frameworks: Vec<FrameworkInfo>,
    pub tasks: Vec<TaskCheckpoint>,
    pub updates: Vec<QueuedUpdates>,
}

/// One task the agent tracks, identified by `framework_id` and `info.task_id` together (task ids are unique only per
/// framework; a list, as JSON map keys cannot be pairs).
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

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "checkpoint {path} is corrupt ({message}); move it away to start this agent afresh (its tasks are then lost)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write checkpoint {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// `<work_dir>/meta/agent.json`.
pub fn agent_checkpoint_path(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("agent.json")
}

/// Reads the checkpoint; `None` when there is none (a fresh agent).
pub fn read(path: &Path) -> Result<Option<AgentCheckpoint>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Read { path: path.to_path_buf(), source }),
    };
    let cp: AgentCheckpoint = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: path.to_path_buf(), message: e.to_string() })?;
    if cp.version != VERSION {
        let message = format!("version {} where {VERSION} is expected", cp.version);
        return Err(CheckpointError::Corrupt { path: path.to_path_buf(), message });
    }
    Ok(Some(cp))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a process killed at any moment leaves the old
/// or the new content. `durable` also fsyncs the data before the rename, for what must survive a machine crash (the
/// agent's checkpoint); a container's own files need not, as its container dies with the machine. The directory must
/// exist: a work dir that vanished is not silently recreated.
pub fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| if durable { f.sync_data() } else { Ok(()) })
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_none_and_garbage_is_corrupt_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = agent_checkpoint_path(dir.path());
        assert!(read(&path).unwrap().is_none());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let cp = AgentCheckpoint {
            version: VERSION,
            agent_id: Some("a-S1".into()),
            frameworks: vec![],
            tasks: vec![],
            updates: vec![],
        };
        write_atomically(&path, &serde_json::to_vec(&cp).unwrap(), true).unwrap();
        assert_eq!(read(&path).unwrap(), Some(cp));
        std::fs::write(&path, "{not json").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("corrupt") && err.contains("agent.json"), "{err}");
    }
}
