//! The core driven through its public methods: launches, kills, health, recovery, the checkpoint files, `/state`.

use agora_proto::model::{Attributes, Capability, CommandInfo, ContainerInfo, ContainerType, Resources, Volume};

use super::*;
use crate::checkpoint::AgentCheckpoint;
use crate::containerizer::{Limitation, Limits, Recovered, RecoveredContainer, Termination};
use crate::health::Report;

pub(super) const SEC: Duration = Duration::from_secs(1);

fn launch_failed(message: &str) -> LaunchFailed {
    LaunchFailed { reason: Reason::ContainerLaunchFailed, message: message.into() }
}

/// Settings of a test agent (`node1`, work dir `/w`) started at `t0`.
pub(crate) fn settings(t0: Instant) -> Settings {
    Settings {
        agent: AgentInfo {
            id: None,
            hostname: "node1".into(),
            ip: "127.0.0.1".into(),
            port: 5051,
            resources: Resources::parse("cpus:4;mem:4096;ports:[31000-32000]").unwrap(),
            attributes: Attributes::parse("rack:r1").unwrap(),
        },
        work_dir: PathBuf::from("/w"),
        status_update_retry_interval: 10 * SEC,
        executor_shutdown_grace_period: 3 * SEC,
        path_env: Some("/bin".into()),
        started: (t0, 1000.0),
        images: crate::image::ImageSupport::NoRegistry,
        networks: false,
    }
}

pub(super) fn framework(caps: Vec<Capability>) -> FrameworkInfo {
    let mut f = FrameworkInfo::new("marathon");
    f.id = Some("m-0001".into());
    f.capabilities = caps;
    f
}

pub(super) fn task(id: &str, cmd: &str) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: id.into(),
        agent_id: "m-S0".into(),
        resources: Resources::parse("cpus:0.1;ports:[31000-31000]").unwrap(),
        command: Some(CommandInfo::shell(cmd)),
        container: None,
        health_check: None,
        kill_grace_period: None,
        labels: vec![],
        discovery: None,
        data: vec![],
    }
}

/// A task of the test framework `m-0001`.
pub(super) fn key(task_id: &str) -> TaskKey {
    TaskKey::new("m-0001", task_id)
}

pub(super) fn registered_core(t0: Instant) -> AgentCore {
    let mut core = AgentCore::new(settings(t0));
    assert!(matches!(core.connecting(), Registration::Register { .. }));
    core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None, network: None }, t0);
    core
}

pub(super) fn sent(effects: &[Effect]) -> Vec<(TaskState, TaskState)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(ToMaster::StatusUpdate(o)) => Some((o.status.state, o.latest_state)),
            _ => None,
        })
        .collect()
}

pub(super) fn uuid_of(effects: &[Effect]) -> Vec<u8> {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Send(ToMaster::StatusUpdate(o)) => o.status.uuid.clone(),
            _ => None,
        })
        .expect("a status update")
}

pub(super) fn launch_of(effects: &[Effect]) -> LaunchSpec {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Launch(s) => Some((**s).clone()),
            _ => None,
        })
        .expect("a launch")
}

#[test]
fn launches_carry_limits_user_and_rootfs() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let mut f = framework(vec![]);
    f.user = "fwuser".into();
    let mut t = task("t", "true");
    t.resources = Resources::parse("cpus:0.5;mem:64;disk:10").unwrap();
    let spec = launch_of(&core.handle(FromMaster::run_task(f.clone(), t.clone()), t0));
    assert_eq!(spec.limits, Limits { cpus: Some(0.5), mem_bytes: Some(64 << 20), disk_bytes: Some(10 << 20) });
    assert_eq!(spec.user.as_deref(), Some("fwuser"), "the framework's user when the command names none");
    assert_eq!(spec.rootfs, None);
    let mut t2 = task("t2", "true");
    t2.command.as_mut().unwrap().user = Some("cmduser".into());
    let spec = launch_of(&core.handle(FromMaster::run_task(f, t2), t0));
    assert_eq!(spec.user.as_deref(), Some("cmduser"));
}

#[test]
fn launches_carry_volumes_and_refuse_docker_or_impossible_volumes() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let container = |kind, volumes| ContainerInfo {
        kind,
        rootfs: None,
        volumes,
        hostname: None,
        image: None,
        network_infos: vec![],
    };
    let data = Volume { container_path: "/data".into(), host_path: "/srv/data".into(), read_only: true };
    let mut t = task("t", "true");
    t.container = Some(container(ContainerType::Mesos, vec![data.clone()]));
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), t), t0));
    assert_eq!(spec.volumes, vec![data]);

    let mut t = task("d", "true");
    t.container = Some(container(ContainerType::Docker, vec![]));
    let effects = core.handle(FromMaster::run_task(framework(vec![]), t), t0);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
    assert_eq!(core.task_state(&key("d")), Some(TaskState::Failed));

    let mut t = task("v", "true");
    let escape = Volume { container_path: "x".into(), host_path: "../../etc".into(), read_only: false };
    t.container = Some(container(ContainerType::Mesos, vec![escape]));
    let effects = core.handle(FromMaster::run_task(framework(vec![]), t), t0);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
    let ack = FromMaster::Acknowledge {
        framework_id: framework(vec![]).id.unwrap(),
        task_id: "v".into(),
        uuid: uuid_of(&effects),
    };
    let effects = core.handle(ack, t0);
    let failed = effects.iter().find_map(|e| match e {
        Effect::Send(ToMaster::StatusUpdate(o)) if o.status.state == TaskState::Failed => Some(o.status.clone()),
        _ => None,
    });
    let failed = failed.expect("a TASK_FAILED update");
    assert_eq!(failed.reason, Some(Reason::ContainerLaunchFailed));
    assert!(failed.message.contains("volume 'x' (host_path '../../etc')"), "{}", failed.message);
}

