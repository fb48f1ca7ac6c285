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
use tokio::sync::{mpsc, oneshot};

use crate::core::{
    AgentCommand, AgentMessage, Call, CallError, ConnId, CoreConfig, Effect, Master, Now, SchedulerEvent,
};
use crate::{Config, grpc, http};

/// Why the master could not run.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
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
}

impl Actor {
    fn handle(&mut self, input: Input) {
        let now = now();
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

    fn apply_effects(&mut self) {
        for e in self.master.drain_effects() {
            match e {
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
    }

    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>, mut stop: oneshot::Receiver<()>) {
        loop {
            let deadline = self.master.next_deadline(now());
            tokio::select! {
                _ = &mut stop => break,
                input = inputs.recv() => {
                    let Some(input) = input else { break };
                    self.handle(input);
                    // Drain what else is queued before allocating, so bursts coalesce into one pass.
                    while let Ok(more) = inputs.try_recv() {
                        self.handle(more);
                    }
                    self.master.allocate_if_wanted(now());
                }
                _ = tokio::time::sleep_until(deadline.into()) => self.master.tick(now()),
            }
            self.apply_effects();
        }
        // Dropping every sender ends every framework stream and agent link.
        self.frameworks.clear();
        self.agents.clear();
    }
}

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
    let actor = Actor {
        master: Master::new(info, core_config, now()),
        frameworks: HashMap::new(),
        agents: HashMap::new(),
        flags,
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let actor_task = tokio::spawn(actor.run(inputs_rx, stop_rx));

    let grpc_routes =
        tonic::service::Routes::new(wire::scheduler_server::SchedulerServer::new(grpc::SchedulerService {
            handle: handle.clone(),
        }))
        .add_service(wire::agent_link_server::AgentLinkServer::new(grpc::AgentLinkService { handle: handle.clone() }))
        .into_axum_router();
    let app = http::router(handle.clone()).merge(grpc_routes);

    // On shutdown: stop the actor first (ending every stream), then let axum drain the rest.
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("master shutting down");
        let _ = stop_tx.send(());
        let _ = drained_tx.send(());
    });
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = drained_rx.await;
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
    outcome.map_err(MasterError::Serve)
}
