//! `agora-master`: parse flags, set up logging, serve until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = agora_master::Flags::parse();
    let config = match flags.config() {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("agora-master: {e}");
            }
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let addr = std::net::SocketAddr::new(config.ip, config.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    agora_master::run(config, listener, shutdown_signal()).await.context("master failed")?;
    Ok(())
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
