//! The gRPC side of the link with the master: wire ⇄ core conversions and the task that owns one `Open` stream.

use std::time::Duration;

use agora_proto::convert::{attributes_to_wire, resources_to_wire};
use agora_proto::model::{FrameworkInfo, MasterInfo, TaskInfo};
use agora_proto::wire::{
    self, agent_link_client::AgentLinkClient, agent_message::Message as Out, master_message::Message as In,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::core::{FromMaster, Registration, ToMaster};

/// How long opening a TCP connection to the master may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive pings on the stream, so a vanished master is noticed even when it sends nothing.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Converts a master message for the core; `None` for an empty message.
pub fn from_wire(msg: wire::MasterMessage) -> Option<FromMaster> {
    Some(match msg.message? {
        In::Registered(r) => FromMaster::Registered {
            agent_id: r.agent_id,
            master: r.master_info.map(MasterInfo::from),
            network: r.network.map(agora_proto::convert::assignment_from_wire).and_then(|a| assignment(&a)),
        },
        In::NetworkPeers(p) => FromMaster::NetworkPeers { peers: peers(&agora_proto::convert::peers_from_wire(p)) },
        In::Ping(_) => FromMaster::Ping,
        In::RunTask(rt) => {
            let framework_id = rt.framework.as_ref().map(|f| f.id.clone()).unwrap_or_default();
            let task_id = rt.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default();
            let framework = rt
                .framework
                .ok_or_else(|| "run_task has no framework".to_string())
                .and_then(|f| FrameworkInfo::try_from(f).map_err(|e| e.to_string()));
            let task = rt
                .task
                .ok_or_else(|| "run_task has no task".to_string())
                .and_then(|t| TaskInfo::try_from(t).map_err(|e| e.to_string()));
            match (framework, task) {
                (Ok(framework), Ok(task)) => FromMaster::run_task(framework, task),
                (Err(message), _) | (_, Err(message)) => FromMaster::InvalidTask { framework_id, task_id, message },
            }
        }
        In::KillTask(k) => FromMaster::KillTask {
            framework_id: k.framework_id,
            task_id: k.task_id,
            grace: k
                .kill_policy
                .and_then(|p| p.grace_period_seconds)
                .and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
        },
        In::Acknowledgement(a) => {
            FromMaster::Acknowledge { framework_id: a.framework_id, task_id: a.task_id, uuid: a.uuid }
        }
        In::ShutdownFramework(s) => FromMaster::ShutdownFramework { framework_id: s.framework_id },
        In::Error(e) => FromMaster::Error { message: e.message },
    })
}

/// The master's assignment with its addresses parsed; a malformed one is logged and ignored (the agent runs no
/// container network then).
fn assignment(a: &agora_proto::model::NetworkAssignment) -> Option<agora_net::Assignment> {
    let parsed = a.cluster_cidr.parse::<agora_net::Ipv4Cidr>().and_then(|c| Ok((c, a.subnet.parse()?)));
    match parsed {
        Ok((cluster, subnet)) => {
            Some(agora_net::Assignment { name: a.name.clone(), cluster, subnet, peers: peers(&a.peers) })
        }
        Err(e) => {
            tracing::error!(error = %e, "ignoring the master's malformed network assignment");
            None
        }
    }
}

/// The peers whose subnet and address parse (others are logged and left out).
fn peers(peers: &[agora_proto::model::NetworkPeer]) -> Vec<agora_net::Peer> {
    peers
        .iter()
        .filter_map(|p| match (p.subnet.parse(), p.ip.parse()) {
            (Ok(subnet), Ok(ip)) => Some(agora_net::Peer { agent_id: p.agent_id.clone(), subnet, ip }),
            _ => {
                tracing::warn!(agent_id = %p.agent_id, subnet = %p.subnet, ip = %p.ip, "ignoring a malformed peer");
                None
            }
        })
        .collect()
}

/// The first message of a stream.
pub fn registration_to_wire(r: Registration) -> wire::AgentMessage {
    let version = agora_proto::model::VERSION.to_string();
    let agent_info = |a: &agora_proto::model::AgentInfo| wire::AgentInfo {
        id: a.id.clone().unwrap_or_default(),
        hostname: a.hostname.clone(),
        port: a.port.into(),
        resources: resources_to_wire(&a.resources),
        attributes: attributes_to_wire(&a.attributes),
        ip: a.ip.clone(),
    };
    let message = match r {
        Registration::Register { agent, network } => Out::Register(wire::RegisterAgent {
            agent_info: Some(agent_info(&agent)),
            version,
            network: network.as_ref().map(agora_proto::convert::agent_network_to_wire),
        }),
        Registration::Reregister { agent, tasks, frameworks, network } => Out::Reregister(wire::ReregisterAgent {
            agent_info: Some(agent_info(&agent)),
            version,
            tasks: tasks
                .iter()
                .map(|t| wire::AgentTask {
                    framework_id: t.framework_id.clone(),
                    task: Some(wire::TaskInfo::from(&t.task)),
                    state: wire::TaskState::from(t.state) as i32,
                })
                .collect(),
            frameworks: frameworks.iter().map(wire::FrameworkInfo::from).collect(),
            network: network.as_ref().map(agora_proto::convert::agent_network_to_wire),
        }),
    };
    wire::AgentMessage { message: Some(message) }
}

pub fn to_wire(m: &ToMaster) -> wire::AgentMessage {
    let message = match m {
        ToMaster::Pong => Out::Pong(wire::Pong {}),
        ToMaster::StatusUpdate(o) => Out::StatusUpdate(wire::StatusUpdate {
            framework_id: o.framework_id.clone(),
            status: Some(wire::TaskStatus::from(&o.status)),
            latest_state: wire::TaskState::from(o.latest_state) as i32,
        }),
    };
    wire::AgentMessage { message: Some(message) }
}

/// Why the master cannot be addressed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Master(#[from] agora_detector::DetectorError),
    #[error("'{url}' is not a valid master address: {source}")]
    Address { url: String, source: tonic::transport::Error },
    #[error("no leading master is known yet")]
    NoLeader,
}

