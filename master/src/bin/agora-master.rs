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
    agora_runtime::init_tracing("info");
    let addr = std::net::SocketAddr::new(config.ip, config.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let shutdown = agora_runtime::shutdown_signal().context("cannot install the SIGINT/SIGTERM handlers")?;
    agora_master::run(config, listener, shutdown).await.context("master failed")?;
    Ok(())
}
