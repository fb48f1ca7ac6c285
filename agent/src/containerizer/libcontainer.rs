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
//! runtime's minimal capabilities; `ContainerInfo.volumes` bound in as [`volumes`] plans them. cgroups: CPU shares and CFS quota, a hard memory limit (swap included), a pids
//! limit. `disk` is measured every `disk_watch_interval` (`du`) and a task over it is killed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libcgroups::common::{CgroupConfig, CgroupManager, CgroupSetup};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, RootBuilder, Spec, UserBuilder,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;
use tracing::{debug, warn};

use super::spec::{LaunchSpec, SANDBOX_MOUNT};
use super::{
    ContainerError, Containerizer, Limitation, Recovered, RecoveredContainer, Termination, Usage, disk, rootfs, volumes,
};

/// The CFS period; the quota is `cpus × period`.
pub const CFS_PERIOD_US: u64 = 100_000;
/// Processes a container may hold.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;
/// The cgroup parent of every container: `/agora/<container id>` in each hierarchy.
pub const CGROUP_PARENT: &str = "/agora";
/// The monitor's file name, looked for beside the running executable (or `$AGORA_CONTAINER_MONITOR`).
pub const MONITOR_BINARY: &str = "agora-container-monitor";

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
    pub fn for_work_dir(work_dir: &Path) -> Result<LibcontainerOptions, String> {
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
pub fn find_monitor() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("AGORA_CONTAINER_MONITOR") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    let dirs = exe.ancestors().skip(1).take(2);
    let candidates: Vec<PathBuf> = dirs.map(|d| d.join(MONITOR_BINARY)).collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        format!(
            "cannot find {MONITOR_BINARY} (looked at {}); build it with `cargo build -p agora-agent --bins` or set \
             AGORA_CONTAINER_MONITOR",
            looked.join(", ")
        )
    })
}