#[test]
fn an_image_becomes_a_request_or_fails_the_task_naming_it() {
    let t0 = Instant::now();
    let image_task = |id: &str, rootfs: Option<&str>| {
        let mut t = task(id, "true");
        t.container = Some(ContainerInfo {
            kind: ContainerType::Mesos,
            rootfs: rootfs.map(Into::into),
            volumes: vec![],
            hostname: None,
            image: Some("busybox".into()),
            network_infos: vec![],
        });
        t
    };
    let failure = |core: &mut AgentCore, id: &str, effects: Vec<Effect>| {
        assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
        let fid = framework(vec![]).id.unwrap();
        let ack = FromMaster::Acknowledge { framework_id: fid, task_id: id.into(), uuid: uuid_of(&effects) };
        core.handle(ack, t0)
            .into_iter()
            .find_map(|e| match e {
                Effect::Send(ToMaster::StatusUpdate(o)) if o.status.state == TaskState::Failed => Some(o.status),
                _ => None,
            })
            .expect("a TASK_FAILED update")
    };
    let mut core = registered_core(t0);
    let effects = core.handle(FromMaster::run_task(framework(vec![]), image_task("n", None)), t0);
    let failed = failure(&mut core, "n", effects);
    assert_eq!(failed.reason, Some(Reason::ContainerLaunchFailed));
    assert!(failed.message.contains("image 'busybox'") && failed.message.contains("--docker-registry"));

    let mut settings = settings(t0);
    settings.images = crate::image::ImageSupport::Registry("/reg".into());
    let mut core = AgentCore::new(settings);
    assert!(matches!(core.connecting(), Registration::Register { .. }));
    core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None, network: None }, t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), image_task("i", None)), t0));
    let req = spec.image.expect("an image request");
    assert_eq!((req.registry, req.store), ("/reg".into(), "/w/store/docker".into()));
    assert_eq!((req.reference.name.as_str(), req.reference.tag.as_str()), ("busybox", "latest"));
    assert_eq!(spec.rootfs, None, "the shell resolves the image into the rootfs");

    let effects = core.handle(FromMaster::run_task(framework(vec![]), image_task("b", Some("/r"))), t0);
    let failed = failure(&mut core, "b", effects);
    assert!(failed.message.contains("rootfs '/r' and image 'busybox'"), "{}", failed.message);
}

#[test]
fn limitations_fail_the_task_with_their_reason() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "x")), t0));
    core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    let oom = Termination::Limited(Limitation::Memory { limit_bytes: 32 << 20 });
    let effects = core.exited(&key("t"), &spec.container_id, Ok(oom), t0);
    let status = effects
        .iter()
        .find_map(|e| match e {
            Effect::Send(ToMaster::StatusUpdate(o)) => Some(o.status.clone()),
            _ => None,
        })
        .or_else(|| core.updates.snapshot().into_iter().flat_map(|q| q.pending).last())
        .unwrap();
    assert_eq!(status.state, TaskState::Failed);
    assert_eq!(status.reason, Some(Reason::ContainerLimitationMemory));
    assert!(status.message.contains("32MB"), "{}", status.message);
}

#[test]
fn recovery_reattaches_reports_ended_and_fails_lost_containers() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let mut ids = Vec::new();
    for id in ["runs", "ended", "lost", "unknown"] {
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task(id, "x")), t0));
        core.launched(&key(id), &spec.container_id, Ok(()), t0);
        ids.push(spec.container_id);
    }
    let cp = core.checkpoint();
    // Through JSON, as it is written to disk.
    let cp: AgentCheckpoint = serde_json::from_slice(&serde_json::to_vec(&cp).unwrap()).unwrap();
    assert_eq!(cp.agent_id.as_deref(), Some("m-S0"));
    assert_eq!(cp.updates.len(), 4, "unacknowledged updates are checkpointed");

    let t1 = t0 + 60 * SEC;
    let mut after = AgentCore::new(settings(t1));
    let found = vec![
        RecoveredContainer { container_id: ids[0].clone(), state: Recovered::Running },
        RecoveredContainer { container_id: ids[1].clone(), state: Recovered::Ended(Termination::Exited(7)) },
        RecoveredContainer { container_id: ids[2].clone(), state: Recovered::Lost("monitor gone".into()) },
        RecoveredContainer { container_id: "stray".into(), state: Recovered::Running },
    ];
    let effects = after.recover(cp, found, &Default::default(), t1);
    assert!(effects.contains(&Effect::Reattach { task: key("runs"), container_id: ids[0].clone() }));
    assert!(effects.contains(&Effect::Destroy { task: None, container_id: "stray".into() }));
    assert_eq!(after.task_state(&key("runs")), Some(TaskState::Running));
    assert_eq!(after.task_state(&key("ended")), Some(TaskState::Failed));
    assert_eq!(after.task_state(&key("lost")), Some(TaskState::Failed));
    assert_eq!(after.task_state(&key("unknown")), Some(TaskState::Failed));
    let pending: Vec<TaskStatus> = after.updates.snapshot().into_iter().flat_map(|q| q.pending).collect();
    let ended = pending.iter().find(|s| s.task_id == "ended" && s.state == TaskState::Failed).unwrap();
    assert_eq!(ended.message, "Command exited with status 7");
    let lost = pending.iter().find(|s| s.task_id == "lost" && s.state == TaskState::Failed).unwrap();
    assert_eq!(lost.reason, Some(Reason::ExecutorTerminated));
    assert!(lost.message.contains("monitor gone") && lost.message.contains(&ids[2]), "{}", lost.message);
    // It re-registers with its old id, reporting its tasks; the old unacknowledged updates go out again.
    let Registration::Reregister { agent, tasks, .. } = after.connecting() else { panic!("reregister") };
    assert_eq!(agent.id.as_deref(), Some("m-S0"));
    assert_eq!(tasks.len(), 4);
    let resent = after.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None, network: None }, t1);
    assert_eq!(sent(&resent).len(), 4);
}

