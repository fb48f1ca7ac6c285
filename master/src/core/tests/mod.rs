//! Tests of the master core through a harness: inputs in, effects out, time advanced by hand.

use std::time::{Duration, Instant};

use agora_proto::model::{
    AgentInfo, Attributes, Capability, CommandInfo, FrameworkInfo, MasterInfo, Offer, Reason, Resources, Source,
    TaskInfo, TaskState, TaskStatus,
};

use super::*;

mod network;
mod operator;
mod v1_calls;

struct Harness {
    master: Master,
    now: Now,
    effects: Vec<Effect>,
    next_conn: u64,
}

const AGENT_RES: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";

impl Harness {
    fn new() -> Harness {
        let config = CoreConfig {
            agent_ping_timeout: Duration::from_secs(15),
            max_agent_ping_timeouts: 5,
            ..CoreConfig::default()
        };
        let now = Now { mono: Instant::now(), wall: 1_700_000_000.0 };
        let info = MasterInfo {
            id: "m".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            hostname: "localhost".into(),
            version: "test".into(),
        };
        Harness { master: Master::new(info, config, now), now, effects: vec![], next_conn: 1 }
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn settle(&mut self) {
        self.master.allocate_if_wanted(self.now);
        self.effects.extend(self.master.drain_effects());
    }

    fn advance(&mut self, d: Duration) {
        self.now.mono += d;
        self.now.wall += d.as_secs_f64();
        self.master.tick(self.now);
        self.effects.extend(self.master.drain_effects());
    }

    fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    fn add_agent(&mut self) -> (ConnId, String) {
        let conn = self.conn();
        let info = AgentInfo {
            id: None,
            hostname: format!("host{}", conn.0),
            ip: "127.0.0.1".into(),
            port: 5051,
            resources: AGENT_RES.parse().unwrap(),
            attributes: Attributes::default(),
        };
        self.master.agent_message(conn, AgentMessage::Register { info, network: None }, self.now);
        self.settle();
        let id = self
            .effects
            .iter()
            .find_map(|e| match e {
                Effect::ToAgent(c, AgentCommand::Registered { agent_id, .. }) if *c == conn => Some(agent_id.clone()),
                _ => None,
            })
            .expect("agent registered");
        (conn, id)
    }

    fn subscribe(&mut self, info: FrameworkInfo) -> (ConnId, String, String) {
        let conn = self.conn();
        self.master.subscribe(conn, info, vec![], self.now);
        self.settle();
        self.effects
            .iter()
            .find_map(|e| match e {
                Effect::ToFramework(c, SchedulerEvent::Subscribed { framework_id, stream_id, .. }) if *c == conn => {
                    Some((conn, framework_id.clone(), stream_id.clone()))
                }
                _ => None,
            })
            .expect("subscribed")
    }

    fn offers_to(&self, conn: ConnId) -> Vec<Offer> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::ToFramework(c, SchedulerEvent::Offers(o)) if *c == conn => Some(o.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn updates_to(&self, conn: ConnId) -> Vec<TaskStatus> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::ToFramework(c, SchedulerEvent::Update(s)) if *c == conn => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn agent_commands(&self, conn: ConnId) -> Vec<AgentCommand> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::ToAgent(c, cmd) if *c == conn => Some(cmd.clone()),
                _ => None,
            })
            .collect()
    }

    fn call(&mut self, fid: &str, sid: &str, call: Call) {
        self.master.call(fid, sid, call, self.now).expect("call accepted");
        self.settle();
    }

    fn agent_update(&mut self, conn: ConnId, fid: &str, task_id: &str, state: TaskState, uuid: u8) {
        let status = TaskStatus {
            task_id: task_id.into(),
            state,
            reason: None,
            source: Source::Executor,
            message: String::new(),
            uuid: Some(vec![uuid; 16]),
            timestamp: self.now.wall,
            healthy: None,
            agent_id: String::new(),
            unreachable_time: None,
            container_status: None,
        };
        self.master.agent_message(
            conn,
            AgentMessage::StatusUpdate { framework_id: fid.into(), status, latest_state: state },
            self.now,
        );
        self.settle();
    }
}

