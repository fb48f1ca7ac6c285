//! `agora-integration-tests`: the harness for end-to-end tests that run the real `agora-master`, `agora-agent` and
//! `agora` binaries as processes on loopback, plus a test framework built on the real SDK, and [`v1`], a client of
//! Mesos's v1 HTTP APIs.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, which the README's test command does);
//! the harness finds them beside the test executable and fails loudly, saying how to build them, when they are
//! missing. Every wait is bounded, so a broken cluster fails a test instead of hanging it.

pub mod bench_flags;
pub mod marathon;
pub mod netlab;
pub mod v1;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_framework_sdk::{Driver, DriverOptions, FrameworkInfo, Offer, Scheduler, SchedulerDriver, TaskStatus};
use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The directory holding the workspace's binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A test is target/<profile>/deps/<test>-<hash>; a binary of this crate (a bench) is target/<profile>/<bin>.
    let parent = exe.parent().expect("target dir");
    let dir = if parent.join("agora-master").exists() { parent } else { parent.parent().expect("target dir") };
    let dir = dir.to_path_buf();
    for name in ["agora-master", "agora-agent", "agora"] {
        assert!(
            dir.join(name).exists(),
            "binary '{}' not found in {}: build the binaries first with `cargo build --workspace --bins` \
             (the README's test command does this)",
            name,
            dir.display()
        );
    }
    dir
}

/// A free loopback port (bound, then released for the process under test to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process that is killed when dropped; its stderr goes to a log file shown when a test fails.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, bin: &str, args: &[String], log_dir: &Path) -> Result<Proc> {
        Proc::spawn_program(name, &bin_dir().join(bin), args, log_dir)
    }

    /// [`Proc::spawn`] of any program (e.g. `nsenter` wrapping a workspace binary).
    pub fn spawn_program(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Result<Proc> {
        let bin = program.display().to_string();
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {bin}"))?;
        Ok(Proc { name: name.into(), child, log })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes (its sockets stay open, its timers stop), as a long GC pause or a hung host.
    pub fn pause(&self) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGSTOP)
            .with_context(|| format!("SIGSTOP {}", self.name))
    }

    /// SIGCONT: a paused process runs on.
    pub fn resume(&self) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGCONT)
            .with_context(|| format!("SIGCONT {}", self.name))
    }

    /// SIGTERM (and SIGCONT, in case it is paused) and wait (bounded) for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM);
        let _ = self.resume();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
        if std::thread::panicking() {
            eprintln!("----- {} log ({}) -----\n{}", self.name, self.log.display(), self.log_text());
        }
    }
}

