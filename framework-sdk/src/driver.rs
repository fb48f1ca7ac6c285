//! The scheduler driver: subscribes to the master, dispatches events to a [`Scheduler`], sends its calls, and
//! resubscribes with the same framework id when the connection breaks.
//!
//! Retries never come at once: each failed attempt waits out an exponential, jittered delay
//! ([`agora_detector::backoff`]) from [`DriverOptions::backoff_min`] up to [`DriverOptions::backoff_max`]. With a
//! `zk://` master the wait ends early only when ZooKeeper names a leader other than the one just tried, so a
//! stale leader (ZooKeeper or the master gone) cannot turn the loop into a busy one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_detector::Leader;
use agora_detector::backoff::{Backoff, Retry};
use agora_proto::model::{self, FrameworkInfo, Offer, TaskInfo, TaskStatus};
use agora_proto::wire::{self, call, event, scheduler_client::SchedulerClient};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument, debug, info, info_span, trace, warn};

use crate::scheduler::Scheduler;

/// How many heartbeat intervals without any event (heartbeats included) mean the connection is dead.
pub const DEFAULT_MISSED_HEARTBEATS: u32 = 5;
/// The first delay before resubscribing; it doubles after every failed attempt (each delay is jittered down by up
/// to half, see [`agora_detector::backoff`]).
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest delay between two subscription attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long one call, one TCP connection, or the wait for SUBSCRIBED may take.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many calls go in one `Calls` request ...
pub const MAX_BATCH_CALLS: usize = 512;
/// ... and no more calls are added once a batch's encoding reaches this size (the master's gRPC limit is 4 MiB).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// The heartbeat interval assumed when the master does not announce one.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// Announced heartbeat intervals are capped at this, so that a silent connection is always noticed.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// How the driver behaves; `DriverOptions::default()` suits most frameworks.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// When false (the default) the driver acknowledges every update that carries a uuid after
    /// [`Scheduler::update`] returns. When true the scheduler must call [`SchedulerDriver::acknowledge`] itself.
    pub explicit_acknowledgements: bool,
    /// Give up with [`DriverError::Unreachable`] when the *first* subscription has not succeeded within this
    /// time. `None` retries forever. Later resubscriptions always retry until [`SchedulerDriver::stop`].
    pub connect_timeout: Option<Duration>,
    /// Retries back off from `backoff_min`, doubling up to `backoff_max`, each delay jittered down by up to half;
    /// a newly detected leader (with a `zk://` master) is tried at once.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Resubscribe when no event arrives for this many heartbeat intervals.
    pub missed_heartbeats: u32,
    pub call_timeout: Duration,
    /// Roles to subscribe with suppressed offers.
    pub suppressed_roles: Vec<String>,
}

impl Default for DriverOptions {
    fn default() -> DriverOptions {
        DriverOptions {
            explicit_acknowledgements: false,
            connect_timeout: None,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            missed_heartbeats: DEFAULT_MISSED_HEARTBEATS,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            suppressed_roles: vec![],
        }
    }
}

/// Why the driver stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid master address '{address}': {reason}")]
    InvalidMaster { address: String, reason: String },
    #[error("could not subscribe to the master at {master} within {waited:.1?}: {last_error}")]
    Unreachable { master: String, waited: Duration, last_error: String },
    #[error("the master at {master} refused the subscription: {message}")]
    Refused { master: String, message: String },
    #[error("framework {framework_id} stopped on an error from the master: {message}")]
    Framework { framework_id: String, message: String },
}

enum Command {
    Call(call::Call),
    Stop,
}

struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    framework_id: Mutex<Option<String>>,
    stop: watch::Sender<bool>,
}

/// A cheap, cloneable handle to a running driver. Every method only queues work for the driver, which sends the
/// calls in the order they were queued; none blocks and none panics. Failures are reported through
/// [`Scheduler::call_failed`] and tracing.
///
/// Calls queued while the driver is disconnected are sent once it has resubscribed. Offers do not survive a
/// resubscription, so an ACCEPT of an older offer comes back as TASK_DROPPED or TASK_LOST with
/// REASON_INVALID_OFFERS.
#[derive(Clone)]
pub struct SchedulerDriver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SchedulerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerDriver").field("framework_id", &self.framework_id()).finish()
    }
}

impl SchedulerDriver {
    /// The id the master assigned, once subscribed.
    pub fn framework_id(&self) -> Option<String> {
        self.shared.framework_id.lock().map(|id| id.clone()).unwrap_or_default()
    }

