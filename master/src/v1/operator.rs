//! `POST /api/v1` on the master, Mesos's operator API: the read calls answered from the actor (`GET_STATE` and its
//! parts are one [`ClusterState`] taken in one actor step), and SUBSCRIBE, a RecordIO stream of SUBSCRIBED (the
//! whole state) then every change after it, with HEARTBEATs. Calls Agora does not serve yet are `501`.

use std::time::Duration;

use agora_proto::mesos::v1::master::{call, response};
use agora_proto::mesos::v1::{self, master};
use agora_proto::mesos::{self as m};
use agora_proto::model::VERSION;
use agora_proto::model::cluster::ClusterState;
use agora_runtime::mesos_api::{self, ApiRequest};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::actor::{Handle, Input, OPERATOR_QUEUE, OperatorItem};

pub(super) async fn handle(State(handle): State<Handle>, req: Request) -> Response {
    let ApiRequest { call, headers, credentials } = match mesos_api::read_call::<master::Call>(req).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    tracing::trace!(authorization = credentials.authorization.is_some(), "operator call");
    if let Err(why) = validate(&call) {
        return mesos_api::text(StatusCode::BAD_REQUEST, format!("Failed to validate master::Call: {why}"));
    }
    let format = match mesos_api::answer_format(&headers) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    use call::Type as T;
    let kind = call.r#type();
    let answer = |r: master::Response| mesos_api::message(&r, format);
    let unavailable = || mesos_api::text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
    match kind {
        T::Unknown => mesos_api::text(StatusCode::NOT_IMPLEMENTED, "Received an 'UNKNOWN' call"),
        T::GetHealth => {
            answer(reply(response::Type::GetHealth, |r| r.get_health = Some(response::GetHealth { healthy: true })))
        }
        T::GetFlags => answer(reply(response::Type::GetFlags, |r| {
            r.get_flags = Some(response::GetFlags { flags: flags(&handle.flags) })
        })),
        T::GetVersion => answer(reply(response::Type::GetVersion, |r| {
            r.get_version = Some(response::GetVersion { version_info: version_info() })
        })),
        T::GetLoggingLevel => answer(reply(response::Type::GetLoggingLevel, |r| {
            r.get_logging_level = Some(response::GetLoggingLevel { level: 0 })
        })),
        T::GetMetrics => match handle.metrics().await {
            Some(snapshot) => answer(reply(response::Type::GetMetrics, |r| {
                r.get_metrics = Some(response::GetMetrics { metrics: metrics(snapshot) })
            })),
            None => unavailable(),
        },
        T::GetMaster => {
            let info = v1::MasterInfo::from(&*handle.info);
            match handle.inspect(|m, _| m.start_time()).await {
                Some(started) => answer(reply(response::Type::GetMaster, |r| {
                    r.get_master = Some(response::GetMaster {
                        master_info: Some(info),
                        start_time: Some(started),
                        elected_time: Some(started),
                    })
                })),
                None => unavailable(),
            }
        }
        T::GetRoles => match handle.inspect(|m, _| m.roles()).await {
            Some(roles) => answer(reply(response::Type::GetRoles, |r| {
                r.get_roles = Some(response::GetRoles { roles: roles.iter().map(m::role_to_v1).collect() })
            })),
            None => unavailable(),
        },
        T::GetState | T::GetAgents | T::GetFrameworks | T::GetExecutors | T::GetTasks => {
            match handle.inspect(|m, _| m.cluster_state()).await {
                Some(state) => answer(state_response(kind, &state)),
                None => unavailable(),
            }
        }
        T::Subscribe => subscribe(handle, format).await,
        other => mesos_api::text(
            StatusCode::NOT_IMPLEMENTED,
            format!("The '{}' call is not supported by this master", other.as_str_name()),
        ),
    }
}

/// Mesos's structural checks: the type, and the payload of the calls that need one.
fn validate(c: &master::Call) -> Result<(), String> {
    let kind = c.r#type.and_then(|t| call::Type::try_from(t).ok()).map(|t| t.as_str_name());
    mesos_api::check_operator_call(kind, |field| match field {
        "get_metrics" => c.get_metrics.is_some(),
        "list_files" => c.list_files.is_some(),
        _ => c.read_file.is_some(),
    })
}

fn reply(kind: response::Type, fill: impl FnOnce(&mut master::Response)) -> master::Response {
    let mut r = master::Response { r#type: Some(kind as i32), ..Default::default() };
    fill(&mut r);
    r
}

fn state_response(kind: call::Type, state: &ClusterState) -> master::Response {
    use call::Type as T;
    match kind {
        T::GetAgents => reply(response::Type::GetAgents, |r| r.get_agents = Some(m::get_agents(state))),
        T::GetFrameworks => reply(response::Type::GetFrameworks, |r| r.get_frameworks = Some(m::get_frameworks(state))),
        T::GetExecutors => reply(response::Type::GetExecutors, |r| r.get_executors = Some(m::get_executors(state))),
        T::GetTasks => reply(response::Type::GetTasks, |r| r.get_tasks = Some(m::get_tasks(state))),
        _ => reply(response::Type::GetState, |r| r.get_state = Some(m::get_state(state))),
    }
}

/// The flags as Mesos lists them: every flag by name, values as strings.
pub(crate) fn flags(flags: &Value) -> Vec<v1::Flag> {
    let mut out: Vec<v1::Flag> = flags
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| v1::Flag {
            name: name.clone(),
            value: Some(value.as_str().map(String::from).unwrap_or_else(|| value.to_string())),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub(crate) fn version_info() -> v1::VersionInfo {
    v1::VersionInfo { version: VERSION.to_string(), ..Default::default() }
}

pub(crate) fn metrics(snapshot: crate::metrics::Snapshot) -> Vec<v1::Metric> {
    snapshot.into_iter().map(|(name, value)| v1::Metric { name, value: Some(value) }).collect()
}

/// SUBSCRIBE: SUBSCRIBED with the state of the step that registered the subscriber, then its events, with a
/// HEARTBEAT every `--heartbeat-interval`. The stream ends when the master stops leading or drops a subscriber that
/// does not keep up; the client then subscribes again (to the leader) and gets a fresh snapshot.
async fn subscribe(handle: Handle, format: agora_proto::mesos::codec::Format) -> Response {
    let (tx, mut rx) = mpsc::channel(OPERATOR_QUEUE);
    handle.send(Input::OperatorSubscribe { tx });
    let heartbeat = handle.heartbeat_interval;
    let Some(OperatorItem::Subscribed(state)) = rx.recv().await else {
        return mesos_api::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Master cannot take another operator subscriber (not leading, or too many subscribers)",
        );
    };
    let first = m::operator_subscribed(&state, heartbeat.as_secs_f64());
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rest = futures::stream::unfold((rx, ticks), |(mut rx, mut ticks)| async move {
        let event = tokio::select! {
            item = rx.recv() => match item? {
                OperatorItem::Event(e) => master::Event::from(&*e),
                OperatorItem::Subscribed(s) => m::operator_subscribed(&s, 0.0),
            },
            _ = ticks.tick() => m::operator_heartbeat(),
        };
        Some((event, (rx, ticks)))
    });
    use futures::StreamExt;
    mesos_api::record_stream(format, &[], futures::stream::iter([first]).chain(rest))
}
