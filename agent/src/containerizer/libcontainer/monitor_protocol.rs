//! What the agent and a container's monitor (`agora-container-monitor`, [`crate::monitor`]) tell each other, all
//! through files in the container's checkpoint directory `<run root>/<container id>/` ([`files`]) and one line on
//! the monitor's stdout:
//!
//! - the agent writes `launch.json` ([`MonitorLaunch`]) and `bundle/config.json` (the OCI spec), then starts the
//!   monitor with the directory as its argument;
//! - the monitor records its pid in `monitor.pid`, the container's init pid in `pid`, and reports one line on stdout:
//!   `started <pid>` or `error <message>` ([`MonitorReport`]);
//! - when init ends, the monitor writes `termination.json` ([`MonitorRecord`]), which the agent (or a restarted
//!   agent) turns into the task's [`Termination`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::containerizer::{Limitation, Termination};

/// The monitor's file name, looked for beside the running executable (or `$AGORA_CONTAINER_MONITOR`).
pub const MONITOR_BINARY: &str = "agora-container-monitor";

/// The files of one container's checkpoint directory.
pub mod files {
    pub const LAUNCH: &str = "launch.json";
    pub const BUNDLE: &str = "bundle";
    pub const STATE: &str = "state";
    pub const MONITOR_PID: &str = "monitor.pid";
    pub const INIT_PID: &str = "pid";
    pub const TERMINATION: &str = "termination.json";
    pub const MONITOR_LOG: &str = "monitor.log";
}

/// What the monitor reads from `launch.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MonitorLaunch {
    pub container_id: String,
    pub task_id: String,
    pub framework_id: String,
    pub sandbox: PathBuf,
    pub bundle: PathBuf,
    /// libcontainer's state root (the container's state is `<state_root>/<container id>`).
    pub state_root: PathBuf,
    pub cgroup_path: String,
    pub mem_limit_bytes: Option<u64>,
    pub disk_limit_bytes: Option<u64>,
    pub cpus: Option<f64>,
}

/// What the monitor writes to `termination.json` when the container's init has ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct MonitorRecord {
    /// The exit code, or `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The memory cgroup's `oom_kill` counter at the end.
    pub oom_kills: u64,
}

impl MonitorRecord {
    pub fn termination(&self, mem_limit_bytes: Option<u64>) -> Termination {
        if self.oom_kills > 0 {
            return Termination::Limited(Limitation::Memory { limit_bytes: mem_limit_bytes.unwrap_or_default() });
        }
        match (self.exit_code, self.signal) {
            (Some(code), _) => Termination::Exited(code),
            (None, Some(sig)) => Termination::Signaled(sig),
            (None, None) => Termination::Exited(-1),
        }
    }
}

/// The one line the monitor prints on its stdout once the container started, or could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorReport {
    /// `started <pid>`: the container's init runs as `pid`.
    Started(i32),
    /// `error <message>`: the container could not be created or started.
    Failed(String),
}

impl MonitorReport {
    /// The line, newline excluded (a message's own newlines become spaces).
    pub fn line(&self) -> String {
        match self {
            MonitorReport::Started(pid) => format!("started {pid}"),
            MonitorReport::Failed(message) => format!("error {}", message.replace('\n', " ")),
        }
    }

    /// The report a line holds; `None` when it holds none (the monitor died before printing one).
    pub fn parse(line: &str) -> Option<MonitorReport> {
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("started ") {
            return pid.trim().parse().ok().map(MonitorReport::Started);
        }
        line.strip_prefix("error ").map(|m| MonitorReport::Failed(m.to_string()))
    }
}

/// A checkpoint file that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot parse {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// Reads one of the JSON files ([`MonitorLaunch`], [`MonitorRecord`]).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RecordError> {
    let text = std::fs::read(path).map_err(|source| RecordError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&text).map_err(|source| RecordError::Parse { path: path.to_path_buf(), source })
}

/// The pid recorded in `file` (`monitor.pid`, `pid`), if it holds one.
pub fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok().and_then(|t| t.trim().parse().ok())
}

/// True while `pid` is a live (not zombie) process running the monitor.
pub fn monitor_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("Z");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    state != "Z" && String::from_utf8_lossy(&cmdline).contains(MONITOR_BINARY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_terminations_oom_first() {
        let r = MonitorRecord { exit_code: Some(0), signal: None, oom_kills: 1 };
        assert_eq!(r.termination(Some(32 << 20)), Termination::Limited(Limitation::Memory { limit_bytes: 32 << 20 }));
        let r = MonitorRecord { exit_code: None, signal: Some(9), oom_kills: 0 };
        assert_eq!(r.termination(None), Termination::Signaled(9));
        let r = MonitorRecord { exit_code: Some(3), signal: None, oom_kills: 0 };
        assert_eq!(r.termination(None), Termination::Exited(3));
        assert!(Limitation::Memory { limit_bytes: 32 << 20 }.message().contains("32MB"));
    }

    #[test]
    fn the_report_line_round_trips() {
        for report in [MonitorReport::Started(4242), MonitorReport::Failed("cannot create container c1: no".into())] {
            assert_eq!(MonitorReport::parse(&format!("{}\n", report.line())), Some(report));
        }
        assert_eq!(MonitorReport::Failed("a\nb".into()).line(), "error a b");
        assert_eq!(MonitorReport::parse(""), None);
        assert_eq!(MonitorReport::parse("started x"), None);
    }

    #[test]
    fn unreadable_records_name_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::TERMINATION);
        let e = read_json::<MonitorRecord>(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot read {}", path.display())), "{e}");
        std::fs::write(&path, "{").unwrap();
        let e = read_json::<MonitorRecord>(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot parse {}", path.display())), "{e}");
        assert_eq!(read_pid(&path), None);
        std::fs::write(&path, "17\n").unwrap();
        assert_eq!(read_pid(&path), Some(17));
    }
}
