//! A COMMAND health check inside a running container, as Mesos runs it: the check joins the container's cgroups
//! (so it counts against the task's limits) and `nsenter`s into the container's init — its mount (and so its root),
//! pid, ipc, uts, network (the host's, or its own on a container network) and cgroup namespaces, its working
//! directory and its user — with the task's environment as the container sees it. A small `/bin/sh` writes its own pid into each `cgroup.procs` of the container (found from
//! `/proc/<init>/cgroup`, [`cgroup_procs_files`]) and then execs `nsenter`, so nothing of the check runs outside the
//! cgroups (no unsafe `pre_exec` needed).

use std::path::{Path, PathBuf};

use agora_proto::model::CommandInfo;

use super::CGROUP_PARENT;
use super::monitor_protocol::{files, read_pid};
use crate::containerizer::spec::SANDBOX_MOUNT;

/// Why a check cannot be run in the container.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no init pid in {0}")]
    NoInit(PathBuf),
    #[error("cannot read {path}: {source}")]
    ProcCgroup { path: String, source: std::io::Error },
    #[error("the cgroup {cgroup} of '{controllers}' is not under {root}")]
    NotMounted { cgroup: String, controllers: String, root: PathBuf },
    #[error("the container's init is in no cgroup under {CGROUP_PARENT}")]
    NoCgroup,
}

/// The command that runs `command` inside the container checkpointed in `dir`, with `env` (the task's).
pub fn check_command(
    dir: &Path,
    command: &CommandInfo,
    env: &[(String, String)],
) -> Result<tokio::process::Command, CheckError> {
    let pid_file = dir.join(files::INIT_PID);
    let init = read_pid(&pid_file).ok_or(CheckError::NoInit(pid_file))?;
    let ids = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap_or_default();
    let id_of = |field: &str| -> Option<String> {
        ids.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .map(String::from)
    };
    let proc_cgroup_path = format!("/proc/{init}/cgroup");
    let proc_cgroup = std::fs::read_to_string(&proc_cgroup_path)
        .map_err(|source| CheckError::ProcCgroup { path: proc_cgroup_path, source })?;
    let procs = cgroup_procs_files(&proc_cgroup, Path::new(CGROUP_ROOT), |p| p.is_dir())?;
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.args(["-c", JOIN_CGROUPS_THEN_EXEC, "agora-health-check"]).arg(procs.len().to_string()).args(&procs);
    cmd.arg(host_program("nsenter")).arg(format!("--target={init}"));
    cmd.args(["--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--root", "--wd"]);
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
) -> Result<Vec<PathBuf>, CheckError> {
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
            return Err(CheckError::NotMounted {
                cgroup: path.to_string(),
                controllers: controllers.to_string(),
                root: root.to_path_buf(),
            });
        };
        out.push(dir.join("cgroup.procs"));
    }
    if out.is_empty() {
        return Err(CheckError::NoCgroup);
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
        let e = cgroup_procs_files("4:memory:/user.slice\n", root, |_| true).unwrap_err().to_string();
        assert!(e.contains("no cgroup"), "{e}");
        let e = cgroup_procs_files("4:memory:/agora/c1\n", root, |_| false).unwrap_err().to_string();
        assert!(e.contains("/agora/c1") && e.contains("memory"), "{e}");
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
    fn a_container_without_an_init_pid_cannot_be_checked() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_command(dir.path(), &CommandInfo::shell("true"), &[]).unwrap_err().to_string();
        assert_eq!(e, format!("no init pid in {}", dir.path().join(files::INIT_PID).display()));
    }
}
