//! `--isolation=simulated`: tasks that run no process at all, for benchmarks and tests at scale. A launched task
//! "runs" at once and keeps running until it is killed; a signal ends it as it would end a process without a
//! handler (`Signaled(sig)`), so the agent reports TASK_KILLED as for a real task. Everything else (sandbox,
//! status updates, checkpoints, the link to the master) is the real agent's; what only a running process would
//! see (the command, user, rootfs, volumes) has no effect, and health checks find no task: HTTP and TCP checks
//! reach nothing, a COMMAND check runs on the host in the sandbox.
//!
//! Simulated tasks survive an agent restart, as libcontainer's containers do: nothing ran, so nothing can have
//! died. `recover` reads the agent's checkpoint (`<work_dir>/meta`, see [`crate::checkpoint`]) and reports every
//! container of a live task there as still running.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::Signal;
use tokio::sync::oneshot;

use super::{ContainerError, Containerizer, LaunchSpec, Limits, Recovered, RecoveredContainer, Termination, Usage};

/// Why a simulated task could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SimulatedError {
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("a container with this id already runs")]
    Duplicate,
}

/// One simulated container.
struct Entry {
    limits: Limits,
    /// Ends the task; taken by the first signal.
    end: Option<oneshot::Sender<Termination>>,
    /// Taken by `wait`.
    ended: Option<oneshot::Receiver<Termination>>,
}

impl Entry {
    fn new(limits: Limits) -> Entry {
        let (end, ended) = oneshot::channel();
        Entry { limits, end: Some(end), ended: Some(ended) }
    }
}

/// Runs every task as a simulation: no process, running from launch until killed.
pub struct SimulatedContainerizer {
    work_dir: PathBuf,
    containers: Mutex<HashMap<String, Entry>>,
}

