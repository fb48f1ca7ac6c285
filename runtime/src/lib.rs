//! `agora-runtime`: the few process and file utilities every Agora crate needs the same way, in one place.
//!
//! - [`fs::write_atomically`]: replace a file so that a crash leaves the old or the new content, never a mix;
//!   [`fs::sync_dir`] makes renames in a directory durable.
//! - [`signal::shutdown_signal`]: the future a server's `run(listener, shutdown)` takes, resolved by SIGINT or
//!   SIGTERM.
//! - [`logging::init_tracing`]: `tracing` to stderr, filtered by `RUST_LOG` or a default.
//! - [`http`]: Mesos's answers to an unknown path (404) and a wrong method (405), for axum routers.
//! - [`mesos_api`]: the HTTP side of Mesos's v1 APIs (reading a call with Mesos's status codes, answering in the
//!   format the client accepts, RecordIO streams), for the master's and the agent's `/api/v1` endpoints.
//!
//! It depends only on what the servers already use (tokio, tracing-subscriber, axum, and `agora_proto::mesos` for
//! the v1 encodings), and knows nothing of Agora's domain: the rules about tasks, URIs and sandboxes live in
//! `agora_proto::model`.

pub mod fs;
pub mod http;
pub mod logging;
pub mod mesos_api;
pub mod signal;

pub use fs::{Durability, WriteError, write_atomically};
pub use logging::init_tracing;
pub use signal::shutdown_signal;
