//! The agent's checkpoint cost per batch of events (see BENCHMARKS.md, "Agent checkpoint"), old format against
//! new in the same run: an agent core with N running tasks shaped like Marathon's (`sleep 3600`, Marathon's
//! environment, one port), one of them being killed (TASK_KILLING queued), and the checkpoint write the shell does
//! before a batch's effects go out:
//! - `single_file`: the format before per-task files, the whole checkpoint serialised and written to
//!   `meta/agent.json` (temporary file, fsync, rename) per batch, whatever changed;
//! - `per_task`: what the batch changed (`AgentCore::take_changes`; here the one task) written by
//!   `CheckpointDir::write`: the task's file (temporary file, fsync, rename) and one fsync of its directory.
//!
//! `*_cpu` are the same without the disk (the records built and serialised). `all_changed` is the opposite case, a
//! batch in which every task changed (a burst of launches, a migration): per-task files pay one fsync per task.
//! The work dir is a temporary directory under `$TMPDIR` (on this machine's disk, as an agent's work dir is).
//!
//! `cargo bench -p agora-agent --bench checkpoint` (criterion; add a filter such as `one_changed` to run a part).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use agora_agent::checkpoint::{self, CheckpointDir};
use agora_agent::core::{AgentCore, Effect, FromMaster, Settings, ToMaster};
use agora_proto::model::{AgentInfo, CommandInfo, FrameworkInfo, Resources, TaskInfo};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};

const TASKS: [usize; 2] = [1_000, 10_000];

fn settings(work_dir: &Path) -> Settings {
    Settings {
        agent: AgentInfo {
            id: None,
            hostname: "bench".into(),
            ip: "127.0.0.1".into(),
            port: 5051,
            resources: Resources::parse("cpus:1000;mem:1000000;ports:[31000-32000]").expect("resources"),
            attributes: Default::default(),
        },
        work_dir: work_dir.to_path_buf(),
        status_update_retry_interval: Duration::from_secs(10),
        executor_shutdown_grace_period: Duration::from_secs(3),
        path_env: None,
        started: (Instant::now(), 0.0),
        images: agora_agent::image::ImageSupport::NoRegistry,
        networks: false,
    }
}

/// A task as Marathon builds it for `{"cmd": "sleep 3600", "cpus": 0.01, "mem": 8}` with its default port.
fn marathon_task(i: usize) -> TaskInfo {
    let task_id = format!("bench-app.{:08x}-8f5e-11ef-9d1c-0242ac120002", i);
    let port = (31000 + i % 1000).to_string();
    let mut command = CommandInfo::shell("sleep 3600");
    let env = [
        ("PORT0", port.as_str()),
        ("PORT", port.as_str()),
        ("PORTS", port.as_str()),
        ("HOST", "bench"),
        ("MARATHON_APP_ID", "/bench-app"),
        ("MARATHON_APP_VERSION", "2026-11-24T13:00:00.000Z"),
        ("MARATHON_APP_RESOURCE_CPUS", "0.01"),
        ("MARATHON_APP_RESOURCE_MEM", "8.0"),
        ("MARATHON_APP_RESOURCE_DISK", "0.0"),
        ("MARATHON_APP_RESOURCE_GPUS", "0"),
        ("MARATHON_APP_LABELS", ""),
        ("MESOS_TASK_ID", task_id.as_str()),
    ];
    command.environment = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TaskInfo {
        name: "bench-app".into(),
        task_id: task_id.clone(),
        agent_id: "bench-S0".into(),
        resources: Resources::parse(&format!("cpus:0.01;mem:8;ports:[{port}-{port}]")).expect("resources"),
        command: Some(command),
        container: None,
        health_check: None,
        kill_grace_period: None,
        labels: vec![],
        discovery: None,
        data: vec![],
    }
}

fn acknowledge_all(core: &mut AgentCore, effects: Vec<Effect>, now: Instant) {
    let mut queue = effects;
    while let Some(effect) = queue.pop() {
        if let Effect::Send(ToMaster::StatusUpdate(o)) = effect {
            let uuid = o.status.uuid.clone().unwrap_or_default();
            let ack = FromMaster::Acknowledge { framework_id: o.framework_id, task_id: o.status.task_id, uuid };
            queue.extend(core.handle(ack, now));
        }
    }
}

