//! The master's shell: one actor task owns the [`Master`] core, feeds it inputs from the gRPC and HTTP handlers
//! and timers, and carries out the effects it returns. gRPC and HTTP share one listener.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_proto::model::{FrameworkInfo, MasterInfo, VERSION};
use agora_proto::wire;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{
    AgentCommand, AgentMessage, Call, CallError, ConnId, CoreConfig, Effect, Master, Now, SchedulerEvent,
};
use crate::election::{self, Role};
use crate::leader::{self, Leadership};
use crate::registry::{FileStore, RegistryError, StateStore, ZkStore};
use crate::{Config, grpc, http};

/// Why the master could not run.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The registry could not be read or written (corrupt, or another master wrote it): this master stops rather
    /// than act on state it cannot make durable, as Mesos's master aborts.
    #[error("registry: {0}")]
    Registry(#[source] RegistryError),
}

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
    State {
        reply: oneshot::Sender<Value>,
    },
    /// A read-only look at the core for the web page, metrics and the CLI; the closure replies on its own oneshot.
    Inspect(InspectFn),
}

impl Input {
    /// Inputs that change the cluster's state (or open connections that will); a master that is not leading drops
    /// them, which ends the client's stream or fails its call.
    fn changes_state(&self) -> bool {
        matches!(
            self,
            Input::Subscribe { .. } | Input::Call { .. } | Input::AgentOpen { .. } | Input::AgentMessage { .. }
        )
    }
}

/// What the gRPC and HTTP handlers share.
#[derive(Clone)]
pub(crate) struct Handle {
    pub inputs: mpsc::UnboundedSender<Input>,
    next_conn: Arc<AtomicU64>,
    pub info: Arc<MasterInfo>,
}

impl Handle {
    pub fn new_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub fn send(&self, input: Input) {
        // The actor outlives every handler except during shutdown, when dropping inputs is right.
        let _ = self.inputs.send(input);
    }
}

pub(crate) fn now() -> Now {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
    Now { mono: Instant::now(), wall }
}

struct Actor {
    master: Master,
    frameworks: HashMap<ConnId, mpsc::UnboundedSender<SchedulerEvent>>,
    agents: HashMap<ConnId, mpsc::UnboundedSender<AgentCommand>>,
    flags: Value,
    /// True only while this master leads and has loaded the registry.
    leading: bool,
    /// The registry's store while leading.
    store: Option<Box<dyn StateStore>>,
    info: MasterInfo,
    core_config: CoreConfig,
    work_dir: std::path::PathBuf,
    /// The election path (`--zk`), when not standalone.
    zk_path: Option<String>,
    view: watch::Sender<Leadership>,
}

impl Actor {
    fn handle(&mut self, input: Input) {
        let now = now();
        if !self.leading && input.changes_state() {
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
            Input::State { reply } => {
                let _ = reply.send(self.master.state_json(now, self.flags.clone()));
            }
            Input::Inspect(query) => query(&self.master, now),
        }
    }

