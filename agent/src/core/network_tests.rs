//! The container network through the core: the master's assignment and peers become the host's network, a bridged
//! task is checked, launched with its network, reports its address (and health checks reach it), its port mappings
//! come and go with it, and a restarted agent gets the addresses back from its leases.

use std::collections::BTreeMap;

use agora_net::{Assignment, Peer, PortForward, Protocol};
use agora_proto::model::{ContainerInfo, HealthCheck, NetworkInfo};

use super::tests::{SEC, framework, key, launch_of, settings, task, uuid_of};
use super::*;
use crate::containerizer::{Recovered, RecoveredContainer, Termination};

fn assignment() -> Assignment {
    Assignment {
        name: "agora".into(),
        cluster: "10.233.0.0/16".parse().unwrap(),
        subnet: "10.233.1.0/24".parse().unwrap(),
        peers: vec![Peer {
            agent_id: "m-S1".into(),
            subnet: "10.233.2.0/24".parse().unwrap(),
            ip: "198.51.100.12".parse().unwrap(),
        }],
    }
}

/// A registered agent that runs container networks, with the effects of its registration.
fn networked(t0: Instant) -> (AgentCore, Vec<Effect>) {
    let mut s = settings(t0);
    s.networks = true;
    let mut core = AgentCore::new(s);
    let Registration::Register { network, .. } = core.connecting() else { panic!("register") };
    assert_eq!(network, Some(AgentNetwork { subnet: None }), "it asks for a subnet");
    let effects =
        core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None, network: Some(assignment()) }, t0);
    (core, effects)
}

fn bridged(id: &str, name: Option<&str>) -> TaskInfo {
    let mut t = task(id, "serve");
    t.container = Some(ContainerInfo::on_network(NetworkInfo::join(name, &[(31000, 8080)])));
    t.health_check = Some(HealthCheck { interval_seconds: 1.0, timeout_seconds: 1.0, ..HealthCheck::http(8080, "/") });
    t
}

fn applied(effects: &[Effect]) -> Vec<NetworkState> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ApplyNetwork(s) => Some((**s).clone()),
            _ => None,
        })
        .collect()
}

fn forward(ip: &str) -> PortForward {
    PortForward { protocol: Protocol::Tcp, host_port: 31000, ip: ip.parse().unwrap(), container_port: 8080 }
}

#[test]
fn the_assignment_and_peers_become_the_hosts_network_and_the_subnet_is_asked_for_again() {
    let t0 = Instant::now();
    let (mut core, effects) = networked(t0);
    assert_eq!(applied(&effects), vec![NetworkState { assignment: assignment(), forwards: vec![] }]);
    let again =
        core.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None, network: Some(assignment()) }, t0);
    assert!(applied(&again).is_empty(), "nothing changed");
    let mut peers = assignment().peers;
    peers.push(Peer {
        agent_id: "m-S2".into(),
        subnet: "10.233.3.0/24".parse().unwrap(),
        ip: "198.51.100.13".parse().unwrap(),
    });
    let effects = core.handle(FromMaster::NetworkPeers { peers: peers.clone() }, t0);
    assert_eq!(applied(&effects)[0].assignment.peers, peers);
    core.disconnected();
    let Registration::Reregister { network, .. } = core.connecting() else { panic!("reregister") };
    assert_eq!(network, Some(AgentNetwork { subnet: Some("10.233.1.0/24".into()) }));
}

#[test]
fn a_bridged_task_reports_its_address_its_mapping_lives_with_it_and_checks_reach_it() {
    let t0 = Instant::now();
    let (mut core, _) = networked(t0);
    let effects = core.handle(FromMaster::run_task(framework(vec![]), bridged("web", Some("agora"))), t0);
    let spec = launch_of(&effects);
    // TASK_STARTING acknowledged, so the next update goes out at once.
    let ack = FromMaster::Acknowledge { framework_id: "m-0001".into(), task_id: "web".into(), uuid: uuid_of(&effects) };
    core.handle(ack, t0);
    let network = spec.network.clone().expect("a network");
    assert_eq!((network.name.as_str(), network.subnet.to_string()), ("agora", "10.233.1.0/24".to_string()));
    let ip: std::net::Ipv4Addr = "10.233.1.2".parse().unwrap();
    // The mapping is applied as soon as the container is attached, before its launch result.
    let attached = core.network_attached(&key("web"), &spec.container_id, ip);
    assert_eq!(applied(&attached)[0].forwards, vec![forward("10.233.1.2")]);
    let effects = core.launched(&key("web"), &spec.container_id, Ok(()), t0);
    assert!(applied(&effects).is_empty(), "nothing more to apply");
    let running = effects.iter().position(|e| matches!(e, Effect::Send(_))).expect("TASK_RUNNING");
    let Some(Effect::Send(ToMaster::StatusUpdate(update))) = effects.get(running) else { panic!() };
    let status = update.status.container_status.clone().expect("a container status");
    assert_eq!(status.ip_addresses().collect::<Vec<_>>(), ["10.233.1.2"]);
    assert_eq!(status.network_infos[0].name.as_deref(), Some("agora"));
    assert_eq!(status.network_infos[0].port_mappings[0].host_port, 31000);
    let check = effects
        .iter()
        .find_map(|e| match e {
            Effect::StartHealthCheck(c) => Some(c.host),
            _ => None,
        })
        .expect("a health check");
    assert_eq!(check, Some(std::net::IpAddr::V4(ip)));
    let state = core.state_json();
    let task_json = &state["frameworks"][0]["executors"][0]["tasks"][0];
    assert_eq!(
        task_json["statuses"][0]["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"],
        "10.233.1.2"
    );

    let effects = core.exited(&key("web"), &spec.container_id, Ok(Termination::Exited(0)), t0 + 5 * SEC);
    assert!(effects.contains(&Effect::Destroy { task: Some(key("web")), container_id: spec.container_id.clone() }));
    assert_eq!(applied(&effects)[0].forwards, vec![], "the mapping goes with the task");
    let pending = core.updates.snapshot().into_iter().flat_map(|q| q.pending);
    let mut pending = pending;
    let finished = pending.rfind(|s| s.state == TaskState::Finished).expect("TASK_FINISHED");
    assert!(finished.container_status.is_some(), "the last status still names the address");
}