fn task(id: &str, agent_id: &str, res: &str) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: id.into(),
        agent_id: agent_id.into(),
        resources: res.parse().unwrap(),
        command: Some(CommandInfo::shell("sleep 10")),
        container: None,
        health_check: None,
        kill_grace_period: None,
        labels: vec![],
        discovery: None,
        data: vec![],
    }
}

fn launch(offer: &Offer, tasks: Vec<TaskInfo>) -> Call {
    Call::Accept { offer_ids: vec![offer.id.clone()], operations: vec![LaunchOp { tasks }], refuse_seconds: None }
}

#[test]
fn a_new_framework_is_offered_each_agent_whole() {
    let mut h = Harness::new();
    let (_a1, id1) = h.add_agent();
    let (_a2, id2) = h.add_agent();
    let (fc, _fid, _) = h.subscribe(FrameworkInfo::new("f"));
    let offers = h.offers_to(fc);
    assert_eq!(offers.len(), 2);
    let agents: Vec<&str> = offers.iter().map(|o| o.agent_id.as_str()).collect();
    assert!(agents.contains(&id1.as_str()) && agents.contains(&id2.as_str()));
    for o in &offers {
        assert_eq!(o.resources, AGENT_RES.parse::<Resources>().unwrap());
        assert_eq!(o.role, "*");
    }
}

#[test]
fn launch_goes_to_the_agent_and_the_rest_is_filtered_then_offered_again() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.take();
    h.call(&fid, &sid, launch(&offer, vec![task("t1", &aid, "cpus:0.5;mem:128;ports:[31000-31000]")]));
    let cmds = h.agent_commands(ac);
    assert!(matches!(&cmds[0], AgentCommand::RunTask { task, .. } if task.task_id == "t1"));
    // Within refuse_seconds (default 5) the remainder is not offered to this framework again.
    h.take();
    h.advance(Duration::from_secs(2));
    assert!(h.offers_to(fc).is_empty());
    // After it, the remainder comes back: what the task holds is not in it.
    h.advance(Duration::from_secs(4));
    let again = h.offers_to(fc);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].resources.scalar("cpus").to_string(), "1.5");
    assert!(!again[0].resources.ranges("ports").contains_value(31000));
}

#[test]
fn a_launch_that_exceeds_its_offer_is_a_task_error_and_leaks_nothing() {
    let mut h = Harness::new();
    let (_ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.take();
    h.master
        .call(
            &fid,
            &sid,
            Call::Accept {
                offer_ids: vec![offer.id.clone()],
                operations: vec![LaunchOp { tasks: vec![task("big", &aid, "cpus:3;mem:64")] }],
                refuse_seconds: Some(0.0),
            },
            h.now,
        )
        .unwrap();
    h.settle();
    let updates = h.updates_to(fc);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state, TaskState::Error);
    assert_eq!(updates[0].reason, Some(Reason::TaskInvalid));
    assert!(updates[0].message.contains("more resources"), "{}", updates[0].message);
    assert!(updates[0].uuid.is_none());
    // The whole agent is offered again (refuse_seconds 0): nothing leaked.
    let again = h.offers_to(fc);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].resources, AGENT_RES.parse::<Resources>().unwrap());
}

#[test]
fn duplicate_task_ids_are_refused() {
    let mut h = Harness::new();
    let (_ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.take();
    h.call(&fid, &sid, launch(&offer, vec![task("t", &aid, "cpus:0.1;mem:32"), task("t", &aid, "cpus:0.1;mem:32")]));
    let updates = h.updates_to(fc);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state, TaskState::Error);
    assert!(updates[0].message.contains("duplicate ID: t"));
}

