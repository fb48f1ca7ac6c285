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
/// Marathon's REST API port; a cluster whose master port is 0 (tests) gives Marathon a free port too.
pub const DEFAULT_MARATHON_PORT: u16 = 8080;
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
    /// Runs the container network on a bridge of this name (e.g. `agora0`; the agent's `--network-bridge`): apps
    /// with `"networks": [{"mode": "container/bridge"}]` get their own address. Needs root and nftables; it changes
    /// this machine's network (a bridge, nftables rules, `ip_forward`), all removed when the cluster stops.
    #[arg(long)]
    pub network_bridge: Option<String>,
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
    if let Some(bridge) = &args.network_bridge {
        argv.extend(["--isolation".into(), "libcontainer".into(), "--network-bridge".into(), bridge.clone()]);
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

type Component = tokio::task::JoinHandle<Result<(), String>>;

/// The port Marathon listens on: 8080, or a free one when the master's port is 0 (a throwaway cluster).
pub fn marathon_port(args: &LocalArgs) -> u16 {
    if args.master_port == 0 { 0 } else { DEFAULT_MARATHON_PORT }
}

/// A master, an agent and Marathon running in this process.
pub struct LocalCluster {
    pub master_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub marathon_addr: SocketAddr,
    pub work_dir: PathBuf,
    master: Component,
    agent: Component,
    marathon: Component,
    // Three signals, so that Marathon stops first (leaving its tasks running), then the agent (killing its tasks
    // and reporting them), then the master.
    stop_marathon: watch::Sender<bool>,
    stop_agent: watch::Sender<bool>,
    stop_master: watch::Sender<bool>,
}

impl LocalCluster {
    /// Binds both ports, then starts the master and the agent (which registers with the master on its own).
    pub async fn start(args: &LocalArgs) -> anyhow::Result<LocalCluster> {
        use clap::Parser;

        std::fs::create_dir_all(&args.work_dir)
            .with_context(|| format!("cannot create the work directory {}", args.work_dir.display()))?;
        let work_dir = args.work_dir.canonicalize().unwrap_or_else(|_| args.work_dir.clone());

        let master_listener = bind(&args.ip, args.master_port, "master").await?;
        let master_addr = master_listener.local_addr().context("cannot read the master's address")?;
        let agent_listener = bind(&args.ip, args.agent_port, "agent").await?;
        let agent_addr = agent_listener.local_addr().context("cannot read the agent's address")?;

        let master_config = agora_master::Flags::try_parse_from(master_argv(args, &work_dir, master_addr.port()))
            .context("invalid master flags")?
            .config()
            .map_err(|e| anyhow!("invalid master configuration: {e}"))?;
        let agent_config =
            agora_agent::Flags::try_parse_from(agent_argv(args, &work_dir, master_addr, agent_addr.port()))
                .context("invalid agent flags")?
                .config()
                .map_err(|e| anyhow!("invalid agent configuration: {e}"))?;

        let (stop_agent, _) = watch::channel(false);
        let (stop_master, _) = watch::channel(false);
        let master_stopped = stopped(&stop_master);
        let master = tokio::spawn(async move {
            agora_master::run(master_config, master_listener, master_stopped).await.map_err(|e| e.to_string())
        });
        let agent_stopped = stopped(&stop_agent);
        let agent = tokio::spawn(async move {
            agora_agent::run(agent_config, agent_listener, agent_stopped).await.map_err(|e| e.to_string())
        });

        // Marathon subscribes to the master like any framework, with its own listener and stop signal.
        let marathon_listener = bind(&args.ip, marathon_port(args), "Marathon").await?;
        let marathon_addr = marathon_listener.local_addr().context("cannot read Marathon's address")?;
        let marathon_config = agora_marathon::server::Config {
            master: master_addr.to_string(),
            work_dir: work_dir.join("marathon"),
            hostname: args.ip.clone(),
            framework_name: "marathon".into(),
            max_running_deployments: agora_marathon::core::MAX_RUNNING_DEPLOYMENTS,
            access_control_allow_origin: Vec::new(),
            event_stream_max_outstanding_messages: agora_marathon::events::BUFFER,
            mesos_role: agora_proto::model::UNRESERVED.into(),
        };
        let (stop_marathon, _) = watch::channel(false);
        let marathon_stopped = stopped(&stop_marathon);
        let marathon = tokio::spawn(async move {
            agora_marathon::server::run(marathon_config, marathon_listener, marathon_stopped)
                .await
                .map_err(|e| e.to_string())
        });

        Ok(LocalCluster {
            master_addr,
            agent_addr,
            marathon_addr,
            work_dir,
            master,
            agent,
            marathon,
            stop_marathon,
            stop_agent,
            stop_master,
        })
    }

    /// Resolves when the master or the agent stops on its own, with a description of why.
    pub async fn failed(&mut self) -> String {
        tokio::select! {
            result = &mut self.master => format!("the master stopped: {}", describe(result)),
            result = &mut self.agent => format!("the agent stopped: {}", describe(result)),
            result = &mut self.marathon => format!("Marathon stopped: {}", describe(result)),
        }
    }

    /// Stops Marathon, then the agent (which kills its tasks), then the master; false when they did not stop
    /// within `grace`.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        let both = async {
            self.stop_marathon.send_replace(true);
            if !self.marathon.is_finished() {
                let _ = (&mut self.marathon).await;
            }
            self.stop_agent.send_replace(true);
            if !self.agent.is_finished() {
                let _ = (&mut self.agent).await;
            }
            self.stop_master.send_replace(true);
            if !self.master.is_finished() {
                let _ = (&mut self.master).await;
            }
        };
        if tokio::time::timeout(grace, both).await.is_ok() {
            return true;
        }
        self.marathon.abort();
        self.agent.abort();
        self.master.abort();
        false
    }
}

