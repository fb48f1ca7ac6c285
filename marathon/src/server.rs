//! The process: load the state, subscribe to the master through the SDK driver, serve the REST API, tick the
//! clock; stop on the shutdown signal without tearing the framework down (its tasks keep running for the next
//! Marathon to pick up).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_framework_sdk::{Driver, DriverError, DriverOptions, FrameworkInfo};
use agora_proto::model::Capability;
use tokio::net::TcpListener;

use crate::core::Core;
use crate::scheduler::{Info, MarathonScheduler, Shared};
use crate::store::{FileStore, StateStore, StoreError};
use crate::time::now_millis;

/// Marathon's `--failover_timeout`: a week.
pub const FAILOVER_TIMEOUT_SECONDS: f64 = 604_800.0;
/// How often the clock ticks (launch delays, kill retries, unreachable timers).
pub const TICK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Config {
    pub master: String,
    pub work_dir: PathBuf,
    /// The name this Marathon announces (`/v2/leader`, the framework's hostname).
    pub hostname: String,
    pub framework_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("cannot read the HTTP listener's address: {0}")]
    Address(std::io::Error),
}

/// Runs Marathon until `shutdown` resolves or the driver stops on a fatal error.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Address)?;
    let store = FileStore::new(&config.work_dir)?;
    let state = store.load()?.unwrap_or_default();
    tracing::info!(
        apps = state.apps.len(),
        instances = state.instances.len(),
        framework_id = ?state.framework_id,
        path = %store.path().display(),
        "loaded state"
    );
    let mut framework = FrameworkInfo::new(config.framework_name.clone());
    framework.id = state.framework_id.clone();
    framework.failover_timeout = FAILOVER_TIMEOUT_SECONDS;
    framework.checkpoint = true;
    framework.capabilities = vec![Capability::PartitionAware, Capability::TaskKillingState];
    framework.hostname = Some(config.hostname.clone());
    framework.webui_url = Some(format!("http://{}:{}", config.hostname, addr.port()));
    // Subscribe with offers suppressed: the first settle REVIVEs if anything is to be launched, so an idle
    // Marathon never holds other frameworks' resources.
    let options = DriverOptions { suppressed_roles: vec!["*".into()], ..DriverOptions::default() };
    let driver = Driver::new(&config.master, framework, options)?;
    let info = Info {
        hostname: config.hostname.clone(),
        http_port: addr.port(),
        master: config.master.clone(),
        framework_name: config.framework_name.clone(),
        failover_timeout: FAILOVER_TIMEOUT_SECONDS,
    };
    let shared = Arc::new(Shared::new(Core::new(state), Box::new(store) as Box<dyn StateStore>, driver.handle(), info));

    let scheduler = MarathonScheduler { shared: shared.clone() };
    let mut driver_task = tokio::spawn(driver.run(scheduler));

    let ticker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                shared.tick(now_millis());
            }
        })
    };

    let app = crate::api::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            })
            .await
    });
    tracing::info!(%addr, master = %config.master, "Marathon is serving its API");

    let result = tokio::select! {
        _ = shutdown => Ok(()),
        r = &mut driver_task => match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ServerError::Driver(e)),
            Err(e) => Err(ServerError::Http(std::io::Error::other(e))),
        },
        r = &mut http => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServerError::Http(e)),
            Err(e) => Err(ServerError::Http(std::io::Error::other(e))),
        },
    };
    ticker.abort();
    shared.driver.stop();
    let _ = stop_http.send(());
    // SSE streams never end on their own; do not wait for them long.
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut http).await;
    http.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut driver_task).await;
    {
        let mut core = shared.lock();
        core.dirty = true;
        shared.settle(&mut core, now_millis());
    }
    result
}