#[test]
fn a_container_with_both_rootfs_and_image_is_refused_naming_both() {
    let mut h = Harness::new();
    let (_ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.take();
    let mut t = task("t", &aid, "cpus:0.1;mem:32");
    t.container = Some(agora_proto::model::ContainerInfo {
        kind: agora_proto::model::ContainerType::Mesos,
        rootfs: Some("/srv/rootfs".into()),
        volumes: vec![],
        hostname: None,
        image: Some("busybox".into()),
        network_infos: vec![],
    });
    h.call(&fid, &sid, launch(&offer, vec![t]));
    let updates = h.updates_to(fc);
    assert_eq!(updates.len(), 1);
    assert_eq!((updates[0].state, updates[0].reason), (TaskState::Error, Some(Reason::TaskInvalid)));
    let m = &updates[0].message;
    assert!(m.contains("rootfs '/srv/rootfs'") && m.contains("image 'busybox'"), "{m}");
}

#[test]
fn only_a_task_in_an_image_may_leave_its_command_to_the_image() {
    let mut h = Harness::new();
    let (_ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.take();
    let image = |id: &str, shell: bool, with_image: bool| {
        let mut t = task(id, &aid, "cpus:0.1;mem:32");
        let command = t.command.as_mut().unwrap();
        (command.shell, command.value) = (shell, String::new());
        t.container = Some(agora_proto::model::ContainerInfo {
            kind: agora_proto::model::ContainerType::Mesos,
            rootfs: None,
            volumes: vec![],
            hostname: None,
            image: with_image.then(|| "busybox".into()),
            network_infos: vec![],
        });
        t
    };
    let tasks = vec![image("entrypoint", false, true), image("shell", true, true), image("bare", false, false)];
    h.call(&fid, &sid, launch(&offer, tasks));
    let updates = h.updates_to(fc);
    let refused: Vec<(&str, &str)> = updates
        .iter()
        .filter(|u| u.state == TaskState::Error)
        .map(|u| (u.task_id.as_str(), u.message.as_str()))
        .collect();
    assert_eq!(refused, vec![("shell", "Task has no command to run"), ("bare", "Task has no command to run")]);
    assert!(updates.iter().all(|u| u.task_id != "entrypoint"), "the image's Entrypoint/Cmd runs: {updates:?}");
}

#[test]
fn invalid_offers_drop_the_tasks() {
    let mut h = Harness::new();
    let (_ac, aid) = h.add_agent();
    let mut info = FrameworkInfo::new("pa");
    info.capabilities.push(Capability::PartitionAware);
    let (fc, fid, sid) = h.subscribe(info);
    h.take();
    h.call(
        &fid,
        &sid,
        Call::Accept {
            offer_ids: vec!["nope".into()],
            operations: vec![LaunchOp { tasks: vec![task("t", &aid, "cpus:0.1")] }],
            refuse_seconds: None,
        },
    );
    let u = h.updates_to(fc);
    assert_eq!(u[0].state, TaskState::Dropped);
    assert_eq!(u[0].reason, Some(Reason::InvalidOffers));
}

#[test]
fn status_updates_are_forwarded_acknowledged_and_free_resources() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.call(&fid, &sid, launch(&offer, vec![task("t1", &aid, "cpus:2;mem:1024")]));
    h.take();
    h.agent_update(ac, &fid, "t1", TaskState::Running, 1);
    let u = h.updates_to(fc);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state, TaskState::Running);
    assert_eq!(u[0].agent_id, aid);
    h.take();
    h.call(&fid, &sid, Call::Acknowledge { agent_id: aid.clone(), task_id: "t1".into(), uuid: vec![1; 16] });
    assert!(matches!(&h.agent_commands(ac)[0], AgentCommand::Acknowledge { uuid, .. } if uuid == &vec![1u8; 16]));
    assert_eq!(h.master.agents[&aid].used.scalar("cpus").to_string(), "2");

    h.take();
    h.agent_update(ac, &fid, "t1", TaskState::Finished, 2);
    assert!(h.master.agents[&aid].used.is_empty(), "terminal task frees its resources");
    assert!(h.master.frameworks[&fid].tasks.contains_key("t1"), "kept until the terminal update is acknowledged");
    h.call(&fid, &sid, Call::Acknowledge { agent_id: aid.clone(), task_id: "t1".into(), uuid: vec![2; 16] });
    assert!(!h.master.frameworks[&fid].tasks.contains_key("t1"));
    assert_eq!(h.master.frameworks[&fid].completed_tasks.len(), 1);
}

