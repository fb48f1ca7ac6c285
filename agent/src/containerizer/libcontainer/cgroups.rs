//! A container's cgroups: signalling every process in them, with the one rule that makes a pid namespace behave like
//! a host process group (its init, pid 1 inside, ignores signals it has no handler for); reading their usage; and
//! removing them when the container is gone and its monitor could not.

use std::path::{Path, PathBuf};

use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use tracing::debug;

use super::monitor_protocol::{files, read_pid};
use crate::containerizer::ContainerError;

/// A container's cgroups cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot open cgroup {cgroup_path}: {source}")]
    Open { cgroup_path: String, source: libcgroups::common::CreateCgroupSetupError },
    #[error("cannot read cgroup {cgroup_path}: {source}")]
    Read { cgroup_path: String, source: libcgroups::common::AnyManagerError },
}

/// The manager of the container's cgroups (`cgroup_path` in every hierarchy).
pub fn cgroup_manager(container_id: &str, cgroup_path: &str) -> Result<AnyCgroupManager, CgroupError> {
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup_path),
        systemd_cgroup: false,
        container_name: container_id.to_string(),
    })
    .map_err(|source| CgroupError::Open { cgroup_path: cgroup_path.to_string(), source })
}

/// The cgroups' statistics (CPU times, memory).
pub fn cgroup_stats(container_id: &str, cgroup_path: &str) -> Result<libcgroups::stats::Stats, CgroupError> {
    cgroup_manager(container_id, cgroup_path)?
        .stats()
        .map_err(|source| CgroupError::Read { cgroup_path: cgroup_path.to_string(), source })
}

/// The processes of the container's cgroups.
fn cgroup_pids(container_id: &str, cgroup_path: &str) -> Result<Vec<nix::unistd::Pid>, CgroupError> {
    cgroup_manager(container_id, cgroup_path)?
        .get_all_pids()
        .map_err(|source| CgroupError::Read { cgroup_path: cgroup_path.to_string(), source })
}

/// How `pid` disposes of `signal`: (caught, ignored), from `SigCgt` and `SigIgn` in `/proc/<pid>/status`.
fn disposition(pid: i32, signal: Signal) -> (bool, bool) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (false, false) };
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .unwrap_or(0)
    };
    let bit = 1u64 << (signal as i32 - 1);
    (mask("SigCgt:") & bit != 0, mask("SigIgn:") & bit != 0)
}

/// Sends `signal` to every process of the container's cgroup. The container's init is pid 1 of its namespace, which
/// the kernel shields from signals it has no handler for; so when init neither catches nor ignores `signal` it gets
/// SIGKILL, which is what the default action of SIGTERM/SIGINT/SIGHUP would have done to it outside a pid namespace.
/// An init that ignores `signal` keeps ignoring it (the kill escalates to SIGKILL after the grace period).
pub fn signal_container(
    container_id: &str,
    dir: &Path,
    cgroup_path: &str,
    signal: Signal,
) -> Result<(), ContainerError> {
    let init = read_pid(&dir.join(files::INIT_PID));
    let pids = match cgroup_pids(container_id, cgroup_path) {
        Ok(pids) => pids,
        Err(e) => {
            debug!(container_id, error = %e, "cannot list the container's processes; it has ended");
            return Ok(());
        }
    };
    for pid in pids {
        let sig = match (Some(pid.as_raw()) == init && signal != Signal::SIGKILL, disposition(pid.as_raw(), signal)) {
            (true, (false, true)) => continue,
            (true, (false, false)) => Signal::SIGKILL,
            _ => signal,
        };
        match nix::sys::signal::kill(pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => return Err(ContainerError::Signal { container_id: container_id.to_string(), source }),
        }
    }
    Ok(())
}

/// Kills every process left in the container's cgroups and removes them (best effort: the container is going).
pub fn kill_and_remove_cgroups(container_id: &str, cgroup_path: &str) {
    let Ok(m) = cgroup_manager(container_id, cgroup_path) else { return };
    if let Ok(pids) = m.get_all_pids() {
        for pid in pids {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
    }
    let _ = m.remove();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_handles_nothing_neither_catches_nor_ignores() {
        // This test process has no SIGUSR2 handler; it has never been told to ignore it.
        assert_eq!(disposition(std::process::id() as i32, Signal::SIGUSR2), (false, false));
        assert_eq!(disposition(i32::MAX, Signal::SIGTERM), (false, false), "a process that is gone");
    }
}