fn checked_task(id: &str) -> TaskInfo {
    let mut t = task(id, "httpd");
    t.health_check = Some(agora_proto::model::HealthCheck {
        kind: agora_proto::model::HealthCheckType::Http,
        port: Some(31000),
        path: Some("/health".into()),
        scheme: None,
        statuses: vec![],
        ip_protocol: Default::default(),
        ignore_http1xx: false,
        command: None,
        delay_seconds: 0.0,
        interval_seconds: 1.0,
        timeout_seconds: 1.0,
        consecutive_failures: 2,
        grace_period_seconds: 0.0,
    });
    t.kill_grace_period = Some(7.0);
    t
}

fn pending(core: &AgentCore, task_id: &str) -> Vec<TaskStatus> {
    core.updates.snapshot().into_iter().flat_map(|q| q.pending).filter(|s| s.task_id == task_id).collect()
}

fn report(healthy: bool, failures: u32, kill: bool) -> Report {
    let message = if healthy { String::new() } else { format!("HTTP health check failed {failures} times") };
    Report { healthy, consecutive_failures: failures, kill, message }
}

#[test]
fn health_checks_start_when_running_and_report_through_status_updates() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), checked_task("t")), t0));
    let effects = core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    let Some(Effect::StartHealthCheck(check)) = effects.iter().find(|e| matches!(e, Effect::StartHealthCheck(_)))
    else {
        panic!("no health check started: {effects:?}")
    };
    assert_eq!((check.task.clone(), check.container_id.clone()), (key("t"), spec.container_id.clone()));
    assert!(check.env.contains(&("PORT0".to_string(), "31000".to_string())), "the task's environment");

    // A report for another container (an older run) is ignored.
    assert!(core.health(&key("t"), "other", report(true, 0, false), t0).is_empty());
    core.health(&key("t"), &spec.container_id, report(true, 0, false), t0 + SEC);
    core.health(&key("t"), &spec.container_id, report(false, 1, false), t0 + 2 * SEC);
    let statuses = pending(&core, "t");
    let health: Vec<(TaskState, Option<bool>, Option<Reason>)> =
        statuses.iter().map(|s| (s.state, s.healthy, s.reason)).collect();
    let updated = Some(Reason::TaskHealthCheckStatusUpdated);
    assert_eq!(
        health,
        vec![
            (TaskState::Starting, None, None),
            (TaskState::Running, None, None),
            (TaskState::Running, Some(true), updated),
            (TaskState::Running, Some(false), updated),
        ]
    );
    assert_eq!(statuses[3].message, "HTTP health check failed 1 times");
    assert_eq!(core.task_state(&key("t")), Some(TaskState::Running));
}

#[test]
fn failing_health_checks_kill_the_task_through_its_kill_policy() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let fw = framework(vec![Capability::TaskKillingState]);
    let spec = launch_of(&core.handle(FromMaster::run_task(fw, checked_task("t")), t0));
    core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    let effects = core.health(&key("t"), &spec.container_id, report(false, 2, true), t0 + SEC);
    assert!(effects.contains(&Effect::StopHealthCheck { task: key("t") }));
    assert!(effects.contains(&Effect::Signal {
        task: key("t"),
        container_id: spec.container_id.clone(),
        signal: Signal::SIGTERM
    }));
    assert_eq!(core.task_state(&key("t")), Some(TaskState::Killing));
    assert_eq!(core.longest_grace(), 7 * SEC, "the task's kill policy");
    // Later reports (a check already under way) change nothing.
    assert!(core.health(&key("t"), &spec.container_id, report(false, 3, true), t0 + 2 * SEC).is_empty());
    // Its checkpoint remembers why, so a restarted agent reports the end the same way.
    let cp = core.checkpoint();
    assert_eq!(cp.tasks[0].unhealthy_kill.as_deref(), Some("HTTP health check failed 2 times"));

    let effects = core.exited(&key("t"), &spec.container_id, Ok(Termination::Signaled(15)), t0 + 3 * SEC);
    assert!(effects.contains(&Effect::StopHealthCheck { task: key("t") }));
    let statuses = pending(&core, "t");
    let last = statuses.last().unwrap();
    assert_eq!((last.state, last.healthy, last.reason), (TaskState::Killed, Some(false), None));
    assert_eq!(last.message, "HTTP health check failed 2 times; Command terminated with signal SIGTERM");
    let kinds: Vec<(TaskState, Option<bool>)> = statuses.iter().map(|s| (s.state, s.healthy)).collect();
    assert_eq!(
        kinds[2..],
        [(TaskState::Running, Some(false)), (TaskState::Killing, None), (TaskState::Killed, Some(false))]
    );
}