#[test]
fn a_silent_agent_becomes_unreachable_after_the_ping_timeouts() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("plain"));
    let mut pa = FrameworkInfo::new("pa");
    pa.capabilities.push(Capability::PartitionAware);
    let (pc, pid, psid) = h.subscribe(pa);
    // Both frameworks got the agent? Only one offer exists per agent; launch from whichever has it.
    let (owner_conn, owner_id, owner_sid) =
        if h.offers_to(fc).is_empty() { (pc, pid.clone(), psid.clone()) } else { (fc, fid.clone(), sid.clone()) };
    let offer = h.offers_to(owner_conn).remove(0);
    h.call(&owner_id, &owner_sid, launch(&offer, vec![task("t", &aid, "cpus:1;mem:32")]));
    h.master.agent_disconnected(ac);
    h.take();
    for _ in 0..4 {
        h.advance(Duration::from_secs(15));
    }
    assert!(h.updates_to(owner_conn).is_empty(), "four missed pings are not yet enough");
    h.advance(Duration::from_secs(15));
    let u = h.updates_to(owner_conn);
    assert_eq!(u.len(), 1);
    let expected = if owner_conn == pc { TaskState::Unreachable } else { TaskState::Lost };
    assert_eq!(u[0].state, expected);
    assert_eq!(u[0].reason, Some(Reason::AgentRemoved));
    assert!(h.effects.iter().any(|e| matches!(e, Effect::ToFramework(c, SchedulerEvent::Failure { .. }) if *c == fc)));
}

#[test]
fn an_answering_agent_stays() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    for _ in 0..10 {
        h.advance(Duration::from_secs(15));
        assert!(h.agent_commands(ac).contains(&AgentCommand::Ping));
        h.take();
        h.master.agent_message(ac, AgentMessage::Pong, h.now);
    }
    assert_eq!(h.master.agents[&aid].state, AgentState::Active);
}

#[test]
fn reconciliation_follows_mesos_rules() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let mut pa = FrameworkInfo::new("pa");
    pa.capabilities.push(Capability::PartitionAware);
    let (fc, fid, sid) = h.subscribe(pa);
    let offer = h.offers_to(fc).remove(0);
    h.call(&fid, &sid, launch(&offer, vec![task("t1", &aid, "cpus:1")]));
    h.agent_update(ac, &fid, "t1", TaskState::Running, 1);
    h.take();
    h.call(&fid, &sid, Call::Reconcile { tasks: vec![] });
    let u = h.updates_to(fc);
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].state, u[0].reason), (TaskState::Running, Some(Reason::Reconciliation)));
    assert!(u[0].uuid.is_none());
    h.take();
    h.call(
        &fid,
        &sid,
        Call::Reconcile { tasks: vec![("ghost".into(), Some(aid.clone())), ("ghost2".into(), Some("nowhere".into()))] },
    );
    let u = h.updates_to(fc);
    assert_eq!(u[0].state, TaskState::Gone);
    assert_eq!(u[1].state, TaskState::Unknown);
}

#[test]
fn a_resubscribing_framework_gets_its_tasks_back_and_the_old_stream_is_closed() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let mut info = FrameworkInfo::new("f");
    info.failover_timeout = 60.0;
    let (fc, fid, sid) = h.subscribe(info.clone());
    let offer = h.offers_to(fc).remove(0);
    h.call(&fid, &sid, launch(&offer, vec![task("t1", &aid, "cpus:1")]));
    h.agent_update(ac, &fid, "t1", TaskState::Running, 1);
    h.master.framework_disconnected(fc, h.now);
    h.take();
    h.advance(Duration::from_secs(30));
    info.id = Some(fid.clone());
    let (fc2, fid2, sid2) = h.subscribe(info);
    assert_eq!(fid2, fid);
    assert_ne!(fc2, fc);
    h.take();
    h.call(&fid, &sid2, Call::Reconcile { tasks: vec![] });
    assert_eq!(h.updates_to(fc2)[0].state, TaskState::Running);
    // The old stream id is no longer accepted.
    assert!(matches!(
        h.master.call(&fid, &sid, Call::Reconcile { tasks: vec![] }, h.now),
        Err(CallError::WrongStream { .. })
    ));
}

