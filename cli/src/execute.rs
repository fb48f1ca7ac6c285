//! `agora execute`: run N copies of a shell command as a one-shot framework, like `mesos-execute`.
//!
//! The pure part, [`Execution`], decides what to launch on each offer and tracks every task's state; the
//! [`ExecuteScheduler`] glues it to the SDK's driver and prints one line per status update on stdout:
//! `<task id> <STATE>[ <REASON>][ <message>]`.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use agora_framework_sdk::{
    Driver, DriverError, DriverOptions, FrameworkInfo, MasterInfo, Offer, OfferPacker, Reason, Scheduler,
    SchedulerDriver, TaskBuilder, TaskInfo, TaskRequest, TaskState, TaskStatus,
};
use agora_proto::model::{ParseError, parse_duration};
use anyhow::Context;
use clap::Args;

pub const DEFAULT_INSTANCES: usize = 1;
pub const DEFAULT_RESOURCES: &str = "cpus:0.1;mem:32";
pub const DEFAULT_ROLE: &str = "*";
pub const DEFAULT_FRAMEWORK_NAME: &str = "agora-execute";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10secs";
pub const DEFAULT_FAILOVER_TIMEOUT: &str = "1mins";
/// Offers are declined for this long once every task is launched (Mesos's maximum is a year; an hour is plenty
/// for a command that is about to finish).
pub const LONG_REFUSE_SECONDS: f64 = 3600.0;
/// How long after a resubscription the still-running tasks are reconciled.
pub const RECONCILE_DELAY: Duration = Duration::from_secs(5);
/// How long to wait for the TEARDOWN to go out after Ctrl-C.
const TEARDOWN_GRACE: Duration = Duration::from_secs(5);

/// Exit code when every task finished.
pub const EXIT_OK: i32 = 0;
/// Exit code when a task did not finish, or the framework failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code for bad flags (as clap's own usage errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit code after Ctrl-C or SIGTERM.
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Args, Debug, Clone)]
pub struct ExecuteArgs {
    /// The master, as HOST:PORT or http://HOST:PORT, or zk://HOST:PORT[,HOST:PORT]/PATH to follow the leader.
    #[arg(long)]
    pub master: String,
    /// The task name; task ids are NAME-0, NAME-1, ...
    #[arg(long)]
    pub name: String,
    /// The shell command each task runs (with /bin/sh -c).
    #[arg(long)]
    pub command: String,
    /// How many copies to run.
    #[arg(long, default_value_t = DEFAULT_INSTANCES, value_parser = parse_instances)]
    pub instances: usize,
    /// The resources of each task, in Mesos syntax.
    #[arg(long, default_value = DEFAULT_RESOURCES)]
    pub resources: String,
    /// How many ports each task gets from the offer's `ports`; they are passed as $PORT0, $PORT1, ... ($PORT is
    /// $PORT0).
    #[arg(long, default_value_t = 0)]
    pub ports: usize,
    /// The role the framework subscribes with.
    #[arg(long, default_value = DEFAULT_ROLE)]
    pub role: String,
    /// The framework's name.
    #[arg(long, default_value = DEFAULT_FRAMEWORK_NAME)]
    pub framework_name: String,
    /// Ask agents to checkpoint the framework's tasks (they survive an agent restart).
    #[arg(long)]
    pub checkpoint: bool,
    /// Kill each task this long after it reaches TASK_RUNNING (e.g. 10secs, 2mins).
    #[arg(long)]
    pub kill_after: Option<String>,
    /// Give up when the master cannot be reached for this long at start.
    #[arg(long, default_value = DEFAULT_CONNECT_TIMEOUT)]
    pub connect_timeout: String,
    /// How long the master keeps the tasks when this command loses its connection.
    #[arg(long, default_value = DEFAULT_FAILOVER_TIMEOUT)]
    pub failover_timeout: String,
}

fn parse_instances(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{text}' is not a positive number of instances")),
    }
}

/// A usage error: the message, printed before exiting with [`EXIT_USAGE`].
#[derive(Debug, PartialEq)]
pub struct UsageError(pub String);

/// The validated form of [`ExecuteArgs`].
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub command: String,
    pub instances: usize,
    pub request: TaskRequest,
    pub role: String,
    pub kill_after: Option<Duration>,
    pub connect_timeout: Duration,
    pub failover_timeout: Duration,
}