    /// Launches `tasks` on the resources of `offer_ids` (all on one agent); what the tasks leave unused goes back
    /// to the master, not offered again to this framework for `refuse_seconds` (`None`: the default, 5 s).
    pub fn accept(&self, offer_ids: Vec<String>, tasks: Vec<TaskInfo>, refuse_seconds: Option<f64>) {
        let operations = if tasks.is_empty() {
            vec![]
        } else {
            let task_infos = tasks.iter().map(wire::TaskInfo::from).collect();
            vec![call::Operation {
                operation: Some(call::operation::Operation::Launch(call::operation::Launch { task_infos })),
            }]
        };
        self.enqueue(call::Call::Accept(call::Accept {
            offer_ids,
            operations,
            filters: Some(filters(refuse_seconds)),
        }));
    }

    /// Launches `tasks` on one offer, with the default filter for what they leave unused.
    pub fn launch(&self, offer: &Offer, tasks: Vec<TaskInfo>) {
        self.accept(vec![offer.id.clone()], tasks, None);
    }

    /// Gives an offer back; its resources are not offered again to this framework for `refuse_seconds`.
    pub fn decline(&self, offer_id: &str, refuse_seconds: Option<f64>) {
        self.enqueue(call::Call::Decline(call::Decline {
            offer_ids: vec![offer_id.to_string()],
            filters: Some(filters(refuse_seconds)),
        }));
    }

    pub fn kill(&self, task_id: &str, agent_id: &str) {
        self.enqueue(call::Call::Kill(call::Kill {
            task_id: task_id.to_string(),
            agent_id: agent_id.to_string(),
            kill_policy: None,
        }));
    }

    /// Asks for offers again (for `roles`; empty means every role of the framework) and clears decline filters.
    pub fn revive(&self, roles: Vec<String>) {
        self.enqueue(call::Call::Revive(call::Revive { roles }));
    }

    /// Stops offers (for `roles`; empty means every role of the framework) until [`SchedulerDriver::revive`].
    pub fn suppress(&self, roles: Vec<String>) {
        self.enqueue(call::Call::Suppress(call::Suppress { roles }));
    }

    /// Acknowledges an update. Needed only with [`DriverOptions::explicit_acknowledgements`]; updates without a
    /// uuid (generated by the master) are ignored.
    pub fn acknowledge(&self, status: &TaskStatus) {
        match &status.uuid {
            Some(uuid) if !uuid.is_empty() => self.acknowledge_raw(&status.agent_id, &status.task_id, uuid.clone()),
            _ => debug!(task_id = %status.task_id, "update has no uuid; nothing to acknowledge"),
        }
    }

    /// Asks the master for the latest state of `(task_id, agent_id)` pairs; empty asks for every task the
    /// master knows of this framework (implicit reconciliation).
    pub fn reconcile(&self, tasks: Vec<(String, String)>) {
        let tasks = tasks.into_iter().map(|(task_id, agent_id)| call::reconcile::Task { task_id, agent_id }).collect();
        self.enqueue(call::Call::Reconcile(call::Reconcile { tasks }));
    }

    /// Ends the framework: the master kills its tasks and forgets it. The driver sends the queued calls, then
    /// TEARDOWN, and returns. When the driver is not connected at that moment it returns without sending
    /// anything, and the master removes the framework once its `failover_timeout` expires.
    pub fn teardown(&self) {
        self.enqueue(call::Call::Teardown(call::Teardown {}));
        self.shared.stop.send_replace(true);
    }

    /// Stops the driver without tearing the framework down (its tasks keep running until the master's failover
    /// timeout). Calls queued before are sent first when connected.
    pub fn stop(&self) {
        if self.shared.commands.send(Command::Stop).is_err() {
            debug!("driver already stopped");
        }
        self.shared.stop.send_replace(true);
    }

    fn acknowledge_raw(&self, agent_id: &str, task_id: &str, uuid: Vec<u8>) {
        self.enqueue(call::Call::Acknowledge(call::Acknowledge {
            agent_id: agent_id.to_string(),
            task_id: task_id.to_string(),
            uuid,
        }));
    }

    fn enqueue(&self, c: call::Call) {
        let name = call_name(&c);
        if self.shared.commands.send(Command::Call(c)).is_err() {
            warn!(call = name, "driver is not running; call dropped");
        }
    }
}