/// The master's gRPC endpoint.
pub fn endpoint(master_url: &str) -> Result<Endpoint, LinkError> {
    Endpoint::from_shared(master_url.to_string())
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        })
        .map_err(|source| LinkError::Address { url: master_url.to_string(), source })
}

/// Where the master is: a fixed address, or whichever master leads according to a ZooKeeper detector.
pub enum Locator {
    Fixed(Box<Endpoint>),
    Detected { detector: agora_detector::Detector, seen: tokio::sync::watch::Receiver<Option<agora_detector::Leader>> },
}

impl Locator {
    /// From `--master` (`HOST:PORT`, `http://HOST:PORT` or `zk://HOST:PORT/PATH`); starts the detector for ZooKeeper.
    pub fn new(master: &str) -> Result<Locator, LinkError> {
        match agora_detector::MasterSpec::parse(master)? {
            agora_detector::MasterSpec::Fixed(addr) => {
                endpoint(&format!("http://{addr}")).map(|e| Locator::Fixed(Box::new(e)))
            }
            spec @ agora_detector::MasterSpec::ZooKeeper(_) => {
                let detector = agora_detector::Detector::start(&spec);
                let seen = detector.watch();
                Ok(Locator::Detected { detector, seen })
            }
        }
    }

    /// The endpoint of the master to connect to now.
    pub fn endpoint(&self) -> Result<Endpoint, LinkError> {
        match self {
            Locator::Fixed(e) => Ok((**e).clone()),
            Locator::Detected { detector, .. } => match detector.current() {
                Some(leader) => endpoint(&format!("http://{}", leader.address)),
                None => Err(LinkError::NoLeader),
            },
        }
    }

    /// Resolves when a (new) leader is detected; never for a fixed address.
    pub async fn leader_changed(&mut self) {
        match self {
            Locator::Fixed(_) => std::future::pending().await,
            Locator::Detected { seen, .. } => loop {
                if seen.changed().await.is_err() {
                    return std::future::pending().await;
                }
                if seen.borrow_and_update().is_some() {
                    return;
                }
            },
        }
    }
}

/// What one stream reports to the shell.
#[derive(Debug)]
pub enum LinkEvent {
    Message(Box<wire::MasterMessage>),
    /// The stream is over (or never opened); says why.
    Ended(String),
}

