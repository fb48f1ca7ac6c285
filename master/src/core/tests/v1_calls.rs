//! The calls only the v1 HTTP API brings (SHUTDOWN, RECONCILE_OPERATIONS, UPDATE_FRAMEWORK, ...) and the refusals
//! every call can get.

use super::*;
use agora_proto::model::{OperationState, OperationStatus};

fn operation_updates(h: &Harness, conn: ConnId) -> Vec<OperationStatus> {
    h.effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToFramework(c, SchedulerEvent::UpdateOperationStatus(s)) if *c == conn => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn calls_are_refused_for_unknown_frameworks_lost_subscriptions_and_wrong_streams() {
    let mut h = Harness::new();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo { failover_timeout: 60.0, ..FrameworkInfo::new("f") });
    let now = h.now;
    assert_eq!(h.master.call("nobody", &sid, Call::Teardown, now), Err(CallError::UnknownFramework("nobody".into())));
    assert_eq!(
        h.master.call(&fid, "other", Call::Revive { roles: vec![] }, now),
        Err(CallError::WrongStream { framework_id: fid.clone(), stream_id: "other".into() })
    );
    h.master.framework_disconnected(fc, now);
    assert_eq!(h.master.call(&fid, &sid, Call::Revive { roles: vec![] }, now), Err(CallError::NotSubscribed(fid)));
}

#[test]
fn shutdown_of_a_command_executor_kills_its_task_and_unknown_executors_are_ignored() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    let mut t = task("t1", &aid, "cpus:0.5;mem:64");
    t.kill_grace_period = Some(7.0);
    h.call(&fid, &sid, launch(&offer, vec![t]));
    h.take();
    h.call(&fid, &sid, Call::Shutdown { executor_id: "t1".into(), agent_id: aid.clone() });
    assert_eq!(
        h.agent_commands(ac),
        [AgentCommand::KillTask { framework_id: fid.clone(), task_id: "t1".into(), grace_period: Some(7.0) }]
    );
    h.take();
    h.call(&fid, &sid, Call::Shutdown { executor_id: "nope".into(), agent_id: aid.clone() });
    h.call(&fid, &sid, Call::Shutdown { executor_id: "t1".into(), agent_id: "elsewhere".into() });
    assert!(h.agent_commands(ac).is_empty());
    assert!(h.updates_to(fc).is_empty(), "no reconciliation answer, unlike a KILL of an unknown task");
}

