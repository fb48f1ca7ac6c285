//! Driver tests against a scripted fake master that implements the `Scheduler` gRPC service on 127.0.0.1:0.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use agora_proto::wire::scheduler_server::{Scheduler as SchedulerService, SchedulerServer};
use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use super::*;
use crate::task::TaskInfoExt;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

type EventSender = mpsc::Sender<Result<wire::Event, Status>>;

/// What the fake master answers to `Call`s.
#[derive(Clone, Copy, PartialEq)]
enum CallAnswer {
    Ok,
    PermissionDenied,
}

struct FakeMaster {
    subscriptions: AtomicUsize,
    heartbeat_seconds: f64,
    refuse: Option<Status>,
    call_answer: CallAnswer,
    subscribes: mpsc::UnboundedSender<wire::SubscribeRequest>,
    streams: mpsc::UnboundedSender<EventSender>,
    calls: mpsc::UnboundedSender<wire::Call>,
    /// The size of every `Calls` batch, in the order received.
    batches: mpsc::UnboundedSender<usize>,
    /// Each batch takes a permit before it is answered: a test holds batches in flight by adding none.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// The test's side of the fake master: what it received, and one event sender per subscription.
struct Script {
    address: String,
    subscribes: mpsc::UnboundedReceiver<wire::SubscribeRequest>,
    streams: mpsc::UnboundedReceiver<EventSender>,
    calls: mpsc::UnboundedReceiver<wire::Call>,
    batches: mpsc::UnboundedReceiver<usize>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Script {
    async fn subscribe(&mut self) -> wire::SubscribeRequest {
        timeout(WAIT, self.subscribes.recv()).await.expect("no SUBSCRIBE in time").expect("fake master gone")
    }

    async fn stream(&mut self) -> EventSender {
        timeout(WAIT, self.streams.recv()).await.expect("no event stream in time").expect("fake master gone")
    }

    async fn call(&mut self) -> wire::Call {
        timeout(WAIT, self.calls.recv()).await.expect("no call in time").expect("fake master gone")
    }

    async fn batch(&mut self) -> usize {
        timeout(WAIT, self.batches.recv()).await.expect("no batch in time").expect("fake master gone")
    }

    /// Lets one held batch be answered.
    fn release(&self) {
        self.gate.as_ref().expect("a gated fake master").add_permits(1);
    }
}

#[tonic::async_trait]
impl SchedulerService for FakeMaster {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<wire::Event, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<wire::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let _ = self.subscribes.send(request.clone());
        if let Some(status) = &self.refuse {
            return Err(status.clone());
        }
        let n = self.subscriptions.fetch_add(1, Ordering::SeqCst) + 1;
        let framework_id = request.framework_info.and_then(|f| (!f.id.is_empty()).then_some(f.id));
        let (tx, rx) = mpsc::channel(16);
        let subscribed = event::Event::Subscribed(event::Subscribed {
            framework_id: framework_id.unwrap_or_else(|| "fw-1".to_string()),
            heartbeat_interval_seconds: self.heartbeat_seconds,
            master_info: Some(wire::MasterInfo { id: "master-1".into(), ..Default::default() }),
            stream_id: format!("s-{n}"),
        });
        tx.send(Ok(wire::Event { event: Some(subscribed) })).await.map_err(|_| Status::internal("closed"))?;
        let _ = self.streams.send(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn call(&self, request: Request<wire::Call>) -> Result<Response<wire::CallResponse>, Status> {
        let _ = self.calls.send(request.into_inner());
        match self.call_answer {
            CallAnswer::Ok => Ok(Response::new(wire::CallResponse {})),
            CallAnswer::PermissionDenied => Err(Status::permission_denied("framework is not subscribed")),
        }
    }

    async fn calls(&self, request: Request<wire::CallBatch>) -> Result<Response<wire::CallBatchResponse>, Status> {
        let calls = request.into_inner().calls;
        let _ = self.batches.send(calls.len());
        let n = calls.len();
        for c in calls {
            let _ = self.calls.send(c);
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.map_err(|_| Status::internal("gate closed"))?.forget();
        }
        let result = match self.call_answer {
            CallAnswer::Ok => wire::call_batch_response::Result { code: 0, message: String::new() },
            CallAnswer::PermissionDenied => wire::call_batch_response::Result {
                code: tonic::Code::PermissionDenied as i32,
                message: "framework is not subscribed".into(),
            },
        };
        Ok(Response::new(wire::CallBatchResponse { results: vec![result; n] }))
    }
}

async fn fake_master(heartbeat_seconds: f64, refuse: Option<Status>, call_answer: CallAnswer) -> Script {
    serve_fake_master(heartbeat_seconds, refuse, call_answer, None).await
}

/// A fake master that answers no `Calls` batch until the test [`Script::release`]s it.
async fn gated_fake_master() -> Script {
    serve_fake_master(15.0, None, CallAnswer::Ok, Some(Arc::new(tokio::sync::Semaphore::new(0)))).await
}

async fn serve_fake_master(
    heartbeat_seconds: f64,
    refuse: Option<Status>,
    call_answer: CallAnswer,
    gate: Option<Arc<tokio::sync::Semaphore>>,
) -> Script {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let (subscribes_tx, subscribes) = mpsc::unbounded_channel();
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let (batches_tx, batches) = mpsc::unbounded_channel();
    let master = FakeMaster {
        subscriptions: AtomicUsize::new(0),
        heartbeat_seconds,
        refuse,
        call_answer,
        subscribes: subscribes_tx,
        streams: streams_tx,
        calls: calls_tx,
        batches: batches_tx,
        gate: gate.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SchedulerServer::new(master))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Script { address, subscribes, streams, calls, batches, gate }
}

/// What the recording scheduler saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Subscribed(String),
    Offers(Vec<String>),
    Rescinded(String),
    Update(String, model::TaskState),
    Failure(String),
    Error(String),
    Disconnected,
    CallFailed(String),
}

/// Launches one `cpus:0.1` task per offer and reports everything it sees.
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    launched: usize,
}

impl Scheduler for Recorder {
    fn subscribed(&mut self, _driver: &SchedulerDriver, framework_id: &str, master: &model::MasterInfo) {
        assert_eq!(master.id, "master-1");
        let _ = self.seen.send(Seen::Subscribed(framework_id.to_string()));
    }