/// CPU seconds (user + system, all threads) a process has used so far, from `/proc/<pid>/stat`; NaN when the
/// process is gone.
pub fn cpu_seconds(pid: i32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the command name `(...)`, which may itself hold spaces: utime is field 14, stime 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return f64::NAN };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The flags of an agent on loopback `port` registering with `master` (`host:port` or `zk://...`).
pub fn agent_args(master: &str, port: u16, work_dir: &Path, resources: &str, hostname: &str) -> Vec<String> {
    [
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &work_dir.display().to_string(),
        "--resources",
        resources,
        "--hostname",
        hostname,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Polls `url` until it answers 2xx (bounded by [`WAIT`]).
pub async fn wait_until_ok(http: &reqwest::Client, url: &str, what: &str) -> Result<()> {
    wait_for(what, WAIT, async || http.get(url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())).await
}

/// A master, the agents that registered with it, and a work dir; everything is torn down on drop.
// Fields drop in declaration order: agents stop first (killing their tasks), then the master, and the work dir
// with the logs goes last, so a failing test still prints them.
pub struct Cluster {
    pub agents: Vec<Proc>,
    pub master: Proc,
    pub master_addr: String,
    /// `127.0.0.1:PORT` of each agent, in the order started.
    pub agent_addrs: Vec<String>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a master with extra flags and waits until it answers `/health`.
    pub async fn start(master_flags: &[&str]) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("agora-it-").tempdir()?;
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--work-dir".into(),
            dir.path().join("master").display().to_string(),
        ];
        args.extend(master_flags.iter().map(|s| s.to_string()));
        let master = Proc::spawn("master", "agora-master", &args, dir.path())?;
        let cluster = Cluster {
            master_addr: format!("127.0.0.1:{port}"),
            master,
            agents: vec![],
            agent_addrs: vec![],
            http: reqwest::Client::new(),
            dir,
        };
        let url = format!("http://{}/health", cluster.master_addr);
        wait_until_ok(&cluster.http, &url, "the master to answer /health").await?;
        Ok(cluster)
    }

    /// Starts an agent with `resources` and waits until the master lists it.
    pub async fn add_agent(&mut self, resources: &str) -> Result<String> {
        self.add_agent_with(resources, &[]).await
    }

    /// Starts an agent with `resources` and `extra` flags (e.g. `--isolation=simulated`) and waits until the master
    /// lists it.
    pub async fn add_agent_with(&mut self, resources: &str, extra: &[&str]) -> Result<String> {
        let n = self.agents.len();
        let port = free_port();
        let work_dir = self.dir.path().join(format!("agent{n}"));
        let mut args = agent_args(&self.master_addr, port, &work_dir, resources, &format!("agent{n}"));
        args.extend(extra.iter().map(|s| s.to_string()));
        let before = self.agent_ids().await?;
        let proc = Proc::spawn(&format!("agent{n}"), "agora-agent", &args, self.dir.path())?;
        self.agents.push(proc);
        self.agent_addrs.push(format!("127.0.0.1:{port}"));
        let id = wait_for("the agent to register", WAIT, async || {
            let ids = self.agent_ids().await.ok()?;
            ids.into_iter().find(|id| !before.contains(id))
        })
        .await?;
        Ok(id)
    }

    pub async fn agent_ids(&self) -> Result<Vec<String>> {
        let s = self.state().await?;
        Ok(s["slaves"].as_array().into_iter().flatten().filter_map(|a| a["id"].as_str().map(String::from)).collect())
    }

    /// `GET /master/state`.
    pub async fn state(&self) -> Result<serde_json::Value> {
        let url = format!("http://{}/master/state", self.master_addr);
        Ok(self.http.get(url).send().await?.error_for_status()?.json().await?)
    }

    /// Runs the `agora` CLI to completion (bounded) and returns (exit code, stdout, stderr).
    pub async fn agora(&self, args: &[&str]) -> Result<(i32, String, String)> {
        run_agora(args).await
    }
}

/// Runs the `agora` CLI to completion (bounded by [`WAIT`] × 4) and returns (exit code, stdout, stderr).
pub async fn run_agora(args: &[&str]) -> Result<(i32, String, String)> {
    let mut cmd = tokio::process::Command::new(bin_dir().join("agora"));
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT * 4, cmd.output()).await.context("agora did not finish in time")??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// What a [`TestFramework`] saw.
#[derive(Debug, Clone)]
pub enum Event {
    Subscribed(String),
    Offers(Vec<Offer>),
    Rescinded(String),
    Update(TaskStatus),
    Failure(String),
    Error(String),
    Disconnected,
}

struct Forward(mpsc::UnboundedSender<Event>);

impl Scheduler for Forward {
    fn subscribed(&mut self, _d: &SchedulerDriver, framework_id: &str, _m: &agora_framework_sdk::MasterInfo) {
        let _ = self.0.send(Event::Subscribed(framework_id.into()));
    }
    fn offers(&mut self, _d: &SchedulerDriver, offers: Vec<Offer>) {
        let _ = self.0.send(Event::Offers(offers));
    }
    fn rescinded(&mut self, _d: &SchedulerDriver, offer_id: &str) {
        let _ = self.0.send(Event::Rescinded(offer_id.into()));
    }
    fn update(&mut self, _d: &SchedulerDriver, status: &TaskStatus) {
        let _ = self.0.send(Event::Update(status.clone()));
    }
    fn failure(&mut self, _d: &SchedulerDriver, agent_id: &str) {
        let _ = self.0.send(Event::Failure(agent_id.into()));
    }
    fn error(&mut self, _d: &SchedulerDriver, message: &str) {
        let _ = self.0.send(Event::Error(message.into()));
    }
    fn disconnected(&mut self, _d: &SchedulerDriver) {
        let _ = self.0.send(Event::Disconnected);
    }
}