impl ExecuteArgs {
    pub fn plan(&self) -> Result<Plan, UsageError> {
        if self.name.is_empty() || self.name.chars().any(|c| c.is_whitespace() || c == '/' || c.is_control()) {
            return Err(UsageError(format!(
                "invalid --name '{}': use a non-empty name without spaces or '/'",
                self.name
            )));
        }
        let resources = TaskRequest::parse(&self.resources)
            .map_err(|errors| UsageError(format!("invalid --resources '{}': {}", self.resources, describe(&errors))))?;
        let duration =
            |flag: &str, text: &str| parse_duration(text).map_err(|e| UsageError(format!("invalid --{flag}: {e}")));
        Ok(Plan {
            name: self.name.clone(),
            command: self.command.clone(),
            instances: self.instances,
            request: resources.with_ports(self.ports),
            role: self.role.clone(),
            kill_after: self.kill_after.as_deref().map(|t| duration("kill-after", t)).transpose()?,
            connect_timeout: duration("connect-timeout", &self.connect_timeout)?,
            failover_timeout: duration("failover-timeout", &self.failover_timeout)?,
        })
    }

    fn framework(&self, plan: &Plan) -> FrameworkInfo {
        let mut framework = FrameworkInfo::new(self.framework_name.clone());
        framework.roles = vec![plan.role.clone()];
        framework.checkpoint = self.checkpoint;
        framework.failover_timeout = plan.failover_timeout.as_secs_f64();
        framework
    }
}

