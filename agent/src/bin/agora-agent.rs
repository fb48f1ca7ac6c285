//! The `agora-agent` binary: flags, logging, the listener, and signals; everything else is `agora_agent::run`.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = agora_agent::Flags::parse();
    let config = match flags.config() {
        Ok(config) => config,
        Err(errors) => {
            for line in &errors.0 {
                eprintln!("agora-agent: {line}");
            }
            std::process::exit(2);
        }
    };
    agora_runtime::init_tracing("info");
    let addr = (config.ip, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.ip, config.port))?;
    let shutdown = agora_runtime::shutdown_signal().context("cannot install the SIGINT/SIGTERM handlers")?;
    agora_agent::run(config, listener, shutdown).await.context("agent failed")
}
