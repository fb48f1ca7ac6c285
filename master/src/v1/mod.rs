//! Mesos's v1 HTTP APIs on the master: the scheduler API at `POST /api/v1/scheduler` ([`scheduler`]) and the
//! operator API at `POST /api/v1` ([`operator`]), beside gRPC on the one port. Both speak to the actor like the gRPC
//! services do, so a framework sees the same offers, updates and reconciliation through either door; the v1
//! messages and their JSON and protobuf encodings are `agora_proto::mesos`, the HTTP plumbing (content types, Mesos's
//! status codes, RecordIO streams) `agora_runtime::mesos_api`. The leader guard in front of every route sends
//! clients of a master that is not leading to the leader (307) or answers 503.

mod operator;
mod scheduler;
#[cfg(test)]
mod tests;

use axum::Router;
use axum::routing::post;

use crate::actor::Handle;

/// The `Mesos-Stream-Id` header of a scheduler subscription.
const STREAM_ID: &str = "Mesos-Stream-Id";

pub(crate) fn router(handle: Handle) -> Router {
    Router::new()
        .route("/api/v1/scheduler", post(scheduler::handle))
        .route("/api/v1", post(operator::handle))
        .with_state(handle)
}
