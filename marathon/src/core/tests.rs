//! Harness tests of the core: a fake cluster of offers and a hand-driven clock, no I/O.

use super::*;
use agora_proto::model::{Attributes, Source};
use serde_json::json;

struct Harness {
    core: Core,
    now: Millis,
    next: u64,
    agents: Vec<(String, String)>,
}

fn status(task_id: &str, agent_id: &str, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: task_id.into(),
        state,
        reason: None,
        source: Source::Agent,
        message: String::new(),
        uuid: None,
        timestamp: 0.0,
        healthy: None,
        agent_id: agent_id.into(),
        unreachable_time: None,
        container_status: None,
    }
}

impl Harness {
    fn new(agents: usize) -> Harness {
        Harness {
            core: Core::new(Persisted::default()),
            now: 1_700_000_000_000,
            next: 0,
            agents: (0..agents).map(|i| (format!("agent-{i}"), format!("host{i}"))).collect(),
        }
    }

    fn did(&mut self) -> String {
        self.next += 1;
        format!("deployment-{}", self.next)
    }

    fn offers(&self) -> Vec<Offer> {
        self.agents
            .iter()
            .enumerate()
            .map(|(i, (agent, host))| Offer {
                id: format!("offer-{i}-{}", self.now),
                framework_id: "fw".into(),
                agent_id: agent.clone(),
                hostname: host.clone(),
                resources: "cpus:4;mem:4096;ports:[31000-32000]".parse().unwrap(),
                attributes: Attributes::default(),
                role: "*".into(),
                url: String::new(),
            })
            .collect()
    }

    /// One offer round; returns the launched task ids.
    fn round(&mut self) -> Vec<String> {
        self.now += 1000;
        let offers = self.offers();
        let mut n = self.next;
        let m = self.core.match_offers(&offers, self.now, &mut |app| {
            n += 1;
            format!("{}.instance-{n}", pathid::task_prefix(app))
        });
        self.next = n;
        m.launches.iter().map(|l| l.task.task_id.clone()).collect()
    }

    fn update(&mut self, task: &str, state: TaskState) {
        self.now += 10;
        let agent = self.core.state.instances.get(task).map(|i| i.agent_id.clone()).unwrap_or_default();
        self.core.on_update(&status(task, &agent, state), self.now);
    }

    fn run_all(&mut self, tasks: &[String]) {
        for t in tasks {
            self.update(t, TaskState::Running);
        }
    }

    /// Kills the core asks for complete (the agent reports TASK_KILLED).
    fn complete_kills(&mut self) -> usize {
        let kills = self.core.actions(self.now).kills;
        for (t, _) in &kills {
            self.update(t, TaskState::Killed);
        }
        kills.len()
    }

    fn live(&self, app: &str) -> usize {
        self.core.instances_of(app).count()
    }

    fn running(&self, app: &str, version: &str) -> usize {
        self.core.instances_of(app).filter(|i| i.state == TaskState::Running && i.version == version).count()
    }

    fn event_types(&mut self) -> Vec<String> {
        self.core.drain_events().iter().map(|e| e["eventType"].as_str().unwrap().to_string()).collect()
    }
}

fn create(h: &mut Harness, body: Value) -> AppDefinition {
    let id = h.did();
    h.core.create_app(&body, false, h.now, id).unwrap().0
}

#[test]
fn create_launch_run_and_complete_the_deployment() {
    let mut h = Harness::new(2);
    let app = create(&mut h, json!({"id": "/web", "cmd": "sleep 1000", "instances": 3, "cpus": 0.1, "mem": 32}));
    assert_eq!(app.port_definitions[0].port, LOCAL_PORT_MIN, "a service port was allocated");
    assert_eq!(h.core.deployments_json(h.now).len(), 1);
    assert_eq!(h.core.actions(h.now).wanted, 3);
    let launched = h.round();
    assert_eq!(launched.len(), 3);
    assert_eq!(h.core.queue_json(h.now).len(), 0);
    assert!(h.round().is_empty(), "no duplicate launches while they stage");
    h.run_all(&launched);
    assert!(h.core.deployments_json(h.now).is_empty());
    let types = h.event_types();
    assert!(types.contains(&"deployment_info".into()) && types.contains(&"deployment_success".into()), "{types:?}");
    // Two steps (StartApplication, ScaleApplication), each reported once, before the deployment's success.
    assert_eq!(types.iter().filter(|t| *t == "deployment_step_success").count(), 2, "{types:?}");
    let last_step = types.iter().rposition(|t| t == "deployment_step_success").unwrap();
    assert!(last_step < types.iter().position(|t| t == "deployment_success").unwrap());
    assert_eq!(types.iter().filter(|t| *t == "instance_changed_event").count(), 3);
    assert_eq!(types.iter().filter(|t| *t == "status_update_event").count(), 3);
}

#[test]
fn failed_instances_are_replaced_after_the_backoff_delay() {
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/w", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 32, "backoffSeconds": 5}));
    let t = h.round();
    h.run_all(&t);
    h.update(&t[0], TaskState::Failed);
    assert_eq!(h.live("/w"), 0);
    assert_eq!(h.core.last_failure("/w").unwrap().task_id, t[0]);
    assert!(h.round().is_empty(), "delayed by backoffSeconds");
    let q = h.core.queue_json(h.now);
    assert_eq!(q[0]["delay"]["overdue"], false);
    h.now += 5_000;
    assert_eq!(h.round().len(), 1, "replaced once the delay passed");
    // A kill (not a failure) is replaced without delay.
    let t2: Vec<String> = h.core.instances_of("/w").map(|i| i.task_id.clone()).collect();
    h.update(&t2[0], TaskState::Killed);
    assert_eq!(h.round().len(), 1);
}

