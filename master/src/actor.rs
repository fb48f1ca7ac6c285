//! The actor that owns the master: one task holds the [`Master`] core, feeds it the [`Input`]s that the gRPC and
//! HTTP handlers send through a [`Handle`] and its own timers, and carries out the [`Effect`]s it returns (registry
//! writes first, then messages to frameworks and agents). It also follows the election: it loads the registry and
//! takes the lead, or drops all state when another master leads.
//!
//! This is the module the protocol adapters (`grpc`, `http`, `web`, `v1`) speak to; they never see the listener or
//! the election wiring in `server`. Decisions are the core's; the actor only sequences I/O around them.
//!
//! The operator event stream is fanned out here: each subscriber has a bounded queue; its first item is the
//! [`ClusterState`] taken in the same step that registers it, and it then gets every [`OperatorEvent`] numbered after
//! that snapshot (see [`crate::core::Master::operator_seq`]), so snapshot plus events are exact. A subscriber whose
//! queue is full is disconnected (and counted), never buffered without bound.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_proto::model::cluster::{ClusterState, OperatorEvent};
use agora_proto::model::{FrameworkInfo, MasterInfo};
use serde_json::Value;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{
    AgentCommand, AgentMessage, Call, CallError, ConnId, CoreConfig, Effect, Master, Now, SchedulerEvent,
};
use crate::election::Role;
use crate::leader::Leadership;
use crate::registry::{FileStore, RegistryError, StateStore, ZkStore};

/// A read-only query the actor runs on the core (see `crate::web`).
pub(crate) type InspectFn = Box<dyn FnOnce(&Master, Now) + Send>;

/// Inputs to the actor.
pub(crate) enum Input {
    Subscribe {
        conn: ConnId,
        info: FrameworkInfo,
        suppressed_roles: Vec<String>,
        tx: mpsc::UnboundedSender<SchedulerEvent>,
    },
    FrameworkGone(ConnId),
    Call {
        framework_id: String,
        stream_id: String,
        call: Call,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    AgentOpen {
        conn: ConnId,
        tx: mpsc::UnboundedSender<AgentCommand>,
    },
    AgentMessage {
        conn: ConnId,
        msg: AgentMessage,
    },
    AgentGone(ConnId),
    /// A read-only look at the core for the web page, metrics and the CLI; the closure replies on its own oneshot.
    Inspect(InspectFn),
    /// An operator subscribes to the event stream; `tx` gets the snapshot, then the events after it.
    OperatorSubscribe {
        tx: mpsc::Sender<OperatorItem>,
    },
}

impl Input {
    /// Inputs only the leader may take: those that change the cluster's state (or open connections that will), and
    /// the operator stream. A master that is not leading drops them, which ends the client's stream or fails its
    /// call.
    fn needs_leader(&self) -> bool {
        matches!(
            self,
            Input::Subscribe { .. }
                | Input::Call { .. }
                | Input::AgentOpen { .. }
                | Input::AgentMessage { .. }
                | Input::OperatorSubscribe { .. }
        )
    }
}

/// What an operator-stream subscriber receives.
#[derive(Debug)]
pub(crate) enum OperatorItem {
    /// The state when the subscription started (always the first item).
    Subscribed(Box<ClusterState>),
    /// A change after it.
    Event(Arc<OperatorEvent>),
}

/// Queued operator events per subscriber before a slow reader is disconnected.
pub(crate) const OPERATOR_QUEUE: usize = 1024;

/// The operator stream's figures for `/metrics/snapshot`.
#[derive(Debug, Default)]
pub(crate) struct OperatorStreamStats {
    pub subscribers: AtomicU64,
    /// Subscribers disconnected because their queue was full.
    pub slow_disconnects: AtomicU64,
}

/// A stream of events from the actor to one client that tells the actor when the client goes away (it is dropped).
pub(crate) struct Subscription<T> {
    rx: mpsc::UnboundedReceiver<T>,
    on_drop: Option<(Handle, Input)>,
}

impl<T> Subscription<T> {
    pub fn new(rx: mpsc::UnboundedReceiver<T>, handle: Handle, on_drop: Input) -> Subscription<T> {
        Subscription { rx, on_drop: Some((handle, on_drop)) }
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }

    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if let Some((handle, input)) = self.on_drop.take() {
            handle.send(input);
        }
    }
}