#[test]
fn a_framework_that_does_not_return_within_failover_timeout_is_torn_down() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let mut info = FrameworkInfo::new("f");
    info.failover_timeout = 10.0;
    let (fc, fid, sid) = h.subscribe(info);
    let offer = h.offers_to(fc).remove(0);
    h.call(&fid, &sid, launch(&offer, vec![task("t1", &aid, "cpus:1")]));
    h.master.framework_disconnected(fc, h.now);
    h.take();
    h.advance(Duration::from_secs(5));
    assert!(h.master.frameworks.contains_key(&fid));
    h.advance(Duration::from_secs(6));
    assert!(!h.master.frameworks.contains_key(&fid));
    assert!(h.agent_commands(ac).contains(&AgentCommand::ShutdownFramework { framework_id: fid.clone() }));
    assert!(h.master.agents[&aid].used.is_empty());
}

#[test]
fn offers_time_out_and_are_rescinded() {
    let mut h = Harness::new();
    h.add_agent();
    let (fc, _fid, _sid) = h.subscribe(FrameworkInfo::new("hoarder"));
    let offer = h.offers_to(fc).remove(0);
    h.take();
    h.advance(Duration::from_secs(61));
    assert!(
        h.effects.iter().any(
            |e| matches!(e, Effect::ToFramework(c, SchedulerEvent::Rescind { offer_id }) if *c == fc && *offer_id == offer.id)
        )
    );
}

#[test]
fn suppress_stops_offers_and_revive_brings_them_back() {
    let mut h = Harness::new();
    h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.call(&fid, &sid, Call::Suppress { roles: vec![] });
    h.call(&fid, &sid, Call::Decline { offer_ids: vec![offer.id], refuse_seconds: Some(0.0) });
    h.take();
    h.advance(Duration::from_secs(10));
    assert!(h.offers_to(fc).is_empty());
    h.call(&fid, &sid, Call::Revive { roles: vec![] });
    assert_eq!(h.offers_to(fc).len(), 1);
}

#[test]
fn kill_goes_to_the_agent_and_unknown_tasks_are_reconciled() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.call(&fid, &sid, launch(&offer, vec![task("t1", &aid, "cpus:1")]));
    h.take();
    h.call(&fid, &sid, Call::Kill { task_id: "t1".into(), agent_id: None, grace_period: Some(1.0) });
    assert!(
        matches!(&h.agent_commands(ac)[0], AgentCommand::KillTask { task_id, grace_period: Some(_), .. } if task_id == "t1")
    );
    h.take();
    h.call(&fid, &sid, Call::Kill { task_id: "nope".into(), agent_id: None, grace_period: None });
    assert_eq!(h.updates_to(fc)[0].state, TaskState::Lost);
}

#[test]
fn state_json_has_mesos_shape() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.call(&fid, &sid, launch(&offer, vec![task("t1", &aid, "cpus:1;mem:128")]));
    h.agent_update(ac, &fid, "t1", TaskState::Running, 1);
    let s = h.master.state_json(h.now, serde_json::json!({}));
    assert_eq!(s["slaves"][0]["id"], aid);
    assert_eq!(s["slaves"][0]["resources"]["ports"], "[31000-32000]");
    assert_eq!(s["slaves"][0]["used_resources"]["cpus"], 1);
    let t = &s["frameworks"][0]["tasks"][0];
    assert_eq!(t["id"], "t1");
    assert_eq!(t["state"], "TASK_RUNNING");
    assert_eq!(t["slave_id"], aid);
    assert_eq!(t["resources"]["mem"], 128);
    assert_eq!(t["statuses"].as_array().unwrap().len(), 2);
    assert!(s["leader"].as_str().unwrap().starts_with("master@"));
}