    fn offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let _ = self.seen.send(Seen::Offers(offers.iter().map(|o| o.id.clone()).collect()));
        for offer in offers {
            let resources = "cpus:0.1".parse().expect("resources");
            let task = TaskInfo::command(format!("t-{}", self.launched), "t", &offer.agent_id, resources, "true");
            self.launched += 1;
            driver.launch(&offer, vec![task]);
        }
    }

    fn rescinded(&mut self, _driver: &SchedulerDriver, offer_id: &str) {
        let _ = self.seen.send(Seen::Rescinded(offer_id.to_string()));
    }

    fn update(&mut self, _driver: &SchedulerDriver, status: &TaskStatus) {
        let _ = self.seen.send(Seen::Update(status.task_id.clone(), status.state));
    }

    fn failure(&mut self, _driver: &SchedulerDriver, agent_id: &str) {
        let _ = self.seen.send(Seen::Failure(agent_id.to_string()));
    }

    fn error(&mut self, _driver: &SchedulerDriver, message: &str) {
        let _ = self.seen.send(Seen::Error(message.to_string()));
    }

    fn disconnected(&mut self, _driver: &SchedulerDriver) {
        let _ = self.seen.send(Seen::Disconnected);
    }

    fn call_failed(&mut self, _driver: &SchedulerDriver, call: &str, _message: &str) {
        let _ = self.seen.send(Seen::CallFailed(call.to_string()));
    }
}

struct Running {
    handle: SchedulerDriver,
    seen: mpsc::UnboundedReceiver<Seen>,
    done: tokio::task::JoinHandle<Result<Recorder, DriverError>>,
}

impl Running {
    async fn seen(&mut self) -> Seen {
        timeout(WAIT, self.seen.recv()).await.expect("scheduler saw nothing in time").expect("scheduler gone")
    }

    async fn finish(self) -> Result<Recorder, DriverError> {
        timeout(WAIT, self.done).await.expect("driver did not return in time").expect("driver task panicked")
    }
}

fn fast_options() -> DriverOptions {
    DriverOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        call_timeout: Duration::from_secs(2),
        ..DriverOptions::default()
    }
}

fn start(address: &str, options: DriverOptions) -> Running {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let driver = Driver::new(address, FrameworkInfo::new("test"), options).expect("driver");
    let handle = driver.handle();
    let done = tokio::spawn(driver.run(Recorder { seen: seen_tx, launched: 0 }));
    Running { handle, seen, done }
}

