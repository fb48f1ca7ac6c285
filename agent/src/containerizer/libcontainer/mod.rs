//! `--isolation=libcontainer`: every task in a container of its own, built in-process by youki's `libcontainer`
//! inside a small per-container monitor process (`agora-container-monitor`, [`crate::monitor`]).
//!
//! The agent writes the container's checkpoint directory `<run root>/<container id>/` — `launch.json` (what the
//! monitor needs) and `bundle/config.json` (the OCI spec) — then starts the monitor, which detaches (`setsid`),
//! creates and starts the container, reports `started <pid>` on its stdout and waits for the container's init (a
//! direct child of it). When init ends the monitor records `termination.json` (exit status and the memory cgroup's
//! `oom_kill` count, read before the cgroup goes), deletes the container (cgroups, state) and exits. The monitor
//! outlives the agent, so after a restart [`LibcontainerContainerizer::recover`] finds each container running,
//! ended (with its real status) or lost.
//!
//! Isolation: pid, mount, ipc, uts and cgroup namespaces (host network); the host filesystem read-only through a
//! skeleton root (`<work dir>/hostskel`: the host's merged-usr symlinks, `/usr` and `/etc` bound read-only) or a
//! prepared `container.rootfs`; the sandbox read-write at `/mnt/sandbox`; a private `/tmp`; no_new_privs and the
//! runtime's minimal capabilities; `ContainerInfo.volumes` bound in as [`volumes`] plans them. cgroups: CPU shares
//! and CFS quota, a hard memory limit (swap included), a pids limit. `disk` is measured every `disk_watch_interval`
//! (`du`) and a task over it is killed.
//!
//! This file is the [`Containerizer`] itself (setup, launch, wait, kill, destroy, recover, usage); the pieces it is
//! built from: [`oci`] (the container's OCI spec), [`hostskel`] (the host skeleton root), [`user`] (uids from
//! the container's passwd, the sandbox handed to the task's user), [`cgroups`] (signals, usage, removal),
//! [`monitor_protocol`] (the files and line the agent and monitor exchange) and [`check`] (health check commands
//! inside the container).

mod cgroups;
mod check;
mod hostskel;
pub mod monitor_protocol;
mod oci;
mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libcgroups::common::CgroupSetup;
use nix::sys::signal::Signal;
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;
use tracing::warn;

use super::spec::LaunchSpec;
use super::volumes::{self, VolumeError};
use super::{
    ContainerError, Containerizer, Limitation, Recovered, RecoveredContainer, Termination, Usage, disk, rootfs,
};
use cgroups::{CgroupError, cgroup_stats, signal_container};
use hostskel::HostskelError;
pub use monitor_protocol::{MONITOR_BINARY, MonitorLaunch, MonitorRecord, MonitorReport, files};
use monitor_protocol::{RecordError, monitor_alive, read_json, read_pid};
pub use oci::CFS_PERIOD_US;
pub use user::{UserError, lookup_user};

/// The cgroup parent of every container: `/agora/<container id>` in each hierarchy.
pub const CGROUP_PARENT: &str = "/agora";

