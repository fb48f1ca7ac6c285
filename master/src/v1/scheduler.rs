//! `POST /api/v1/scheduler`, Mesos's scheduler HTTP API: SUBSCRIBE answers `200` with a `Mesos-Stream-Id` header and
//! a RecordIO stream of events (SUBSCRIBED first, or ERROR); every other call is its own request carrying that header
//! and is answered `202 Accepted` (UPDATE_FRAMEWORK `200`), its results arriving on the stream.
//!
//! Calls are validated as Mesos's `validation::scheduler::call::validate` does, then turned into the core's
//! [`Call`]s; the answers are Mesos's (`src/master/http.cpp`): an unknown framework is `400 Framework cannot be
//! found`, a framework without a subscription `403 Framework is not subscribed`, a missing or wrong stream id `400`,
//! an invalid call `400` with the reason, an UNKNOWN call `501`.

use agora_proto::ConvertError;
use agora_proto::mesos::v1::scheduler::{call, event};
use agora_proto::mesos::v1::{self, scheduler};
use agora_proto::model::{FrameworkInfo, TaskInfo};
use agora_runtime::mesos_api::{self, ApiRequest};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::STREAM_ID;
use crate::actor::{Handle, Input, Subscription};
use crate::core::{Call, CallError, LaunchOp, SchedulerEvent};

pub(super) async fn handle(State(handle): State<Handle>, req: Request) -> Response {
    let ApiRequest { call, headers, credentials } = match mesos_api::read_call::<scheduler::Call>(req).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    tracing::trace!(authorization = credentials.authorization.is_some(), "scheduler call");
    if let Err(why) = validate(&call) {
        return bad_request(format!("Failed to validate scheduler::Call: {why}"));
    }
    match call.r#type() {
        call::Type::Unknown => mesos_api::text(StatusCode::NOT_IMPLEMENTED, "Received an 'UNKNOWN' call"),
        call::Type::Subscribe => subscribe(handle, &headers, call).await,
        kind => {
            if kind == call::Type::ReconcileOperations
                && let Err(e) = mesos_api::answer_format(&headers)
            {
                return e.into_response();
            }
            let framework_id = call.framework_id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
            let stream_id = headers.get(STREAM_ID).map(|v| v.to_str().unwrap_or_default().to_string());
            let core_call = match to_core(call) {
                Ok(c) => c,
                Err(why) => return bad_request(why),
            };
            let synchronous = matches!(core_call, Call::UpdateFramework { .. });
            let (reply, rx) = oneshot::channel();
            handle.send(Input::Call {
                framework_id: framework_id.clone(),
                stream_id: stream_id.clone().unwrap_or_default(),
                call: core_call,
                reply,
            });
            match rx.await {
                Ok(Ok(())) if synchronous => mesos_api::text(StatusCode::OK, ""),
                Ok(Ok(())) => mesos_api::text(StatusCode::ACCEPTED, ""),
                Ok(Err(CallError::UnknownFramework(_))) => bad_request("Framework cannot be found"),
                Ok(Err(CallError::NotSubscribed(_))) => {
                    mesos_api::text(StatusCode::FORBIDDEN, "Framework is not subscribed")
                }
                Ok(Err(CallError::WrongStream { .. })) => match stream_id {
                    None => bad_request("All non-subscribe calls should include the 'Mesos-Stream-Id' header"),
                    Some(s) => bad_request(format!(
                        "The stream ID '{s}' included in this request didn't match the stream ID currently \
                         associated with framework ID {framework_id}"
                    )),
                },
                Ok(Err(CallError::Invalid(why))) => bad_request(why),
                Err(_) => mesos_api::text(StatusCode::SERVICE_UNAVAILABLE, "Master is not the leader"),
            }
        }
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    mesos_api::text(StatusCode::BAD_REQUEST, message)
}