fn describe(errors: &[ParseError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// What to do with one offer.
#[derive(Debug, Clone, PartialEq)]
pub enum OfferDecision {
    /// Launch these tasks; what they leave unused is refused for `refuse_seconds` (`None`: the default).
    Launch {
        tasks: Vec<TaskInfo>,
        refuse_seconds: Option<f64>,
    },
    Decline {
        refuse_seconds: Option<f64>,
    },
}

#[derive(Debug, Clone)]
struct Slot {
    id: String,
    agent_id: Option<String>,
    state: Option<TaskState>,
    launched: bool,
    /// The last line printed, to skip redelivered duplicates (updates are delivered at least once).
    last_line: Option<String>,
}

/// The tasks of one `agora execute` run and their states; no I/O.
#[derive(Debug, Clone)]
pub struct Execution {
    command: String,
    name: String,
    request: TaskRequest,
    slots: Vec<Slot>,
}

/// What [`Execution::record`] made of a status update.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The line to print, if any.
    pub line: Option<String>,
    /// The task was refused because its offer was no longer valid; it waits for another offer.
    pub requeued: bool,
}

impl Execution {
    pub fn new(plan: &Plan) -> Execution {
        let slots = (0..plan.instances)
            .map(|i| Slot {
                id: format!("{}-{i}", plan.name),
                agent_id: None,
                state: None,
                launched: false,
                last_line: None,
            })
            .collect();
        Execution { command: plan.command.clone(), name: plan.name.clone(), request: plan.request.clone(), slots }
    }

    /// What one task asks for, e.g. `cpus:0.1;mem:32 and 2 ports`.
    pub fn request_text(&self) -> String {
        match self.request.ports {
            0 => self.request.resources.to_string(),
            1 => format!("{} and 1 port", self.request.resources),
            n => format!("{} and {n} ports", self.request.resources),
        }
    }

    pub fn all_launched(&self) -> bool {
        self.slots.iter().all(|s| s.launched)
    }

    /// Packs as many not-yet-launched tasks into `offer` as fit.
    pub fn decide(&mut self, offer: &Offer) -> OfferDecision {
        if self.all_launched() {
            return OfferDecision::Decline { refuse_seconds: Some(LONG_REFUSE_SECONDS) };
        }
        let mut packer = OfferPacker::new(offer);
        let mut tasks = Vec::new();
        while let Some(index) = self.slots.iter().position(|s| !s.launched) {
            let Some(resources) = packer.take(&self.request) else { break };
            let slot = &mut self.slots[index];
            slot.launched = true;
            slot.agent_id = Some(offer.agent_id.clone());
            let ports: Vec<u64> = resources.ranges(agora_framework_sdk::PORTS).values().collect();
            let mut task = TaskBuilder::new(slot.id.clone(), self.name.clone())
                .agent(offer.agent_id.clone())
                .resources(resources)
                .shell(self.command.clone());
            if let Some(first) = ports.first() {
                task = task.env("PORT", first.to_string());
            }
            for (i, port) in ports.iter().enumerate() {
                task = task.env(format!("PORT{i}"), port.to_string());
            }
            tasks.push(task.build());
        }
        if tasks.is_empty() {
            return OfferDecision::Decline { refuse_seconds: None };
        }
        let refuse_seconds = self.all_launched().then_some(LONG_REFUSE_SECONDS);
        OfferDecision::Launch { tasks, refuse_seconds }
    }

    /// Records `status`. Prints nothing for an unknown task or a reconciliation update that repeats the known
    /// state. A task refused because its offer was no longer valid (REASON_INVALID_OFFERS: it never ran) goes
    /// back to wait for another offer.
    pub fn record(&mut self, status: &TaskStatus) -> Recorded {
        let Some(slot) = self.slots.iter_mut().find(|s| s.id == status.task_id) else {
            return Recorded { line: None, requeued: false };
        };
        let settled = slot.state.is_some_and(TaskState::is_terminal);
        if status.reason == Some(Reason::Reconciliation) && (slot.state == Some(status.state) || settled) {
            return Recorded { line: None, requeued: false };
        }
        let text = status_line(status);
        if slot.last_line.as_deref() == Some(text.as_str()) {
            return Recorded { line: None, requeued: false };
        }
        let line = Some(text.clone());
        if status.state.is_terminal() && status.reason == Some(Reason::InvalidOffers) && slot.state.is_none() {
            *slot = Slot { id: slot.id.clone(), agent_id: None, state: None, launched: false, last_line: None };
            return Recorded { line, requeued: true };
        }
        slot.last_line = Some(text);
        slot.state = Some(status.state);
        if !status.agent_id.is_empty() {
            slot.agent_id = Some(status.agent_id.clone());
        }
        Recorded { line, requeued: false }
    }

    pub fn all_terminal(&self) -> bool {
        self.slots.iter().all(|s| s.state.is_some_and(TaskState::is_terminal))
    }

    /// 0 if and only if every task reached TASK_FINISHED.
    pub fn exit_code(&self) -> i32 {
        if self.slots.iter().all(|s| s.state == Some(TaskState::Finished)) { EXIT_OK } else { EXIT_FAILED }
    }

    /// Launched tasks that are not terminal yet, with their agents, for explicit reconciliation.
    pub fn unsettled(&self) -> Vec<(String, String)> {
        self.slots
            .iter()
            .filter(|s| s.launched && !s.state.is_some_and(TaskState::is_terminal))
            .map(|s| (s.id.clone(), s.agent_id.clone().unwrap_or_default()))
            .collect()
    }

    /// `NAME-i STATE` for every task, for the summary printed on interruption.
    pub fn summary(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| format!("{} {}", s.id, s.state.map(TaskState::name).unwrap_or("(not launched)")))
            .collect()
    }
}

/// `<task id> <STATE>[ <REASON>][ <message>]`, on one line.
pub fn status_line(status: &TaskStatus) -> String {
    let mut line = format!("{} {}", status.task_id, status.state);
    if let Some(reason) = status.reason {
        line.push(' ');
        line.push_str(&reason.name());
    }
    let message = status.message.split_whitespace().collect::<Vec<_>>().join(" ");
    if !message.is_empty() {
        line.push(' ');
        line.push_str(&message);
    }
    line
}

/// Writes a line to stdout; a closed stdout is not worth a panic.
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "agora execute: {line}");
}

/// The framework: launches the tasks of an [`Execution`] and tears down once all are terminal.
pub struct ExecuteScheduler {
    pub execution: Execution,
    kill_after: Option<Duration>,
    kill_timers: HashSet<String>,
    /// Agents whose offers were too small for a task, already reported once.
    too_small: HashSet<String>,
    suppressed: bool,
    subscriptions: usize,
    pub error: Option<String>,
}

impl ExecuteScheduler {
    pub fn new(plan: &Plan) -> ExecuteScheduler {
        ExecuteScheduler {
            execution: Execution::new(plan),
            kill_after: plan.kill_after,
            kill_timers: HashSet::new(),
            too_small: HashSet::new(),
            suppressed: false,
            subscriptions: 0,
            error: None,
        }
    }
}