#[test]
fn rolling_upgrade_keeps_capacity_bounds_and_finishes() {
    let mut h = Harness::new(2);
    let app = create(
        &mut h,
        json!({"id": "/r", "cmd": "v1", "instances": 3, "cpus": 0.1, "mem": 32,
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}}),
    );
    let t = h.round();
    h.run_all(&t);
    let id = h.did();
    let (_, r) = h.core.update_app("/r", &json!({"cmd": "v2"}), true, false, h.now, id).unwrap();
    assert_ne!(r.version, app.version);
    let (min_healthy, max_capacity) = (2, 4);
    for _ in 0..20 {
        h.complete_kills();
        let healthy = h.core.instances_of("/r").filter(|i| i.state == TaskState::Running && !i.killing).count();
        assert!(healthy >= min_healthy, "healthy {healthy}");
        let launched = h.round();
        assert!(h.live("/r") <= max_capacity, "live {} > {max_capacity}", h.live("/r"));
        h.run_all(&launched);
        if h.core.deployments_json(h.now).is_empty() {
            break;
        }
    }
    assert!(h.core.deployments_json(h.now).is_empty(), "upgrade finished");
    assert_eq!(h.running("/r", &r.version), 3);
    assert_eq!(h.live("/r"), 3, "every old instance is gone");
}

#[test]
fn unique_hostname_places_one_per_agent_and_explains_the_rest() {
    let mut h = Harness::new(2);
    create(
        &mut h,
        json!({"id": "/u", "cmd": "x", "instances": 3, "cpus": 0.1, "mem": 32,
        "constraints": [["hostname", "UNIQUE"]]}),
    );
    let t = h.round();
    assert_eq!(t.len(), 2);
    h.run_all(&t);
    assert!(h.round().is_empty());
    let q = h.core.queue_json(h.now);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["count"], 1);
    let reasons = q[0]["processedOffersSummary"]["rejectSummaryLastOffers"].as_array().unwrap();
    let uc = reasons.iter().find(|r| r["reason"] == "UnfulfilledConstraint").unwrap();
    assert!(uc["declined"].as_u64().unwrap() >= 2, "{uc}");
}

#[test]
fn changes_to_a_deploying_app_conflict_unless_forced() {
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/c", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 32}));
    let id = h.did();
    let err = h.core.update_app("/c", &json!({"instances": 2}), true, false, h.now, id).unwrap_err();
    let ApiError::Locked(ids) = err else { panic!("{err:?}") };
    assert_eq!(ids, vec!["deployment-1".to_string()]);
    let id = h.did();
    h.core.update_app("/c", &json!({"instances": 2}), true, true, h.now, id).unwrap();
    assert_eq!(h.core.deployments_json(h.now).len(), 1);
}

#[test]
fn a_refused_kill_and_scale_kills_nothing() {
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/g/k", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 32}));
    let t = h.round();
    assert_eq!(t.len(), 2);
    // The create's deployment still runs (the tasks are not RUNNING yet): kill with scale conflicts.
    let id = h.did();
    let err = h.core.kill_tasks(&t[..1], true, false, false, h.now, id).unwrap_err();
    assert!(matches!(err, ApiError::Locked(_)), "{err:?}");
    assert!(h.core.instances_of("/g/k").all(|i| !i.killing), "a 409 leaves every task running");
    assert_eq!(h.core.app("/g/k").unwrap().instances, 2);
    let id = h.did();
    let (killed, deployment) = h.core.kill_tasks(&t[..1], true, false, true, h.now, id).unwrap();
    assert_eq!((killed.len(), deployment.is_some()), (1, true));
    assert_eq!(h.core.app("/g/k").unwrap().instances, 1);
    let events = h.core.drain_events();
    let change = events.iter().rfind(|e| e["eventType"] == "group_change_success").expect("group_change_success");
    assert_eq!(change["groupId"], "/g", "the change's group, not the root: {change}");
}

#[test]
fn restart_from_persisted_state_does_not_relaunch() {
    let mut h = Harness::new(2);
    create(&mut h, json!({"id": "/p", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 32}));
    let t = h.round();
    h.run_all(&t);
    let saved = serde_json::to_string(&h.core.state).unwrap();
    h.core = Core::new(serde_json::from_str(&saved).unwrap());
    assert!(h.round().is_empty(), "the reloaded instances count");
    assert_eq!(h.core.known_tasks().len(), 2, "they are reconciled");
    // Reconciliation says one is gone: it is replaced.
    h.update(&t[0], TaskState::Gone);
    assert_eq!(h.round().len(), 1);
}

#[test]
fn scale_down_with_kill_and_scale() {
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/s", "cmd": "x", "instances": 3, "cpus": 0.1, "mem": 32}));
    let t = h.round();
    h.run_all(&t);
    let id = h.did();
    let (killed, r) = h.core.kill_tasks(&[t[0].clone()], true, false, false, h.now, id).unwrap();
    assert_eq!(killed.len(), 1);
    assert!(r.is_some());
    assert_eq!(h.core.app("/s").unwrap().instances, 2);
    assert_eq!(h.complete_kills(), 1);
    assert!(h.round().is_empty());
    assert!(h.core.deployments_json(h.now).is_empty());
}