/// Mesos's structural checks of a call (its payload for its type, the framework id, acknowledgement UUIDs).
fn validate(c: &scheduler::Call) -> Result<(), String> {
    use call::Type as T;
    let Some(kind) = c.r#type.and_then(|t| T::try_from(t).ok()) else {
        return Err("Expecting 'type' to be present".into());
    };
    let present = |has: bool, field: &str| if has { Ok(()) } else { Err(format!("Expecting '{field}' to be present")) };
    if kind == T::Subscribe {
        present(c.subscribe.is_some(), "subscribe")?;
        let info_id = c.subscribe.as_ref().and_then(|s| s.framework_info.id.as_ref());
        if info_id != c.framework_id.as_ref() {
            return Err("'framework_id' differs from 'subscribe.framework_info.id'".into());
        }
        return Ok(());
    }
    present(c.framework_id.is_some(), "framework_id")?;
    match kind {
        T::Subscribe | T::Unknown | T::Teardown | T::Revive | T::Suppress => Ok(()),
        T::Accept => present(c.accept.is_some(), "accept"),
        T::Decline => present(c.decline.is_some(), "decline"),
        T::AcceptInverseOffers => present(c.accept_inverse_offers.is_some(), "accept_inverse_offers"),
        T::DeclineInverseOffers => present(c.decline_inverse_offers.is_some(), "decline_inverse_offers"),
        T::Kill => present(c.kill.is_some(), "kill"),
        T::Shutdown => present(c.shutdown.is_some(), "shutdown"),
        T::Acknowledge => {
            present(c.acknowledge.is_some(), "acknowledge")?;
            valid_uuid(c.acknowledge.as_ref().map(|a| a.uuid.as_slice()).unwrap_or_default())
        }
        T::AcknowledgeOperationStatus => {
            let a = c.acknowledge_operation_status.as_ref();
            present(a.is_some(), "acknowledge_operation_status")?;
            valid_uuid(a.map(|a| a.uuid.as_slice()).unwrap_or_default())?;
            present(a.is_some_and(|a| a.agent_id.is_some()), "agent_id")
        }
        T::Reconcile => present(c.reconcile.is_some(), "reconcile"),
        T::ReconcileOperations => present(c.reconcile_operations.is_some(), "reconcile_operations"),
        T::Message => present(c.message.is_some(), "message"),
        T::Request => present(c.request.is_some(), "request"),
        T::UpdateFramework => {
            let u = c.update_framework.as_ref();
            present(u.is_some(), "update_framework")?;
            if u.and_then(|u| u.framework_info.id.as_ref()) != c.framework_id.as_ref() {
                return Err("'framework_id' differs from 'update_framework.framework_info.id'".into());
            }
            Ok(())
        }
    }
}

/// Mesos's `UUID::fromBytes`: 16 bytes of a UUID of a known version (1 to 5).
fn valid_uuid(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() == 16 && (1..=5).contains(&(bytes[6] >> 4)) { Ok(()) } else { Err("Not a valid UUID".into()) }
}

fn ids<T>(items: Vec<T>, value: impl Fn(T) -> String) -> Vec<String> {
    items.into_iter().map(value).collect()
}

/// A validated v1 call (not SUBSCRIBE) as the core's; what cannot be converted is a 400 naming the field.
fn to_core(c: scheduler::Call) -> Result<Call, String> {
    use call::Type as T;
    let invalid = |e: ConvertError| e.to_string();
    Ok(match c.r#type() {
        T::Subscribe | T::Unknown => unreachable!("handled before"),
        T::Teardown => Call::Teardown,
        T::Accept => {
            let a = c.accept.expect("validated");
            let mut operations = Vec::with_capacity(a.operations.len());
            for (i, op) in a.operations.into_iter().enumerate() {
                match (op.r#type(), op.launch) {
                    (v1::offer::operation::Type::Launch, Some(launch)) => operations.push(LaunchOp {
                        tasks: launch
                            .task_infos
                            .into_iter()
                            .map(TaskInfo::try_from)
                            .collect::<Result<_, _>>()
                            .map_err(invalid)?,
                    }),
                    (v1::offer::operation::Type::Launch, None) => {
                        return Err(format!("Expecting 'accept.operations[{i}].launch' to be present"));
                    }
                    (other, _) => {
                        return Err(format!(
                            "Offer operation {} (accept.operations[{i}]) is not supported by this master",
                            other.as_str_name()
                        ));
                    }
                }
            }
            Call::Accept {
                offer_ids: ids(a.offer_ids, |o| o.value),
                operations,
                refuse_seconds: a.filters.and_then(|f| f.refuse_seconds),
            }
        }
        T::Decline => {
            let d = c.decline.expect("validated");
            Call::Decline {
                offer_ids: ids(d.offer_ids, |o| o.value),
                refuse_seconds: d.filters.and_then(|f| f.refuse_seconds),
            }
        }
        T::AcceptInverseOffers => Call::AnswerInverseOffers {
            inverse_offer_ids: ids(c.accept_inverse_offers.expect("validated").inverse_offer_ids, |o| o.value),
        },
        T::DeclineInverseOffers => Call::AnswerInverseOffers {
            inverse_offer_ids: ids(c.decline_inverse_offers.expect("validated").inverse_offer_ids, |o| o.value),
        },
        T::Revive => Call::Revive { roles: c.revive.map(|r| r.roles).unwrap_or_default() },
        T::Suppress => Call::Suppress { roles: c.suppress.map(|s| s.roles).unwrap_or_default() },
        T::Kill => {
            let k = c.kill.expect("validated");
            let grace = k.kill_policy.and_then(|p| p.grace_period).map(|g| g.nanoseconds);
            if grace.is_some_and(|n| n < 0) {
                return Err("'kill.kill_policy.grace_period' is negative".into());
            }
            Call::Kill {
                task_id: k.task_id.value,
                agent_id: k.agent_id.map(|a| a.value),
                grace_period: grace.map(|n| n as f64 / 1e9),
            }
        }
        T::Shutdown => {
            let s = c.shutdown.expect("validated");
            Call::Shutdown { executor_id: s.executor_id.value, agent_id: s.agent_id.value }
        }
        T::Acknowledge => {
            let a = c.acknowledge.expect("validated");
            Call::Acknowledge { agent_id: a.agent_id.value, task_id: a.task_id.value, uuid: a.uuid }
        }
        T::AcknowledgeOperationStatus => {
            let a = c.acknowledge_operation_status.expect("validated");
            Call::AcknowledgeOperationStatus {
                operation_id: a.operation_id.value,
                agent_id: a.agent_id.map(|x| x.value),
                uuid: a.uuid,
            }
        }
        T::Reconcile => Call::Reconcile {
            tasks: c
                .reconcile
                .expect("validated")
                .tasks
                .into_iter()
                .map(|t| (t.task_id.value, t.agent_id.map(|a| a.value)))
                .collect(),
        },
        T::ReconcileOperations => Call::ReconcileOperations {
            operations: c
                .reconcile_operations
                .expect("validated")
                .operations
                .into_iter()
                .map(|o| (o.operation_id.value, o.agent_id.map(|a| a.value)))
                .collect(),
        },
        T::Message => {
            let m = c.message.expect("validated");
            Call::Message { agent_id: m.agent_id.value, executor_id: m.executor_id.value, data: m.data }
        }
        T::Request => Call::Request,
        T::UpdateFramework => {
            let u = c.update_framework.expect("validated");
            let info = FrameworkInfo::try_from(u.framework_info).map_err(invalid)?;
            Call::UpdateFramework { info: Box::new(info), suppressed_roles: u.suppressed_roles }
        }
    })
}

