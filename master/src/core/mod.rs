//! The master's pure core: registries of agents, frameworks, tasks and offers, and every decision about them.
//!
//! [`Master`] has no I/O and reads no clock. Each input (a framework subscribing or calling, an agent message, a
//! timer tick) is a method that takes [`Now`] and appends [`Effect`]s — events to send to a framework connection,
//! commands to send to an agent connection, connections to close — which the shell (`crate::actor`) carries out.
//! Connections are named by [`ConnId`]s the shell assigns, so the core never holds a socket.
//!
//! Every change operators can follow (tasks added and updated, agents added and removed, frameworks added, updated
//! and removed) is also an [`Effect::Operator`], numbered in order; [`Master::cluster_state`] with
//! [`Master::operator_seq`] is the snapshot those numbers continue from (the operator `SUBSCRIBE` stream).

mod agents;
mod framework_update;
mod network;
mod reconcile;
mod recovery;
mod scheduler;
mod state;
#[cfg(test)]
mod tests;
mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use agora_proto::model::cluster::OperatorEvent;
use agora_proto::model::{
    AgentInfo, FrameworkInfo, MasterInfo, NetworkAssignment, NetworkPeer, Offer, OperationStatus, Resources, TaskInfo,
    TaskState, TaskStatus,
};

use crate::allocator::{self, RefusalFilters};
use crate::registry::{AdmittedAgent, Registry};

pub use agents::{AgentMessage, ReportedTask};
pub use network::NetworkConfig;
pub use scheduler::{Call, CallError, LaunchOp};

/// A connection the shell holds (a framework's event stream or an agent's link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The current time, monotonic for timers and wall-clock (Unix seconds) for timestamps.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub wall: f64,
}

/// Events for a framework's stream (the domain form of `wire::Event`).
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerEvent {
    Subscribed {
        framework_id: String,
        heartbeat_interval_seconds: f64,
        master_info: MasterInfo,
        stream_id: String,
    },
    Offers(Vec<Offer>),
    Rescind {
        offer_id: String,
    },
    Update(TaskStatus),
    /// An offer operation's status (the answer to RECONCILE_OPERATIONS; only the v1 HTTP API carries it).
    UpdateOperationStatus(OperationStatus),
    Failure {
        agent_id: String,
    },
    Error {
        message: String,
    },
    Heartbeat,
}

/// Commands for an agent (the domain form of `wire::MasterMessage`).
#[derive(Clone, Debug, PartialEq)]
pub enum AgentCommand {
    /// With the agent's subnet and peers when it runs container networks.
    Registered {
        agent_id: String,
        master_info: MasterInfo,
        network: Option<NetworkAssignment>,
    },
    Ping,
    RunTask {
        framework: Box<FrameworkInfo>,
        task: Box<TaskInfo>,
    },
    KillTask {
        framework_id: String,
        task_id: String,
        grace_period: Option<f64>,
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
    /// Every agent subnet and its address, replacing what the agent knew.
    NetworkPeers(Vec<NetworkPeer>),
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    ToFramework(ConnId, SchedulerEvent),
    ToAgent(ConnId, AgentCommand),
    /// End a framework's event stream (after an ERROR, a failover to a new subscription, or a teardown).
    CloseFramework(ConnId),
    CloseAgent(ConnId),
    /// Write the registry ([`Master::registry`]) before carrying out any other effect of this batch: an agent is
    /// told it is registered, a framework that it is subscribed, only once that is durable.
    PersistRegistry,
    /// A change for the operator event stream; `seq` counts them from 1 (see [`Master::operator_seq`]).
    Operator {
        seq: u64,
        event: OperatorEvent,
    },
}

/// Tunables the core needs (a subset of `crate::Config`).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub agent_ping_timeout: Duration,
    pub max_agent_ping_timeouts: u32,
    pub allocation_interval: Duration,
    pub offer_timeout: Option<Duration>,
    pub heartbeat_interval: Duration,
    pub max_completed_tasks_per_framework: usize,
    pub max_completed_frameworks: usize,
    pub weights: HashMap<String, f64>,
    /// After a failover, admitted agents that do not re-register within this time are marked unreachable.
    pub agent_reregister_timeout: Duration,
    /// The cluster's container network and its address plan; `None`: no container networks.
    pub network: Option<NetworkConfig>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            agent_ping_timeout: Duration::from_secs(15),
            max_agent_ping_timeouts: 5,
            allocation_interval: Duration::from_secs(1),
            offer_timeout: Some(Duration::from_secs(60)),
            heartbeat_interval: Duration::from_secs(15),
            max_completed_tasks_per_framework: 1000,
            max_completed_frameworks: 50,
            weights: HashMap::new(),
            agent_reregister_timeout: Duration::from_secs(600),
            network: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgentState {
    /// Registered and linked: its resources are offered.
    Active,
    /// The link broke; pings go unanswered until it comes back or is declared unreachable.
    Disconnected,
    /// Missed `max_agent_ping_timeouts` pings; its tasks were reported UNREACHABLE / LOST.
    Unreachable,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub info: AgentInfo,
    pub id: String,
    pub conn: Option<ConnId>,
    pub state: AgentState,
    pub registered_time: f64,
    pub reregistered_time: Option<f64>,
    pub unreachable_time: Option<f64>,
    /// Resources held by non-terminal tasks.
    pub used: Resources,
    /// Resources in outstanding offers.
    pub offered: Resources,
    /// (framework id, task id) of the tasks the master believes run here.
    pub tasks: BTreeSet<(String, String)>,
    pub last_ping: Option<Instant>,
    pub awaiting_pong: bool,
    pub missed_pings: u32,
}

impl Agent {
    /// A newly admitted, connected agent with nothing running.
    pub fn new(id: String, info: AgentInfo, conn: ConnId, now: Now) -> Agent {
        Agent {
            info,
            id,
            conn: Some(conn),
            state: AgentState::Active,
            registered_time: now.wall,
            reregistered_time: None,
            unreachable_time: None,
            used: Resources::new(),
            offered: Resources::new(),
            tasks: BTreeSet::new(),
            last_ping: Some(now.mono),
            awaiting_pong: false,
            missed_pings: 0,
        }
    }

