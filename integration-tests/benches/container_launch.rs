//! Container launch latency, printed as one JSON object (see BENCHMARKS.md, "Container launch"):
//! - `agent_*`: through a real master and agent (`--isolation=libcontainer`), from the framework's LAUNCH call to its
//!   TASK_RUNNING update (`true` and `sleep`), and from its KILL call to TASK_KILLED (`sleep`);
//! - `containerizer_true`: the agent's containerizer alone on a busybox rootfs (launch, wait, destroy);
//! - `crun_true`, `runc_true`: `crun run` / `runc run` on an equivalent OCI bundle (busybox rootfs, read-only root,
//!   the same cpu, memory and pids limits), crun in a private mount namespace without the cgroup2 mount it refuses.
//!
//! Run as root after `cargo build --workspace --bins`:
//! `cargo bench -p agora-integration-tests --profile dev --bench container_launch -- [N]` (N tasks per series, 200).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agora_agent::containerizer::{Containerizer, LaunchSpec, LibcontainerContainerizer, LibcontainerOptions, Limits};
use agora_framework_sdk::{FrameworkInfo, Resources, TaskInfo, TaskInfoExt, TaskState};
use agora_integration_tests::{
    Cluster, Event, TestFramework, bin_dir, busybox_rootfs, require_container_prerequisites,
};
use agora_proto::model::CommandInfo;
use serde_json::{Value, json};

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    json!({"n": ms.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "min_ms": ms[0], "max_ms": ms[ms.len() - 1]})
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn agent_series(n: usize) -> anyhow::Result<(Value, Value, Value)> {
    let mut cluster = Cluster::start(&["--allocation-interval", "20ms"]).await?;
    let agent = cluster.add_agent("cpus:2;mem:2048;disk:4096;ports:[31000-32000]").await?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("bench")).await?;
    let res: Resources = "cpus:0.1;mem:32".parse().map_err(anyhow::Error::msg)?;
    let (mut run_true, mut run_sleep, mut kill_sleep) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..2 * n {
        let sleep = i % 2 == 1;
        let id = format!("b{i}");
        let cmd = if sleep { "sleep 600" } else { "true" };
        // An offer may have come while waiting for updates; it was kept in `seen`.
        let kept = fw.seen.iter().position(|e| matches!(e, Event::Offers(_)));
        let offer = match kept.map(|i| fw.seen.remove(i)) {
            Some(Event::Offers(mut o)) => o.remove(0),
            _ => {
                let o = fw.next_offers().await?.remove(0);
                fw.seen.retain(|e| !matches!(e, Event::Offers(_)));
                o
            }
        };
        let started = Instant::now();
        fw.driver.launch(&offer, vec![TaskInfo::command(&id, &id, &agent, res.clone(), cmd)]);
        fw.update_of(&id, |s| s.state == TaskState::Running || s.state.is_terminal()).await?;
        let took = ms(started.elapsed());
        if sleep {
            run_sleep.push(took);
            let killed = Instant::now();
            fw.driver.kill(&id, &agent);
            fw.update_of(&id, |s| s.state == TaskState::Killed).await?;
            kill_sleep.push(ms(killed.elapsed()));
        } else {
            run_true.push(took);
            fw.update_of(&id, |s| s.state.is_terminal()).await?;
        }
        fw.seen.retain(|e| !matches!(e, Event::Update(_)));
    }
    fw.teardown().await;
    drop(cluster);
    Ok((summary(run_true), summary(run_sleep), summary(kill_sleep)))
}

async fn containerizer_series(dir: &Path, rootfs: &Path, n: usize) -> Value {
    let options = LibcontainerOptions {
        run_root: dir.join("containers"),
        hostskel: dir.join("hostskel"),
        monitor: bin_dir().join("agora-container-monitor"),
        disk_watch_interval: Duration::from_secs(15),
    };
    let c = LibcontainerContainerizer::new(options).expect("libcontainer works here");
    let mut out = Vec::new();
    for i in 0..n {
        let sandbox = dir.join("sandboxes").join(i.to_string());
        std::fs::create_dir_all(&sandbox).expect("sandbox");
        let mut command = CommandInfo::shell("/bin/true");
        command.shell = false;
        let spec = LaunchSpec {
            container_id: format!("bench-{}-{i}", std::process::id()),
            task_id: format!("t{i}"),
            framework_id: "bench".into(),
            command,
            env: vec![("PATH".into(), "/bin".into())],
            sandbox,
            limits: Limits { cpus: Some(0.5), mem_bytes: Some(64 << 20), disk_bytes: None },
            user: None,
            rootfs: Some(rootfs.to_path_buf()),
            image: None,
            volumes: vec![],
            working_dir: None,
            network: None,
        };
        let started = Instant::now();
        c.launch(&spec).await.expect("launch");
        c.wait(&spec.container_id).await.expect("wait");
        c.destroy(&spec.container_id).await.expect("destroy");
        out.push(ms(started.elapsed()));
    }
    summary(out)
}

/// An OCI bundle for `runc`/`crun` equivalent to the containerizer's: busybox rootfs, read-only root, `/bin/true`,
/// 0.5 CPU, 64 MiB, 4096 pids, pid/mount/ipc/uts/cgroup namespaces (host network).
fn write_bundle(bundle: &Path, rootfs: &Path) {
    std::fs::create_dir_all(bundle).expect("bundle dir");
    let out = Command::new("runc").args(["spec", "--bundle"]).arg(bundle).output().expect("runc spec");
    assert!(out.status.success(), "runc spec: {}", String::from_utf8_lossy(&out.stderr));
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("json");
    spec["root"] = json!({"path": rootfs, "readonly": true});
    spec["process"]["args"] = json!(["/bin/true"]);
    spec["process"]["terminal"] = json!(false);
    spec["linux"]["resources"] = json!({
        "memory": {"limit": 64 << 20, "swap": 64 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 4096},
    });
    let ns: Vec<Value> = ["pid", "mount", "ipc", "uts", "cgroup"].iter().map(|t| json!({"type": t})).collect();
    spec["linux"]["namespaces"] = json!(ns);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write config.json");
}

fn runtime_series(runtime: &str, bundle: &Path, n: usize) -> Value {
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("{runtime}-bench-{}-{i}", std::process::id());
        let mut cmd = if runtime == "crun" {
            let mut c = Command::new("unshare");
            let script =
                format!("umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run -b {} {id}", bundle.display());
            c.args(["-m", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("runc");
            c.args(["run", "-b"]).arg(bundle).arg(&id);
            c
        };
        let started = Instant::now();
        let status = cmd.stdin(std::process::Stdio::null()).status().expect(runtime);
        let took = ms(started.elapsed());
        assert!(status.success(), "{runtime} run failed: {status}");
        out.push(took);
    }
    summary(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    require_container_prerequisites();
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200);
    let dir = tempfile::Builder::new().prefix("agora-bench-").tempdir()?;
    let rootfs = busybox_rootfs(dir.path());
    let (run_true, run_sleep, kill_sleep) = agent_series(n).await?;
    let direct = containerizer_series(dir.path(), &rootfs, n).await;
    let bundle = dir.path().join("bundle");
    write_bundle(&bundle, &rootfs);
    let runc = runtime_series("runc", &bundle, n);
    let crun = runtime_series("crun", &bundle, n);
    let report = json!({
        "tasks_per_series": n,
        "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        "agent_launch_to_running_true": run_true,
        "agent_launch_to_running_sleep": run_sleep,
        "agent_kill_to_killed_sleep": kill_sleep,
        "containerizer_true": direct,
        "runc_true": runc,
        "crun_true": crun,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
