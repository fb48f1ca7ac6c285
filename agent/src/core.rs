//! The agent's pure core: task lifecycles, the link state with the master and the status update manager, as one
//! state machine. Every input (a master message, a launch result, a process exit, a timer) is a method that takes
//! `now` and returns [`Effect`]s; the tokio shell (`crate::shell`) carries them out. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_proto::model::{
    AgentInfo, Capability, ContainerInfo, ContainerType, FrameworkInfo, MasterInfo, Reason, Source, TaskInfo,
    TaskState, TaskStatus,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tracing::{debug, info, info_span, warn};

use crate::checkpoint::{AgentCheckpoint, AgentRecord, Changes, TaskCheckpoint, TaskRecord};
use crate::containerizer::{LaunchSpec, Limitation, Limits, Recovered, RecoveredContainer, Termination};
use crate::health::{CheckSpec, Report};
use crate::sandbox::{EnvContext, is_path_component, sandbox_dir, task_environment};
pub use crate::status_updates::TaskKey;
use crate::status_updates::{AckOutcome, Outbound, StatusUpdateManager};

/// The longest grace period a kill policy may ask for; longer ones are cut to it.
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How many finished tasks `/state` remembers.
pub const MAX_COMPLETED_TASKS: usize = 1000;

/// What the core is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent as it registers (without an id): hostname, ip, HTTP port, resources, attributes.
    pub agent: AgentInfo,
    pub work_dir: PathBuf,
    pub status_update_retry_interval: Duration,
    pub executor_shutdown_grace_period: Duration,
    /// The agent's own `PATH`, handed to tasks.
    pub path_env: Option<String>,
    /// When the agent started: a monotonic instant and the same moment in Unix seconds.
    pub started: (Instant, f64),
    /// Whether and from where `container.image` is resolved (`--docker-registry`).
    pub images: crate::image::ImageSupport,
}

/// A message from the master, already converted from the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum FromMaster {
    Registered {
        agent_id: String,
        master: Option<MasterInfo>,
    },
    Ping,
    RunTask {
        framework: Box<FrameworkInfo>,
        task: Box<TaskInfo>,
    },
    /// A `run_task` whose framework or task did not convert; reported as TASK_FAILED when it names both ids.
    InvalidTask {
        framework_id: String,
        task_id: String,
        message: String,
    },
    KillTask {
        framework_id: String,
        task_id: String,
        grace: Option<Duration>,
    },
    Acknowledge {
        framework_id: String,
        task_id: String,
        uuid: Vec<u8>,
    },
    ShutdownFramework {
        framework_id: String,
    },
    Error {
        message: String,
    },
}

impl FromMaster {
    pub fn run_task(framework: FrameworkInfo, task: TaskInfo) -> FromMaster {
        FromMaster::RunTask { framework: Box::new(framework), task: Box::new(task) }
    }
}

/// The first message on a new stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    Register { agent: AgentInfo },
    Reregister { agent: AgentInfo, tasks: Vec<ReportedTask>, frameworks: Vec<FrameworkInfo> },
}

/// A task as reported on reregistration.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedTask {
    pub framework_id: String,
    pub task: TaskInfo,
    pub state: TaskState,
}

/// A message for the master.
#[derive(Debug, Clone, PartialEq)]
pub enum ToMaster {
    Pong,
    StatusUpdate(Outbound),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send on the current stream (dropped when there is none; status updates are re-sent anyway).
    Send(ToMaster),
    /// Create the sandbox, launch the container, then wait for it; report with `launched` and `exited`.
    Launch(Box<LaunchSpec>),
    Signal {
        task: TaskKey,
        container_id: String,
        signal: Signal,
    },
    /// Clean up an exited container; `task` is `None` for a recovered container no task claims.
    Destroy {
        task: Option<TaskKey>,
        container_id: String,
    },
    /// Wait again for a container that survived an agent restart; report with `exited`.
    Reattach {
        task: TaskKey,
        container_id: String,
    },
    /// Start checking the health of a running task; report with `health`.
    StartHealthCheck(Box<CheckSpec>),
    /// Stop checking the task's health (it is being killed, or it ended).
    StopHealthCheck {
        task: TaskKey,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Disconnected,
    Registering,
    Registered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    /// Launch requested, result not yet known.
    Launching,
    Running,
    /// Exited, failed to launch, or never launched.
    Gone,
}

#[derive(Debug, Clone)]
struct Kill {
    grace: Duration,
    /// When SIGKILL follows; set once SIGTERM went out.
    escalate_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct TaskRun {
    framework_id: String,
    info: TaskInfo,
    state: TaskState,
    container_id: String,
    sandbox: PathBuf,
    container: Container,
    kill: Option<Kill>,
    /// The master forgot this agent: no more updates for this task, just stop it.
    orphaned: bool,
    /// Killed for failing its health checks, with why: its terminal update says `healthy: false` and this.
    unhealthy_kill: Option<String>,
}

#[derive(Debug, Clone)]
struct CompletedTask {
    framework_id: String,
    info: TaskInfo,
    state: TaskState,
}

/// The sandbox collector asks here which directories the agent still uses: those of tracked tasks (running, or
/// ended and not yet forgotten).
impl crate::gc::InUse for AgentCore {
    fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    fn uses_container(&self, framework_id: &str, task_id: &str, container_id: &str) -> bool {
        self.tasks.get(&TaskKey::new(framework_id, task_id)).is_some_and(|t| t.container_id == container_id)
    }

    fn uses_task(&self, framework_id: &str, task_id: &str) -> bool {
        self.tasks.get(&TaskKey::new(framework_id, task_id)).is_some()
    }

    fn uses_framework(&self, framework_id: &str) -> bool {
        self.tasks.of_framework(framework_id).next().is_some()
    }
}

/// The tracked tasks, keyed by framework id and task id (task ids are unique only per framework), with the keys
/// whose checkpointed record may have changed since [`AgentCore::take_changes`]. Every way to change a task goes
/// through here, so no change escapes the checkpoint; reading does not mark anything.
#[derive(Debug, Default)]
struct Tasks {
    map: BTreeMap<TaskKey, TaskRun>,
    changed: BTreeSet<TaskKey>,
    /// The tasks being killed (`kill` set), so timers look at them alone, not at every task.
    killing: BTreeSet<TaskKey>,
}

impl Tasks {
    fn get(&self, key: &TaskKey) -> Option<&TaskRun> {
        self.map.get(key)
    }

    fn contains_key(&self, key: &TaskKey) -> bool {
        self.map.contains_key(key)
    }

    fn values(&self) -> impl Iterator<Item = &TaskRun> {
        self.map.values()
    }

    fn keys(&self) -> impl Iterator<Item = &TaskKey> {
        self.map.keys()
    }

    fn iter(&self) -> impl Iterator<Item = (&TaskKey, &TaskRun)> {
        self.map.iter()
    }

    /// The tasks of one framework, in task id order.
    fn of_framework<'a>(&'a self, framework_id: &'a str) -> impl Iterator<Item = (&'a TaskKey, &'a TaskRun)> {
        self.map.range(TaskKey::new(framework_id, "")..).take_while(move |(k, _)| k.framework_id == framework_id)
    }

    /// The task, to change when `pred` holds (it is then marked changed).
    fn get_mut_if(&mut self, key: &TaskKey, pred: impl FnOnce(&TaskRun) -> bool) -> Option<&mut TaskRun> {
        if !self.map.get(key).is_some_and(pred) {
            return None;
        }
        self.changed.insert(key.clone());
        self.map.get_mut(key)
    }

    fn get_mut(&mut self, key: &TaskKey) -> Option<&mut TaskRun> {
        self.get_mut_if(key, |_| true)
    }

    fn insert(&mut self, key: TaskKey, run: TaskRun) {
        self.changed.insert(key.clone());
        self.load(key, run);
    }

    /// A task read back from the checkpoint: already on disk as it is.
    fn load(&mut self, key: TaskKey, run: TaskRun) {
        if run.kill.is_some() {
            self.killing.insert(key.clone());
        }
        self.map.insert(key, run);
    }

    /// Starts killing the task (a kill is never undone; the task is forgotten once it ended).
    fn start_kill(&mut self, key: &TaskKey, kill: Kill) {
        if let Some(t) = self.get_mut(key) {
            t.kill = Some(kill);
            self.killing.insert(key.clone());
        }
    }

    /// The tasks being killed.
    fn killing(&self) -> impl Iterator<Item = (&TaskKey, &TaskRun)> {
        self.killing.iter().filter_map(|k| self.map.get(k).map(|t| (k, t)))
    }

    fn remove(&mut self, key: &TaskKey) -> Option<TaskRun> {
        let run = self.map.remove(key)?;
        self.changed.insert(key.clone());
        self.killing.remove(key);
        Some(run)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut TaskRun> {
        self.changed.extend(self.map.keys().cloned());
        self.map.values_mut()
    }
}

/// The agent's state.
#[derive(Debug)]
pub struct AgentCore {
    settings: Settings,
    agent_id: Option<String>,
    master: Option<MasterInfo>,
    link: Link,
    shutting_down: bool,
    tasks: Tasks,
    frameworks: BTreeMap<String, FrameworkInfo>,
    completed: VecDeque<CompletedTask>,
    /// How many entries of `completed` each framework has (so forgetting a task does not scan them).
    completed_per_framework: BTreeMap<String, usize>,
    updates: StatusUpdateManager,
    /// The agent id changed since [`AgentCore::take_changes`].
    agent_changed: bool,
    /// Frameworks added, changed or removed since [`AgentCore::take_changes`].
    frameworks_changed: BTreeSet<String>,
    /// What the sandbox collector ([`crate::gc`]) did so far, for the metrics.
    gc: crate::gc::Counters,
}

impl AgentCore {
    pub fn new(settings: Settings) -> AgentCore {
        let updates = StatusUpdateManager::new(settings.status_update_retry_interval);
        AgentCore {
            settings,
            agent_id: None,
            master: None,
            link: Link::Disconnected,
            shutting_down: false,
            tasks: Tasks::default(),
            frameworks: BTreeMap::new(),
            completed: VecDeque::new(),
            completed_per_framework: BTreeMap::new(),
            updates,
            agent_changed: false,
            frameworks_changed: BTreeSet::new(),
            gc: crate::gc::Counters::default(),
        }
    }