#[test]
fn health_checks_restart_for_recovered_running_tasks_only() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let mut ids = Vec::new();
    for id in ["runs", "killing"] {
        let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), checked_task(id)), t0));
        core.launched(&key(id), &spec.container_id, Ok(()), t0);
        ids.push(spec.container_id);
    }
    core.handle(FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "killing".into(), grace: None }, t0);
    let cp = core.checkpoint();
    let mut after = AgentCore::new(settings(t0));
    let found = ids.iter().map(|id| RecoveredContainer { container_id: id.clone(), state: Recovered::Running });
    let effects = after.recover(cp, found.collect(), &Default::default(), t0 + SEC);
    let started: Vec<TaskKey> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::StartHealthCheck(c) => Some(c.task.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![key("runs")]);
}

#[test]
fn ping_is_answered_even_before_registration() {
    let mut core = AgentCore::new(settings(Instant::now()));
    assert_eq!(core.handle(FromMaster::Ping, Instant::now()), vec![Effect::Send(ToMaster::Pong)]);
}

/// Writes what changed, as the shell does before a batch's effects go out, and checks that the files then hold
/// exactly the whole checkpoint; returns how many task files the batch wrote or removed.
fn sync(core: &mut AgentCore, dir: &mut crate::checkpoint::CheckpointDir, work: &std::path::Path) -> usize {
    let changes = core.take_changes();
    dir.write(&changes).unwrap();
    let on_disk = crate::checkpoint::read(work, true).unwrap().expect("a checkpoint").checkpoint;
    assert_eq!(on_disk, core.checkpoint(), "the files lag behind the core");
    changes.tasks.len()
}

fn ack(core: &mut AgentCore, framework_id: &str, task_id: &str, effects: &[Effect], now: Instant) -> Vec<Effect> {
    let uuid = uuid_of(effects);
    core.handle(FromMaster::Acknowledge { framework_id: framework_id.into(), task_id: task_id.into(), uuid }, now)
}

#[test]
fn the_per_task_files_follow_every_change_and_a_batch_writes_only_the_tasks_it_changed() {
    let work = tempfile::tempdir().unwrap();
    let mut dir = crate::checkpoint::CheckpointDir::open(work.path()).unwrap();
    let t0 = Instant::now();
    let mut core = AgentCore::new(settings(t0));
    core.mark_all_changed();
    assert_eq!(sync(&mut core, &mut dir, work.path()), 0, "a fresh agent writes agent.info only");
    core.connecting();
    core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None, network: None }, t0);
    sync(&mut core, &mut dir, work.path());

    let fw = framework(vec![Capability::TaskKillingState]);
    let mut other = framework(vec![]);
    other.id = Some("m-0002".into());
    let mut starting = BTreeMap::new();
    let mut specs = BTreeMap::new();
    for (f, id) in [(&fw, "t1"), (&fw, "t2"), (&fw, "t3"), (&other, "t1")] {
        let effects = core.handle(FromMaster::run_task(f.clone(), task(id, "sleep 60")), t0);
        let k = TaskKey::new(f.id.clone().unwrap(), id);
        specs.insert(k.clone(), launch_of(&effects));
        starting.insert(k, effects);
    }
    assert_eq!(sync(&mut core, &mut dir, work.path()), 4);

    // One launch result and one acknowledgement: two task files, whatever the agent runs.
    let (k1, k2, k3, ko) = (key("t1"), key("t2"), key("t3"), TaskKey::new("m-0002", "t1"));
    core.launched(&k1, &specs[&k1].container_id, Ok(()), t0);
    ack(&mut core, "m-0001", "t2", &starting[&k2], t0);
    assert_eq!(sync(&mut core, &mut dir, work.path()), 2);
    // Retries change nothing on disk.
    core.tick(t0 + 10 * SEC);
    assert_eq!(sync(&mut core, &mut dir, work.path()), 0);

    core.launched(&k2, &specs[&k2].container_id, Err(launch_failed("no")), t0);
    core.launched(&k3, &specs[&k3].container_id, Ok(()), t0);
    core.launched(&ko, &specs[&ko].container_id, Ok(()), t0);
    core.handle(FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "t3".into(), grace: None }, t0);
    core.tick(t0 + 20 * SEC);
    core.handle(
        FromMaster::InvalidTask { framework_id: "m-0001".into(), task_id: "bad/id".into(), message: "x".into() },
        t0,
    );
    sync(&mut core, &mut dir, work.path());
    core.exited(&k3, &specs[&k3].container_id, Ok(Termination::Signaled(9)), t0);
    core.exited(&k1, &specs[&k1].container_id, Ok(Termination::Exited(0)), t0);
    sync(&mut core, &mut dir, work.path());

    // Acknowledging every update forgets the ended tasks: their files go.
    for _ in 0..4 {
        let fronts: Vec<Outbound> = core.updates.resend_all(t0);
        for o in fronts {
            let uuid = o.status.uuid.clone().unwrap();
            let (framework_id, task_id) = (o.framework_id.clone(), o.status.task_id.clone());
            core.handle(FromMaster::Acknowledge { framework_id, task_id, uuid }, t0);
        }
        sync(&mut core, &mut dir, work.path());
    }
    assert_eq!(core.task_state(&k1), None);
    assert_eq!(core.task_state(&ko), Some(TaskState::Running));
    let tasks_dir = work.path().join("meta/frameworks/m-0001/tasks");
    assert_eq!(std::fs::read_dir(&tasks_dir).map(|d| d.count()).unwrap_or(0), 0, "no file of a forgotten task");

    // A framework shut down; the master refusing the agent.
    core.handle(FromMaster::ShutdownFramework { framework_id: "m-0002".into() }, t0);
    sync(&mut core, &mut dir, work.path());
    core.exited(&ko, &specs[&ko].container_id, Ok(Termination::Signaled(15)), t0);
    let effects = core.handle(FromMaster::run_task(fw.clone(), task("t4", "sleep 60")), t0);
    sync(&mut core, &mut dir, work.path());
    core.handle(FromMaster::Error { message: "removed".into() }, t0);
    sync(&mut core, &mut dir, work.path());

    // Recovery loads the files as they are and writes only what it changes: here, the lost container of t4.
    let on_disk = crate::checkpoint::read(work.path(), true).unwrap().unwrap().checkpoint;
    let mut after = AgentCore::new(settings(t0));
    after.recover(on_disk, vec![], &Default::default(), t0);
    let changes = after.take_changes();
    let t4 = launch_of(&effects);
    assert_eq!(changes.tasks.keys().collect::<Vec<_>>(), vec![&key("t4")], "{t4:?}");
    dir.write(&changes).unwrap();
    assert_eq!(crate::checkpoint::read(work.path(), true).unwrap().unwrap().checkpoint, after.checkpoint());
}