fn offer_event(id: &str) -> wire::Event {
    let offer = wire::Offer {
        id: id.to_string(),
        framework_id: "fw-1".into(),
        agent_id: "agent-1".into(),
        hostname: "h".into(),
        resources: agora_proto::convert::resources_to_wire(&"cpus:1;mem:128".parse().expect("resources")),
        ..Default::default()
    };
    wire::Event { event: Some(event::Event::Offers(event::Offers { offers: vec![offer] })) }
}

fn update_event(task_id: &str, state: wire::TaskState, uuid: &[u8]) -> wire::Event {
    let status = wire::TaskStatus {
        task_id: task_id.to_string(),
        state: state as i32,
        agent_id: "agent-1".into(),
        uuid: uuid.to_vec(),
        ..Default::default()
    };
    wire::Event { event: Some(event::Event::Update(event::Update { status: Some(status) })) }
}

async fn push(stream: &EventSender, event: wire::Event) {
    timeout(WAIT, stream.send(Ok(event))).await.expect("event stream full").expect("driver closed the stream");
}

#[tokio::test]
async fn subscribes_launches_and_acknowledges() {
    let mut master = fake_master(15.0, None, CallAnswer::Ok).await;
    let mut run = start(&master.address, fast_options());

    let subscribe = master.subscribe().await;
    let info = subscribe.framework_info.expect("framework info");
    assert_eq!(info.name, "test");
    assert!(info.id.is_empty());
    let stream = master.stream().await;
    assert_eq!(run.seen().await, Seen::Subscribed("fw-1".into()));
    assert_eq!(run.handle.framework_id().as_deref(), Some("fw-1"));

    push(&stream, offer_event("o-1")).await;
    assert_eq!(run.seen().await, Seen::Offers(vec!["o-1".into()]));
    let accept = master.call().await;
    assert_eq!((accept.framework_id.as_str(), accept.stream_id.as_str()), ("fw-1", "s-1"));
    let Some(call::Call::Accept(accept)) = accept.call else { panic!("expected ACCEPT, got {accept:?}") };
    assert_eq!(accept.offer_ids, vec!["o-1"]);
    let Some(call::operation::Operation::Launch(launch)) = &accept.operations[0].operation else {
        panic!("expected LAUNCH")
    };
    assert_eq!(launch.task_infos[0].task_id, "t-0");
    assert_eq!(launch.task_infos[0].agent_id, "agent-1");

    // A master-generated update (no uuid) is not acknowledged; an agent's update is, after the callback.
    push(&stream, update_event("t-0", wire::TaskState::TaskStaging, b"")).await;
    push(&stream, update_event("t-0", wire::TaskState::TaskRunning, b"uuid-1")).await;
    assert_eq!(run.seen().await, Seen::Update("t-0".into(), model::TaskState::Staging));
    assert_eq!(run.seen().await, Seen::Update("t-0".into(), model::TaskState::Running));
    let ack = master.call().await;
    let Some(call::Call::Acknowledge(ack)) = ack.call else { panic!("expected ACKNOWLEDGE, got {ack:?}") };
    assert_eq!((ack.task_id.as_str(), ack.agent_id.as_str(), ack.uuid.as_slice()), ("t-0", "agent-1", &b"uuid-1"[..]));

    push(&stream, wire::Event { event: Some(event::Event::Rescind(event::Rescind { offer_id: "o-2".into() })) }).await;
    assert_eq!(run.seen().await, Seen::Rescinded("o-2".into()));
    let failure = event::Failure { agent_id: "agent-9".into(), ..Default::default() };
    push(&stream, wire::Event { event: Some(event::Event::Failure(failure)) }).await;
    assert_eq!(run.seen().await, Seen::Failure("agent-9".into()));

    run.handle.stop();
    let scheduler = run.finish().await.expect("clean stop");
    assert_eq!(scheduler.launched, 1);
    assert!(master.calls.try_recv().is_err(), "no call after the acknowledgement");
}

#[tokio::test]
async fn resubscribes_with_the_same_framework_id_when_the_stream_breaks() {
    let mut master = fake_master(15.0, None, CallAnswer::Ok).await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    let stream = master.stream().await;
    assert_eq!(run.seen().await, Seen::Subscribed("fw-1".into()));

    run.handle.suppress(vec![]);
    assert!(matches!(master.call().await.call, Some(call::Call::Suppress(_))));
    drop(stream);

    assert_eq!(run.seen().await, Seen::Disconnected);
    let again = master.subscribe().await;
    assert_eq!(again.framework_info.expect("framework info").id, "fw-1");
    assert_eq!(again.suppressed_roles, vec!["*"], "suppression survives the resubscription");
    let stream = master.stream().await;
    assert_eq!(run.seen().await, Seen::Subscribed("fw-1".into()));

    // Calls now carry the new stream id.
    push(&stream, offer_event("o-7")).await;
    assert_eq!(run.seen().await, Seen::Offers(vec!["o-7".into()]));
    let accept = master.call().await;
    assert_eq!((accept.framework_id.as_str(), accept.stream_id.as_str()), ("fw-1", "s-2"));

    run.handle.stop();
    run.finish().await.expect("clean stop");
}

