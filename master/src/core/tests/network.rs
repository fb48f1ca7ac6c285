//! The address plan through the core: subnets leased at registration (persisted before the agent is told), peers
//! told to every agent, subnets kept across a failover and a restart, and tasks' networks checked before launch.

use agora_proto::model::{AgentNetwork, ContainerInfo, FrameworkInfo, NetworkInfo, Reason};

use super::*;

fn with_network() -> Harness {
    let mut h = Harness::new();
    h.master.config.network = Some(NetworkConfig {
        name: "agora".into(),
        plan: agora_net::AddressPlan::new("10.233.0.0/16".parse().unwrap(), 24).unwrap(),
    });
    h
}

/// Registers an agent at `ip` that runs container networks (holding `subnet`), returning its link, id and what it
/// was told.
fn register(h: &mut Harness, ip: &str, subnet: Option<&str>) -> (ConnId, String, Option<NetworkAssignment>) {
    let conn = h.conn();
    let mut info = agent_info(None, &format!("host-{ip}"));
    info.ip = ip.into();
    let network = Some(AgentNetwork { subnet: subnet.map(String::from) });
    h.master.agent_message(conn, AgentMessage::Register { info, network }, h.now);
    h.settle();
    let (id, assignment) = h
        .agent_commands(conn)
        .into_iter()
        .find_map(|c| match c {
            AgentCommand::Registered { agent_id, network, .. } => Some((agent_id, network)),
            _ => None,
        })
        .expect("registered");
    (conn, id, assignment)
}