/// Why libcontainer cannot work here, if it cannot: not root, or no cgroup hierarchy.
pub fn libcontainer_unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some(
            "--isolation=libcontainer needs root (cgroups and namespaces); run as root, or use \
                     --isolation=process for development"
                .into(),
        );
    }
    if let Err(e) = libcgroups::common::get_cgroup_setup() {
        return Some(format!("--isolation=libcontainer needs cgroups mounted at /sys/fs/cgroup: {e}"));
    }
    None
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
    pub fn new(options: LibcontainerOptions) -> Result<LibcontainerContainerizer, String> {
        if let Some(why) = libcontainer_unavailable() {
            return Err(why);
        }
        if !options.monitor.is_file() {
            return Err(format!("monitor {} does not exist", options.monitor.display()));
        }
        std::fs::create_dir_all(&options.run_root)
            .map_err(|e| format!("cannot create {}: {e}", options.run_root.display()))?;
        prepare_hostskel(&options.hostskel)?;
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

    /// The OCI spec of a task whose root is `root` (its own overlay, [`rootfs`]); `host`: over the host skeleton.
    fn spec(
        &self,
        spec: &LaunchSpec,
        user: Option<(u32, u32)>,
        cgroup_path: &str,
        volumes: &[volumes::Bind],
        root: &Path,
    ) -> Result<Spec, String> {
        let e = |e: oci_spec::OciSpecError| e.to_string();
        let mut oci = Spec::default();
        let host = spec.rootfs.is_none();
        oci.set_root(Some(RootBuilder::default().path(root).readonly(true).build().map_err(e)?));
        let mut process = oci.process().clone().unwrap_or_default();
        let args = if spec.command.shell {
            vec!["/bin/sh".to_string(), "-c".to_string(), spec.command.value.clone()]
        } else {
            let mut args = vec![spec.command.value.clone()];
            args.extend(spec.command.arguments.iter().skip(1).cloned());
            args
        };
        let env = spec
            .env
            .iter()
            .map(|(k, v)| match k.as_str() {
                "AGORA_SANDBOX" | "MESOS_SANDBOX" => format!("{k}={SANDBOX_MOUNT}"),
                _ => format!("{k}={v}"),
            })
            .collect();
        let cwd = spec.working_dir.clone().unwrap_or_else(|| PathBuf::from(SANDBOX_MOUNT));
        process.set_args(Some(args)).set_env(Some(env)).set_cwd(cwd);
        process.set_terminal(Some(false)).set_no_new_privileges(Some(true));
        if let Some((uid, gid)) = user {
            process.set_user(UserBuilder::default().uid(uid).gid(gid).build().map_err(e)?);
        }
        oci.set_process(Some(process));
        oci.set_hostname(Some("agora".into()));

        let mut mounts: Vec<Mount> = oci.mounts().clone().unwrap_or_default();
        let bind = |source: &Path, destination: &str, ro: bool| {
            let mut options = vec!["rbind".to_string(), "nosuid".to_string(), "nodev".to_string()];
            options.push(if ro { "ro" } else { "rw" }.to_string());
            MountBuilder::default().destination(destination).typ("bind").source(source).options(options).build()
        };
        if host {
            for dir in hostskel_binds() {
                mounts.push(bind(Path::new(&dir), &dir, true).map_err(e)?);
            }
        }
        mounts.push(bind(&spec.sandbox, SANDBOX_MOUNT, false).map_err(e)?);
        let tmp_options = ["nosuid", "nodev", "mode=1777"].map(String::from).to_vec();
        mounts.push(
            MountBuilder::default()
                .destination("/tmp")
                .typ("tmpfs")
                .source("tmpfs")
                .options(tmp_options)
                .build()
                .map_err(e)?,
        );
        // After the sandbox and /tmp, so that volumes inside them are not hidden by them.
        for v in volumes {
            let destination = v.destination.to_string_lossy();
            mounts.push(bind(&v.source, &destination, v.read_only).map_err(e)?);
        }
        oci.set_mounts(Some(mounts));

        let mut resources = LinuxResourcesBuilder::default();
        if let Some(cpus) = spec.limits.cpus.filter(|c| *c > 0.0) {
            let shares = ((1024.0 * cpus) as u64).max(2);
            let quota = ((cpus * CFS_PERIOD_US as f64) as i64).max(1000);
            resources = resources
                .cpu(LinuxCpuBuilder::default().shares(shares).quota(quota).period(CFS_PERIOD_US).build().map_err(e)?);
        }
        if let Some(mem) = spec.limits.mem_bytes {
            let mem = i64::try_from(mem).unwrap_or(i64::MAX);
            resources = resources.memory(LinuxMemoryBuilder::default().limit(mem).swap(mem).build().map_err(e)?);
        }
        resources = resources.pids(LinuxPidsBuilder::default().limit(DEFAULT_PIDS_LIMIT).build().map_err(e)?);
        let namespaces = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Cgroup,
        ]
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
        let defaults = oci.linux().clone().unwrap_or_default();
        let linux = LinuxBuilder::default()
            .namespaces(namespaces)
            .resources(resources.build().map_err(e)?)
            .cgroups_path(PathBuf::from(cgroup_path))
            .masked_paths(defaults.masked_paths().clone().unwrap_or_default())
            .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
            .build()
            .map_err(e)?;
        oci.set_linux(Some(linux));
        Ok(oci)
    }
}

/// The host directories bound read-only into the skeleton: `/usr`, `/etc`, and the top-level library and binary
/// directories that are real directories rather than merged-usr symlinks.
fn hostskel_binds() -> Vec<String> {
    let mut dirs = vec!["/usr".to_string(), "/etc".to_string()];
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        if std::fs::symlink_metadata(top).is_ok_and(|m| m.is_dir()) {
            dirs.push(top.to_string());
        }
    }
    dirs
}