/// Why libcontainer cannot be used here, or a container could not be launched; each names the path or id.
#[derive(Debug, thiserror::Error)]
pub enum LibcontainerError {
    #[error(
        "--isolation=libcontainer needs root (cgroups and namespaces); run as root, or use --isolation=process for \
         development"
    )]
    NotRoot,
    #[error("--isolation=libcontainer needs cgroups mounted at /sys/fs/cgroup: {0}")]
    NoCgroups(#[source] libcgroups::common::GetCgroupSetupError),
    #[error("cannot find the running executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    #[error(
        "cannot find {MONITOR_BINARY} (looked at {}); build it with `cargo build -p agora-agent --bins` or set \
         AGORA_CONTAINER_MONITOR",
        looked_at(.0)
    )]
    NoMonitor(Vec<PathBuf>),
    #[error("monitor {0} does not exist")]
    MonitorMissing(PathBuf),
    #[error(transparent)]
    Hostskel(#[from] HostskelError),
    #[error("rootfs {0} is not a directory on this agent")]
    RootfsNotDir(PathBuf),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("cannot build the OCI spec: {0}")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error("cannot write the OCI spec {path}: {source}")]
    SaveSpec { path: PathBuf, source: oci_spec::OciSpecError },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error("cannot write {path}: {source}")]
    Encode { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Write(#[from] agora_runtime::WriteError),
    #[error("cannot run the monitor {path}: {source}")]
    Monitor { path: PathBuf, source: std::io::Error },
    /// What the monitor reported (`error <message>`) or logged before it died.
    #[error("{0}")]
    MonitorFailed(String),
    #[error("the monitor exited before starting the container")]
    MonitorExited,
    #[error("the containerizer's state is poisoned")]
    Poisoned,
}

fn looked_at(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Why a container's end could not be learnt.
#[derive(Debug, thiserror::Error)]
enum WaitError {
    #[error("cannot wait for the monitor: {0}")]
    Monitor(#[source] std::io::Error),
    #[error("the monitor ended ({status}) without recording the task's end; see {}", log.display())]
    NoRecord { status: std::process::ExitStatus, log: PathBuf },
    #[error("its monitor (pid {pid}) is gone without recording the task's end")]
    MonitorGone { pid: i32 },
    #[error(transparent)]
    Record(RecordError),
}

/// How the containerizer is set up.
#[derive(Debug, Clone)]
pub struct LibcontainerOptions {
    /// Container checkpoints: `<run_root>/<container id>/`.
    pub run_root: PathBuf,
    /// The skeleton root of host-filesystem containers.
    pub hostskel: PathBuf,
    /// The `agora-container-monitor` executable.
    pub monitor: PathBuf,
    /// How often sandboxes are measured against `disk`.
    pub disk_watch_interval: Duration,
}

impl LibcontainerOptions {
    /// Checkpoints under `<work_dir>/containers`, the skeleton at `<work_dir>/hostskel`, the monitor found with
    /// [`find_monitor`], disk measured every 15 s (Mesos's `--container_disk_watch_interval`).
    pub fn for_work_dir(work_dir: &Path) -> Result<LibcontainerOptions, LibcontainerError> {
        Ok(LibcontainerOptions {
            run_root: work_dir.join("containers"),
            hostskel: work_dir.join("hostskel"),
            monitor: find_monitor()?,
            disk_watch_interval: Duration::from_secs(15),
        })
    }
}

/// `$AGORA_CONTAINER_MONITOR`, else `agora-container-monitor` beside the running executable or one directory up
/// (test binaries live in `target/debug/deps`).
pub fn find_monitor() -> Result<PathBuf, LibcontainerError> {
    if let Some(path) = std::env::var_os("AGORA_CONTAINER_MONITOR") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(LibcontainerError::CurrentExe)?;
    let dirs = exe.ancestors().skip(1).take(2);
    let candidates: Vec<PathBuf> = dirs.map(|d| d.join(MONITOR_BINARY)).collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or(LibcontainerError::NoMonitor(candidates))
}

/// Why libcontainer cannot work here, if it cannot: not root, or no cgroup hierarchy.
pub fn libcontainer_unavailable() -> Option<LibcontainerError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some(LibcontainerError::NotRoot);
    }
    libcgroups::common::get_cgroup_setup().err().map(LibcontainerError::NoCgroups)
}

enum Monitor {
    /// Started by this agent: its child.
    Child(Child),
    /// Found after a restart: poll its pid and the termination record.
    Adopted(i32),
}

struct Entry {
    dir: PathBuf,
    launch: MonitorLaunch,
    /// Taken by `wait`.
    monitor: Option<Monitor>,
    /// Set by the disk watcher before it kills the container.
    limitation: Arc<Mutex<Option<Limitation>>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// Runs tasks in libcontainer containers behind monitor processes.
pub struct LibcontainerContainerizer {
    options: LibcontainerOptions,
    containers: Mutex<HashMap<String, Entry>>,
    cgroup_v2: bool,
}

impl LibcontainerContainerizer {
    /// Checks that libcontainer can work here and prepares the run root and the host skeleton.
    pub fn new(options: LibcontainerOptions) -> Result<LibcontainerContainerizer, LibcontainerError> {
        if let Some(why) = libcontainer_unavailable() {
            return Err(why);
        }
        if !options.monitor.is_file() {
            return Err(LibcontainerError::MonitorMissing(options.monitor.clone()));
        }
        std::fs::create_dir_all(&options.run_root)
            .map_err(|source| LibcontainerError::Create { path: options.run_root.clone(), source })?;
        hostskel::prepare(&options.hostskel)?;
        let cgroup_v2 = matches!(libcgroups::common::get_cgroup_setup(), Ok(CgroupSetup::Unified));
        Ok(LibcontainerContainerizer { options, containers: Mutex::new(HashMap::new()), cgroup_v2 })
    }

    fn with_entry<T>(&self, container_id: &str, f: impl FnOnce(&mut Entry) -> T) -> Result<T, ContainerError> {
        let mut containers = self.containers.lock().map_err(|_| ContainerError::Unknown(container_id.to_string()))?;
        let entry =
            containers.get_mut(container_id).ok_or_else(|| ContainerError::Unknown(container_id.to_string()))?;
        Ok(f(entry))
    }

    fn watch_disk(&self, container_id: &str, entry: &mut Entry) {
        let Some(limit) = entry.launch.disk_limit_bytes else { return };
        let (sandbox, dir, cgroup) =
            (entry.launch.sandbox.clone(), entry.dir.clone(), entry.launch.cgroup_path.clone());
        let (limitation, interval, id) =
            (entry.limitation.clone(), self.options.disk_watch_interval, container_id.to_string());
        entry.watcher = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let s = sandbox.clone();
                let used = tokio::task::spawn_blocking(move || disk::du_bytes(&s)).await.unwrap_or(0);
                if used > limit {
                    warn!(container_id = %id, used, limit, "sandbox exceeds its disk; killing the container");
                    if let Ok(mut l) = limitation.lock() {
                        *l = Some(Limitation::Disk { limit_bytes: limit, used_bytes: used });
                    }
                    let _ = signal_container(&id, &dir, &cgroup, Signal::SIGKILL);
                    return;
                }
            }
        }));
    }

    fn checkpoint_dir(&self, container_id: &str) -> PathBuf {
        self.options.run_root.join(container_id)
    }

    /// Writes the container's checkpoint directory and root: the bundle with its OCI spec, the state root, the
    /// container's own root over `lower`, its working directory, `launch.json`; then hands the sandbox to the
    /// task's user. On error the caller cleans up.
    fn prepare(
        &self,
        spec: &LaunchSpec,
        launch: &MonitorLaunch,
        user: Option<(u32, u32)>,
        binds: &[volumes::Bind],
    ) -> Result<(), LibcontainerError> {
        let dir = self.checkpoint_dir(&spec.container_id);
        let merged = rootfs::merged(&dir);
        let oci = oci::spec(spec, user, &launch.cgroup_path, binds, &merged).map_err(LibcontainerError::Spec)?;
        let lower = spec.rootfs.clone().unwrap_or_else(|| self.options.hostskel.clone());
        for path in [&launch.bundle, &launch.state_root] {
            std::fs::create_dir_all(path).map_err(|source| LibcontainerError::Create { path: path.clone(), source })?;
        }
        rootfs::mount(&lower, &dir)?;
        if let Some(wd) = &spec.working_dir {
            rootfs::make_dir(&merged, wd)?;
        }
        let config = launch.bundle.join("config.json");
        oci.save(&config).map_err(|source| LibcontainerError::SaveSpec { path: config, source })?;
        let path = dir.join(files::LAUNCH);
        let text = serde_json::to_vec_pretty(launch)
            .map_err(|source| LibcontainerError::Encode { path: path.clone(), source })?;
        agora_runtime::write_atomically(&path, &text, agora_runtime::Durability::ProcessCrash)?;
        if let Some((uid, gid)) = user {
            user::give_sandbox(&spec.sandbox, uid, gid)?;
        }
        Ok(())
    }

    /// Launches the container (see the module doc); the error says what failed, naming the path or the monitor's
    /// own message.
    async fn try_launch(&self, spec: &LaunchSpec) -> Result<(), LibcontainerError> {
        let id = spec.container_id.clone();
        let root = spec.rootfs.clone().unwrap_or_else(|| PathBuf::from("/"));
        if spec.rootfs.as_ref().is_some_and(|r| !r.is_dir()) {
            return Err(LibcontainerError::RootfsNotDir(root));
        }
        let user = match &spec.user {
            None => None,
            Some(name) => Some(user::resolve_user(&root, name)?),
        };
        let dir = self.checkpoint_dir(&id);
        let launch = MonitorLaunch {
            container_id: id.clone(),
            task_id: spec.task_id.clone(),
            framework_id: spec.framework_id.clone(),
            sandbox: spec.sandbox.clone(),
            bundle: dir.join(files::BUNDLE),
            state_root: dir.join(files::STATE),
            cgroup_path: format!("{CGROUP_PARENT}/{id}"),
            mem_limit_bytes: spec.limits.mem_bytes,
            disk_limit_bytes: spec.limits.disk_bytes,
            cpus: spec.limits.cpus,
        };
        let binds = volumes::plan(&spec.volumes, &spec.sandbox)?;
        volumes::prepare(&spec.volumes, &binds, &spec.sandbox)?;
        if let Err(e) = self.prepare(spec, &launch, user, &binds) {
            clean_up(&id, &dir, None);
            return Err(e);
        }
        let log_path = dir.join(files::MONITOR_LOG);
        let log = std::fs::File::create(&log_path)
            .map_err(|source| LibcontainerError::Create { path: log_path.clone(), source })?;
        let mut child = tokio::process::Command::new(&self.options.monitor)
            .arg(&dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|source| LibcontainerError::Monitor { path: self.options.monitor.clone(), source })?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = tokio::io::BufReader::new(stdout).read_line(&mut line).await;
        }
        match MonitorReport::parse(&line) {
            Some(MonitorReport::Started(_)) => {}
            report => {
                let _ = child.wait().await;
                let why = match report {
                    Some(MonitorReport::Failed(message)) => message,
                    _ => std::fs::read_to_string(&log_path).unwrap_or_default().trim().to_string(),
                };
                clean_up(&id, &dir, Some(&launch));
                return Err(if why.is_empty() {
                    LibcontainerError::MonitorExited
                } else {
                    LibcontainerError::MonitorFailed(why)
                });
            }
        }
        let mut entry = Entry {
            dir,
            launch,
            monitor: Some(Monitor::Child(child)),
            limitation: Arc::new(Mutex::new(None)),
            watcher: None,
        };
        self.watch_disk(&id, &mut entry);
        let mut containers = self.containers.lock().map_err(|_| LibcontainerError::Poisoned)?;
        containers.insert(id, entry);
        Ok(())
    }
}

