//! `failover-bench`: measures a master failover in stages with many simulated agents.
//!
//! It starts a real ZooKeeper (Debian's package, as the tests do) and two real `agora-master` processes contending
//! through it, then runs N lightweight agents in this process: each is one `AgentLink` stream (many streams share
//! one HTTP/2 connection) that registers, answers pings, and follows the leader through the ZooKeeper detector,
//! re-registering with its id when its stream breaks. A framework on the real SDK subscribes through ZooKeeper.
//! Then the leader is killed with SIGKILL and the bench records when
//!
//! 1. the new leader was elected (its log: `role changed ... Leader`),
//! 2. it had loaded the registry (its log: `leading: registry loaded`),
//! 3. all N agents had re-registered with it,
//! 4. the framework had re-subscribed,
//! 5. the first launch after the failover was accepted (the RunTask reached a simulated agent).
//!
//! Usage (binaries built first: `cargo build --workspace --bins`; `--help` lists the flags):
//! `cargo run -p agora-integration-tests --bin failover-bench -- --agents 10000 --zk-session-timeout 5secs`

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_framework_sdk::{
    Driver, DriverOptions, FrameworkInfo, MasterInfo, Offer, Scheduler, SchedulerDriver, TaskInfo, TaskInfoExt,
    TaskStatus,
};
use agora_integration_tests::bench_flags::FlagErrors;
use agora_integration_tests::{ZooKeeper, free_port, wait_for_leader};
use agora_proto::model::AgentInfo;
use agora_proto::wire::{self, agent_link_client::AgentLinkClient};
use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const AGENT_RESOURCES: &str = "cpus:4;mem:8192;disk:10000;ports:[31000-32000]";
const ZK_PATH: &str = "/agora-bench";

/// Simulated agents, unless `--agents` says otherwise.
const DEFAULT_AGENTS: &str = "1000";
/// `AgentLink` streams sharing one HTTP/2 connection, unless `--agents-per-connection` says otherwise.
const DEFAULT_AGENTS_PER_CONNECTION: &str = "50";
/// The masters' `--zk-session-timeout`, unless `--zk-session-timeout` says otherwise.
const DEFAULT_ZK_SESSION_TIMEOUT: &str = "5secs";

/// The bench's flags, as typed (checked together by [`Flags::args`]).
#[derive(clap::Parser, Debug)]
#[command(name = "failover-bench", about = "Measures a master failover in stages with many simulated agents")]
struct Flags {
    /// How many simulated agents register before the failover.
    #[arg(long, default_value = DEFAULT_AGENTS)]
    agents: String,
    /// How many agents' streams share one HTTP/2 connection.
    #[arg(long, default_value = DEFAULT_AGENTS_PER_CONNECTION)]
    agents_per_connection: String,
    /// The masters' `--zk-session-timeout` (a Mesos duration: `5secs`, `500ms`).
    #[arg(long, default_value = DEFAULT_ZK_SESSION_TIMEOUT)]
    zk_session_timeout: String,
    /// Where `agora-master` is (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

struct Args {
    bin_dir: Option<PathBuf>,
    agents: usize,
    per_connection: usize,
    session_timeout: String,
}

impl Flags {
    /// The checked flags; every bad value is reported at once and the bench exits with status 2.
    fn args(self) -> Args {
        let mut errors = FlagErrors::default();
        let agents = errors.count("--agents", &self.agents, 1);
        let per_connection = errors.count("--agents-per-connection", &self.agents_per_connection, 1);
        let session_timeout = errors.duration("--zk-session-timeout", &self.zk_session_timeout);
        if let Some(dir) = self.bin_dir.as_ref().filter(|d| !d.is_dir()) {
            errors.0.push(format!("--bin-dir: '{}' is not a directory", dir.display()));
        }
        errors.exit_if_any("failover-bench");
        Args { bin_dir: self.bin_dir, agents, per_connection, session_timeout }
    }
}

/// What the simulated agents and the framework observed.
#[derive(Default)]
struct Observed {
    /// Set at the SIGKILL: registrations after it count as re-registrations.
    killed: OnceLock<Instant>,
    registered: AtomicUsize,
    reregistered: AtomicUsize,
    all_reregistered: OnceLock<Instant>,
    resubscribed: OnceLock<Instant>,
    launch_received: OnceLock<Instant>,
    launched: AtomicBool,
}

/// One HTTP/2 connection to the current leader, shared by a group of agents.
struct Group {
    channel: Mutex<Option<(String, Channel)>>,
}

impl Group {
    fn channel(&self, leader: &str) -> Result<Channel> {
        let mut c = self.channel.lock().expect("not poisoned");
        if let Some((_, ch)) = c.as_ref().filter(|(a, _)| a == leader) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{leader}"))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .connect_lazy();
        *c = Some((leader.to_string(), ch.clone()));
        Ok(ch)
    }

