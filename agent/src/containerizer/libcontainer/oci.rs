//! The OCI runtime spec of a task's container: its process (argv, environment with the sandbox as the container
//! sees it, working directory, user, no_new_privs), its mounts (the host skeleton's read-only binds, the sandbox
//! read-write at [`SANDBOX_MOUNT`], a private `/tmp`, then the volumes), its cgroup limits (CPU shares and CFS quota,
//! memory with swap, pids) and its namespaces (pid, mount, ipc, uts, cgroup; the host network, or the pinned network
//! namespace of a bridged task with its `/etc/resolv.conf` and `/etc/hosts` bound in). Pure: the containerizer writes
//! it to the bundle.

use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, RootBuilder, Spec, UserBuilder,
};

use crate::containerizer::spec::{CONTAINER_HOSTNAME, LaunchSpec, SANDBOX_MOUNT};
use crate::containerizer::volumes::Bind;

/// The CFS period; the quota is `cpus × period`.
pub const CFS_PERIOD_US: u64 = 100_000;
/// Processes a container may hold.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// The OCI spec of a task whose root is `root` (its own overlay, `crate::containerizer::rootfs`); a task without a
/// `rootfs` runs over the host skeleton, whose host directories are bound in read-only.
pub fn spec(
    spec: &LaunchSpec,
    user: Option<(u32, u32)>,
    cgroup_path: &str,
    volumes: &[Bind],
    root: &Path,
) -> Result<Spec, OciSpecError> {
    let mut oci = Spec::default();
    let host = spec.rootfs.is_none();
    oci.set_root(Some(RootBuilder::default().path(root).readonly(true).build()?));
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
        process.set_user(UserBuilder::default().uid(uid).gid(gid).build()?);
    }
    oci.set_process(Some(process));
    oci.set_hostname(Some(CONTAINER_HOSTNAME.into()));

    let mut mounts: Vec<Mount> = oci.mounts().clone().unwrap_or_default();
    let bind = |source: &Path, destination: &str, ro: bool| {
        let mut options = vec!["rbind".to_string(), "nosuid".to_string(), "nodev".to_string()];
        options.push(if ro { "ro" } else { "rw" }.to_string());
        MountBuilder::default().destination(destination).typ("bind").source(source).options(options).build()
    };
    if host {
        for dir in super::hostskel::binds() {
            mounts.push(bind(Path::new(&dir), &dir, true)?);
        }
    }
    mounts.push(bind(&spec.sandbox, SANDBOX_MOUNT, false)?);
    let tmp_options = ["nosuid", "nodev", "mode=1777"].map(String::from).to_vec();
    mounts.push(MountBuilder::default().destination("/tmp").typ("tmpfs").source("tmpfs").options(tmp_options).build()?);
    let attached = spec.network.as_ref().and_then(|n| n.attached.as_ref());
    if let Some(a) = attached {
        mounts.push(bind(&a.resolv_conf, "/etc/resolv.conf", true)?);
        mounts.push(bind(&a.hosts, "/etc/hosts", true)?);
    }
    // After the sandbox and /tmp, so that volumes inside them are not hidden by them.
    for v in volumes {
        let destination = v.destination.to_string_lossy();
        mounts.push(bind(&v.source, &destination, v.read_only)?);
    }
    oci.set_mounts(Some(mounts));

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(cpus) = spec.limits.cpus.filter(|c| *c > 0.0) {
        let shares = ((1024.0 * cpus) as u64).max(2);
        let quota = ((cpus * CFS_PERIOD_US as f64) as i64).max(1000);
        resources =
            resources.cpu(LinuxCpuBuilder::default().shares(shares).quota(quota).period(CFS_PERIOD_US).build()?);
    }
    if let Some(mem) = spec.limits.mem_bytes {
        let mem = i64::try_from(mem).unwrap_or(i64::MAX);
        resources = resources.memory(LinuxMemoryBuilder::default().limit(mem).swap(mem).build()?);
    }
    resources = resources.pids(LinuxPidsBuilder::default().limit(DEFAULT_PIDS_LIMIT).build()?);
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    let mut namespaces = namespaces;
    if let Some(a) = attached {
        namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(&a.netns).build()?);
    }
    let defaults = oci.linux().clone().unwrap_or_default();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(PathBuf::from(cgroup_path))
        .masked_paths(defaults.masked_paths().clone().unwrap_or_default())
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .build()?;
    oci.set_linux(Some(linux));
    Ok(oci)
}
