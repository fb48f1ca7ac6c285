//! `agora-agent`: the agent of Agora, the Mesos-style two-level cluster manager. One runs on every machine. It
//! offers the machine's resources to the master (`agora-master`) over the `AgentLink` gRPC stream, runs the tasks
//! frameworks launch there behind a [`containerizer::Containerizer`], and delivers their status updates reliably
//! and in order until frameworks acknowledge them. Operators and the CLI read its HTTP `/state`.
//!
//! # Layout
//! - [`config`]: the flags (Mesos names), their validation, resource auto-detection.
//! - [`core`]: the pure core — task lifecycles, the link state and the status update manager as one state machine
//!   whose methods take `now` and return effects. [`status_updates`] is its reliable-delivery queue.
//! - [`containerizer`]: the seam that runs tasks, with [`containerizer::ProcessContainerizer`] (plain process
//!   groups), the libcontainer one and a recording fake for tests; what a launch needs is plain data in
//!   [`containerizer::spec`]. [`sandbox`]: the sandbox layout and task environment.
//! - [`launcher`]: the one step between the core's launch and the containerizer — sandbox, [`fetcher`] (the
//!   `CommandInfo.uris`), [`image`] (the root filesystem and its config) — with a typed [`launcher::LaunchError`];
//!   [`tarball`]: the one in-process, confined way archives are unpacked (image layers and archives, fetched
//!   archives).
//! - [`network`]: the container network's shell (`--network-bridge`): the master's assignment applied through
//!   `agora_net`, address leases, attaching and detaching containers; the decisions are the core's.
//! - [`checkpoint`]: what a restarted agent recovers, one file per task under `<work_dir>/meta`, written for what
//!   each batch of events changed.
//! - [`gc`]: ended containers' sandboxes deleted after `--gc-delay`, sooner as the disk fills (Mesos's rule).
//! - [`files`]: `/files/browse|read|download` confined to task sandboxes; [`metrics`]: `/metrics/snapshot`
//!   (`slave/...`) and `/metrics` (Prometheus).
//! - `shell`, `link`, `http`: the tokio shell — event loop, the gRPC stream to the master, the axum endpoints
//!   (unknown paths 404, wrong methods 405, as Mesos answers); `api`: Mesos's v1 operator API (`POST /api/v1`).
//!
//! [`run`] ties them together; the `agora-agent` binary is a thin wrapper around [`Flags`] and [`run`].

mod api;
pub mod checkpoint;
pub mod config;
pub mod containerizer;
pub mod core;
pub mod fetcher;
pub mod files;
pub mod gc;
pub mod health;
mod http;
pub mod image;
pub mod launcher;
mod link;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod sandbox;
mod shell;
mod statistics;
pub mod status_updates;
pub mod tarball;

use std::future::Future;
use std::path::PathBuf;

pub use config::{Config, ConfigErrors, Flags};
pub use shell::{registration_backoff, run_with};

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("cannot create work dir {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error("invalid master address {master}: {source}")]
    MasterAddress { master: String, source: link::LinkError },
    #[error("cannot recover: {0}")]
    Checkpoint(checkpoint::CheckpointError),
    #[error("cannot recover containers: {0}")]
    Recover(containerizer::ContainerError),
    #[error("cannot use --isolation=libcontainer: {0}")]
    Isolation(#[source] containerizer::LibcontainerError),
    #[error("http server failed: {0}")]
    Http(std::io::Error),
    #[error("cannot use --network-bridge: {0}")]
    Network(#[source] network::NetworkError),
}

/// Serves HTTP on `listener` (its port is the agent's port), connects to the master, runs until `shutdown` resolves,
/// then kills its tasks (SIGTERM, grace, SIGKILL) and returns.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    match config.isolation {
        config::Isolation::Process => {
            tracing::warn!(
                "--isolation=process: tasks run as plain processes on the host, with no limits, no filesystem \
                 isolation and no recovery across agent restarts; use it for development only"
            );
            run_with(config, listener, shutdown, containerizer::ProcessContainerizer::new()).await
        }
        config::Isolation::Libcontainer => {
            let mut options =
                containerizer::LibcontainerOptions::for_work_dir(&config.work_dir).map_err(AgentError::Isolation)?;
            options.disk_watch_interval = config.container_disk_watch_interval;
            let c = containerizer::LibcontainerContainerizer::new(options).map_err(AgentError::Isolation)?;
            tracing::info!("--isolation=libcontainer: every task runs in a container with cgroup limits");
            run_with(config, listener, shutdown, c).await
        }
        config::Isolation::Simulated => {
            tracing::warn!(
                "--isolation=simulated: tasks do not run; each is reported running from its launch until it is \
                 killed; for benchmarks and tests only"
            );
            let c = containerizer::SimulatedContainerizer::new(&config.work_dir);
            run_with(config, listener, shutdown, c).await
        }
    }
}