fn filters(refuse_seconds: Option<f64>) -> wire::Filters {
    wire::Filters { refuse_seconds }
}

fn call_name(c: &call::Call) -> &'static str {
    match c {
        call::Call::Accept(_) => "ACCEPT",
        call::Call::Decline(_) => "DECLINE",
        call::Call::Revive(_) => "REVIVE",
        call::Call::Suppress(_) => "SUPPRESS",
        call::Call::Kill(_) => "KILL",
        call::Call::Acknowledge(_) => "ACKNOWLEDGE",
        call::Call::Reconcile(_) => "RECONCILE",
        call::Call::Teardown(_) => "TEARDOWN",
    }
}

fn endpoint(url: &str, call_timeout: Duration, master: &str) -> Result<Endpoint, DriverError> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| DriverError::InvalidMaster { address: master.to_string(), reason: e.to_string() })?
        .connect_timeout(call_timeout)
        .tcp_nodelay(true))
}

/// Normalises `HOST:PORT` or `http://HOST:PORT` into a URL (`zk://` addresses are taken by [`Driver::new`]).
pub fn master_url(master: &str) -> Result<String, DriverError> {
    let trimmed = master.trim().trim_end_matches('/');
    let invalid = |reason: &str| DriverError::InvalidMaster { address: master.to_string(), reason: reason.to_string() };
    if trimmed.is_empty() {
        return Err(invalid("empty address"));
    }
    let url = if trimmed.contains("://") { trimmed.to_string() } else { format!("http://{trimmed}") };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid("only http:// is supported"));
    }
    Endpoint::from_shared(url.clone()).map_err(|e| invalid(&e.to_string()))?;
    Ok(url)
}

/// Where the master is: a fixed endpoint, or the leader under a ZooKeeper path (the detector starts when the driver
/// runs, inside the runtime).
enum Locator {
    Fixed(Box<Endpoint>),
    ZooKeeper { url: agora_detector::ZkUrl, detector: Option<agora_detector::Detector> },
}

/// One live subscription.
struct Session {
    client: SchedulerClient<Channel>,
    events: tonic::Streaming<wire::Event>,
    framework_id: String,
    stream_id: String,
    heartbeat: Duration,
    master: model::MasterInfo,
}

enum Attempt {
    /// Worth retrying (the master is down, not the leader, or the connection broke).
    Retry(String),
    /// The master refused this framework; retrying cannot help.
    Fatal(String),
}

/// How one call of a batch fared: `failure` is `None` when the master accepted it.
struct Outcome {
    name: &'static str,
    task_id: String,
    failure: Option<String>,
}

/// A batch of calls on its way to the master.
type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Outcome>> + Send>>;

/// What woke the connected loop up.
enum Next {
    Sent(Vec<Outcome>),
    Command(Option<Command>),
    Event(Result<Result<Option<wire::Event>, tonic::Status>, tokio::time::error::Elapsed>),
}

enum Flow {
    Continue,
    Fatal(String),
}

/// A driver before it runs: create it with [`Driver::new`], take [`Driver::handle`]s (to stop it from outside,
/// e.g. on Ctrl-C), then [`Driver::run`] it.
pub struct Driver {
    handle: SchedulerDriver,
    commands: mpsc::UnboundedReceiver<Command>,
    locator: Locator,
    call_timeout: Duration,
    master: String,
    framework: FrameworkInfo,
    options: DriverOptions,
    suppressed: BTreeSet<String>,
}