#[tokio::test]
async fn resubscribes_when_no_heartbeat_arrives() {
    // 50 ms heartbeats: five missed ones (250 ms of silence) mean the master is gone.
    let mut master = fake_master(0.05, None, CallAnswer::Ok).await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    let silent = master.stream().await;
    assert_eq!(run.seen().await, Seen::Subscribed("fw-1".into()));
    assert_eq!(run.seen().await, Seen::Disconnected);
    assert_eq!(master.subscribe().await.framework_info.expect("framework info").id, "fw-1");
    let _stream = master.stream().await;
    assert_eq!(run.seen().await, Seen::Subscribed("fw-1".into()));
    drop(silent);
    run.handle.stop();
    run.finish().await.expect("clean stop");
}

#[tokio::test]
async fn heartbeats_keep_the_connection() {
    let mut master = fake_master(0.05, None, CallAnswer::Ok).await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    let stream = master.stream().await;
    assert_eq!(run.seen().await, Seen::Subscribed("fw-1".into()));
    for _ in 0..20 {
        push(&stream, wire::Event { event: Some(event::Event::Heartbeat(event::Heartbeat {})) }).await;
        sleep(Duration::from_millis(25)).await;
    }
    assert!(run.seen.try_recv().is_err(), "no disconnection while heartbeats flow");
    run.handle.stop();
    run.finish().await.expect("clean stop");
}

#[tokio::test]
async fn explicit_acknowledgements_are_left_to_the_scheduler() {
    let mut master = fake_master(15.0, None, CallAnswer::Ok).await;
    let options = DriverOptions { explicit_acknowledgements: true, ..fast_options() };
    let mut run = start(&master.address, options);
    master.subscribe().await;
    let stream = master.stream().await;
    run.seen().await;
    push(&stream, update_event("t-0", wire::TaskState::TaskFinished, b"u")).await;
    assert_eq!(run.seen().await, Seen::Update("t-0".into(), model::TaskState::Finished));
    run.handle.kill("t-1", "agent-1");
    let Some(call::Call::Kill(kill)) = master.call().await.call else { panic!("expected KILL, not an ack") };
    assert_eq!(kill.task_id, "t-1");
    run.handle.stop();
    run.finish().await.expect("clean stop");
}

#[tokio::test]
async fn teardown_is_sent_and_ends_the_driver() {
    let mut master = fake_master(15.0, None, CallAnswer::Ok).await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    let _stream = master.stream().await;
    run.seen().await;
    run.handle.reconcile(vec![]);
    run.handle.teardown();
    assert!(matches!(master.call().await.call, Some(call::Call::Reconcile(r)) if r.tasks.is_empty()));
    assert!(matches!(master.call().await.call, Some(call::Call::Teardown(_))));
    run.finish().await.expect("teardown returns the scheduler");
}

#[tokio::test]
async fn a_teardown_the_master_answers_with_an_error_event_still_ends_cleanly() {
    // The real master removes the framework while the TEARDOWN is in flight and ends its stream with an ERROR.
    let mut master = gated_fake_master().await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    let stream = master.stream().await;
    run.seen().await;
    run.handle.teardown();
    assert!(matches!(master.call().await.call, Some(call::Call::Teardown(_))));
    let removed = event::Error { message: "framework removed: framework asked for TEARDOWN".into() };
    push(&stream, wire::Event { event: Some(event::Event::Error(removed)) }).await;
    master.release();
    run.finish().await.expect("a TEARDOWN ends the driver without an error");
}