/// A framework on the real SDK whose every event lands in a channel the test reads; the test drives it through
/// `driver`.
pub struct TestFramework {
    pub driver: SchedulerDriver,
    pub id: String,
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
    /// Events read past while waiting for something else, in order.
    pub seen: Vec<Event>,
}

impl TestFramework {
    pub async fn start(master: &str, info: FrameworkInfo) -> Result<TestFramework> {
        let (tx, events) = mpsc::unbounded_channel();
        let options = DriverOptions { connect_timeout: Some(WAIT), ..DriverOptions::default() };
        let driver = Driver::new(master, info, options)?;
        let handle = driver.handle();
        let task = tokio::spawn(async move {
            if let Err(e) = driver.run(Forward(tx.clone())).await {
                let _ = tx.send(Event::Error(format!("driver stopped: {e}")));
            }
        });
        let mut fw = TestFramework { driver: handle, id: String::new(), events, task, seen: vec![] };
        let id = fw
            .next_matching("SUBSCRIBED", |e| match e {
                Event::Subscribed(id) => Some(id.clone()),
                _ => None,
            })
            .await?;
        fw.id = id;
        Ok(fw)
    }

    /// Reads events until `f` picks one (bounded by [`WAIT`]); every event read is kept in `seen`.
    pub async fn next_matching<T>(&mut self, what: &str, f: impl Fn(&Event) -> Option<T>) -> Result<T> {
        self.next_matching_within(what, WAIT, f).await
    }

    pub async fn next_matching_within<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Event) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("timed out after {timeout:?} waiting for {what}; saw {:?}", self.seen))?
                .with_context(|| format!("framework event stream ended while waiting for {what}"))?;
            self.seen.push(ev.clone());
            if let Some(v) = f(&ev) {
                return Ok(v);
            }
        }
    }

    pub async fn next_offers(&mut self) -> Result<Vec<Offer>> {
        self.next_matching("OFFERS", |e| match e {
            Event::Offers(o) => Some(o.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for an update of `task_id` whose state satisfies `pred`.
    pub async fn update_of(&mut self, task_id: &str, pred: impl Fn(&TaskStatus) -> bool) -> Result<TaskStatus> {
        let what = format!("an update of task {task_id}");
        self.next_matching(&what, |e| match e {
            Event::Update(s) if s.task_id == task_id && pred(s) => Some(s.clone()),
            _ => None,
        })
        .await
    }

    /// An update of `task_id` satisfying `pred`: one already read (while waiting for something else), else the next.
    pub async fn seen_or_next_update(
        &mut self,
        task_id: &str,
        pred: impl Fn(&TaskStatus) -> bool,
    ) -> Result<TaskStatus> {
        let seen = self.seen.iter().find_map(|e| match e {
            Event::Update(s) if s.task_id == task_id && pred(s) => Some(s.clone()),
            _ => None,
        });
        match seen {
            Some(s) => Ok(s),
            None => self.update_of(task_id, pred).await,
        }
    }

    /// Waits until the framework is subscribed: its latest SUBSCRIBED came after its latest disconnection (a driver
    /// that lost its master resubscribes after a backoff; meanwhile it cannot send, e.g. a TEARDOWN).
    pub async fn subscribed(&mut self) -> Result<()> {
        loop {
            while let Ok(ev) = self.events.try_recv() {
                self.seen.push(ev);
            }
            let last = self.seen.iter().rev().find(|e| matches!(e, Event::Subscribed(_) | Event::Disconnected));
            if matches!(last, Some(Event::Subscribed(_))) {
                return Ok(());
            }
            self.next_matching("SUBSCRIBED", |e| matches!(e, Event::Subscribed(_)).then_some(())).await?;
        }
    }

    /// Tears the framework down and waits for the driver to stop.
    pub async fn teardown(self) {
        self.driver.teardown();
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

/// Kills leftover task processes whose command line contains `marker` (tasks of a SIGKILLed agent outlive it).
pub fn kill_processes_matching(marker: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) && pid != std::process::id() as i32 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Container tests need root (cgroups, namespaces) and `libseccomp-dev` (libcontainer links libseccomp): panics
/// saying how to get them when they are missing, never skips.
pub fn require_container_prerequisites() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "container tests need root (cgroups and namespaces): run them as root, e.g. `sudo -E cargo test -p \
         agora-integration-tests --test containers`"
    );
    assert!(
        Path::new("/sys/fs/cgroup").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false),
        "container tests need cgroups mounted at /sys/fs/cgroup (not inside `ip netns exec`)"
    );
    let seccomp = [
        "/usr/lib/x86_64-linux-gnu/libseccomp.so",
        "/usr/lib/aarch64-linux-gnu/libseccomp.so",
        "/usr/lib/libseccomp.so",
    ];
    assert!(
        seccomp.iter().any(|p| Path::new(p).exists()),
        "container tests need libseccomp-dev: `apt-get install -y libseccomp-dev busybox-static`"
    );
}

/// The HTTPS tests serve with `openssl s_server`: panics saying how to get it when it is missing.
pub fn require_openssl() {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("openssl").is_file() && d.join("curl").is_file()));
    assert!(
        found,
        "the HTTPS tests need openssl (their servers) and curl (the agent's client): apt-get install openssl curl"
    );
}

