//! The master's server: [`run`] starts the [`Actor`] that owns the core, joins the election (`--zk`), and serves
//! gRPC and HTTP on one listener (as Mesos serves everything on 5050) until shutdown, then drains. What the
//! handlers speak to is the actor module; this file is only wiring.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::model::{MasterInfo, VERSION};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::actor::{Actor, ActorConfig, Handle};
use crate::core::CoreConfig;
use crate::election;
use crate::leader::Leadership;
use crate::registry::RegistryError;
use crate::{Config, http};

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
        network: config.network.clone(),
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
        "network_cidr": config.network.as_ref().map_or("none".to_string(), |n| n.plan.cluster.to_string()),
        "network_subnet_prefix": config.network.as_ref().map(|n| n.plan.subnet_prefix.to_string()),
        "network_name": config.network.as_ref().map(|n| n.name.clone()),
        "heartbeat_interval": format!("{}secs", config.heartbeat_interval.as_secs_f64()),
        "max_operator_event_stream_subscribers": config.max_operator_event_stream_subscribers.to_string(),
        "zk": config.zk.as_ref().map(|u| u.to_string()).unwrap_or_default(),
    });
    let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
    let handle = Handle::new(inputs_tx, info.clone(), config.heartbeat_interval, flags);
    let (view_tx, view_rx) = watch::channel(Leadership::default());
    let seat = config.zk.as_ref().map(|url| {
        tracing::info!(zk = %url, "contending for leadership");
        let mesos_info =
            agora_detector::MesosMasterInfo::new(&info.id, addr.ip(), addr.port(), &info.hostname, VERSION);
        election::start(url.clone(), mesos_info, config.zk_session_timeout)
    });
    let actor = Actor::new(
        ActorConfig {
            info,
            core: core_config,
            work_dir: config.work_dir.clone(),
            zk_path: config.zk.as_ref().map(|u| u.path.clone()),
            max_operators: config.max_operator_event_stream_subscribers,
            operator_stats: handle.operator_streams.clone(),
        },
        view_tx,
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    // If the actor fails (the registry cannot be loaded or written), the whole master stops with its error.
    let (failed_tx, failed_rx) = oneshot::channel::<()>();
    let failure: Arc<std::sync::Mutex<Option<MasterError>>> = Arc::default();
    let failure_slot = failure.clone();
    let actor_task = tokio::spawn(async move {
        if let Err(e) = actor.run(inputs_rx, stop_rx, seat).await {
            *failure_slot.lock().expect("not poisoned") = Some(MasterError::Registry(e));
            let _ = failed_tx.send(());
        }
    });

    let app = http::app(handle, view_rx);

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