impl SimulatedContainerizer {
    /// A containerizer for the agent whose work dir is `work_dir` (where `recover` finds the checkpoint).
    pub fn new(work_dir: impl Into<PathBuf>) -> SimulatedContainerizer {
        SimulatedContainerizer { work_dir: work_dir.into(), containers: Mutex::new(HashMap::new()) }
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Nothing panics while holding the lock, so a poisoned map is still consistent.
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Containerizer for SimulatedContainerizer {
    async fn launch(&self, spec: &LaunchSpec) -> Result<(), ContainerError> {
        let fail = |e: SimulatedError| ContainerError::launch(&spec.container_id, e);
        // The sandbox looks like a real task's, so `task log` and `/files` work; stdout says what did not run.
        let note = format!("simulated task (agent --isolation=simulated): not running {:?}\n", spec.command.value);
        let stdout = spec.sandbox.join("stdout");
        std::fs::write(&stdout, note)
            .map_err(|source| fail(SimulatedError::Create { path: stdout.clone(), source }))?;
        let stderr = spec.sandbox.join("stderr");
        std::fs::write(&stderr, "").map_err(|source| fail(SimulatedError::Create { path: stderr.clone(), source }))?;
        let mut containers = self.containers();
        if containers.contains_key(&spec.container_id) {
            return Err(fail(SimulatedError::Duplicate));
        }
        containers.insert(spec.container_id.clone(), Entry::new(spec.limits));
        Ok(())
    }

    async fn wait(&self, container_id: &str) -> Result<Termination, ContainerError> {
        let ended = {
            let mut containers = self.containers();
            let entry =
                containers.get_mut(container_id).ok_or_else(|| ContainerError::Unknown(container_id.to_string()))?;
            entry
                .ended
                .take()
                .ok_or_else(|| ContainerError::AlreadyWaited { container_id: container_id.to_string() })?
        };
        // The sender goes away only when the container is destroyed, which kills what is left of it.
        Ok(ended.await.unwrap_or(Termination::Signaled(Signal::SIGKILL as i32)))
    }

    async fn kill(&self, container_id: &str, signal: Signal) -> Result<(), ContainerError> {
        let mut containers = self.containers();
        let entry =
            containers.get_mut(container_id).ok_or_else(|| ContainerError::Unknown(container_id.to_string()))?;
        if let Some(end) = entry.end.take() {
            let _ = end.send(Termination::Signaled(signal as i32));
        }
        Ok(())
    }

    async fn destroy(&self, container_id: &str) -> Result<(), ContainerError> {
        self.containers().remove(container_id);
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<RecoveredContainer>, ContainerError> {
        // The agent read the checkpoint just before (and stopped on what `--strict` refuses): what it skipped under
        // `--strict=false` is skipped here too, and a container no recovered task claims is destroyed anyway.
        let recovered =
            crate::checkpoint::read(&self.work_dir, false).map_err(|e| ContainerError::Recover(e.into()))?;
        let Some(checkpoint) = recovered.map(|r| r.checkpoint) else { return Ok(vec![]) };
        let mut containers = self.containers();
        let mut recovered = Vec::new();
        for task in checkpoint.tasks.into_iter().filter(|t| t.live) {
            // The limits are not checkpointed; a recovered simulation reports none.
            containers.insert(task.container_id.clone(), Entry::new(Limits::default()));
            recovered.push(RecoveredContainer { container_id: task.container_id, state: Recovered::Running });
        }
        Ok(recovered)
    }

    async fn usage(&self, container_id: &str) -> Result<Usage, ContainerError> {
        let containers = self.containers();
        let entry = containers.get(container_id).ok_or_else(|| ContainerError::Unknown(container_id.to_string()))?;
        Ok(Usage { cpus_limit: entry.limits.cpus, mem_limit_bytes: entry.limits.mem_bytes, ..Usage::default() })
    }

    fn check_command(
        &self,
        _container_id: &str,
        command: &agora_proto::model::CommandInfo,
        env: &[(String, String)],
        sandbox: &std::path::Path,
    ) -> Result<tokio::process::Command, ContainerError> {
        // There is no task to look at: a COMMAND check runs on the host in the sandbox, as with plain processes.
        Ok(super::host_command(command, env, sandbox))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::model::CommandInfo;
    use std::time::Duration;

    fn spec(dir: &std::path::Path, id: &str) -> LaunchSpec {
        LaunchSpec {
            container_id: id.into(),
            task_id: format!("task-{id}"),
            framework_id: "f1".into(),
            command: CommandInfo::shell("exit 3"),
            env: vec![],
            sandbox: dir.to_path_buf(),
            limits: Limits { cpus: Some(0.5), mem_bytes: Some(64 << 20), disk_bytes: None },
            user: None,
            rootfs: None,
            volumes: vec![],
            working_dir: None,
            image: None,
            network: None,
        }
    }

    #[tokio::test]
    async fn a_task_runs_until_killed_and_ends_by_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimulatedContainerizer::new(dir.path());
        c.launch(&spec(dir.path(), "c1")).await.unwrap();
        let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        assert!(stdout.contains("simulated") && stdout.contains("exit 3"), "{stdout}");
        assert_eq!(std::fs::read_to_string(dir.path().join("stderr")).unwrap(), "");
        let usage = c.usage("c1").await.unwrap();
        assert_eq!((usage.cpus_limit, usage.mem_limit_bytes), (Some(0.5), Some(64 << 20)));

        let c = std::sync::Arc::new(c);
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait("c1").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the command `exit 3` is not run: the task keeps running");
        assert!(matches!(c.wait("c1").await, Err(ContainerError::AlreadyWaited { .. })));

        c.kill("c1", Signal::SIGTERM).await.unwrap();
        let t = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
        assert_eq!(t, Termination::Signaled(15));
        c.kill("c1", Signal::SIGKILL).await.unwrap();
        c.destroy("c1").await.unwrap();
        assert!(matches!(c.kill("c1", Signal::SIGTERM).await, Err(ContainerError::Unknown(_))));
        assert!(matches!(c.usage("c1").await, Err(ContainerError::Unknown(_))));
    }

    #[tokio::test]
    async fn destroy_ends_a_waited_task_with_sigkill_and_ids_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(SimulatedContainerizer::new(dir.path()));
        c.launch(&spec(dir.path(), "c1")).await.unwrap();
        let err = c.launch(&spec(dir.path(), "c1")).await.unwrap_err().to_string();
        assert!(err.contains("c1") && err.contains("already"), "{err}");
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait("c1").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.destroy("c1").await.unwrap();
        let t = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
        assert_eq!(t, Termination::Signaled(9));
    }

    #[tokio::test]
    async fn recover_reports_the_live_tasks_of_the_checkpoint_as_running() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimulatedContainerizer::new(dir.path());
        assert!(c.recover().await.unwrap().is_empty(), "no checkpoint, nothing to recover");

        let task = |id: &str, container_id: &str, live: bool| crate::checkpoint::TaskCheckpoint {
            framework_id: "f1".into(),
            info: agora_proto::model::TaskInfo {
                name: id.into(),
                task_id: id.into(),
                agent_id: "m-S0".into(),
                resources: Default::default(),
                command: Some(CommandInfo::shell("sleep 1")),
                container: None,
                health_check: None,
                kill_grace_period: None,
                labels: vec![],
                discovery: None,
                data: vec![],
            },
            state: agora_proto::model::TaskState::Running,
            container_id: container_id.into(),
            sandbox: "/s".into(),
            live,
            kill_grace_secs: None,
            orphaned: false,
            unhealthy_kill: None,
        };
        let cp = crate::checkpoint::AgentCheckpoint {
            agent_id: Some("m-S0".into()),
            frameworks: vec![],
            tasks: vec![task("live", "container-live", true), task("ended", "container-ended", false)],
            updates: vec![],
        };
        // The agent's own format, written as the agent writes it.
        let mut changes = crate::checkpoint::Changes {
            agent: Some(crate::checkpoint::AgentRecord {
                version: crate::checkpoint::VERSION,
                agent_id: cp.agent_id.clone(),
            }),
            ..Default::default()
        };
        for t in &cp.tasks {
            let key = crate::status_updates::TaskKey::new("f1", t.info.task_id.clone());
            let record = crate::checkpoint::TaskRecord {
                framework_id: "f1".into(),
                task_id: t.info.task_id.clone(),
                task: Some(t.clone()),
                updates: None,
            };
            changes.tasks.insert(key, Some(record));
        }
        let mut store = crate::checkpoint::CheckpointDir::open(dir.path()).unwrap();
        store.write(&changes).unwrap();

        let recovered = c.recover().await.unwrap();
        assert_eq!(
            recovered,
            vec![RecoveredContainer { container_id: "container-live".into(), state: Recovered::Running }]
        );
        c.kill("container-live", Signal::SIGTERM).await.unwrap();
        assert_eq!(c.wait("container-live").await.unwrap(), Termination::Signaled(15));

        let agent_info = dir.path().join("meta/agent.info");
        std::fs::write(&agent_info, b"{not json").unwrap();
        let err = c.recover().await.unwrap_err().to_string();
        assert!(err.contains(&agent_info.display().to_string()), "{err}");
    }
}