/// Where the browser tests live (`integration-tests/web`) and Debian's Chromium they drive; panics with the install
/// commands when node, Chromium or playwright-core is missing (never skips).
pub fn browser_prerequisites() -> (PathBuf, PathBuf) {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let hint = "install them with `apt-get install -y chromium nodejs` and `(cd integration-tests/web && npm ci)`";
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "the browser test needs node on PATH: {hint}");
    let chromium =
        std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(chromium.exists(), "the browser test needs Chromium at {} (or set CHROMIUM): {hint}", chromium.display());
    assert!(
        web.join("node_modules/playwright-core/package.json").exists(),
        "the browser test needs playwright-core in {}/node_modules: {hint}",
        web.display()
    );
    (web, chromium)
}

/// Runs the playwright-core script `web/<script>` in headless Chromium with `env` (plus `AGORA_SHOTS=shots` and
/// `CHROMIUM`), bounded by `WAIT × 8`; copies the screenshots named in `keep` that it took into
/// `target/<profile>/web-screenshots/` as artifacts; fails unless it exited 0 and printed `PASS`.
pub async fn run_browser_script(script: &str, env: &[(&str, String)], shots: &Path, keep: &[&str]) -> Result<()> {
    let (web, chromium) = browser_prerequisites();
    std::fs::create_dir_all(shots)?;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(web.join(script)).current_dir(&web).env("AGORA_SHOTS", shots).env("CHROMIUM", &chromium);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = cmd.stdin(Stdio::null()).kill_on_drop(true).output();
    let out =
        tokio::time::timeout(WAIT * 8, run).await.with_context(|| format!("{script} did not finish in time"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let artifacts = bin_dir().join("web-screenshots");
    std::fs::create_dir_all(&artifacts)?;
    for name in keep {
        if shots.join(name).exists() {
            std::fs::copy(shots.join(name), artifacts.join(name))?;
            eprintln!("screenshot: {}", artifacts.join(name).display());
        }
    }
    anyhow::ensure!(
        out.status.success() && stdout.contains("PASS"),
        "browser test {script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    Ok(())
}

/// `openssl s_server -WWW` serving the files of `dir` over HTTPS on a free loopback port, with a fresh self-signed
/// certificate for 127.0.0.1 in `dir/cert.pem` (hand it to the agent's `--fetcher-ca-file` to trust it); killed
/// on drop.
pub struct HttpsFiles {
    child: std::process::Child,
    pub port: u16,
    pub cert: PathBuf,
}

impl HttpsFiles {
    pub async fn start(dir: &Path) -> Result<HttpsFiles> {
        require_openssl();
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .current_dir(dir)
            .output()?;
        anyhow::ensure!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-cert", "cert.pem", "-key", "key.pem", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let server = HttpsFiles { child, port, cert: dir.join("cert.pem") };
        wait_for("openssl s_server to listen", WAIT, async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await?;
        Ok(server)
    }

    /// `https://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for HttpsFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A busybox root filesystem (static busybox and its applet links) under `dir`, for tasks naming a `rootfs`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "busybox rootfs tests need busybox-static: `apt-get install -y busybox-static`");
    let root = dir.join("busybox-rootfs");
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "mnt/sandbox"] {
        std::fs::create_dir_all(root.join(d)).expect("create rootfs dir");
    }
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    let out = Command::new(busybox).arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&out.stdout).lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
        .expect("write passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("write group");
    root
}

/// A safety net, not a fix: the agents stop gracefully (SIGTERM) and then nothing may stay mounted under the
/// cluster's directory (each container's monitor unmounts its root when the container ends, the agent when it
/// destroys one). Whatever still is after a bounded wait for monitors finishing is reported loudly — it is a bug in
/// the agent — and detached, so that one leak does not pile up on the machine and the directory can be removed.
impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            if let Ok(None) = agent.child.try_wait() {
                agent.terminate();
            }
        }
        let dir = self.dir.path().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = mounts_containing(&dir);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            left = mounts_containing(&dir);
        }
        if left.is_empty() {
            return;
        }
        eprintln!(
            "WARNING: LEAKED MOUNTS: {} mount(s) under {dir} outlived the cluster (a bug in the agent); detaching \
             them: {left:?}",
            left.len()
        );
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            if let Err(e) = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("WARNING: cannot detach {m}: {e}");
            }
        }
    }
}