#[test]
fn scale_down_by_instances_kills_youngest_first() {
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/y", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 32}));
    let first = h.round();
    h.run_all(&first);
    let id = h.did();
    h.core.update_app("/y", &json!({"instances": 2}), true, false, h.now, id).unwrap();
    let second = h.round();
    h.run_all(&second);
    let id = h.did();
    h.core.update_app("/y", &json!({"instances": 1}), true, false, h.now, id).unwrap();
    let kills = h.core.actions(h.now).kills;
    assert_eq!(kills, vec![(second[0].clone(), "agent-0".to_string())]);
}

#[test]
fn delete_kills_everything_and_cancel_rolls_back() {
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/d", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 32}));
    let t = h.round();
    h.run_all(&t);
    let id = h.did();
    h.core.delete_app("/d", false, h.now, id).unwrap();
    assert!(matches!(h.core.app("/d"), Err(ApiError::NotFound(m)) if m == "App '/d' does not exist"));
    assert_eq!(h.complete_kills(), 2);
    assert!(h.core.deployments_json(h.now).is_empty());

    create(&mut h, json!({"id": "/e", "cmd": "v1", "instances": 1, "cpus": 0.1, "mem": 32}));
    let t = h.round();
    h.run_all(&t);
    let id = h.did();
    h.core.update_app("/e", &json!({"cmd": "v2", "instances": 1}), true, false, h.now, id.clone()).unwrap();
    let rb = h.did();
    let r = h.core.cancel_deployment(&id, false, h.now, rb).unwrap();
    assert!(r.is_some());
    assert_eq!(h.core.app("/e").unwrap().cmd.as_deref(), Some("v1"));
    let err = h.core.cancel_deployment("nope", false, h.now, "x".into()).unwrap_err();
    assert_eq!(err, ApiError::NotFound("DeploymentPlan nope does not exist".into()));
}

#[test]
fn rollback_to_a_stored_version() {
    let mut h = Harness::new(1);
    let v1 = create(&mut h, json!({"id": "/v", "cmd": "one", "instances": 0, "cpus": 0.1, "mem": 32}));
    h.core.actions(h.now);
    h.now += 1000;
    let id = h.did();
    h.core.update_app("/v", &json!({"cmd": "two"}), true, false, h.now, id).unwrap();
    h.core.actions(h.now);
    h.now += 1000;
    let id = h.did();
    h.core.update_app("/v", &json!({"version": v1.version}), true, false, h.now, id).unwrap();
    let app = h.core.app("/v").unwrap();
    assert_eq!(app.cmd.as_deref(), Some("one"));
    assert_ne!(app.version, v1.version, "a rollback is a new version");
    assert_eq!(h.core.state.versions["/v"].len(), 3);
}

#[test]
fn unreachable_instances_are_replaced_after_inactive_and_forgotten_after_expunge() {
    let mut h = Harness::new(2);
    create(
        &mut h,
        json!({"id": "/un", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 32,
        "unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120}}),
    );
    let t = h.round();
    h.run_all(&t);
    h.update(&t[0], TaskState::Unreachable);
    assert!(h.round().is_empty(), "still counted before inactiveAfterSeconds");
    h.now += 60_000;
    let replacement = h.round();
    assert_eq!(replacement.len(), 1, "replaced once inactive");
    h.run_all(&replacement);
    assert_eq!(h.live("/un"), 2, "the unreachable one is still known");
    h.now += 60_000;
    let kills = h.core.actions(h.now).kills;
    assert_eq!(kills.iter().map(|k| k.0.clone()).collect::<Vec<_>>(), vec![t[0].clone()], "expunged and killed");
    assert_eq!(h.live("/un"), 1);
}

#[test]
fn disabled_unreachable_strategy_never_replaces() {
    let mut h = Harness::new(1);
    create(
        &mut h,
        json!({"id": "/nd", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 32,
        "unreachableStrategy": "disabled"}),
    );
    let t = h.round();
    h.run_all(&t);
    h.update(&t[0], TaskState::Unreachable);
    h.now += 3_600_000;
    assert!(h.round().is_empty());
    assert!(h.core.actions(h.now).kills.is_empty());
    // It comes back.
    h.update(&t[0], TaskState::Running);
    assert_eq!(h.running("/nd", &h.core.app("/nd").unwrap().version.clone()), 1);
}

#[test]
fn unknown_tasks_are_killed_and_unknown_state_ends_an_instance() {
    let mut h = Harness::new(1);
    let stray = h.core.on_update(&status("ghost.instance-1._app.1", "agent-0", TaskState::Running), h.now);
    assert_eq!(stray, Some(("ghost.instance-1._app.1".to_string(), "agent-0".to_string())));
    create(&mut h, json!({"id": "/k", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 32}));
    let t = h.round();
    h.update(&t[0], TaskState::Unknown);
    assert_eq!(h.live("/k"), 0);
    assert_eq!(h.round().len(), 1);
}

#[test]
fn overdue_launches_are_killed_and_replaced() {
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/slow", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 32}));
    let t = h.round();
    h.now += TASK_LAUNCH_TIMEOUT_MS - 2_000;
    assert!(h.core.actions(h.now).kills.is_empty());
    h.now += 2_000;
    assert_eq!(h.complete_kills(), 1);
    assert!(!h.core.state.instances.contains_key(&t[0]));
    assert_eq!(h.round().len(), 1);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Scale(u32),
        Run(usize),
        Fail(usize),
        CompleteKills,
        Round,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..6).prop_map(Op::Scale),
            (0usize..8).prop_map(Op::Run),
            (0usize..8).prop_map(Op::Fail),
            Just(Op::CompleteKills),
            Just(Op::Round),
        ]
    }

    proptest! {
        /// Whatever happens to its tasks and however it is scaled, an app never has more live (not being
        /// killed) instances than it asks for after an offer round, and, with offers to spare and no backoff,
        /// exactly as many — every failure is replaced, nothing is launched twice.
        #[test]
        fn scaling_and_self_healing_converge(ops in prop::collection::vec(op(), 1..60)) {
            let mut h = Harness::new(3);
            create(&mut h, json!({"id": "/p", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16, "backoffSeconds": 0}));
            for op in ops {
                let tasks: Vec<String> = h.core.instances_of("/p").map(|i| i.task_id.clone()).collect();
                match op {
                    Op::Scale(n) => {
                        let id = h.did();
                        h.core.update_app("/p", &json!({"instances": n}), true, true, h.now, id).unwrap();
                    }
                    Op::Run(k) if !tasks.is_empty() => h.update(&tasks[k % tasks.len()], TaskState::Running),
                    Op::Fail(k) if !tasks.is_empty() => h.update(&tasks[k % tasks.len()], TaskState::Failed),
                    Op::CompleteKills => { h.complete_kills(); }
                    Op::Round => {
                        h.core.actions(h.now);
                        h.round();
                        let wanted = h.core.app("/p").unwrap().instances as usize;
                        let live = h.core.instances_of("/p").filter(|i| !i.killing).count();
                        prop_assert_eq!(live, wanted);
                    }
                    _ => {}
                }
                let ids: BTreeSet<&String> = h.core.state.instances.keys().collect();
                prop_assert_eq!(ids.len(), h.core.state.instances.len());
            }
        }
    }
}

