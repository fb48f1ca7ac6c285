//! Task health checks, run by the agent beside each task as Mesos's executors run them (`docs/health-checks.md`).
//!
//! [`Checker`] is the pure state machine, a copy of the rules of Mesos's `HealthCheckerProcess`: the first check
//! `delay_seconds` after the task started running, then one every `interval_seconds`; a check that takes longer than
//! `timeout_seconds` failed; failures within `grace_period_seconds` of the start are ignored until the first success;
//! a report goes out on the first success, on the first success after failures and on every counted failure; after
//! `consecutive_failures` of them the report asks for the task to be killed. Time is passed in.
//!
//! The shell ([`run`]) is one tokio task per checked task: it sleeps until the checker's next check, runs the probe
//! (HTTP `GET http://127.0.0.1:port/path` — tasks share the host's network — HTTPS through `curl -k` as Mesos does,
//! TCP connect, or a command in the task's container through [`Containerizer::check_command`]) and hands each
//! report to the agent's event loop, which turns it into a status update (and a kill) in [`crate::core`].

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::model::{CommandInfo, HealthCheck, HealthCheckType};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use crate::containerizer::Containerizer;
use crate::core::TaskKey;

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
    /// A check that took longer than the timeout failed, whatever it answered.
    pub fn finished(&mut self, began: Instant, outcome: Result<(), String>, now: Instant) -> Option<Report> {
        self.next = now + self.policy.interval;
        let took = now.saturating_duration_since(began);
        let outcome = if took > self.policy.timeout {
            Err(format!("timed out after {:?}", self.policy.timeout))
        } else {
            outcome
        };
        match outcome {
            Ok(()) => {
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
            Err(_) if self.initializing && now.saturating_duration_since(self.started) <= self.policy.grace => None,
            Err(cause) => {
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
    let http = reqwest::Client::builder().no_proxy().timeout(checker.timeout()).build();
    loop {
        tokio::time::sleep_until(tokio::time::Instant::from_std(checker.next_check())).await;
        let began = Instant::now();
        let probe = probe(&spec, containerizer.as_ref(), http.as_ref().ok());
        let outcome = match tokio::time::timeout(checker.timeout(), probe).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("timed out after {:?}", checker.timeout())),
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

async fn probe<C: Containerizer>(
    spec: &CheckSpec,
    containerizer: &C,
    http: Option<&reqwest::Client>,
) -> Result<(), String> {
    let check = &spec.check;
    let port = || match check.port {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        other => Err(format!("no valid port to check (port {})", other.unwrap_or_default())),
    };
    match check.kind {
        HealthCheckType::Tcp => {
            let port = port()?;
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))
        }
        HealthCheckType::Http => {
            let port = port()?;
            let path = check.path.clone().unwrap_or_else(|| "/".to_string());
            let path = if path.starts_with('/') { path } else { format!("/{path}") };
            let https = check.scheme.as_deref() == Some("https");
            let url = format!("{}://127.0.0.1:{port}{path}", if https { "https" } else { "http" });
            let status = if https {
                curl_status(&url).await?
            } else {
                let client = http.ok_or("cannot build an HTTP client")?;
                client.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?.status().as_u16()
            };
            let ok = if check.statuses.is_empty() {
                (200..400).contains(&status)
            } else {
                check.statuses.contains(&u32::from(status))
            };
            if ok { Ok(()) } else { Err(format!("GET {url} answered {status}")) }
        }
        HealthCheckType::Command => {
            let command = check.command.as_ref().ok_or("COMMAND health check without a command")?;
            let env = command_env(&spec.env, command);
            let cmd = containerizer
                .check_command(&spec.container_id, command, &env, &spec.sandbox)
                .map_err(|e| format!("cannot run the check command: {e}"))?;
            run_command(cmd).await
        }
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

async fn run_command(mut cmd: tokio::process::Command) -> Result<(), String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the check command: {e}"))?;
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
    let status = status.map_err(|e| format!("cannot wait for the check command: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let out = String::from_utf8_lossy(&out);
    let out = out.trim();
    let tail: String = out.chars().rev().take(OUTPUT_TAIL).collect::<Vec<_>>().into_iter().rev().collect();
    let how = match status.code() {
        Some(code) => format!("command exited with status {code}"),
        None => "command was killed by a signal".to_string(),
    };
    if tail.is_empty() { Err(how) } else { Err(format!("{how}: {tail}")) }
}

/// `curl -k` (Mesos's HTTPS check: certificates are not verified), the status code it got.
async fn curl_status(url: &str) -> Result<u16, String> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-S", "-L", "-k", "-g", "-o", "/dev/null", "-w", "%{http_code}", url]);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| {
        format!("cannot run curl for an HTTPS health check ({e}); install curl on the agent (apt-get install curl)")
    })?;
    let code = String::from_utf8_lossy(&out.stdout).trim().parse::<u16>().unwrap_or(0);
    if code == 0 {
        return Err(format!("GET {url}: {}", String::from_utf8_lossy(&out.stderr).trim()));
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

    fn fail() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn policy_takes_mesos_defaults_for_a_zero_interval_and_timeout() {
        let check = HealthCheck {
            kind: HealthCheckType::Tcp,
            port: Some(80),
            path: None,
            scheme: None,
            statuses: vec![],
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
        let r = c.finished(t0 + 5 * SEC, Ok(()), t0 + 6 * SEC).expect("the first success is reported");
        assert!(r.healthy && !r.kill);
        assert_eq!(c.next_check(), t0 + 16 * SEC);
        assert_eq!(c.finished(t0 + 16 * SEC, Ok(()), t0 + 16 * SEC), None, "a success after a success is quiet");
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
        assert!(c.finished(t0 + 5 * SEC, Ok(()), t0 + 5 * SEC).unwrap().healthy);
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
        assert!(c.finished(t0, Ok(()), t0).unwrap().healthy);
        assert_eq!(c.finished(t0, fail(), t0).unwrap().consecutive_failures, 1);
        assert_eq!(c.finished(t0, fail(), t0).unwrap().consecutive_failures, 2);
        assert!(c.finished(t0, Ok(()), t0).unwrap().healthy);
        let r = c.finished(t0, fail(), t0).unwrap();
        assert_eq!((r.consecutive_failures, r.kill), (1, false));
    }

    #[test]
    fn a_check_slower_than_the_timeout_fails_whatever_it_answered() {
        let t0 = Instant::now();
        let mut c = Checker::new(policy(0, 0), "HTTP health check", t0);
        let r = c.finished(t0 + 5 * SEC, Ok(()), t0 + 8 * SEC).unwrap();
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
                command,
                delay_seconds: 0.0,
                interval_seconds: 0.05,
                timeout_seconds: 5.0,
                consecutive_failures: failures,
                grace_period_seconds: 0.0,
            },
            env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("CHECK_ME".into(), "yes".into())],
            sandbox: std::env::temp_dir(),
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
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        u32::from(port)
    }

    #[tokio::test]
    async fn http_checks_pass_on_2xx_and_fail_on_5xx_then_kill() {
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
