//! The seam between the agent and whatever runs tasks: the [`Containerizer`] trait, what a launch needs
//! ([`LaunchSpec`], in [`spec`]), how a container ended ([`Termination`]), and a recording fake for tests.
//!
//! [`ProcessContainerizer`] runs a task as a plain process group; [`LibcontainerContainerizer`] runs it in a
//! container of its own (youki's libcontainer, cgroups, namespaces) behind a per-container monitor process that
//! outlives the agent (see [`crate::monitor`]); [`SimulatedContainerizer`] runs nothing at all (tasks run from
//! launch until killed), for benchmarks and tests at scale.

pub mod disk;
mod libcontainer;
mod process;
pub(crate) mod rootfs;
mod simulated;
pub mod spec;
pub mod volumes;

use std::future::Future;
use std::path::Path;

use agora_proto::model::CommandInfo;
use nix::sys::signal::Signal;

pub use libcontainer::files as monitor_files;
pub use libcontainer::{
    CFS_PERIOD_US, CGROUP_PARENT, LibcontainerContainerizer, LibcontainerError, LibcontainerOptions, MonitorLaunch,
    MonitorRecord, MonitorReport, find_monitor, libcontainer_unavailable, lookup_user,
};
pub use process::ProcessContainerizer;
pub use simulated::SimulatedContainerizer;
pub use spec::{LaunchSpec, Limits, SANDBOX_MOUNT};

/// A limit the container hit, which ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limitation {
    /// The kernel OOM-killed a process of the container's memory cgroup.
    Memory { limit_bytes: u64 },
    /// The sandbox grew beyond the task's `disk`.
    Disk { limit_bytes: u64, used_bytes: u64 },
}

impl Limitation {
    /// Mesos's wording, with the limit.
    pub fn message(self) -> String {
        match self {
            Limitation::Memory { limit_bytes } => format!(
                "Memory limit exceeded: Requested: {}MB ({limit_bytes} bytes); the kernel killed the task for running \
                 out of memory",
                limit_bytes / (1024 * 1024)
            ),
            Limitation::Disk { limit_bytes, used_bytes } => format!(
                "Disk usage ({}MB, {used_bytes} bytes) exceeds quota ({}MB, {limit_bytes} bytes)",
                used_bytes / (1024 * 1024),
                limit_bytes / (1024 * 1024)
            ),
        }
    }
}

/// How a container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signaled(i32),
    /// The container was stopped because it hit a limit.
    Limited(Limitation),
}

impl Termination {
    /// Mesos's wording: `Command exited with status 3`, `Command terminated with signal SIGKILL`.
    pub fn message(self) -> String {
        match self {
            Termination::Exited(code) => format!("Command exited with status {code}"),
            Termination::Signaled(sig) => format!("Command terminated with signal {}", signal_name(sig)),
            Termination::Limited(limitation) => limitation.message(),
        }
    }

    pub fn success(self) -> bool {
        self == Termination::Exited(0)
    }
}

/// `SIGTERM` for 15; the number for signals nix does not know.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}

/// Resource usage of a container, as far as it is cheap to find out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpus_user_time_secs: f64,
    pub cpus_system_time_secs: f64,
    pub mem_rss_bytes: u64,
    pub cpus_limit: Option<f64>,
    pub mem_limit_bytes: Option<u64>,
}

/// A container found when the agent starts, as its monitor left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredContainer {
    pub container_id: String,
    pub state: Recovered,
}

/// What became of a container while the agent was away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// Still running; `wait` works on it again.
    Running,
    /// Ended while the agent was down; the monitor recorded how.
    Ended(Termination),
    /// Its monitor is gone without a record, or its checkpoint cannot be read.
    Lost(String),
}

/// Any error a containerizer reports about one container, kept whole (its type is the containerizer's own).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a containerizer could not do what was asked; each names the container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot launch container {container_id}: {source}")]
    Launch { container_id: String, source: BoxError },
    #[error("unknown container {0}")]
    Unknown(String),
    #[error("container {container_id} is already being waited for")]
    AlreadyWaited { container_id: String },
    #[error("cannot signal container {container_id}: {source}")]
    Signal { container_id: String, source: nix::Error },
    #[error("cannot wait for container {container_id}: {source}")]
    Wait { container_id: String, source: BoxError },
    #[error("cannot read usage of container {container_id}: {source}")]
    Usage { container_id: String, source: BoxError },
    #[error("cannot run a check in container {container_id}: {source}")]
    Check { container_id: String, source: BoxError },
    #[error("cannot recover containers: {0}")]
    Recover(BoxError),
}

impl ContainerError {
    /// The launch of `container_id` failed with the containerizer's own error.
    pub fn launch(container_id: &str, source: impl Into<BoxError>) -> ContainerError {
        ContainerError::Launch { container_id: container_id.to_string(), source: source.into() }
    }
}