    /// Adds one round of the sandbox collector to its counters.
    pub fn record_gc(&mut self, report: &crate::gc::Report) {
        self.gc.succeeded += report.removed.len() as u64;
        self.gc.failed += report.failed.len() as u64;
        self.gc.pending = report.pending as u64;
    }

    /// The sandbox collector's counters (`gc/path_removals_*`).
    pub fn gc_counters(&self) -> crate::gc::Counters {
        self.gc
    }

    pub fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    pub fn is_registered(&self) -> bool {
        self.link == Link::Registered
    }

    /// Containers launching or running; shutdown is over when this is zero.
    pub fn live_containers(&self) -> usize {
        self.tasks.values().filter(|t| t.container != Container::Gone).count()
    }

    /// The sandbox of a tracked task's container.
    pub fn sandbox_of(&self, key: &TaskKey) -> Option<&std::path::Path> {
        self.tasks.get(key).map(|t| t.sandbox.as_path())
    }

    /// The latest state of a tracked task.
    pub fn task_state(&self, key: &TaskKey) -> Option<TaskState> {
        self.tasks.get(key).map(|t| t.state)
    }

    /// A new stream is opening: its first message.
    pub fn connecting(&mut self) -> Registration {
        self.link = Link::Registering;
        let mut agent = self.settings.agent.clone();
        let Some(id) = self.agent_id.clone() else {
            agent.id = None;
            return Registration::Register { agent };
        };
        agent.id = Some(id);
        let tasks: Vec<ReportedTask> = self
            .tasks
            .values()
            .filter(|t| !t.orphaned)
            .map(|t| ReportedTask { framework_id: t.framework_id.clone(), task: t.info.clone(), state: t.state })
            .collect();
        let reported: BTreeSet<&str> = tasks.iter().map(|t| t.framework_id.as_str()).collect();
        let frameworks =
            self.frameworks.iter().filter(|(id, _)| reported.contains(id.as_str())).map(|(_, f)| f.clone()).collect();
        Registration::Reregister { agent, tasks, frameworks }
    }

    /// The stream broke or could not be opened. Tasks keep running; updates wait for the next registration.
    pub fn disconnected(&mut self) {
        self.link = Link::Disconnected;
        self.updates.pause();
    }

    /// Handles one message from the master.
    pub fn handle(&mut self, msg: FromMaster, now: Instant) -> Vec<Effect> {
        match msg {
            FromMaster::Registered { agent_id, master } => self.registered(agent_id, master, now),
            FromMaster::Ping => vec![Effect::Send(ToMaster::Pong)],
            FromMaster::RunTask { framework, task } => self.run_task(*framework, *task, now),
            FromMaster::InvalidTask { framework_id, task_id, message } => {
                self.invalid_task(&framework_id, &task_id, &message, now)
            }
            FromMaster::KillTask { framework_id, task_id, grace } => {
                self.kill_task(&framework_id, &task_id, grace, now)
            }
            FromMaster::Acknowledge { framework_id, task_id, uuid } => {
                self.acknowledge(&framework_id, &task_id, &uuid, now)
            }
            FromMaster::ShutdownFramework { framework_id } => self.shutdown_framework(&framework_id, now),
            FromMaster::Error { message } => self.master_error(&message, now),
        }
    }

    fn registered(&mut self, agent_id: String, master: Option<MasterInfo>, now: Instant) -> Vec<Effect> {
        let _span = info_span!("registered", agent_id = %agent_id).entered();
        match &self.agent_id {
            Some(old) if *old != agent_id => warn!(old = %old, "master gave this agent a new id"),
            Some(_) => info!("reregistered with the master"),
            None => info!("registered with the master"),
        }
        self.set_agent_id(Some(agent_id));
        self.master = master;
        self.link = Link::Registered;
        self.updates.resend_all(now).into_iter().map(|o| Effect::Send(ToMaster::StatusUpdate(o))).collect()
    }

    fn run_task(&mut self, framework: FrameworkInfo, task: TaskInfo, now: Instant) -> Vec<Effect> {
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
        let Some(t) = self.tasks.get_mut(&key) else { return effects };
        let Some(command) = t.info.command.clone() else {
            let msg = format!("task '{task_id}' has no command (custom executors are not supported)");
            warn!("{msg}");
            effects.extend(self.update(&key, TaskState::Failed, Some(Reason::ContainerLaunchFailed), msg, now));
            return effects;
        };
        let image = match check_container(t.info.container.as_ref(), &sandbox, &self.settings) {
            Ok(image) => image,
            Err(msg) => {
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
        })));
        effects
    }

    fn invalid_task(&mut self, framework_id: &str, task_id: &str, message: &str, now: Instant) -> Vec<Effect> {
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
        result: Result<(), String>,
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
            Err(message) => {
                warn!(error = %message, "launch failed");
                t.container = Container::Gone;
                if t.orphaned {
                    self.forget(key);
                    return vec![];
                }
                self.update(key, TaskState::Failed, Some(Reason::ContainerLaunchFailed), message, now)
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
        result: Result<Termination, String>,
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

    fn kill_task(&mut self, framework_id: &str, task_id: &str, grace: Option<Duration>, now: Instant) -> Vec<Effect> {
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let _span =
            info_span!("kill_task", task_id = %task_id, framework_id = %framework_id, agent_id = %agent_id).entered();
        let default_grace = self.settings.executor_shutdown_grace_period;
        let killing_capable = self.frameworks.get(framework_id).is_some_and(|f| f.has(Capability::TaskKillingState));
        let key = TaskKey::new(framework_id, task_id);
        let Some(t) = self.tasks.get(&key) else {
            info!("ignoring kill of a task unknown to this agent");
            return vec![];
        };
        if t.state.is_terminal() || t.container == Container::Gone {
            debug!("ignoring kill of a task that already ended");
            return vec![];
        }
        if t.kill.is_some() {
            debug!("task is already being killed");
            return vec![];
        }
        let Some(t) = self.tasks.get(&key) else { return vec![] };
        let grace = grace
            .or_else(|| t.info.kill_grace_period.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()))
            .unwrap_or(default_grace)
            .min(MAX_KILL_GRACE);
        let launching = t.container == Container::Launching;
        let container_id = t.container_id.clone();
        let orphaned = t.orphaned;
        let has_check = t.info.health_check.is_some();
        self.tasks.start_kill(&key, Kill { grace, escalate_at: (!launching).then_some(now + grace) });
        info!(grace_secs = grace.as_secs_f64(), "killing task");
        let mut effects = Vec::new();
        if has_check {
            // As Mesos's executors: no more checks once the task is being killed.
            effects.push(Effect::StopHealthCheck { task: key.clone() });
        }
        if killing_capable && !orphaned {
            effects.extend(self.update(&key, TaskState::Killing, None, String::new(), now));
        }
        if !launching {
            effects.push(Effect::Signal { task: key, container_id, signal: Signal::SIGTERM });
        }
        effects
    }

    fn acknowledge(&mut self, framework_id: &str, task_id: &str, uuid: &[u8], now: Instant) -> Vec<Effect> {
        let key = TaskKey::new(framework_id, task_id);
        let span = self.span("acknowledge", &key);
        let _span = span.entered();
        let connected = self.is_registered();
        match self.updates.acknowledge(&key, uuid, now, connected) {
            AckOutcome::Ignored => {
                debug!("ignoring an acknowledgement that matches no pending update");
                vec![]
            }
            AckOutcome::Acked { next, terminal_done } => {
                debug!("status update acknowledged");
                if terminal_done && self.tasks.get(&key).is_some_and(|t| t.container == Container::Gone) {
                    self.forget(&key);
                }
                next.map(|o| vec![Effect::Send(ToMaster::StatusUpdate(o))]).unwrap_or_default()
            }
        }
    }

    /// The framework was torn down: kill its tasks and, as Mesos's status update manager cleans up, drop its
    /// pending updates (nobody will acknowledge them). Its tasks are forgotten as they exit.
    fn shutdown_framework(&mut self, framework_id: &str, now: Instant) -> Vec<Effect> {
        let _span = info_span!("shutdown_framework", framework_id = %framework_id).entered();
        info!("master asked to shut the framework down; killing its tasks");
        self.updates.remove_framework(framework_id);
        let keys: Vec<TaskKey> = self.tasks.of_framework(framework_id).map(|(k, _)| k.clone()).collect();
        let mut effects = Vec::new();
        for key in &keys {
            let Some(t) = self.tasks.get_mut(key) else { continue };
            t.orphaned = true;
            if t.container == Container::Gone {
                self.forget(key);
            } else {
                effects.extend(self.kill_task(&key.framework_id, &key.task_id, None, now));
            }
        }
        effects
    }

    /// The master refused this agent: stop every task, drop their updates, forget the id and register anew.
    fn master_error(&mut self, message: &str, now: Instant) -> Vec<Effect> {
        warn!(error = %message, "the master refused this agent; killing all tasks and registering anew");
        self.updates.clear();
        self.set_agent_id(None);
        for t in self.tasks.values_mut() {
            t.orphaned = true;
        }
        let gone: Vec<TaskKey> =
            self.tasks.iter().filter(|(_, t)| t.container == Container::Gone).map(|(key, _)| key.clone()).collect();
        for key in gone {
            self.forget(&key);
        }
        self.kill_everything(now)
    }

    /// `run`'s shutdown: kill every task; no new ones start.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Effect> {
        info!("agent shutting down; killing all tasks");
        self.shutting_down = true;
        self.kill_everything(now)
    }