/// Runs `agora local` until Ctrl-C or SIGTERM; returns the exit code.
pub async fn local(args: LocalArgs) -> anyhow::Result<i32> {
    let mut cluster = LocalCluster::start(&args).await?;
    println!("master: http://{}", cluster.master_addr);
    println!("agent: http://{}", cluster.agent_addr);
    println!("marathon: http://{}", cluster.marathon_addr);
    println!("marathon UI: http://{}/ui/", cluster.marathon_addr);
    println!("work dir: {}", cluster.work_dir.display());
    println!("try: agora execute --master {} --name hello --command 'echo hello'", cluster.master_addr);
    println!(
        "or:  curl -X POST http://{}/v2/apps -H 'Content-Type: application/json' \\\n       -d '{{\"id\":\"/hello\",\"cmd\":\"python3 -m http.server $PORT0\",\"instances\":2,\"cpus\":0.1,\"mem\":32}}'",
        cluster.marathon_addr
    );
    println!("then: agora app list --marathon {}", cluster.marathon_addr);

    let mut code = 0;
    let shutdown = agora_runtime::shutdown_signal().context("cannot listen for Ctrl-C")?;
    tokio::select! {
        () = shutdown => {
            eprintln!("agora local: stopping");
        }
        why = cluster.failed() => {
            code = 1;
            eprintln!("agora local: {why}");
        }
    }
    if !cluster.shutdown(SHUTDOWN_GRACE).await {
        eprintln!("agora local: did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
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
    fn marathon_gets_8080_or_a_free_port_with_the_master() {
        assert_eq!(marathon_port(&args(&[])), 8080);
        assert_eq!(marathon_port(&args(&["--master-port", "0"])), 0);
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
        assert_eq!(agent.network_bridge, None);
        let a = args(&["--network-bridge", "agora0"]);
        let argv = super::agent_argv(&a, &dir, "127.0.0.1:5050".parse().unwrap(), 5051);
        let agent = agora_agent::Flags::try_parse_from(argv).expect("agent flags");
        assert_eq!(
            (agent.network_bridge.as_deref(), agent.isolation.as_deref()),
            (Some("agora0"), Some("libcontainer"))
        );
    }
}