/// SUBSCRIBE: the stream opens with SUBSCRIBED (its stream id in the header) or, for a framework the master refuses,
/// with ERROR.
async fn subscribe(handle: Handle, headers: &HeaderMap, c: scheduler::Call) -> Response {
    if headers.contains_key(STREAM_ID) {
        return bad_request("Subscribe calls should not include the 'Mesos-Stream-Id' header");
    }
    let format = match mesos_api::answer_format(headers) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let subscribe = c.subscribe.expect("validated");
    let info = match FrameworkInfo::try_from(subscribe.framework_info) {
        Ok(info) => info,
        // Mesos refuses an invalid FrameworkInfo on the stream: an ERROR event, then the end.
        Err(e) => {
            let error = SchedulerEvent::Error { message: e.to_string() };
            let events = futures::stream::iter([event_to_v1(error)]);
            return mesos_api::record_stream(format, &[], events);
        }
    };
    let conn = handle.new_conn();
    let (tx, rx) = mpsc::unbounded_channel();
    handle.send(Input::Subscribe { conn, info, suppressed_roles: subscribe.suppressed_roles, tx });
    let mut events = Subscription::new(rx, handle, Input::FrameworkGone(conn));
    let Some(first) = events.recv().await else {
        return mesos_api::text(StatusCode::SERVICE_UNAVAILABLE, "Master is not the leader");
    };
    let stream_id = match &first {
        SchedulerEvent::Subscribed { stream_id, .. } => vec![(STREAM_ID, stream_id.clone())],
        _ => vec![],
    };
    let rest = futures::stream::unfold(events, |mut events| async move { events.recv().await.map(|e| (e, events)) });
    let all = futures::stream::iter([first]).chain(rest).map(event_to_v1);
    mesos_api::record_stream(format, &stream_id, all)
}

/// The core's event as Mesos's.
pub(crate) fn event_to_v1(e: SchedulerEvent) -> scheduler::Event {
    use agora_proto::mesos as m;
    let mut out = scheduler::Event::default();
    let kind = match e {
        SchedulerEvent::Subscribed { framework_id, heartbeat_interval_seconds, master_info, .. } => {
            out.subscribed = Some(event::Subscribed {
                framework_id: m::framework_id(framework_id),
                heartbeat_interval_seconds: Some(heartbeat_interval_seconds),
                master_info: Some(v1::MasterInfo::from(&master_info)),
            });
            event::Type::Subscribed
        }
        SchedulerEvent::Offers(offers) => {
            out.offers = Some(event::Offers { offers: offers.iter().map(v1::Offer::from).collect() });
            event::Type::Offers
        }
        SchedulerEvent::Rescind { offer_id } => {
            out.rescind = Some(event::Rescind { offer_id: m::offer_id(offer_id) });
            event::Type::Rescind
        }
        SchedulerEvent::Update(status) => {
            out.update = Some(event::Update { status: v1::TaskStatus::from(&status) });
            event::Type::Update
        }
        SchedulerEvent::UpdateOperationStatus(status) => {
            out.update_operation_status =
                Some(event::UpdateOperationStatus { status: v1::OperationStatus::from(&status) });
            event::Type::UpdateOperationStatus
        }
        SchedulerEvent::Failure { agent_id } => {
            out.failure = Some(event::Failure { agent_id: Some(m::agent_id(agent_id)), ..Default::default() });
            event::Type::Failure
        }
        SchedulerEvent::Error { message } => {
            out.error = Some(event::Error { message });
            event::Type::Error
        }
        SchedulerEvent::Heartbeat => event::Type::Heartbeat,
    };
    out.r#type = Some(kind as i32);
    out
}
