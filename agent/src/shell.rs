//! The tokio shell around [`AgentCore`]: one event loop that feeds the core master messages, container results and
//! timer ticks, and carries out the effects it returns; plus the HTTP server and the stream to the master.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_detector::backoff::{Backoff, random_unit};
use agora_proto::wire;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::AgentError;
use crate::config::{Config, GcConfig};
use crate::containerizer::{ContainerError, Containerizer, LaunchSpec, Termination};
use crate::core::{AgentCore, Effect, FromMaster, LaunchFailed, Registration, Settings, TaskKey};
use crate::launcher::LaunchError;
use crate::link::{self, LinkEvent};
use crate::network::NetworkManager;

/// Reconnection backoff cap (Mesos's `REGISTER_RETRY_INTERVAL_MAX`).
pub const MAX_REGISTRATION_BACKOFF: Duration = Duration::from_secs(60);
/// Messages waiting for the stream to the master before new ones are dropped (status updates are re-sent).
const OUTBOUND_CAPACITY: usize = 1024;
/// How long shutdown waits beyond the longest grace period for tasks to exit.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(10);
/// How long the master may take to answer `register`/`reregister` before the agent tries again.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the HTTP server may take to stop.
const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Events handled together, with one checkpoint write, before the loop looks at its timers again.
const EVENT_BATCH: usize = 1024;

/// What one event asks of the shell.
enum Step {
    Effects(Vec<Effect>),
    /// The link to the master ended.
    LinkLost(String),
    /// The master refused this agent; the effects go out, then the link is dropped.
    Refused(Vec<Effect>),
}

/// Mesos's `--registration_backoff_factor`: retry `n` waits a random time in `[0, factor × 2^n]`, the bound capped
/// at one minute (`Backoff::ceiling` is the bound).
pub fn registration_backoff(factor: Duration) -> Backoff {
    Backoff::new(factor, MAX_REGISTRATION_BACKOFF).with_jitter(1.0)
}

enum Event {
    Link {
        generation: u64,
        event: LinkEvent,
    },
    Launched {
        task: TaskKey,
        container_id: String,
        result: Result<(), LaunchFailed>,
    },
    Exited {
        task: TaskKey,
        container_id: String,
        result: Result<Termination, ContainerError>,
    },
    Health {
        task: TaskKey,
        container_id: String,
        report: crate::health::Report,
    },
    /// The launcher attached the container to the container network at `ip`.
    Attached {
        task: TaskKey,
        container_id: String,
        ip: std::net::Ipv4Addr,
    },
}

struct Link {
    generation: u64,
    outbound: mpsc::Sender<wire::AgentMessage>,
    task: JoinHandle<()>,
}

struct Shell<C> {
    core: Arc<Mutex<AgentCore>>,
    containerizer: Arc<C>,
    events: mpsc::UnboundedSender<Event>,
    /// The master, fixed or followed through ZooKeeper.
    endpoint: link::Locator,
    backoff_factor: Duration,
    link: Option<Link>,
    generation: u64,
    attempts: u32,
    reconnect_at: Option<Instant>,
    /// While a stream waits for `registered`: when to give up on it.
    registration_deadline: Option<Instant>,
    /// `<work_dir>/meta`; `None` in tests that do not checkpoint.
    checkpoint: Option<crate::checkpoint::CheckpointDir>,
    /// The fetcher, with its cache (`--fetcher-cache-dir`, `--fetcher-cache-size`).
    fetcher: Arc<crate::fetcher::Fetcher>,
    /// One health checking task per checked task.
    health_checks: HashMap<TaskKey, JoinHandle<()>>,
    /// The container network (`--network-bridge`).
    network: Option<Arc<NetworkManager>>,
    /// The launch stages' durations, for `/metrics`.
    launches: Arc<crate::metrics::LaunchTimes>,
}

