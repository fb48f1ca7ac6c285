//! `agora-runtime`: the few process and file utilities every Agora crate needs the same way, in one place.
//!
//! - [`fs::write_atomically`]: replace a file so that a crash leaves the old or the new content, never a mix;
//!   [`fs::sync_dir`] makes renames in a directory durable.
//! - [`signal::shutdown_signal`]: the future a server's `run(listener, shutdown)` takes, resolved by SIGINT or
//!   SIGTERM.
//! - [`logging::init_tracing`]: `tracing` to stderr, filtered by `RUST_LOG` or a default.
//! - [`http`]: Mesos's answers to an unknown path (404) and a wrong method (405), for axum routers.
//!
//! It depends only on what the servers already use (tokio, tracing-subscriber, axum), and knows nothing of Agora's
//! domain: the rules about tasks, URIs and sandboxes live in `agora_proto::model`.

pub mod fs;
pub mod http;
pub mod logging;
pub mod signal;

pub use fs::{Durability, WriteError, write_atomically};
pub use logging::init_tracing;
pub use signal::shutdown_signal;