/// What the gRPC and HTTP handlers share: the way into the actor, and this master's identity.
#[derive(Clone)]
pub(crate) struct Handle {
    inputs: mpsc::UnboundedSender<Input>,
    next_conn: Arc<AtomicU64>,
    pub info: Arc<MasterInfo>,
    /// `--heartbeat-interval`, for the streams the HTTP handlers keep alive themselves (the operator stream).
    pub heartbeat_interval: Duration,
    /// The flags as operators see them (`/master/state`'s `flags`, `GET_FLAGS`).
    pub flags: Arc<Value>,
    pub operator_streams: Arc<OperatorStreamStats>,
}

impl Handle {
    pub fn new(
        inputs: mpsc::UnboundedSender<Input>,
        info: MasterInfo,
        heartbeat_interval: Duration,
        flags: Value,
    ) -> Handle {
        Handle {
            inputs,
            next_conn: Arc::new(AtomicU64::new(1)),
            info: Arc::new(info),
            heartbeat_interval,
            flags: Arc::new(flags),
            operator_streams: Arc::default(),
        }
    }

    pub fn new_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub fn send(&self, input: Input) {
        // The actor outlives every handler except during shutdown, when dropping inputs is right.
        let _ = self.inputs.send(input);
    }

    /// Runs a read-only query on the core, in the actor; `None` when the actor is gone (shutting down).
    pub async fn inspect<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Master, Now) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Inspect(Box::new(move |m: &Master, now: Now| {
            let _ = reply.send(query(m, now));
        })));
        rx.await.ok()
    }

    /// `/metrics/snapshot`: the core's figures plus the operator stream's, which the actor keeps.
    pub async fn metrics(&self) -> Option<crate::metrics::Snapshot> {
        let snapshot = self.inspect(crate::metrics::snapshot).await?;
        Some(self.with_stream_figures(snapshot))
    }

    /// `/metrics`: the figures of [`Handle::metrics`] and the allocation passes' histogram, as Prometheus text.
    pub async fn prometheus(&self) -> Option<String> {
        let (snapshot, runs) =
            self.inspect(|m, now| (crate::metrics::snapshot(m, now), m.counters().allocation_seconds.clone())).await?;
        Some(crate::metrics::prometheus(&self.with_stream_figures(snapshot), &runs))
    }

    fn with_stream_figures(&self, mut snapshot: crate::metrics::Snapshot) -> crate::metrics::Snapshot {
        let streams = &self.operator_streams;
        let subscribers = streams.subscribers.load(Ordering::Relaxed) as f64;
        snapshot.insert("master/operator_event_stream_subscribers".into(), subscribers);
        let slow = streams.slow_disconnects.load(Ordering::Relaxed) as f64;
        snapshot.insert("master/operator_event_stream_slow_disconnects".into(), slow);
        snapshot
    }
}

/// The shell's one clock read: the core gets time only through this.
pub(crate) fn now() -> Now {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
    Now { mono: Instant::now(), wall }
}

/// The owner of the core (see the module doc).
pub(crate) struct Actor {
    master: Master,
    frameworks: HashMap<ConnId, mpsc::UnboundedSender<SchedulerEvent>>,
    agents: HashMap<ConnId, mpsc::UnboundedSender<AgentCommand>>,
    /// Operator-stream subscribers: their queues and the last event number their snapshot reflects.
    operators: Vec<(mpsc::Sender<OperatorItem>, u64)>,
    max_operators: usize,
    operator_stats: Arc<OperatorStreamStats>,
    /// True only while this master leads and has loaded the registry.
    leading: bool,
    /// The registry's store while leading.
    store: Option<Box<dyn StateStore>>,
    info: MasterInfo,
    core_config: CoreConfig,
    work_dir: PathBuf,
    /// The election path (`--zk`), when not standalone.
    zk_path: Option<String>,
    view: watch::Sender<Leadership>,
}