#[test]
fn operations_are_reconciled_by_what_is_known_of_their_agents() {
    let mut h = Harness::new();
    let (ac, aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    h.take();
    h.call(&fid, &sid, Call::ReconcileOperations { operations: vec![] });
    assert!(operation_updates(&h, fc).is_empty(), "implicit: the master knows no operations");
    h.master.agent_disconnected(ac);
    for _ in 0..5 {
        h.advance(Duration::from_secs(15));
    }
    h.take();
    let ops = vec![("op1".to_string(), Some(aid.clone())), ("op2".to_string(), None)];
    h.call(&fid, &sid, Call::ReconcileOperations { operations: ops });
    let got: Vec<(String, OperationState, Option<String>)> =
        operation_updates(&h, fc).into_iter().map(|s| (s.operation_id, s.state, s.agent_id)).collect();
    assert_eq!(
        got,
        [("op1".into(), OperationState::Unreachable, Some(aid)), ("op2".into(), OperationState::Unknown, None)]
    );
}

#[test]
fn messages_requests_and_operation_acknowledgements_are_accepted_and_change_nothing() {
    let mut h = Harness::new();
    let (ac, _aid) = h.add_agent();
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    h.take();
    h.call(&fid, &sid, Call::Message { agent_id: "a".into(), executor_id: "e".into(), data: vec![1] });
    h.call(&fid, &sid, Call::Request);
    h.call(
        &fid,
        &sid,
        Call::AcknowledgeOperationStatus { operation_id: "o".into(), agent_id: None, uuid: vec![0; 16] },
    );
    assert!(h.agent_commands(ac).is_empty());
    assert!(h.updates_to(fc).is_empty());
}

#[test]
fn update_framework_changes_roles_and_refuses_immutable_fields() {
    let mut h = Harness::new();
    let _agent = h.add_agent();
    let info = FrameworkInfo {
        user: "alice".into(),
        roles: vec!["*".into()],
        capabilities: vec![Capability::MultiRole],
        failover_timeout: 10.0,
        ..FrameworkInfo::new("f")
    };
    let (fc, fid, sid) = h.subscribe(info.clone());
    let offer = h.offers_to(fc).remove(0);
    assert_eq!(offer.role, "*");
    h.take();

    // Immutable fields are refused and nothing changes.
    for (field, changed) in [
        ("user", FrameworkInfo { user: "bob".into(), ..info.clone() }),
        ("principal", FrameworkInfo { principal: Some("p".into()), ..info.clone() }),
        ("checkpoint", FrameworkInfo { checkpoint: true, ..info.clone() }),
    ] {
        let refused = h.master.call(
            &fid,
            &sid,
            Call::UpdateFramework { info: Box::new(changed), suppressed_roles: vec![] },
            h.now,
        );
        assert_eq!(refused, Err(CallError::Invalid(format!("Updating 'FrameworkInfo.{field}' is unsupported"))));
    }
    let stray = Call::UpdateFramework { info: Box::new(info.clone()), suppressed_roles: vec!["x".into()] };
    assert!(matches!(h.master.call(&fid, &sid, stray, h.now), Err(CallError::Invalid(m)) if m.contains("'x'")));
    h.settle();
    assert!(h.effects.iter().all(|e| !matches!(e, Effect::Operator { .. })), "a refused update changes nothing");

    // Moving from `*` to `web`: the `*` offer is rescinded, the registry learns the new failover timeout, and
    // operators see the new info.
    let updated = FrameworkInfo { name: "g".into(), roles: vec!["web".into()], failover_timeout: 99.0, ..info };
    h.call(&fid, &sid, Call::UpdateFramework { info: Box::new(updated), suppressed_roles: vec!["web".into()] });
    assert!(h.effects.iter().any(
        |e| matches!(e, Effect::ToFramework(c, SchedulerEvent::Rescind { offer_id }) if *c == fc && *offer_id == offer.id)
    ));
    assert_eq!(h.master.registry().frameworks[&fid].failover_timeout, 99.0);
    let view = h
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Operator { event: agora_proto::model::cluster::OperatorEvent::FrameworkUpdated(f), .. } => {
                Some(f.clone())
            }
            _ => None,
        })
        .expect("FRAMEWORK_UPDATED");
    assert_eq!((view.info.name.as_str(), view.info.roles.clone()), ("g", vec!["web".to_string()]));
    // `web` is suppressed: no offer for it until REVIVE.
    h.take();
    h.advance(Duration::from_secs(2));
    assert!(h.offers_to(fc).is_empty());
    h.call(&fid, &sid, Call::Revive { roles: vec!["web".into()] });
    assert_eq!(h.offers_to(fc).iter().map(|o| o.role.as_str()).collect::<Vec<_>>(), ["web"]);
}

#[test]
fn a_removed_framework_may_not_subscribe_again_under_its_id() {
    let mut h = Harness::new();
    let (_fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    h.call(&fid, &sid, Call::Teardown);
    h.take();
    let conn = h.conn();
    let again = FrameworkInfo { id: Some(fid.clone()), ..FrameworkInfo::new("f") };
    h.master.subscribe(conn, again, vec![], h.now);
    h.settle();
    assert_eq!(
        h.take(),
        [
            Effect::ToFramework(conn, SchedulerEvent::Error { message: "Framework has been removed".into() }),
            Effect::CloseFramework(conn)
        ]
    );
}
