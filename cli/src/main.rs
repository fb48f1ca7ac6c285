//! `agora`: the command-line entry point to an Agora cluster.
//!
//! - `agora execute` runs a shell command N times as a one-shot framework (like `mesos-execute`), built on
//!   `agora-framework-sdk`; its exit code says whether every task finished.
//! - `agora local` starts a master (`agora-master`) and an agent (`agora-agent`) in this process, for a cluster
//!   on one machine.
//! - `agora state`, `agora agents`, `agora frameworks`, `agora tasks` and `agora task log` look at a running
//!   cluster through the master's HTTP endpoints (`inspect`).
//! - `agora app`, `agora deployment` and `agora queue` drive Marathon through its `/v2` REST API (`marathon`),
//!   as `dcos marathon ...` did.

mod execute;
mod inspect;
mod local;
mod marathon;

use clap::{Parser, Subcommand};

/// Default log filter: quiet, so that `agora execute`'s status lines stand out; `RUST_LOG` overrides it.
const DEFAULT_LOG_FILTER: &str = "warn";
/// Default log filter of `agora local`, which is a server.
const DEFAULT_LOCAL_LOG_FILTER: &str = "info";

#[derive(Parser, Debug)]
#[command(name = "agora", version, about = "Run tasks on an Agora cluster, or start one locally")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a shell command as tasks and wait for them; exits 0 only if every task finished.
    Execute(execute::ExecuteArgs),
    /// Start a master and an agent in this process until Ctrl-C.
    Local(local::LocalArgs),
    /// The cluster at a glance: leader, uptime, resources, counts (`--json`: all of /master/state).
    State(inspect::Common),
    /// The agents, their state and usage.
    Agents(inspect::Common),
    /// The frameworks, their roles and what they hold.
    Frameworks(inspect::Common),
    /// The active tasks (`--all`: completed ones too).
    Tasks(inspect::TasksArgs),
    /// One task: `agora task log TASK_ID [--stderr] [--follow]`.
    #[command(subcommand)]
    Task(inspect::TaskCommand),
    /// Marathon's apps: list, add, show, update, scale, start, stop, restart, rollback, remove, tasks, kill, versions.
    App(marathon::AppArgs),
    /// Marathon's groups: list, add, show, scale, update, remove.
    Group(marathon::GroupArgs),
    /// Marathon's deployments: list, rollback, stop.
    Deployment(marathon::DeploymentArgs),
    /// Marathon's launch queue: what waits to launch, its delay, and why offers did not fit.
    Queue(marathon::QueueArgs),
}

/// The exit code of a look at the cluster: 0, or the error `main` prints.
fn inspect_exit(result: anyhow::Result<()>) -> anyhow::Result<i32> {
    result.map(|()| execute::EXIT_OK)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Execute(args) => {
            agora_runtime::init_tracing(DEFAULT_LOG_FILTER);
            execute::execute(args).await
        }
        Command::Local(args) => {
            agora_runtime::init_tracing(DEFAULT_LOCAL_LOG_FILTER);
            local::local(args).await
        }
        Command::State(args) => inspect_exit(inspect::state(args).await),
        Command::Agents(args) => inspect_exit(inspect::agents(args).await),
        Command::Frameworks(args) => inspect_exit(inspect::frameworks(args).await),
        Command::Tasks(args) => inspect_exit(inspect::tasks(args).await),
        Command::Task(cmd) => inspect_exit(inspect::task(cmd).await),
        Command::App(args) => inspect_exit(marathon::app(args).await),
        Command::Group(args) => inspect_exit(marathon::group(args).await),
        Command::Deployment(args) => inspect_exit(marathon::deployment(args).await),
        Command::Queue(args) => inspect_exit(marathon::queue(args).await),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agora: {e:#}");
            execute::EXIT_FAILED
        }
    };
    std::process::exit(code);
}