/// Removes a container's leftovers when its monitor could not: the libcontainer state (which kills what is left
/// and removes the cgroups) and the checkpoint directory.
fn clean_up(container_id: &str, dir: &Path, launch: Option<&MonitorLaunch>) {
    let state = dir.join(files::STATE).join(container_id);
    if state.exists() {
        match libcontainer::container::Container::load(state.clone()) {
            Ok(mut c) => {
                let _ = c.refresh_status();
                if let Err(e) = c.delete(true) {
                    warn!(container_id, error = %e, "cannot delete the container");
                }
            }
            Err(e) => warn!(container_id, error = %e, state = %state.display(), "cannot load the container state"),
        }
    }
    if let Some(launch) = launch {
        cgroups::kill_and_remove_cgroups(container_id, &launch.cgroup_path);
    }
    // Never remove the directory through a mounted root: what cannot be unmounted stays, with a warning.
    if let Err(e) = rootfs::unmount_under(dir) {
        warn!(container_id, error = %e, "cannot unmount the container's root");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(container_id, dir = %dir.display(), error = %e, "cannot remove the container's checkpoint");
    }
}

impl Containerizer for LibcontainerContainerizer {
    async fn launch(&self, spec: &LaunchSpec) -> Result<(), ContainerError> {
        self.try_launch(spec).await.map_err(|e| ContainerError::launch(&spec.container_id, e))
    }

