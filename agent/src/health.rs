//! Task health checks, run by the agent beside each task as Mesos's executors run them (`docs/health-checks.md`).
//!
//! [`Checker`] is the pure state machine, a copy of the rules of Mesos's `HealthCheckerProcess`: the first check
//! `delay_seconds` after the task started running, then one every `interval_seconds`; a check that takes longer than
//! `timeout_seconds` failed; failures within `grace_period_seconds` of the start are ignored until the first success;
//! a report goes out on the first success, on the first success after failures and on every counted failure; after
//! `consecutive_failures` of them the report asks for the task to be killed. Time is passed in.
//!
//! An HTTP answer passes with a status in 200-399 (or in the check's `statuses`); with Marathon's `ignoreHttp1xx` a
//! 1xx answer is ignored — neither a success nor a failure, the checker keeps its state — as Marathon's
//! `HealthCheckWorker` ignores it ([`http_verdict`], pure).
//!
//! The shell ([`run`]) is one tokio task per checked task: it sleeps until the checker's next check, runs the probe
//! (HTTP and HTTPS `GET` through `curl` as Mesos's checker does — certificates are not verified — on `127.0.0.1`, or
//! `[::1]` for an IPv6 check, as tasks on the host's network share it, or on the task's own address when it is on a
//! container network; TCP connect; or a command in the task's container
//! through [`Containerizer::check_command`]) and hands each report to the agent's event loop, which turns it into a
//! status update (and a kill) in [`crate::core`].

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::model::{CommandInfo, HealthCheck, HealthCheckType, IpProtocol};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use crate::containerizer::Containerizer;
use crate::status_updates::TaskKey;

/// Mesos's default interval, used when a check asks for none (0 on the wire).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Mesos's default timeout, used when a check asks for none (0 on the wire).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of a failed command check's output a report quotes.
const OUTPUT_TAIL: usize = 200;

/// The timing rules of one check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive counted failures after which the task is killed (0: the first one).
    pub consecutive_failures: u32,
    pub grace: Duration,
}

impl Policy {
    pub fn of(check: &HealthCheck) -> Policy {
        let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default();
        let or = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
        Policy {
            delay: secs(check.delay_seconds),
            interval: or(secs(check.interval_seconds), DEFAULT_INTERVAL),
            timeout: or(secs(check.timeout_seconds), DEFAULT_TIMEOUT),
            consecutive_failures: check.consecutive_failures,
            grace: secs(check.grace_period_seconds),
        }
    }
}

/// What the agent tells the framework after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub healthy: bool,
    pub consecutive_failures: u32,
    /// The failures reached the limit: kill the task.
    pub kill: bool,
    /// Why the check failed, naming it (empty for a success).
    pub message: String,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Why it failed.
    Failed(String),
    /// An answer that counts neither way (a 1xx with `ignoreHttp1xx`): the checker keeps its state.
    Ignored,
}

impl<E: std::fmt::Display> From<Result<(), E>> for Outcome {
    fn from(r: Result<(), E>) -> Outcome {
        match r {
            Ok(()) => Outcome::Passed,
            Err(cause) => Outcome::Failed(cause.to_string()),
        }
    }
}

/// `command exited with status 3: <stderr tail>` or `command was killed by a signal`.
fn command_failed(code: Option<i32>, output: &str) -> String {
    let how = match code {
        Some(code) => format!("command exited with status {code}"),
        None => "command was killed by a signal".to_string(),
    };
    if output.is_empty() { how } else { format!("{how}: {output}") }
}

