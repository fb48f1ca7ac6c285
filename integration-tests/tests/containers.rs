//! Containers end to end, as root: real libcontainer containers through the agent's containerizer and through real
//! master and agent processes; cgroup files read from the host; the agent `kill -9`ed and restarted.
//! Missing prerequisites (root, cgroups, libseccomp-dev, busybox-static) fail the tests with how to install them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_agent::containerizer::{
    Containerizer, LaunchSpec, LibcontainerContainerizer, LibcontainerOptions, Limitation, Limits, Termination,
};
use agora_framework_sdk::{FrameworkInfo, Reason, Resources, TaskInfo, TaskInfoExt, TaskState};
use agora_integration_tests::{
    Cluster, TestFramework, WAIT, bin_dir, busybox_rootfs, free_port, kill_processes_matching,
    leftover_container_cgroups, mounts_containing, require_container_prerequisites, spawn_agent, wait_for,
};
use agora_proto::model::CommandInfo;
use nix::sys::signal::Signal;

const MB: u64 = 1024 * 1024;

struct Rig {
    dir: tempfile::TempDir,
    c: LibcontainerContainerizer,
}

fn rig(disk_watch: Duration) -> Rig {
    require_container_prerequisites();
    let dir = tempfile::Builder::new().prefix("agora-ct-").tempdir().expect("tempdir");
    let options = LibcontainerOptions {
        run_root: dir.path().join("containers"),
        hostskel: dir.path().join("hostskel"),
        monitor: bin_dir().join("agora-container-monitor"),
        disk_watch_interval: disk_watch,
    };
    assert!(options.monitor.exists(), "build the binaries first: `cargo build --workspace --bins`");
    let c = LibcontainerContainerizer::new(options).expect("libcontainer works here");
    Rig { dir, c }
}

impl Rig {
    fn spec(&self, id: &str, shell: &str, limits: Limits) -> LaunchSpec {
        let sandbox = self.dir.path().join("sandboxes").join(id);
        std::fs::create_dir_all(&sandbox).expect("sandbox");
        LaunchSpec {
            container_id: id.to_string(),
            task_id: format!("task-{id}"),
            framework_id: "fw".into(),
            command: CommandInfo::shell(shell),
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()),
                ("AGORA_SANDBOX".into(), sandbox.display().to_string()),
            ],
            sandbox,
            limits,
            user: None,
            rootfs: None,
            image: None,
            volumes: vec![],
            working_dir: None,
            network: None,
        }
    }

    fn out(&self, spec: &LaunchSpec) -> String {
        std::fs::read_to_string(spec.sandbox.join("stdout")).unwrap_or_default()
            + &std::fs::read_to_string(spec.sandbox.join("stderr")).unwrap_or_default()
    }

    async fn run(&self, spec: &LaunchSpec) -> Termination {
        self.c.launch(spec).await.expect("launch");
        let t = tokio::time::timeout(WAIT, self.c.wait(&spec.container_id)).await.expect("bounded wait").expect("wait");
        self.c.destroy(&spec.container_id).await.expect("destroy");
        t
    }
}

fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