    async fn wait(&self, container_id: &str) -> Result<Termination, ContainerError> {
        let (monitor, dir, mem_limit, limitation) = self.with_entry(container_id, |e| {
            (e.monitor.take(), e.dir.clone(), e.launch.mem_limit_bytes, e.limitation.clone())
        })?;
        let monitor =
            monitor.ok_or_else(|| ContainerError::AlreadyWaited { container_id: container_id.to_string() })?;
        let wait_err = |e: WaitError| ContainerError::Wait { container_id: container_id.to_string(), source: e.into() };
        let record_path = dir.join(files::TERMINATION);
        match monitor {
            Monitor::Child(mut child) => {
                let status = child.wait().await.map_err(|e| wait_err(WaitError::Monitor(e)))?;
                if !record_path.exists() {
                    return Err(wait_err(WaitError::NoRecord { status, log: dir.join(files::MONITOR_LOG) }));
                }
            }
            Monitor::Adopted(pid) => {
                let mut ticker = tokio::time::interval(Duration::from_millis(100));
                while !record_path.exists() {
                    if !monitor_alive(pid) {
                        // It may have written the record just before exiting.
                        if record_path.exists() {
                            break;
                        }
                        return Err(wait_err(WaitError::MonitorGone { pid }));
                    }
                    ticker.tick().await;
                }
            }
        }
        if let Some(l) = limitation.lock().ok().and_then(|l| *l) {
            return Ok(Termination::Limited(l));
        }
        let record: MonitorRecord = read_json(&record_path).map_err(|e| wait_err(WaitError::Record(e)))?;
        Ok(record.termination(mem_limit))
    }