mod incremental {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Scale(usize, u32),
        Restart(usize),
        Delete(usize),
        Recreate(usize),
        Run(usize),
        Healthy(usize, bool),
        Fail(usize),
        /// The task ends on its own (TASK_FINISHED): relaunched as the same instance, no failure recorded.
        Finish(usize),
        Unreachable(usize),
        Advance(u64),
        CompleteKills,
        Actions,
        Round,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..3, 0u32..5).prop_map(|(a, n)| Op::Scale(a, n)),
            (0usize..3).prop_map(Op::Restart),
            (0usize..3).prop_map(Op::Delete),
            (0usize..3).prop_map(Op::Recreate),
            (0usize..16).prop_map(Op::Run),
            (0usize..16, any::<bool>()).prop_map(|(k, b)| Op::Healthy(k, b)),
            (0usize..16).prop_map(Op::Fail),
            (0usize..16).prop_map(Op::Finish),
            (0usize..16).prop_map(Op::Unreachable),
            (0u64..4000).prop_map(Op::Advance),
            Just(Op::CompleteKills),
            Just(Op::Actions),
            Just(Op::Round),
        ]
    }

    const APPS: [&str; 3] = ["/g/db", "/g/web", "/solo"];

    fn body(i: usize, instances: u32) -> Value {
        let mut b = json!({"id": APPS[i], "cmd": "x", "instances": instances, "cpus": 0.1, "mem": 16,
                           "backoffSeconds": 1, "upgradeStrategy": {"minimumHealthCapacity": 0.5},
                           "unreachableStrategy": {"inactiveAfterSeconds": 2, "expungeAfterSeconds": 5}});
        if i == 1 {
            b["dependencies"] = json!(["/g/db"]);
            b["healthChecks"] = json!([{"protocol": "MESOS_TCP"}]);
        }
        b
    }

    proptest! {
        /// Whatever happens, the decisions and the deployment progress the core keeps incrementally (touching
        /// only the apps an event concerns) are the ones a full recomputation over every app and deployment
        /// gives.
        #[test]
        fn incremental_decisions_equal_a_full_recomputation(ops in prop::collection::vec(op(), 1..80)) {
            let mut h = Harness::new(3);
            // What a store that writes only the changed records holds: it must stay the whole state.
            let mut saved = crate::store::nodes::split(&h.core.state);
            h.core.take_changes();
            for i in 0..APPS.len() {
                create(&mut h, body(i, 2));
            }
            for op in ops {
                let tasks: Vec<String> = h.core.state.instances.keys().cloned().collect();
                let pick = |k: usize| tasks.get(k % tasks.len().max(1)).cloned();
                let force = true;
                let op_name = format!("{op:?}");
                match op {
                    Op::Scale(a, n) => {
                        let id = h.did();
                        let _ = h.core.update_app(APPS[a], &json!({"instances": n}), true, force, h.now, id);
                    }
                    Op::Restart(a) => {
                        let id = h.did();
                        let _ = h.core.restart_app(APPS[a], force, h.now, id);
                    }
                    Op::Delete(a) => {
                        let id = h.did();
                        let _ = h.core.delete_app(APPS[a], force, h.now, id);
                    }
                    Op::Recreate(a) => {
                        let id = h.did();
                        let _ = h.core.create_app(&body(a, 1), force, h.now, id);
                    }
                    Op::Run(k) => if let Some(t) = pick(k) { h.update(&t, TaskState::Running) },
                    Op::Healthy(k, b) => if let Some(t) = pick(k) {
                        h.now += 10;
                        h.core.on_update(&health(&t, b, ""), h.now);
                    },
                    Op::Fail(k) => if let Some(t) = pick(k) { h.update(&t, TaskState::Failed) },
                    Op::Finish(k) => if let Some(t) = pick(k) { h.update(&t, TaskState::Finished) },
                    Op::Unreachable(k) => if let Some(t) = pick(k) { h.update(&t, TaskState::Unreachable) },
                    Op::Advance(ms) => h.now += ms,
                    Op::CompleteKills => { h.complete_kills(); }
                    Op::Actions => { h.core.actions(h.now); }
                    Op::Round => { h.round(); }
                }
                let now = h.now;
                if let Err(e) = h.core.check_incremental(now) {
                    prop_assert!(false, "{}", e);
                }
                apply_changes(&mut saved, &mut h.core);
                prop_assert!(saved == crate::store::nodes::split(&h.core.state),
                    "a change was not marked for the store after {:?}", op_name);
            }
        }
    }
}