#[test]
fn health_updates_replace_the_running_status_and_show_healthy() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    let mut t = task("t1", &aid, "cpus:1;ports:[31000-31000]");
    t.health_check = Some(agora_proto::model::HealthCheck {
        kind: agora_proto::model::HealthCheckType::Http,
        port: Some(31000),
        path: Some("/health".into()),
        scheme: None,
        statuses: vec![],
        ip_protocol: Default::default(),
        ignore_http1xx: false,
        command: None,
        delay_seconds: 15.0,
        interval_seconds: 10.0,
        timeout_seconds: 20.0,
        consecutive_failures: 3,
        grace_period_seconds: 10.0,
    });
    h.call(&fid, &sid, launch(&offer, vec![t]));
    h.agent_update(ac, &fid, "t1", TaskState::Running, 1);
    for (uuid, healthy) in [(2, true), (3, false)] {
        let status = TaskStatus {
            task_id: "t1".into(),
            state: TaskState::Running,
            reason: Some(Reason::TaskHealthCheckStatusUpdated),
            source: Source::Executor,
            message: String::new(),
            uuid: Some(vec![uuid; 16]),
            timestamp: h.now.wall,
            healthy: Some(healthy),
            agent_id: String::new(),
            unreachable_time: None,
            container_status: None,
        };
        let msg = AgentMessage::StatusUpdate { framework_id: fid.clone(), status, latest_state: TaskState::Running };
        h.master.agent_message(ac, msg, h.now);
        h.settle();
    }
    let forwarded: Vec<Option<bool>> = h.updates_to(fc).iter().map(|u| u.healthy).collect();
    assert_eq!(forwarded, vec![None, Some(true), Some(false)], "every health update reaches the framework");
    let s = h.master.state_json(h.now, serde_json::json!({}));
    let t = &s["frameworks"][0]["tasks"][0];
    let statuses = t["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 2, "STAGING, then one RUNNING status, the latest: {statuses:?}");
    assert_eq!(statuses[1]["state"], "TASK_RUNNING");
    assert_eq!(statuses[1]["healthy"], false);
    assert_eq!(t["health_check"]["type"], "HTTP");
    assert_eq!(t["health_check"]["http"]["port"], 31000);
}

#[test]
fn an_invalid_health_check_is_a_task_error_naming_the_field() {
    let mut h = Harness::new();
    let (_ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    let mut t = task("t1", &aid, "cpus:1");
    t.health_check = Some(agora_proto::model::HealthCheck {
        kind: agora_proto::model::HealthCheckType::Http,
        port: Some(0),
        path: None,
        scheme: None,
        statuses: vec![],
        ip_protocol: Default::default(),
        ignore_http1xx: false,
        command: None,
        delay_seconds: 0.0,
        interval_seconds: 10.0,
        timeout_seconds: 20.0,
        consecutive_failures: 3,
        grace_period_seconds: 0.0,
    });
    h.call(&fid, &sid, launch(&offer, vec![t]));
    let u = &h.updates_to(fc)[0];
    assert_eq!((u.state, u.reason), (TaskState::Error, Some(Reason::TaskInvalid)));
    assert!(u.message.contains("health_check.http.port"), "{}", u.message);
}

#[test]
fn teardown_keeps_the_state_of_finished_tasks_and_kills_the_rest() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    h.call(&fid, &sid, launch(&offer, vec![task("done", &aid, "cpus:0.5"), task("busy", &aid, "cpus:0.5")]));
    h.agent_update(ac, &fid, "done", TaskState::Finished, 1);
    h.agent_update(ac, &fid, "busy", TaskState::Running, 2);
    h.call(&fid, &sid, Call::Teardown);
    let done = &h.master.completed_frameworks[0];
    let state_of = |id: &str| done.completed_tasks.iter().find(|t| t.info.task_id == id).map(|t| t.state);
    assert_eq!(state_of("done"), Some(TaskState::Finished));
    assert_eq!(state_of("busy"), Some(TaskState::Killed));
    assert!(h.master.agents[&aid].used.is_empty());
}

// --- Registry and failover ------------------------------------------------------------------------------------------

fn agent_info(id: Option<&str>, host: &str) -> AgentInfo {
    AgentInfo {
        id: id.map(String::from),
        hostname: host.into(),
        ip: "127.0.0.1".into(),
        port: 5051,
        resources: AGENT_RES.parse().unwrap(),
        attributes: Attributes::default(),
    }
}