    fn kill_everything(&mut self, now: Instant) -> Vec<Effect> {
        let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
        keys.iter().flat_map(|k| self.kill_task(&k.framework_id, &k.task_id, None, now)).collect()
    }

    /// The longest grace period of any kill in progress (at least `--executor-shutdown-grace-period`).
    pub fn longest_grace(&self) -> Duration {
        let graces = self.tasks.killing().filter_map(|(_, t)| t.kill.as_ref().map(|k| k.grace));
        graces.max().unwrap_or_default().max(self.settings.executor_shutdown_grace_period)
    }

    /// Timers: SIGKILL after the grace period, status update retries.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        let due = |t: &TaskRun| {
            t.container == Container::Running
                && t.kill.as_ref().is_some_and(|k| k.escalate_at.is_some_and(|at| at <= now))
        };
        let escalate: Vec<TaskKey> = self.tasks.killing().filter(|(_, t)| due(t)).map(|(k, _)| k.clone()).collect();
        for key in escalate {
            let Some(t) = self.tasks.get_mut(&key) else { continue };
            if let Some(kill) = t.kill.as_mut() {
                kill.escalate_at = None;
            }
            let _span = info_span!("kill_task", task_id = %key.task_id, framework_id = %key.framework_id).entered();
            info!("grace period over; sending SIGKILL");
            let container_id = t.container_id.clone();
            effects.push(Effect::Signal { task: key, container_id, signal: Signal::SIGKILL });
        }
        if self.is_registered() {
            effects.extend(self.updates.due(now).into_iter().map(|o| Effect::Send(ToMaster::StatusUpdate(o))));
        }
        effects
    }

    /// When `tick` has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let kills = self
            .tasks
            .killing()
            .filter(|(_, t)| t.container == Container::Running)
            .filter_map(|(_, t)| t.kill.as_ref().and_then(|k| k.escalate_at));
        let retries = if self.is_registered() { self.updates.next_deadline() } else { None };
        kills.chain(retries).min()
    }

    /// Records a new state and queues its status update.
    fn update(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: Option<Reason>,
        message: String,
        now: Instant,
    ) -> Vec<Effect> {
        self.update_health(key, state, reason, message, None, now)
    }

    /// [`Self::update`] with the task's health, for health check results and the end of an unhealthy task.
    fn update_health(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: Option<Reason>,
        message: String,
        healthy: Option<bool>,
        now: Instant,
    ) -> Vec<Effect> {
        let mut status = self.status(&key.task_id, state, reason, message, now);
        status.healthy = healthy;
        let connected = self.is_registered();
        let Some(t) = self.tasks.get_mut(key) else { return vec![] };
        t.state = state;
        let framework_id = t.framework_id.clone();
        self.updates
            .enqueue(&framework_id, status, now, connected)
            .map(|o| vec![Effect::Send(ToMaster::StatusUpdate(o))])
            .unwrap_or_default()
    }

    /// The task's health checking, if it has a check.
    fn start_health_check(&self, key: &TaskKey) -> Option<Effect> {
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

    fn status(
        &self,
        task_id: &str,
        state: TaskState,
        reason: Option<Reason>,
        message: String,
        now: Instant,
    ) -> TaskStatus {
        TaskStatus {
            task_id: task_id.to_string(),
            state,
            reason,
            source: Source::Executor,
            message,
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            timestamp: self.unix(now),
            healthy: None,
            agent_id: self.agent_id.clone().unwrap_or_default(),
            unreachable_time: None,
        }
    }

    fn forget(&mut self, key: &TaskKey) {
        let Some(t) = self.tasks.remove(key) else { return };
        *self.completed_per_framework.entry(t.framework_id.clone()).or_default() += 1;
        self.completed.push_back(CompletedTask { framework_id: t.framework_id.clone(), info: t.info, state: t.state });
        while self.completed.len() > MAX_COMPLETED_TASKS {
            let Some(old) = self.completed.pop_front() else { break };
            if let Some(n) = self.completed_per_framework.get_mut(&old.framework_id) {
                *n -= 1;
                if *n == 0 {
                    self.completed_per_framework.remove(&old.framework_id);
                }
            }
        }
        let still_used = self.tasks.of_framework(&t.framework_id).next().is_some();
        if !still_used
            && !self.completed_per_framework.contains_key(&t.framework_id)
            && self.frameworks.remove(&t.framework_id).is_some()
        {
            self.frameworks_changed.insert(t.framework_id);
        }
    }

    fn set_agent_id(&mut self, agent_id: Option<String>) {
        if self.agent_id != agent_id {
            self.agent_id = agent_id;
            self.agent_changed = true;
        }
    }

    fn unix(&self, now: Instant) -> f64 {
        let (at, unix) = self.settings.started;
        unix + now.saturating_duration_since(at).as_secs_f64()
    }

    fn span(&self, name: &'static str, key: &TaskKey) -> tracing::Span {
        let agent_id = self.agent_id.as_deref().unwrap_or_default();
        info_span!("task", op = name, task_id = %key.task_id, framework_id = %key.framework_id, agent_id = %agent_id)
    }

    /// Everything a restarted agent needs to carry on, whole (tests, and the benchmark of the single-file format).
    pub fn checkpoint(&self) -> AgentCheckpoint {
        AgentCheckpoint {
            agent_id: self.agent_id.clone(),
            frameworks: self.frameworks.values().cloned().collect(),
            tasks: self.tasks.values().map(task_checkpoint).collect(),
            updates: self.updates.snapshot(),
        }
    }

    /// The checkpoint records that changed since the last call (the shell writes them before the batch's effects go
    /// out): the agent record, frameworks and tasks, `None` for those that are gone. O(what changed).
    pub fn take_changes(&mut self) -> Changes {
        let mut keys = std::mem::take(&mut self.tasks.changed);
        keys.extend(self.updates.take_changed());
        let tasks = keys
            .into_iter()
            .map(|key| {
                let task = self.tasks.get(&key).map(task_checkpoint);
                let updates = self.updates.queue(&key);
                let record = (task.is_some() || updates.is_some()).then(|| TaskRecord {
                    framework_id: key.framework_id.clone(),
                    task_id: key.task_id.clone(),
                    task,
                    updates,
                });
                (key, record)
            })
            .collect();
        let frameworks = std::mem::take(&mut self.frameworks_changed)
            .into_iter()
            .map(|id| {
                let info = self.frameworks.get(&id).cloned();
                (id, info)
            })
            .collect();
        let agent = std::mem::take(&mut self.agent_changed)
            .then(|| AgentRecord { version: crate::checkpoint::VERSION, agent_id: self.agent_id.clone() });
        Changes { agent, frameworks, tasks }
    }

    /// Marks everything changed, so the next [`Self::take_changes`] holds the whole checkpoint: a fresh agent's
    /// first write, or the migration from the single-file checkpoint.
    pub fn mark_all_changed(&mut self) {
        self.agent_changed = true;
        self.frameworks_changed.extend(self.frameworks.keys().cloned());
        self.tasks.changed.extend(self.tasks.map.keys().cloned());
        self.updates.mark_all_changed();
    }

    /// Marks what `changes` held changed again (its write failed), so the next write retries it.
    pub fn retry_changes(&mut self, changes: &Changes) {
        self.agent_changed |= changes.agent.is_some();
        self.frameworks_changed.extend(changes.frameworks.keys().cloned());
        self.tasks.changed.extend(changes.tasks.keys().cloned());
    }

    /// Carries on from a checkpoint after a restart, given what the containerizer recovered. Running containers are
    /// re-attached; those that ended while the agent was down report their real termination; a live task whose
    /// container is lost (or unknown) fails with `REASON_EXECUTOR_TERMINATED` and the reason. Recovered containers
    /// no task claims are destroyed. The agent then re-registers with its old id.
    pub fn recover(&mut self, cp: AgentCheckpoint, containers: Vec<RecoveredContainer>, now: Instant) -> Vec<Effect> {
        let _span = info_span!("recover", agent_id = %cp.agent_id.clone().unwrap_or_default()).entered();
        // What is loaded is on disk as it is; only what recovery changes is written again.
        self.agent_id = cp.agent_id;
        self.frameworks = cp.frameworks.into_iter().filter_map(|f| f.id.clone().map(|id| (id, f))).collect();
        self.updates.restore(cp.updates);
        let mut found: BTreeMap<String, Recovered> =
            containers.into_iter().map(|c| (c.container_id, c.state)).collect();
        let mut effects = Vec::new();
        for t in cp.tasks {
            let key = TaskKey::new(t.framework_id.clone(), t.info.task_id.clone());
            let kill = t.kill_grace_secs.map(|g| Kill {
                grace: Duration::try_from_secs_f64(g).unwrap_or_default(),
                escalate_at: Some(now + Duration::try_from_secs_f64(g).unwrap_or_default()),
            });
            let recovered = if t.live { found.remove(&t.container_id) } else { None };
            let container = if t.live { Container::Running } else { Container::Gone };
            self.tasks.load(
                key.clone(),
                TaskRun {
                    framework_id: t.framework_id.clone(),
                    info: t.info,
                    state: t.state,
                    container_id: t.container_id.clone(),
                    sandbox: t.sandbox,
                    container,
                    kill,
                    orphaned: t.orphaned,
                    unhealthy_kill: t.unhealthy_kill,
                },
            );
            if !t.live {
                continue;
            }
            let span = self.span("recover", &key);
            let _task = span.enter();
            match recovered {
                Some(Recovered::Running) => {
                    info!(container_id = %t.container_id, "re-attached to a running container");
                    effects.push(Effect::Reattach { task: key.clone(), container_id: t.container_id.clone() });
                    if t.state == TaskState::Starting && t.kill_grace_secs.is_none() {
                        effects.extend(self.update(&key, TaskState::Running, None, String::new(), now));
                    }
                    if t.kill_grace_secs.is_none() {
                        // Checking starts afresh (delay and grace period included), as after a launch.
                        effects.extend(self.start_health_check(&key));
                    }
                    if t.kill_grace_secs.is_some() {
                        effects.push(Effect::Signal {
                            task: key.clone(),
                            container_id: t.container_id.clone(),
                            signal: Signal::SIGTERM,
                        });
                    }
                }
                Some(Recovered::Ended(term)) => {
                    info!(container_id = %t.container_id, how = %term.message(), "container ended while the agent was down");
                    effects.extend(self.exited(&key, &t.container_id, Ok(term), now));
                }
                lost => {
                    let why = match lost {
                        Some(Recovered::Lost(why)) => why,
                        _ => "the containerizer does not know it".to_string(),
                    };
                    let message =
                        format!("container {} was not recovered after the agent restarted: {why}", t.container_id);
                    warn!("{message}");
                    if let Some(run) = self.tasks.get_mut(&key) {
                        run.container = Container::Gone;
                    }
                    effects.push(Effect::Destroy { task: Some(key.clone()), container_id: t.container_id.clone() });
                    let orphaned = self.tasks.get(&key).is_some_and(|r| r.orphaned);
                    if orphaned {
                        self.forget(&key);
                    } else {
                        effects.extend(self.update(
                            &key,
                            TaskState::Failed,
                            Some(Reason::ExecutorTerminated),
                            message,
                            now,
                        ));
                    }
                }
            }
        }
        for (container_id, _) in found {
            warn!(container_id = %container_id, "destroying a recovered container no task claims");
            effects.push(Effect::Destroy { task: None, container_id });
        }
        effects
    }

    /// The running tasks' ids for `/monitor/statistics`: (framework id, task id = executor id, container id).
    pub fn running_containers(&self) -> Vec<(String, String, String)> {
        self.tasks
            .values()
            .filter(|t| t.container == Container::Running)
            .map(|t| (t.framework_id.clone(), t.info.task_id.clone(), t.container_id.clone()))
            .collect()
    }

    /// The agent's `/state`, in the Mesos shape.
    pub fn state_json(&self) -> Value {
        let a = &self.settings.agent;
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let task_json = |framework_id: &str, info: &TaskInfo, state: TaskState| {
            json!({
                "id": info.task_id,
                "name": info.name,
                "framework_id": framework_id,
                "executor_id": "",
                "slave_id": agent_id,
                "state": state.name(),
                "resources": Value::Object(info.resources.flat_json()),
            })
        };
        let mut ids: Vec<&String> = self.tasks.values().map(|t| &t.framework_id).collect();
        ids.extend(self.completed.iter().map(|c| &c.framework_id));
        ids.sort();
        ids.dedup();
        let frameworks: Vec<Value> = ids
            .into_iter()
            .map(|fid| {
                let executors: Vec<Value> = self
                    .tasks
                    .of_framework(fid)
                    .map(|(_, t)| {
                        json!({
                            "id": t.info.task_id,
                            "name": format!("Command Executor (Task: {})", t.info.task_id),
                            "container": t.container_id,
                            "directory": t.sandbox.display().to_string(),
                            "tasks": [task_json(fid, &t.info, t.state)],
                        })
                    })
                    .collect();
                let completed: Vec<Value> = self
                    .completed
                    .iter()
                    .filter(|c| &c.framework_id == fid)
                    .map(|c| task_json(fid, &c.info, c.state))
                    .collect();
                let name = self.frameworks.get(fid).map(|f| f.name.clone()).unwrap_or_default();
                json!({"id": fid, "name": name, "executors": executors, "completed_tasks": completed})
            })
            .collect();
        json!({
            "id": agent_id,
            "pid": format!("slave(1)@{}:{}", a.ip, a.port),
            "hostname": a.hostname,
            "port": a.port,
            "version": agora_proto::model::VERSION,
            "resources": Value::Object(a.resources.flat_json()),
            "attributes": Value::Object(a.attributes.flat_json()),
            "master_hostname": self.master.as_ref().map(|m| m.hostname.clone()).unwrap_or_default(),
            "start_time": self.settings.started.1,
            "registered": self.is_registered(),
            "frameworks": frameworks,
        })
    }
}