/// What the actor needs to know about this master.
pub(crate) struct ActorConfig {
    pub info: MasterInfo,
    pub core: CoreConfig,
    /// Where the standalone registry lives.
    pub work_dir: PathBuf,
    /// The election path (`--zk`), when not standalone.
    pub zk_path: Option<String>,
    /// `--max-operator-event-stream-subscribers`.
    pub max_operators: usize,
    /// Shared with the [`Handle`], for the metrics.
    pub operator_stats: Arc<OperatorStreamStats>,
}

impl Actor {
    /// An actor that is not leading yet; [`Actor::run`] takes the lead (standalone) or waits for the election.
    pub fn new(config: ActorConfig, view: watch::Sender<Leadership>) -> Actor {
        let ActorConfig { info, core, work_dir, zk_path, max_operators, operator_stats } = config;
        Actor {
            master: Master::new(info.clone(), core.clone(), now()),
            frameworks: HashMap::new(),
            agents: HashMap::new(),
            operators: Vec::new(),
            max_operators,
            operator_stats,
            leading: false,
            store: None,
            info,
            core_config: core,
            work_dir,
            zk_path,
            view,
        }
    }

    fn handle(&mut self, input: Input) {
        let now = now();
        if !self.leading && input.needs_leader() {
            // Dropping the input drops its stream sender or reply: the client is refused and looks for the leader.
            return;
        }
        match input {
            Input::Subscribe { conn, info, suppressed_roles, tx } => {
                self.frameworks.insert(conn, tx);
                self.master.subscribe(conn, info, suppressed_roles, now);
            }
            Input::FrameworkGone(conn) => {
                self.frameworks.remove(&conn);
                self.master.framework_disconnected(conn, now);
            }
            Input::Call { framework_id, stream_id, call, reply } => {
                let _ = reply.send(self.master.call(&framework_id, &stream_id, call, now));
            }
            Input::AgentOpen { conn, tx } => {
                self.agents.insert(conn, tx);
            }
            Input::AgentMessage { conn, msg } => self.master.agent_message(conn, msg, now),
            Input::AgentGone(conn) => {
                self.agents.remove(&conn);
                self.master.agent_disconnected(conn);
            }
            Input::Inspect(query) => query(&self.master, now),
            Input::OperatorSubscribe { tx } => self.subscribe_operator(tx),
        }
    }

    /// Registers an operator-stream subscriber with the state of this very step as its first item (dropping `tx`,
    /// which ends the stream, when the maximum number of subscribers is reached).
    fn subscribe_operator(&mut self, tx: mpsc::Sender<OperatorItem>) {
        self.operators.retain(|(tx, _)| !tx.is_closed());
        if self.operators.len() >= self.max_operators {
            tracing::warn!(max = self.max_operators, "refusing an operator stream: too many subscribers");
            return;
        }
        let seq = self.master.operator_seq();
        if tx.try_send(OperatorItem::Subscribed(Box::new(self.master.cluster_state()))).is_ok() {
            self.operators.push((tx, seq));
        }
        self.count_operators();
    }