/// Runs task containers. Methods take `&self` so one containerizer serves concurrent launches, waits and kills.
pub trait Containerizer: Send + Sync + 'static {
    /// Starts the container; returns once its process exists.
    fn launch(&self, spec: &LaunchSpec) -> impl Future<Output = Result<(), ContainerError>> + Send;
    /// Resolves when the container's main process ends (once per container).
    fn wait(&self, container_id: &str) -> impl Future<Output = Result<Termination, ContainerError>> + Send;
    /// Sends `signal` to every process of the container.
    fn kill(&self, container_id: &str, signal: Signal) -> impl Future<Output = Result<(), ContainerError>> + Send;
    /// Kills what is left of the container and forgets it.
    fn destroy(&self, container_id: &str) -> impl Future<Output = Result<(), ContainerError>> + Send;
    /// Containers that survived an agent restart (none for plain processes). `wait`, `kill`, `destroy` and `usage`
    /// work on the `Running` ones afterwards; `destroy` cleans up the others.
    fn recover(&self) -> impl Future<Output = Result<Vec<RecoveredContainer>, ContainerError>> + Send;
    /// CPU times and resident memory of the container, and its limits where it has any.
    fn usage(&self, container_id: &str) -> impl Future<Output = Result<Usage, ContainerError>> + Send;
    /// A command that runs `command` in the context of the running container — its namespaces, root, working
    /// directory and user where it has them — with exactly `env` (the task's, with `sandbox` its host path): a
    /// COMMAND health check, which Mesos also runs inside the task's container.
    fn check_command(
        &self,
        container_id: &str,
        command: &CommandInfo,
        env: &[(String, String)],
        sandbox: &Path,
    ) -> Result<tokio::process::Command, ContainerError>;
}

/// `command` as a plain host process in `cwd` with exactly `env`: `/bin/sh -c value` for a shell command, otherwise
/// `value` with `arguments` as its whole argv (argv[0] included, as in Mesos).
pub fn host_command(command: &CommandInfo, env: &[(String, String)], cwd: &Path) -> tokio::process::Command {
    let mut cmd = if command.shell {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(&command.value);
        cmd
    } else {
        let mut cmd = tokio::process::Command::new(&command.value);
        if let Some((argv0, rest)) = command.arguments.split_first() {
            cmd.arg0(argv0).args(rest);
        }
        cmd
    };
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v))).current_dir(cwd);
    cmd
}

/// A recording fake: every call is logged; `wait` resolves when the test calls [`FakeContainerizer::exit`].
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    #[derive(Debug, Clone, PartialEq)]
    #[allow(clippy::large_enum_variant)]
    pub enum Call {
        Launch(LaunchSpec),
        Wait(String),
        Kill(String, Signal),
        Destroy(String),
    }

    #[derive(Default)]
    pub struct FakeContainerizer {
        pub calls: Mutex<Vec<Call>>,
        /// Launches of these task ids fail.
        pub fail_launch: Mutex<Vec<String>>,
        /// What `recover` reports.
        pub recovered: Mutex<Vec<RecoveredContainer>>,
        exits: Mutex<HashMap<String, oneshot::Sender<Termination>>>,
        waits: Mutex<HashMap<String, oneshot::Receiver<Termination>>>,
    }

    impl FakeContainerizer {
        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }

        /// Ends the container's main process.
        pub fn exit(&self, container_id: &str, how: Termination) {
            if let Some(tx) = self.exits.lock().ok().and_then(|mut e| e.remove(container_id)) {
                let _ = tx.send(how);
            }
        }

        fn record(&self, call: Call) {
            if let Ok(mut c) = self.calls.lock() {
                c.push(call);
            }
        }
    }

    impl Containerizer for FakeContainerizer {
        async fn launch(&self, spec: &LaunchSpec) -> Result<(), ContainerError> {
            self.record(Call::Launch(spec.clone()));
            if self.fail_launch.lock().map(|f| f.contains(&spec.task_id)).unwrap_or(false) {
                return Err(ContainerError::launch(&spec.container_id, "told to fail"));
            }
            let (tx, rx) = oneshot::channel();
            if let (Ok(mut e), Ok(mut w)) = (self.exits.lock(), self.waits.lock()) {
                e.insert(spec.container_id.clone(), tx);
                w.insert(spec.container_id.clone(), rx);
            }
            Ok(())
        }

        async fn wait(&self, container_id: &str) -> Result<Termination, ContainerError> {
            self.record(Call::Wait(container_id.to_string()));
            let rx = self.waits.lock().ok().and_then(|mut w| w.remove(container_id));
            let rx = rx.ok_or_else(|| ContainerError::Unknown(container_id.to_string()))?;
            rx.await.map_err(|_| ContainerError::Unknown(container_id.to_string()))
        }

        async fn kill(&self, container_id: &str, signal: Signal) -> Result<(), ContainerError> {
            self.record(Call::Kill(container_id.to_string(), signal));
            Ok(())
        }

        async fn destroy(&self, container_id: &str) -> Result<(), ContainerError> {
            self.record(Call::Destroy(container_id.to_string()));
            Ok(())
        }

        async fn recover(&self) -> Result<Vec<RecoveredContainer>, ContainerError> {
            Ok(self.recovered.lock().map(|r| r.clone()).unwrap_or_default())
        }

        async fn usage(&self, _container_id: &str) -> Result<Usage, ContainerError> {
            Ok(Usage::default())
        }

        fn check_command(
            &self,
            _container_id: &str,
            command: &CommandInfo,
            env: &[(String, String)],
            sandbox: &Path,
        ) -> Result<tokio::process::Command, ContainerError> {
            Ok(host_command(command, env, sandbox))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_messages_match_mesos() {
        assert_eq!(Termination::Exited(0).message(), "Command exited with status 0");
        assert_eq!(Termination::Exited(3).message(), "Command exited with status 3");
        assert_eq!(Termination::Signaled(9).message(), "Command terminated with signal SIGKILL");
        assert_eq!(Termination::Signaled(15).message(), "Command terminated with signal SIGTERM");
        assert!(Termination::Exited(0).success());
        assert!(!Termination::Signaled(15).success());
    }
}