    async fn kill(&self, container_id: &str, signal: Signal) -> Result<(), ContainerError> {
        let (dir, cgroup) = self.with_entry(container_id, |e| (e.dir.clone(), e.launch.cgroup_path.clone()))?;
        signal_container(container_id, &dir, &cgroup, signal)
    }

    async fn destroy(&self, container_id: &str) -> Result<(), ContainerError> {
        let entry = self.containers.lock().ok().and_then(|mut c| c.remove(container_id));
        let Some(mut entry) = entry else { return Ok(()) };
        if let Some(w) = entry.watcher.take() {
            w.abort();
        }
        let id = container_id.to_string();
        tokio::task::spawn_blocking(move || {
            let running = match &entry.monitor {
                Some(Monitor::Adopted(pid)) => monitor_alive(*pid),
                Some(Monitor::Child(_)) => true,
                None => false,
            };
            if running {
                let _ = signal_container(&id, &entry.dir, &entry.launch.cgroup_path, Signal::SIGKILL);
            }
            // The usual case: the monitor recorded the end and deleted the container; only its directory is left.
            let deleted = !entry.dir.join(files::STATE).join(&id).exists();
            if !running && deleted && entry.dir.join(files::TERMINATION).exists() {
                if let Err(e) = rootfs::unmount_under(&entry.dir) {
                    warn!(container_id = %id, error = %e, "cannot unmount the container's root");
                    return;
                }
                if let Err(e) = std::fs::remove_dir_all(&entry.dir) {
                    let dir = entry.dir.display();
                    warn!(container_id = %id, dir = %dir, error = %e, "cannot remove the container's checkpoint");
                }
                return;
            }
            clean_up(&id, &entry.dir, Some(&entry.launch));
        })
        .await
        .map_err(|e| ContainerError::Wait { container_id: container_id.to_string(), source: e.into() })
    }

