//! `--isolation=process`: each task is a plain process in a process group of its own, started in its sandbox
//! with stdin from `/dev/null` and stdout/stderr to the sandbox's `stdout` and `stderr` files.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::volumes::{Problem, VolumeError};
use super::{ContainerError, Containerizer, LaunchSpec, RecoveredContainer, Termination, Usage};

/// Why a plain process could not be started or measured.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("cannot open {path}: {source}")]
    Open { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot run '{program}': {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("the process has no pid")]
    NoPid,
    #[error("cannot parse {0}")]
    Parse(std::path::PathBuf),
    #[error("the containerizer's state is poisoned")]
    Poisoned,
}

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const USER_HZ: f64 = 100.0;

struct Entry {
    /// The process group id (the leader's pid, as it was started with `process_group(0)`).
    pgid: i32,
    /// Taken by `wait`.
    child: Option<Child>,
}

/// Runs tasks as plain process groups.
#[derive(Default)]
pub struct ProcessContainerizer {
    containers: Mutex<HashMap<String, Entry>>,
}

impl ProcessContainerizer {
    pub fn new() -> ProcessContainerizer {
        ProcessContainerizer::default()
    }

    fn pgid(&self, container_id: &str) -> Result<i32, ContainerError> {
        let containers = self.containers.lock().map_err(|_| ContainerError::Unknown(container_id.to_string()))?;
        containers.get(container_id).map(|e| e.pgid).ok_or_else(|| ContainerError::Unknown(container_id.to_string()))
    }

    fn command(spec: &LaunchSpec) -> Command {
        let mut cmd = super::host_command(&spec.command, &spec.env, &spec.sandbox);
        cmd.process_group(0);
        cmd
    }
}

fn signal_group(container_id: &str, pgid: i32, signal: Signal) -> Result<(), ContainerError> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(ContainerError::Signal { container_id: container_id.to_string(), source }),
    }
}

impl Containerizer for ProcessContainerizer {
    async fn launch(&self, spec: &LaunchSpec) -> Result<(), ContainerError> {
        let fail = |e: ProcessError| ContainerError::launch(&spec.container_id, e);
        if let Some(v) = spec.volumes.first() {
            return Err(fail(VolumeError::of(v, Problem::NeedsIsolation).into()));
        }
        // Appended to: the fetcher may already have written to `stderr`.
        let open = |name: &str| {
            let path = spec.sandbox.join(name);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| fail(ProcessError::Open { path, source }))
        };
        let (stdout, stderr) = (open("stdout")?, open("stderr")?);
        let mut cmd = Self::command(spec);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let program = if spec.command.shell { "/bin/sh" } else { spec.command.value.as_str() };
        let child = cmd.spawn().map_err(|source| fail(ProcessError::Spawn { program: program.to_string(), source }))?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).ok_or_else(|| fail(ProcessError::NoPid))?;
        let mut containers = self.containers.lock().map_err(|_| fail(ProcessError::Poisoned))?;
        containers.insert(spec.container_id.clone(), Entry { pgid, child: Some(child) });
        Ok(())
    }

    async fn wait(&self, container_id: &str) -> Result<Termination, ContainerError> {
        let child = {
            let mut containers =
                self.containers.lock().map_err(|_| ContainerError::Unknown(container_id.to_string()))?;
            let entry =
                containers.get_mut(container_id).ok_or_else(|| ContainerError::Unknown(container_id.to_string()))?;
            entry.child.take()
        };
        let mut child =
            child.ok_or_else(|| ContainerError::AlreadyWaited { container_id: container_id.to_string() })?;
        let status = child
            .wait()
            .await
            .map_err(|e| ContainerError::Wait { container_id: container_id.to_string(), source: e.into() })?;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => Termination::Exited(code),
            (None, Some(sig)) => Termination::Signaled(sig),
            (None, None) => Termination::Exited(-1),
        })
    }

    async fn kill(&self, container_id: &str, signal: Signal) -> Result<(), ContainerError> {
        let pgid = self.pgid(container_id)?;
        signal_group(container_id, pgid, signal)
    }

    async fn destroy(&self, container_id: &str) -> Result<(), ContainerError> {
        let entry = self.containers.lock().ok().and_then(|mut c| c.remove(container_id));
        let Some(entry) = entry else { return Ok(()) };
        // Whatever the task left behind in its group goes too; an unwaited child is reaped by tokio once dropped.
        signal_group(container_id, entry.pgid, Signal::SIGKILL)
    }

    async fn recover(&self) -> Result<Vec<RecoveredContainer>, ContainerError> {
        Ok(vec![])
    }

    async fn usage(&self, container_id: &str) -> Result<Usage, ContainerError> {
        let pgid = self.pgid(container_id)?;
        let fail = |e: ProcessError| ContainerError::Usage { container_id: container_id.to_string(), source: e.into() };
        let read = |path: String| {
            std::fs::read_to_string(&path).map_err(|source| fail(ProcessError::Open { path: path.into(), source }))
        };
        let stat = read(format!("/proc/{pgid}/stat"))?;
        let status = read(format!("/proc/{pgid}/status"))?;
        parse_usage(&stat, &status).ok_or_else(|| fail(ProcessError::Parse(format!("/proc/{pgid}/stat").into())))
    }

    fn check_command(
        &self,
        _container_id: &str,
        command: &agora_proto::model::CommandInfo,
        env: &[(String, String)],
        sandbox: &std::path::Path,
    ) -> Result<Command, ContainerError> {
        // No container to enter: the check runs like the task, a plain process in the sandbox.
        Ok(super::host_command(command, env, sandbox))
    }
}

