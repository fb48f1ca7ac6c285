//! The process: load the state, subscribe to the master through the SDK driver, serve the REST API, tick the
//! clock; stop on the shutdown signal without tearing the framework down (its tasks keep running for the next
//! Marathon to pick up). Standalone ([`run`]) or highly available with ZooKeeper ([`run_ha`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_detector::election::{self, Contender, Role};
use agora_detector::{Leader, ZkUrl};
use agora_framework_sdk::{Driver, DriverError, DriverOptions, FrameworkInfo};
use agora_proto::model::Capability;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::Core;
use crate::proxy::Front;
use crate::scheduler::{Info, MarathonScheduler, Shared};
use crate::store::zk::ZkStore;
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
    /// Marathon's `--max_running_deployments`: a change that would start one more is refused with 403.
    pub max_running_deployments: usize,
    /// Marathon's `--access_control_allow_origin`: origins allowed by CORS (empty: no CORS headers).
    pub access_control_allow_origin: Vec<String>,
    /// Marathon's `--event_stream_max_outstanding_messages`: how far an `/v2/events` client may fall behind before
    /// it is disconnected ([`crate::events::BUFFER`] by default).
    pub event_stream_max_outstanding_messages: usize,
    /// Marathon's `--mesos_role`: the role it subscribes in and its apps run in, so they are offered resources
    /// reserved for it besides the unreserved ones (`*`).
    pub mesos_role: String,
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
    #[error("lost leadership in ZooKeeper; stopping so that only the new leader acts")]
    LostLeadership,
    #[error("another Marathon wrote the state in ZooKeeper (it leads now); stopping without writing more")]
    Overtaken,
}

/// Runs Marathon standalone (state in `<work_dir>`: `marathon-state.json` and its journal) until `shutdown` resolves or the driver
/// stops on a fatal error. `DELETE /v2/leader` is a new election that this lone instance wins again: it stops
/// leading (persisting), reloads its state and subscribes anew with its framework id, reconciling first.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Address)?;
    let front = Arc::new(Front::new(format!("{}:{}", config.hostname, addr.port())));
    let app = crate::proxy::router(front.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (stop_http, mut http) = serve(listener, app);
    tokio::pin!(shutdown);
    let result = loop {
        let leading = FileStore::new(&config.work_dir).map_err(ServerError::from).and_then(|store| {
            let state = store.load()?.unwrap_or_default();
            tracing::info!(path = %store.path().display(), "state file");
            start_leading(&config, addr.port(), state, Box::new(store), None)
        });
        let mut leading = match leading {
            Ok(l) => l,
            Err(e) => break Err(e),
        };
        front.lead(crate::api::router(leading.shared.clone()));
        tracing::info!(%addr, master = %config.master, "Marathon is serving its API");
        let outcome = tokio::select! {
            _ = &mut shutdown => Ok(false),
            _ = leading.shared.abdicated.notified() => Ok(true),
            r = &mut leading.driver_task => driver_result(r).map(|()| false),
            r = &mut http => http_result(r).map(|()| false),
        };
        front.stand_by();
        leading.stop(true).await;
        match outcome {
            Ok(true) => tracing::warn!("abdicated; no other instance to elect, so this one leads again"),
            other => break other.map(|_| ()),
        }
    };
    stop_serving(stop_http, http).await;
    result
}

/// High availability (`--zk`): where the instances meet and how long their ZooKeeper sessions live.
#[derive(Clone, Debug)]
pub struct HaConfig {
    /// `zk://HOST:PORT[,HOST:PORT]/PATH`: the election under `PATH/leader`, the state under `PATH/state`.
    pub zk: ZkUrl,
    pub session_timeout: Duration,
}

/// The election members' prefix (their data is the instance's `host:port`).
const MEMBER_PREFIX: &str = "member_";

fn decode_member(data: &[u8]) -> Option<Leader> {
    let address = std::str::from_utf8(data).ok()?.trim().to_string();
    (!address.is_empty()).then_some(Leader { address, id: String::new() })
}