/// Cgroup directories left under `/sys/fs/cgroup/<controller>/agora` (cgroup v1) or `/sys/fs/cgroup/agora` (v2).
pub fn leftover_container_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let roots = ["cpu", "cpuacct", "memory", "pids", "freezer", "devices", "blkio", "cpuset", ""];
    for c in roots {
        let dir = Path::new("/sys/fs/cgroup").join(c).join("agora");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            out.extend(entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Mount points whose path contains `marker` (`/proc/self/mountinfo`).
pub fn mounts_containing(marker: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.contains(marker))
        .map(String::from)
        .collect()
}

/// Starts an agent process on `work_dir` (as [`Cluster::add_agent`] does, with `extra` flags), for restarts.
pub fn spawn_agent(
    cluster: &Cluster,
    name: &str,
    port: u16,
    work_dir: &Path,
    resources: &str,
    extra: &[&str],
) -> Result<Proc> {
    let mut args = agent_args(&cluster.master_addr, port, work_dir, resources, name);
    args.extend(extra.iter().map(|s| s.to_string()));
    let log_name = format!(
        "{name}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
    );
    Proc::spawn(&log_name, "agora-agent", &args, cluster.dir.path())
}

// --- ZooKeeper and highly available masters (issue 4) ---------------------------------------------------------------

/// Debian's ZooKeeper server jar and the slf4j binding it logs through.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
pub const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";

/// Fails the test loudly, saying how to install ZooKeeper, when it is missing.
pub fn require_zookeeper() {
    for jar in [ZOOKEEPER_JAR, SLF4J_SIMPLE_JAR] {
        assert!(
            Path::new(jar).exists(),
            "{jar} not found: the HA tests need a real ZooKeeper server; install it with \
             `apt-get install -y zookeeper` (Debian's package; Java 11+ is needed too)"
        );
    }
    let java = Command::new("java").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        java.is_ok_and(|s| s.success()),
        "`java` not found: install a JRE (`apt-get install -y default-jre-headless`)"
    );
}

/// A standalone ZooKeeper server on a free loopback port with its data in `dir`, launched as Debian's package
/// installs it (the server class straight from the jar, no zkServer.sh); stopped on drop.
pub struct ZooKeeper {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// The server's `jute.maxbuffer`: the largest request (and node) it accepts, in bytes.
    max_buffer: usize,
}