/// The harness after a failover: a new master recovered from `registry`.
fn recovered(registry: crate::registry::Registry) -> Harness {
    let mut h = Harness::new();
    let info = h.master.info().clone();
    let config = CoreConfig { agent_reregister_timeout: Duration::from_secs(60), ..CoreConfig::default() };
    h.master = Master::recover(MasterInfo { id: "m2".into(), ..info }, config, registry, h.now);
    h
}

#[test]
fn an_agent_is_admitted_in_the_registry_before_it_is_told_it_is_registered() {
    let mut h = Harness::new();
    let conn = h.conn();
    h.master.agent_message(conn, AgentMessage::Register { info: agent_info(None, "h1"), network: None }, h.now);
    let effects = h.master.drain_effects();
    let persist = effects.iter().position(|e| *e == Effect::PersistRegistry).expect("a registry write");
    let registered = effects
        .iter()
        .position(|e| matches!(e, Effect::ToAgent(_, AgentCommand::Registered { .. })))
        .expect("registered");
    assert!(persist < registered, "{effects:?}");
    assert_eq!(h.master.registry().agents.keys().collect::<Vec<_>>(), vec!["m-S0"]);

    // A framework is in the registry with its failover timeout once subscribed; gone once torn down.
    let mut fi = FrameworkInfo::new("f");
    fi.failover_timeout = 30.0;
    let (_fc, fid, sid) = h.subscribe(fi);
    assert_eq!(h.master.registry().frameworks[&fid].failover_timeout, 30.0);
    h.call(&fid, &sid, Call::Teardown);
    assert!(h.master.registry().frameworks.is_empty());
}

#[test]
fn after_failover_tasks_come_back_with_their_agents_and_late_agents_become_unreachable() {
    // The old leader admitted two agents and ran a task on each.
    let mut old = Harness::new();
    let (_a1, s0) = old.add_agent();
    let (_a2, s1) = old.add_agent();
    let mut fi = FrameworkInfo::new("f");
    fi.failover_timeout = 3600.0;
    fi.capabilities.push(Capability::PartitionAware);
    let (_fc, fid, _) = old.subscribe(fi.clone());
    let registry = old.master.registry().clone();
    assert_eq!(registry.agents.len(), 2);

    let mut h = recovered(registry);
    assert_eq!(h.master.recovering_agents(), 2);
    fi.id = Some(fid.clone());
    let (fc, _, sid) = h.subscribe(fi.clone());
    h.take();

    // Explicit reconciliation of a task on an agent that has not re-registered yet: no answer (Mesos).
    h.call(&fid, &sid, Call::Reconcile { tasks: vec![("t0".into(), Some(s0.clone()))] });
    assert!(h.updates_to(fc).is_empty(), "{:?}", h.effects);

    // s0 re-registers with its running task: no registry write is needed (it is admitted), and t0 is RUNNING.
    let ac = h.conn();
    let mut f_report = fi.clone();
    f_report.id = Some(fid.clone());
    let t0 = task("t0", &s0, "cpus:1;mem:128");
    h.master.agent_message(
        ac,
        AgentMessage::Reregister {
            info: agent_info(Some(&s0), "host2"),
            tasks: vec![ReportedTask { framework_id: fid.clone(), task: t0, state: TaskState::Running }],
            frameworks: vec![f_report],
            network: None,
        },
        h.now,
    );
    h.settle();
    assert!(!h.effects.contains(&Effect::PersistRegistry), "{:?}", h.effects);
    assert!(
        h.agent_commands(ac).iter().any(|c| matches!(c, AgentCommand::Registered { agent_id, .. } if *agent_id == s0))
    );
    assert_eq!(h.master.recovering_agents(), 1);
    h.take();
    h.call(&fid, &sid, Call::Reconcile { tasks: vec![] });
    let ups = h.updates_to(fc);
    assert_eq!(ups.len(), 1);
    assert_eq!((ups[0].task_id.as_str(), ups[0].state), ("t0", TaskState::Running));
    h.take();

    // s1 never comes back: after --agent-reregister-timeout it is unreachable in the registry, the framework gets
    // FAILURE, and reconciling a task there answers UNREACHABLE (partition-aware).
    h.advance(Duration::from_secs(61));
    assert_eq!(h.master.recovering_agents(), 0);
    assert!(h.master.registry().unreachable.contains_key(&s1));
    assert!(!h.master.registry().agents.contains_key(&s1));
    assert!(h.effects.contains(&Effect::PersistRegistry));
    assert!(h.effects.iter().any(
        |e| matches!(e, Effect::ToFramework(c, SchedulerEvent::Failure { agent_id }) if *c == fc && *agent_id == s1)
    ));
    h.take();
    h.call(&fid, &sid, Call::Reconcile { tasks: vec![("t1".into(), Some(s1.clone()))] });
    let ups = h.updates_to(fc);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Unreachable);
}