/// Why one check failed (the task's health message).
#[derive(Debug, thiserror::Error)]
enum CheckFailed {
    #[error("no valid port to check (port {0})")]
    NoPort(u32),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start the check command: {0}")]
    Start(#[source] std::io::Error),
    #[error("cannot wait for the check command: {0}")]
    Wait(#[source] std::io::Error),
    /// A non-zero exit or a signal, with the end of what the command wrote on stderr.
    #[error("{}", command_failed(*code, output))]
    Command { code: Option<i32>, output: String },
    #[error("cannot run curl for an HTTP health check ({0}); install curl on the agent (apt-get install curl)")]
    NoCurl(#[source] std::io::Error),
    #[error("GET {url}: {stderr}")]
    Get { url: String, stderr: String },
}

/// The state of one task's health checking.
#[derive(Debug, Clone)]
pub struct Checker {
    policy: Policy,
    /// What the reports call the check: `HTTP health check`, `COMMAND health check`, ...
    name: String,
    started: Instant,
    next: Instant,
    /// No success yet: failures within the grace period do not count.
    initializing: bool,
    consecutive_failures: u32,
}

impl Checker {
    pub fn new(policy: Policy, name: impl Into<String>, now: Instant) -> Checker {
        Checker {
            policy,
            name: name.into(),
            started: now,
            next: now + policy.delay,
            initializing: true,
            consecutive_failures: 0,
        }
    }

    /// When the next check is due.
    pub fn next_check(&self) -> Instant {
        self.next
    }

    pub fn timeout(&self) -> Duration {
        self.policy.timeout
    }

    /// A check that began at `began` ended at `now` with `outcome`; schedules the next one and says what to report.
    /// A check that took longer than the timeout failed, whatever it answered; an ignored answer changes nothing.
    pub fn finished(&mut self, began: Instant, outcome: impl Into<Outcome>, now: Instant) -> Option<Report> {
        self.next = now + self.policy.interval;
        let took = now.saturating_duration_since(began);
        let outcome = if took > self.policy.timeout {
            Outcome::Failed(format!("timed out after {:?}", self.policy.timeout))
        } else {
            outcome.into()
        };
        match outcome {
            Outcome::Ignored => None,
            Outcome::Passed => {
                let report = (self.initializing || self.consecutive_failures > 0).then(|| Report {
                    healthy: true,
                    consecutive_failures: 0,
                    kill: false,
                    message: String::new(),
                });
                self.initializing = false;
                self.consecutive_failures = 0;
                report
            }
            Outcome::Failed(_)
                if self.initializing && now.saturating_duration_since(self.started) <= self.policy.grace =>
            {
                None
            }
            Outcome::Failed(cause) => {
                self.consecutive_failures += 1;
                let kill = self.consecutive_failures >= self.policy.consecutive_failures;
                let n = self.consecutive_failures;
                let times = if n == 1 { "once".to_string() } else { format!("{n} times consecutively") };
                Some(Report {
                    healthy: false,
                    consecutive_failures: n,
                    kill,
                    message: format!("{} failed {times}: {cause}", self.name),
                })
            }
        }
    }
}

/// What the shell needs to check one task.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub task: TaskKey,
    pub container_id: String,
    pub check: HealthCheck,
    /// The task's environment (a COMMAND check runs with it and its own variables).
    pub env: Vec<(String, String)>,
    pub sandbox: PathBuf,
    /// The task's own address on a container network, which HTTP and TCP checks reach instead of loopback.
    pub host: Option<std::net::IpAddr>,
}

/// `HTTP health check`, `HTTPS health check`, `TCP health check`, `COMMAND health check`.
pub fn check_name(check: &HealthCheck) -> String {
    let kind = match check.kind {
        HealthCheckType::Http if check.scheme.as_deref() == Some("https") => "HTTPS",
        HealthCheckType::Http => "HTTP",
        HealthCheckType::Tcp => "TCP",
        HealthCheckType::Command => "COMMAND",
    };
    format!("{kind} health check")
}

/// Checks one task until aborted (the agent aborts it when the task is killed or ends), handing every report to
/// `report`. Returns after a report that asks for a kill: checking is over then.
pub async fn run<C: Containerizer>(
    spec: CheckSpec,
    containerizer: Arc<C>,
    started: Instant,
    report: impl Fn(Report) + Send + 'static,
) {
    let mut checker = Checker::new(Policy::of(&spec.check), check_name(&spec.check), started);
    loop {
        tokio::time::sleep_until(tokio::time::Instant::from_std(checker.next_check())).await;
        let began = Instant::now();
        let probe = probe(&spec, containerizer.as_ref(), checker.timeout());
        let outcome = match tokio::time::timeout(checker.timeout(), probe).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed(format!("timed out after {:?}", checker.timeout())),
        };
        if let Some(r) = checker.finished(began, outcome, Instant::now()) {
            let kill = r.kill;
            report(r);
            if kill {
                return;
            }
        }
    }
}

async fn probe<C: Containerizer>(spec: &CheckSpec, containerizer: &C, timeout: Duration) -> Outcome {
    let check = &spec.check;
    let port = || match check.port {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        other => Err(CheckFailed::NoPort(other.unwrap_or_default())),
    };
    let host = spec.host.unwrap_or_else(|| check.ip_protocol.loopback());
    match check.kind {
        HealthCheckType::Tcp => {
            let port = match port() {
                Ok(p) => p,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let addr = std::net::SocketAddr::new(host, port);
            tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|source| CheckFailed::Connect { addr, source })
                .into()
        }
        HealthCheckType::Http => {
            let url = match port() {
                Ok(port) => check_url(check, spec.host, port),
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            match curl_status(&url, timeout).await {
                Ok(status) => http_verdict(status, &check.statuses, check.ignore_http1xx, &url),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        HealthCheckType::Command => {
            let Some(command) = check.command.as_ref() else {
                return Outcome::Failed("COMMAND health check without a command".into());
            };
            let env = command_env(&spec.env, command);
            match containerizer.check_command(&spec.container_id, command, &env, &spec.sandbox) {
                Ok(cmd) => run_command(cmd).await.into(),
                Err(e) => Outcome::Failed(format!("cannot run the check command: {e}")),
            }
        }
    }
}

/// `http(s)://127.0.0.1:<port><path>`, or `[::1]` for an IPv6 check, or the task's own address on a container
/// network.
pub fn check_url(check: &HealthCheck, host: Option<std::net::IpAddr>, port: u16) -> String {
    let path = check.path.clone().unwrap_or_else(|| "/".to_string());
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    let scheme = if check.scheme.as_deref() == Some("https") { "https" } else { "http" };
    let host = match (host, check.ip_protocol) {
        (Some(std::net::IpAddr::V6(ip)), _) => format!("[{ip}]"),
        (Some(ip), _) => ip.to_string(),
        (None, IpProtocol::V4) => "127.0.0.1".to_string(),
        (None, IpProtocol::V6) => "[::1]".to_string(),
    };
    format!("{scheme}://{host}:{port}{path}")
}

/// What an HTTP answer means: `statuses` if the check names some, else 200-399 passes; with `ignore_1xx` a 1xx
/// answer that is not among the passing ones is ignored (Marathon's `ignoreHttp1xx`). Pure.
pub fn http_verdict(status: u16, statuses: &[u32], ignore_1xx: bool, url: &str) -> Outcome {
    let passed = if statuses.is_empty() { (200..400).contains(&status) } else { statuses.contains(&u32::from(status)) };
    if passed {
        Outcome::Passed
    } else if ignore_1xx && (100..200).contains(&status) {
        Outcome::Ignored
    } else {
        Outcome::Failed(format!("GET {url} answered {status}"))
    }
}

/// The task's environment with the check command's own variables over it.
fn command_env(task_env: &[(String, String)], command: &CommandInfo) -> Vec<(String, String)> {
    let mut env = task_env.to_vec();
    for (k, v) in &command.environment {
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// Kills a check command's whole process group when the check ends or is abandoned (timed out, task gone).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

async fn run_command(mut cmd: tokio::process::Command) -> Result<(), CheckFailed> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(CheckFailed::Start)?;
    let _guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    let mut stderr = child.stderr.take();
    let read = async {
        let mut out = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut out).await;
        }
        out
    };
    let (status, out) = tokio::join!(child.wait(), read);
    let status = status.map_err(CheckFailed::Wait)?;
    if status.success() {
        return Ok(());
    }
    let out = String::from_utf8_lossy(&out);
    let out = out.trim();
    let tail: String = out.chars().rev().take(OUTPUT_TAIL).collect::<Vec<_>>().into_iter().rev().collect();
    Err(CheckFailed::Command { code: status.code(), output: tail })
}

/// `GET url` through `curl`, as Mesos's HTTP checker runs it (`-k`: certificates are not verified; `-g`: `[::1]` is
/// an address, not a glob; no proxy), the status code of the last answer. A server that answered a status and then
/// closed without a body (a lone 1xx) still answered: the status counts, whatever curl's exit code.
async fn curl_status(url: &str, timeout: Duration) -> Result<u16, CheckFailed> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-S", "-L", "-k", "-g", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}"]);
    cmd.arg("--max-time").arg(format!("{:.3}", timeout.as_secs_f64().max(0.001))).arg(url);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = cmd.output().await.map_err(CheckFailed::NoCurl)?;
    let code = String::from_utf8_lossy(&out.stdout).trim().parse::<u16>().unwrap_or(0);
    if code == 0 {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(CheckFailed::Get { url: url.to_string(), stderr });
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn policy(failures: u32, grace: u64) -> Policy {
        Policy {
            delay: 5 * SEC,
            interval: 10 * SEC,
            timeout: 2 * SEC,
            consecutive_failures: failures,
            grace: Duration::from_secs(grace),
        }
    }

    fn fail() -> Result<(), &'static str> {
        Err("connection refused")
    }

