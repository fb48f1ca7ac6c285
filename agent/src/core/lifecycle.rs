//! A task's way through the agent: `run_task` checks it and decides its [`LaunchSpec`] (or fails it at once), the
//! launch result makes it RUNNING (and starts its health checks), health reports update it (and may kill it), and
//! the container's end decides its terminal state and reason, as Mesos's command executor reports them.

use std::path::PathBuf;
use std::time::Instant;

use agora_proto::model::{ContainerInfo, ContainerType, FrameworkInfo, Reason, TaskInfo, TaskState};
use nix::sys::signal::Signal;
use tracing::{debug, info, info_span, warn};

use super::LaunchFailed;
use super::tasks::{Container, TaskRun};
use super::{AgentCore, Effect, Settings, TaskKey, ToMaster};
use crate::containerizer::spec::{CONTAINER_HOSTNAME, ImageRequest};
use crate::containerizer::volumes::VolumeError;
use crate::containerizer::{ContainerError, LaunchSpec, Limitation, Limits, Termination};
use crate::health::{CheckSpec, Report};
use crate::image::ImageError;
use crate::sandbox::{EnvContext, is_path_component, sandbox_dir, task_environment};

impl AgentCore {
    pub(super) fn run_task(&mut self, framework: FrameworkInfo, task: TaskInfo, now: Instant) -> Vec<Effect> {
        let framework_id = framework.id.clone().unwrap_or_default();
        let agent_id = self.agent_id.clone().unwrap_or_else(|| task.agent_id.clone());
        let _span = info_span!("run_task", task_id = %task.task_id, framework_id = %framework_id, agent_id = %agent_id)
            .entered();
        if self.shutting_down {
            warn!("ignoring run_task: the agent is shutting down");
            return vec![];
        }
        if framework_id.is_empty() {
            warn!("ignoring run_task without a framework id");
            return vec![];
        }
        let key = TaskKey::new(framework_id.clone(), task.task_id.clone());
        if self.tasks.contains_key(&key) {
            warn!("ignoring run_task: this framework already has a task with this id on this agent");
            return vec![];
        }
        if self.frameworks.get(&framework_id) != Some(&framework) {
            self.frameworks_changed.insert(framework_id.clone());
            self.frameworks.insert(framework_id.clone(), framework);
        }
        let container_id = uuid::Uuid::new_v4().to_string();
        let ids_ok = [&agent_id, &framework_id, &task.task_id].iter().all(|id| is_path_component(id));
        let sandbox = if ids_ok {
            sandbox_dir(&self.settings.work_dir, &agent_id, &framework_id, &task.task_id, &container_id)
        } else {
            PathBuf::new()
        };
        let task_id = task.task_id.clone();
        self.tasks.insert(
            key.clone(),
            TaskRun {
                framework_id: framework_id.clone(),
                info: task,
                state: TaskState::Staging,
                container_id: container_id.clone(),
                sandbox: sandbox.clone(),
                container: Container::Gone,
                kill: None,
                orphaned: false,
                unhealthy_kill: None,
                ip: None,
            },
        );
        if !ids_ok {
            let msg = format!(
                "cannot create a sandbox for task '{task_id}' of framework '{framework_id}' on agent '{agent_id}': \
                 ids must be non-empty and hold no '/'"
            );
            warn!("{msg}");
            return self.update(&key, TaskState::Failed, Some(Reason::ContainerLaunchFailed), msg, now);
        }
        let mut effects = self.update(&key, TaskState::Starting, None, String::new(), now);
        let network = match self.tasks.get(&key).map(|t| self.network_request(&t.info, CONTAINER_HOSTNAME)) {
            Some(Ok(network)) => network,
            Some(Err(refused)) => {
                let msg = refused.to_string();
                warn!("{msg}");
                effects.extend(self.update(&key, TaskState::Failed, Some(Reason::ContainerLaunchFailed), msg, now));
                return effects;
            }
            None => return effects,
        };
        let Some(t) = self.tasks.get_mut(&key) else { return effects };
        let Some(command) = t.info.command.clone() else {
            let msg = format!("task '{task_id}' has no command (custom executors are not supported)");
            warn!("{msg}");
            effects.extend(self.update(&key, TaskState::Failed, Some(Reason::ContainerLaunchFailed), msg, now));
            return effects;
        };
        let image = match check_container(t.info.container.as_ref(), &sandbox, &self.settings) {
            Ok(image) => image,
            Err(refused) => {
                let msg = refused.to_string();
                warn!("{msg}");
                effects.extend(self.update(&key, TaskState::Failed, Some(Reason::ContainerLaunchFailed), msg, now));
                return effects;
            }
        };
        let rootfs = t.info.container.as_ref().and_then(|c| c.rootfs.clone()).map(PathBuf::from);
        let volumes = t.info.container.as_ref().map(|c| c.volumes.clone()).unwrap_or_default();
        let user = command
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| self.frameworks.get(&framework_id).map(|f| f.user.clone()).filter(|u| !u.is_empty()));
        let scalar = |name: &str| {
            let v = t.info.resources.scalar(name).as_f64();
            (v > 0.0).then_some(v)
        };
        let mb = |v: f64| (v * 1024.0 * 1024.0) as u64;
        let limits =
            Limits { cpus: scalar("cpus"), mem_bytes: scalar("mem").map(mb), disk_bytes: scalar("disk").map(mb) };
        let ctx = EnvContext {
            framework_id: &framework_id,
            sandbox: &sandbox,
            hostname: &self.settings.agent.hostname,
            agent_path: self.settings.path_env.as_deref(),
        };
        let env = task_environment(&t.info, ctx);
        t.container = Container::Launching;
        info!(container_id = %container_id, sandbox = %sandbox.display(), "launching task");
        effects.push(Effect::Launch(Box::new(LaunchSpec {
            container_id,
            task_id,
            framework_id,
            command,
            env,
            sandbox,
            limits,
            user,
            rootfs,
            image,
            volumes,
            working_dir: None,
            network,
        })));
        effects
    }

    pub(super) fn invalid_task(
        &mut self,
        framework_id: &str,
        task_id: &str,
        message: &str,
        now: Instant,
    ) -> Vec<Effect> {
        let _span = info_span!("run_task", task_id = %task_id, framework_id = %framework_id).entered();
        warn!(error = %message, "invalid run_task");
        if framework_id.is_empty()
            || task_id.is_empty()
            || self.tasks.contains_key(&TaskKey::new(framework_id, task_id))
        {
            return vec![];
        }
        let status = self.status(task_id, TaskState::Failed, Some(Reason::TaskInvalid), message.to_string(), now);
        let connected = self.is_registered();
        self.updates
            .enqueue(framework_id, status, now, connected)
            .map(|o| vec![Effect::Send(ToMaster::StatusUpdate(o))])
            .unwrap_or_default()
    }

    /// The result of an [`Effect::Launch`].
    pub fn launched(
        &mut self,
        key: &TaskKey,
        container_id: &str,
        result: Result<(), LaunchFailed>,
        now: Instant,
    ) -> Vec<Effect> {
        let span = self.span("launched", key);
        let _span = span.entered();
        let known = |t: &TaskRun| t.container_id == container_id && t.container == Container::Launching;
        let Some(t) = self.tasks.get_mut_if(key, known) else {
            debug!(container_id, "launch result for an unknown container");
            return vec![];
        };
        match result {
            Err(LaunchFailed { reason, message }) => {
                warn!(error = %message, "launch failed");
                t.container = Container::Gone;
                let orphaned = t.orphaned;
                // Mappings applied when it was attached go again.
                let mut effects: Vec<Effect> =
                    self.tasks.get(key).and_then(|t| self.forwards_changed(t)).into_iter().collect();
                if orphaned {
                    self.forget(key);
                    return effects;
                }
                effects.extend(self.update(key, TaskState::Failed, Some(reason), message, now));
                effects
            }
            Ok(()) => {
                t.container = Container::Running;
                if let Some(kill) = t.kill.as_mut() {
                    // Killed while launching: no TASK_RUNNING, straight to SIGTERM.
                    kill.escalate_at = Some(now + kill.grace);
                    info!("launched while a kill was pending; sending SIGTERM");
                    let signal = Effect::Signal {
                        task: key.clone(),
                        container_id: container_id.into(),
                        signal: Signal::SIGTERM,
                    };
                    return vec![signal];
                }
                info!("task is running");
                // Its port mappings were applied when it was attached (`network_attached`).
                let mut effects = self.update(key, TaskState::Running, None, String::new(), now);
                effects.extend(self.start_health_check(key));
                effects
            }
        }
    }

    /// The container's main process ended (or could not be waited for).
    pub fn exited(
        &mut self,
        key: &TaskKey,
        container_id: &str,
        result: Result<Termination, ContainerError>,
        now: Instant,
    ) -> Vec<Effect> {
        let span = self.span("exited", key);
        let _span = span.entered();
        let known = |t: &TaskRun| t.container_id == container_id && t.container != Container::Gone;
        let Some(t) = self.tasks.get_mut_if(key, known) else {
            debug!(container_id, "exit of an unknown or already ended container");
            return vec![];
        };
        t.container = Container::Gone;
        let unhealthy_kill = t.unhealthy_kill.clone();
        let mut effects = vec![Effect::Destroy { task: Some(key.clone()), container_id: container_id.into() }];
        effects.extend(self.tasks.get(key).and_then(|t| self.forwards_changed(t)));
        let Some(t) = self.tasks.get_mut(key) else { return effects };
        if t.info.health_check.is_some() {
            effects.push(Effect::StopHealthCheck { task: key.clone() });
        }
        if t.orphaned {
            info!("orphaned task ended");
            t.state = TaskState::Killed;
            self.forget(key);
            return effects;
        }
        let killed = t.kill.is_some();
        let (state, reason, message) = match result {
            Ok(term) if killed => (TaskState::Killed, None, term.message()),
            Ok(Termination::Limited(l)) => {
                let reason = match l {
                    Limitation::Memory { .. } => Reason::ContainerLimitationMemory,
                    Limitation::Disk { .. } => Reason::ContainerLimitationDisk,
                };
                (TaskState::Failed, Some(reason), l.message())
            }
            Ok(term) if term.success() => (TaskState::Finished, None, term.message()),
            Ok(term) => (TaskState::Failed, Some(Reason::CommandExecutorFailed), term.message()),
            Err(e) if killed => (TaskState::Killed, None, format!("cannot wait for the command: {e}")),
            Err(e) => {
                (TaskState::Failed, Some(Reason::CommandExecutorFailed), format!("cannot wait for the command: {e}"))
            }
        };
        info!(state = %state, message = %message, "task ended");
        match unhealthy_kill {
            // As Mesos's executors: the end of a task killed for failing its checks says `healthy: false`.
            Some(why) => {
                let message = format!("{why}; {message}");
                effects.extend(self.update_health(key, state, reason, message, Some(false), now));
            }
            None => effects.extend(self.update(key, state, reason, message, now)),
        }
        effects
    }

    /// The task's health checking, if it has a check.
    pub(super) fn start_health_check(&self, key: &TaskKey) -> Option<Effect> {
        let t = self.tasks.get(key)?;
        let check = t.info.health_check.clone()?;
        let ctx = EnvContext {
            framework_id: &t.framework_id,
            sandbox: &t.sandbox,
            hostname: &self.settings.agent.hostname,
            agent_path: self.settings.path_env.as_deref(),
        };
        Some(Effect::StartHealthCheck(Box::new(CheckSpec {
            task: key.clone(),
            container_id: t.container_id.clone(),
            check,
            env: task_environment(&t.info, ctx),
            sandbox: t.sandbox.clone(),
            host: t.ip.map(std::net::IpAddr::V4),
        })))
    }

    /// A health check result of a running task: a TASK_RUNNING update with `healthy` and
    /// `REASON_TASK_HEALTH_CHECK_STATUS_UPDATED`; and when the failures reached the limit, the task is killed through
    /// the normal kill path (its kill policy, TASK_KILLING), as Mesos's executors kill it without asking anyone.
    pub fn health(&mut self, key: &TaskKey, container_id: &str, report: Report, now: Instant) -> Vec<Effect> {
        let span = self.span("health", key);
        let _span = span.entered();
        let current = |t: &TaskRun| {
            t.container_id == container_id
                && t.container == Container::Running
                && t.state == TaskState::Running
                && t.kill.is_none()
                && !t.orphaned
        };
        let Some(t) = self.tasks.get_mut_if(key, current) else {
            debug!(container_id, "ignoring a health report for a task that is not running");
            return vec![];
        };
        if report.kill {
            t.unhealthy_kill = Some(report.message.clone());
        }
        if report.healthy {
            info!("task is healthy");
        } else {
            warn!(consecutive_failures = report.consecutive_failures, kill = report.kill, "{}", report.message);
        }
        let reason = Some(Reason::TaskHealthCheckStatusUpdated);
        let mut effects =
            self.update_health(key, TaskState::Running, reason, report.message, Some(report.healthy), now);
        if report.kill {
            effects.extend(self.kill_task(&key.framework_id, &key.task_id, None, now));
        }
        effects
    }
}