/// As in Marathon since 1.8: an instance killed without `wipe` or whose task failed relaunches with the same
/// instance id as its next incarnation; one killed with `wipe` or by a scale-down is replaced by a new instance.
#[test]
fn killed_or_failed_instances_relaunch_as_their_next_incarnation() {
    let mut h = Harness::new(2);
    create(&mut h, json!({"id": "/web", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16, "backoffSeconds": 0}));
    let t = h.round();
    h.run_all(&t);
    let instance = |h: &Harness, task: &str| h.core.state.instances[task].instance_id.clone();
    let (first, second) = (instance(&h, &t[0]), instance(&h, &t[1]));
    assert_eq!(t[0], format!("{first}._app.1"));

    // Killed without wipe: the replacement is the same instance, incarnation 2.
    let id = h.did();
    h.core.kill_tasks(&t[..1], false, false, false, h.now, id).unwrap();
    h.complete_kills();
    let again = h.round();
    assert_eq!(again, [format!("{first}._app.2")]);
    h.run_all(&again);

    // Its task fails: incarnation 3, also after a restart (the relaunch is kept with the app's record).
    h.update(&again[0], TaskState::Failed);
    let nodes = crate::store::nodes::split(&h.core.state);
    let reloaded = crate::store::nodes::assemble(&nodes, "test").unwrap();
    assert_eq!(reloaded.relaunch["/web"], [(first.clone(), 2)]);
    h.core = Core::new(reloaded);
    h.now += 10_000;
    let third = h.round();
    assert_eq!(third, [format!("{first}._app.3")]);
    assert!(h.core.state.relaunch.is_empty(), "a relaunch is taken once");
    h.run_all(&third);

    // Killed with wipe: a new instance replaces it.
    let id = h.did();
    h.core.kill_tasks(&t[1..2], false, true, false, h.now, id).unwrap();
    h.complete_kills();
    let fresh = h.round();
    assert_eq!(fresh.len(), 1);
    assert!(!fresh[0].starts_with(&second) && fresh[0].ends_with("._app.1"), "a new instance: {fresh:?}");

    // A new configuration: its instances are new instances, even for one waiting to relaunch.
    h.update(&third[0], TaskState::Failed);
    assert_eq!(h.core.state.relaunch["/web"].len(), 1);
    let id = h.did();
    h.core.update_app("/web", &json!({"cmd": "y"}), true, true, h.now, id).unwrap();
    assert!(h.core.state.relaunch.is_empty());
    h.now += 10_000;
    let mut third = h.round();
    assert!(third.iter().all(|t| !t.starts_with(&first) && t.ends_with("._app.1")), "{third:?}");
    h.run_all(&third);
    third.truncate(1);

    // Killed with scale: nothing replaces it, and a later scale-up starts new instances.
    let id = h.did();
    h.core.kill_tasks(&third, true, false, true, h.now, id).unwrap();
    h.complete_kills();
    assert!(h.round().is_empty());
    let id = h.did();
    h.core.update_app("/web", &json!({"instances": 2}), true, true, h.now, id).unwrap();
    let up = h.round();
    assert!(up.len() == 1 && !up[0].starts_with(&first) && up[0].ends_with("._app.1"), "{up:?}");
}

/// An instance waiting to relaunch stands for a missing instance: a scale-down that leaves none missing drops it
/// (from the store too), one that leaves some missing keeps as many.
#[test]
fn a_scale_down_drops_the_relaunches_no_longer_missing() {
    let mut h = Harness::new(2);
    create(&mut h, json!({"id": "/web", "cmd": "x", "instances": 3, "cpus": 0.1, "mem": 16, "backoffSeconds": 3600}));
    let t = h.round();
    h.run_all(&t);
    let mut saved = crate::store::nodes::split(&h.core.state);
    h.core.take_changes();

    // Two fail; the backoff holds their relaunch back.
    h.update(&t[0], TaskState::Failed);
    h.update(&t[1], TaskState::Failed);
    assert!(h.round().is_empty());
    assert_eq!(h.core.state.relaunch["/web"].len(), 2);

    // Two instances wanted, one running: one relaunch is still missing, the last one to fail.
    let id = h.did();
    h.core.update_app("/web", &json!({"instances": 2}), true, true, h.now, id).unwrap();
    h.round();
    let second = h.core.state.instances.get(&t[1]).map(|i| i.instance_id.clone());
    assert!(second.is_none());
    assert_eq!(h.core.state.relaunch["/web"].len(), 1);
    assert!(t[1].starts_with(&h.core.state.relaunch["/web"][0].0), "{:?}", h.core.state.relaunch);

    // One wanted, one running: none missing, nothing waits, and the store says so.
    let id = h.did();
    h.core.update_app("/web", &json!({"instances": 1}), true, true, h.now, id).unwrap();
    h.round();
    assert!(h.core.state.relaunch.is_empty(), "{:?}", h.core.state.relaunch);
    apply_changes(&mut saved, &mut h.core);
    assert!(saved == crate::store::nodes::split(&h.core.state), "the dropped relaunch was not marked");
    h.now += 3_600_000;
    assert!(h.round().is_empty());
}