/// Creates the skeleton root: mount points, and the host's merged-usr symlinks (`bin -> usr/bin`, ...).
fn prepare_hostskel(skel: &Path) -> Result<(), String> {
    let fail = |p: &Path, e: std::io::Error| format!("cannot prepare host skeleton {}: {e}", p.display());
    for dir in ["usr", "etc", "proc", "dev", "sys", "tmp", "mnt/sandbox", "root", "home", "var/tmp", "run"] {
        let p = skel.join(dir);
        std::fs::create_dir_all(&p).map_err(|e| fail(&p, e))?;
    }
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        let p = skel.join(top);
        match std::fs::read_link(&host) {
            Ok(target) => {
                if std::fs::symlink_metadata(&p).is_err() {
                    std::os::unix::fs::symlink(&target, &p).map_err(|e| fail(&p, e))?;
                }
            }
            Err(_) if host.is_dir() => std::fs::create_dir_all(&p).map_err(|e| fail(&p, e))?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// Gives everything under `dir` to `uid:gid`, without following symlinks.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?.path();
        nix::unistd::fchownat(
            None,
            &path,
            Some(uid.into()),
            Some(gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("cannot give {} to uid {uid}: {e}", path.display()))?;
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            chown_tree(&path, uid, gid)?;
        }
    }
    Ok(())
}

/// `name`'s uid and gid in a passwd file.
pub fn lookup_user(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?))).flatten()
    })
}

/// The uid and gid of `user` in the root filesystem `root`: a name or a uid, optionally `:group` (a name or a gid),
/// as Docker's `User` is written. A name must be in `root`'s `/etc/passwd` (a group in its `/etc/group`); a uid
/// that is not takes gid 0, as Docker does.
pub fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32), String> {
    let passwd_path = root.join("etc/passwd");
    let passwd = std::fs::read_to_string(&passwd_path).unwrap_or_default();
    let (name, group) = match user.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match name.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[2] == name).then(|| f[3].parse().ok()).flatten()
            });
            (uid, gid.unwrap_or(0))
        }
        Err(_) => lookup_user(&passwd, name)
            .ok_or_else(|| format!("user '{name}' does not exist in {}", passwd_path.display()))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group_path = root.join("etc/group");
                let groups = std::fs::read_to_string(&group_path).unwrap_or_default();
                groups
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok()).flatten()
                    })
                    .ok_or_else(|| format!("group '{g}' does not exist in {}", group_path.display()))?
            }
        },
    };
    Ok((uid, gid))
}

/// `name` on the agent's own `PATH` (or the default one), so that a check's environment — an image's `PATH`, which
/// names directories of the image, not of the host — never decides which host program runs; the bare name when no
/// directory has it.
fn host_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| crate::sandbox::DEFAULT_PATH.into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from(name))
}

/// Adds to a check's `env` the variables of the container's `environ` (`/proc/<init>/environ`) it lacks, and takes
/// the container's `PATH` unless the check sets its own.
fn merge_container_env(env: &mut Vec<(String, String)>, environ: &[u8], check_sets_path: bool) {
    for var in environ.split(|b| *b == 0).filter(|v| !v.is_empty()) {
        let var = String::from_utf8_lossy(var);
        let Some((k, v)) = var.split_once('=') else { continue };
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(slot) if k == "PATH" && !check_sets_path => slot.1 = v.to_string(),
            Some(_) => {}
            None => env.push((k.to_string(), v.to_string())),
        }
    }
}