    #[test]
    fn policy_takes_mesos_defaults_for_a_zero_interval_and_timeout() {
        let check = HealthCheck {
            kind: HealthCheckType::Tcp,
            port: Some(80),
            path: None,
            scheme: None,
            statuses: vec![],
            ip_protocol: IpProtocol::V4,
            ignore_http1xx: false,
            command: None,
            delay_seconds: 1.5,
            interval_seconds: 0.0,
            timeout_seconds: 0.0,
            consecutive_failures: 0,
            grace_period_seconds: -3.0,
        };
        let p = Policy::of(&check);
        assert_eq!(
            (p.delay, p.interval, p.timeout, p.grace),
            (Duration::from_millis(1500), DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Duration::ZERO)
        );
        assert_eq!(p.consecutive_failures, 0);
    }

    #[test]
    fn first_check_after_the_delay_then_every_interval() {
        let t0 = Instant::now();
        let mut c = Checker::new(policy(3, 0), "HTTP health check", t0);
        assert_eq!(c.next_check(), t0 + 5 * SEC);
        let r = c.finished(t0 + 5 * SEC, Outcome::Passed, t0 + 6 * SEC).expect("the first success is reported");
        assert!(r.healthy && !r.kill);
        assert_eq!(c.next_check(), t0 + 16 * SEC);
        assert_eq!(
            c.finished(t0 + 16 * SEC, Outcome::Passed, t0 + 16 * SEC),
            None,
            "a success after a success is quiet"
        );
    }