/// Group writes (create, scale, roll back to a version, delete) mark every record they change for the store.
#[test]
fn group_changes_are_marked_for_the_store() {
    let mut h = Harness::new(2);
    let mut saved = crate::store::nodes::split(&h.core.state);
    h.core.take_changes();
    let mut check = |h: &mut Harness, what: &str| {
        apply_changes(&mut saved, &mut h.core);
        assert!(saved == crate::store::nodes::split(&h.core.state), "a change of {what} was not marked");
    };
    let shop = json!({"id": "/shop", "groups": [{"id": "db"}],
                      "apps": [{"id": "web", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16}]});
    let id = h.did();
    h.core.create_group("/", &shop, false, h.now, id).unwrap();
    check(&mut h, "create");
    h.round();
    check(&mut h, "launch");
    h.now += 1000;
    let id = h.did();
    h.core.update_group("/shop", &json!({"scaleBy": 2}), true, false, h.now, id).unwrap();
    check(&mut h, "scaleBy");
    h.round();
    let oldest = h.core.group_versions("/shop").unwrap().pop().unwrap();
    h.now += 1000;
    let id = h.did();
    h.core.update_group("/shop", &json!({"version": oldest}), true, false, h.now, id).unwrap();
    check(&mut h, "rollback");
    h.now += 1000;
    let id = h.did();
    h.core.delete_group("/shop", true, h.now, id).unwrap();
    check(&mut h, "delete");
    h.core.actions(h.now);
    h.complete_kills();
    check(&mut h, "the kills");
    assert!(h.core.state.groups.is_empty() && h.core.state.apps.is_empty());
}

/// Writes the core's changed records onto `saved`, as a store's `save_changes` does.
fn apply_changes(saved: &mut BTreeMap<String, Vec<u8>>, core: &mut Core) {
    let changes = core.take_changes();
    for (record, data) in crate::store::nodes::changed_nodes(&core.state, &changes) {
        match data {
            Some(data) => saved.insert(record, data),
            None => saved.remove(&record),
        };
    }
}

fn health(task_id: &str, healthy: bool, message: &str) -> TaskStatus {
    TaskStatus {
        reason: Some(agora_proto::model::Reason::TaskHealthCheckStatusUpdated),
        healthy: Some(healthy),
        message: message.into(),
        ..status(task_id, "agent-0", TaskState::Running)
    }
}

const CHECKED: &str = r#"{"id": "/hc", "cmd": "httpd", "instances": 2, "cpus": 0.1, "mem": 32,
    "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "intervalSeconds": 1, "timeoutSeconds": 1}]}"#;

#[test]
fn health_checked_instances_count_only_once_their_agent_reports_healthy() {
    let mut h = Harness::new(1);
    create(&mut h, serde_json::from_str(CHECKED).unwrap());
    let t = h.round();
    h.run_all(&t);
    assert_eq!(h.core.deployments_json(h.now).len(), 1, "RUNNING is not healthy for an app with health checks");
    h.event_types();
    h.now += 10;
    h.core.on_update(&health(&t[0], true, ""), h.now);
    h.core.on_update(&health(&t[1], true, ""), h.now);
    assert!(h.core.deployments_json(h.now).is_empty(), "healthy instances finish the deployment");
    let types = h.event_types();
    assert_eq!(types.iter().filter(|t| *t == "health_status_changed_event").count(), 2, "{types:?}");
    assert_eq!(types.iter().filter(|t| *t == "instance_health_changed_event").count(), 2, "{types:?}");
    let record = h.core.state.instances[&t[0]].health.clone().unwrap();
    assert!(record.alive && record.first_success.is_some());

    // A failure is reported (failed_health_check_event) and changes the health once.
    h.core.on_update(&health(&t[0], false, "HTTP health check failed once: GET answered 503"), h.now);
    h.core.on_update(&health(&t[0], false, "HTTP health check failed 2 times"), h.now);
    let types = h.event_types();
    assert_eq!(types.iter().filter(|t| *t == "failed_health_check_event").count(), 2, "{types:?}");
    assert_eq!(types.iter().filter(|t| *t == "health_status_changed_event").count(), 1, "{types:?}");
    let record = h.core.state.instances[&t[0]].health.clone().unwrap();
    assert_eq!((record.alive, record.consecutive_failures), (false, 2));
    assert_eq!(record.last_failure_cause.as_deref(), Some("HTTP health check failed 2 times"));
}

#[test]
fn launched_tasks_carry_the_check_on_their_own_host_port() {
    let mut h = Harness::new(1);
    create(&mut h, serde_json::from_str(CHECKED).unwrap());
    let offers = h.offers();
    let m = h.core.match_offers(&offers, h.now, &mut |app| format!("{}.instance-x{}", pathid::task_prefix(app), 0));
    let l = &m.launches[0];
    let check = l.task.health_check.as_ref().expect("the task carries the check");
    assert_eq!(check.port, Some(l.host_ports[0]));
    assert_eq!((check.path.as_deref(), check.interval_seconds), (Some("/health"), 1.0));
}