#[test]
fn task_runs_to_finished_with_ordered_acknowledged_updates() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let effects = core.handle(FromMaster::run_task(framework(vec![]), task("t1", "echo hi")), t0);
    assert_eq!(sent(&effects), vec![(TaskState::Starting, TaskState::Starting)]);
    let starting_uuid = uuid_of(&effects);
    let spec = launch_of(&effects);
    assert_eq!(
        spec.sandbox,
        PathBuf::from(format!("/w/slaves/m-S0/frameworks/m-0001/executors/t1/runs/{}", spec.container_id))
    );
    assert!(spec.env.contains(&("PORT0".to_string(), "31000".to_string())));
    assert_eq!(core.live_containers(), 1);

    // RUNNING waits behind the unacknowledged STARTING.
    let effects = core.launched(&key("t1"), &spec.container_id, Ok(()), t0);
    assert!(sent(&effects).is_empty());
    assert_eq!(core.task_state(&key("t1")), Some(TaskState::Running));

    // A retry of STARTING carries the latest state.
    let effects = core.tick(t0 + 10 * SEC);
    assert_eq!(sent(&effects), vec![(TaskState::Starting, TaskState::Running)]);

    let effects = core.handle(
        FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "t1".into(), uuid: starting_uuid },
        t0 + 11 * SEC,
    );
    assert_eq!(sent(&effects), vec![(TaskState::Running, TaskState::Running)]);
    let running_uuid = uuid_of(&effects);

    let effects = core.exited(&key("t1"), &spec.container_id, Ok(Termination::Exited(0)), t0 + 12 * SEC);
    assert_eq!(effects[0], Effect::Destroy { task: Some(key("t1")), container_id: spec.container_id.clone() });
    assert!(sent(&effects).is_empty());
    let effects = core.handle(
        FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "t1".into(), uuid: running_uuid },
        t0 + 12 * SEC,
    );
    assert_eq!(sent(&effects), vec![(TaskState::Finished, TaskState::Finished)]);
    let Effect::Send(ToMaster::StatusUpdate(fin)) = &effects[0] else { panic!() };
    assert_eq!(fin.status.message, "Command exited with status 0");
    assert_eq!(fin.status.source, Source::Executor);
    assert_eq!(fin.status.agent_id, "m-S0");
    assert_eq!(fin.status.timestamp, 1012.0);
    assert_eq!(fin.status.uuid.as_ref().map(Vec::len), Some(16));
    let finished_uuid = uuid_of(&effects);

    assert_eq!(core.live_containers(), 0);
    assert_eq!(core.task_state(&key("t1")), Some(TaskState::Finished));
    core.handle(
        FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "t1".into(), uuid: finished_uuid },
        t0 + 13 * SEC,
    );
    assert_eq!(core.task_state(&key("t1")), None, "forgotten once its terminal update is acknowledged");
    let state = core.state_json();
    assert_eq!(state["frameworks"][0]["completed_tasks"][0]["state"], "TASK_FINISHED");
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn failures_carry_reason_and_message() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "exit 3")), t0));
    core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    core.exited(&key("t"), &spec.container_id, Ok(Termination::Exited(3)), t0);
    core.exited(&key("t"), &spec.container_id, Ok(Termination::Exited(0)), t0);
    assert_eq!(core.task_state(&key("t")), Some(TaskState::Failed));

    let spec2 = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("u", "x")), t0));
    let effects = core.launched(&key("u"), &spec2.container_id, Err(launch_failed("cannot run 'x': not found")), t0);
    assert!(sent(&effects).is_empty(), "waits behind STARTING");
    assert_eq!(core.task_state(&key("u")), Some(TaskState::Failed));
    assert_eq!(core.live_containers(), 0);
}