/// Runs Marathon with ZooKeeper: it contends for leadership with the other instances on the same path and, while
/// standing by, proxies the API to the leader ([`crate::proxy`]). Once elected it loads the state from ZooKeeper
/// and subscribes with the stored framework id; the first thing it does as the framework is reconcile every task
/// it knows of with the master, and its recorded instances count as placed meanwhile, so nothing is launched or
/// killed twice. It never goes back to standing by: when it loses leadership (its session disconnected or
/// expired) it stops at once with [`ServerError::LostLeadership`], and when its store finds that another Marathon
/// wrote the state (a leader elected while this one was cut off, whose load fenced this one's writes off) with
/// [`ServerError::Overtaken`]; either way writing nothing more, as Marathon exits.
pub async fn run_ha(
    config: Config,
    ha: HaConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Address)?;
    let me = format!("{}:{}", config.hostname, addr.port());
    let mut role = election::start(Contender {
        url: ZkUrl { servers: ha.zk.servers.clone(), path: format!("{}/leader", ha.zk.path) },
        member_prefix: MEMBER_PREFIX.into(),
        data: me.clone().into_bytes(),
        decode: decode_member,
        session_timeout: ha.session_timeout,
    });
    let front = Arc::new(Front::new(me.clone()));
    let app = crate::proxy::router(front.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (stop_http, mut http) = serve(listener, app);
    tracing::info!(%addr, zk = %ha.zk, "Marathon is standing by for leadership");
    tokio::pin!(shutdown);

    let member = loop {
        let current = role.borrow_and_update().clone();
        match current {
            Role::Leader { client, member } => break Some((client, member)),
            Role::Candidate { leader } => front.set_leader(leader.map(|l| l.address)),
        }
        tokio::select! {
            _ = &mut shutdown => break None,
            r = role.changed() => if r.is_err() { break None },
            r = &mut http => return http_result(r),
        }
    };
    let Some((client, member)) = member else {
        stop_serving(stop_http, http).await;
        return Ok(());
    };
    tracing::info!(%me, member, "elected: loading the state from ZooKeeper; reconciling before acting");
    let store = ZkStore::new(client, &format!("{}/state", ha.zk.path))?;
    let state = match store.load() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            stop_serving(stop_http, http).await;
            return Err(e.into());
        }
    };
    let mut leading = start_leading(&config, addr.port(), state, Box::new(store), Some(&ha))?;
    front.lead(crate::api::router(leading.shared.clone()));

    let result = tokio::select! {
        _ = &mut shutdown => Ok(()),
        _ = leading.shared.abdicated.notified() => Ok(()),
        () = lost(&mut role, &member) => Err(ServerError::LostLeadership),
        _ = leading.shared.overtaken.notified() => Err(ServerError::Overtaken),
        r = &mut leading.driver_task => driver_result(r),
        r = &mut http => http_result(r),
    };
    // No API call changes the state from here on; after losing leadership nothing more is written either: another
    // leader may own the state by now.
    front.stand_by();
    leading.stop(result.is_ok()).await;
    stop_serving(stop_http, http).await;
    drop(role);
    result
}

/// Resolves when the election no longer names `member` the leader.
async fn lost(role: &mut watch::Receiver<Role>, member: &str) {
    loop {
        if role.changed().await.is_err() {
            return;
        }
        if !matches!(&*role.borrow(), Role::Leader { member: m, .. } if m == member) {
            tracing::error!(member, "lost leadership: stopping, as Marathon does");
            return;
        }
    }
}

/// A leading Marathon: the shared state, its driver and its clock.
struct Leading {
    shared: Arc<Shared>,
    driver_task: JoinHandle<Result<MarathonScheduler, DriverError>>,
    ticker: JoinHandle<()>,
    settler: JoinHandle<()>,
}

impl Leading {
    /// Stops the clock and the driver (without tearing the framework down), then persists once more if `persist`.
    async fn stop(mut self, persist: bool) {
        self.ticker.abort();
        self.settler.abort();
        self.shared.driver.stop();
        wait_ended(&mut self.driver_task, Duration::from_secs(5)).await;
        if persist {
            let mut core = self.shared.lock();
            core.dirty = true;
            self.shared.settle(&mut core, now_millis());
        }
    }
}

/// Waits up to `limit` for `task` to end. The caller's `select!` may have taken its result already (the driver
/// ended first, e.g. on the master's "framework failed over", or the HTTP server failed): a finished task is not
/// polled again, which panics.
async fn wait_ended<T>(task: &mut JoinHandle<T>, limit: Duration) {
    if !task.is_finished() {
        let _ = tokio::time::timeout(limit, task).await;
    }
}