    #[test]
    fn failures_in_the_grace_period_are_ignored_until_the_first_success() {
        let t0 = Instant::now();
        let mut c = Checker::new(policy(1, 30), "HTTP health check", t0);
        assert_eq!(c.finished(t0 + 5 * SEC, fail(), t0 + 5 * SEC), None);
        assert_eq!(c.finished(t0 + 30 * SEC, fail(), t0 + 30 * SEC), None, "the grace period's last moment");
        // After the grace period a failure counts, and with a limit of 1 it kills.
        let r = c.finished(t0 + 31 * SEC, fail(), t0 + 31 * SEC).unwrap();
        assert!(!r.healthy && r.kill);
        assert_eq!(r.message, "HTTP health check failed once: connection refused");

        // A success ends the grace period at once.
        let mut c = Checker::new(policy(3, 300), "TCP health check", t0);
        assert!(c.finished(t0 + 5 * SEC, Outcome::Passed, t0 + 5 * SEC).unwrap().healthy);
        let r = c.finished(t0 + 15 * SEC, fail(), t0 + 15 * SEC).expect("counted after a success");
        assert_eq!((r.healthy, r.consecutive_failures, r.kill), (false, 1, false));
    }

    #[test]
    fn every_counted_failure_is_reported_and_the_limit_kills() {
        let t0 = Instant::now();
        let mut c = Checker::new(policy(3, 0), "COMMAND health check", t0);
        let reports: Vec<Report> =
            (1..=3).filter_map(|i| c.finished(t0 + i * 10 * SEC, fail(), t0 + i * 10 * SEC)).collect();
        assert_eq!(
            reports.iter().map(|r| (r.healthy, r.consecutive_failures, r.kill)).collect::<Vec<_>>(),
            vec![(false, 1, false), (false, 2, false), (false, 3, true)]
        );
        assert_eq!(reports[2].message, "COMMAND health check failed 3 times consecutively: connection refused");
    }