    /// Takes the lead: loads the registry and starts a core recovered from it.
    async fn take_lead(&mut self, mut store: Box<dyn StateStore>) -> Result<(), MasterError> {
        let started = Instant::now();
        let registry = store.fetch().await.map_err(|e| {
            tracing::error!(error = %e, "cannot load the registry; not taking the lead");
            MasterError::Registry(e)
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
        }
        self.view.send_replace(Leadership { leading: false, leader });
    }

    async fn on_role(&mut self, role: Role) -> Result<(), MasterError> {
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

    async fn apply_effects(&mut self) -> Result<(), MasterError> {
        let effects = self.master.drain_effects();
        if effects.iter().any(|e| matches!(e, Effect::PersistRegistry)) {
            // Registry writes precede acknowledgement: nothing of this batch goes out before the write is durable.
            if let Some(store) = self.store.as_mut()
                && let Err(e) = store.store(self.master.registry()).await
            {
                {
                    tracing::error!(error = %e, "cannot write the registry; stopping");
                    self.step_down(None);
                    return Err(MasterError::Registry(e));
                }
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
            }
        }
        Ok(())
    }

    async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        mut stop: oneshot::Receiver<()>,
        mut seat: Option<watch::Receiver<Role>>,
    ) -> Result<(), MasterError> {
        let result = self.serve(&mut inputs, &mut stop, &mut seat).await;
        // Dropping every sender ends every framework stream and agent link.
        self.frameworks.clear();
        self.agents.clear();
        result
    }

    async fn serve(
        &mut self,
        inputs: &mut mpsc::UnboundedReceiver<Input>,
        stop: &mut oneshot::Receiver<()>,
        seat: &mut Option<watch::Receiver<Role>>,
    ) -> Result<(), MasterError> {
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

/// How long in-flight HTTP requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the master on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let addr = listener.local_addr().map_err(MasterError::Listener)?;
    let info = MasterInfo {
        id: uuid::Uuid::new_v4().to_string(),
        ip: addr.ip().to_string(),
        port: addr.port(),
        hostname: config.hostname.clone(),
        version: VERSION.to_string(),
    };
    tracing::info!(master_id = %info.id, address = %addr, "master starting");
    let core_config = CoreConfig {
        agent_ping_timeout: config.agent_ping_timeout,
        max_agent_ping_timeouts: config.max_agent_ping_timeouts,
        allocation_interval: config.allocation_interval,
        offer_timeout: config.offer_timeout,
        heartbeat_interval: config.heartbeat_interval,
        max_completed_tasks_per_framework: config.max_completed_tasks_per_framework,
        max_completed_frameworks: config.max_completed_frameworks,
        weights: config.weights.iter().cloned().collect(),
        agent_reregister_timeout: config.agent_reregister_timeout,
    };
    let flags = serde_json::json!({
        "ip": config.ip.to_string(),
        "port": addr.port().to_string(),
        "hostname": config.hostname,
        "work_dir": config.work_dir.display().to_string(),
        "agent_ping_timeout": format!("{}secs", config.agent_ping_timeout.as_secs_f64()),
        "max_agent_ping_timeouts": config.max_agent_ping_timeouts.to_string(),
        "allocation_interval": format!("{}secs", config.allocation_interval.as_secs_f64()),
        "offer_timeout": config.offer_timeout.map(|d| format!("{}secs", d.as_secs_f64())).unwrap_or_default(),
    });
    let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
    let handle = Handle { inputs: inputs_tx, next_conn: Arc::new(AtomicU64::new(1)), info: Arc::new(info.clone()) };
    let (view_tx, view_rx) = watch::channel(Leadership::default());
    let seat = config.zk.as_ref().map(|url| {
        tracing::info!(zk = %url, "contending for leadership");
        let mesos_info =
            agora_detector::MesosMasterInfo::new(&info.id, addr.ip(), addr.port(), &info.hostname, VERSION);
        election::start(url.clone(), mesos_info, config.zk_session_timeout)
    });
    let actor = Actor {
        master: Master::new(info.clone(), core_config.clone(), now()),
        frameworks: HashMap::new(),
        agents: HashMap::new(),
        flags,
        leading: false,
        store: None,
        info,
        core_config,
        work_dir: config.work_dir.clone(),
        zk_path: config.zk.as_ref().map(|u| u.path.clone()),
        view: view_tx,
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    // If the actor fails (the registry cannot be loaded or written), the whole master stops with its error.
    let (failed_tx, failed_rx) = oneshot::channel::<()>();
    let failure: Arc<std::sync::Mutex<Option<MasterError>>> = Arc::default();
    let failure_slot = failure.clone();
    let actor_task = tokio::spawn(async move {
        if let Err(e) = actor.run(inputs_rx, stop_rx, seat).await {
            *failure_slot.lock().expect("not poisoned") = Some(e);
            let _ = failed_tx.send(());
        }
    });

    let grpc_routes =
        tonic::service::Routes::new(wire::scheduler_server::SchedulerServer::new(grpc::SchedulerService {
            handle: handle.clone(),
        }))
        .add_service(wire::agent_link_server::AgentLinkServer::new(grpc::AgentLinkService { handle: handle.clone() }))
        .into_axum_router();
    let app = http::router(handle.clone())
        .merge(grpc_routes)
        .layer(axum::middleware::from_fn_with_state(view_rx, leader::guard));

    // On shutdown: stop the actor first (ending every stream), then let axum drain the rest.
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("master shutting down");
        let _ = stop_tx.send(());
        let _ = drained_tx.send(());
    });
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        tokio::select! {
            _ = drained_rx => {}
            Ok(()) = failed_rx => {}
        }
    });
    let result = serve.into_future();
    tokio::pin!(result);
    let outcome = tokio::select! {
        r = &mut result => r,
        _ = async {
            actor_task.await.ok();
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections still open after the shutdown grace period; closing them");
            Ok(())
        }
    };
    if let Some(e) = failure.lock().expect("not poisoned").take() {
        return Err(e);
    }
    outcome.map_err(MasterError::Serve)
}