#[test]
fn an_instance_its_agent_killed_as_unhealthy_is_replaced_with_backoff() {
    let mut h = Harness::new(1);
    let mut body: Value = serde_json::from_str(CHECKED).unwrap();
    body["instances"] = json!(1);
    body["backoffSeconds"] = json!(3);
    create(&mut h, body);
    let t = h.round();
    h.run_all(&t);
    h.core.on_update(&health(&t[0], true, ""), h.now);
    h.event_types();
    let why =
        "HTTP health check failed 3 times consecutively: GET answered 503; Command terminated with signal SIGTERM";
    h.now += 10;
    h.core.on_update(
        &TaskStatus { healthy: Some(false), message: why.into(), ..status(&t[0], "agent-0", TaskState::Killed) },
        h.now,
    );
    let events = h.core.drain_events();
    let kill =
        events.iter().find(|e| e["eventType"] == "unhealthy_instance_kill_event").expect("an unhealthy kill event");
    assert_eq!(kill["taskId"], t[0].as_str());
    assert_eq!(kill["reason"], why);
    assert_eq!(h.core.last_failure("/hc").unwrap().message, why);
    assert!(h.round().is_empty(), "replaced after the backoff, as a failure");
    h.now += 3_000;
    assert_eq!(h.round().len(), 1, "replaced");
}

#[test]
fn rolling_upgrade_replaces_old_instances_only_as_new_ones_become_healthy() {
    let mut h = Harness::new(1);
    let mut body: Value = serde_json::from_str(CHECKED).unwrap();
    body["instances"] = json!(3);
    body["upgradeStrategy"] = json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.34});
    create(&mut h, body);
    let t = h.round();
    h.run_all(&t);
    for id in &t {
        h.core.on_update(&health(id, true, ""), h.now);
    }
    let id = h.did();
    let (_, r) = h.core.update_app("/hc", &json!({"cmd": "httpd v2"}), true, false, h.now, id).unwrap();
    let healthy = |h: &Harness| {
        h.core
            .instances_of("/hc")
            .filter(|i| i.state == TaskState::Running && !i.killing && i.healthy == Some(true))
            .count()
    };
    for _ in 0..20 {
        assert!(h.complete_kills() <= 1);
        assert!(healthy(&h) >= 3, "healthy {}", healthy(&h));
        let launched = h.round();
        assert!(h.live("/hc") <= 4, "live {}", h.live("/hc"));
        h.run_all(&launched);
        // RUNNING but not yet healthy: no old instance may go.
        assert!(h.core.actions(h.now).kills.is_empty(), "an old instance killed before a new one is healthy");
        for id in &launched {
            h.core.on_update(&health(id, true, ""), h.now);
        }
        if h.core.deployments_json(h.now).is_empty() {
            break;
        }
    }
    assert!(h.core.deployments_json(h.now).is_empty(), "upgrade finished");
    assert_eq!(h.running("/hc", &r.version), 3);
}

fn answer(status: u16) -> Result<crate::readiness::HttpResponse, String> {
    Ok(crate::readiness::HttpResponse { status, content_type: "text/plain".into(), body: format!("{status}") })
}