fn peers_told(h: &Harness, conn: ConnId) -> Vec<Vec<String>> {
    h.agent_commands(conn)
        .into_iter()
        .filter_map(|c| match c {
            AgentCommand::NetworkPeers(p) => {
                Some(p.iter().map(|p| format!("{} {} {}", p.agent_id, p.subnet, p.ip)).collect())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn each_agent_gets_its_own_subnet_persisted_before_it_is_told_and_peers_learn_of_it() {
    let mut h = with_network();
    let (c0, s0, a0) = register(&mut h, "198.51.100.10", None);
    let a0 = a0.expect("an assignment");
    assert_eq!(
        (a0.name.as_str(), a0.cluster_cidr.as_str(), a0.subnet.as_str()),
        ("agora", "10.233.0.0/16", "10.233.0.0/24")
    );
    assert_eq!(a0.peers.len(), 1, "itself");
    h.take();

    let conn = h.conn();
    let mut info = agent_info(None, "host-b");
    info.ip = "198.51.100.11".into();
    h.master.agent_message(conn, AgentMessage::Register { info, network: Some(AgentNetwork::default()) }, h.now);
    let effects = h.master.drain_effects();
    let persist = effects.iter().position(|e| *e == Effect::PersistRegistry).expect("a registry write");
    let told = effects
        .iter()
        .position(|e| matches!(e, Effect::ToAgent(c, AgentCommand::Registered { network: Some(_), .. }) if *c == conn))
        .expect("registered with a subnet");
    assert!(persist < told, "{effects:?}");
    h.effects.extend(effects);
    let s1 = h.master.agent_conns[&conn].clone();
    assert_eq!(h.master.registry().subnets[&s1].subnet.to_string(), "10.233.1.0/24");
    assert_eq!(
        peers_told(&h, c0),
        vec![vec![format!("{s0} 10.233.0.0/24 198.51.100.10"), format!("{s1} 10.233.1.0/24 198.51.100.11")]]
    );

    // An agent without container networks gets no subnet; agents that have one hear nothing of it.
    h.take();
    let (plain, _) = h.add_agent();
    assert!(matches!(&h.agent_commands(plain)[0], AgentCommand::Registered { network: None, .. }));
    assert!(peers_told(&h, c0).is_empty());
    assert_eq!(h.master.registry().subnets.len(), 2);
}

#[test]
fn a_subnet_survives_a_restart_and_a_failover_and_a_held_one_is_kept_when_free() {
    let mut old = with_network();
    let (_c0, s0, _) = register(&mut old, "198.51.100.10", None);
    let (_c1, _s1, a1) = register(&mut old, "198.51.100.11", Some("10.233.7.0/24"));
    assert_eq!(a1.unwrap().subnet, "10.233.7.0/24", "a free subnet the agent holds stays its own");
    let (_c2, _s2, a2) = register(&mut old, "198.51.100.12", Some("10.233.7.0/24"));
    assert_eq!(a2.unwrap().subnet, "10.233.1.0/24", "a taken one is not handed out twice");

    let mut h = recovered(old.master.registry().clone());
    h.master.config.network = old.master.config.network.clone();
    let conn = h.conn();
    let mut info = agent_info(Some(&s0), "host-a");
    info.ip = "198.51.100.10".into();
    let network = Some(AgentNetwork { subnet: None });
    h.master.agent_message(conn, AgentMessage::Reregister { info, tasks: vec![], frameworks: vec![], network }, h.now);
    h.settle();
    let told = h.agent_commands(conn).into_iter().find_map(|c| match c {
        AgentCommand::Registered { network, .. } => network,
        _ => None,
    });
    let told = told.expect("the registry's subnet");
    assert_eq!(told.subnet, "10.233.0.0/24");
    assert_eq!(told.peers.len(), 3, "peers known from the registry before they re-register");
}

fn bridged(id: &str, agent: &str, res: &str, name: Option<&str>, mappings: &[(u32, u32)]) -> TaskInfo {
    let mut t = task(id, agent, res);
    t.container = Some(ContainerInfo::on_network(NetworkInfo::join(name, mappings)));
    t
}

#[test]
fn a_tasks_network_is_checked_before_it_reaches_the_agent() {
    let mut h = with_network();
    let (_ac, aid, _) = register(&mut h, "198.51.100.10", None);
    let (fc, fid, sid) = h.subscribe(FrameworkInfo::new("f"));
    let offer = h.offers_to(fc).remove(0);
    let res = "cpus:0.1;mem:32;ports:[31000-31001]";
    let cases = [
        (bridged("a", &aid, res, Some("nope"), &[]), "Unknown network 'nope' in 'container.network_infos[0].name'"),
        (
            bridged("b", &aid, res, None, &[(31005, 80)]),
            "Host port 31005 of 'container.network_infos[0].port_mappings[0].host_port' is not among the task's 'ports' resources [31000-31001]",
        ),
        (
            bridged("c", &aid, res, None, &[(31000, 80), (31000, 81)]),
            "Host port 31000 of 'container.network_infos[0].port_mappings[1].host_port' is mapped twice",
        ),
    ];
    let tasks: Vec<TaskInfo> = cases.iter().map(|(t, _)| t.clone()).collect();
    h.take();
    h.call(&fid, &sid, launch(&offer, tasks));
    for (t, want) in &cases {
        let update = h.updates_to(fc).into_iter().find(|u| u.task_id == t.task_id).expect("an update");
        assert_eq!((update.state, update.reason), (TaskState::Error, Some(Reason::TaskInvalid)));
        assert!(update.message.contains(want), "{}", update.message);
    }
    h.take();
    h.advance(std::time::Duration::from_secs(6));
    let offer = h.offers_to(fc).into_iter().find(|o| o.agent_id == aid).expect("offered again");
    h.call(&fid, &sid, launch(&offer, vec![bridged("ok", &aid, res, Some("agora"), &[(31000, 80)])]));
    assert!(
        h.effects
            .iter()
            .any(|e| matches!(e, Effect::ToAgent(_, AgentCommand::RunTask { task, .. }) if task.task_id == "ok"))
    );

    // An agent without container networks cannot take such a task.
    let (_plain, plain_id) = h.add_agent();
    let offer = h.offers_to(fc).into_iter().find(|o| o.agent_id == plain_id).expect("an offer of the plain agent");
    h.take();
    h.call(&fid, &sid, launch(&offer, vec![bridged("p", &plain_id, res, None, &[])]));
    let update = h.updates_to(fc).into_iter().find(|u| u.task_id == "p").expect("an update");
    assert!(update.message.contains(&format!("Agent '{plain_id}' runs no container network")), "{}", update.message);
}