impl Driver {
    /// Checks the address; connects only in [`Driver::run`]. A `framework.id` resubscribes as that framework.
    pub fn new(master: &str, framework: FrameworkInfo, options: DriverOptions) -> Result<Driver, DriverError> {
        let (locator, url) = if master.trim().starts_with("zk://") {
            let zk = agora_detector::ZkUrl::parse(master.trim())
                .map_err(|e| DriverError::InvalidMaster { address: master.to_string(), reason: e.to_string() })?;
            let shown = zk.to_string();
            (Locator::ZooKeeper { url: zk, detector: None }, shown)
        } else {
            let url = master_url(master)?;
            (Locator::Fixed(Box::new(endpoint(&url, options.call_timeout, master)?)), url)
        };
        let (tx, commands) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            commands: tx,
            framework_id: Mutex::new(framework.id.clone()),
            stop: watch::Sender::new(false),
        });
        let suppressed = options.suppressed_roles.iter().cloned().collect();
        Ok(Driver {
            handle: SchedulerDriver { shared },
            commands,
            locator,
            call_timeout: options.call_timeout,
            master: url,
            framework,
            options,
            suppressed,
        })
    }

    pub fn handle(&self) -> SchedulerDriver {
        self.handle.clone()
    }

    /// Runs until [`SchedulerDriver::stop`] or [`SchedulerDriver::teardown`] (then returns the scheduler), or a
    /// fatal error: the first subscription failing for [`DriverOptions::connect_timeout`], the master refusing
    /// the framework, or an ERROR event (after [`Scheduler::error`] was called).
    pub async fn run<S: Scheduler>(mut self, mut scheduler: S) -> Result<S, DriverError> {
        let span = info_span!("scheduler_driver", master = %self.master, framework_id = tracing::field::Empty);
        if let Some(id) = &self.framework.id {
            span.record("framework_id", id.as_str());
        }
        if let Locator::ZooKeeper { url, detector } = &mut self.locator {
            *detector = Some(agora_detector::Detector::start(&agora_detector::MasterSpec::ZooKeeper(url.clone())));
        }
        let result = self.run_loop(&mut scheduler, &span).instrument(span.clone()).await;
        result.map(|()| scheduler)
    }

    async fn run_loop<S: Scheduler>(&mut self, scheduler: &mut S, span: &tracing::Span) -> Result<(), DriverError> {
        let driver = self.handle.clone();
        let mut stop = self.handle.shared.stop.subscribe();
        let started = Instant::now();
        let mut subscribed_once = false;
        let mut retry = Retry::new(Backoff::new(self.options.backoff_min, self.options.backoff_max));
        loop {
            if *stop.borrow() {
                self.drop_queued();
                return Ok(());
            }
            // Before the first subscription, one attempt may not outlast the connect timeout.
            let budget = match (subscribed_once, self.options.connect_timeout) {
                (false, Some(limit)) => Some(limit.saturating_sub(started.elapsed())),
                _ => None,
            };
            // The leader this attempt goes to: a pause after a failure ends early only for another one.
            let tried = self.leader();
            let attempt = tokio::select! {
                attempt = self.subscribe_within(tried.as_ref(), budget) => Some(attempt),
                () = stopped(&mut stop) => None,
            };
            let mut session = match attempt {
                None => {
                    self.drop_queued();
                    return Ok(());
                }
                Some(Ok(session)) => session,
                Some(Err(Attempt::Fatal(message))) => {
                    scheduler.error(&driver, &message);
                    return Err(DriverError::Refused { master: self.master.clone(), message });
                }
                Some(Err(Attempt::Retry(reason))) => {
                    let mut delay = retry.next_delay();
                    if subscribed_once {
                        warn!(reason, retry_in = ?delay, "resubscription failed");
                    } else {
                        if let Some(limit) = self.options.connect_timeout {
                            let waited = started.elapsed();
                            if waited >= limit {
                                return Err(DriverError::Unreachable {
                                    master: self.master.clone(),
                                    waited,
                                    last_error: reason,
                                });
                            }
                            delay = delay.min(limit - waited);
                        }
                        info!(reason, retry_in = ?delay, "subscription failed");
                    }
                    if self.pause(&mut stop, delay, tried.as_ref()).await {
                        return Ok(());
                    }
                    continue;
                }
            };

            subscribed_once = true;
            retry.reset();
            span.record("framework_id", session.framework_id.as_str());
            self.framework.id = Some(session.framework_id.clone());
            if let Ok(mut id) = self.handle.shared.framework_id.lock() {
                *id = Some(session.framework_id.clone());
            }
            info!(stream_id = %session.stream_id, heartbeat = ?session.heartbeat, "subscribed");
            scheduler.subscribed(&driver, &session.framework_id, &session.master);

            let idle = session.heartbeat.saturating_mul(self.options.missed_heartbeats.max(1));
            let mut deadline = Instant::now() + idle;
            // At most one batch of calls is in flight; what is queued meanwhile goes in the next. Events keep being
            // dispatched while a batch is on its way.
            let mut in_flight: Option<InFlight> = None;
            let mut ending = false;
            let reason = loop {
                let next = tokio::select! {
                    biased;
                    sent = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                        Next::Sent(sent)
                    }
                    command = self.commands.recv(), if in_flight.is_none() && !ending => Next::Command(command),
                    // Once a TEARDOWN or STOP is on its way nothing more is dispatched (the master answers a
                    // TEARDOWN by ending the stream with an ERROR, which is no failure of the driver).
                    event = timeout_at(deadline, session.events.message()), if !ending => Next::Event(event),
                };
                match next {
                    Next::Sent(outcomes) => {
                        in_flight = None;
                        self.report(outcomes, scheduler);
                        if ending {
                            return Ok(());
                        }
                    }
                    Next::Command(None | Some(Command::Stop)) => return Ok(()),
                    Next::Command(Some(Command::Call(first))) => {
                        let (batch, end) = self.batch(first);
                        ending = end;
                        in_flight = Some(self.send(&session, batch));
                    }
                    Next::Event(Err(_)) => break format!("no event for {idle:?}"),
                    Next::Event(Ok(Err(status))) => break format!("event stream failed: {}", describe_status(&status)),
                    Next::Event(Ok(Ok(None))) => break "event stream closed".to_string(),
                    Next::Event(Ok(Ok(Some(event)))) => {
                        deadline = Instant::now() + idle;
                        if let Flow::Fatal(message) = self.dispatch(event, scheduler) {
                            return Err(DriverError::Framework { framework_id: session.framework_id, message });
                        }
                    }
                }
            };
            // The batch on its way when the stream broke is seen to its end (bounded by the call timeout), so that
            // every call queued is either sent or reported failed.
            if let Some(batch) = in_flight.take() {
                let outcomes = batch.await;
                self.report(outcomes, scheduler);
                if ending {
                    return Ok(());
                }
            }
            warn!(reason, "disconnected from the master; resubscribing");
            scheduler.disconnected(&driver);
            if self.pause(&mut stop, retry.next_delay(), tried.as_ref()).await {
                return Ok(());
            }
        }
    }

    /// Sleeps for `delay` unless stopped first; true when stopped. With a `zk://` master a leader other than
    /// `tried` (the one the last attempt went to) ends the pause early, so a new leader is tried at once; the leader
    /// that just failed never does, so a stale leader in ZooKeeper cannot make the driver spin.
    async fn pause(&mut self, stop: &mut watch::Receiver<bool>, delay: Duration, tried: Option<&Leader>) -> bool {
        let mut detector = match &self.locator {
            Locator::ZooKeeper { detector: Some(d), .. } => Some(d.clone()),
            _ => None,
        };
        let leader_changed = async {
            match (detector.as_mut(), tried) {
                (Some(d), Some(tried)) => drop(d.changed_from(tried).await),
                (Some(d), None) => drop(d.leader().await),
                (None, _) => std::future::pending().await,
            }
        };
        let stopped = tokio::select! {
            () = sleep(delay) => false,
            () = leader_changed => false,
            () = stopped(stop) => true,
        };
        if stopped {
            self.drop_queued();
        }
        stopped
    }

    /// The leader a `zk://` master names now (`None` for a fixed master, or while no leader is known).
    fn leader(&self) -> Option<Leader> {
        match &self.locator {
            Locator::ZooKeeper { detector: Some(d), .. } => d.current(),
            _ => None,
        }
    }

    /// Called when stopping while disconnected: what is queued cannot be sent.
    fn drop_queued(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Call(c) = command {
                warn!(call = call_name(&c), "not connected to the master; call dropped on stop");
            }
        }
    }

    async fn subscribe_within(&self, leader: Option<&Leader>, budget: Option<Duration>) -> Result<Session, Attempt> {
        match budget {
            None => self.subscribe(leader).await,
            Some(budget) => timeout(budget, self.subscribe(leader))
                .await
                .unwrap_or_else(|_| Err(Attempt::Retry("no subscription within the connect timeout".to_string()))),
        }
    }

    /// Subscribes with the fixed master, or with `leader` for a `zk://` master.
    async fn subscribe(&self, leader: Option<&Leader>) -> Result<Session, Attempt> {
        let limit = self.options.call_timeout;
        let endpoint = match &self.locator {
            Locator::Fixed(e) => (**e).clone(),
            Locator::ZooKeeper { .. } => {
                let leader =
                    leader.ok_or_else(|| Attempt::Retry("no leading master is known in ZooKeeper yet".to_string()))?;
                let url = format!("http://{}", leader.address);
                endpoint(&url, self.call_timeout, &url).map_err(|e| Attempt::Retry(e.to_string()))?
            }
        };
        let channel = endpoint.connect().await.map_err(|e| Attempt::Retry(format!("cannot connect: {}", chain(&e))))?;
        let mut client = SchedulerClient::new(channel);
        let request = wire::SubscribeRequest {
            framework_info: Some(wire::FrameworkInfo::from(&self.framework)),
            suppressed_roles: self.suppressed.iter().cloned().collect(),
        };
        let response = match timeout(limit, client.subscribe(request)).await {
            Err(_) => return Err(Attempt::Retry(format!("no answer to SUBSCRIBE within {limit:?}"))),
            Ok(Err(status)) => return Err(classify(&status)),
            Ok(Ok(response)) => response,
        };
        let mut events = response.into_inner();
        let first = match timeout(limit, events.message()).await {
            Err(_) => return Err(Attempt::Retry(format!("no SUBSCRIBED event within {limit:?}"))),
            Ok(Err(status)) => return Err(classify(&status)),
            Ok(Ok(None)) => return Err(Attempt::Retry("event stream closed before SUBSCRIBED".to_string())),
            Ok(Ok(Some(event))) => event,
        };
        match first.event {
            Some(event::Event::Subscribed(s)) => {
                let heartbeat = match Duration::try_from_secs_f64(s.heartbeat_interval_seconds) {
                    Ok(d) if !d.is_zero() => d.min(MAX_HEARTBEAT_INTERVAL),
                    _ => DEFAULT_HEARTBEAT_INTERVAL,
                };
                if s.framework_id.is_empty() {
                    return Err(Attempt::Retry("SUBSCRIBED without a framework id".to_string()));
                }
                Ok(Session {
                    client,
                    events,
                    framework_id: s.framework_id,
                    stream_id: s.stream_id,
                    heartbeat,
                    master: s.master_info.unwrap_or_default().into(),
                })
            }
            Some(event::Event::Error(e)) => Err(Attempt::Fatal(e.message)),
            _ => Err(Attempt::Retry("the first event was not SUBSCRIBED".to_string())),
        }
    }

    /// `first` and the calls queued behind it, up to [`MAX_BATCH_CALLS`] or [`MAX_BATCH_BYTES`], or up to a STOP
    /// (which is consumed) or a TEARDOWN (which is included). True when the driver ends once the batch is sent.
    fn batch(&mut self, first: call::Call) -> (Vec<call::Call>, bool) {
        let mut bytes = first.encoded_len();
        let mut end = matches!(first, call::Call::Teardown(_));
        let mut batch = vec![first];
        while !end && batch.len() < MAX_BATCH_CALLS && bytes < MAX_BATCH_BYTES {
            match self.commands.try_recv() {
                Ok(Command::Call(c)) => {
                    end = matches!(c, call::Call::Teardown(_));
                    bytes += c.encoded_len();
                    batch.push(c);
                }
                Ok(Command::Stop) | Err(mpsc::error::TryRecvError::Disconnected) => end = true,
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        (batch, end)
    }

    /// Sends a batch in one `Calls` request; the future resolves to each call's outcome, in order.
    fn send(&mut self, session: &Session, batch: Vec<call::Call>) -> InFlight {
        let mut sent = Vec::with_capacity(batch.len());
        let mut calls = Vec::with_capacity(batch.len());
        for c in batch {
            match &c {
                call::Call::Suppress(s) if s.roles.is_empty() => {
                    self.suppressed.extend(self.framework.roles.iter().cloned())
                }
                call::Call::Suppress(s) => self.suppressed.extend(s.roles.iter().cloned()),
                call::Call::Revive(r) if r.roles.is_empty() => self.suppressed.clear(),
                call::Call::Revive(r) => r.roles.iter().for_each(|role| {
                    self.suppressed.remove(role);
                }),
                _ => {}
            }
            let task_id = match &c {
                call::Call::Kill(k) => k.task_id.clone(),
                call::Call::Acknowledge(a) => a.task_id.clone(),
                _ => String::new(),
            };
            sent.push((call_name(&c), task_id));
            calls.push(wire::Call {
                framework_id: session.framework_id.clone(),
                stream_id: session.stream_id.clone(),
                call: Some(c),
            });
        }
        let mut client = session.client.clone();
        let limit = self.options.call_timeout;
        Box::pin(async move {
            let answer = match timeout(limit, client.calls(wire::CallBatch { calls })).await {
                Ok(Ok(response)) => Ok(response.into_inner().results),
                Ok(Err(status)) => Err(describe_status(&status)),
                Err(_) => Err(format!("no answer within {limit:?}")),
            };
            sent.into_iter()
                .enumerate()
                .map(|(i, (name, task_id))| {
                    let failure = match &answer {
                        Err(failure) => Some(failure.clone()),
                        Ok(results) => match results.get(i) {
                            None => Some("the master gave no answer for this call".to_string()),
                            Some(r) if r.code == tonic::Code::Ok as i32 => None,
                            Some(r) => Some(format!("{:?}: {}", tonic::Code::from_i32(r.code), r.message)),
                        },
                    };
                    Outcome { name, task_id, failure }
                })
                .collect()
        })
    }

    /// Logs what was sent and reports every failed call to the scheduler.
    fn report<S: Scheduler>(&self, outcomes: Vec<Outcome>, scheduler: &mut S) {
        for Outcome { name, task_id, failure } in outcomes {
            match failure {
                None => trace!(call = name, task_id, "call sent"),
                Some(failure) => {
                    debug!(call = name, task_id, failure, "call failed");
                    scheduler.call_failed(&self.handle, name, &failure);
                }
            }
        }
    }

    fn dispatch<S: Scheduler>(&mut self, event: wire::Event, scheduler: &mut S) -> Flow {
        let driver = &self.handle;
        match event.event {
            Some(event::Event::Heartbeat(_)) => trace!("heartbeat"),
            Some(event::Event::Offers(o)) => {
                let mut offers = Vec::with_capacity(o.offers.len());
                for offer in o.offers {
                    let id = offer.id.clone();
                    match Offer::try_from(offer) {
                        Ok(offer) => offers.push(offer),
                        Err(e) => {
                            warn!(offer_id = %id, error = %e, "declining an offer that does not convert");
                            driver.decline(&id, None);
                        }
                    }
                }
                if !offers.is_empty() {
                    scheduler.offers(driver, offers);
                }
            }
            Some(event::Event::Rescind(r)) => scheduler.rescinded(driver, &r.offer_id),
            Some(event::Event::Update(u)) => {
                let Some(status) = u.status else {
                    warn!("UPDATE without a status");
                    return Flow::Continue;
                };
                let (task_id, agent_id, uuid) = (status.task_id.clone(), status.agent_id.clone(), status.uuid.clone());
                match TaskStatus::try_from(status) {
                    Ok(status) => scheduler.update(driver, &status),
                    Err(e) => warn!(task_id, error = %e, "ignoring an update that does not convert"),
                }
                if !self.options.explicit_acknowledgements && !uuid.is_empty() {
                    driver.acknowledge_raw(&agent_id, &task_id, uuid);
                }
            }
            Some(event::Event::Failure(f)) => scheduler.failure(driver, &f.agent_id),
            Some(event::Event::Error(e)) => {
                scheduler.error(driver, &e.message);
                return Flow::Fatal(e.message);
            }
            Some(event::Event::Subscribed(_)) => debug!("ignoring a second SUBSCRIBED on one stream"),
            None => debug!("ignoring an empty event"),
        }
        Flow::Continue
    }
}

/// An error and its sources, e.g. `transport error: tcp connect error: Connection refused (os error 111)`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

fn classify(status: &tonic::Status) -> Attempt {
    use tonic::Code;
    let message = describe_status(status);
    match status.code() {
        Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition => {
            Attempt::Fatal(message)
        }
        _ => Attempt::Retry(message),
    }
}

/// `Unavailable: not the leader`, with the transport error behind an empty message.
fn describe_status(status: &tonic::Status) -> String {
    let message = if status.message().is_empty() { chain(status) } else { status.message().to_string() };
    format!("{:?}: {message}", status.code())
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Connects to the master at `master` (`HOST:PORT` or `http://HOST:PORT`), subscribes as `framework`, and runs
/// `scheduler` until it calls [`SchedulerDriver::stop`] or [`SchedulerDriver::teardown`]; returns the scheduler.
/// See [`Driver::run`] for the errors. Use [`Driver`] directly to get a handle before running.
pub async fn run<S: Scheduler>(
    master: &str,
    framework: FrameworkInfo,
    scheduler: S,
    options: DriverOptions,
) -> Result<S, DriverError> {
    Driver::new(master, framework, options)?.run(scheduler).await
}

#[cfg(test)]
mod tests;