#[test]
fn readiness_probes_gate_deployments_until_new_instances_are_ready() {
    let mut h = Harness::new(1);
    create(
        &mut h,
        json!({"id": "/rd", "cmd": "httpd", "instances": 1, "cpus": 0.1, "mem": 32,
               "portDefinitions": [{"port": 0, "name": "http"}],
               "readinessChecks": [{"portName": "http", "path": "/ready", "intervalSeconds": 2, "timeoutSeconds": 1,
                                    "preserveLastResponse": true}],
               "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}}),
    );
    let offers = h.offers();
    let mut n = 0;
    h.core.match_offers(&offers, h.now, &mut |app| {
        n += 1;
        format!("{}.instance-r{n}", pathid::task_prefix(app))
    });
    let t: Vec<String> = h.core.instances_of("/rd").map(|i| i.task_id.clone()).collect();
    assert!(h.core.readiness_probes(h.now).is_empty(), "no probe before RUNNING");
    h.run_all(&t);
    let probes = h.core.readiness_probes(h.now);
    assert_eq!(probes.len(), 1);
    let port = h.core.state.instances[&t[0]].host_ports[0];
    assert_eq!(probes[0].url, format!("http://host0:{port}/ready"), "the agent's hostname when its offer has no ip");
    assert!(h.core.readiness_probes(h.now).is_empty(), "one probe in flight at a time");
    h.core.readiness_result(&t[0], answer(503), h.now);
    assert_eq!(h.core.deployments_json(h.now).len(), 1, "not ready: the deployment waits");
    let d = &h.core.deployments_json(h.now)[0];
    let results = &d["currentActions"][0]["readinessCheckResults"];
    assert_eq!(results[0]["ready"], false, "{d:#}");
    assert_eq!(results[0]["lastResponse"]["status"], 503, "{d:#}");
    assert!(h.core.readiness_probes(h.now + 1_000).is_empty(), "the next probe after intervalSeconds");
    assert_eq!(h.core.readiness_probes(h.now + 2_000).len(), 1);
    h.core.readiness_result(&t[0], answer(200), h.now + 2_000);
    assert!(h.core.deployments_json(h.now).is_empty(), "ready: the deployment is done");

    // A restart keeps the old instance until the new one is ready.
    let id = h.did();
    h.core.update_app("/rd", &json!({"cmd": "httpd v2"}), true, false, h.now, id).unwrap();
    let launched = h.round();
    assert_eq!(launched.len(), 1);
    h.run_all(&launched);
    assert!(h.core.actions(h.now).kills.is_empty(), "RUNNING is not ready");
    let probes = h.core.readiness_probes(h.now);
    assert_eq!(probes.iter().map(|p| p.task_id.clone()).collect::<Vec<_>>(), launched, "only new instances");
    h.core.readiness_result(&launched[0], answer(200), h.now);
    assert_eq!(h.core.actions(h.now).kills, vec![(t[0].clone(), "agent-0".to_string())], "the old one goes");
    h.update(&t[0], TaskState::Killed);
    assert!(h.core.deployments_json(h.now).is_empty());
}

#[test]
fn instances_of_an_app_exclude_an_app_whose_id_extends_its_task_prefix() {
    // `/a.instance-b`'s task ids start with `a.instance-`, the prefix of `/a`'s; each still sees only its own.
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/a", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 32}));
    create(&mut h, json!({"id": "/a.instance-b", "cmd": "x", "instances": 3, "cpus": 0.1, "mem": 32}));
    // (`/a/b` would make `/a` a group too, which Marathon refuses.)
    create(&mut h, json!({"id": "/x/a", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 32}));
    let launched = h.round();
    assert_eq!(launched.len(), 6);
    assert!(launched.iter().all(|t| t.contains(".instance-")), "{launched:?}");
    for (app, n) in [("/a", 2), ("/a.instance-b", 3), ("/x/a", 1)] {
        let mine: Vec<&Instance> = h.core.instances_of(app).collect();
        assert_eq!(mine.len(), n, "{app}: {mine:?}");
        assert!(mine.iter().all(|i| i.app_id == app), "{app}: {mine:?}");
        let all = h.core.state.instances.values().filter(|i| i.app_id == app).count();
        assert_eq!(all, n, "{app}: the range finds every instance");
    }
    assert!(h.round().is_empty(), "each app counts its own instances, so nothing more is launched");
}

#[test]
fn status_update_events_carry_marathons_fields_and_the_agents_address() {
    let mut h = Harness::new(1);
    create(&mut h, json!({"id": "/web", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 32}));
    h.now += 1000;
    let mut offers = h.offers();
    offers[0].url = "http://10.0.0.7:5051/slave(1)".into();
    let launched = h.core.match_offers(&offers, h.now, &mut |_| "web.instance-1".into()).launches;
    let task = launched[0].task.task_id.clone();
    h.core.drain_events();
    h.update(&task, TaskState::Running);
    let events = h.core.drain_events();
    let e = events.iter().find(|e| e["eventType"] == "status_update_event").unwrap();
    assert_eq!(e["ipAddresses"], json!([{"ipAddress": "10.0.0.7", "protocol": "IPv4"}]));
    assert_eq!((e["taskId"].as_str(), e["taskStatus"].as_str()), (Some(task.as_str()), Some("TASK_RUNNING")));
    assert_eq!(
        (e["appId"].as_str(), e["host"].as_str(), e["slaveId"].as_str()),
        (Some("/web"), Some("host0"), Some("agent-0"))
    );
    assert_eq!(e["ports"].as_array().map(Vec::len), Some(1));
    assert!(e["version"].as_str().is_some_and(|v| v.ends_with('Z')) && e["timestamp"].as_str().is_some(), "{e}");
}

/// With `--mesos-role public`, a new app runs in that role unless it names another, which is refused, as is an
/// accepted role that is neither `*` nor its own; an app that already has a role keeps it across updates.
#[test]
fn apps_take_marathons_role_and_accept_only_it_and_the_unreserved_role() {
    let mut h = Harness::new(1);
    h.core.mesos_role = Some("public".into());
    let app = create(&mut h, json!({"id": "/a", "cmd": "x", "acceptedResourceRoles": ["public", "*"]}));
    assert_eq!(
        (app.role.as_str(), app.accepted_resource_roles.clone()),
        ("public", Some(vec!["public".into(), "*".into()]))
    );
    let refused = |h: &mut Harness, body: Value| -> Vec<(String, String)> {
        let id = h.did();
        match h.core.create_app(&body, false, h.now, id) {
            Err(ApiError::Invalid(i)) => {
                i.details().iter().flat_map(|d| d.errors.iter().map(|e| (d.path.clone(), e.clone()))).collect()
            }
            other => panic!("{other:?}"),
        }
    };
    let errs = refused(&mut h, json!({"id": "/b", "cmd": "x", "role": "other", "acceptedResourceRoles": ["third"]}));
    let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/role", "/acceptedResourceRoles"], "{errs:?}");
    assert!(errs[0].1.contains("'public' (--mesos-role)"), "{errs:?}");
    let errs = refused(&mut h, json!({"id": "/b", "cmd": "x", "acceptedResourceRoles": []}));
    assert_eq!(errs, [("/acceptedResourceRoles".to_string(), "must not be empty".to_string())]);
    assert!(!h.core.state.apps.contains_key("/b"), "nothing refused was created");

    // An app from before `--mesos-role` changed keeps its role `*` through a full update, not through a new one.
    let mut old = h.core.state.apps["/a"].clone();
    old.id = "/old".into();
    old.role = "*".into();
    old.accepted_resource_roles = None;
    h.core.state.apps.insert("/old".into(), old);
    let id = h.did();
    h.core.update_app("/old", &json!({"cmd": "y", "acceptedResourceRoles": ["*"]}), false, true, h.now, id).unwrap();
    assert_eq!(h.core.state.apps["/old"].role, "*");
    let errs = refused(&mut h, json!({"id": "/c", "cmd": "x", "role": "*"}));
    assert_eq!(errs[0].0, "/role");

    // Apps in a group body are checked the same way, each under its own path.
    let id = h.did();
    let err = h
        .core
        .create_group("/", &json!({"id": "/g", "apps": [{"id": "x", "cmd": "x", "role": "nope"}]}), false, h.now, id)
        .unwrap_err();
    let ApiError::Invalid(i) = err else { panic!("{err:?}") };
    assert_eq!(i.details()[0].path, "/apps/g/x/role");
}