fn lock(core: &Mutex<AgentCore>) -> MutexGuard<'_, AgentCore> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// [`crate::run`] with any containerizer.
pub async fn run_with<C: Containerizer>(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    containerizer: C,
) -> Result<(), AgentError> {
    let port = listener.local_addr().map_err(AgentError::Listener)?.port();
    tokio::fs::create_dir_all(&config.work_dir)
        .await
        .map_err(|source| AgentError::WorkDir { path: config.work_dir.clone(), source })?;
    let endpoint = link::Locator::new(&config.master)
        .map_err(|source| AgentError::MasterAddress { master: config.master.clone(), source })?;
    let checkpoint_dir = crate::checkpoint::CheckpointDir::open(&config.work_dir).map_err(AgentError::Checkpoint)?;
    let checkpoint = crate::checkpoint::read(&config.work_dir, config.strict).map_err(AgentError::Checkpoint)?;
    let recovered = containerizer.recover().await.map_err(AgentError::Recover)?;
    let network = match &config.network {
        Some(host) => {
            let driver = NetworkManager::linux_driver(&config.work_dir);
            Some(Arc::new(NetworkManager::new(host.clone(), &config.work_dir, driver).map_err(AgentError::Network)?))
        }
        None => None,
    };
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
    let settings = Settings {
        agent: config.agent_info(port),
        work_dir: config.work_dir.clone(),
        status_update_retry_interval: config.status_update_retry_interval,
        executor_shutdown_grace_period: config.executor_shutdown_grace_period,
        path_env: std::env::var("PATH").ok(),
        started: (Instant::now(), started_unix),
        images: crate::image::ImageSupport::new(
            config.docker_registry.clone(),
            config.isolation == crate::config::Isolation::Libcontainer,
        ),
        networks: network.is_some(),
    };
    let mut core = AgentCore::new(settings);
    let leases = network.as_ref().map(|n| n.leases()).unwrap_or_default();
    core.restore_network(network.as_ref().and_then(|n| n.assignment()));
    let now = Instant::now();
    let recovery_effects = match checkpoint {
        Some(r) => {
            let cp = r.checkpoint;
            for skipped in &r.skipped {
                error!(error = %skipped, "--strict=false: skipping a corrupt checkpoint file");
            }
            info!(agent_id = %cp.agent_id.clone().unwrap_or_default(), tasks = cp.tasks.len(), containers = recovered.len(), legacy = r.legacy, "recovering from the checkpoint");
            let effects = core.recover(cp, recovered, &leases, now);
            if r.legacy {
                info!("rewriting the single-file checkpoint meta/agent.json as one file per task");
                core.mark_all_changed();
            }
            effects
        }
        None => {
            // A fresh agent writes its (empty) checkpoint at once. Without a checkpoint no task claims these
            // containers.
            core.mark_all_changed();
            let mut effects: Vec<Effect> =
                recovered.into_iter().map(|c| Effect::Destroy { task: None, container_id: c.container_id }).collect();
            if network.is_some() {
                effects.push(Effect::ReconcileNetwork { live: Default::default() });
            }
            effects
        }
    };
    let core = Arc::new(Mutex::new(core));
    info!(port, master = %config.master, resources = %config.resources, "agent starting");
    let containerizer = Arc::new(containerizer);

    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let launches = Arc::new(crate::metrics::LaunchTimes::default());
    let statistics = crate::statistics::router(core.clone(), containerizer.clone());
    let routes = crate::http::app(core.clone(), launches.clone(), &config, port, statistics);
    let server = axum::serve(listener, routes)
        .with_graceful_shutdown(async {
            let _ = http_stopped.await;
        })
        .into_future();
    let http = tokio::spawn(server);
    let gc = tokio::spawn(collect_garbage(config.work_dir.clone(), config.gc, core.clone()));

    let (events, mut inbox) = mpsc::unbounded_channel();
    let mut shell = Shell {
        core,
        containerizer,
        events,
        endpoint,
        backoff_factor: config.registration_backoff_factor,
        link: None,
        generation: 0,
        attempts: 0,
        reconnect_at: Some(Instant::now()),
        registration_deadline: None,
        checkpoint: Some(checkpoint_dir),
        fetcher: Arc::new(crate::fetcher::Fetcher::new(
            config.fetcher_cache_dir.clone(),
            config.fetcher_cache_size,
            config.fetcher_ca_file.clone(),
        )),
        health_checks: HashMap::new(),
        network,
        launches,
    };
    shell.apply(recovery_effects).await;

    let shutdown = std::pin::pin!(shutdown);
    shell.serve(&mut inbox, shutdown).await;
    shell.stop(&mut inbox).await;
    gc.abort();

    let _ = stop_http.send(());
    let mut http = http;
    match tokio::time::timeout(HTTP_STOP_TIMEOUT, &mut http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(AgentError::Http(e)),
        Ok(Err(e)) => error!(error = %e, "http server task failed"),
        Err(_) => {
            warn!("http server did not stop in time; aborting it");
            http.abort();
        }
    }
    info!("agent stopped");
    Ok(())
}

/// Marks a sandbox whose container just ended, so the garbage collector counts its age from now.
fn mark_ended(sandbox: &Path) {
    if let Err(e) = crate::gc::mark_ended(sandbox, SystemTime::now()) {
        // It then counts from its last change: deleted sooner, never kept forever.
        debug!(sandbox = %sandbox.display(), error = %e, "cannot mark the sandbox as ended");
    }
}