/// The harness's `jute.maxbuffer` (16 MiB), roomier than ZooKeeper's default so tests with large registries pass.
pub const ZK_TEST_MAX_BUFFER: usize = 16 * 1024 * 1024;
/// ZooKeeper's default `jute.maxbuffer` (1 MiB − 1), what a production ensemble has unless configured otherwise.
pub const ZK_DEFAULT_MAX_BUFFER: usize = 0xfffff;

impl ZooKeeper {
    /// Starts a server in `dir` and waits until it answers `ruok` with `imok`.
    pub async fn start(dir: &Path) -> Result<ZooKeeper> {
        ZooKeeper::start_with_max_buffer(dir, ZK_TEST_MAX_BUFFER).await
    }

    /// Starts a server whose `jute.maxbuffer` is `bytes` (e.g. [`ZK_DEFAULT_MAX_BUFFER`], to test against the limit
    /// a production ensemble has).
    pub async fn start_with_max_buffer(dir: &Path, bytes: usize) -> Result<ZooKeeper> {
        require_zookeeper();
        let mut zk = ZooKeeper {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
            log: dir.join("zookeeper.log"),
            max_buffer: bytes,
        };
        zk.launch().await?;
        Ok(zk)
    }

    async fn launch(&mut self) -> Result<()> {
        std::fs::create_dir_all(self.dir.join("data"))?;
        let cfg = self.dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat\nminSessionTimeout=1000\n\
                 maxSessionTimeout=60000\n",
                self.dir.join("data").display(),
                self.port
            ),
        )?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new("java")
            .args(["-Xmx256m", "-Dzookeeper.jmx.log4j.disable=true"])
            .arg(format!("-Djute.maxbuffer={}", self.max_buffer))
            .arg("-cp")
            .arg(format!("{ZOOKEEPER_JAR}:{SLF4J_SIMPLE_JAR}"))
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn java for ZooKeeper")?;
        self.child = Some(child);
        let port = self.port;
        wait_for("ZooKeeper to answer ruok", WAIT, async || zk_ruok(port).await.then_some(())).await
    }

    /// `zk://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("zk://127.0.0.1:{}{path}", self.port)
    }

    /// `127.0.0.1:PORT`, for a ZooKeeper client.
    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait for the server to exit (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server and starts it again on the same port and data.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch().await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("----- zookeeper log ({}) -----\n{}", self.log.display(), self.log_text());
        }
    }
}

/// ZooKeeper's four-letter `ruok`: true when the server answers `imok`.
pub async fn zk_ruok(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if s.write_all(b"ruok").await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"imok")
}

/// Starts an `agora-master` contending through `zk_url`, on `port` with `work_dir`; `extra` flags appended.
pub fn spawn_ha_master(
    name: &str,
    port: u16,
    zk_url: &str,
    work_dir: &Path,
    log_dir: &Path,
    extra: &[&str],
) -> Result<Proc> {
    let mut args: Vec<String> = vec![
        "--ip".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--work-dir".into(),
        work_dir.display().to_string(),
        "--zk".into(),
        zk_url.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let log_name = format!(
        "{name}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
    );
    Proc::spawn(&log_name, "agora-master", &args, log_dir)
}

/// How a master answers `GET /master/state` without following redirects: `Ok(true)` if it serves it (it leads),
/// `Ok(false)` with the `Location` if it redirects, an error if it does not answer.
pub async fn master_leads(addr: &str) -> Result<(bool, Option<String>, u16)> {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let r = http.get(format!("http://{addr}/master/state")).send().await?;
    let location = r.headers().get("location").and_then(|v| v.to_str().ok()).map(String::from);
    Ok((r.status().is_success(), location, r.status().as_u16()))
}

/// Waits until exactly one of `addrs` leads and returns it.
pub async fn wait_for_leader(addrs: &[String], timeout: Duration) -> Result<String> {
    wait_for("one master to lead", timeout, async || {
        let mut leaders = Vec::new();
        for a in addrs {
            if let Ok((true, _, _)) = master_leads(a).await {
                leaders.push(a.clone());
            }
        }
        (leaders.len() == 1).then(|| leaders.remove(0))
    })
    .await
}