fn task_checkpoint(t: &TaskRun) -> TaskCheckpoint {
    TaskCheckpoint {
        framework_id: t.framework_id.clone(),
        info: t.info.clone(),
        state: t.state,
        container_id: t.container_id.clone(),
        sandbox: t.sandbox.clone(),
        live: t.container != Container::Gone,
        kill_grace_secs: t.kill.as_ref().map(|k| k.grace.as_secs_f64()),
        orphaned: t.orphaned,
        unhealthy_kill: t.unhealthy_kill.clone(),
    }
}

/// Refuses, before anything is fetched or launched, a container this agent cannot give the task: a DOCKER container
/// (there is no Docker engine) or a volume that cannot be bound (see [`crate::containerizer::volumes`]).
/// Checks a task's container before launch; an image becomes the request the shell resolves to a rootfs.
fn check_container(
    container: Option<&ContainerInfo>,
    sandbox: &std::path::Path,
    settings: &Settings,
) -> Result<Option<crate::containerizer::spec::ImageRequest>, String> {
    let Some(c) = container else { return Ok(None) };
    if c.kind == ContainerType::Docker {
        return Err("container type DOCKER is not supported: this agent has no Docker containerizer (use MESOS)".into());
    }
    crate::containerizer::volumes::plan(&c.volumes, sandbox)?;
    let Some(image) = &c.image else { return Ok(None) };
    if let Some(rootfs) = &c.rootfs {
        return Err(format!("the container sets both rootfs '{rootfs}' and image '{image}'"));
    }
    settings.images.request(image, &settings.work_dir).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::model::{Attributes, CommandInfo, Resources, Volume};

    const SEC: Duration = Duration::from_secs(1);

    fn settings(t0: Instant) -> Settings {
        Settings {
            agent: AgentInfo {
                id: None,
                hostname: "node1".into(),
                ip: "127.0.0.1".into(),
                port: 5051,
                resources: Resources::parse("cpus:4;mem:4096;ports:[31000-32000]").unwrap(),
                attributes: Attributes::parse("rack:r1").unwrap(),
            },
            work_dir: PathBuf::from("/w"),
            status_update_retry_interval: 10 * SEC,
            executor_shutdown_grace_period: 3 * SEC,
            path_env: Some("/bin".into()),
            started: (t0, 1000.0),
            images: crate::image::ImageSupport::NoRegistry,
        }
    }

    fn framework(caps: Vec<Capability>) -> FrameworkInfo {
        let mut f = FrameworkInfo::new("marathon");
        f.id = Some("m-0001".into());
        f.capabilities = caps;
        f
    }

    fn task(id: &str, cmd: &str) -> TaskInfo {
        TaskInfo {
            name: id.into(),
            task_id: id.into(),
            agent_id: "m-S0".into(),
            resources: Resources::parse("cpus:0.1;ports:[31000-31000]").unwrap(),
            command: Some(CommandInfo::shell(cmd)),
            container: None,
            health_check: None,
            kill_grace_period: None,
            labels: vec![],
            discovery: None,
            data: vec![],
        }
    }

    /// A task of the test framework `m-0001`.
    fn key(task_id: &str) -> TaskKey {
        TaskKey::new("m-0001", task_id)
    }

    fn registered_core(t0: Instant) -> AgentCore {
        let mut core = AgentCore::new(settings(t0));
        assert!(matches!(core.connecting(), Registration::Register { .. }));
        core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None }, t0);
        core
    }

    fn sent(effects: &[Effect]) -> Vec<(TaskState, TaskState)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(ToMaster::StatusUpdate(o)) => Some((o.status.state, o.latest_state)),
                _ => None,
            })
            .collect()
    }

    fn uuid_of(effects: &[Effect]) -> Vec<u8> {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Send(ToMaster::StatusUpdate(o)) => o.status.uuid.clone(),
                _ => None,
            })
            .expect("a status update")
    }

    fn launch_of(effects: &[Effect]) -> LaunchSpec {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Launch(s) => Some((**s).clone()),
                _ => None,
            })
            .expect("a launch")
    }

    #[test]
    fn launches_carry_limits_user_and_rootfs() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let mut f = framework(vec![]);
        f.user = "fwuser".into();
        let mut t = task("t", "true");
        t.resources = Resources::parse("cpus:0.5;mem:64;disk:10").unwrap();
        let spec = launch_of(&core.handle(FromMaster::run_task(f.clone(), t.clone()), t0));
        assert_eq!(spec.limits, Limits { cpus: Some(0.5), mem_bytes: Some(64 << 20), disk_bytes: Some(10 << 20) });
        assert_eq!(spec.user.as_deref(), Some("fwuser"), "the framework's user when the command names none");
        assert_eq!(spec.rootfs, None);
        let mut t2 = task("t2", "true");
        t2.command.as_mut().unwrap().user = Some("cmduser".into());
        let spec = launch_of(&core.handle(FromMaster::run_task(f, t2), t0));
        assert_eq!(spec.user.as_deref(), Some("cmduser"));
    }

    #[test]
    fn launches_carry_volumes_and_refuse_docker_or_impossible_volumes() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let container = |kind, volumes| ContainerInfo { kind, rootfs: None, volumes, hostname: None, image: None };
        let data = Volume { container_path: "/data".into(), host_path: "/srv/data".into(), read_only: true };
        let mut t = task("t", "true");
        t.container = Some(container(ContainerType::Mesos, vec![data.clone()]));
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), t), t0));
        assert_eq!(spec.volumes, vec![data]);

        let mut t = task("d", "true");
        t.container = Some(container(ContainerType::Docker, vec![]));
        let effects = core.handle(FromMaster::run_task(framework(vec![]), t), t0);
        assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
        assert_eq!(core.task_state(&key("d")), Some(TaskState::Failed));

        let mut t = task("v", "true");
        let escape = Volume { container_path: "x".into(), host_path: "../../etc".into(), read_only: false };
        t.container = Some(container(ContainerType::Mesos, vec![escape]));
        let effects = core.handle(FromMaster::run_task(framework(vec![]), t), t0);
        assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
        let ack = FromMaster::Acknowledge {
            framework_id: framework(vec![]).id.unwrap(),
            task_id: "v".into(),
            uuid: uuid_of(&effects),
        };
        let effects = core.handle(ack, t0);
        let failed = effects.iter().find_map(|e| match e {
            Effect::Send(ToMaster::StatusUpdate(o)) if o.status.state == TaskState::Failed => Some(o.status.clone()),
            _ => None,
        });
        let failed = failed.expect("a TASK_FAILED update");
        assert_eq!(failed.reason, Some(Reason::ContainerLaunchFailed));
        assert!(failed.message.contains("volume 'x' (host_path '../../etc')"), "{}", failed.message);
    }

    #[test]
    fn an_image_becomes_a_request_or_fails_the_task_naming_it() {
        let t0 = Instant::now();
        let image_task = |id: &str, rootfs: Option<&str>| {
            let mut t = task(id, "true");
            t.container = Some(ContainerInfo {
                kind: ContainerType::Mesos,
                rootfs: rootfs.map(Into::into),
                volumes: vec![],
                hostname: None,
                image: Some("busybox".into()),
            });
            t
        };
        let failure = |core: &mut AgentCore, id: &str, effects: Vec<Effect>| {
            assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
            let fid = framework(vec![]).id.unwrap();
            let ack = FromMaster::Acknowledge { framework_id: fid, task_id: id.into(), uuid: uuid_of(&effects) };
            core.handle(ack, t0)
                .into_iter()
                .find_map(|e| match e {
                    Effect::Send(ToMaster::StatusUpdate(o)) if o.status.state == TaskState::Failed => Some(o.status),
                    _ => None,
                })
                .expect("a TASK_FAILED update")
        };
        let mut core = registered_core(t0);
        let effects = core.handle(FromMaster::run_task(framework(vec![]), image_task("n", None)), t0);
        let failed = failure(&mut core, "n", effects);
        assert_eq!(failed.reason, Some(Reason::ContainerLaunchFailed));
        assert!(failed.message.contains("image 'busybox'") && failed.message.contains("--docker-registry"));

        let mut settings = settings(t0);
        settings.images = crate::image::ImageSupport::Registry("/reg".into());
        let mut core = AgentCore::new(settings);
        assert!(matches!(core.connecting(), Registration::Register { .. }));
        core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None }, t0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), image_task("i", None)), t0));
        let req = spec.image.expect("an image request");
        assert_eq!((req.registry, req.store), ("/reg".into(), "/w/store/docker".into()));
        assert_eq!((req.reference.name.as_str(), req.reference.tag.as_str()), ("busybox", "latest"));
        assert_eq!(spec.rootfs, None, "the shell resolves the image into the rootfs");

        let effects = core.handle(FromMaster::run_task(framework(vec![]), image_task("b", Some("/r"))), t0);
        let failed = failure(&mut core, "b", effects);
        assert!(failed.message.contains("rootfs '/r' and image 'busybox'"), "{}", failed.message);
    }

    #[test]
    fn limitations_fail_the_task_with_their_reason() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "x")), t0));
        core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        let oom = Termination::Limited(Limitation::Memory { limit_bytes: 32 << 20 });
        let effects = core.exited(&key("t"), &spec.container_id, Ok(oom), t0);
        let status = effects
            .iter()
            .find_map(|e| match e {
                Effect::Send(ToMaster::StatusUpdate(o)) => Some(o.status.clone()),
                _ => None,
            })
            .or_else(|| core.updates.snapshot().into_iter().flat_map(|q| q.pending).last())
            .unwrap();
        assert_eq!(status.state, TaskState::Failed);
        assert_eq!(status.reason, Some(Reason::ContainerLimitationMemory));
        assert!(status.message.contains("32MB"), "{}", status.message);
    }

    #[test]
    fn recovery_reattaches_reports_ended_and_fails_lost_containers() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let mut ids = Vec::new();
        for id in ["runs", "ended", "lost", "unknown"] {
            let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task(id, "x")), t0));
            core.launched(&key(id), &spec.container_id, Ok(()), t0);
            ids.push(spec.container_id);
        }
        let cp = core.checkpoint();
        // Through JSON, as it is written to disk.
        let cp: AgentCheckpoint = serde_json::from_slice(&serde_json::to_vec(&cp).unwrap()).unwrap();
        assert_eq!(cp.agent_id.as_deref(), Some("m-S0"));
        assert_eq!(cp.updates.len(), 4, "unacknowledged updates are checkpointed");

        let t1 = t0 + 60 * SEC;
        let mut after = AgentCore::new(settings(t1));
        let found = vec![
            RecoveredContainer { container_id: ids[0].clone(), state: Recovered::Running },
            RecoveredContainer { container_id: ids[1].clone(), state: Recovered::Ended(Termination::Exited(7)) },
            RecoveredContainer { container_id: ids[2].clone(), state: Recovered::Lost("monitor gone".into()) },
            RecoveredContainer { container_id: "stray".into(), state: Recovered::Running },
        ];
        let effects = after.recover(cp, found, t1);
        assert!(effects.contains(&Effect::Reattach { task: key("runs"), container_id: ids[0].clone() }));
        assert!(effects.contains(&Effect::Destroy { task: None, container_id: "stray".into() }));
        assert_eq!(after.task_state(&key("runs")), Some(TaskState::Running));
        assert_eq!(after.task_state(&key("ended")), Some(TaskState::Failed));
        assert_eq!(after.task_state(&key("lost")), Some(TaskState::Failed));
        assert_eq!(after.task_state(&key("unknown")), Some(TaskState::Failed));
        let pending: Vec<TaskStatus> = after.updates.snapshot().into_iter().flat_map(|q| q.pending).collect();
        let ended = pending.iter().find(|s| s.task_id == "ended" && s.state == TaskState::Failed).unwrap();
        assert_eq!(ended.message, "Command exited with status 7");
        let lost = pending.iter().find(|s| s.task_id == "lost" && s.state == TaskState::Failed).unwrap();
        assert_eq!(lost.reason, Some(Reason::ExecutorTerminated));
        assert!(lost.message.contains("monitor gone") && lost.message.contains(&ids[2]), "{}", lost.message);
        // It re-registers with its old id, reporting its tasks; the old unacknowledged updates go out again.
        let Registration::Reregister { agent, tasks, .. } = after.connecting() else { panic!("reregister") };
        assert_eq!(agent.id.as_deref(), Some("m-S0"));
        assert_eq!(tasks.len(), 4);
        let resent = after.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None }, t1);
        assert_eq!(sent(&resent).len(), 4);
    }

    fn checked_task(id: &str) -> TaskInfo {
        let mut t = task(id, "httpd");
        t.health_check = Some(agora_proto::model::HealthCheck {
            kind: agora_proto::model::HealthCheckType::Http,
            port: Some(31000),
            path: Some("/health".into()),
            scheme: None,
            statuses: vec![],
            ip_protocol: Default::default(),
            ignore_http1xx: false,
            command: None,
            delay_seconds: 0.0,
            interval_seconds: 1.0,
            timeout_seconds: 1.0,
            consecutive_failures: 2,
            grace_period_seconds: 0.0,
        });
        t.kill_grace_period = Some(7.0);
        t
    }

    fn pending(core: &AgentCore, task_id: &str) -> Vec<TaskStatus> {
        core.updates.snapshot().into_iter().flat_map(|q| q.pending).filter(|s| s.task_id == task_id).collect()
    }

    fn report(healthy: bool, failures: u32, kill: bool) -> Report {
        let message = if healthy { String::new() } else { format!("HTTP health check failed {failures} times") };
        Report { healthy, consecutive_failures: failures, kill, message }
    }

    #[test]
    fn health_checks_start_when_running_and_report_through_status_updates() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), checked_task("t")), t0));
        let effects = core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        let Some(Effect::StartHealthCheck(check)) = effects.iter().find(|e| matches!(e, Effect::StartHealthCheck(_)))
        else {
            panic!("no health check started: {effects:?}")
        };
        assert_eq!((check.task.clone(), check.container_id.clone()), (key("t"), spec.container_id.clone()));
        assert!(check.env.contains(&("PORT0".to_string(), "31000".to_string())), "the task's environment");

        // A report for another container (an older run) is ignored.
        assert!(core.health(&key("t"), "other", report(true, 0, false), t0).is_empty());
        core.health(&key("t"), &spec.container_id, report(true, 0, false), t0 + SEC);
        core.health(&key("t"), &spec.container_id, report(false, 1, false), t0 + 2 * SEC);
        let statuses = pending(&core, "t");
        let health: Vec<(TaskState, Option<bool>, Option<Reason>)> =
            statuses.iter().map(|s| (s.state, s.healthy, s.reason)).collect();
        let updated = Some(Reason::TaskHealthCheckStatusUpdated);
        assert_eq!(
            health,
            vec![
                (TaskState::Starting, None, None),
                (TaskState::Running, None, None),
                (TaskState::Running, Some(true), updated),
                (TaskState::Running, Some(false), updated),
            ]
        );
        assert_eq!(statuses[3].message, "HTTP health check failed 1 times");
        assert_eq!(core.task_state(&key("t")), Some(TaskState::Running));
    }

    #[test]
    fn failing_health_checks_kill_the_task_through_its_kill_policy() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let fw = framework(vec![Capability::TaskKillingState]);
        let spec = launch_of(&core.handle(FromMaster::run_task(fw, checked_task("t")), t0));
        core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        let effects = core.health(&key("t"), &spec.container_id, report(false, 2, true), t0 + SEC);
        assert!(effects.contains(&Effect::StopHealthCheck { task: key("t") }));
        assert!(effects.contains(&Effect::Signal {
            task: key("t"),
            container_id: spec.container_id.clone(),
            signal: Signal::SIGTERM
        }));
        assert_eq!(core.task_state(&key("t")), Some(TaskState::Killing));
        assert_eq!(core.longest_grace(), 7 * SEC, "the task's kill policy");
        // Later reports (a check already under way) change nothing.
        assert!(core.health(&key("t"), &spec.container_id, report(false, 3, true), t0 + 2 * SEC).is_empty());
        // Its checkpoint remembers why, so a restarted agent reports the end the same way.
        let cp = core.checkpoint();
        assert_eq!(cp.tasks[0].unhealthy_kill.as_deref(), Some("HTTP health check failed 2 times"));

        let effects = core.exited(&key("t"), &spec.container_id, Ok(Termination::Signaled(15)), t0 + 3 * SEC);
        assert!(effects.contains(&Effect::StopHealthCheck { task: key("t") }));
        let statuses = pending(&core, "t");
        let last = statuses.last().unwrap();
        assert_eq!((last.state, last.healthy, last.reason), (TaskState::Killed, Some(false), None));
        assert_eq!(last.message, "HTTP health check failed 2 times; Command terminated with signal SIGTERM");
        let kinds: Vec<(TaskState, Option<bool>)> = statuses.iter().map(|s| (s.state, s.healthy)).collect();
        assert_eq!(
            kinds[2..],
            [(TaskState::Running, Some(false)), (TaskState::Killing, None), (TaskState::Killed, Some(false))]
        );
    }

    #[test]
    fn health_checks_restart_for_recovered_running_tasks_only() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let mut ids = Vec::new();
        for id in ["runs", "killing"] {
            let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), checked_task(id)), t0));
            core.launched(&key(id), &spec.container_id, Ok(()), t0);
            ids.push(spec.container_id);
        }
        core.handle(FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "killing".into(), grace: None }, t0);
        let cp = core.checkpoint();
        let mut after = AgentCore::new(settings(t0));
        let found = ids.iter().map(|id| RecoveredContainer { container_id: id.clone(), state: Recovered::Running });
        let effects = after.recover(cp, found.collect(), t0 + SEC);
        let started: Vec<TaskKey> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::StartHealthCheck(c) => Some(c.task.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(started, vec![key("runs")]);
    }

    #[test]
    fn ping_is_answered_even_before_registration() {
        let mut core = AgentCore::new(settings(Instant::now()));
        assert_eq!(core.handle(FromMaster::Ping, Instant::now()), vec![Effect::Send(ToMaster::Pong)]);
    }

    /// Writes what changed, as the shell does before a batch's effects go out, and checks that the files then hold
    /// exactly the whole checkpoint; returns how many task files the batch wrote or removed.
    fn sync(core: &mut AgentCore, dir: &mut crate::checkpoint::CheckpointDir, work: &std::path::Path) -> usize {
        let changes = core.take_changes();
        dir.write(&changes).unwrap();
        let on_disk = crate::checkpoint::read(work, true).unwrap().expect("a checkpoint").checkpoint;
        assert_eq!(on_disk, core.checkpoint(), "the files lag behind the core");
        changes.tasks.len()
    }

    fn ack(core: &mut AgentCore, framework_id: &str, task_id: &str, effects: &[Effect], now: Instant) -> Vec<Effect> {
        let uuid = uuid_of(effects);
        core.handle(FromMaster::Acknowledge { framework_id: framework_id.into(), task_id: task_id.into(), uuid }, now)
    }

    #[test]
    fn the_per_task_files_follow_every_change_and_a_batch_writes_only_the_tasks_it_changed() {
        let work = tempfile::tempdir().unwrap();
        let mut dir = crate::checkpoint::CheckpointDir::open(work.path()).unwrap();
        let t0 = Instant::now();
        let mut core = AgentCore::new(settings(t0));
        core.mark_all_changed();
        assert_eq!(sync(&mut core, &mut dir, work.path()), 0, "a fresh agent writes agent.info only");
        core.connecting();
        core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None }, t0);
        sync(&mut core, &mut dir, work.path());

        let fw = framework(vec![Capability::TaskKillingState]);
        let mut other = framework(vec![]);
        other.id = Some("m-0002".into());
        let mut starting = BTreeMap::new();
        let mut specs = BTreeMap::new();
        for (f, id) in [(&fw, "t1"), (&fw, "t2"), (&fw, "t3"), (&other, "t1")] {
            let effects = core.handle(FromMaster::run_task(f.clone(), task(id, "sleep 60")), t0);
            let k = TaskKey::new(f.id.clone().unwrap(), id);
            specs.insert(k.clone(), launch_of(&effects));
            starting.insert(k, effects);
        }
        assert_eq!(sync(&mut core, &mut dir, work.path()), 4);

        // One launch result and one acknowledgement: two task files, whatever the agent runs.
        let (k1, k2, k3, ko) = (key("t1"), key("t2"), key("t3"), TaskKey::new("m-0002", "t1"));
        core.launched(&k1, &specs[&k1].container_id, Ok(()), t0);
        ack(&mut core, "m-0001", "t2", &starting[&k2], t0);
        assert_eq!(sync(&mut core, &mut dir, work.path()), 2);
        // Retries change nothing on disk.
        core.tick(t0 + 10 * SEC);
        assert_eq!(sync(&mut core, &mut dir, work.path()), 0);

        core.launched(&k2, &specs[&k2].container_id, Err("no".into()), t0);
        core.launched(&k3, &specs[&k3].container_id, Ok(()), t0);
        core.launched(&ko, &specs[&ko].container_id, Ok(()), t0);
        core.handle(FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "t3".into(), grace: None }, t0);
        core.tick(t0 + 20 * SEC);
        core.handle(
            FromMaster::InvalidTask { framework_id: "m-0001".into(), task_id: "bad/id".into(), message: "x".into() },
            t0,
        );
        sync(&mut core, &mut dir, work.path());
        core.exited(&k3, &specs[&k3].container_id, Ok(Termination::Signaled(9)), t0);
        core.exited(&k1, &specs[&k1].container_id, Ok(Termination::Exited(0)), t0);
        sync(&mut core, &mut dir, work.path());

        // Acknowledging every update forgets the ended tasks: their files go.
        for _ in 0..4 {
            let fronts: Vec<Outbound> = core.updates.resend_all(t0);
            for o in fronts {
                let uuid = o.status.uuid.clone().unwrap();
                let (framework_id, task_id) = (o.framework_id.clone(), o.status.task_id.clone());
                core.handle(FromMaster::Acknowledge { framework_id, task_id, uuid }, t0);
            }
            sync(&mut core, &mut dir, work.path());
        }
        assert_eq!(core.task_state(&k1), None);
        assert_eq!(core.task_state(&ko), Some(TaskState::Running));
        let tasks_dir = work.path().join("meta/frameworks/m-0001/tasks");
        assert_eq!(std::fs::read_dir(&tasks_dir).map(|d| d.count()).unwrap_or(0), 0, "no file of a forgotten task");

        // A framework shut down; the master refusing the agent.
        core.handle(FromMaster::ShutdownFramework { framework_id: "m-0002".into() }, t0);
        sync(&mut core, &mut dir, work.path());
        core.exited(&ko, &specs[&ko].container_id, Ok(Termination::Signaled(15)), t0);
        let effects = core.handle(FromMaster::run_task(fw.clone(), task("t4", "sleep 60")), t0);
        sync(&mut core, &mut dir, work.path());
        core.handle(FromMaster::Error { message: "removed".into() }, t0);
        sync(&mut core, &mut dir, work.path());

        // Recovery loads the files as they are and writes only what it changes: here, the lost container of t4.
        let on_disk = crate::checkpoint::read(work.path(), true).unwrap().unwrap().checkpoint;
        let mut after = AgentCore::new(settings(t0));
        after.recover(on_disk, vec![], t0);
        let changes = after.take_changes();
        let t4 = launch_of(&effects);
        assert_eq!(changes.tasks.keys().collect::<Vec<_>>(), vec![&key("t4")], "{t4:?}");
        dir.write(&changes).unwrap();
        assert_eq!(crate::checkpoint::read(work.path(), true).unwrap().unwrap().checkpoint, after.checkpoint());
    }

    #[test]
    fn task_runs_to_finished_with_ordered_acknowledged_updates() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let effects = core.handle(FromMaster::run_task(framework(vec![]), task("t1", "echo hi")), t0);
        assert_eq!(sent(&effects), vec![(TaskState::Starting, TaskState::Starting)]);
        let starting_uuid = uuid_of(&effects);
        let spec = launch_of(&effects);
        assert_eq!(
            spec.sandbox,
            PathBuf::from(format!("/w/slaves/m-S0/frameworks/m-0001/executors/t1/runs/{}", spec.container_id))
        );
        assert!(spec.env.contains(&("PORT0".to_string(), "31000".to_string())));
        assert_eq!(core.live_containers(), 1);

        // RUNNING waits behind the unacknowledged STARTING.
        let effects = core.launched(&key("t1"), &spec.container_id, Ok(()), t0);
        assert!(sent(&effects).is_empty());
        assert_eq!(core.task_state(&key("t1")), Some(TaskState::Running));

        // A retry of STARTING carries the latest state.
        let effects = core.tick(t0 + 10 * SEC);
        assert_eq!(sent(&effects), vec![(TaskState::Starting, TaskState::Running)]);

        let effects = core.handle(
            FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "t1".into(), uuid: starting_uuid },
            t0 + 11 * SEC,
        );
        assert_eq!(sent(&effects), vec![(TaskState::Running, TaskState::Running)]);
        let running_uuid = uuid_of(&effects);

        let effects = core.exited(&key("t1"), &spec.container_id, Ok(Termination::Exited(0)), t0 + 12 * SEC);
        assert_eq!(effects[0], Effect::Destroy { task: Some(key("t1")), container_id: spec.container_id.clone() });
        assert!(sent(&effects).is_empty());
        let effects = core.handle(
            FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "t1".into(), uuid: running_uuid },
            t0 + 12 * SEC,
        );
        assert_eq!(sent(&effects), vec![(TaskState::Finished, TaskState::Finished)]);
        let Effect::Send(ToMaster::StatusUpdate(fin)) = &effects[0] else { panic!() };
        assert_eq!(fin.status.message, "Command exited with status 0");
        assert_eq!(fin.status.source, Source::Executor);
        assert_eq!(fin.status.agent_id, "m-S0");
        assert_eq!(fin.status.timestamp, 1012.0);
        assert_eq!(fin.status.uuid.as_ref().map(Vec::len), Some(16));
        let finished_uuid = uuid_of(&effects);

        assert_eq!(core.live_containers(), 0);
        assert_eq!(core.task_state(&key("t1")), Some(TaskState::Finished));
        core.handle(
            FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "t1".into(), uuid: finished_uuid },
            t0 + 13 * SEC,
        );
        assert_eq!(core.task_state(&key("t1")), None, "forgotten once its terminal update is acknowledged");
        let state = core.state_json();
        assert_eq!(state["frameworks"][0]["completed_tasks"][0]["state"], "TASK_FINISHED");
        assert_eq!(core.next_deadline(), None);
    }

    #[test]
    fn failures_carry_reason_and_message() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "exit 3")), t0));
        core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        core.exited(&key("t"), &spec.container_id, Ok(Termination::Exited(3)), t0);
        core.exited(&key("t"), &spec.container_id, Ok(Termination::Exited(0)), t0);
        assert_eq!(core.task_state(&key("t")), Some(TaskState::Failed));

        let spec2 = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("u", "x")), t0));
        let effects = core.launched(&key("u"), &spec2.container_id, Err("cannot run 'x': not found".into()), t0);
        assert!(sent(&effects).is_empty(), "waits behind STARTING");
        assert_eq!(core.task_state(&key("u")), Some(TaskState::Failed));
        assert_eq!(core.live_containers(), 0);
    }

    #[test]
    fn duplicate_task_ids_and_bad_ids_are_handled() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let first = core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 1")), t0);
        assert!(!first.is_empty());
        let dup = core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 1")), t0);
        assert!(dup.is_empty());

        let effects = core.handle(FromMaster::run_task(framework(vec![]), task("../evil", "x")), t0);
        assert_eq!(sent(&effects), vec![(TaskState::Failed, TaskState::Failed)]);
        assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
        let Effect::Send(ToMaster::StatusUpdate(o)) = &effects[0] else { panic!() };
        assert_eq!(o.status.reason, Some(Reason::ContainerLaunchFailed));
        assert!(o.status.message.contains("'../evil'"), "{}", o.status.message);
    }

    #[test]
    fn kill_sends_sigterm_then_sigkill_after_grace() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let mut t = task("t", "sleep 60");
        t.kill_grace_period = Some(5.0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), t), t0));
        core.launched(&key("t"), &spec.container_id, Ok(()), t0);

        let kill = FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "t".into(), grace: None };
        let effects = core.handle(kill.clone(), t0 + SEC);
        assert_eq!(
            effects,
            vec![Effect::Signal { task: key("t"), container_id: spec.container_id.clone(), signal: Signal::SIGTERM }]
        );
        assert!(core.handle(kill, t0 + SEC).is_empty(), "a second kill changes nothing");
        assert!(core.tick(t0 + 5 * SEC).iter().all(|e| !matches!(e, Effect::Signal { .. })));
        let effects = core.tick(t0 + 6 * SEC);
        assert!(effects.contains(&Effect::Signal {
            task: key("t"),
            container_id: spec.container_id.clone(),
            signal: Signal::SIGKILL
        }));
        assert!(core.tick(t0 + 7 * SEC).iter().all(|e| !matches!(e, Effect::Signal { .. })), "SIGKILL goes once");
        core.exited(&key("t"), &spec.container_id, Ok(Termination::Signaled(9)), t0 + 7 * SEC);
        assert_eq!(core.task_state(&key("t")), Some(TaskState::Killed));

        let unknown = FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "nope".into(), grace: None };
        assert!(core.handle(unknown, t0).is_empty());
    }

    #[test]
    fn kill_policy_of_the_kill_wins_and_killing_state_needs_the_capability() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let fw = framework(vec![Capability::TaskKillingState]);
        let effects = core.handle(FromMaster::run_task(fw, task("t", "sleep 60")), t0);
        let starting = uuid_of(&effects);
        let spec = launch_of(&effects);
        core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        core.handle(FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "t".into(), uuid: starting }, t0);
        let effects = core
            .handle(FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "t".into(), grace: Some(SEC) }, t0);
        assert_eq!(core.task_state(&key("t")), Some(TaskState::Killing));
        assert!(effects.iter().any(|e| matches!(e, Effect::Signal { signal: Signal::SIGTERM, .. })));
        assert_eq!(core.next_deadline(), Some(t0 + SEC));
        let effects = core.exited(&key("t"), &spec.container_id, Ok(Termination::Signaled(15)), t0);
        assert_eq!(core.task_state(&key("t")), Some(TaskState::Killed));
        assert!(sent(&effects).is_empty(), "KILLED waits behind RUNNING and KILLING");
    }

    #[test]
    fn kill_during_launch_signals_once_launched() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 9")), t0));
        let effects =
            core.handle(FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "t".into(), grace: None }, t0);
        assert!(effects.is_empty());
        let effects = core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        assert_eq!(
            effects,
            vec![Effect::Signal { task: key("t"), container_id: spec.container_id.clone(), signal: Signal::SIGTERM }]
        );
        assert_eq!(core.next_deadline(), Some(t0 + 3 * SEC));
    }

    #[test]
    fn reregistration_reports_tasks_and_resends_fronts() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 60")), t0));
        core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        core.disconnected();
        assert!(!core.is_registered());
        assert!(sent(&core.tick(t0 + 100 * SEC)).is_empty(), "no retries while disconnected");
        let Registration::Reregister { agent, tasks, frameworks } = core.connecting() else { panic!("reregister") };
        assert_eq!(agent.id.as_deref(), Some("m-S0"));
        assert_eq!(tasks.len(), 1);
        assert_eq!((tasks[0].framework_id.as_str(), tasks[0].state), ("m-0001", TaskState::Running));
        assert_eq!(frameworks[0].name, "marathon");
        let effects = core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None }, t0 + 100 * SEC);
        assert_eq!(sent(&effects), vec![(TaskState::Starting, TaskState::Running)]);
    }

    #[test]
    fn master_error_kills_everything_and_forgets_the_id() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 60")), t0));
        core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        let effects = core.handle(FromMaster::Error { message: "agent removed".into() }, t0);
        assert!(effects.iter().any(|e| matches!(e, Effect::Signal { signal: Signal::SIGTERM, .. })));
        assert!(sent(&effects).is_empty());
        assert_eq!(core.agent_id(), None);
        core.disconnected();
        assert!(matches!(core.connecting(), Registration::Register { .. }));
        let effects = core.exited(&key("t"), &spec.container_id, Ok(Termination::Signaled(15)), t0);
        assert!(sent(&effects).is_empty());
        assert_eq!(core.task_state(&key("t")), None);
        assert_eq!(core.live_containers(), 0);
    }

    #[test]
    fn shutdown_kills_all_and_refuses_new_tasks() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let a = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("a", "sleep 60")), t0));
        core.launched(&key("a"), &a.container_id, Ok(()), t0);
        let effects = core.shutdown(t0);
        assert_eq!(effects.iter().filter(|e| matches!(e, Effect::Signal { .. })).count(), 1);
        assert!(core.handle(FromMaster::run_task(framework(vec![]), task("b", "true")), t0).is_empty());
        assert_eq!(core.live_containers(), 1);
        core.exited(&key("a"), &a.container_id, Ok(Termination::Signaled(15)), t0);
        assert_eq!(core.live_containers(), 0);
    }

    #[test]
    fn shutdown_framework_kills_only_its_tasks() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let mut other = FrameworkInfo::new("other");
        other.id = Some("m-0002".into());
        let a = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("a", "sleep 60")), t0));
        let b = launch_of(&core.handle(FromMaster::run_task(other, task("b", "sleep 60")), t0));
        core.launched(&key("a"), &a.container_id, Ok(()), t0);
        core.launched(&TaskKey::new("m-0002", "b"), &b.container_id, Ok(()), t0);
        let effects = core.handle(FromMaster::ShutdownFramework { framework_id: "m-0002".into() }, t0);
        assert_eq!(
            effects,
            vec![Effect::Signal {
                task: TaskKey::new("m-0002", "b"),
                container_id: b.container_id.clone(),
                signal: Signal::SIGTERM
            }]
        );
        // Its updates are dropped: nothing is retried for it, and it is forgotten once it exits.
        let effects = core.exited(&TaskKey::new("m-0002", "b"), &b.container_id, Ok(Termination::Signaled(15)), t0);
        assert!(sent(&effects).is_empty());
        assert_eq!(core.task_state(&TaskKey::new("m-0002", "b")), None);
        let retried: Vec<String> = core
            .tick(t0 + 60 * SEC)
            .iter()
            .filter_map(|e| match e {
                Effect::Send(ToMaster::StatusUpdate(o)) => Some(o.status.task_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(retried, vec!["a".to_string()]);
        let state = core.state_json();
        assert_eq!(state["frameworks"][1]["completed_tasks"][0]["state"], "TASK_KILLED");

        // A finished task of a torn-down framework is forgotten at once.
        let c = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("c", "true")), t0));
        core.launched(&key("c"), &c.container_id, Ok(()), t0);
        core.exited(&key("c"), &c.container_id, Ok(Termination::Exited(0)), t0);
        core.handle(FromMaster::ShutdownFramework { framework_id: "m-0001".into() }, t0);
        assert_eq!(core.task_state(&key("c")), None);
        assert_eq!(core.live_containers(), 1, "task a is still being killed");
    }

    #[test]
    fn two_frameworks_may_run_the_same_task_id_independently() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let mut other = FrameworkInfo::new("other");
        other.id = Some("m-0002".into());
        let (ka, kb) = (key("hello-0"), TaskKey::new("m-0002", "hello-0"));

        // Both launch, each in its own framework's sandbox.
        let ea = core.handle(FromMaster::run_task(framework(vec![]), task("hello-0", "sleep 60")), t0);
        let eb = core.handle(FromMaster::run_task(other.clone(), task("hello-0", "sleep 60")), t0);
        let (a, b) = (launch_of(&ea), launch_of(&eb));
        assert_ne!(a.container_id, b.container_id);
        assert_ne!(a.sandbox, b.sandbox);
        assert_eq!((a.framework_id.as_str(), b.framework_id.as_str()), ("m-0001", "m-0002"));
        let (starting_a, starting_b) = (uuid_of(&ea), uuid_of(&eb));
        assert_eq!(core.live_containers(), 2);
        // A same-framework duplicate is still ignored.
        assert!(core.handle(FromMaster::run_task(other, task("hello-0", "sleep 60")), t0).is_empty());

        // Launch results are told apart by framework.
        core.launched(&ka, &a.container_id, Ok(()), t0);
        assert_eq!(core.task_state(&ka), Some(TaskState::Running));
        assert_eq!(core.task_state(&kb), Some(TaskState::Starting));
        core.launched(&kb, &b.container_id, Ok(()), t0);
        assert_eq!(core.task_state(&kb), Some(TaskState::Running));

        // Acknowledging one framework's STARTING releases only its RUNNING; the other's queue is untouched, and an
        // acknowledgement with the other framework's uuid is ignored.
        let wrong = FromMaster::Acknowledge {
            framework_id: "m-0001".into(),
            task_id: "hello-0".into(),
            uuid: starting_b.clone(),
        };
        assert!(core.handle(wrong, t0).is_empty());
        let ack_a =
            FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "hello-0".into(), uuid: starting_a };
        let effects = core.handle(ack_a, t0);
        assert_eq!(sent(&effects), vec![(TaskState::Running, TaskState::Running)]);
        let Effect::Send(ToMaster::StatusUpdate(o)) = &effects[0] else { panic!() };
        assert_eq!(o.framework_id, "m-0001");
        assert_eq!(core.updates.pending_states(&ka), vec![TaskState::Running]);
        assert_eq!(core.updates.pending_states(&kb), vec![TaskState::Starting, TaskState::Running]);

        // The checkpoint round-trips both.
        let cp = core.checkpoint();
        let cp: AgentCheckpoint = serde_json::from_slice(&serde_json::to_vec(&cp).unwrap()).unwrap();
        assert_eq!(cp.tasks.len(), 2);
        assert_eq!(cp.updates.len(), 2);
        let mut after = AgentCore::new(settings(t0));
        let found = vec![
            RecoveredContainer { container_id: a.container_id.clone(), state: Recovered::Running },
            RecoveredContainer { container_id: b.container_id.clone(), state: Recovered::Running },
        ];
        let effects = after.recover(cp.clone(), found, t0);
        assert!(effects.contains(&Effect::Reattach { task: ka.clone(), container_id: a.container_id.clone() }));
        assert!(effects.contains(&Effect::Reattach { task: kb.clone(), container_id: b.container_id.clone() }));
        assert_eq!(after.task_state(&ka), Some(TaskState::Running));
        assert_eq!(after.task_state(&kb), Some(TaskState::Running));
        assert_eq!(after.updates.pending_states(&ka), vec![TaskState::Running]);
        assert_eq!(after.updates.pending_states(&kb), vec![TaskState::Starting, TaskState::Running]);
        assert_eq!(after.checkpoint(), cp);

        // Killing one kills only it.
        let kill = FromMaster::KillTask { framework_id: "m-0002".into(), task_id: "hello-0".into(), grace: None };
        let effects = core.handle(kill, t0);
        assert_eq!(
            effects,
            vec![Effect::Signal { task: kb.clone(), container_id: b.container_id.clone(), signal: Signal::SIGTERM }]
        );
        let effects = core.exited(&kb, &b.container_id, Ok(Termination::Signaled(15)), t0);
        assert_eq!(effects[0], Effect::Destroy { task: Some(kb.clone()), container_id: b.container_id.clone() });
        assert_eq!(core.task_state(&kb), Some(TaskState::Killed));
        assert_eq!(core.task_state(&ka), Some(TaskState::Running));
        assert_eq!(core.live_containers(), 1);
        // An exit reported under the wrong framework's key changes nothing.
        assert!(core.exited(&kb, &a.container_id, Ok(Termination::Exited(0)), t0).is_empty());
        assert_eq!(core.task_state(&ka), Some(TaskState::Running));

        let state = core.state_json();
        assert_eq!(state["frameworks"][0]["executors"][0]["tasks"][0]["state"], "TASK_RUNNING");
        assert_eq!(state["frameworks"][1]["executors"][0]["tasks"][0]["state"], "TASK_KILLED");
    }

    #[test]
    fn state_json_has_mesos_shape() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 60")), t0));
        core.launched(&key("t"), &spec.container_id, Ok(()), t0);
        let s = core.state_json();
        assert_eq!(s["id"], "m-S0");
        assert_eq!(s["pid"], "slave(1)@127.0.0.1:5051");
        assert_eq!(s["hostname"], "node1");
        assert_eq!(s["port"], 5051);
        assert_eq!(s["resources"]["cpus"], 4);
        assert_eq!(s["resources"]["ports"], "[31000-32000]");
        assert_eq!(s["attributes"]["rack"], "r1");
        assert_eq!(s["start_time"], 1000.0);
        let fw = &s["frameworks"][0];
        assert_eq!(fw["id"], "m-0001");
        assert_eq!(fw["name"], "marathon");
        let ex = &fw["executors"][0];
        assert_eq!(ex["id"], "t");
        assert_eq!(ex["directory"], spec.sandbox.display().to_string());
        let t = &ex["tasks"][0];
        assert_eq!(t["id"], "t");
        assert_eq!(t["state"], "TASK_RUNNING");
        assert_eq!(t["slave_id"], "m-S0");
        assert_eq!(t["framework_id"], "m-0001");
        assert_eq!(t["resources"]["cpus"], 0.1);
    }

    #[test]
    fn invalid_task_is_reported_failed() {
        let t0 = Instant::now();
        let mut core = registered_core(t0);
        let effects = core.handle(
            FromMaster::InvalidTask { framework_id: "f".into(), task_id: "t".into(), message: "bad resources".into() },
            t0,
        );
        let Some(Effect::Send(ToMaster::StatusUpdate(o))) = effects.first() else { panic!("{effects:?}") };
        assert_eq!(o.status.state, TaskState::Failed);
        assert_eq!(o.status.reason, Some(Reason::TaskInvalid));
    }
}
