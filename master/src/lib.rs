//! `agora-master`: the master of an Agora cluster, in the manner of Apache Mesos's master.
//!
//! Agents register over a long-lived gRPC link and report their resources; frameworks subscribe to the scheduler
//! API and receive offers of those resources, chosen by a weighted DRF allocator; frameworks launch tasks on the
//! offers they accept, and the master forwards launches, kills and status updates between frameworks and agents.
//!
//! # Layout
//! - [`allocator`]: pure weighted-DRF allocation — a function of a snapshot and the current time that returns
//!   allocations borrowing from the snapshot (the core turns them into offers), plus the decline filters.
//! - [`core`]: the pure master state machine ([`core::Master`]): registries of agents, frameworks, tasks and
//!   offers; validation; health pings; reconciliation; the container network's address plan (each agent's subnet
//!   of `--network-cidr`, its peers, tasks' networks checked). Inputs in, [`core::Effect`]s out; no I/O, no clock.
//! - The shell: `actor` owns the core, its timers and the registry store, and takes `Input`s through a `Handle`;
//!   `grpc`, `http`, `v1` and `web` adapt the wire protocols and the HTTP endpoints to those inputs (they import the
//!   actor module only); `v1` is Mesos's v1 HTTP APIs (the scheduler API at `/api/v1/scheduler`, the operator API
//!   and its event stream at `/api/v1`); `server` is [`run`]: the listener, the election and the drain. gRPC and
//!   HTTP share one port, as Mesos serves all on 5050; an unknown HTTP path gets 404, a wrong method 405.
//! - [`metrics`]: `/metrics/snapshot` (Mesos's flat JSON) and `/metrics` (Prometheus text with HELP, counters, base
//!   units and the allocation pass as a histogram) from the core's state; `web`: the status page at `/` (assets
//!   embedded) and the paged JSON and sandbox proxy it reads.
//! - [`registry`]: what survives a failover ([`registry::Registry`]) behind the [`registry::StateStore`] seam (a
//!   file under the work dir standalone, a ZooKeeper node with `--zk`); [`election`]: ZooKeeper leader election;
//!   `leader`: the layer that sends clients of a non-leading master to the leader.
//! - [`flags`]: command-line flags with Mesos's names and their validation into [`Config`].

mod actor;
pub mod allocator;
pub mod core;
pub mod election;
pub mod flags;
mod grpc;
mod http;
mod leader;
pub mod metrics;
pub mod registry;
mod server;
#[cfg(test)]
mod test_support;
mod v1;
mod web;

pub use flags::{Config, ConfigErrors, Flags};
pub use server::{MasterError, run};