/// Subscribes to the master with the state's framework id and starts the clock.
fn start_leading(
    config: &Config,
    http_port: u16,
    state: crate::core::Persisted,
    store: Box<dyn StateStore>,
    ha: Option<&HaConfig>,
) -> Result<Leading, ServerError> {
    tracing::info!(
        apps = state.apps.len(),
        instances = state.instances.len(),
        framework_id = ?state.framework_id,
        "loaded state"
    );
    let mut framework = FrameworkInfo::new(config.framework_name.clone());
    framework.id = state.framework_id.clone();
    framework.failover_timeout = FAILOVER_TIMEOUT_SECONDS;
    framework.checkpoint = true;
    framework.capabilities = vec![Capability::PartitionAware, Capability::TaskKillingState];
    framework.hostname = Some(config.hostname.clone());
    framework.webui_url = Some(format!("http://{}:{}", config.hostname, http_port));
    framework.roles = vec![config.mesos_role.clone()];
    // Subscribe with offers suppressed: the first settle REVIVEs if anything is to be launched, so an idle
    // Marathon never holds other frameworks' resources.
    let options = DriverOptions { suppressed_roles: vec![config.mesos_role.clone()], ..DriverOptions::default() };
    let driver = Driver::new(&config.master, framework, options)?;
    let info = Info {
        hostname: config.hostname.clone(),
        http_port,
        master: config.master.clone(),
        framework_name: config.framework_name.clone(),
        failover_timeout: FAILOVER_TIMEOUT_SECONDS,
        zk: ha.map(|h| (h.zk.to_string(), h.session_timeout.as_millis() as u64)),
        access_control_allow_origin: config.access_control_allow_origin.clone(),
        mesos_role: config.mesos_role.clone(),
    };
    let mut core = Core::new(state);
    core.max_running_deployments = Some(config.max_running_deployments);
    core.mesos_role = Some(config.mesos_role.clone());
    let mut shared = Shared::new(core, store, driver.handle(), info);
    shared.bus = crate::events::EventBus::with_capacity(config.event_stream_max_outstanding_messages);
    let shared = Arc::new(shared);

    let scheduler = MarathonScheduler { shared: shared.clone() };
    let driver_task = tokio::spawn(driver.run(scheduler));

    let settler = shared.spawn_settler();
    let ticker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            let probes = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
            loop {
                interval.tick().await;
                shared.tick(now_millis());
                crate::readiness::send_due_probes(&shared, &probes, now_millis());
            }
        })
    };
    Ok(Leading { shared, driver_task, ticker, settler })
}

type Http = JoinHandle<std::io::Result<()>>;

fn serve(
    listener: TcpListener,
    app: axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, SocketAddr>,
) -> (tokio::sync::oneshot::Sender<()>, Http) {
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            })
            .await
    });
    (stop_http, http)
}

async fn stop_serving(stop_http: tokio::sync::oneshot::Sender<()>, mut http: Http) {
    let _ = stop_http.send(());
    // SSE streams never end on their own; do not wait for them long.
    wait_ended(&mut http, Duration::from_secs(2)).await;
    http.abort();
}

fn driver_result(r: Result<Result<MarathonScheduler, DriverError>, tokio::task::JoinError>) -> Result<(), ServerError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ServerError::Driver(e)),
        Err(e) => Err(ServerError::Http(std::io::Error::other(e))),
    }
}

fn http_result(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), ServerError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServerError::Http(e)),
        Err(e) => Err(ServerError::Http(std::io::Error::other(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader whose driver ended first (its result taken by the `select!`) stops without polling it again.
    #[tokio::test]
    async fn a_task_whose_result_was_taken_is_not_awaited_again() {
        let mut task = tokio::spawn(async { 1 });
        assert_eq!((&mut task).await.unwrap(), 1);
        wait_ended(&mut task, Duration::from_secs(5)).await;

        let mut running = tokio::spawn(std::future::pending::<()>());
        let started = std::time::Instant::now();
        wait_ended(&mut running, Duration::from_millis(50)).await;
        assert!(!running.is_finished() && started.elapsed() >= Duration::from_millis(50));
        running.abort();
    }
}