    /// Hands an operator event to every subscriber whose snapshot predates it; a subscriber whose queue is full is
    /// disconnected.
    fn fan_out(&mut self, seq: u64, event: OperatorEvent) {
        if self.operators.is_empty() {
            return;
        }
        let event = Arc::new(event);
        let stats = &self.operator_stats;
        self.operators.retain(|(tx, after)| {
            if seq <= *after {
                return true;
            }
            match tx.try_send(OperatorItem::Event(event.clone())) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(queued = OPERATOR_QUEUE, "disconnecting an operator stream that does not keep up");
                    stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        self.count_operators();
    }

    fn count_operators(&self) {
        self.operator_stats.subscribers.store(self.operators.len() as u64, Ordering::Relaxed);
    }

    /// Takes the lead: loads the registry and starts a core recovered from it.
    async fn take_lead(&mut self, mut store: Box<dyn StateStore>) -> Result<(), RegistryError> {
        let started = Instant::now();
        let registry = store.fetch().await.inspect_err(|e| {
            tracing::error!(error = %e, "cannot load the registry; not taking the lead");
        })?;
        let agents = registry.agents.len();
        self.master = Master::recover(self.info.clone(), self.core_config.clone(), registry, now());
        self.store = Some(store);
        self.leading = true;
        self.view.send_replace(Leadership { leading: true, leader: None });
        tracing::info!(
            registry = %self.store.as_ref().map(|s| s.location()).unwrap_or_default(),
            agents,
            load_ms = started.elapsed().as_secs_f64() * 1000.0,
            "leading: registry loaded"
        );
        Ok(())
    }

    /// Stops leading at once: the core's state is dropped and every connection closed (clients find the leader).
    fn step_down(&mut self, leader: Option<String>) {
        if self.leading {
            tracing::warn!(leader = ?leader, "no longer the leader: dropping all state and connections");
            self.leading = false;
            self.store = None;
            self.master = Master::new(self.info.clone(), self.core_config.clone(), now());
            self.frameworks.clear();
            self.agents.clear();
            self.operators.clear();
            self.count_operators();
        }
        self.view.send_replace(Leadership { leading: false, leader });
    }

    async fn on_role(&mut self, role: Role) -> Result<(), RegistryError> {
        match role {
            Role::Leader { client, .. } if !self.leading => {
                let path = self.zk_path.clone().unwrap_or_default();
                self.take_lead(Box::new(ZkStore::new(client, &path))).await
            }
            Role::Leader { .. } => Ok(()),
            Role::Candidate { leader } => {
                let me = format!("{}:{}", self.info.ip, self.info.port);
                self.step_down(leader.map(|l| l.address).filter(|a| *a != me));
                Ok(())
            }
        }
    }

    async fn apply_effects(&mut self) -> Result<(), RegistryError> {
        let effects = self.master.drain_effects();
        if effects.iter().any(|e| matches!(e, Effect::PersistRegistry)) {
            // Registry writes precede acknowledgement: nothing of this batch goes out before the write is durable.
            if let Some(store) = self.store.as_mut()
                && let Err(e) = store.store(self.master.registry()).await
            {
                tracing::error!(error = %e, "cannot write the registry; stopping");
                self.step_down(None);
                return Err(e);
            }
        }
        for e in effects {
            match e {
                Effect::PersistRegistry => {}
                Effect::ToFramework(conn, ev) => {
                    if let Some(tx) = self.frameworks.get(&conn) {
                        let _ = tx.send(ev);
                    }
                }
                Effect::ToAgent(conn, cmd) => {
                    if let Some(tx) = self.agents.get(&conn) {
                        let _ = tx.send(cmd);
                    }
                }
                Effect::CloseFramework(conn) => {
                    self.frameworks.remove(&conn);
                }
                Effect::CloseAgent(conn) => {
                    self.agents.remove(&conn);
                }
                Effect::Operator { seq, event } => self.fan_out(seq, event),
            }
        }
        Ok(())
    }

    /// Runs until `stop` fires or every [`Handle`] is gone; an error means the registry could not be read or
    /// written, and the master must stop rather than act on state it cannot make durable.
    pub async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        mut stop: oneshot::Receiver<()>,
        mut seat: Option<watch::Receiver<Role>>,
    ) -> Result<(), RegistryError> {
        let result = self.serve(&mut inputs, &mut stop, &mut seat).await;
        // Dropping every sender ends every framework stream, agent link and operator stream.
        self.frameworks.clear();
        self.agents.clear();
        self.operators.clear();
        result
    }

    async fn serve(
        &mut self,
        inputs: &mut mpsc::UnboundedReceiver<Input>,
        stop: &mut oneshot::Receiver<()>,
        seat: &mut Option<watch::Receiver<Role>>,
    ) -> Result<(), RegistryError> {
        if seat.is_none() {
            // Standalone: this master is the leader, with the registry in its work dir.
            self.take_lead(Box::new(FileStore::new(&self.work_dir))).await?;
        }
        loop {
            let deadline = self.master.next_deadline(now());
            tokio::select! {
                _ = &mut *stop => break,
                role = role_changed(seat) => self.on_role(role).await?,
                input = inputs.recv() => {
                    let Some(input) = input else { break };
                    self.handle(input);
                    // Drain what else is queued before allocating, so bursts coalesce into one pass; at most
                    // MAX_DRAIN at a time, so a storm (10,000 agents re-registering) never holds a worker thread
                    // for long.
                    for _ in 0..MAX_DRAIN {
                        let Ok(more) = inputs.try_recv() else { break };
                        self.handle(more);
                    }
                    self.master.allocate_if_wanted(now());
                }
                _ = tokio::time::sleep_until(deadline.into()), if self.leading => self.master.tick(now()),
            }
            self.apply_effects().await?;
        }
        Ok(())
    }
}

/// The next role from the election (never resolves when standalone or once the election ended).
async fn role_changed(seat: &mut Option<watch::Receiver<Role>>) -> Role {
    match seat {
        Some(rx) => match rx.changed().await {
            Ok(()) => rx.borrow_and_update().clone(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Inputs handled in one go before the actor yields (and allocates).
const MAX_DRAIN: usize = 1024;

#[cfg(test)]
mod tests {
    use agora_proto::model::cluster::OperatorEvent;

    use super::*;

    fn actor(max_operators: usize) -> Actor {
        let info = MasterInfo {
            id: "m".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            hostname: "localhost".into(),
            version: "test".into(),
        };
        let config = ActorConfig {
            info,
            core: CoreConfig::default(),
            work_dir: PathBuf::from("/nonexistent"),
            zk_path: None,
            max_operators,
            operator_stats: Arc::default(),
        };
        Actor::new(config, watch::channel(Leadership::default()).0)
    }

    fn removed(agent: &str) -> OperatorEvent {
        OperatorEvent::AgentRemoved { agent_id: agent.into() }
    }

    #[test]
    fn operator_subscribers_get_the_snapshot_then_later_events_and_slow_ones_are_dropped() {
        let mut a = actor(2);
        // Events emitted before the snapshot (numbered up to its seq) are already in it: not sent again.
        let (fast, mut fast_rx) = mpsc::channel(8);
        a.subscribe_operator(fast);
        let (slow, mut slow_rx) = mpsc::channel(2);
        a.subscribe_operator(slow);
        assert_eq!(a.operator_stats.subscribers.load(Ordering::Relaxed), 2);
        a.fan_out(0, removed("already-in-the-snapshot"));
        for (seq, agent) in [(1, "a1"), (2, "a2")] {
            a.fan_out(seq, removed(agent));
        }
        // The slow reader's queue (2) held the snapshot and one event: it is disconnected, counted, and its stream
        // ends after what it was sent; the fast one has everything, in order.
        assert_eq!(a.operator_stats.subscribers.load(Ordering::Relaxed), 1);
        assert_eq!(a.operator_stats.slow_disconnects.load(Ordering::Relaxed), 1);
        assert!(matches!(slow_rx.try_recv(), Ok(OperatorItem::Subscribed(_))));
        assert!(matches!(slow_rx.try_recv(), Ok(OperatorItem::Event(e)) if *e == removed("a1")));
        assert!(matches!(slow_rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert!(matches!(fast_rx.try_recv(), Ok(OperatorItem::Subscribed(_))));
        for agent in ["a1", "a2"] {
            assert!(matches!(fast_rx.try_recv(), Ok(OperatorItem::Event(e)) if *e == removed(agent)));
        }
        // At the limit of subscribers a new one is refused (its stream ends at once).
        let (third, mut third_rx) = mpsc::channel(8);
        a.subscribe_operator(third);
        let (fourth, mut fourth_rx) = mpsc::channel(8);
        a.subscribe_operator(fourth);
        assert!(matches!(third_rx.try_recv(), Ok(OperatorItem::Subscribed(_))));
        assert!(matches!(fourth_rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }
}
