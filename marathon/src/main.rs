//! `agora-marathon`: Marathon's REST API and scheduler for Agora.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "agora-marathon", about = "Marathon for Agora: keeps long-running apps running")]
struct Flags {
    /// The master, as HOST:PORT, http://HOST:PORT or zk://HOST:PORT[,HOST:PORT]/PATH.
    #[arg(long)]
    master: String,
    /// The port of the REST API.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// The address the REST API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    http_address: String,
    /// Where Marathon keeps its state (`marathon-state.json` and its journal).
    #[arg(long, default_value = "./.agora-marathon")]
    work_dir: PathBuf,
    /// The hostname Marathon announces (`/v2/leader`, the framework's hostname); by default this machine's.
    #[arg(long)]
    hostname: Option<String>,
    /// The framework name.
    #[arg(long, default_value = "marathon")]
    framework_name: String,
    /// ZooKeeper for state and leader election, zk://HOST:PORT[,HOST:PORT]/PATH (e.g. /marathon): instances with
    /// the same path elect one leader, the others proxy the API to it.
    #[arg(long)]
    zk: Option<String>,
    /// The ZooKeeper session timeout in milliseconds (Marathon's `--zk_session_timeout`).
    #[arg(long, alias = "zk_session_timeout", default_value_t = 10_000)]
    zk_session_timeout: u64,
    /// At most this many deployments run at once; one more is refused with 403 (Marathon's
    /// `--max_running_deployments`).
    #[arg(long, alias = "max_running_deployments", default_value_t = agora_marathon::core::MAX_RUNNING_DEPLOYMENTS)]
    max_running_deployments: usize,
    /// Origins allowed to call the API from a browser, comma-separated (`*`, or
    /// `http://localhost:8888, http://domain.com`): answers carry CORS headers (Marathon's
    /// `--access_control_allow_origin`). Not set: no CORS headers.
    #[arg(long, alias = "access_control_allow_origin")]
    access_control_allow_origin: Option<String>,
    /// How many events an `/v2/events` client may fall behind before it is disconnected (Marathon's
    /// `--event_stream_max_outstanding_messages`; ours is larger, as a deployment of thousands of instances
    /// publishes tens of thousands of events within seconds).
    #[arg(long, alias = "event_stream_max_outstanding_messages", default_value_t = agora_marathon::events::BUFFER as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    event_stream_max_outstanding_messages: u64,
    /// The role Marathon subscribes in, and every app's: it is offered the resources agents reserve for this role
    /// (`--resources 'cpus(public):2'`) besides the unreserved ones; apps pick with `acceptedResourceRoles`
    /// (Marathon's `--mesos_role`).
    #[arg(long, alias = "mesos_role", default_value = agora_proto::model::UNRESERVED, value_parser = role)]
    mesos_role: String,
}

/// A role name as Mesos allows it.
fn role(text: &str) -> Result<String, String> {
    if agora_proto::convert::valid_role(text) {
        Ok(text.to_string())
    } else {
        Err(format!("'{text}' is not a valid role name (no whitespace, no leading '-', no '.' or '..' segments)"))
    }
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let flags = Flags::parse();
    let ha = match &flags.zk {
        None => None,
        Some(url) => Some(agora_marathon::server::HaConfig {
            zk: agora_detector::ZkUrl::parse(url).context("--zk")?,
            session_timeout: std::time::Duration::from_millis(flags.zk_session_timeout),
        }),
    };
    let listener = tokio::net::TcpListener::bind((flags.http_address.as_str(), flags.http_port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", flags.http_address, flags.http_port))?;
    let config = agora_marathon::server::Config {
        master: flags.master,
        work_dir: flags.work_dir,
        hostname: flags.hostname.unwrap_or_else(default_hostname),
        framework_name: flags.framework_name,
        max_running_deployments: flags.max_running_deployments,
        access_control_allow_origin: flags
            .access_control_allow_origin
            .map(|o| agora_marathon::api::split_origins(&o))
            .unwrap_or_default(),
        event_stream_max_outstanding_messages: usize::try_from(flags.event_stream_max_outstanding_messages)
            .context("--event-stream-max-outstanding-messages")?,
        mesos_role: flags.mesos_role,
    };
    match ha {
        None => agora_marathon::server::run(config, listener, shutdown_signal()).await,
        Some(ha) => agora_marathon::server::run_ha(config, ha, listener, shutdown_signal()).await,
    }
    .context("agora-marathon stopped")?;
    Ok(())
}