#[test]
fn a_launch_that_fails_after_the_attachment_takes_its_mapping_away() {
    let t0 = Instant::now();
    let (mut core, _) = networked(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), bridged("web", None)), t0));
    let attached = core.network_attached(&key("web"), &spec.container_id, "10.233.1.4".parse().unwrap());
    assert_eq!(applied(&attached)[0].forwards.len(), 1);
    let failed = LaunchFailed { reason: Reason::ContainerLaunchFailed, message: "no".into() };
    let effects = core.launched(&key("web"), &spec.container_id, Err(failed), t0);
    assert_eq!(applied(&effects)[0].forwards, vec![]);
    assert_eq!(core.task_state(&key("web")), Some(TaskState::Failed));
}

#[test]
fn a_network_the_agent_cannot_give_fails_the_task_naming_why() {
    let t0 = Instant::now();
    let (mut core, _) = networked(t0);
    let effects = core.handle(FromMaster::run_task(framework(vec![]), bridged("x", Some("nope"))), t0);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
    assert_eq!(core.task_state(&key("x")), Some(TaskState::Failed));
    let pending = core.updates.snapshot().into_iter().flat_map(|q| q.pending);
    let message = pending.filter(|s| s.state == TaskState::Failed).map(|s| s.message).next();
    assert_eq!(
        message.as_deref(),
        Some("unknown network 'nope' in 'container.network_infos[0].name'; this agent's network is 'agora'")
    );
    let mut plain = AgentCore::new(settings(t0));
    plain.handle(FromMaster::Registered { agent_id: "m-S0".into(), master: None, network: None }, t0);
    let effects = plain.handle(FromMaster::run_task(framework(vec![]), bridged("y", None)), t0);
    assert_eq!(plain.task_state(&key("y")), Some(TaskState::Failed));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Launch(_))));
}

#[test]
fn a_restarted_agent_gets_addresses_back_from_its_leases_and_frees_the_rest() {
    let t0 = Instant::now();
    let (mut core, _) = networked(t0);
    let spec = launch_of(&core.handle(FromMaster::run_task(framework(vec![]), bridged("web", None)), t0));
    let _ = core.network_attached(&key("web"), &spec.container_id, "10.233.1.9".parse().unwrap());
    core.launched(&key("web"), &spec.container_id, Ok(()), t0);
    let cp: crate::checkpoint::AgentCheckpoint =
        serde_json::from_slice(&serde_json::to_vec(&core.checkpoint()).unwrap()).unwrap();

    let t1 = t0 + 60 * SEC;
    let mut s = settings(t1);
    s.networks = true;
    let mut after = AgentCore::new(s);
    after.restore_network(Some(assignment()));
    let leases = BTreeMap::from([
        (spec.container_id.clone(), "10.233.1.9".parse().unwrap()),
        ("gone".to_string(), "10.233.1.10".parse().unwrap()),
    ]);
    let found = vec![RecoveredContainer { container_id: spec.container_id.clone(), state: Recovered::Running }];
    let effects = after.recover(cp, found, &leases, t1);
    assert_eq!(
        applied(&effects[..1]),
        vec![NetworkState { assignment: assignment(), forwards: vec![forward("10.233.1.9")] }]
    );
    assert_eq!(effects[1], Effect::ReconcileNetwork { live: [spec.container_id.clone()].into() });
    let check = effects.iter().find_map(|e| match e {
        Effect::StartHealthCheck(c) => Some(c.host),
        _ => None,
    });
    assert_eq!(check, Some(Some("10.233.1.9".parse().unwrap())));
}
