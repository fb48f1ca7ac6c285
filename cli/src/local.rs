//! `agora local`: a one-machine cluster — a master and an agent in this process — for trying Agora out.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const DEFAULT_WORK_DIR: &str = "./.agora-local";
pub const DEFAULT_MASTER_PORT: u16 = 5050;
pub const DEFAULT_AGENT_PORT: u16 = 5051;
pub const DEFAULT_IP: &str = "127.0.0.1";
/// How long the master and the agent get to stop (the agent kills its tasks) after Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// Where the master and the agent keep their state (`<dir>/master`, `<dir>/agent`).
    #[arg(long, default_value = DEFAULT_WORK_DIR)]
    pub work_dir: PathBuf,
    /// The IP address both listen on.
    #[arg(long, default_value = DEFAULT_IP)]
    pub ip: String,
    /// The master's port (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_MASTER_PORT)]
    pub master_port: u16,
    /// The agent's port (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_AGENT_PORT)]
    pub agent_port: u16,
    /// The agent's resources in Mesos syntax; by default the agent detects the machine's.
    #[arg(long)]
    pub resources: Option<String>,
}

/// The master's command line for this local cluster.
pub fn master_argv(args: &LocalArgs, work_dir: &Path, port: u16) -> Vec<String> {
    vec![
        "agora-master".into(),
        "--ip".into(),
        args.ip.clone(),
        "--port".into(),
        port.to_string(),
        "--work-dir".into(),
        work_dir.join("master").display().to_string(),
    ]
}

/// The agent's command line for this local cluster, registering with the master at `master`.
pub fn agent_argv(args: &LocalArgs, work_dir: &Path, master: SocketAddr, port: u16) -> Vec<String> {
    let mut argv = vec![
        "agora-agent".into(),
        "--master".into(),
        master.to_string(),
        "--ip".into(),
        args.ip.clone(),
        "--port".into(),
        port.to_string(),
        "--work-dir".into(),
        work_dir.join("agent").display().to_string(),
    ];
    if let Some(resources) = &args.resources {
        argv.push("--resources".into());
        argv.push(resources.clone());
    }
    argv
}

async fn bind(ip: &str, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((ip, port)).await.with_context(|| format!("cannot listen for the {what} on {ip}:{port}"))
}

fn stopped(shutdown: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = shutdown.subscribe();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Runs `agora local` until Ctrl-C or SIGTERM; returns the exit code.
pub async fn local(args: LocalArgs) -> anyhow::Result<i32> {
    use clap::Parser;

    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("cannot create the work directory {}", args.work_dir.display()))?;
    let work_dir = args.work_dir.canonicalize().unwrap_or_else(|_| args.work_dir.clone());

    let master_listener = bind(&args.ip, args.master_port, "master").await?;
    let master_addr = master_listener.local_addr().context("cannot read the master's address")?;
    let agent_listener = bind(&args.ip, args.agent_port, "agent").await?;
    let agent_addr = agent_listener.local_addr().context("cannot read the agent's address")?;

    let master_config = agora_master::Flags::try_parse_from(master_argv(&args, &work_dir, master_addr.port()))
        .context("invalid master flags")?
        .config()
        .map_err(|e| anyhow!("invalid master configuration: {e}"))?;
    let agent_config = agora_agent::Flags::try_parse_from(agent_argv(&args, &work_dir, master_addr, agent_addr.port()))
        .context("invalid agent flags")?
        .config()
        .map_err(|e| anyhow!("invalid agent configuration: {e}"))?;

    // Two signals, so that the agent stops (killing its tasks and reporting them) before the master does.
    let (stop_agent, _) = watch::channel(false);
    let (stop_master, _) = watch::channel(false);
    let mut master = tokio::spawn(agora_master::run(master_config, master_listener, stopped(&stop_master)));
    let mut agent = tokio::spawn(agora_agent::run(agent_config, agent_listener, stopped(&stop_agent)));

    // ---- MARATHON: start the in-process Marathon here once it exists. It subscribes to the master at
    // `master_addr` like any framework, gets its own listener, and stops on `stopped(&stop_agent)`; print its
    // address below. --------------------------------------------------------------------------------------------

    println!("master: http://{master_addr}");
    println!("agent: http://{agent_addr}");
    println!("work dir: {}", work_dir.display());
    println!("try: agora execute --master {master_addr} --name hello --command 'echo hello'");

    let mut code = 0;
    tokio::select! {
        signal = crate::shutdown_signal() => {
            signal.context("cannot listen for Ctrl-C")?;
            eprintln!("agora local: stopping");
        }
        result = &mut master => {
            code = 1;
            eprintln!("agora local: the master stopped: {}", describe(result.map(|r| r.map_err(|e| e.to_string()))));
        }
        result = &mut agent => {
            code = 1;
            eprintln!("agora local: the agent stopped: {}", describe(result.map(|r| r.map_err(|e| e.to_string()))));
        }
    }
    let both = async {
        stop_agent.send_replace(true);
        if !agent.is_finished() {
            let _ = (&mut agent).await;
        }
        stop_master.send_replace(true);
        if !master.is_finished() {
            let _ = (&mut master).await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, both).await.is_err() {
        eprintln!("agora local: did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
        agent.abort();
        master.abort();
        code = 1;
    }
    Ok(code)
}

fn describe(result: Result<Result<(), String>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "without an error".to_string(),
        Ok(Err(e)) => e,
        Err(e) => format!("it crashed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> LocalArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            local: LocalArgs,
        }
        Cli::try_parse_from(["agora-local"].iter().chain(extra)).expect("flags parse").local
    }

    #[test]
    fn defaults() {
        let a = args(&[]);
        assert_eq!(a.work_dir, PathBuf::from("./.agora-local"));
        assert_eq!((a.master_port, a.agent_port), (5050, 5051));
        assert_eq!(a.resources, None);
    }

    #[test]
    fn master_and_agent_flags_parse() {
        use clap::Parser;
        let a = args(&["--resources", "cpus:2;mem:1024", "--master-port", "0"]);
        let dir = PathBuf::from("/tmp/x");
        let master = agora_master::Flags::try_parse_from(master_argv(&a, &dir, 5050)).expect("master flags");
        assert_eq!(master.port, 5050);
        assert_eq!(master.work_dir, dir.join("master"));
        let agent_argv = agent_argv(&a, &dir, "127.0.0.1:5050".parse().unwrap(), 5051);
        let agent = agora_agent::Flags::try_parse_from(agent_argv).expect("agent flags");
        assert_eq!(agent.master, "127.0.0.1:5050");
        assert_eq!(agent.resources.as_deref(), Some("cpus:2;mem:1024"));
        assert_eq!(agent.work_dir, dir.join("agent"));
    }
}