    async fn recover(&self) -> Result<Vec<RecoveredContainer>, ContainerError> {
        let Ok(dirs) = std::fs::read_dir(&self.options.run_root) else { return Ok(vec![]) };
        let mut out = Vec::new();
        for dir in dirs.flatten() {
            let container_id = dir.file_name().to_string_lossy().to_string();
            let dir = dir.path();
            let launch = match read_json::<MonitorLaunch>(&dir.join(files::LAUNCH)) {
                Ok(l) => l,
                Err(e) => {
                    let state = Recovered::Lost(e.to_string());
                    out.push(RecoveredContainer { container_id: container_id.clone(), state });
                    clean_up(&container_id, &dir, None);
                    continue;
                }
            };
            let record_path = dir.join(files::TERMINATION);
            let monitor_pid = read_pid(&dir.join(files::MONITOR_PID));
            let state = if record_path.exists() {
                match read_json::<MonitorRecord>(&record_path) {
                    Ok(r) => Recovered::Ended(r.termination(launch.mem_limit_bytes)),
                    Err(e) => Recovered::Lost(e.to_string()),
                }
            } else {
                match monitor_pid {
                    Some(pid) if monitor_alive(pid) => Recovered::Running,
                    Some(pid) => Recovered::Lost(format!(
                        "the container's monitor (pid {pid}) is gone without recording how the task ended"
                    )),
                    None => Recovered::Lost("the container's monitor never started".into()),
                }
            };
            let mut entry = Entry {
                dir,
                launch,
                monitor: match (&state, monitor_pid) {
                    (Recovered::Running, Some(pid)) => Some(Monitor::Adopted(pid)),
                    _ => None,
                },
                limitation: Arc::new(Mutex::new(None)),
                watcher: None,
            };
            if state == Recovered::Running {
                self.watch_disk(&container_id, &mut entry);
            }
            if let Ok(mut c) = self.containers.lock() {
                c.insert(container_id.clone(), entry);
            }
            out.push(RecoveredContainer { container_id, state });
        }
        Ok(out)
    }

    async fn usage(&self, container_id: &str) -> Result<Usage, ContainerError> {
        let (cgroup, cpus, mem) =
            self.with_entry(container_id, |e| (e.launch.cgroup_path.clone(), e.launch.cpus, e.launch.mem_limit_bytes))?;
        let stats = cgroup_stats(container_id, &cgroup).map_err(|e: CgroupError| ContainerError::Usage {
            container_id: container_id.to_string(),
            source: e.into(),
        })?;
        // v1's cpuacct.stat counts USER_HZ ticks, v2's cpu.stat microseconds.
        let unit = if self.cgroup_v2 { 1e6 } else { 100.0 };
        let rss = ["rss", "total_rss", "anon"].iter().find_map(|k| stats.memory.stats.get(*k)).copied();
        Ok(Usage {
            cpus_user_time_secs: stats.cpu.usage.usage_user as f64 / unit,
            cpus_system_time_secs: stats.cpu.usage.usage_kernel as f64 / unit,
            mem_rss_bytes: rss.unwrap_or(stats.memory.memory.usage),
            cpus_limit: cpus,
            mem_limit_bytes: mem,
        })
    }

    /// A command in the container's cgroups and namespaces, as its user, with the task's environment as the
    /// container sees it (see [`check`]).
    fn check_command(
        &self,
        container_id: &str,
        command: &agora_proto::model::CommandInfo,
        env: &[(String, String)],
        _sandbox: &Path,
    ) -> Result<tokio::process::Command, ContainerError> {
        let dir = self.with_entry(container_id, |e| e.dir.clone())?;
        check::check_command(&dir, command, env)
            .map_err(|e| ContainerError::Check { container_id: container_id.to_string(), source: e.into() })
    }
}