/// CPU times from `/proc/<pid>/stat` and `VmRSS` from `/proc/<pid>/status`.
fn parse_usage(stat: &str, status: &str) -> Option<Usage> {
    // Fields after the command name `(...)`, which may itself hold spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(Usage {
        cpus_user_time_secs: utime / USER_HZ,
        cpus_system_time_secs: stime / USER_HZ,
        mem_rss_bytes: rss_kb * 1024,
        cpus_limit: None,
        mem_limit_bytes: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::model::CommandInfo;
    use std::time::Duration;

    fn spec(dir: &std::path::Path, command: CommandInfo) -> LaunchSpec {
        LaunchSpec {
            container_id: "c1".into(),
            task_id: "t1".into(),
            framework_id: "f1".into(),
            command,
            env: vec![("GREETING".into(), "hi there".into()), ("PATH".into(), "/usr/bin:/bin".into())],
            sandbox: dir.to_path_buf(),
            limits: Default::default(),
            user: None,
            rootfs: None,
            image: None,
            volumes: vec![],
            working_dir: None,
            network: None,
        }
    }

    #[test]
    fn parses_proc_stat() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10";
        let u = parse_usage(stat, "Name: x\nVmRSS:\t  2048 kB\n").unwrap();
        assert_eq!(u.cpus_user_time_secs, 2.5);
        assert_eq!(u.cpus_system_time_secs, 0.5);
        assert_eq!(u.mem_rss_bytes, 2048 * 1024);
    }

    #[tokio::test]
    async fn shell_command_writes_stdout_in_its_sandbox_with_its_env() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let s = spec(dir.path(), CommandInfo::shell("echo \"$GREETING\" from $(pwd); echo oops >&2; exit 4"));
        c.launch(&s).await.unwrap();
        let t = tokio::time::timeout(Duration::from_secs(10), c.wait("c1")).await.unwrap().unwrap();
        assert_eq!(t, Termination::Exited(4));
        let out = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        assert_eq!(out.trim(), format!("hi there from {}", canonical.display()));
        assert_eq!(std::fs::read_to_string(dir.path().join("stderr")).unwrap().trim(), "oops");
        assert!(matches!(c.wait("c1").await, Err(ContainerError::AlreadyWaited { .. })));
        c.destroy("c1").await.unwrap();
        assert!(matches!(c.wait("c1").await, Err(ContainerError::Unknown(_))));
    }

    #[tokio::test]
    async fn argv_command_and_missing_executable() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let mut cmd = CommandInfo::shell("/bin/echo");
        cmd.shell = false;
        cmd.arguments = vec!["echo".into(), "a b".into(), "c".into()];
        c.launch(&spec(dir.path(), cmd)).await.unwrap();
        let t = tokio::time::timeout(Duration::from_secs(10), c.wait("c1")).await.unwrap().unwrap();
        assert_eq!(t, Termination::Exited(0));
        assert_eq!(std::fs::read_to_string(dir.path().join("stdout")).unwrap(), "a b c\n");

        let mut missing = CommandInfo::shell("/no/such/program");
        missing.shell = false;
        let mut s = spec(dir.path(), missing);
        s.container_id = "c2".into();
        let err = c.launch(&s).await.unwrap_err().to_string();
        assert!(err.contains("c2") && err.contains("'/no/such/program'"), "{err}");
    }

    #[tokio::test]
    async fn volumes_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let mut s = spec(dir.path(), CommandInfo::shell("true"));
        s.volumes = vec![agora_proto::model::Volume {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            read_only: true,
        }];
        let err = c.launch(&s).await.unwrap_err().to_string();
        assert!(err.contains("volume '/data' (host_path '/srv')") && err.contains("--isolation=libcontainer"), "{err}");
    }

    #[tokio::test]
    async fn kill_signals_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        // The shell stays the leader and waits for its child sleep, so both must die.
        c.launch(&spec(dir.path(), CommandInfo::shell("sleep 60 & wait"))).await.unwrap();
        let usage = c.usage("c1").await.unwrap();
        assert!(usage.cpus_user_time_secs >= 0.0);
        c.kill("c1", Signal::SIGTERM).await.unwrap();
        let t = tokio::time::timeout(Duration::from_secs(10), c.wait("c1")).await.unwrap().unwrap();
        assert_eq!(t, Termination::Signaled(15));
        c.destroy("c1").await.unwrap();
        assert!(matches!(c.kill("c1", Signal::SIGTERM).await, Err(ContainerError::Unknown(_))));
    }
}