/// Opens the stream, feeding it from `outbound`, and forwards what the master sends until the stream ends.
pub async fn run_stream(
    endpoint: Endpoint,
    outbound: mpsc::Receiver<wire::AgentMessage>,
    mut report: impl FnMut(LinkEvent) -> bool,
) {
    let why = async {
        let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to the master: {e}"))?;
        let mut client = AgentLinkClient::new(channel);
        let response =
            client.open(ReceiverStream::new(outbound)).await.map_err(|e| format!("cannot open the stream: {e}"))?;
        let mut inbound = response.into_inner();
        loop {
            match inbound.message().await {
                Ok(Some(msg)) => {
                    if !report(LinkEvent::Message(Box::new(msg))) {
                        return Ok::<String, String>("the agent stopped listening".into());
                    }
                }
                Ok(None) => return Ok("the master closed the stream".into()),
                Err(e) => return Err(format!("the stream failed: {e}")),
            }
        }
    }
    .await
    .unwrap_or_else(|e| e);
    report(LinkEvent::Ended(why));
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::model::TaskState;

    #[test]
    fn bad_run_task_becomes_invalid_task_with_ids() {
        let msg = wire::MasterMessage {
            message: Some(In::RunTask(wire::RunTask {
                framework: Some(wire::FrameworkInfo { id: "f1".into(), name: "fw".into(), ..Default::default() }),
                task: Some(wire::TaskInfo {
                    task_id: "t1".into(),
                    resources: vec![wire::Resource { name: "cpus".into(), value: None, role: String::new() }],
                    ..Default::default()
                }),
            })),
        };
        let Some(FromMaster::InvalidTask { framework_id, task_id, message }) = from_wire(msg) else { panic!() };
        assert_eq!((framework_id.as_str(), task_id.as_str()), ("f1", "t1"));
        assert!(message.contains("task 't1'"), "{message}");
    }

    #[test]
    fn kill_policy_becomes_grace() {
        let msg = wire::MasterMessage {
            message: Some(In::KillTask(wire::KillTask {
                framework_id: "f".into(),
                task_id: "t".into(),
                kill_policy: Some(wire::KillPolicy { grace_period_seconds: Some(1.5) }),
            })),
        };
        assert_eq!(
            from_wire(msg),
            Some(FromMaster::KillTask {
                framework_id: "f".into(),
                task_id: "t".into(),
                grace: Some(Duration::from_millis(1500))
            })
        );
        assert_eq!(from_wire(wire::MasterMessage { message: None }), None);
    }

    #[test]
    fn reregistration_carries_tasks_and_states() {
        let agent = agora_proto::model::AgentInfo {
            id: Some("m-S1".into()),
            hostname: "h".into(),
            ip: "127.0.0.1".into(),
            port: 5051,
            resources: "cpus:1".parse().unwrap(),
            attributes: Default::default(),
        };
        let task = TaskInfo {
            name: "t".into(),
            task_id: "t".into(),
            agent_id: "m-S1".into(),
            resources: "cpus:1".parse().unwrap(),
            command: None,
            container: None,
            health_check: None,
            kill_grace_period: None,
            labels: vec![],
            discovery: None,
            data: vec![],
        };
        let r = Registration::Reregister {
            agent,
            tasks: vec![crate::core::ReportedTask { framework_id: "f".into(), task, state: TaskState::Running }],
            frameworks: vec![],
            network: Some(agora_proto::model::AgentNetwork { subnet: Some("10.233.1.0/24".into()) }),
        };
        let Some(Out::Reregister(rr)) = registration_to_wire(r).message else { panic!() };
        assert_eq!(rr.agent_info.map(|a| a.id), Some("m-S1".to_string()));
        assert_eq!(rr.tasks[0].state, wire::TaskState::TaskRunning as i32);
        assert_eq!(rr.version, agora_proto::model::VERSION);
        assert_eq!(rr.network.map(|n| n.subnet), Some("10.233.1.0/24".to_string()));
    }

    #[test]
    fn a_network_assignment_is_parsed_and_malformed_peers_are_left_out() {
        let msg = wire::MasterMessage {
            message: Some(In::Registered(wire::AgentRegistered {
                agent_id: "m-S1".into(),
                master_info: None,
                network: Some(wire::NetworkAssignment {
                    name: "agora".into(),
                    cluster_cidr: "10.233.0.0/16".into(),
                    subnet: "10.233.1.0/24".into(),
                    peers: vec![
                        wire::NetworkPeer {
                            agent_id: "m-S2".into(),
                            subnet: "10.233.2.0/24".into(),
                            ip: "198.51.100.12".into(),
                        },
                        wire::NetworkPeer { agent_id: "bad".into(), subnet: "x".into(), ip: "198.51.100.13".into() },
                    ],
                }),
            })),
        };
        let Some(FromMaster::Registered { network: Some(a), .. }) = from_wire(msg) else { panic!("an assignment") };
        assert_eq!((a.cluster.to_string(), a.subnet.to_string()), ("10.233.0.0/16".into(), "10.233.1.0/24".into()));
        assert_eq!(a.peers.iter().map(|p| p.agent_id.as_str()).collect::<Vec<_>>(), ["m-S2"]);
        let bad = wire::MasterMessage {
            message: Some(In::Registered(wire::AgentRegistered {
                agent_id: "m-S1".into(),
                master_info: None,
                network: Some(wire::NetworkAssignment { cluster_cidr: "nope".into(), ..Default::default() }),
            })),
        };
        assert!(matches!(from_wire(bad), Some(FromMaster::Registered { network: None, .. })));
    }
}