impl Scheduler for ExecuteScheduler {
    fn subscribed(&mut self, driver: &SchedulerDriver, framework_id: &str, master: &MasterInfo) {
        self.subscriptions += 1;
        if self.subscriptions == 1 {
            note(&format!("subscribed as framework {framework_id} to master {}", master.id));
        } else {
            note(&format!("resubscribed as framework {framework_id}"));
            // Ask about our tasks once agents have had time to re-register with a master that failed over: a
            // master that does not know a task yet answers TASK_LOST.
            let unsettled = self.execution.unsettled();
            if !unsettled.is_empty() {
                let driver = driver.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RECONCILE_DELAY).await;
                    driver.reconcile(unsettled);
                });
            }
        }
    }

    fn offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            match self.execution.decide(&offer) {
                OfferDecision::Launch { tasks, refuse_seconds } => {
                    for task in &tasks {
                        tracing::info!(task_id = %task.task_id, agent_id = %task.agent_id, offer_id = %offer.id, "launching");
                    }
                    driver.accept(vec![offer.id.clone()], tasks, refuse_seconds);
                }
                OfferDecision::Decline { refuse_seconds } => {
                    if !self.execution.all_launched() && self.too_small.insert(offer.agent_id.clone()) {
                        note(&format!(
                            "waiting: agent {} ({}) offers {}, too little for a task of {}",
                            offer.agent_id,
                            offer.hostname,
                            offer.resources,
                            self.execution.request_text()
                        ));
                    }
                    driver.decline(&offer.id, refuse_seconds);
                }
            }
        }
        if self.execution.all_launched() && !self.suppressed {
            driver.suppress(vec![]);
            self.suppressed = true;
        }
    }

    fn update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        let recorded = self.execution.record(status);
        if let Some(line) = &recorded.line {
            out(line);
        }
        if recorded.requeued && self.suppressed {
            driver.revive(vec![]);
            self.suppressed = false;
        }
        if status.state == TaskState::Running
            && let Some(delay) = self.kill_after
            && self.kill_timers.insert(status.task_id.clone())
        {
            let (driver, task_id, agent_id) = (driver.clone(), status.task_id.clone(), status.agent_id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                tracing::info!(task_id, "killing after --kill-after");
                driver.kill(&task_id, &agent_id);
            });
        }
        if self.execution.all_terminal() {
            driver.teardown();
        }
    }

    fn failure(&mut self, _driver: &SchedulerDriver, agent_id: &str) {
        note(&format!("agent {agent_id} was lost"));
    }

    fn error(&mut self, _driver: &SchedulerDriver, message: &str) {
        self.error = Some(message.to_string());
    }

    fn disconnected(&mut self, _driver: &SchedulerDriver) {
        note("lost the connection to the master; resubscribing");
    }
}