#[test]
fn duplicate_task_ids_and_bad_ids_are_handled() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let first = core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 1")), t0);
    assert!(!first.is_empty());
    let dup = core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 1")), t0);
    assert!(dup.is_empty());

    let effects = core.handle(FromMaster::run_task(framework(vec![]), task("../evil", "x")), t0);
    assert_eq!(sent(&effects), vec![(TaskState::Failed, TaskState::Failed)]);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
    let Effect::Send(ToMaster::StatusUpdate(o)) = &effects[0] else { panic!() };
    assert_eq!(o.status.reason, Some(Reason::ContainerLaunchFailed));
    assert!(o.status.message.contains("'../evil'"), "{}", o.status.message);
}

#[test]
fn kill_sends_sigterm_then_sigkill_after_grace() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let mut t = task("t", "sleep 60");
    t.kill_grace_period = Some(5.0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), t), t0));
    core.launched(&key("t"), &spec.container_id, Ok(()), t0);

    let kill = FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "t".into(), grace: None };
    let effects = core.handle(kill.clone(), t0 + SEC);
    assert_eq!(
        effects,
        vec![Effect::Signal { task: key("t"), container_id: spec.container_id.clone(), signal: Signal::SIGTERM }]
    );
    assert!(core.handle(kill, t0 + SEC).is_empty(), "a second kill changes nothing");
    assert!(core.tick(t0 + 5 * SEC).iter().all(|e| !matches!(e, Effect::Signal { .. })));
    let effects = core.tick(t0 + 6 * SEC);
    assert!(effects.contains(&Effect::Signal {
        task: key("t"),
        container_id: spec.container_id.clone(),
        signal: Signal::SIGKILL
    }));
    assert!(core.tick(t0 + 7 * SEC).iter().all(|e| !matches!(e, Effect::Signal { .. })), "SIGKILL goes once");
    core.exited(&key("t"), &spec.container_id, Ok(Termination::Signaled(9)), t0 + 7 * SEC);
    assert_eq!(core.task_state(&key("t")), Some(TaskState::Killed));

    let unknown = FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "nope".into(), grace: None };
    assert!(core.handle(unknown, t0).is_empty());
}

#[test]
fn kill_policy_of_the_kill_wins_and_killing_state_needs_the_capability() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let fw = framework(vec![Capability::TaskKillingState]);
    let effects = core.handle(FromMaster::run_task(fw, task("t", "sleep 60")), t0);
    let starting = uuid_of(&effects);
    let spec = launch_of(&effects);
    core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    core.handle(FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "t".into(), uuid: starting }, t0);
    let effects =
        core.handle(FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "t".into(), grace: Some(SEC) }, t0);
    assert_eq!(core.task_state(&key("t")), Some(TaskState::Killing));
    assert!(effects.iter().any(|e| matches!(e, Effect::Signal { signal: Signal::SIGTERM, .. })));
    assert_eq!(core.next_deadline(), Some(t0 + SEC));
    let effects = core.exited(&key("t"), &spec.container_id, Ok(Termination::Signaled(15)), t0);
    assert_eq!(core.task_state(&key("t")), Some(TaskState::Killed));
    assert!(sent(&effects).is_empty(), "KILLED waits behind RUNNING and KILLING");
}

#[test]
fn kill_during_launch_signals_once_launched() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 9")), t0));
    let effects =
        core.handle(FromMaster::KillTask { framework_id: "m-0001".into(), task_id: "t".into(), grace: None }, t0);
    assert!(effects.is_empty());
    let effects = core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    assert_eq!(
        effects,
        vec![Effect::Signal { task: key("t"), container_id: spec.container_id.clone(), signal: Signal::SIGTERM }]
    );
    assert_eq!(core.next_deadline(), Some(t0 + 3 * SEC));
}

#[test]
fn reregistration_reports_tasks_and_resends_fronts() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 60")), t0));
    core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    core.disconnected();
    assert!(!core.is_registered());
    assert!(sent(&core.tick(t0 + 100 * SEC)).is_empty(), "no retries while disconnected");
    let Registration::Reregister { agent, tasks, frameworks, .. } = core.connecting() else { panic!("reregister") };
    assert_eq!(agent.id.as_deref(), Some("m-S0"));
    assert_eq!(tasks.len(), 1);
    assert_eq!((tasks[0].framework_id.as_str(), tasks[0].state), ("m-0001", TaskState::Running));
    assert_eq!(frameworks[0].name, "marathon");
    let effects =
        core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None, network: None }, t0 + 100 * SEC);
    assert_eq!(sent(&effects), vec![(TaskState::Starting, TaskState::Running)]);
}