#[tokio::test]
async fn error_event_is_fatal() {
    let mut master = fake_master(15.0, None, CallAnswer::Ok).await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    let stream = master.stream().await;
    run.seen().await;
    let error = event::Error { message: "framework failed over".into() };
    push(&stream, wire::Event { event: Some(event::Event::Error(error)) }).await;
    assert_eq!(run.seen().await, Seen::Error("framework failed over".into()));
    match run.finish().await {
        Err(DriverError::Framework { framework_id, message }) => {
            assert_eq!(framework_id, "fw-1");
            assert_eq!(message, "framework failed over");
        }
        other => panic!("expected a framework error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn refused_subscription_is_fatal() {
    let mut master = fake_master(15.0, Some(Status::invalid_argument("framework name is empty")), CallAnswer::Ok).await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    assert!(matches!(run.seen().await, Seen::Error(m) if m.contains("framework name is empty")));
    assert!(matches!(run.finish().await, Err(DriverError::Refused { .. })));
}

#[tokio::test]
async fn failed_calls_are_reported_not_panicked() {
    let mut master = fake_master(15.0, None, CallAnswer::PermissionDenied).await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    let _stream = master.stream().await;
    run.seen().await;
    run.handle.revive(vec![]);
    master.call().await;
    assert_eq!(run.seen().await, Seen::CallFailed("REVIVE".into()));
    run.handle.stop();
    run.finish().await.expect("clean stop");
}

#[tokio::test]
async fn calls_queued_while_a_batch_is_in_flight_go_together_in_order_and_events_keep_flowing() {
    let mut master = gated_fake_master().await;
    let mut run = start(&master.address, fast_options());
    master.subscribe().await;
    let stream = master.stream().await;
    assert_eq!(run.seen().await, Seen::Subscribed("fw-1".into()));

    run.handle.revive(vec![]);
    assert_eq!(master.batch().await, 1);
    assert!(matches!(master.call().await.call, Some(call::Call::Revive(_))));
    // The REVIVE is held in flight: updates are still dispatched, and their acknowledgements queue up.
    for i in 0..50 {
        push(&stream, update_event(&format!("t-{i}"), wire::TaskState::TaskRunning, b"u")).await;
        assert_eq!(run.seen().await, Seen::Update(format!("t-{i}"), model::TaskState::Running));
    }
    run.handle.suppress(vec![]);
    master.release();
    assert_eq!(master.batch().await, 51, "everything queued meanwhile goes in one batch");
    for i in 0..50 {
        let Some(call::Call::Acknowledge(ack)) = master.call().await.call else { panic!("expected ACKNOWLEDGE") };
        assert_eq!(ack.task_id, format!("t-{i}"));
    }
    assert!(matches!(master.call().await.call, Some(call::Call::Suppress(_))), "the SUPPRESS comes last");
    master.release();

    // STOP after queued calls: they are sent first, then the driver returns.
    run.handle.kill("t-1", "agent-1");
    run.handle.stop();
    assert_eq!(master.batch().await, 1);
    assert!(matches!(master.call().await.call, Some(call::Call::Kill(_))));
    master.release();
    run.finish().await.expect("clean stop");
}

#[tokio::test]
async fn unreachable_master_gives_up_after_the_connect_timeout() {
    // A port that was free a moment ago: nothing listens there.
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let options = DriverOptions { connect_timeout: Some(Duration::from_millis(300)), ..fast_options() };
    let run = start(&address, options);
    assert!(matches!(run.finish().await, Err(DriverError::Unreachable { .. })));
}

#[tokio::test]
async fn stop_while_disconnected_returns() {
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let run = start(&address, fast_options());
    run.handle.kill("t-0", "a-0");
    sleep(Duration::from_millis(100)).await;
    run.handle.stop();
    run.finish().await.expect("stop while disconnected is clean");
}

#[test]
fn master_addresses_are_normalised() {
    assert_eq!(master_url("127.0.0.1:5050").unwrap(), "http://127.0.0.1:5050");
    assert_eq!(master_url("http://m:5050/").unwrap(), "http://m:5050");
    assert!(matches!(master_url(""), Err(DriverError::InvalidMaster { .. })));
    assert!(matches!(master_url("ftp://m:21"), Err(DriverError::InvalidMaster { .. })));
}

#[test]
fn handle_without_a_running_driver_does_not_panic() {
    let driver = Driver::new("127.0.0.1:1", FrameworkInfo::new("x"), DriverOptions::default()).unwrap();
    let handle = driver.handle();
    drop(driver);
    handle.decline("o-1", None);
    handle.stop();
    assert_eq!(handle.framework_id(), None);
}

#[tokio::test]
async fn absurd_heartbeat_intervals_do_not_panic() {
    for heartbeat in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
        let mut master = fake_master(heartbeat, None, CallAnswer::Ok).await;
        let mut run = start(&master.address, fast_options());
        master.subscribe().await;
        let _stream = master.stream().await;
        assert_eq!(run.seen().await, Seen::Subscribed("fw-1".into()));
        run.handle.stop();
        run.finish().await.expect("clean stop");
    }
}