/// Runs `agora execute`; returns the process's exit code.
pub async fn execute(args: ExecuteArgs) -> anyhow::Result<i32> {
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(UsageError(message)) => {
            note(&message);
            return Ok(EXIT_USAGE);
        }
    };
    let options = DriverOptions { connect_timeout: Some(plan.connect_timeout), ..DriverOptions::default() };
    let driver = match Driver::new(&args.master, args.framework(&plan), options) {
        Ok(driver) => driver,
        Err(e) => {
            note(&e.to_string());
            return Ok(EXIT_USAGE);
        }
    };
    let handle = driver.handle();
    let shutdown = agora_runtime::shutdown_signal().context("cannot listen for Ctrl-C")?;
    let run = driver.run(ExecuteScheduler::new(&plan));
    tokio::pin!(run);
    let result = tokio::select! {
        result = &mut run => result,
        () = shutdown => {
            note("interrupted; tearing the framework down");
            handle.teardown();
            match tokio::time::timeout(TEARDOWN_GRACE, &mut run).await {
                Ok(Ok(scheduler)) => scheduler.execution.summary().iter().for_each(|l| note(l)),
                Ok(Err(e)) => note(&e.to_string()),
                Err(_) => note("the master did not answer the TEARDOWN in time"),
            }
            return Ok(EXIT_INTERRUPTED);
        }
    };
    match result {
        Ok(scheduler) => Ok(scheduler.execution.exit_code()),
        Err(e @ DriverError::InvalidMaster { .. }) => {
            note(&e.to_string());
            Ok(EXIT_USAGE)
        }
        Err(e) => {
            note(&e.to_string());
            Ok(EXIT_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_framework_sdk::Resources;
    use agora_proto::model::Source;

    use super::*;

    fn args(extra: &[&str]) -> ExecuteArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            execute: ExecuteArgs,
        }
        let base = ["agora-execute", "--master", "127.0.0.1:5050", "--name", "sleep", "--command", "sleep 1"];
        Cli::try_parse_from(base.iter().chain(extra)).expect("flags parse").execute
    }

    fn plan(extra: &[&str]) -> Plan {
        args(extra).plan().expect("valid plan")
    }

    fn offer(id: &str, agent: &str, resources: &str) -> Offer {
        Offer {
            id: id.into(),
            framework_id: "fw".into(),
            agent_id: agent.into(),
            hostname: "h".into(),
            resources: resources.parse().expect("resources"),
            attributes: Default::default(),
            role: "*".into(),
            url: String::new(),
        }
    }

    fn status(task_id: &str, state: TaskState, reason: Option<Reason>, message: &str) -> TaskStatus {
        TaskStatus {
            task_id: task_id.into(),
            state,
            reason,
            source: Source::Executor,
            message: message.into(),
            uuid: Some(vec![1]),
            timestamp: 0.0,
            healthy: None,
            agent_id: "a1".into(),
            unreachable_time: None,
            container_status: None,
        }
    }

    fn line(e: &mut Execution, s: TaskStatus) -> Option<String> {
        e.record(&s).line
    }

    fn launched(decision: OfferDecision) -> (Vec<String>, Option<f64>) {
        match decision {
            OfferDecision::Launch { tasks, refuse_seconds } => {
                (tasks.into_iter().map(|t| t.task_id).collect(), refuse_seconds)
            }
            other => panic!("expected a launch, got {other:?}"),
        }
    }

    /// Runs `agora execute` with `extra` flags against `master`; returns the exit code and the final states.
    async fn execute_against(master: &str, command: &str, extra: &[&str]) -> (i32, Vec<String>) {
        let mut a = args(extra);
        a.master = master.to_string();
        a.command = command.to_string();
        let plan = a.plan().expect("valid plan");
        let options = DriverOptions { connect_timeout: Some(Duration::from_secs(10)), ..DriverOptions::default() };
        let driver = Driver::new(&a.master, a.framework(&plan), options).expect("driver");
        let run = driver.run(ExecuteScheduler::new(&plan));
        let scheduler = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("execute did not finish in time")
            .expect("driver failed");
        (scheduler.execution.exit_code(), scheduler.execution.summary())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn executes_on_an_in_process_cluster() {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = crate::local::LocalArgs {
            work_dir: dir.path().to_path_buf(),
            ip: "127.0.0.1".into(),
            master_port: 0,
            agent_port: 0,
            resources: Some("cpus:1;mem:512;disk:512;ports:[41000-41010]".into()),
            network_bridge: None,
        };
        let cluster = crate::local::LocalCluster::start(&local).await.expect("local cluster");
        let master = cluster.master_addr.to_string();

        // Four tasks of 0.25 cpus fill the agent's one cpu: all pack into one offer.
        let flags = ["--instances", "4", "--resources", "cpus:0.25;mem:32", "--ports", "1"];
        let (code, states) = execute_against(&master, "test \"$PORT\" -ge 41000", &flags).await;
        assert_eq!(code, EXIT_OK, "{states:?}");
        assert_eq!(states, ["sleep-0", "sleep-1", "sleep-2", "sleep-3"].map(|t| format!("{t} TASK_FINISHED")));

        let (code, states) = execute_against(&master, "exit 3", &["--instances", "2"]).await;
        assert_eq!(code, EXIT_FAILED);
        assert_eq!(states, ["sleep-0 TASK_FAILED", "sleep-1 TASK_FAILED"]);

        let (code, states) = execute_against(&master, "sleep 30", &["--kill-after", "200ms"]).await;
        assert_eq!(code, EXIT_FAILED);
        assert_eq!(states, ["sleep-0 TASK_KILLED"]);

        assert!(cluster.shutdown(Duration::from_secs(20)).await, "cluster stops cleanly");
    }

    #[test]
    fn defaults_match_mesos_execute() {
        let p = plan(&[]);
        assert_eq!(p.instances, 1);
        assert_eq!(p.request.resources, "cpus:0.1;mem:32".parse::<Resources>().unwrap());
        assert_eq!(p.role, "*");
        assert_eq!(p.kill_after, None);
        assert_eq!(p.connect_timeout, Duration::from_secs(10));
        let a = args(&[]);
        let f = a.framework(&p);
        assert_eq!(f.name, "agora-execute");
        assert!(!f.checkpoint);
    }

    #[test]
    fn bad_resources_name_the_item() {
        let err = args(&["--resources", "cpus:0.1;mem:lots"]).plan().unwrap_err();
        assert!(err.0.contains("mem:lots"), "{}", err.0);
        assert!(args(&["--kill-after", "soon"]).plan().unwrap_err().0.contains("--kill-after"));
        let mut spaced = args(&[]);
        spaced.name = "a b".into();
        assert!(spaced.plan().unwrap_err().0.contains("--name"));
    }

    #[test]
    fn zero_instances_is_a_usage_error() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            execute: ExecuteArgs,
        }
        let err = Cli::try_parse_from(["x", "--master", "m:1", "--name", "n", "--command", "c", "--instances", "0"]);
        assert!(err.is_err());
    }

    #[test]
    fn packs_several_tasks_per_offer_and_uses_long_filter_when_done() {
        let mut e = Execution::new(&plan(&["--instances", "5", "--resources", "cpus:0.5;mem:32"]));
        let (ids, refuse) = launched(e.decide(&offer("o1", "a1", "cpus:1;mem:1024")));
        assert_eq!(ids, vec!["sleep-0", "sleep-1"]);
        assert_eq!(refuse, None, "more tasks to launch: default filter");
        assert_eq!(e.decide(&offer("o2", "a2", "cpus:0.2;mem:1024")), OfferDecision::Decline { refuse_seconds: None });
        let (ids, refuse) = launched(e.decide(&offer("o3", "a3", "cpus:4;mem:1024")));
        assert_eq!(ids, vec!["sleep-2", "sleep-3", "sleep-4"]);
        assert_eq!(refuse, Some(LONG_REFUSE_SECONDS));
        assert!(e.all_launched());
        assert_eq!(
            e.decide(&offer("o4", "a1", "cpus:4;mem:1024")),
            OfferDecision::Decline { refuse_seconds: Some(LONG_REFUSE_SECONDS) }
        );
    }

    #[test]
    fn launched_tasks_carry_command_agent_and_ports() {
        let mut e = Execution::new(&plan(&["--ports", "2"]));
        let OfferDecision::Launch { tasks, .. } = e.decide(&offer("o1", "a1", "cpus:1;mem:64;ports:[31000-31005]"))
        else {
            panic!("expected a launch")
        };
        assert_eq!(e.request_text(), "cpus:0.1;mem:32 and 2 ports");
        let t = &tasks[0];
        assert_eq!(t.agent_id, "a1");
        let command = t.command.as_ref().unwrap();
        assert_eq!(command.value, "sleep 1");
        assert!(command.shell);
        assert_eq!(t.resources, "cpus:0.1;mem:32;ports:[31000-31001]".parse::<Resources>().unwrap());
        assert!(command.environment.contains(&("PORT".into(), "31000".into())));
        assert!(command.environment.contains(&("PORT1".into(), "31001".into())));
    }

    #[test]
    fn exit_code_is_zero_only_when_every_task_finished() {
        let mut e = Execution::new(&plan(&["--instances", "2"]));
        launched(e.decide(&offer("o1", "a1", "cpus:1;mem:128")));
        assert_eq!(
            line(&mut e, status("sleep-0", TaskState::Running, None, "")).as_deref(),
            Some("sleep-0 TASK_RUNNING")
        );
        assert!(!e.all_terminal());
        e.record(&status("sleep-0", TaskState::Finished, None, ""));
        assert!(!e.all_terminal());
        assert_eq!(e.unsettled(), vec![("sleep-1".to_string(), "a1".to_string())]);
        e.record(&status("sleep-1", TaskState::Finished, None, ""));
        assert!(e.all_terminal());
        assert_eq!(e.exit_code(), EXIT_OK);

        let mut e = Execution::new(&plan(&["--instances", "2"]));
        launched(e.decide(&offer("o1", "a1", "cpus:1;mem:128")));
        e.record(&status("sleep-0", TaskState::Finished, None, ""));
        e.record(&status("sleep-1", TaskState::Failed, Some(Reason::CommandExecutorFailed), "exit 3"));
        assert!(e.all_terminal());
        assert_eq!(e.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn not_launched_tasks_are_not_terminal() {
        let mut e = Execution::new(&plan(&["--instances", "2"]));
        assert!(!e.all_terminal());
        assert_eq!(e.exit_code(), EXIT_FAILED);
        launched(e.decide(&offer("o1", "a1", "cpus:0.1;mem:32")));
        e.record(&status("sleep-0", TaskState::Finished, None, ""));
        assert!(!e.all_terminal());
    }

    #[test]
    fn status_lines_have_state_reason_and_message() {
        let s =
            status("bad-0", TaskState::Failed, Some(Reason::CommandExecutorFailed), "Command exited with status 3\n");
        assert_eq!(status_line(&s), "bad-0 TASK_FAILED REASON_COMMAND_EXECUTOR_FAILED Command exited with status 3");
        assert_eq!(status_line(&status("x-1", TaskState::Killed, None, "")), "x-1 TASK_KILLED");
        assert_eq!(status_line(&status("x-1", TaskState::Error, None, "bad  \n task")), "x-1 TASK_ERROR bad task");
    }

    #[test]
    fn unknown_tasks_and_repeated_reconciliation_are_not_printed() {
        let mut e = Execution::new(&plan(&[]));
        launched(e.decide(&offer("o1", "a1", "cpus:1;mem:128")));
        assert_eq!(line(&mut e, status("other-0", TaskState::Running, None, "")), None);
        assert!(line(&mut e, status("sleep-0", TaskState::Running, None, "")).is_some());
        assert_eq!(line(&mut e, status("sleep-0", TaskState::Running, None, "")), None, "a redelivered duplicate");
        assert_eq!(line(&mut e, status("sleep-0", TaskState::Running, Some(Reason::Reconciliation), "")), None);
        assert!(line(&mut e, status("sleep-0", TaskState::Finished, None, "")).is_some());
        // Once a task is terminal, reconciliation answers about it change nothing.
        assert_eq!(line(&mut e, status("sleep-0", TaskState::Lost, Some(Reason::Reconciliation), "")), None);
        assert_eq!(e.exit_code(), EXIT_OK);
    }

    #[test]
    fn tasks_dropped_for_invalid_offers_wait_for_another_offer() {
        let mut e = Execution::new(&plan(&["--instances", "2"]));
        launched(e.decide(&offer("o1", "a1", "cpus:1;mem:128")));
        let dropped = status("sleep-1", TaskState::Dropped, Some(Reason::InvalidOffers), "offer o1 is no longer valid");
        let recorded = e.record(&dropped);
        assert!(recorded.requeued);
        assert_eq!(
            recorded.line.as_deref(),
            Some("sleep-1 TASK_DROPPED REASON_INVALID_OFFERS offer o1 is no longer valid")
        );
        assert!(!e.all_launched());
        assert_eq!(e.unsettled(), vec![("sleep-0".to_string(), "a1".to_string())]);
        let (ids, refuse) = launched(e.decide(&offer("o2", "a2", "cpus:1;mem:128")));
        assert_eq!(ids, vec!["sleep-1"]);
        assert_eq!(refuse, Some(LONG_REFUSE_SECONDS));
    }

    #[test]
    fn launch_failures_are_terminal_and_fail_the_run() {
        let mut e = Execution::new(&plan(&[]));
        launched(e.decide(&offer("o1", "a1", "cpus:1;mem:128")));
        let printed = line(&mut e, status("sleep-0", TaskState::Error, Some(Reason::TaskInvalid), "no such agent"));
        assert_eq!(printed.as_deref(), Some("sleep-0 TASK_ERROR REASON_TASK_INVALID no such agent"));
        assert!(e.all_terminal());
        assert_eq!(e.exit_code(), EXIT_FAILED);
    }
}