#[test]
fn master_error_kills_everything_and_forgets_the_id() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 60")), t0));
    core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    let effects = core.handle(FromMaster::Error { message: "agent removed".into() }, t0);
    assert!(effects.iter().any(|e| matches!(e, Effect::Signal { signal: Signal::SIGTERM, .. })));
    assert!(sent(&effects).is_empty());
    assert_eq!(core.agent_id(), None);
    core.disconnected();
    assert!(matches!(core.connecting(), Registration::Register { .. }));
    let effects = core.exited(&key("t"), &spec.container_id, Ok(Termination::Signaled(15)), t0);
    assert!(sent(&effects).is_empty());
    assert_eq!(core.task_state(&key("t")), None);
    assert_eq!(core.live_containers(), 0);
}

#[test]
fn shutdown_kills_all_and_refuses_new_tasks() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let a = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("a", "sleep 60")), t0));
    core.launched(&key("a"), &a.container_id, Ok(()), t0);
    let effects = core.shutdown(t0);
    assert_eq!(effects.iter().filter(|e| matches!(e, Effect::Signal { .. })).count(), 1);
    assert!(core.handle(FromMaster::run_task(framework(vec![]), task("b", "true")), t0).is_empty());
    assert_eq!(core.live_containers(), 1);
    core.exited(&key("a"), &a.container_id, Ok(Termination::Signaled(15)), t0);
    assert_eq!(core.live_containers(), 0);
}

#[test]
fn shutdown_framework_kills_only_its_tasks() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let mut other = FrameworkInfo::new("other");
    other.id = Some("m-0002".into());
    let a = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("a", "sleep 60")), t0));
    let b = launch_of(&core.handle(FromMaster::run_task(other, task("b", "sleep 60")), t0));
    core.launched(&key("a"), &a.container_id, Ok(()), t0);
    core.launched(&TaskKey::new("m-0002", "b"), &b.container_id, Ok(()), t0);
    let effects = core.handle(FromMaster::ShutdownFramework { framework_id: "m-0002".into() }, t0);
    assert_eq!(
        effects,
        vec![Effect::Signal {
            task: TaskKey::new("m-0002", "b"),
            container_id: b.container_id.clone(),
            signal: Signal::SIGTERM
        }]
    );
    // Its updates are dropped: nothing is retried for it, and it is forgotten once it exits.
    let effects = core.exited(&TaskKey::new("m-0002", "b"), &b.container_id, Ok(Termination::Signaled(15)), t0);
    assert!(sent(&effects).is_empty());
    assert_eq!(core.task_state(&TaskKey::new("m-0002", "b")), None);
    let retried: Vec<String> = core
        .tick(t0 + 60 * SEC)
        .iter()
        .filter_map(|e| match e {
            Effect::Send(ToMaster::StatusUpdate(o)) => Some(o.status.task_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(retried, vec!["a".to_string()]);
    let state = core.state_json();
    assert_eq!(state["frameworks"][1]["completed_tasks"][0]["state"], "TASK_KILLED");

    // A finished task of a torn-down framework is forgotten at once.
    let c = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("c", "true")), t0));
    core.launched(&key("c"), &c.container_id, Ok(()), t0);
    core.exited(&key("c"), &c.container_id, Ok(Termination::Exited(0)), t0);
    core.handle(FromMaster::ShutdownFramework { framework_id: "m-0001".into() }, t0);
    assert_eq!(core.task_state(&key("c")), None);
    assert_eq!(core.live_containers(), 1, "task a is still being killed");
}

