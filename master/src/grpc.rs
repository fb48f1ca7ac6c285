//! The gRPC services (`Scheduler`, `AgentLink`): wire messages in, domain inputs to the actor, domain events out
//! as wire messages. The only place in the master that sees `agora_proto::wire`.

use std::pin::Pin;
use std::task::{Context, Poll};

use agora_proto::convert::{self, ConvertError};
use agora_proto::model::{self, TaskInfo};
use agora_proto::wire;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use crate::actor::{Handle, Input, Subscription};
use crate::core::{AgentCommand, AgentMessage, Call, CallError, ConnId, LaunchOp, ReportedTask, SchedulerEvent};

fn invalid(e: ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<wire::Event, Status>> + Send>>;
type MasterStream = Pin<Box<dyn Stream<Item = Result<wire::MasterMessage, Status>> + Send>>;

/// Items the client's protocol has no message for map to `None` and are skipped.
struct Mapped<T, W> {
    inner: Subscription<T>,
    map: fn(T) -> Option<W>,
}

impl<T, W> Stream for Mapped<T, W> {
    type Item = Result<W, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let map = self.map;
        loop {
            match self.inner.poll_recv(cx) {
                Poll::Ready(Some(v)) => match map(v) {
                    Some(w) => return Poll::Ready(Some(Ok(w))),
                    None => continue,
                },
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T, W> Unpin for Mapped<T, W> {}

// --- Scheduler ------------------------------------------------------------------------------------------------------

pub(crate) struct SchedulerService {
    pub handle: Handle,
}

/// `None` for events `agora.v1` has no message for (operation statuses: its calls never ask for them).
fn event_to_wire(e: SchedulerEvent) -> Option<wire::Event> {
    use wire::event::Event as E;
    let event = match e {
        SchedulerEvent::Subscribed { framework_id, heartbeat_interval_seconds, master_info, stream_id } => {
            E::Subscribed(wire::event::Subscribed {
                framework_id,
                heartbeat_interval_seconds,
                master_info: Some((&master_info).into()),
                stream_id,
            })
        }
        SchedulerEvent::Offers(offers) => {
            E::Offers(wire::event::Offers { offers: offers.iter().map(wire::Offer::from).collect() })
        }
        SchedulerEvent::Rescind { offer_id } => E::Rescind(wire::event::Rescind { offer_id }),
        SchedulerEvent::Update(status) => E::Update(wire::event::Update { status: Some((&status).into()) }),
        SchedulerEvent::Failure { agent_id } => {
            E::Failure(wire::event::Failure { agent_id, executor_id: String::new(), status: None })
        }
        SchedulerEvent::Error { message } => E::Error(wire::event::Error { message }),
        SchedulerEvent::Heartbeat => E::Heartbeat(wire::event::Heartbeat {}),
        SchedulerEvent::UpdateOperationStatus(_) => return None,
    };
    Some(wire::Event { event: Some(event) })
}

fn task_from_wire(t: wire::TaskInfo) -> Result<TaskInfo, Status> {
    TaskInfo::try_from(t).map_err(invalid)
}

fn call_from_wire(call: wire::call::Call) -> Result<Call, Status> {
    use wire::call::Call as C;
    Ok(match call {
        C::Accept(a) => {
            let mut operations = Vec::new();
            for op in a.operations {
                match op.operation {
                    Some(wire::call::operation::Operation::Launch(l)) => operations.push(LaunchOp {
                        tasks: l.task_infos.into_iter().map(task_from_wire).collect::<Result<_, _>>()?,
                    }),
                    None => return Err(Status::invalid_argument("accept: an operation has no type")),
                }
            }
            Call::Accept {
                offer_ids: a.offer_ids,
                operations,
                refuse_seconds: a.filters.and_then(|f| f.refuse_seconds),
            }
        }
        C::Decline(d) => {
            Call::Decline { offer_ids: d.offer_ids, refuse_seconds: d.filters.and_then(|f| f.refuse_seconds) }
        }
        C::Revive(r) => Call::Revive { roles: r.roles },
        C::Suppress(s) => Call::Suppress { roles: s.roles },
        C::Kill(k) => {
            if k.task_id.is_empty() {
                return Err(Status::invalid_argument("kill: empty task_id"));
            }
            Call::Kill {
                task_id: k.task_id,
                agent_id: Some(k.agent_id).filter(|a| !a.is_empty()),
                grace_period: k.kill_policy.and_then(|p| p.grace_period_seconds),
            }
        }
        C::Acknowledge(a) => {
            if a.uuid.is_empty() || a.task_id.is_empty() || a.agent_id.is_empty() {
                return Err(Status::invalid_argument("acknowledge: agent_id, task_id and uuid are required"));
            }
            Call::Acknowledge { agent_id: a.agent_id, task_id: a.task_id, uuid: a.uuid }
        }
        C::Reconcile(r) => Call::Reconcile {
            tasks: r.tasks.into_iter().map(|t| (t.task_id, Some(t.agent_id).filter(|a| !a.is_empty()))).collect(),
        },
        C::Teardown(_) => Call::Teardown,
    })
}

#[tonic::async_trait]
impl wire::scheduler_server::Scheduler for SchedulerService {
    type SubscribeStream = EventStream;

    async fn subscribe(&self, req: Request<wire::SubscribeRequest>) -> Result<Response<EventStream>, Status> {
        let req = req.into_inner();
        let info =
            req.framework_info.ok_or_else(|| Status::invalid_argument("subscribe: framework_info is required"))?;
        let info = model::FrameworkInfo::try_from(info).map_err(invalid)?;
        let conn = self.handle.new_conn();
        let (tx, rx) = mpsc::unbounded_channel();
        self.handle.send(Input::Subscribe { conn, info, suppressed_roles: req.suppressed_roles, tx });
        let stream = Mapped {
            inner: Subscription::new(rx, self.handle.clone(), Input::FrameworkGone(conn)),
            map: event_to_wire,
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn call(&self, req: Request<wire::Call>) -> Result<Response<wire::CallResponse>, Status> {
        let reply = self.submit(req.into_inner())?;
        call_outcome(reply.await).map(|()| Response::new(wire::CallResponse {}))
    }

    async fn calls(&self, req: Request<wire::CallBatch>) -> Result<Response<wire::CallBatchResponse>, Status> {
        // Every call is queued for the core before any answer is awaited: the core applies them in this order.
        let replies: Vec<_> = req.into_inner().calls.into_iter().map(|c| self.submit(c)).collect();
        let mut results = Vec::with_capacity(replies.len());
        for reply in replies {
            let outcome = match reply {
                Ok(reply) => call_outcome(reply.await),
                Err(status) => Err(status),
            };
            results.push(match outcome {
                Ok(()) => wire::call_batch_response::Result { code: tonic::Code::Ok as i32, message: String::new() },
                Err(status) => wire::call_batch_response::Result {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                },
            });
        }
        Ok(Response::new(wire::CallBatchResponse { results }))
    }
}

impl SchedulerService {
    /// Checks a call and queues it for the core; the receiver gets the core's answer.
    fn submit(&self, req: wire::Call) -> Result<oneshot::Receiver<Result<(), CallError>>, Status> {
        let call = req.call.ok_or_else(|| Status::invalid_argument("call: no call type set"))?;
        let call = call_from_wire(call)?;
        let (reply, rx) = oneshot::channel();
        self.handle.send(Input::Call { framework_id: req.framework_id, stream_id: req.stream_id, call, reply });
        Ok(rx)
    }
}

/// The core's answer to a call as the gRPC status `Call` returns.
fn call_outcome(answer: Result<Result<(), CallError>, oneshot::error::RecvError>) -> Result<(), Status> {
    match answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ (CallError::UnknownFramework(_) | CallError::NotSubscribed(_) | CallError::WrongStream { .. }))) => {
            Err(Status::permission_denied(e.to_string()))
        }
        Ok(Err(e @ CallError::Invalid(_))) => Err(Status::invalid_argument(e.to_string())),
        Err(_) => Err(Status::unavailable("master is shutting down")),
    }
}

// --- AgentLink ------------------------------------------------------------------------------------------------------

pub(crate) struct AgentLinkService {
    pub handle: Handle,
}

fn command_to_wire(c: AgentCommand) -> Option<wire::MasterMessage> {
    use wire::master_message::Message as M;
    let message = match c {
        AgentCommand::Registered { agent_id, master_info, network } => M::Registered(wire::AgentRegistered {
            agent_id,
            master_info: Some((&master_info).into()),
            network: network.as_ref().map(convert::assignment_to_wire),
        }),
        AgentCommand::NetworkPeers(peers) => M::NetworkPeers(convert::peers_to_wire(&peers)),
        AgentCommand::Ping => M::Ping(wire::Ping {}),
        AgentCommand::RunTask { framework, task } => {
            M::RunTask(wire::RunTask { framework: Some((&*framework).into()), task: Some((&*task).into()) })
        }
        AgentCommand::KillTask { framework_id, task_id, grace_period } => M::KillTask(wire::KillTask {
            framework_id,
            task_id,
            kill_policy: grace_period.map(|g| wire::KillPolicy { grace_period_seconds: Some(g) }),
        }),
        AgentCommand::Acknowledge { framework_id, task_id, uuid } => {
            M::Acknowledgement(wire::StatusUpdateAcknowledgement { framework_id, task_id, uuid })
        }
        AgentCommand::ShutdownFramework { framework_id } => {
            M::ShutdownFramework(wire::ShutdownFramework { framework_id })
        }
        AgentCommand::Error { message } => M::Error(wire::AgentError { message }),
    };
    Some(wire::MasterMessage { message: Some(message) })
}

fn agent_message_from_wire(m: wire::AgentMessage) -> Result<AgentMessage, ConvertError> {
    use wire::agent_message::Message as M;
    let info = |i: Option<wire::AgentInfo>| {
        model::AgentInfo::try_from(i.ok_or_else(|| ConvertError::new("agent_info", "missing"))?)
    };
    Ok(match m.message.ok_or_else(|| ConvertError::new("message", "empty agent message"))? {
        M::Register(r) => AgentMessage::Register {
            info: info(r.agent_info)?,
            network: r.network.map(convert::agent_network_from_wire),
        },
        M::Reregister(r) => {
            let mut tasks = Vec::new();
            for t in r.tasks {
                let task = TaskInfo::try_from(t.task.ok_or_else(|| ConvertError::new("tasks[].task", "missing"))?)?;
                tasks.push(ReportedTask {
                    framework_id: t.framework_id,
                    task,
                    state: convert::task_state_from_i32(t.state, "tasks[].state")?,
                });
            }
            let frameworks =
                r.frameworks.into_iter().map(model::FrameworkInfo::try_from).collect::<Result<Vec<_>, _>>()?;
            AgentMessage::Reregister {
                info: info(r.agent_info)?,
                tasks,
                frameworks,
                network: r.network.map(convert::agent_network_from_wire),
            }
        }
        M::Pong(_) => AgentMessage::Pong,
        M::StatusUpdate(u) => AgentMessage::StatusUpdate {
            framework_id: u.framework_id,
            status: model::TaskStatus::try_from(u.status.ok_or_else(|| ConvertError::new("status", "missing"))?)?,
            latest_state: convert::task_state_from_i32(u.latest_state, "latest_state")?,
        },
    })
}

#[tonic::async_trait]
impl wire::agent_link_server::AgentLink for AgentLinkService {
    type OpenStream = MasterStream;

    async fn open(&self, req: Request<Streaming<wire::AgentMessage>>) -> Result<Response<MasterStream>, Status> {
        let mut inbound = req.into_inner();
        let conn: ConnId = self.handle.new_conn();
        let (tx, rx) = mpsc::unbounded_channel();
        self.handle.send(Input::AgentOpen { conn, tx });
        let handle = self.handle.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => match agent_message_from_wire(m) {
                        Ok(msg) => handle.send(Input::AgentMessage { conn, msg }),
                        Err(e) => tracing::warn!(error = %e, "dropping a malformed agent message"),
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "agent link broke");
                        break;
                    }
                }
            }
            handle.send(Input::AgentGone(conn));
        });
        let stream =
            Mapped { inner: Subscription::new(rx, self.handle.clone(), Input::AgentGone(conn)), map: command_to_wire };
        Ok(Response::new(Box::pin(stream)))
    }
}