fn cgroup_file(controller: &str, id: &str, file: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller).join("agora").join(id).join(file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_pid_1_of_its_namespace_and_cannot_write_the_host_root() {
    let r = rig(Duration::from_secs(15));
    let id = unique("pidns");
    let script = "echo pid=$$; echo procs=$(ls /proc | grep -c '^[0-9]'); \
                  touch /usr/agora-probe && echo usr=written || echo usr=read-only; \
                  touch /agora-probe && echo root=written || echo root=read-only; \
                  echo x > /tmp/t && echo tmp=ok; echo x > $AGORA_SANDBOX/f && echo sandbox=$AGORA_SANDBOX; \
                  echo cwd=$(pwd)";
    let spec = r.spec(&id, script, Limits::default());
    assert_eq!(r.run(&spec).await, Termination::Exited(0), "{}", r.out(&spec));
    let out = r.out(&spec);
    assert!(out.contains("pid=1\n"), "the task's shell is pid 1 of its own namespace: {out}");
    let procs: u32 =
        out.split("procs=").nth(1).and_then(|s| s.lines().next()).and_then(|n| n.trim().parse().ok()).unwrap();
    assert!(procs <= 4, "only the task's own processes are visible, saw {procs}: {out}");
    assert!(out.contains("usr=read-only") && out.contains("root=read-only"), "{out}");
    assert!(!Path::new("/usr/agora-probe").exists() && !Path::new("/agora-probe").exists());
    assert!(
        out.contains("tmp=ok") && out.contains("sandbox=/mnt/sandbox") && out.contains("cwd=/mnt/sandbox"),
        "{out}"
    );
    assert!(spec.sandbox.join("f").exists(), "the sandbox is the host's sandbox directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busybox_rootfs_and_a_user_are_honoured_and_a_missing_user_fails() {
    let r = rig(Duration::from_secs(15));
    let rootfs = busybox_rootfs(r.dir.path());
    let id = unique("busybox");
    let mut spec = r.spec(&id, "echo uid=$(id -u); ls /usr/bin/apt >/dev/null 2>&1 && echo host-usr || echo own-root; echo ok > $AGORA_SANDBOX/mine", Limits::default());
    spec.rootfs = Some(rootfs.clone());
    spec.user = Some("nobody".into());
    assert_eq!(r.run(&spec).await, Termination::Exited(0), "{}", r.out(&spec));
    let out = r.out(&spec);
    assert!(out.contains("uid=65534") && out.contains("own-root"), "{out}");
    assert!(spec.sandbox.join("mine").exists(), "the user can write its sandbox: {out}");

    let mut ghost = r.spec(&unique("ghost"), "true", Limits::default());
    ghost.user = Some("ghost".into());
    let err = r.c.launch(&ghost).await.expect_err("a missing user fails the launch").to_string();
    assert!(err.contains("user 'ghost' does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_limits_are_set_in_the_cgroups() {
    let r = rig(Duration::from_secs(15));
    let id = unique("limits");
    let limits = Limits { cpus: Some(0.5), mem_bytes: Some(64 * MB), disk_bytes: None };
    let spec = r.spec(&id, "sleep 30", limits);
    r.c.launch(&spec).await.expect("launch");
    let read = |c: &str, f: &str| std::fs::read_to_string(cgroup_file(c, &id, f)).map(|s| s.trim().to_string());
    assert_eq!(read("cpu", "cpu.cfs_quota_us").unwrap(), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us").unwrap(), "100000");
    assert_eq!(read("cpu", "cpu.shares").unwrap(), "512");
    assert_eq!(read("memory", "memory.limit_in_bytes").unwrap(), (64 * MB).to_string());
    assert_eq!(read("pids", "pids.max").unwrap(), "4096");
    let usage = r.c.usage(&id).await.expect("usage");
    assert_eq!(usage.cpus_limit, Some(0.5));
    assert_eq!(usage.mem_limit_bytes, Some(64 * MB));
    r.c.kill(&id, Signal::SIGTERM).await.expect("kill");
    let t = tokio::time::timeout(WAIT, r.c.wait(&id)).await.unwrap().unwrap();
    // `sleep` as pid 1 has no SIGTERM handler, so the kernel would ignore SIGTERM; it gets SIGKILL instead.
    assert_eq!(t, Termination::Signaled(9));
    r.c.destroy(&id).await.unwrap();
    assert!(!cgroup_file("memory", &id, "").exists(), "the cgroup is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_allocating_task_is_oom_killed_and_reported_with_its_limit() {
    let r = rig(Duration::from_secs(15));
    let id = unique("oom");
    let limits = Limits { cpus: Some(1.0), mem_bytes: Some(32 * MB), disk_bytes: None };
    let spec = r.spec(&id, "head -c 200m /dev/zero | tail > /dev/null", limits);
    let t = r.run(&spec).await;
    assert_eq!(t, Termination::Limited(Limitation::Memory { limit_bytes: 32 * MB }), "{}", r.out(&spec));
    assert!(t.message().contains("32MB"), "{}", t.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_over_its_disk_is_killed_with_the_disk_limitation() {
    let r = rig(Duration::from_millis(200));
    let id = unique("disk");
    let limits = Limits { cpus: Some(1.0), mem_bytes: Some(256 * MB), disk_bytes: Some(2 * MB) };
    let spec = r.spec(&id, "head -c 8m /dev/zero > $AGORA_SANDBOX/big; sleep 30", limits);
    let t = r.run(&spec).await;
    let Termination::Limited(Limitation::Disk { limit_bytes, used_bytes }) = t else {
        panic!("{t:?}: {}", r.out(&spec))
    };
    assert_eq!(limit_bytes, 2 * MB);
    assert!(used_bytes > 2 * MB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_leave_no_cgroups_mounts_or_processes() {
    let r = rig(Duration::from_secs(15));
    let prefix = unique("leak");
    let started = Instant::now();
    let limits = Limits { cpus: Some(0.1), mem_bytes: Some(32 * MB), disk_bytes: None };
    let r = std::sync::Arc::new(r);
    let mut handles = Vec::new();
    for worker in 0..4 {
        let (r, prefix) = (r.clone(), prefix.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..250 {
                let spec = r.spec(&format!("{prefix}-{worker}-{i}"), "true", limits);
                assert_eq!(r.run(&spec).await, Termination::Exited(0), "{}", r.out(&spec));
            }
        }));
    }
    for h in handles {
        h.await.expect("worker");
    }
    let left: Vec<PathBuf> =
        leftover_container_cgroups().into_iter().filter(|p| p.to_string_lossy().contains(&prefix)).collect();
    assert!(left.is_empty(), "leftover cgroups: {left:?}");
    assert!(mounts_containing(&prefix).is_empty() && mounts_containing("agora-ct-").is_empty());
    let run_root = r.dir.path().join("containers");
    assert_eq!(std::fs::read_dir(&run_root).map(|d| d.count()).unwrap_or(0), 0, "checkpoints removed");
    let monitors = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&prefix))
        })
        .count();
    assert_eq!(monitors, 0, "no process of the test's containers is left");
    eprintln!("1000 containers in {:?}", started.elapsed());
}

// ---- through real master and agent processes ----

const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";

fn res(s: &str) -> Resources {
    s.parse().expect("test resources")
}

/// Every process log of a cluster (the harness prints them only after their directory is gone).
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            out += &format!(
                "----- {} -----\n{}\n",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            );
        }
    }
    out
}

/// An update of `task_id` matching `pred`, already seen or still to come; panics (printing the logs) when none comes.
async fn update(
    logs_dir: &Path,
    fw: &mut TestFramework,
    task_id: &str,
    pred: impl Fn(&agora_framework_sdk::TaskStatus) -> bool,
) -> agora_framework_sdk::TaskStatus {
    let seen = fw.seen.iter().find_map(|e| match e {
        agora_integration_tests::Event::Update(s) if s.task_id == task_id && pred(s) => Some(s.clone()),
        _ => None,
    });
    match seen {
        Some(s) => s,
        None => fw.update_of(task_id, pred).await.unwrap_or_else(|e| panic!("{e:#}\n{}", logs(logs_dir))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_oom_with_the_memory_reason_and_serves_statistics() -> anyhow::Result<()> {
    require_container_prerequisites();
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("oom")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let marker = unique("sleep 600.");
    let hog = TaskInfo::command("hog", "hog", &agent, res("cpus:0.5;mem:32"), "head -c 200m /dev/zero | tail");
    let idle = TaskInfo::command("idle", "idle", &agent, res("cpus:0.5;mem:64"), marker.replace('-', "").as_str());
    fw.driver.launch(&offer, vec![hog, idle]);
    let status = update(cluster.dir.path(), &mut fw, "hog", |s| s.state.is_terminal()).await;
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    assert_eq!(status.reason, Some(Reason::ContainerLimitationMemory), "{status:?}");
    assert!(status.message.contains("32MB"), "{status:?}");
    update(cluster.dir.path(), &mut fw, "idle", |s| s.state == TaskState::Running).await;
    let url = format!("http://{}/monitor/statistics", cluster.agent_addrs[0]);
    let stats: serde_json::Value = cluster.http.get(&url).send().await?.error_for_status()?.json().await?;
    let idle = stats.as_array().into_iter().flatten().find(|e| e["executor_id"] == "idle").cloned();
    let idle = idle.unwrap_or_else(|| panic!("no statistics for idle: {stats:#}"));
    assert_eq!(idle["framework_id"], fw.id.as_str());
    assert_eq!(idle["statistics"]["mem_limit_bytes"], 64 * MB);
    assert_eq!(idle["statistics"]["cpus_limit"], 0.5);
    assert!(idle["statistics"]["cpus_user_time_secs"].is_number() && idle["statistics"]["timestamp"].is_number());
    fw.driver.kill("idle", &agent);
    update(cluster.dir.path(), &mut fw, "idle", |s| s.state == TaskState::Killed).await;
    fw.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_an_agent_kill_9_and_one_that_exits_meanwhile_is_reported() -> anyhow::Result<()> {
    require_container_prerequisites();
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let work_dir = cluster.dir.path().join("agent0");
    let port: u16 = cluster.agent_addrs[0].rsplit(':').next().unwrap().parse()?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("survivor")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let marker = format!("sleep 600.{}", std::process::id());
    let stays = TaskInfo::command("stays", "stays", &agent, res("cpus:0.5;mem:64"), marker.as_str());
    let exits = TaskInfo::command("exits", "exits", &agent, res("cpus:0.5;mem:64"), "sleep 3; exit 7");
    fw.driver.launch(&offer, vec![stays, exits]);
    update(cluster.dir.path(), &mut fw, "stays", |s| s.state == TaskState::Running).await;
    update(cluster.dir.path(), &mut fw, "exits", |s| s.state == TaskState::Running).await;
    let sleeper_pid = |m: &str| -> Option<i32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            (c.trim() == m).then(|| e.file_name().to_string_lossy().parse().ok()).flatten()
        })
    };
    // TASK_RUNNING means the container's init exists; it may not have exec'd `sleep` yet.
    let before = wait_for("the task's sleep to run", WAIT, async || sleeper_pid(&marker)).await?;

    cluster.agents[0].kill9();
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    // The second task ends while the agent is down; its monitor records the exit.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sleeper_pid(&marker), Some(before), "the container kept running without its agent");
    cluster.agents[0] = spawn_agent(&cluster, "agent0", port, &work_dir, AGENT, &[])?;

    let status = update(cluster.dir.path(), &mut fw, "exits", |s| s.state.is_terminal()).await;
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    assert_eq!(status.message, "Command exited with status 7", "{status:?}");
    assert!(status.timestamp > killed_at + 4.0, "reported by the restarted agent: {status:?}");
    let url = format!("http://{}/state", cluster.agent_addrs[0]);
    let http = cluster.http.clone();
    let state = wait_for("the restarted agent to re-register", WAIT, async || {
        let s: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (s["registered"] == true).then_some(s)
    })
    .await?;
    assert_eq!(state["id"], agent.as_str(), "the agent keeps its id");
    assert_eq!(cluster.agent_ids().await?, vec![agent.clone()]);
    let running: Vec<&str> = state["frameworks"][0]["executors"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(running, vec!["stays"], "{state:#}");
    assert!(
        !fw.seen.iter().any(|e| matches!(e, agora_integration_tests::Event::Update(s) if s.task_id == "stays" && !matches!(s.state, TaskState::Starting | TaskState::Running))),
        "the framework saw no interruption of the surviving task: {:?}",
        fw.seen
    );
    assert_eq!(sleeper_pid(&marker), Some(before));
    fw.driver.kill("stays", &agent);
    update(cluster.dir.path(), &mut fw, "stays", |s| s.state == TaskState::Killed).await;
    assert_eq!(sleeper_pid(&marker), None, "the re-attached container was killed");
    kill_processes_matching(&marker);
    fw.teardown().await;
    let _ = free_port;
    Ok(())
}

/// The containers under `work_dir` whose root (or anything else under their checkpoint directory) is mounted.
fn containers_with_mounts(work_dir: &Path) -> std::collections::BTreeSet<String> {
    let containers = work_dir.join("containers");
    mounts_containing(&work_dir.display().to_string())
        .iter()
        .filter_map(|m| Path::new(m).strip_prefix(&containers).ok()?.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_container_root_stays_mounted_after_an_agent_kill_9_a_recovery_and_a_graceful_stop() -> anyhow::Result<()> {
    require_container_prerequisites();
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let work_dir = cluster.dir.path().join("agent0");
    let port: u16 = cluster.agent_addrs[0].rsplit(':').next().unwrap().parse()?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("mounts")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let (ends, stays) = (format!("sleep 601.{}", std::process::id()), format!("sleep 602.{}", std::process::id()));
    let ends_task = TaskInfo::command("ends", "ends", &agent, res("cpus:0.5;mem:64"), ends.as_str());
    let stays_task = TaskInfo::command("stays", "stays", &agent, res("cpus:0.5;mem:64"), stays.as_str());
    // Kills what a failed assertion leaves running (the agent is down for part of the test).
    struct KillOnDrop(Vec<String>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            self.0.iter().for_each(|m| kill_processes_matching(m));
        }
    }
    let _leftovers = KillOnDrop(vec![ends.clone(), stays.clone()]);
    fw.driver.launch(&offer, vec![ends_task, stays_task]);
    update(cluster.dir.path(), &mut fw, "ends", |s| s.state == TaskState::Running).await;
    update(cluster.dir.path(), &mut fw, "stays", |s| s.state == TaskState::Running).await;
    assert_eq!(containers_with_mounts(&work_dir).len(), 2, "{:?}", mounts_containing(&work_dir.display().to_string()));

    // The agent crashes; one task ends while it is down. Its root must not outlive it: no agent may ever come back.
    cluster.agents[0].kill9();
    wait_for("the task's sleep to run", WAIT, async || {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .any(|e| {
                let c = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&c).contains(&ends)
            })
            .then_some(())
    })
    .await?;
    kill_processes_matching(&ends);
    wait_for("only the running container's root to stay mounted", WAIT, async || {
        (containers_with_mounts(&work_dir).len() == 1).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {:?}", mounts_containing(&work_dir.display().to_string())))?;

    // The restarted agent recovers both containers; stopped gracefully, it kills the running one and destroys both.
    cluster.agents[0] = spawn_agent(&cluster, "agent0", port, &work_dir, AGENT, &[])?;
    let status = update(cluster.dir.path(), &mut fw, "ends", |s| s.state.is_terminal()).await;
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    let url = format!("http://{}/state", cluster.agent_addrs[0]);
    let http = cluster.http.clone();
    wait_for("the restarted agent to re-register", WAIT, async || {
        let s: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (s["registered"] == true).then_some(())
    })
    .await?;
    let exit = cluster.agents[0].terminate();
    assert!(exit.is_some_and(|s| s.success()), "the agent stops gracefully: {exit:?}\n{}", logs(cluster.dir.path()));
    let left = mounts_containing(&work_dir.display().to_string());
    let dirs: Vec<_> = std::fs::read_dir(work_dir.join("containers"))?.flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "mounted after a graceful stop: {left:?}\n{}", logs(cluster.dir.path()));
    assert!(dirs.is_empty(), "container checkpoints left after a graceful stop: {dirs:?}");
    fw.teardown().await;
    Ok(())
}