#[test]
fn two_frameworks_may_run_the_same_task_id_independently() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let mut other = FrameworkInfo::new("other");
    other.id = Some("m-0002".into());
    let (ka, kb) = (key("hello-0"), TaskKey::new("m-0002", "hello-0"));

    // Both launch, each in its own framework's sandbox.
    let ea = core.handle(FromMaster::run_task(framework(vec![]), task("hello-0", "sleep 60")), t0);
    let eb = core.handle(FromMaster::run_task(other.clone(), task("hello-0", "sleep 60")), t0);
    let (a, b) = (launch_of(&ea), launch_of(&eb));
    assert_ne!(a.container_id, b.container_id);
    assert_ne!(a.sandbox, b.sandbox);
    assert_eq!((a.framework_id.as_str(), b.framework_id.as_str()), ("m-0001", "m-0002"));
    let (starting_a, starting_b) = (uuid_of(&ea), uuid_of(&eb));
    assert_eq!(core.live_containers(), 2);
    // A same-framework duplicate is still ignored.
    assert!(core.handle(FromMaster::run_task(other, task("hello-0", "sleep 60")), t0).is_empty());

    // Launch results are told apart by framework.
    core.launched(&ka, &a.container_id, Ok(()), t0);
    assert_eq!(core.task_state(&ka), Some(TaskState::Running));
    assert_eq!(core.task_state(&kb), Some(TaskState::Starting));
    core.launched(&kb, &b.container_id, Ok(()), t0);
    assert_eq!(core.task_state(&kb), Some(TaskState::Running));

    // Acknowledging one framework's STARTING releases only its RUNNING; the other's queue is untouched, and an
    // acknowledgement with the other framework's uuid is ignored.
    let wrong =
        FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "hello-0".into(), uuid: starting_b.clone() };
    assert!(core.handle(wrong, t0).is_empty());
    let ack_a = FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "hello-0".into(), uuid: starting_a };
    let effects = core.handle(ack_a, t0);
    assert_eq!(sent(&effects), vec![(TaskState::Running, TaskState::Running)]);
    let Effect::Send(ToMaster::StatusUpdate(o)) = &effects[0] else { panic!() };
    assert_eq!(o.framework_id, "m-0001");
    assert_eq!(core.updates.pending_states(&ka), vec![TaskState::Running]);
    assert_eq!(core.updates.pending_states(&kb), vec![TaskState::Starting, TaskState::Running]);

    // The checkpoint round-trips both.
    let cp = core.checkpoint();
    let cp: AgentCheckpoint = serde_json::from_slice(&serde_json::to_vec(&cp).unwrap()).unwrap();
    assert_eq!(cp.tasks.len(), 2);
    assert_eq!(cp.updates.len(), 2);
    let mut after = AgentCore::new(settings(t0));
    let found = vec![
        RecoveredContainer { container_id: a.container_id.clone(), state: Recovered::Running },
        RecoveredContainer { container_id: b.container_id.clone(), state: Recovered::Running },
    ];
    let effects = after.recover(cp.clone(), found, &Default::default(), t0);
    assert!(effects.contains(&Effect::Reattach { task: ka.clone(), container_id: a.container_id.clone() }));
    assert!(effects.contains(&Effect::Reattach { task: kb.clone(), container_id: b.container_id.clone() }));
    assert_eq!(after.task_state(&ka), Some(TaskState::Running));
    assert_eq!(after.task_state(&kb), Some(TaskState::Running));
    assert_eq!(after.updates.pending_states(&ka), vec![TaskState::Running]);
    assert_eq!(after.updates.pending_states(&kb), vec![TaskState::Starting, TaskState::Running]);
    assert_eq!(after.checkpoint(), cp);

    // Killing one kills only it.
    let kill = FromMaster::KillTask { framework_id: "m-0002".into(), task_id: "hello-0".into(), grace: None };
    let effects = core.handle(kill, t0);
    assert_eq!(
        effects,
        vec![Effect::Signal { task: kb.clone(), container_id: b.container_id.clone(), signal: Signal::SIGTERM }]
    );
    let effects = core.exited(&kb, &b.container_id, Ok(Termination::Signaled(15)), t0);
    assert_eq!(effects[0], Effect::Destroy { task: Some(kb.clone()), container_id: b.container_id.clone() });
    assert_eq!(core.task_state(&kb), Some(TaskState::Killed));
    assert_eq!(core.task_state(&ka), Some(TaskState::Running));
    assert_eq!(core.live_containers(), 1);
    // An exit reported under the wrong framework's key changes nothing.
    assert!(core.exited(&kb, &a.container_id, Ok(Termination::Exited(0)), t0).is_empty());
    assert_eq!(core.task_state(&ka), Some(TaskState::Running));

    let state = core.state_json();
    assert_eq!(state["frameworks"][0]["executors"][0]["tasks"][0]["state"], "TASK_RUNNING");
    assert_eq!(state["frameworks"][1]["executors"][0]["tasks"][0]["state"], "TASK_KILLED");
}

#[test]
fn state_json_has_mesos_shape() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), task("t", "sleep 60")), t0));
    core.launched(&key("t"), &spec.container_id, Ok(()), t0);
    let s = core.state_json();
    assert_eq!(s["id"], "m-S0");
    assert_eq!(s["pid"], "slave(1)@127.0.0.1:5051");
    assert_eq!(s["hostname"], "node1");
    assert_eq!(s["port"], 5051);
    assert_eq!(s["resources"]["cpus"], 4);
    assert_eq!(s["resources"]["ports"], "[31000-32000]");
    assert_eq!(s["attributes"]["rack"], "r1");
    assert_eq!(s["start_time"], 1000.0);
    let fw = &s["frameworks"][0];
    assert_eq!(fw["id"], "m-0001");
    assert_eq!(fw["name"], "marathon");
    let ex = &fw["executors"][0];
    assert_eq!(ex["id"], "t");
    assert_eq!(ex["directory"], spec.sandbox.display().to_string());
    let t = &ex["tasks"][0];
    assert_eq!(t["id"], "t");
    assert_eq!(t["state"], "TASK_RUNNING");
    assert_eq!(t["slave_id"], "m-S0");
    assert_eq!(t["framework_id"], "m-0001");
    assert_eq!(t["resources"]["cpus"], 0.1);
}

#[test]
fn invalid_task_is_reported_failed() {
    let t0 = Instant::now();
    let mut core = registered_core(t0);
    let effects = core.handle(
        FromMaster::InvalidTask { framework_id: "f".into(), task_id: "t".into(), message: "bad resources".into() },
        t0,
    );
    let Some(Effect::Send(ToMaster::StatusUpdate(o))) = effects.first() else { panic!("{effects:?}") };
    assert_eq!(o.status.state, TaskState::Failed);
    assert_eq!(o.status.reason, Some(Reason::TaskInvalid));
}
