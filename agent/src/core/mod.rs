//! The agent's pure core: task lifecycles, the link state with the master and the status update manager, as one
//! state machine. Every input (a master message, a launch result, a process exit, a timer) is a method that takes
//! `now` and returns [`Effect`]s; the tokio shell (`crate::shell`) carries them out. Nothing here does I/O or reads
//! a clock.
//!
//! This file holds the inputs, effects and the [`AgentCore`] itself with registration, acknowledgements and the
//! status updates every transition goes through; the rest is split by concern: `lifecycle` (run, launched,
//! health, exited), `kill` (kills and the timers), `recovery` (checkpoint changes and restart), `network` (the
//! container network: the master's assignment, tasks' networks and addresses), `state` (`/state`), `tasks` (the task
//! records). `tests` drives the whole core through its public methods.

mod kill;
mod lifecycle;
mod network;
#[cfg(test)]
mod network_tests;
mod recovery;
mod state;
mod tasks;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_proto::model::{
    AgentInfo, AgentNetwork, FrameworkInfo, MasterInfo, Reason, Source, TaskInfo, TaskState, TaskStatus,
};
use nix::sys::signal::Signal;
use tracing::{debug, info, info_span, warn};

use crate::containerizer::LaunchSpec;
use crate::health::CheckSpec;
pub use crate::status_updates::TaskKey;
use crate::status_updates::{AckOutcome, Outbound, StatusUpdateManager};
pub use lifecycle::ContainerRefused;
pub use network::{NetworkRefused, NetworkState};
use tasks::{CompletedTask, Container, Tasks};

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
    /// The agent runs container networks (`--network-bridge`, with libcontainer isolation).
    pub networks: bool,
}

/// A message from the master, already converted from the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum FromMaster {
    Registered {
        agent_id: String,
        master: Option<MasterInfo>,
        /// The agent's subnet and peers, when it runs container networks and the master an address plan.
        network: Option<agora_net::Assignment>,
    },
    /// The master's new list of every agent subnet.
    NetworkPeers {
        peers: Vec<agora_net::Peer>,
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

/// A launch that failed, as the shell reports it to [`AgentCore::launched`]: the reason and message of the task's
/// TASK_FAILED.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchFailed {
    pub reason: Reason,
    pub message: String,
}

/// The first message on a new stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    Register {
        agent: AgentInfo,
        network: Option<AgentNetwork>,
    },
    Reregister {
        agent: AgentInfo,
        tasks: Vec<ReportedTask>,
        frameworks: Vec<FrameworkInfo>,
        network: Option<AgentNetwork>,
    },
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
    /// Make the host's container network match (bridge, peer routes, packet rules with the port mappings).
    ApplyNetwork(Box<NetworkState>),
    /// Free the addresses and namespaces of every container but the `live` ones (after a restart).
    ReconcileNetwork {
        live: BTreeSet<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Disconnected,
    Registering,
    Registered,
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
    /// The container network the master assigned (with `settings.networks`).
    network: Option<agora_net::Assignment>,
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
            network: None,
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
        let network = self.agent_network();
        let Some(id) = self.agent_id.clone() else {
            agent.id = None;
            return Registration::Register { agent, network };
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
        Registration::Reregister { agent, tasks, frameworks, network }
    }

    /// The stream broke or could not be opened. Tasks keep running; updates wait for the next registration.
    pub fn disconnected(&mut self) {
        self.link = Link::Disconnected;
        self.updates.pause();
    }

    /// Handles one message from the master.
    pub fn handle(&mut self, msg: FromMaster, now: Instant) -> Vec<Effect> {
        match msg {
            FromMaster::Registered { agent_id, master, network } => {
                let mut effects = self.assigned(network);
                effects.extend(self.registered(agent_id, master, now));
                effects
            }
            FromMaster::NetworkPeers { peers } => self.peers_changed(peers),
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

    pub(super) fn registered(&mut self, agent_id: String, master: Option<MasterInfo>, now: Instant) -> Vec<Effect> {
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

    pub(super) fn acknowledge(&mut self, framework_id: &str, task_id: &str, uuid: &[u8], now: Instant) -> Vec<Effect> {
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

    /// Records a new state and queues its status update.
    pub(super) fn update(
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
    pub(super) fn update_health(
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
        status.container_status = self.tasks.get(key).and_then(|t| self.container_status(t));
        let connected = self.is_registered();
        let Some(t) = self.tasks.get_mut(key) else { return vec![] };
        t.state = state;
        let framework_id = t.framework_id.clone();
        self.updates
            .enqueue(&framework_id, status, now, connected)
            .map(|o| vec![Effect::Send(ToMaster::StatusUpdate(o))])
            .unwrap_or_default()
    }

    pub(super) fn status(
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
            container_status: None,
        }
    }

    pub(super) fn forget(&mut self, key: &TaskKey) {
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

    pub(super) fn set_agent_id(&mut self, agent_id: Option<String>) {
        if self.agent_id != agent_id {
            self.agent_id = agent_id;
            self.agent_changed = true;
        }
    }

    pub(super) fn unix(&self, now: Instant) -> f64 {
        let (at, unix) = self.settings.started;
        unix + now.saturating_duration_since(at).as_secs_f64()
    }

    pub(super) fn span(&self, name: &'static str, key: &TaskKey) -> tracing::Span {
        let agent_id = self.agent_id.as_deref().unwrap_or_default();
        info_span!("task", op = name, task_id = %key.task_id, framework_id = %key.framework_id, agent_id = %agent_id)
    }
}