fn cgroup_manager(container_id: &str, cgroup_path: &str) -> Result<libcgroups::common::AnyCgroupManager, String> {
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup_path),
        systemd_cgroup: false,
        container_name: container_id.to_string(),
    })
    .map_err(|e| format!("cannot open cgroup {cgroup_path}: {e}"))
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
fn signal_container(container_id: &str, dir: &Path, cgroup_path: &str, signal: Signal) -> Result<(), ContainerError> {
    let fail = |source| ContainerError::Signal { container_id: container_id.to_string(), source };
    let init: Option<i32> = std::fs::read_to_string(dir.join(files::INIT_PID)).ok().and_then(|t| t.trim().parse().ok());
    let pids = match cgroup_manager(container_id, cgroup_path).and_then(|m| m.get_all_pids().map_err(|e| e.to_string()))
    {
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
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

/// True while `pid` is a live (not zombie) process running the monitor.
fn monitor_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("Z");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    state != "Z" && String::from_utf8_lossy(&cmdline).contains(MONITOR_BINARY)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()))
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
    if let Some(launch) = launch
        && let Ok(m) = cgroup_manager(container_id, &launch.cgroup_path)
    {
        if let Ok(pids) = m.get_all_pids() {
            for pid in pids {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
        }
        let _ = m.remove();
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
        let id = spec.container_id.clone();
        let fail = |message: String| ContainerError::Launch { container_id: id.clone(), message };
        let root = spec.rootfs.clone().unwrap_or_else(|| PathBuf::from("/"));
        if spec.rootfs.as_ref().is_some_and(|r| !r.is_dir()) {
            return Err(fail(format!("rootfs {} is not a directory on this agent", root.display())));
        }
        let user = match &spec.user {
            None => None,
            Some(name) => Some(resolve_user(&root, name).map_err(&fail)?),
        };
        let dir = self.checkpoint_dir(&id);
        let cgroup_path = format!("{CGROUP_PARENT}/{id}");
        let launch = MonitorLaunch {
            container_id: id.clone(),
            task_id: spec.task_id.clone(),
            framework_id: spec.framework_id.clone(),
            sandbox: spec.sandbox.clone(),
            bundle: dir.join(files::BUNDLE),
            state_root: dir.join(files::STATE),
            cgroup_path: cgroup_path.clone(),
            mem_limit_bytes: spec.limits.mem_bytes,
            disk_limit_bytes: spec.limits.disk_bytes,
            cpus: spec.limits.cpus,
        };
        let binds = volumes::plan(&spec.volumes, &spec.sandbox).map_err(&fail)?;
        volumes::prepare(&spec.volumes, &binds, &spec.sandbox).map_err(&fail)?;
        let merged = rootfs::merged(&dir);
        let oci = self
            .spec(spec, user, &cgroup_path, &binds, &merged)
            .map_err(|e| fail(format!("cannot build the OCI spec: {e}")))?;
        let lower = spec.rootfs.clone().unwrap_or_else(|| self.options.hostskel.clone());
        let prepare = || -> Result<(), String> {
            std::fs::create_dir_all(&launch.bundle)
                .map_err(|e| format!("cannot create {}: {e}", launch.bundle.display()))?;
            std::fs::create_dir_all(&launch.state_root)
                .map_err(|e| format!("cannot create {}: {e}", launch.state_root.display()))?;
            rootfs::mount(&lower, &dir)?;
            if let Some(wd) = &spec.working_dir {
                rootfs::make_dir(&merged, wd)?;
            }
            oci.save(launch.bundle.join("config.json")).map_err(|e| format!("cannot write the OCI spec: {e}"))?;
            let text = serde_json::to_vec_pretty(&launch).map_err(|e| e.to_string())?;
            crate::checkpoint::write_atomically(&dir.join(files::LAUNCH), &text, false)?;
            if let Some((uid, gid)) = user {
                for p in [spec.sandbox.clone(), spec.sandbox.join("stdout"), spec.sandbox.join("stderr")] {
                    if !p.exists() {
                        std::fs::File::create(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
                    }
                    nix::unistd::chown(&p, Some(uid.into()), Some(gid.into()))
                        .map_err(|e| format!("cannot give {} to uid {uid}: {e}", p.display()))?;
                }
                // What the fetcher put there and the sandbox-path volumes belong to the task's user, as Mesos
                // chowns the sandbox (symlinks themselves, never what they point to).
                chown_tree(&spec.sandbox, uid, gid)?;
            }
            Ok(())
        };
        if let Err(e) = prepare() {
            clean_up(&id, &dir, None);
            return Err(fail(e));
        }
        let log = std::fs::File::create(dir.join(files::MONITOR_LOG))
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.join(files::MONITOR_LOG).display())))?;
        let mut child = tokio::process::Command::new(&self.options.monitor)
            .arg(&dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| fail(format!("cannot run the monitor {}: {e}", self.options.monitor.display())))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = tokio::io::BufReader::new(stdout).read_line(&mut line).await;
        }
        if !line.starts_with("started ") {
            let _ = child.wait().await;
            let log = std::fs::read_to_string(dir.join(files::MONITOR_LOG)).unwrap_or_default();
            let why = line.trim().strip_prefix("error ").unwrap_or(log.trim()).to_string();
            clean_up(&id, &dir, Some(&launch));
            return Err(fail(if why.is_empty() {
                "the monitor exited before starting the container".into()
            } else {
                why
            }));
        }
        let mut entry = Entry {
            dir,
            launch,
            monitor: Some(Monitor::Child(child)),
            limitation: Arc::new(Mutex::new(None)),
            watcher: None,
        };
        self.watch_disk(&id, &mut entry);
        let mut containers = self.containers.lock().map_err(|_| fail("containerizer state is poisoned".into()))?;
        containers.insert(id, entry);
        Ok(())
    }

    async fn wait(&self, container_id: &str) -> Result<Termination, ContainerError> {
        let (monitor, dir, mem_limit, limitation) = self.with_entry(container_id, |e| {
            (e.monitor.take(), e.dir.clone(), e.launch.mem_limit_bytes, e.limitation.clone())
        })?;
        let monitor =
            monitor.ok_or_else(|| ContainerError::AlreadyWaited { container_id: container_id.to_string() })?;
        let wait_err = |message: String| ContainerError::Wait {
            container_id: container_id.to_string(),
            source: std::io::Error::other(message),
        };
        let record_path = dir.join(files::TERMINATION);
        match monitor {
            Monitor::Child(mut child) => {
                let status = child
                    .wait()
                    .await
                    .map_err(|source| ContainerError::Wait { container_id: container_id.to_string(), source })?;
                if !record_path.exists() {
                    return Err(wait_err(format!(
                        "the monitor ended ({status}) without recording the task's end; see {}",
                        dir.join(files::MONITOR_LOG).display()
                    )));
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
                        return Err(wait_err(format!(
                            "its monitor (pid {pid}) is gone without recording the task's end"
                        )));
                    }
                    ticker.tick().await;
                }
            }
        }
        if let Some(l) = limitation.lock().ok().and_then(|l| *l) {
            return Ok(Termination::Limited(l));
        }
        let record: MonitorRecord = read_json(&record_path).map_err(wait_err)?;
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
                    warn!(container_id = %id, dir = %entry.dir.display(), error = %e, "cannot remove the container's checkpoint");
                }
                return;
            }
            clean_up(&id, &entry.dir, Some(&entry.launch));
        })
        .await
        .map_err(|e| ContainerError::Wait { container_id: container_id.to_string(), source: std::io::Error::other(e) })
    }

    async fn recover(&self) -> Result<Vec<RecoveredContainer>, ContainerError> {
        let Ok(dirs) = std::fs::read_dir(&self.options.run_root) else { return Ok(vec![]) };
        let mut out = Vec::new();
        for dir in dirs.flatten() {
            let container_id = dir.file_name().to_string_lossy().to_string();
            let dir = dir.path();
            let launch: Result<MonitorLaunch, String> = read_json(&dir.join(files::LAUNCH));
            let launch = match launch {
                Ok(l) => l,
                Err(e) => {
                    out.push(RecoveredContainer { container_id: container_id.clone(), state: Recovered::Lost(e) });
                    clean_up(&container_id, &dir, None);
                    continue;
                }
            };
            let record_path = dir.join(files::TERMINATION);
            let monitor_pid: Option<i32> =
                std::fs::read_to_string(dir.join(files::MONITOR_PID)).ok().and_then(|t| t.trim().parse().ok());
            let state = if record_path.exists() {
                match read_json::<MonitorRecord>(&record_path) {
                    Ok(r) => Recovered::Ended(r.termination(launch.mem_limit_bytes)),
                    Err(e) => Recovered::Lost(e),
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
        let fail = |message: String| ContainerError::Usage { container_id: container_id.to_string(), message };
        let stats =
            cgroup_manager(container_id, &cgroup).and_then(|m| m.stats().map_err(|e| e.to_string())).map_err(fail)?;
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

    /// Joins the container's cgroups (so the check counts against the task's cpu, memory and pids limits, as a
    /// Mesos command check runs inside the task's container), then `nsenter`s into the container's init: its mount
    /// (and so its root), pid, ipc, uts and cgroup namespaces, its working directory (the sandbox mount) and its
    /// user, with the task's environment as the container sees it. A small `/bin/sh` writes its own pid into each
    /// `cgroup.procs` of the container (found from `/proc/<init>/cgroup`, [`cgroup_procs_files`]) and then execs
    /// `nsenter`, so nothing of the check runs outside the cgroups (no unsafe `pre_exec` needed).
    fn check_command(
        &self,
        container_id: &str,
        command: &agora_proto::model::CommandInfo,
        env: &[(String, String)],
        _sandbox: &Path,
    ) -> Result<tokio::process::Command, ContainerError> {
        let dir = self.with_entry(container_id, |e| e.dir.clone())?;
        let pid_file = dir.join(files::INIT_PID);
        let init: i32 =
            std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse().ok()).ok_or_else(|| {
                ContainerError::Unknown(format!("{container_id} (no init pid in {})", pid_file.display()))
            })?;
        let ids = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap_or_default();
        let id_of = |field: &str| -> Option<String> {
            ids.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .map(String::from)
        };
        let proc_cgroup = std::fs::read_to_string(format!("/proc/{init}/cgroup"))
            .map_err(|e| ContainerError::Unknown(format!("{container_id} (cannot read /proc/{init}/cgroup: {e})")))?;
        let procs = cgroup_procs_files(&proc_cgroup, Path::new(CGROUP_ROOT), |p| p.is_dir())
            .map_err(|e| ContainerError::Unknown(format!("{container_id} ({e})")))?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", JOIN_CGROUPS_THEN_EXEC, "agora-health-check"]).arg(procs.len().to_string()).args(&procs);
        cmd.arg(host_program("nsenter")).arg(format!("--target={init}"));
        cmd.args(["--mount", "--uts", "--ipc", "--pid", "--cgroup", "--root", "--wd"]);
        if let (Some(uid), Some(gid)) = (id_of("Uid:"), id_of("Gid:")) {
            cmd.arg(format!("--setuid={uid}")).arg(format!("--setgid={gid}"));
        }
        cmd.arg("--");
        if command.shell {
            cmd.args(["/bin/sh", "-c", &command.value]);
        } else {
            cmd.arg(&command.value).args(command.arguments.iter().skip(1));
        }
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| match k.as_str() {
                "AGORA_SANDBOX" | "MESOS_SANDBOX" => (k.clone(), SANDBOX_MOUNT.to_string()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        // What the container's environment adds (an image's Env, and its PATH unless the check sets one).
        let environ = std::fs::read(format!("/proc/{init}/environ")).unwrap_or_default();
        let check_sets_path = command.environment.iter().any(|(k, _)| k == "PATH");
        merge_container_env(&mut env, &environ, check_sets_path);
        cmd.env_clear().envs(env);
        Ok(cmd)
    }
}

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `sh -c` script: `$1` files follow; writes the shell's pid into each (joining those cgroups), then execs the rest.
const JOIN_CGROUPS_THEN_EXEC: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do
  echo $$ > "$1" || { echo "cannot join the container's cgroup $1" >&2; exit 125; }
  shift; n=$((n - 1))
done
exec "$@""#;

/// The `cgroup.procs` files of the container's own cgroups, from its init's `/proc/<pid>/cgroup`: every hierarchy
/// in which init lies under [`CGROUP_PARENT`], mounted under `root` as libcgroups finds them — a v1 hierarchy at
/// `<root>/<controllers>` (or at `<root>/<controller>` for one of them), the v2 one at `<root>` (or
/// `<root>/unified` on a hybrid host). `is_dir` says which candidate exists. Pure but for `is_dir`.
pub fn cgroup_procs_files(
    proc_cgroup: &str,
    root: &Path,
    is_dir: impl Fn(&Path) -> bool,
) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if !path.starts_with(&format!("{CGROUP_PARENT}/")) {
            continue;
        }
        let relative = path.trim_start_matches('/');
        let mounts: Vec<PathBuf> = if controllers.is_empty() {
            vec![root.to_path_buf(), root.join("unified")]
        } else {
            std::iter::once(root.join(controllers))
                .chain(controllers.split(',').map(|c| root.join(c.trim_start_matches("name="))))
                .collect()
        };
        let Some(dir) = mounts.iter().map(|m| m.join(relative)).find(|d| is_dir(d)) else {
            return Err(format!("the cgroup {path} of '{controllers}' is not under {}", root.display()));
        };
        out.push(dir.join("cgroup.procs"));
    }
    if out.is_empty() {
        return Err(format!("the container's init is in no cgroup under {CGROUP_PARENT}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checks_cgroups_are_the_container_inits_own() {
        let v1 = "9:name=systemd:/\n8:pids:/agora/c1\n4:memory:/agora/c1\n2:cpu,cpuacct:/agora/c1\n0::/\n";
        let root = Path::new("/sys/fs/cgroup");
        // Separate mounts (cpu and cpuacct each on its own) and a combined one.
        let separate = |p: &Path| !p.starts_with("/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(
            cgroup_procs_files(v1, root, separate).unwrap(),
            vec![
                PathBuf::from("/sys/fs/cgroup/pids/agora/c1/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/memory/agora/c1/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/cpu/agora/c1/cgroup.procs"),
            ]
        );
        let combined = cgroup_procs_files(v1, root, |_| true).unwrap();
        assert_eq!(combined[2], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/agora/c1/cgroup.procs"));
        // cgroup v2: one hierarchy, at the root or, on a hybrid host, at unified/.
        assert_eq!(
            cgroup_procs_files("0::/agora/c2\n", root, |_| true).unwrap(),
            vec![PathBuf::from("/sys/fs/cgroup/agora/c2/cgroup.procs")]
        );
        let hybrid = cgroup_procs_files("0::/agora/c2\n", root, |p| p.starts_with("/sys/fs/cgroup/unified")).unwrap();
        assert_eq!(hybrid, vec![PathBuf::from("/sys/fs/cgroup/unified/agora/c2/cgroup.procs")]);
        // A process outside the containers' cgroups, or a hierarchy that is not mounted, is an error.
        assert!(cgroup_procs_files("4:memory:/user.slice\n", root, |_| true).unwrap_err().contains("no cgroup"));
        let e = cgroup_procs_files("4:memory:/agora/c1\n", root, |_| false).unwrap_err();
        assert!(e.contains("/agora/c1") && e.contains("memory"), "{e}");
    }

    #[test]
    fn users_are_found_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(lookup_user(passwd, "nobody"), Some((65534, 65534)));
        assert_eq!(lookup_user(passwd, "root"), Some((0, 0)));
        assert_eq!(lookup_user(passwd, "ghost"), None);
        assert_eq!(lookup_user("broken:x\n", "broken"), None);
    }

    #[test]
    fn users_are_names_or_ids_with_an_optional_group() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), "app:x:1000:1001::/:/bin/sh\n").unwrap();
        std::fs::write(root.path().join("etc/group"), "staff:x:50:\n").unwrap();
        assert_eq!(resolve_user(root.path(), "app"), Ok((1000, 1001)));
        assert_eq!(resolve_user(root.path(), "1000"), Ok((1000, 1001)));
        assert_eq!(resolve_user(root.path(), "4242"), Ok((4242, 0)));
        assert_eq!(resolve_user(root.path(), "app:staff"), Ok((1000, 50)));
        assert_eq!(resolve_user(root.path(), "7:8"), Ok((7, 8)));
        assert!(resolve_user(root.path(), "ghost").unwrap_err().contains("user 'ghost' does not exist"));
        assert!(resolve_user(root.path(), "app:nogroup").unwrap_err().contains("group 'nogroup' does not exist"));
    }

    #[test]
    fn a_check_gets_the_containers_image_env_and_path_beneath_its_own() {
        let environ = b"PATH=/image/bin\0LANG=C\0TASK=container\0";
        let mut env = vec![("PATH".to_string(), "/usr/bin".to_string()), ("TASK".to_string(), "check".to_string())];
        merge_container_env(&mut env, environ, false);
        let pairs = |e: &[(String, String)]| e.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(pairs(&env), vec!["PATH=/image/bin", "TASK=check", "LANG=C"]);
        let mut env = vec![("PATH".to_string(), "/check/bin".to_string())];
        merge_container_env(&mut env, environ, true);
        assert_eq!(pairs(&env), vec!["PATH=/check/bin", "LANG=C", "TASK=container"]);
    }

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
}