#[test]
fn a_framework_that_does_not_return_after_failover_is_torn_down_and_its_tasks_killed() {
    let mut old = Harness::new();
    let (_a, s0) = old.add_agent();
    let mut fi = FrameworkInfo::new("f");
    fi.failover_timeout = 10.0;
    let (_fc, fid, _) = old.subscribe(fi.clone());
    let mut h = recovered(old.master.registry().clone());

    let ac = h.conn();
    fi.id = Some(fid.clone());
    h.master.agent_message(
        ac,
        AgentMessage::Reregister {
            info: agent_info(Some(&s0), "h"),
            tasks: vec![ReportedTask {
                framework_id: fid.clone(),
                task: task("t0", &s0, "cpus:1;mem:128"),
                state: TaskState::Running,
            }],
            frameworks: vec![fi],
            network: None,
        },
        h.now,
    );
    h.settle();
    h.take();
    h.advance(Duration::from_secs(11));
    assert!(
        h.agent_commands(ac).contains(&AgentCommand::ShutdownFramework { framework_id: fid.clone() }),
        "{:?}",
        h.effects
    );
    assert!(h.master.registry().frameworks.is_empty());
}

#[test]
fn a_removed_agent_is_refused_on_reregistration() {
    let mut registry = crate::registry::Registry::default();
    registry.removed.insert("old-S3".into());
    let mut h = recovered(registry);
    let ac = h.conn();
    h.master.agent_message(
        ac,
        AgentMessage::Reregister {
            info: agent_info(Some("old-S3"), "h"),
            tasks: vec![],
            frameworks: vec![],
            network: None,
        },
        h.now,
    );
    h.settle();
    assert!(h.agent_commands(ac).iter().any(|c| matches!(c, AgentCommand::Error { .. })));
    assert!(h.effects.contains(&Effect::CloseAgent(ac)));
}

#[test]
fn two_frameworks_may_launch_the_same_task_id_on_one_agent() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fa, a, asid) = h.subscribe(FrameworkInfo::new("a"));
    let offer = h.offers_to(fa).remove(0);
    h.take();
    h.call(
        &a,
        &asid,
        Call::Accept {
            offer_ids: vec![offer.id],
            operations: vec![LaunchOp { tasks: vec![task("hello-0", &aid, "cpus:1")] }],
            refuse_seconds: Some(3600.0),
        },
    );
    let (fb, b, bsid) = h.subscribe(FrameworkInfo::new("b"));
    let offer = h.offers_to(fb).remove(0);
    h.call(&b, &bsid, launch(&offer, vec![task("hello-0", &aid, "cpus:0.5")]));
    assert!(h.updates_to(fb).is_empty(), "no TASK_ERROR: {:?}", h.updates_to(fb));
    let launched: Vec<(String, String)> = h
        .agent_commands(ac)
        .into_iter()
        .filter_map(|c| match c {
            AgentCommand::RunTask { framework, task } => Some((framework.id.unwrap_or_default(), task.task_id)),
            _ => None,
        })
        .collect();
    assert_eq!(launched, vec![(a, "hello-0".to_string()), (b, "hello-0".to_string())]);
}