    #[test]
    fn a_success_after_failures_is_reported_and_resets_the_count() {
        let t0 = Instant::now();
        let mut c = Checker::new(policy(3, 0), "HTTP health check", t0);
        assert!(c.finished(t0, Outcome::Passed, t0).unwrap().healthy);
        assert_eq!(c.finished(t0, fail(), t0).unwrap().consecutive_failures, 1);
        assert_eq!(c.finished(t0, fail(), t0).unwrap().consecutive_failures, 2);
        assert!(c.finished(t0, Outcome::Passed, t0).unwrap().healthy);
        let r = c.finished(t0, fail(), t0).unwrap();
        assert_eq!((r.consecutive_failures, r.kill), (1, false));
    }

    #[test]
    fn a_check_slower_than_the_timeout_fails_whatever_it_answered() {
        let t0 = Instant::now();
        let mut c = Checker::new(policy(0, 0), "HTTP health check", t0);
        let r = c.finished(t0 + 5 * SEC, Outcome::Passed, t0 + 8 * SEC).unwrap();
        assert!(!r.healthy && r.kill, "a limit of 0 kills at the first counted failure");
        assert!(r.message.contains("timed out after 2s"), "{}", r.message);
        assert_eq!(c.next_check(), t0 + 18 * SEC);
    }