    pub fn available(&self) -> Resources {
        let mut r = self.info.resources.clone();
        r.subtract(&self.used);
        r.subtract(&self.offered);
        r
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub info: TaskInfo,
    pub framework_id: String,
    pub role: String,
    pub state: TaskState,
    /// Every status the master saw, oldest first (for `/master/state`'s `statuses`).
    pub statuses: Vec<TaskStatus>,
    /// True once the task's resources were returned to the pool (its state became terminal or unreachable tasks
    /// were written off).
    pub resources_released: bool,
}

#[derive(Debug)]
pub(crate) struct Framework {
    pub info: FrameworkInfo,
    pub id: String,
    pub conn: Option<ConnId>,
    pub stream_id: String,
    pub registered_time: f64,
    pub reregistered_time: Option<f64>,
    pub unregistered_time: Option<f64>,
    /// When the connection was lost; the framework is removed `failover_timeout` later unless it comes back.
    pub disconnected_at: Option<Instant>,
    pub suppressed_roles: BTreeSet<String>,
    pub tasks: BTreeMap<String, Task>,
    pub completed_tasks: VecDeque<Task>,
    pub offers: BTreeSet<String>,
    /// Per role: resources of non-terminal tasks plus outstanding offers (the DRF allocation).
    pub allocated: HashMap<String, Resources>,
    /// Known only from a re-registering agent; no scheduler has subscribed since this master started.
    pub recovered: bool,
}

impl Framework {
    pub fn active(&self) -> bool {
        self.conn.is_some()
    }

    fn alloc_add(&mut self, role: &str, r: &Resources) {
        self.allocated.entry(role.to_string()).or_default().add(r);
    }