/// Why the agent refuses a task's container before anything is fetched or launched.
#[derive(Debug, thiserror::Error)]
pub enum ContainerRefused {
    #[error("container type DOCKER is not supported: this agent has no Docker containerizer (use MESOS)")]
    Docker,
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("the container sets both rootfs '{rootfs}' and image '{image}'")]
    RootfsAndImage { rootfs: String, image: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Refuses, before anything is fetched or launched, a container this agent cannot give the task: a DOCKER container
/// (there is no Docker engine), a volume that cannot be bound (see [`crate::containerizer::volumes`]) or an image it
/// cannot run. An image becomes the request the launcher resolves to a rootfs.
fn check_container(
    container: Option<&ContainerInfo>,
    sandbox: &std::path::Path,
    settings: &Settings,
) -> Result<Option<ImageRequest>, ContainerRefused> {
    let Some(c) = container else { return Ok(None) };
    if c.kind == ContainerType::Docker {
        return Err(ContainerRefused::Docker);
    }
    crate::containerizer::volumes::plan(&c.volumes, sandbox)?;
    let Some(image) = &c.image else { return Ok(None) };
    if let Some(rootfs) = &c.rootfs {
        return Err(ContainerRefused::RootfsAndImage { rootfs: rootfs.clone(), image: image.clone() });
    }
    Ok(Some(settings.images.request(image, &settings.work_dir)?))
}