/// Every `--disk-watch-interval`: measures the work dir's disk and deletes the sandboxes older than the
/// [`crate::gc::max_age`] that leaves (Mesos's `--gc_delay` and `--gc_disk_headroom`).
async fn collect_garbage(work_dir: PathBuf, gc: GcConfig, core: Arc<Mutex<AgentCore>>) {
    let mut every = tokio::time::interval(gc.disk_watch_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (work_dir, in_use) = (work_dir.clone(), core.clone());
        let round = tokio::task::spawn_blocking(move || -> Result<_, crate::gc::GcError> {
            let used = crate::gc::disk_used(&work_dir)?;
            let max_age = crate::gc::max_age(gc.delay, gc.disk_headroom, used);
            let scanned = crate::gc::scan(&work_dir)?;
            Ok((used, max_age, crate::gc::collect(&work_dir, &scanned, SystemTime::now(), max_age, || lock(&in_use))))
        });
        match round.await {
            Ok(Ok((used, max_age, report))) => {
                lock(&core).record_gc(&report);
                for path in &report.removed {
                    debug!(sandbox = %path.display(), "deleted an old sandbox");
                }
                for (path, error) in &report.failed {
                    warn!(sandbox = %path.display(), error = %error, "cannot delete an old sandbox");
                }
                if !report.removed.is_empty() || !report.failed.is_empty() {
                    info!(
                        deleted = report.removed.len(),
                        failed = report.failed.len(),
                        kept = report.pending,
                        disk_used = format!("{:.1}%", used * 100.0),
                        max_age = ?max_age,
                        "sandbox garbage collection"
                    );
                }
            }
            Ok(Err(e)) => warn!(error = %e, "sandbox garbage collection failed"),
            Err(e) => error!(error = %e, "sandbox garbage collection panicked"),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl<C: Containerizer> Shell<C> {
    /// Runs until `shutdown` resolves.
    async fn serve(
        &mut self,
        inbox: &mut mpsc::UnboundedReceiver<Event>,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) {
        loop {
            let deadline = [lock(&self.core).next_deadline(), self.reconnect_at, self.registration_deadline]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                _ = shutdown.as_mut() => return,
                Some(event) = inbox.recv() => self.on_events(event, inbox).await,
                _ = sleep_until(deadline) => self.on_timer().await,
                _ = self.endpoint.leader_changed() => {
                    // A new leader: re-register with it at once, without waiting out the backoff.
                    info!("the leading master changed; re-registering with it");
                    self.attempts = 0;
                    self.reconnect_at = None;
                    self.connect();
                }
            }
        }
    }

    /// Kills every task (SIGTERM, grace, SIGKILL) and waits for them to exit.
    async fn stop(&mut self, inbox: &mut mpsc::UnboundedReceiver<Event>) {
        let now = Instant::now();
        let effects = lock(&self.core).shutdown(now);
        self.apply(effects).await;
        let grace = lock(&self.core).longest_grace();
        let give_up = now + grace + SHUTDOWN_SLACK;
        while lock(&self.core).live_containers() > 0 {
            let deadline = lock(&self.core).next_deadline().map(|d| d.min(give_up)).unwrap_or(give_up);
            tokio::select! {
                Some(event) = inbox.recv() => self.on_event(event).await,
                _ = sleep_until(Some(deadline)) => {
                    if Instant::now() >= give_up {
                        error!(left = lock(&self.core).live_containers(), "tasks did not exit in time");
                        break;
                    }
                    // Only the core's timers: no reconnecting while stopping.
                    let effects = lock(&self.core).tick(Instant::now());
                    self.apply(effects).await;
                }
            }
        }
        if let Some(link) = self.link.take() {
            link.task.abort();
        }
        if let Some(network) = &self.network {
            if lock(&self.core).live_containers() > 0 {
                warn!("containers are still running; leaving the container network on the host");
            } else if let Err(e) = network.teardown().await {
                error!(error = %e, "cannot remove the container network from the host");
            }
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.registration_deadline.is_some_and(|at| at <= now) {
            self.link_lost("the master did not answer the registration in time", now);
        }
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            self.connect();
        }
        let effects = lock(&self.core).tick(now);
        self.apply(effects).await;
    }

    /// Opens a new stream whose first message is `register` or `reregister`.
    fn connect(&mut self) {
        if let Some(old) = self.link.take() {
            old.task.abort();
        }
        self.generation += 1;
        let generation = self.generation;
        let registration = lock(&self.core).connecting();
        let kind = match &registration {
            Registration::Register { .. } => "register",
            Registration::Reregister { .. } => "reregister",
        };
        info!(attempt = self.attempts, kind, "connecting to the master");
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
        // The channel is new and empty, so the first message always fits.
        let _ = outbound.try_send(link::registration_to_wire(registration));
        let events = self.events.clone();
        let endpoint = self.endpoint.endpoint();
        let task = tokio::spawn(async move {
            match endpoint {
                Ok(endpoint) => {
                    link::run_stream(endpoint, outbound_rx, |event| {
                        events.send(Event::Link { generation, event }).is_ok()
                    })
                    .await
                }
                Err(why) => {
                    let _ = events.send(Event::Link { generation, event: LinkEvent::Ended(why.to_string()) });
                }
            }
        });
        self.link = Some(Link { generation, outbound, task });
        self.registration_deadline = Some(Instant::now() + REGISTRATION_TIMEOUT);
    }

    /// Handles `first` and the events already queued behind it (at most [`EVENT_BATCH`]) as one batch: the core
    /// takes them in order and their effects go out together after a single checkpoint write, so a burst of
    /// launches, container starts or acknowledgements costs one checkpoint instead of one each (with thousands of
    /// tasks, rewriting the checkpoint per event made a burst quadratic). An event that drops the link ends the
    /// batch: what came before it is applied first.
    async fn on_events(&mut self, first: Event, inbox: &mut mpsc::UnboundedReceiver<Event>) {
        let mut effects = Vec::new();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(event) = next.take() {
            let now = Instant::now();
            match self.step(event, now) {
                Step::Effects(more) => effects.extend(more),
                Step::LinkLost(why) => {
                    self.apply(std::mem::take(&mut effects)).await;
                    self.link_lost(&why, now);
                    break;
                }
                Step::Refused(more) => {
                    effects.extend(more);
                    self.apply(std::mem::take(&mut effects)).await;
                    // The master ends the stream after an error; do not wait for it to register anew.
                    self.link_lost("the master refused this agent", now);
                    break;
                }
            }
            handled += 1;
            if handled < EVENT_BATCH {
                next = inbox.try_recv().ok();
            }
        }
        self.apply(effects).await;
    }

    /// Handles one event alone (while stopping).
    async fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        match self.step(event, now) {
            Step::Effects(effects) => self.apply(effects).await,
            Step::LinkLost(why) => self.link_lost(&why, now),
            Step::Refused(effects) => {
                self.apply(effects).await;
                self.link_lost("the master refused this agent", now);
            }
        }
    }

    /// The core's reaction to one event; effects are left to the caller.
    fn step(&mut self, event: Event, now: Instant) -> Step {
        match event {
            Event::Link { generation, .. } if generation != self.generation => Step::Effects(vec![]),
            Event::Link { event: LinkEvent::Message(msg), .. } => {
                let Some(msg) = link::from_wire(*msg) else {
                    debug!("ignoring an empty message from the master");
                    return Step::Effects(vec![]);
                };
                if matches!(msg, FromMaster::Registered { .. }) {
                    self.attempts = 0;
                    self.registration_deadline = None;
                }
                let refused = matches!(msg, FromMaster::Error { .. });
                let effects = lock(&self.core).handle(msg, now);
                if refused { Step::Refused(effects) } else { Step::Effects(effects) }
            }
            Event::Link { event: LinkEvent::Ended(why), .. } => Step::LinkLost(why),
            Event::Launched { task, container_id, result } => {
                Step::Effects(lock(&self.core).launched(&task, &container_id, result, now))
            }
            Event::Exited { task, container_id, result } => {
                Step::Effects(lock(&self.core).exited(&task, &container_id, result, now))
            }
            Event::Health { task, container_id, report } => {
                Step::Effects(lock(&self.core).health(&task, &container_id, report, now))
            }
            Event::Attached { task, container_id, ip } => {
                Step::Effects(lock(&self.core).network_attached(&task, &container_id, ip))
            }
        }
    }

    /// Drops the current stream and schedules the next attempt with backoff.
    fn link_lost(&mut self, why: &str, now: Instant) {
        let delay = registration_backoff(self.backoff_factor).delay(self.attempts, random_unit());
        self.attempts = self.attempts.saturating_add(1);
        warn!(reason = %why, retry_in = ?delay, "lost the master");
        if let Some(link) = self.link.take() {
            link.task.abort();
        }
        self.registration_deadline = None;
        self.reconnect_at = Some(now + delay);
        lock(&self.core).disconnected();
    }

    /// Writes what changed in the core's checkpoint (the files of the tasks that changed); called before effects go
    /// out, so nothing is sent or launched that a restarted agent would not know about. A failed write is retried
    /// with the next batch.
    fn checkpoint(&mut self) {
        let changes = lock(&self.core).take_changes();
        let Some(dir) = &mut self.checkpoint else { return };
        if changes.is_empty() {
            return;
        }
        if let Err(e) = dir.write(&changes) {
            error!(error = %e, "cannot write the checkpoint; an agent restart may lose tasks");
            lock(&self.core).retry_changes(&changes);
        }
    }

    async fn apply(&mut self, effects: Vec<Effect>) {
        self.checkpoint();
        for effect in effects {
            match effect {
                Effect::Send(msg) => self.send(link::to_wire(&msg)),
                Effect::Launch(spec) => self.launch(*spec),
                Effect::Signal { task, container_id, signal } => {
                    if let Err(e) = self.containerizer.kill(&container_id, signal).await {
                        warn!(task_id = %task.task_id, framework_id = %task.framework_id, error = %e, "cannot signal the task");
                    }
                }
                Effect::Reattach { task, container_id } => self.reattach(task, container_id),
                Effect::StartHealthCheck(spec) => self.start_health_check(*spec),
                Effect::StopHealthCheck { task } => {
                    if let Some(checking) = self.health_checks.remove(&task) {
                        checking.abort();
                    }
                }
                Effect::Destroy { task, container_id } => {
                    let task = task.unwrap_or_default();
                    if let Err(e) = self.containerizer.destroy(&container_id).await {
                        warn!(task_id = %task.task_id, framework_id = %task.framework_id, error = %e, "cannot destroy the container");
                    }
                    if let Some(network) = &self.network
                        && let Err(e) = network.detach(&container_id).await
                    {
                        warn!(task_id = %task.task_id, framework_id = %task.framework_id, error = %e, "cannot free the container's network");
                    }
                }
                Effect::ApplyNetwork(state) => match &self.network {
                    Some(network) => {
                        if let Err(e) = network.apply(&state).await {
                            error!(error = %e, "cannot apply the container network; bridged tasks may not be reachable");
                        }
                    }
                    None => warn!("the core asked for a container network this agent does not run"),
                },
                Effect::ReconcileNetwork { live } => {
                    if let Some(network) = &self.network {
                        network.reconcile(&live).await;
                    }
                }
            }
        }
    }

    fn send(&self, msg: wire::AgentMessage) {
        let Some(link) = &self.link else {
            debug!("not connected; dropping a message (status updates are re-sent after registration)");
            return;
        };
        if let Err(e) = link.outbound.try_send(msg) {
            warn!(generation = link.generation, error = %e, "cannot queue a message for the master; dropping it");
        }
    }

    /// Checks a running task's health in a task of its own until told to stop.
    fn start_health_check(&mut self, spec: crate::health::CheckSpec) {
        let events = self.events.clone();
        let agent_id = lock(&self.core).agent_id().unwrap_or_default().to_string();
        let (task, container_id) = (spec.task.clone(), spec.container_id.clone());
        let span = info_span!("health_check", task_id = %task.task_id, framework_id = %task.framework_id, agent_id = %agent_id);
        let report = {
            let task = task.clone();
            move |report| {
                let _ = events.send(Event::Health { task: task.clone(), container_id: container_id.clone(), report });
            }
        };
        let checking =
            tokio::spawn(crate::health::run(spec, self.containerizer.clone(), Instant::now(), report).instrument(span));
        if let Some(old) = self.health_checks.insert(task, checking) {
            old.abort();
        }
    }

    /// Waits again for a container recovered after a restart.
    fn reattach(&self, task: TaskKey, container_id: String) {
        let containerizer = self.containerizer.clone();
        let events = self.events.clone();
        let (agent_id, sandbox) = {
            let core = lock(&self.core);
            (core.agent_id().unwrap_or_default().to_string(), core.sandbox_of(&task).map(Path::to_path_buf))
        };
        let span =
            info_span!("container", task_id = %task.task_id, framework_id = %task.framework_id, agent_id = %agent_id);
        tokio::spawn(
            async move {
                let result = containerizer.wait(&container_id).await;
                if let Some(sandbox) = &sandbox {
                    mark_ended(sandbox);
                }
                let _ = events.send(Event::Exited { task, container_id, result });
            }
            .instrument(span),
        );
    }

    /// Prepares the launch ([`crate::launcher::prepare`]: sandbox, URIs, image), launches, then waits for the exit,
    /// in a task of its own. A failure of any step is the task's TASK_FAILED with the reason and message of its
    /// [`LaunchError`].
    fn launch(&self, spec: LaunchSpec) {
        let containerizer = self.containerizer.clone();
        let fetcher = self.fetcher.clone();
        let network = self.network.clone();
        let events = self.events.clone();
        let launches = self.launches.clone();
        let agent_id = lock(&self.core).agent_id().unwrap_or_default().to_string();
        let span =
            info_span!("container", task_id = %spec.task_id, framework_id = %spec.framework_id, agent_id = %agent_id);
        tokio::spawn(
            async move {
                let started = Instant::now();
                let task = TaskKey::new(spec.framework_id.clone(), spec.task_id.clone());
                let container_id = spec.container_id.clone();
                let sandbox = spec.sandbox.clone();
                let launched = match crate::launcher::prepare(spec, &fetcher, network.as_deref()).await {
                    Ok(spec) => {
                        let attached = spec.network.as_ref().and_then(|n| n.attached.as_ref()).map(|a| a.ip);
                        if let Some(ip) = attached {
                            let (task, container_id) = (task.clone(), container_id.clone());
                            let _ = events.send(Event::Attached { task, container_id, ip });
                        }
                        let begun = Instant::now();
                        let launched = containerizer.launch(&spec).await.map_err(LaunchError::from);
                        launches.container_launched(begun.elapsed());
                        if let (Err(_), Some(_), Some(network)) = (&launched, attached, &network)
                            && let Err(e) = network.detach(&container_id).await
                        {
                            warn!(error = %e, "cannot free the network of a container that did not launch");
                        }
                        launched
                    }
                    Err(e) => Err(e),
                };
                let result = launched.map_err(|e| LaunchFailed { reason: e.reason(), message: e.to_string() });
                let ok = result.is_ok();
                if ok {
                    launches.task_running(started.elapsed());
                }
                let _ = events.send(Event::Launched { task: task.clone(), container_id: container_id.clone(), result });
                if ok {
                    let result = containerizer.wait(&container_id).await;
                    mark_ended(&sandbox);
                    let _ = events.send(Event::Exited { task, container_id, result });
                }
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerizer::fake::{Call, FakeContainerizer};
    use agora_proto::model::{AgentInfo, CommandInfo, FrameworkInfo, Resources, TaskInfo, TaskState};

    fn shell(work_dir: &std::path::Path) -> (Shell<FakeContainerizer>, mpsc::UnboundedReceiver<Event>) {
        shell_with(work_dir, crate::image::ImageSupport::NoRegistry)
    }

    fn shell_with(
        work_dir: &std::path::Path,
        images: crate::image::ImageSupport,
    ) -> (Shell<FakeContainerizer>, mpsc::UnboundedReceiver<Event>) {
        let settings = Settings {
            agent: AgentInfo {
                id: None,
                hostname: "h".into(),
                ip: "127.0.0.1".into(),
                port: 5051,
                resources: Resources::parse("cpus:1").unwrap(),
                attributes: Default::default(),
            },
            work_dir: work_dir.to_path_buf(),
            status_update_retry_interval: Duration::from_secs(10),
            executor_shutdown_grace_period: Duration::from_secs(3),
            path_env: None,
            started: (Instant::now(), 0.0),
            images,
            networks: false,
        };
        let (events, inbox) = mpsc::unbounded_channel();
        let shell = Shell {
            core: Arc::new(Mutex::new(AgentCore::new(settings))),
            containerizer: Arc::new(FakeContainerizer::default()),
            events,
            endpoint: link::Locator::Fixed(Box::new(tonic::transport::Endpoint::from_static("http://127.0.0.1:1"))),
            backoff_factor: Duration::from_secs(1),
            link: None,
            generation: 0,
            attempts: 0,
            reconnect_at: None,
            registration_deadline: None,
            checkpoint: None,
            fetcher: Arc::new(crate::fetcher::Fetcher::new(
                work_dir.join("fetch-cache"),
                crate::fetcher::DEFAULT_CACHE_SIZE,
                None,
            )),
            health_checks: HashMap::new(),
            network: None,
            launches: Default::default(),
        };
        (shell, inbox)
    }

    fn run_task(id: &str) -> FromMaster {
        let mut f = FrameworkInfo::new("fw");
        f.id = Some("f".into());
        let task = TaskInfo {
            name: id.into(),
            task_id: id.into(),
            agent_id: "a".into(),
            resources: Resources::parse("cpus:0.1").unwrap(),
            command: Some(CommandInfo::shell("true")),
            container: None,
            health_check: None,
            kill_grace_period: None,
            labels: vec![],
            discovery: None,
            data: vec![],
        };
        FromMaster::run_task(f, task)
    }

    async fn next(inbox: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn launch_creates_the_sandbox_then_waits_and_destroys() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shell, mut inbox) = shell(dir.path());
        let effects = lock(&shell.core).handle(run_task("t"), Instant::now());
        shell.apply(effects).await;

        let launched = next(&mut inbox).await;
        let Event::Launched { container_id, result: Ok(()), .. } = &launched else { panic!("launch failed") };
        let container_id = container_id.clone();
        let sandbox = dir.path().join(format!("slaves/a/frameworks/f/executors/t/runs/{container_id}"));
        assert!(sandbox.is_dir());
        shell.on_event(launched).await;
        assert_eq!(lock(&shell.core).task_state(&TaskKey::new("f", "t")), Some(TaskState::Running));

        shell.containerizer.exit(&container_id, Termination::Exited(0));
        let exited = next(&mut inbox).await;
        shell.on_event(exited).await;
        assert_eq!(lock(&shell.core).task_state(&TaskKey::new("f", "t")), Some(TaskState::Finished));
        let calls = shell.containerizer.calls();
        assert!(matches!(&calls[0], Call::Launch(spec) if spec.sandbox == sandbox));
        assert_eq!(calls[1], Call::Wait(container_id.clone()));
        assert_eq!(calls[2], Call::Destroy(container_id));
    }

    #[tokio::test]
    async fn an_image_is_resolved_into_the_rootfs_before_launch_and_a_missing_one_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry");
        std::fs::create_dir_all(registry.join("busybox/latest/bin")).unwrap();
        let images = crate::image::ImageSupport::Registry(registry.clone());
        let (mut shell, mut inbox) = shell_with(&dir.path().join("work"), images);
        let with_image = |id: &str, image: &str| {
            let FromMaster::RunTask { framework, mut task } = run_task(id) else { unreachable!() };
            task.container = Some(agora_proto::model::ContainerInfo {
                kind: agora_proto::model::ContainerType::Mesos,
                rootfs: None,
                volumes: vec![],
                hostname: None,
                image: Some(image.into()),
                network_infos: vec![],
            });
            FromMaster::RunTask { framework, task }
        };
        let effects = lock(&shell.core).handle(with_image("t", "busybox"), Instant::now());
        shell.apply(effects).await;
        let launched = next(&mut inbox).await;
        assert!(matches!(&launched, Event::Launched { result: Ok(()), .. }), "the launch must succeed");
        let calls = shell.containerizer.calls();
        let Call::Launch(spec) = &calls[0] else { panic!("the first call must be the launch") };
        assert_eq!(spec.rootfs, Some(registry.join("busybox/latest")));

        let effects = lock(&shell.core).handle(with_image("m", "missing:2"), Instant::now());
        shell.apply(effects).await;
        let launched = next(&mut inbox).await;
        let Event::Launched { result: Err(LaunchFailed { message, .. }), .. } = &launched else {
            panic!("the launch must fail")
        };
        let searched = registry.join("missing/2.tar");
        assert!(
            message.contains("image 'missing:2'") && message.contains(&searched.display().to_string()),
            "{message}"
        );
        shell.on_event(launched).await;
        assert_eq!(lock(&shell.core).task_state(&TaskKey::new("f", "m")), Some(TaskState::Failed));
        let launches = shell.containerizer.calls().into_iter().filter(|c| matches!(c, Call::Launch(_))).count();
        assert_eq!(launches, 1, "the containerizer never sees the missing image's task");
    }

    #[tokio::test]
    async fn a_sandbox_that_cannot_be_created_fails_the_launch_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("slaves");
        std::fs::write(&blocker, "not a directory").unwrap();
        let (mut shell, mut inbox) = shell(dir.path());
        let effects = lock(&shell.core).handle(run_task("t"), Instant::now());
        shell.apply(effects).await;
        let launched = next(&mut inbox).await;
        let Event::Launched { result: Err(LaunchFailed { message, .. }), .. } = &launched else {
            panic!("launch should fail")
        };
        assert!(message.contains("cannot create sandbox") && message.contains("slaves/a/frameworks/f"), "{message}");
        shell.on_event(launched).await;
        assert_eq!(lock(&shell.core).task_state(&TaskKey::new("f", "t")), Some(TaskState::Failed));
        assert!(shell.containerizer.calls().is_empty(), "the containerizer is never asked");
    }

    #[tokio::test]
    async fn a_failed_fetch_fails_the_task_naming_the_uri_before_any_launch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shell, mut inbox) = shell(dir.path());
        let FromMaster::RunTask { framework, mut task } = run_task("t") else { unreachable!() };
        let missing = dir.path().join("missing.tgz").display().to_string();
        task.command.as_mut().unwrap().uris.push(agora_proto::model::Uri {
            value: missing.clone(),
            executable: false,
            extract: true,
            cache: false,
            output_file: String::new(),
        });
        let effects = lock(&shell.core).handle(FromMaster::RunTask { framework, task }, Instant::now());
        shell.apply(effects).await;
        let launched = next(&mut inbox).await;
        let Event::Launched { result: Err(LaunchFailed { message, .. }), container_id, .. } = &launched else {
            panic!("must fail")
        };
        assert!(message.starts_with(&format!("Failed to fetch all URIs for container '{container_id}'")), "{message}");
        assert!(message.contains(&format!("'{missing}'")), "{message}");
        shell.on_event(launched).await;
        assert_eq!(lock(&shell.core).task_state(&TaskKey::new("f", "t")), Some(TaskState::Failed));
        assert!(shell.containerizer.calls().is_empty(), "the containerizer is never asked");
    }

    #[tokio::test]
    async fn kill_effects_reach_the_containerizer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shell, mut inbox) = shell(dir.path());
        let effects = lock(&shell.core).handle(run_task("t"), Instant::now());
        shell.apply(effects).await;
        let launched = next(&mut inbox).await;
        shell.on_event(launched).await;
        let kill = FromMaster::KillTask { framework_id: "f".into(), task_id: "t".into(), grace: None };
        let effects = lock(&shell.core).handle(kill, Instant::now());
        shell.apply(effects).await;
        assert!(
            shell.containerizer.calls().iter().any(|c| matches!(c, Call::Kill(_, nix::sys::signal::Signal::SIGTERM)))
        );
    }

    #[tokio::test]
    async fn queued_events_are_handled_as_one_batch_that_a_lost_link_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shell, mut inbox) = shell(dir.path());
        shell.checkpoint = Some(crate::checkpoint::CheckpointDir::open(dir.path()).unwrap());
        lock(&shell.core).mark_all_changed();
        let mut launched = Vec::new();
        for id in ["a", "b", "c"] {
            let effects = lock(&shell.core).handle(run_task(id), Instant::now());
            shell.apply(effects).await;
            launched.push(next(&mut inbox).await);
        }
        let mut launched = launched.into_iter();
        let first = launched.next().unwrap();
        shell.events.send(launched.next().unwrap()).unwrap();
        shell.events.send(Event::Link { generation: 0, event: LinkEvent::Ended("stream reset".into()) }).unwrap();
        shell.events.send(launched.next().unwrap()).unwrap();

        shell.on_events(first, &mut inbox).await;
        let core = shell.core.clone();
        let state = |id: &str| lock(&core).task_state(&TaskKey::new("f", id));
        assert_eq!((state("a"), state("b")), (Some(TaskState::Running), Some(TaskState::Running)));
        assert_eq!(state("c"), Some(TaskState::Starting), "the batch ends at the lost link");
        assert!(shell.reconnect_at.is_some(), "the lost link was handled");
        let cp =
            crate::checkpoint::read(dir.path(), true).unwrap().expect("written before the effects went out").checkpoint;
        let running = cp.tasks.iter().filter(|t| t.state == TaskState::Running).count();
        assert_eq!(running, 2, "one write holds the whole batch");

        let rest = next(&mut inbox).await;
        shell.on_events(rest, &mut inbox).await;
        assert_eq!(state("c"), Some(TaskState::Running));
    }

    #[test]
    fn backoff_doubles_from_the_factor_up_to_a_minute() {
        let f = Duration::from_secs(1);
        let secs: Vec<u64> = (0..9).map(|n| registration_backoff(f).ceiling(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(registration_backoff(Duration::from_millis(100)).ceiling(1), Duration::from_millis(200));
        assert_eq!(registration_backoff(f).ceiling(u32::MAX), MAX_REGISTRATION_BACKOFF);
        // As Mesos: uniform in [0, bound].
        assert_eq!(registration_backoff(f).delay(3, 0.0), Duration::from_secs(8));
        assert_eq!(registration_backoff(f).delay(3, 0.25), Duration::from_secs(6));
        assert_eq!(registration_backoff(f).delay(3, 1.0), Duration::ZERO);
    }
}