    fn alloc_sub(&mut self, role: &str, r: &Resources) {
        if let Some(a) = self.allocated.get_mut(role) {
            a.subtract(r);
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct OutstandingOffer {
    pub offer: Offer,
    pub created: Instant,
}

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub allocation_runs: u64,
    /// The last allocation pass (Mesos's `allocator/mesos/allocation_run_ms`) ...
    pub last_allocation_ms: f64,
    /// ... and every pass, in seconds, for `/metrics`.
    pub allocation_seconds: agora_proto::prometheus::Histogram,
    pub offers_sent: u64,
    pub offers_declined: u64,
    pub offers_accepted: u64,
    pub offers_rescinded: u64,
    pub agent_registrations: u64,
    pub agent_reregistrations: u64,
    pub agents_unreachable: u64,
    pub tasks_invalid: u64,
    /// Tasks that reached each terminal state over the master's life (Mesos's `master/tasks_finished`, ...).
    pub tasks_terminal: BTreeMap<TaskState, u64>,
}

/// The master's whole in-memory state.
pub struct Master {
    pub(crate) info: MasterInfo,
    pub(crate) config: CoreConfig,
    pub(crate) start_time: f64,
    pub(crate) agents: BTreeMap<String, Agent>,
    pub(crate) frameworks: BTreeMap<String, Framework>,
    pub(crate) completed_frameworks: VecDeque<Framework>,
    pub(crate) offers: HashMap<String, OutstandingOffer>,
    pub(crate) filters: RefusalFilters,
    /// Which agent / framework a connection belongs to.
    pub(crate) agent_conns: HashMap<ConnId, String>,
    pub(crate) framework_conns: HashMap<ConnId, String>,
    next_framework: u64,
    next_agent: u64,
    next_offer: u64,
    rotation: usize,
    allocation_wanted: bool,
    next_allocation: Option<Instant>,
    last_heartbeat: Option<Instant>,
    pub(crate) counters: Counters,
    out: Vec<Effect>,
    /// What survives a failover; every change is followed by [`Effect::PersistRegistry`].
    pub(crate) registry: Registry,
    /// Agents admitted in the registry that have not re-registered with this master yet (after a failover).
    pub(crate) recovering: BTreeMap<String, AdmittedAgent>,
    /// When recovering agents that are still away are marked unreachable.
    pub(crate) recovery_deadline: Option<Instant>,
    /// Frameworks from the registry that have not re-subscribed, and when they are torn down if they do not.
    pub(crate) framework_deadlines: BTreeMap<String, Instant>,
    /// How many [`Effect::Operator`]s were emitted.
    operator_seq: u64,
}

impl Master {
    pub fn new(info: MasterInfo, config: CoreConfig, now: Now) -> Master {
        Master {
            info,
            config,
            start_time: now.wall,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            completed_frameworks: VecDeque::new(),
            offers: HashMap::new(),
            filters: RefusalFilters::default(),
            agent_conns: HashMap::new(),
            framework_conns: HashMap::new(),
            next_framework: 0,
            next_agent: 0,
            next_offer: 0,
            rotation: 0,
            allocation_wanted: false,
            next_allocation: None,
            last_heartbeat: None,
            counters: Counters::default(),
            out: Vec::new(),
            registry: Registry::default(),
            recovering: BTreeMap::new(),
            recovery_deadline: None,
            framework_deadlines: BTreeMap::new(),
            operator_seq: 0,
        }
    }

    pub fn info(&self) -> &MasterInfo {
        &self.info
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Takes the effects produced since the last call.
    pub fn drain_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    pub(crate) fn emit(&mut self, e: Effect) {
        self.out.push(e);
    }

    /// Emits a change for the operator stream, numbered.
    pub(crate) fn operator(&mut self, event: OperatorEvent) {
        self.operator_seq += 1;
        self.out.push(Effect::Operator { seq: self.operator_seq, event });
    }

    /// The number of the last [`Effect::Operator`] emitted: a [`Master::cluster_state`] taken now reflects exactly
    /// the events numbered up to it.
    pub fn operator_seq(&self) -> u64 {
        self.operator_seq
    }

    /// Sends an event to a framework if it is connected (events for disconnected frameworks are dropped, as in
    /// Mesos; reliable task updates are re-sent by the agent until acknowledged).
    pub(crate) fn send_framework(&mut self, framework_id: &str, event: SchedulerEvent) {
        if let Some(conn) = self.frameworks.get(framework_id).and_then(|f| f.conn) {
            self.out.push(Effect::ToFramework(conn, event));
        }
    }

    pub(crate) fn send_agent(&mut self, agent_id: &str, cmd: AgentCommand) -> bool {
        match self.agents.get(agent_id).and_then(|a| a.conn) {
            Some(conn) => {
                self.out.push(Effect::ToAgent(conn, cmd));
                true
            }
            None => false,
        }
    }

    pub(crate) fn new_framework_id(&mut self) -> String {
        let id = format!("{}-{:04}", self.info.id, self.next_framework);
        self.next_framework += 1;
        id
    }

    pub(crate) fn new_agent_id(&mut self) -> String {
        let id = format!("{}-S{}", self.info.id, self.next_agent);
        self.next_agent += 1;
        id
    }

    /// Asks for an allocation pass as soon as the shell has drained its queued inputs.
    pub(crate) fn want_allocation(&mut self) {
        self.allocation_wanted = true;
    }

    /// When the shell should call [`Master::tick`] next at the latest.
    pub fn next_deadline(&self, now: Now) -> Instant {
        let mut d = now.mono + self.config.allocation_interval.min(Duration::from_secs(1));
        if let Some(n) = self.next_allocation {
            d = d.min(n);
        }
        d.max(now.mono + Duration::from_millis(5))
    }

    /// Periodic work: pings, heartbeats, offer timeouts, framework failover timeouts, filter expiry, allocation.
    pub fn tick(&mut self, now: Now) {
        self.ping_agents(now);
        self.heartbeat(now);
        self.expire_offers(now);
        self.expire_frameworks(now);
        self.expire_recovery(now);
        self.filters.expire(now.mono);
        if self.next_allocation.is_none_or(|t| now.mono >= t) {
            self.allocation_wanted = true;
        }
        self.allocate_if_wanted(now);
    }

    fn heartbeat(&mut self, now: Now) {
        if self.last_heartbeat.is_some_and(|t| now.mono < t + self.config.heartbeat_interval) {
            return;
        }
        self.last_heartbeat = Some(now.mono);
        let conns: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
        for c in conns {
            self.out.push(Effect::ToFramework(c, SchedulerEvent::Heartbeat));
        }
    }

    fn expire_offers(&mut self, now: Now) {
        let Some(timeout) = self.config.offer_timeout else { return };
        let stale: Vec<String> =
            self.offers.iter().filter(|(_, o)| now.mono >= o.created + timeout).map(|(id, _)| id.clone()).collect();
        for id in stale {
            tracing::info!(offer_id = %id, "rescinding offer after --offer-timeout");
            self.rescind_offer(&id);
        }
    }

    /// Removes an outstanding offer, returns its resources to the pool and tells the framework.
    pub(crate) fn rescind_offer(&mut self, offer_id: &str) {
        if let Some(o) = self.remove_offer(offer_id) {
            self.counters.offers_rescinded += 1;
            self.send_framework(&o.framework_id, SchedulerEvent::Rescind { offer_id: o.id.clone() });
            self.want_allocation();
        }
    }

    /// Removes an offer from the books, giving its resources back to agent and framework accounting.
    pub(crate) fn remove_offer(&mut self, offer_id: &str) -> Option<Offer> {
        let o = self.offers.remove(offer_id)?.offer;
        if let Some(a) = self.agents.get_mut(&o.agent_id) {
            a.offered.subtract(&o.resources);
        }
        if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
            f.offers.remove(&o.id);
            f.alloc_sub(&o.role, &o.resources);
        }
        Some(o)
    }

    /// Runs an allocation pass if one was asked for (by an event or the interval).
    pub fn allocate_if_wanted(&mut self, now: Now) {
        if !self.allocation_wanted {
            return;
        }
        self.allocation_wanted = false;
        self.next_allocation = Some(now.mono + self.config.allocation_interval);
        self.allocate(now);
    }

    fn allocate(&mut self, now: Now) {
        let started = Instant::now();
        let snapshot = allocator::Snapshot {
            agents: self
                .agents
                .values()
                .filter(|a| a.state == AgentState::Active)
                .map(|a| allocator::AgentSlot {
                    id: a.id.clone(),
                    total: a.info.resources.clone(),
                    available: a.available(),
                })
                .collect(),
            frameworks: self
                .frameworks
                .values()
                .map(|f| allocator::FrameworkSlot {
                    id: f.id.clone(),
                    roles: f.info.roles.clone(),
                    suppressed_roles: f.suppressed_roles.clone(),
                    active: f.active(),
                    allocated: f.allocated.clone(),
                })
                .collect(),
            role_weights: self.config.weights.clone(),
            min_allocatable: allocator::default_min_allocatable(),
        };
        let allocations = allocator::allocate(&snapshot, &self.filters, now.mono, self.rotation);
        self.rotation = self.rotation.wrapping_add(1);

        let mut by_framework: BTreeMap<String, Vec<Offer>> = BTreeMap::new();
        for a in allocations {
            let Some(agent) = self.agents.get_mut(a.agent_id) else { continue };
            let id = format!("{}-O{}", self.info.id, self.next_offer);
            self.next_offer += 1;
            agent.offered.add(&a.resources);
            if let Some(f) = self.frameworks.get_mut(a.framework_id) {
                f.offers.insert(id.clone());
                f.alloc_add(a.role, &a.resources);
            }
            let offer = Offer {
                id: id.clone(),
                framework_id: a.framework_id.to_string(),
                agent_id: a.agent_id.to_string(),
                hostname: agent.info.hostname.clone(),
                resources: a.resources.into_owned(),
                attributes: agent.info.attributes.clone(),
                role: a.role.to_string(),
                url: format!("http://{}:{}", agent.info.ip, agent.info.port),
            };
            self.offers.insert(id, OutstandingOffer { offer: offer.clone(), created: now.mono });
            match by_framework.get_mut(a.framework_id) {
                Some(offers) => offers.push(offer),
                None => {
                    by_framework.insert(offer.framework_id.clone(), vec![offer]);
                }
            }
        }
        for (fid, offers) in by_framework {
            self.counters.offers_sent += offers.len() as u64;
            self.send_framework(&fid, SchedulerEvent::Offers(offers));
        }
        // The whole pass, as Mesos times it: snapshot, allocation, offers.
        let took = started.elapsed().as_secs_f64();
        self.counters.allocation_runs += 1;
        self.counters.last_allocation_ms = took * 1000.0;
        self.counters.allocation_seconds.observe(took);
    }

    /// Rescinds every outstanding offer on `agent_id` (the agent went away).
    pub(crate) fn rescind_agent_offers(&mut self, agent_id: &str) {
        let ids: Vec<String> =
            self.offers.iter().filter(|(_, o)| o.offer.agent_id == agent_id).map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.rescind_offer(&id);
        }
    }

    /// Records a new state for a task, releasing its resources when it turns terminal.
    pub(crate) fn set_task_state(&mut self, framework_id: &str, task_id: &str, status: &TaskStatus, state: TaskState) {
        let Some(f) = self.frameworks.get_mut(framework_id) else { return };
        let Some(t) = f.tasks.get_mut(task_id) else { return };
        t.state = state;
        // As Mesos's master: a status of the same state as the latest replaces it (so a health update keeps one
        // RUNNING status, with its latest `healthy`).
        match t.statuses.last_mut() {
            Some(last) if last.state == status.state => *last = status.clone(),
            _ => t.statuses.push(status.clone()),
        }
        if state.is_terminal() && !t.resources_released {
            *self.counters.tasks_terminal.entry(state).or_default() += 1;
            t.resources_released = true;
            let (role, res, agent_id) = (t.role.clone(), t.info.resources.clone(), t.info.agent_id.clone());
            f.alloc_sub(&role, &res);
            if let Some(a) = self.agents.get_mut(&agent_id) {
                a.used.subtract(&res);
            }
            self.want_allocation();
        }
        self.operator(OperatorEvent::TaskUpdated {
            framework_id: framework_id.to_string(),
            status: Box::new(status.clone()),
            state,
        });
    }

    /// Moves a terminal task from the active to the completed list.
    pub(crate) fn complete_task(&mut self, framework_id: &str, task_id: &str) {
        let limit = self.config.max_completed_tasks_per_framework;
        let Some(f) = self.frameworks.get_mut(framework_id) else { return };
        let Some(t) = f.tasks.remove(task_id) else { return };
        if let Some(a) = self.agents.get_mut(&t.info.agent_id) {
            a.tasks.remove(&(framework_id.to_string(), task_id.to_string()));
        }
        f.completed_tasks.push_back(t);
        while f.completed_tasks.len() > limit {
            f.completed_tasks.pop_front();
        }
    }

    /// Adapts a master-generated status to what the framework understands: frameworks that are not
    /// partition-aware get TASK_LOST instead of the partition-aware states, as in Mesos.
    pub(crate) fn for_framework(&self, framework_id: &str, mut status: TaskStatus) -> TaskStatus {
        let partition_aware = self.frameworks.get(framework_id).is_some_and(|f| f.info.partition_aware());
        if !partition_aware
            && matches!(
                status.state,
                TaskState::Unreachable
                    | TaskState::Gone
                    | TaskState::GoneByOperator
                    | TaskState::Unknown
                    | TaskState::Dropped
            )
        {
            status.state = TaskState::Lost;
        }
        status
    }
}
