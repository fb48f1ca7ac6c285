//! The per-container monitor (`agora-container-monitor <checkpoint dir>`), which outlives the agent.
//!
//! 1. `setsid`, so signals to the agent's process group or session never reach it; records its pid in `monitor.pid`.
//! 2. Reads `launch.json`, creates and starts the container with libcontainer from `bundle/config.json` (stdout and
//!    stderr to the sandbox's files); the container's init is its direct child.
//! 3. Records init's pid in `pid`, prints `started <pid>` on stdout (the agent waits for that line; any failure is
//!    printed as `error <message>` instead), and closes stdout.
//! 4. Waits for init; reads the memory cgroup's `oom_kill` count before anything is removed; writes
//!    `termination.json` atomically; deletes the container (its cgroups and libcontainer state); unmounts the
//!    container's root (`<dir>/root`, [`crate::containerizer::rootfs`]) and exits 0.
//!
//! It never reads the agent's state and the agent never needs it alive: if the agent restarts, it finds the record
//! (the task ended) or a live monitor pid (still running). The monitor holds no lock and touches only its directory (and the mounts under it).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};

use agora_runtime::{Durability, write_atomically};

use crate::containerizer::{MonitorLaunch, MonitorRecord, MonitorReport, monitor_files as files, rootfs};

/// Why the container could not be created or started (reported to the agent as `error <message>`).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot parse {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot use state root {path}: {source}")]
    StateRoot { path: PathBuf, source: Box<libcontainer::error::LibcontainerError> },
    #[error("invalid container id {container_id}: {source}")]
    Id { container_id: String, source: Box<libcontainer::error::LibcontainerError> },
    #[error("cannot create container {container_id}: {source}")]
    Create { container_id: String, source: Box<libcontainer::error::LibcontainerError> },
    #[error("cannot start container {container_id}: {source}")]
    Start { container_id: String, source: Box<libcontainer::error::LibcontainerError> },
    #[error("container {0} has no pid")]
    NoPid(String),
    #[error(transparent)]
    Write(#[from] agora_runtime::WriteError),
}

/// Runs the monitor for the container checkpointed in `dir`; returns the process exit code.
pub fn run(dir: &Path) -> i32 {
    let _ = nix::unistd::setsid();
    let pid_file = dir.join(files::MONITOR_PID);
    let _ = write_atomically(&pid_file, std::process::id().to_string().as_bytes(), Durability::ProcessCrash);
    let started = start(dir);
    let mut stdout = std::io::stdout();
    let (pid, launch) = match started {
        Ok(ok) => ok,
        Err(e) => {
            let _ = writeln!(stdout, "{}", MonitorReport::Failed(e.to_string()).line());
            eprintln!("agora-container-monitor: {e}");
            return 1;
        }
    };
    let _ = writeln!(stdout, "{}", MonitorReport::Started(pid).line());
    let _ = stdout.flush();
    // The agent may be gone later; nothing more goes to its pipe.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }
    let status = loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(WaitStatus::Exited(_, code)) => break (Some(code), None),
            Ok(WaitStatus::Signaled(_, sig, _)) => break (None, Some(sig as i32)),
            Ok(_) => continue,
            Err(e) => {
                eprintln!("agora-container-monitor: cannot wait for pid {pid}: {e}");
                break (None, None);
            }
        }
    };
    let record = MonitorRecord { exit_code: status.0, signal: status.1, oom_kills: oom_kills(&launch.cgroup_path) };
    let text = serde_json::to_vec(&record).unwrap_or_default();
    if let Err(e) = write_atomically(&dir.join(files::TERMINATION), &text, Durability::ProcessCrash) {
        eprintln!("agora-container-monitor: {e}");
    }
    delete(&launch);
    // The root is needed only while the container runs; unmounting it here, not only when the agent destroys the
    // container, leaves nothing mounted when the agent is gone for good (killed and never restarted).
    if let Err(e) = rootfs::unmount_under(&dir.join(rootfs::ROOT_DIR)) {
        eprintln!("agora-container-monitor: {e}");
    }
    0
}

fn start(dir: &Path) -> Result<(i32, MonitorLaunch), StartError> {
    let launch_path = dir.join(files::LAUNCH);
    let text = std::fs::read(&launch_path).map_err(|source| StartError::Read { path: launch_path.clone(), source })?;
    let launch: MonitorLaunch =
        serde_json::from_slice(&text).map_err(|source| StartError::Parse { path: launch_path.clone(), source })?;
    let open = |path: PathBuf| -> Result<OwnedFd, StartError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| StartError::Open { path, source })?;
        Ok(file.into())
    };
    let null: OwnedFd = std::fs::File::open("/dev/null")
        .map_err(|source| StartError::Open { path: "/dev/null".into(), source })?
        .into();
    let id = || launch.container_id.clone();
    let built = ContainerBuilder::new(launch.container_id.clone(), SyscallType::default())
        .with_root_path(launch.state_root.clone())
        .map_err(|source| StartError::StateRoot { path: launch.state_root.clone(), source: Box::new(source) })?
        .with_stdin(null)
        .with_stdout(open(launch.sandbox.join("stdout"))?)
        .with_stderr(open(launch.sandbox.join("stderr"))?)
        .validate_id()
        .map_err(|source| StartError::Id { container_id: id(), source: Box::new(source) })?
        .as_init(&launch.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            // A failed build may leave its state behind ("creating"), and cgroups.
            delete(&launch);
            return Err(StartError::Create { container_id: id(), source: Box::new(e) });
        }
    };
    if let Err(source) = container.start() {
        delete(&launch);
        return Err(StartError::Start { container_id: id(), source: Box::new(source) });
    }
    let pid = container.pid().map(|p| p.as_raw()).ok_or_else(|| StartError::NoPid(id()))?;
    write_atomically(&dir.join(files::INIT_PID), pid.to_string().as_bytes(), Durability::ProcessCrash)?;
    Ok((pid, launch))
}

/// The memory cgroup's `oom_kill` counter: v1 `memory.oom_control`, v2 `memory.events`.
fn oom_kills(cgroup_path: &str) -> u64 {
    let rel = cgroup_path.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory").join(rel).join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| t.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

/// Deletes the container (killing anything left, removing its cgroups and state). When its state is gone (its
/// checkpoint directory was removed under it), the cgroups are still removed.
fn delete(launch: &MonitorLaunch) {
    let state = launch.state_root.join(&launch.container_id);
    if state.exists() {
        match libcontainer::container::Container::load(state) {
            Ok(mut c) => {
                let _ = c.refresh_status();
                match c.delete(true) {
                    Ok(()) => return,
                    Err(e) => {
                        eprintln!("agora-container-monitor: cannot delete container {}: {e}", launch.container_id)
                    }
                }
            }
            Err(e) => eprintln!("agora-container-monitor: cannot load container {}: {e}", launch.container_id),
        }
    }
    let config = libcgroups::common::CgroupConfig {
        cgroup_path: launch.cgroup_path.clone().into(),
        systemd_cgroup: false,
        container_name: launch.container_id.clone(),
    };
    if let Ok(manager) = libcgroups::common::create_cgroup_manager(config) {
        use libcgroups::common::CgroupManager;
        if let Err(e) = manager.remove() {
            eprintln!("agora-container-monitor: cannot remove cgroup {}: {e}", launch.cgroup_path);
        }
    }
}