    fn spec(kind: HealthCheckType, port: Option<u32>, command: Option<CommandInfo>, failures: u32) -> CheckSpec {
        CheckSpec {
            task: TaskKey::new("f", "t"),
            container_id: "c".into(),
            check: HealthCheck {
                kind,
                port,
                path: Some("/health".into()),
                scheme: None,
                statuses: vec![],
                ip_protocol: IpProtocol::V4,
                ignore_http1xx: false,
                command,
                delay_seconds: 0.0,
                interval_seconds: 0.05,
                timeout_seconds: 5.0,
                consecutive_failures: failures,
                grace_period_seconds: 0.0,
            },
            env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("CHECK_ME".into(), "yes".into())],
            sandbox: std::env::temp_dir(),
            host: None,
        }
    }

    /// Runs the shell's checker until it reports `n` times (bounded), the reports in order.
    async fn reports(spec: CheckSpec, n: usize) -> Vec<Report> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let fake = Arc::new(crate::containerizer::fake::FakeContainerizer::default());
        let checking = tokio::spawn(run(spec, fake, Instant::now(), move |r| {
            let _ = tx.send(r);
        }));
        let mut out = Vec::new();
        while out.len() < n {
            let r = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("a report in time");
            out.push(r.expect("the checker stopped early"));
        }
        checking.abort();
        out
    }

    /// A one-connection-at-a-time HTTP server answering `status` to everything; its port.
    async fn http_server(status: &'static str) -> u32 {
        http_server_on("127.0.0.1:0", &[], status).await
    }

    /// A one-connection-at-a-time HTTP server on `addr` answering `first` in turn to the first connections (a lone
    /// status line for a 1xx, which has no body) and `then` to every later one; its port.
    async fn http_server_on(addr: &str, first: &'static [&'static str], then: &'static str) -> u32 {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut answers = first.iter().copied();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let status = answers.next().unwrap_or(then);
                let reply = if status.starts_with('1') {
                    format!("HTTP/1.1 {status}\r\n\r\n")
                } else {
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                };
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        u32::from(port)
    }

    #[test]
    fn http_verdicts_pass_2xx_3xx_and_ignore_1xx_only_when_asked() {
        let v = |status, statuses: &[u32], ignore| http_verdict(status, statuses, ignore, "http://h/x");
        assert_eq!(v(200, &[], false), Outcome::Passed);
        assert_eq!(v(399, &[], false), Outcome::Passed);
        assert_eq!(v(400, &[], true), Outcome::Failed("GET http://h/x answered 400".into()));
        assert_eq!(v(102, &[], false), Outcome::Failed("GET http://h/x answered 102".into()));
        assert_eq!(v(100, &[], true), Outcome::Ignored);
        assert_eq!(v(199, &[], true), Outcome::Ignored);
        assert_eq!(v(503, &[503], false), Outcome::Passed, "`statuses` replaces 200-399");
        assert_eq!(v(101, &[101], true), Outcome::Passed, "a 1xx the check names passes");
        assert_eq!(v(200, &[503], true), Outcome::Failed("GET http://h/x answered 200".into()));
    }

    #[test]
    fn an_ignored_answer_keeps_the_checkers_state() {
        let t0 = Instant::now();
        let mut c = Checker::new(policy(2, 0), "HTTP health check", t0);
        assert_eq!(c.finished(t0, Outcome::Ignored, t0), None, "no report before the first success either");
        assert!(
            c.finished(t0, Outcome::Passed, t0).unwrap().healthy,
            "still initializing: the first success is reported"
        );
        assert_eq!(c.finished(t0, fail(), t0).unwrap().consecutive_failures, 1);
        assert_eq!(c.finished(t0, Outcome::Ignored, t0 + SEC), None);
        assert_eq!(c.next_check(), t0 + 11 * SEC, "the next check is still scheduled");
        let r = c.finished(t0, fail(), t0).unwrap();
        assert_eq!((r.consecutive_failures, r.kill), (2, true), "the ignored answer neither reset nor counted");
        // A 1xx that came too late is a timeout, not an ignored answer.
        let mut c = Checker::new(policy(1, 0), "HTTP health check", t0);
        assert!(c.finished(t0, Outcome::Ignored, t0 + 3 * SEC).unwrap().kill);
    }

    #[test]
    fn check_urls_use_the_loopback_of_the_ip_protocol_or_the_tasks_own_address() {
        let mut check = spec(HealthCheckType::Http, Some(80), None, 1).check;
        assert_eq!(check_url(&check, None, 8080), "http://127.0.0.1:8080/health");
        let bridged = Some("10.233.1.7".parse().unwrap());
        assert_eq!(check_url(&check, bridged, 8080), "http://10.233.1.7:8080/health");
        check.ip_protocol = IpProtocol::V6;
        check.scheme = Some("https".into());
        check.path = Some("ready".into());
        assert_eq!(check_url(&check, None, 8443), "https://[::1]:8443/ready");
    }

    #[tokio::test]
    async fn a_1xx_answer_fails_unless_ignored() {
        require_curl();
        // Two 102s, then 200: ignored, the first report is the success; counted, the first 102 kills (limit 1).
        let port = http_server_on("127.0.0.1:0", &["102 Processing", "102 Processing"], "200 OK").await;
        let mut ignoring = spec(HealthCheckType::Http, Some(port), None, 1);
        ignoring.check.ignore_http1xx = true;
        assert_eq!(
            reports(ignoring, 1).await[0],
            Report { healthy: true, consecutive_failures: 0, kill: false, message: String::new() }
        );
        let port = http_server_on("127.0.0.1:0", &["102 Processing"], "200 OK").await;
        let r = reports(spec(HealthCheckType::Http, Some(port), None, 1), 1).await;
        assert!(!r[0].healthy && r[0].kill, "{r:?}");
        assert!(r[0].message.ends_with("/health answered 102"), "{}", r[0].message);
    }

    #[tokio::test]
    async fn ipv6_checks_reach_the_task_on_ipv6_loopback() {
        require_curl();
        let port = http_server_on("[::1]:0", &[], "200 OK").await;
        let mut http = spec(HealthCheckType::Http, Some(port), None, 1);
        http.check.ip_protocol = IpProtocol::V6;
        assert!(reports(http.clone(), 1).await[0].healthy);
        let mut tcp = spec(HealthCheckType::Tcp, Some(port), None, 1);
        tcp.check.ip_protocol = IpProtocol::V6;
        assert!(reports(tcp.clone(), 1).await[0].healthy);
        // The same checks over IPv4 miss a server that listens only on ::1.
        http.check.ip_protocol = IpProtocol::V4;
        let r = reports(http, 1).await;
        assert!(!r[0].healthy && r[0].message.contains("http://127.0.0.1:"), "{r:?}");
        tcp.check.ip_protocol = IpProtocol::V4;
        let r = reports(tcp, 1).await;
        assert!(!r[0].healthy && r[0].message.contains("cannot connect to 127.0.0.1:"), "{r:?}");
    }

    fn require_curl() {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("curl").is_file()))
            .unwrap_or(false);
        assert!(found, "HTTP health checks run curl, which is missing: apt-get install curl");
    }

    #[tokio::test]
    async fn http_checks_pass_on_2xx_and_fail_on_5xx_then_kill() {
        require_curl();
        let ok = http_server("204 No Content").await;
        let r = reports(spec(HealthCheckType::Http, Some(ok), None, 3), 1).await;
        assert_eq!(r[0], Report { healthy: true, consecutive_failures: 0, kill: false, message: String::new() });

        let bad = http_server("503 Service Unavailable").await;
        let r = reports(spec(HealthCheckType::Http, Some(bad), None, 2), 2).await;
        assert_eq!(r.iter().map(|r| (r.healthy, r.kill)).collect::<Vec<_>>(), vec![(false, false), (false, true)]);
        assert!(r[1].message.starts_with("HTTP health check failed 2 times consecutively: GET http://127.0.0.1:"));
        assert!(r[1].message.ends_with("/health answered 503"), "{}", r[1].message);

        let mut only_503 = spec(HealthCheckType::Http, Some(bad), None, 2);
        only_503.check.statuses = vec![503];
        assert!(reports(only_503, 1).await[0].healthy, "`statuses` replaces 200-399");
    }

    #[tokio::test]
    async fn tcp_checks_connect() {
        let open = http_server("200 OK").await;
        assert!(reports(spec(HealthCheckType::Tcp, Some(open), None, 1), 1).await[0].healthy);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            u32::from(l.local_addr().unwrap().port())
        };
        let r = reports(spec(HealthCheckType::Tcp, Some(closed), None, 1), 1).await;
        assert!(!r[0].healthy && r[0].kill);
        assert!(r[0].message.contains("cannot connect to 127.0.0.1:"), "{}", r[0].message);
    }

    #[tokio::test]
    async fn command_checks_run_with_the_task_environment_and_quote_their_output() {
        let good = CommandInfo::shell("test \"$CHECK_ME\" = yes");
        assert!(reports(spec(HealthCheckType::Command, None, Some(good), 1), 1).await[0].healthy);
        let bad = CommandInfo::shell("echo not ready >&2; exit 3");
        let r = reports(spec(HealthCheckType::Command, None, Some(bad), 1), 1).await;
        assert_eq!(r[0].message, "COMMAND health check failed once: command exited with status 3: not ready");

        let mut slow = spec(HealthCheckType::Command, None, Some(CommandInfo::shell("sleep 30")), 1);
        slow.check.timeout_seconds = 0.2;
        let r = reports(slow, 1).await;
        assert!(r[0].kill && r[0].message.contains("timed out after 200ms"), "{}", r[0].message);
    }

    #[test]
    fn names_say_the_protocol() {
        let mut check = HealthCheck {
            kind: HealthCheckType::Http,
            port: Some(80),
            path: None,
            scheme: Some("https".into()),
            statuses: vec![],
            ip_protocol: IpProtocol::V4,
            ignore_http1xx: false,
            command: None,
            delay_seconds: 0.0,
            interval_seconds: 1.0,
            timeout_seconds: 1.0,
            consecutive_failures: 3,
            grace_period_seconds: 0.0,
        };
        assert_eq!(check_name(&check), "HTTPS health check");
        check.scheme = None;
        assert_eq!(check_name(&check), "HTTP health check");
    }
}