    fn forget(&self) {
        *self.channel.lock().expect("not poisoned") = None;
    }
}

async fn sim_agent(n: usize, group: Arc<Group>, detector: agora_detector::Detector, seen: Arc<Observed>) {
    let info = AgentInfo {
        id: None,
        hostname: format!("sim{n}"),
        ip: "127.0.0.1".into(),
        port: 1,
        resources: AGENT_RESOURCES.parse().expect("resources"),
        attributes: Default::default(),
    };
    let mut id: Option<String> = None;
    let mut leader_changes = detector.watch();
    let mut failures: u32 = 0;
    loop {
        let Some(leader) = detector.current() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let outcome = async {
            let channel = group.channel(&leader.address)?;
            let (tx, rx) = mpsc::channel(16);
            let mut wire_info = wire::AgentInfo::from(&info);
            let first = match &id {
                None => wire::agent_message::Message::Register(wire::RegisterAgent {
                    agent_info: Some(wire_info),
                    version: String::new(),
                    network: None,
                }),
                Some(id) => {
                    wire_info.id = id.clone();
                    wire::agent_message::Message::Reregister(wire::ReregisterAgent {
                        agent_info: Some(wire_info),
                        version: String::new(),
                        tasks: vec![],
                        frameworks: vec![],
                        network: None,
                    })
                }
            };
            tx.send(wire::AgentMessage { message: Some(first) }).await?;
            let mut inbound = AgentLinkClient::new(channel).open(ReceiverStream::new(rx)).await?.into_inner();
            while let Some(msg) = inbound.message().await? {
                match msg.message {
                    Some(wire::master_message::Message::Registered(r)) => {
                        id = Some(r.agent_id);
                        if seen.killed.get().is_some() {
                            let done = seen.reregistered.fetch_add(1, Ordering::SeqCst) + 1;
                            if done == seen.registered.load(Ordering::SeqCst) {
                                let _ = seen.all_reregistered.set(Instant::now());
                            }
                        } else {
                            seen.registered.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Some(wire::master_message::Message::Ping(_)) => {
                        let pong = wire::agent_message::Message::Pong(wire::Pong {});
                        let _ = tx.send(wire::AgentMessage { message: Some(pong) }).await;
                    }
                    Some(wire::master_message::Message::RunTask(_)) if seen.killed.get().is_some() => {
                        let _ = seen.launch_received.set(Instant::now());
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        }
        .await;
        if outcome.is_err() {
            group.forget();
            failures = failures.saturating_add(1);
        } else {
            failures = 0;
        }
        // As the real agent: back off (doubling from 50 ms, at most 1 s, with jitter to spread the herd), but go at
        // once when the detector reports a new leader.
        let jitter = (n as u64 * 7919) % 50;
        let backoff = Duration::from_millis((50u64 << failures.min(4)).min(1000) + jitter);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            changed = leader_changes.changed() => {
                if changed.is_ok() {
                    failures = 0;
                }
            }
        }
    }
}

/// Re-subscribes through ZooKeeper and launches one task on the first offer after the failover.
struct BenchFramework(Arc<Observed>);

impl Scheduler for BenchFramework {
    fn subscribed(&mut self, _d: &SchedulerDriver, _id: &str, _m: &MasterInfo) {
        if self.0.killed.get().is_some() {
            let _ = self.0.resubscribed.set(Instant::now());
        }
    }
    fn offers(&mut self, d: &SchedulerDriver, offers: Vec<Offer>) {
        for o in offers {
            if self.0.killed.get().is_some() && !self.0.launched.swap(true, Ordering::SeqCst) {
                let res = "cpus:1;mem:64".parse().expect("resources");
                d.accept(
                    vec![o.id.clone()],
                    vec![TaskInfo::command("bench-0", "bench", &o.agent_id, res, "true")],
                    None,
                );
            } else {
                d.decline(&o.id, Some(3600.0));
            }
        }
    }
    fn update(&mut self, _d: &SchedulerDriver, _s: &TaskStatus) {}
}

fn spawn_master(bin: &Path, name: &str, port: u16, zk: &str, timeout: &str, dir: &Path) -> Result<(Child, PathBuf)> {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(bin.join("agora-master"))
        .args(["--ip", "127.0.0.1", "--port", &port.to_string(), "--zk", zk, "--zk-session-timeout", timeout])
        .args(["--work-dir", &dir.join(name).display().to_string(), "--agent-ping-timeout", "60secs"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("spawn {}", bin.join("agora-master").display()))?;
    Ok((child, log))
}

/// The wall-clock time (Unix seconds) of the first log line containing all of `needles`.
fn log_time(log: &Path, needles: &[&str]) -> Option<f64> {
    let text = strip_ansi(&std::fs::read_to_string(log).ok()?);
    let line = text.lines().find(|l| needles.iter().all(|n| l.contains(n)))?;
    parse_rfc3339(line.split_whitespace().next()?)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-11-24T06:53:14.924860Z` → Unix seconds (UTC only, as tracing writes it).
fn parse_rfc3339(s: &str) -> Option<f64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    Some((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) as f64 + frac)
}

struct KeptDir(PathBuf);

impl KeptDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

fn wall_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = <Flags as clap::Parser>::parse().args();
    let bin = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("exe dir")?.to_path_buf(),
    };
    // Kept after the run: the masters' logs are the evidence for the election and registry stages.
    let dir = tempfile::Builder::new().prefix("agora-failover-bench-").tempdir()?;
    eprintln!("logs in {}", dir.path().display());
    let dir = KeptDir(dir.keep());
    let zk = ZooKeeper::start(&dir.path().join("zk")).await?;
    let url = zk.url(ZK_PATH);
    let ports = [free_port(), free_port()];
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut masters: HashMap<String, (Child, PathBuf)> = HashMap::new();
    for (i, p) in ports.iter().enumerate() {
        let m = spawn_master(&bin, &format!("master{i}"), *p, &url, &args.session_timeout, dir.path())?;
        masters.insert(addrs[i].clone(), m);
    }
    let first = wait_for_leader(&addrs, Duration::from_secs(60)).await?;
    eprintln!("leader {first}; starting {} simulated agents", args.agents);

    let seen = Arc::new(Observed::default());
    let detector = agora_detector::Detector::start(&agora_detector::MasterSpec::parse(&url)?);
    let groups: Vec<Arc<Group>> = (0..args.agents.div_ceil(args.per_connection.max(1)))
        .map(|_| Arc::new(Group { channel: Mutex::new(None) }))
        .collect();
    let started = Instant::now();
    for n in 0..args.agents {
        let g = groups[n / args.per_connection.max(1)].clone();
        tokio::spawn(sim_agent(n, g, detector.clone(), seen.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.registered.load(Ordering::SeqCst) < args.agents {
        if Instant::now() > deadline {
            bail!("only {} agents registered", seen.registered.load(Ordering::SeqCst));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{} agents registered in {:.1?}", args.agents, started.elapsed());

    let mut info = FrameworkInfo::new("failover-bench");
    info.failover_timeout = 3600.0;
    let driver = Driver::new(&url, info, DriverOptions::default())?;
    let fw_seen = seen.clone();
    tokio::spawn(async move {
        let _ = driver.run(BenchFramework(fw_seen)).await;
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Kill the leader.
    let (child, leader_log) = masters.get_mut(&first).context("leader process")?;
    let killed_wall = wall_now();
    let _ = seen.killed.set(Instant::now());
    child.kill()?;
    let _ = child.wait();
    let _ = leader_log;
    let killed = *seen.killed.get().expect("set");
    eprintln!("killed the leader {first} (SIGKILL)");
    let other = addrs.iter().find(|a| **a != first).cloned().context("a second master")?;
    let new_log = masters[&other].1.clone();

    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.all_reregistered.get().is_none() || seen.launch_received.get().is_none() {
        if Instant::now() > deadline {
            bail!(
                "timed out: {} of {} agents re-registered, framework resubscribed: {}, launch: {}",
                seen.reregistered.load(Ordering::SeqCst),
                args.agents,
                seen.resubscribed.get().is_some(),
                seen.launch_received.get().is_some()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let since = |t: Option<&Instant>| t.map(|t| t.duration_since(killed).as_secs_f64());
    let elected = log_time(&new_log, &["role changed", "to=Leader"]).map(|t| t - killed_wall);
    let loaded = log_time(&new_log, &["leading: registry loaded"]).map(|t| t - killed_wall);
    let rows = [
        ("leader lost (SIGKILL)", Some(0.0)),
        ("new leader elected", elected),
        ("registry loaded", loaded),
        ("all agents re-registered", since(seen.all_reregistered.get())),
        ("framework re-subscribed", since(seen.resubscribed.get())),
        ("first launch accepted", since(seen.launch_received.get())),
    ];
    println!("failover with {} simulated agents, --zk-session-timeout {}", args.agents, args.session_timeout);
    println!("| stage | seconds after the SIGKILL |");
    println!("|---|---|");
    for (stage, t) in rows {
        println!("| {stage} | {} |", t.map_or("?".to_string(), |t| format!("{t:.2}")));
    }
    for (_, (mut c, _)) in masters {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(zk);
    Ok(())
}