/// A registered core with `n` running tasks, every update acknowledged.
fn core_with(n: usize, work_dir: &Path) -> AgentCore {
    let now = Instant::now();
    let mut core = AgentCore::new(settings(work_dir));
    core.connecting();
    core.handle(FromMaster::Registered { agent_id: "bench-S0".into(), master: None, network: None }, now);
    let mut framework = FrameworkInfo::new("marathon");
    framework.id = Some("bench-0000".into());
    for i in 0..n {
        let effects = core.handle(FromMaster::run_task(framework.clone(), marathon_task(i)), now);
        let container_id = effects
            .iter()
            .find_map(|e| match e {
                Effect::Launch(spec) => Some(spec.container_id.clone()),
                _ => None,
            })
            .expect("a launch");
        let key = agora_agent::core::TaskKey::new("bench-0000", marathon_task(i).task_id);
        let mut more = core.launched(&key, &container_id, Ok(()), now);
        more.extend(effects);
        acknowledge_all(&mut core, more, now);
    }
    core
}

/// One task changes: the master asks to kill task `i` (TASK_KILLING is queued).
fn change_one(core: &mut AgentCore, i: usize) {
    let kill =
        FromMaster::KillTask { framework_id: "bench-0000".into(), task_id: marathon_task(i).task_id, grace: None };
    core.handle(kill, Instant::now());
}

/// A core with `n` running tasks whose checkpoint is on disk in both formats, and what a batch that changed task 0
/// alone gives `CheckpointDir::write`.
struct Agent {
    _work: tempfile::TempDir,
    core: AgentCore,
    dir: CheckpointDir,
    legacy: std::path::PathBuf,
    one: checkpoint::Changes,
}

fn agent(n: usize) -> Agent {
    let work = tempfile::tempdir().expect("a temporary work dir");
    let mut core = core_with(n, work.path());
    let mut dir = CheckpointDir::open(work.path()).expect("the checkpoint dir");
    core.mark_all_changed();
    dir.write(&core.take_changes()).expect("the first write");
    change_one(&mut core, 0);
    let one = core.take_changes();
    assert!(one.agent.is_none() && one.frameworks.is_empty() && one.tasks.len() == 1, "one task changed");
    dir.write(&one).expect("the write of the change");
    let legacy = checkpoint::legacy_path(work.path());
    Agent { _work: work, core, dir, legacy, one }
}

impl Agent {
    /// The old write: the whole checkpoint, whatever changed.
    fn single_file(&self, disk: bool) {
        let bytes = checkpoint::legacy_bytes(&self.core.checkpoint());
        if disk {
            agora_runtime::write_atomically(&self.legacy, &bytes, agora_runtime::Durability::MachineCrash)
                .expect("the single file written");
        }
        black_box(bytes);
    }

    /// The new write of a batch that changed task 0 (marked changed again as the batch would have).
    fn per_task(&mut self, disk: bool) {
        self.core.retry_changes(&self.one);
        let changes = self.core.take_changes();
        if disk {
            self.dir.write(&changes).expect("the task file written");
        } else {
            let records = changes.tasks.values().flatten().map(|r| serde_json::to_vec(r).expect("a record"));
            black_box(records.collect::<Vec<_>>());
        }
    }

    /// The new write of a batch in which every task changed.
    fn all_changed(&mut self) {
        self.core.mark_all_changed();
        let changes = self.core.take_changes();
        self.dir.write(&changes).expect("every file written");
    }
}

fn one_changed(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_changed");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sampling_mode(SamplingMode::Flat);
    for n in TASKS {
        let mut a = agent(n);
        group.bench_function(BenchmarkId::new("single_file", n), |b| b.iter(|| a.single_file(true)));
        group.bench_function(BenchmarkId::new("per_task", n), |b| b.iter(|| a.per_task(true)));
        group.bench_function(BenchmarkId::new("single_file_cpu", n), |b| b.iter(|| a.single_file(false)));
        group.bench_function(BenchmarkId::new("per_task_cpu", n), |b| b.iter(|| a.per_task(false)));
    }
    group.finish();
}

fn all_changed(c: &mut Criterion) {
    let mut group = c.benchmark_group("all_changed");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sampling_mode(SamplingMode::Flat);
    let n = TASKS[0];
    let mut a = agent(n);
    group.bench_function(BenchmarkId::new("single_file", n), |b| b.iter(|| a.single_file(true)));
    group.bench_function(BenchmarkId::new("per_task", n), |b| b.iter(|| a.all_changed()));
    group.finish();
}

criterion_group!(benches, one_changed, all_changed);
criterion_main!(benches);
