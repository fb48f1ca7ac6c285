//! `agora-proto`: Agora's wire protocol and domain model — the one crate that knows the wire format.
//!
//! # Layout
//! - [`wire`]: the messages and gRPC services generated from `proto/agora/v1/agora.proto` (package `agora.v1`):
//!   the `Scheduler` service frameworks talk to, and the `AgentLink` stream agents keep open to the master.
//! - [`model`]: the domain types every other crate computes with — fixed-point [`model::Resources`] in Mesos's
//!   syntax, task states and reasons with Mesos's names, task, framework, agent and offer descriptions, container
//!   networks (`NetworkInfo`, `ContainerStatus`) and the address plan between master and agents.
//! - [`convert`]: `From`/`TryFrom` between the two. Wire → model is fallible and names the bad field.
//! - [`mesos`]: Apache Mesos's v1 HTTP APIs on the wire — the `mesos.v1*` messages, their JSON and protobuf
//!   encodings, RecordIO, and conversions to and from `model` — for `/api/v1/scheduler` and `/api/v1`.
//! - [`prometheus`]: the Prometheus text format, which every component's `/metrics` speaks.
//!
//! Other crates touch `wire` and `mesos` only in their gRPC and HTTP shells and convert at once; their cores see only
//! `model`.

pub mod convert;
pub mod mesos;
pub mod model;
pub mod prometheus;

/// Generated code for package `agora.v1`.
pub mod wire {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("agora.v1");
}

pub use convert::ConvertError;
