//! Mesos v1 messages against bytes produced by Mesos's own definitions, not ours.
//!
//! How the golden bytes were made (at development time; nothing of it is committed): Apache Mesos's published
//! `.proto` files were taken from `github:apache/mesos` at commit c1b42f79 (`include/mesos/**`, via
//! `git archive HEAD include/mesos`), Debian's `protobuf-compiler` and `libprotobuf-dev` (3.21.12) were installed,
//! and each message below was written in protobuf text format (quoted above its constant) and encoded with
//!
//! ```text
//! protoc -I mesos/include -I /usr/include --encode=mesos.v1.scheduler.Call mesos/v1/scheduler/scheduler.proto \
//!     < msg.txtpb | xxd -p | tr -d '\n'
//! ```
//!
//! (`mesos.v1.scheduler.Event` and `mesos.v1.master.Event` likewise). So each test checks our definitions (names,
//! numbers, types) and our conversions against Mesos's: calls a Mesos client encodes decode here into the model
//! values they mean, and the events our conversions build encode to exactly the bytes Mesos's definitions give.

use agora_proto::mesos::codec::{self, Format};
use agora_proto::mesos::v1;
use agora_proto::model::cluster::OperatorEvent;
use agora_proto::model::{
    self, Attributes, Capability, FrameworkInfo, HealthCheckType, MasterInfo, Offer, Reason, Resources, Source,
    TaskInfo, TaskState, TaskStatus,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

const UUID: [u8; 16] = [0x66, 0x4d, 0x71, 0xd1, 0x09, 0xb6, 0x4f, 0x8b, 0x99, 0xdf, 0x2f, 0x5c, 0x5f, 0x63, 0x3b, 0x43];

/// ```text
/// type: SUBSCRIBE
/// subscribe {
///   framework_info { user: "root" name: "golden" failover_timeout: 100 checkpoint: true roles: "web"
///                    capabilities { type: MULTI_ROLE } capabilities { type: PARTITION_AWARE } }
///   suppressed_roles: "batch"
/// }
/// ```
const SUBSCRIBE: &str =
    "10011a2f0a260a04726f6f741206676f6c64656e21000000000000594028015202080652020805620377656212056261746368";

/// ```text
/// framework_id { value: "M-0000" } type: ACCEPT
/// accept {
///   offer_ids { value: "M-O1" }
///   operations { type: LAUNCH launch { task_infos {
///     name: "web-1" task_id { value: "web.1" } agent_id { value: "M-S0" }
///     resources { name: "cpus" type: SCALAR scalar { value: 0.5 } }
///     resources { name: "ports" type: RANGES ranges { range { begin: 31000 end: 31001 } } }
///     command { value: "sleep 10" environment { variables { name: "A" value: "b" } }
///               uris { value: "http://example.org/a.tgz" extract: false } }
///     kill_policy { grace_period { nanoseconds: 2000000000 } }
///     health_check { type: TCP tcp { port: 31000 } consecutive_failures: 5 }
///     data: "\001\002" } } }
///   filters { refuse_seconds: 3600 }
/// }
/// ```
const ACCEPT: &str = "0a080a064d2d30303030100322b0010a060a044d2d4f31129a0108011295010a92010a057765622d3112070a057765622e311a060a044d2d533022130a046370757310001a0909000000000000e03f22150a05706f7274731001220a0a080898f2011099f201320201023a320a1c0a18687474703a2f2f6578616d706c652e6f72672f612e74677a180012080a060a01411201621a08736c656570203130420a280540034a040898f20162080a060880a8d6b9071a0909000000000020ac40";

/// ```text
/// framework_id { value: "M-0000" } type: ACKNOWLEDGE
/// acknowledge { agent_id { value: "M-S0" } task_id { value: "web.1" } uuid: "fMq\321..." (UUID) }
/// ```
const ACKNOWLEDGE: &str =
    "0a080a064d2d30303030100842230a060a044d2d533012070a057765622e311a10664d71d109b64f8b99df2f5c5f633b43";

/// ```text
/// type: SUBSCRIBED
/// subscribed { framework_id { value: "M-0000" } heartbeat_interval_seconds: 15
///   master_info { id: "M" ip: 16777343 port: 5050 pid: "master@127.0.0.1:5050" hostname: "localhost"
///                 version: "0.1.0" address { hostname: "localhost" ip: "127.0.0.1" port: 5050 } } }
/// ```
const SUBSCRIBED: &str = "080112640a080a064d2d30303030110000000000002e401a4f0a014d10ff80800818ba2722156d6173746572403132372e302e302e313a353035302a096c6f63616c686f73743205302e312e303a190a096c6f63616c686f737412093132372e302e302e3118ba27";

/// ```text
/// type: UPDATE
/// update { status { task_id { value: "web.1" } state: TASK_RUNNING message: "started" agent_id { value: "M-S0" }
///   timestamp: 1700000000.5 healthy: true source: SOURCE_EXECUTOR
///   reason: REASON_TASK_HEALTH_CHECK_STATUS_UPDATED uuid: (UUID) } }
/// ```
const UPDATE: &str = "08042a3f0a3d0a070a057765622e3110012207737461727465642a060a044d2d53303100002040fc54d94140014802501d5a10664d71d109b64f8b99df2f5c5f633b43";

/// ```text
/// type: OFFERS
/// offers { offers {
///   id { value: "M-O1" } framework_id { value: "M-0000" } agent_id { value: "M-S0" } hostname: "agent0"
///   resources { name: "cpus" type: SCALAR scalar { value: 2 } role: "*" allocation_info { role: "web" } }
///   resources { name: "mem" type: SCALAR scalar { value: 1024 } role: "web" allocation_info { role: "web" }
///               reservations { type: STATIC role: "web" } }
///   attributes { name: "rack" type: TEXT text { value: "r1" } }
///   url { scheme: "http" address { hostname: "agent0" ip: "127.0.0.1" port: 5051 } path: "/slave(1)" }
///   allocation_info { role: "web" } } }
/// ```
const OFFERS: &str = "08021aaf010aac010a060a044d2d4f3112080a064d2d303030301a060a044d2d533022066167656e74302a1d0a046370757310001a0909000000000000004032012a5a050a037765622a270a036d656d10001a0909000000000000904032037765625a050a037765626a071a0377656220013a0e0a047261636b10032a040a02723142290a046874747012160a066167656e743012093132372e302e302e3118bb271a092f736c61766528312952050a03776562";

/// `mesos.v1.master.Event`:
/// ```text
/// type: TASK_UPDATED
/// task_updated { framework_id { value: "M-0000" }
///   status { task_id { value: "web.1" } state: TASK_KILLED message: "killed" agent_id { value: "M-S0" }
///            timestamp: 1700000001 source: SOURCE_MASTER reason: REASON_FRAMEWORK_REMOVED }
///   state: TASK_KILLED }
/// ```
const TASK_UPDATED: &str = "080322360a080a064d2d3030303012280a070a057765622e31100422066b696c6c65642a060a044d2d53303100004040fc54d941480050031804";

fn call(bytes: &str) -> v1::scheduler::Call {
    codec::decode(&hex(bytes), Format::Protobuf).expect("golden call decodes")
}

#[test]
fn a_mesos_subscribe_decodes_into_the_framework_it_describes() {
    let c = call(SUBSCRIBE);
    assert_eq!(c.r#type(), v1::scheduler::call::Type::Subscribe);
    let s = c.subscribe.expect("subscribe");
    assert_eq!(s.suppressed_roles, ["batch"]);
    let info = FrameworkInfo::try_from(s.framework_info).unwrap();
    let mut want = FrameworkInfo::new("golden");
    want.user = "root".into();
    want.roles = vec!["web".into()];
    want.failover_timeout = 100.0;
    want.checkpoint = true;
    want.capabilities = vec![Capability::MultiRole, Capability::PartitionAware];
    assert_eq!(info, want);

    // The same call in Mesos's JSON is the same message.
    let json = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"golden",
        "failover_timeout":100,"checkpoint":true,"roles":["web"],
        "capabilities":[{"type":"MULTI_ROLE"},{"type":"PARTITION_AWARE"}]},"suppressed_roles":["batch"]}}"#;
    assert_eq!(codec::decode::<v1::scheduler::Call>(json.as_bytes(), Format::Json).unwrap(), call(SUBSCRIBE));
    assert_eq!(codec::encode(&call(SUBSCRIBE), Format::Protobuf).unwrap(), hex(SUBSCRIBE));
}

#[test]
fn a_mesos_accept_decodes_into_the_task_it_launches() {
    let c = call(ACCEPT);
    assert_eq!(c.r#type(), v1::scheduler::call::Type::Accept);
    assert_eq!(c.framework_id.as_ref().map(|f| f.value.as_str()), Some("M-0000"));
    let accept = c.accept.expect("accept");
    assert_eq!(accept.offer_ids[0].value, "M-O1");
    assert_eq!(accept.filters.and_then(|f| f.refuse_seconds), Some(3600.0));
    let op = &accept.operations[0];
    assert_eq!(op.r#type(), v1::offer::operation::Type::Launch);
    let task = TaskInfo::try_from(op.launch.clone().unwrap().task_infos.remove(0)).unwrap();
    assert_eq!((task.name.as_str(), task.task_id.as_str(), task.agent_id.as_str()), ("web-1", "web.1", "M-S0"));
    assert_eq!(task.resources, "cpus:0.5;ports:[31000-31001]".parse::<Resources>().unwrap());
    let command = task.command.unwrap();
    assert!(command.shell, "shell defaults to true");
    assert_eq!(command.value, "sleep 10");
    assert_eq!(command.environment, [("A".to_string(), "b".to_string())]);
    assert_eq!(command.uris[0].value, "http://example.org/a.tgz");
    assert!(!command.uris[0].extract);
    assert_eq!(task.kill_grace_period, Some(2.0));
    let check = task.health_check.unwrap();
    assert_eq!((check.kind, check.port), (HealthCheckType::Tcp, Some(31000)));
    // Mesos's defaults for what the call left out.
    assert_eq!(
        (check.delay_seconds, check.interval_seconds, check.timeout_seconds, check.grace_period_seconds),
        (15.0, 10.0, 20.0, 10.0)
    );
    assert_eq!(check.consecutive_failures, 5);
    assert_eq!(task.data, [1, 2]);
    assert_eq!(codec::encode(&call(ACCEPT), Format::Protobuf).unwrap(), hex(ACCEPT));
}

#[test]
fn a_mesos_acknowledge_keeps_its_uuid_bytes() {
    let c = call(ACKNOWLEDGE);
    let a = c.acknowledge.clone().expect("acknowledge");
    assert_eq!((a.agent_id.value.as_str(), a.task_id.value.as_str()), ("M-S0", "web.1"));
    assert_eq!(a.uuid, UUID);
    // In JSON the uuid is base64, as Mesos writes it.
    let json = br#"{"framework_id":{"value":"M-0000"},"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":"M-S0"},"task_id":{"value":"web.1"},"uuid":"Zk1x0Qm2T4uZ3y9cX2M7Qw=="}}"#;
    assert_eq!(codec::decode::<v1::scheduler::Call>(json, Format::Json).unwrap(), c);
}

fn event(kind: v1::scheduler::event::Type) -> v1::scheduler::Event {
    v1::scheduler::Event { r#type: Some(kind as i32), ..Default::default() }
}

#[test]
fn subscribed_update_and_offers_encode_as_mesos_does() {
    use v1::scheduler::event;
    let master = MasterInfo {
        id: "M".into(),
        ip: "127.0.0.1".into(),
        port: 5050,
        hostname: "localhost".into(),
        version: "0.1.0".into(),
    };
    let mut subscribed = event(event::Type::Subscribed);
    subscribed.subscribed = Some(event::Subscribed {
        framework_id: agora_proto::mesos::framework_id("M-0000"),
        heartbeat_interval_seconds: Some(15.0),
        master_info: Some(v1::MasterInfo::from(&master)),
    });
    assert_eq!(codec::encode(&subscribed, Format::Protobuf).unwrap(), hex(SUBSCRIBED));

    let status = TaskStatus {
        task_id: "web.1".into(),
        state: TaskState::Running,
        reason: Some(Reason::TaskHealthCheckStatusUpdated),
        source: Source::Executor,
        message: "started".into(),
        uuid: Some(UUID.to_vec()),
        timestamp: 1_700_000_000.5,
        healthy: Some(true),
        agent_id: "M-S0".into(),
        unreachable_time: None,
        container_status: None,
    };
    let mut update = event(event::Type::Update);
    update.update = Some(event::Update { status: v1::TaskStatus::from(&status) });
    assert_eq!(codec::encode(&update, Format::Protobuf).unwrap(), hex(UPDATE));
    // And back: a framework's view of the update is the status we sent.
    let back: v1::scheduler::Event = codec::decode(&hex(UPDATE), Format::Protobuf).unwrap();
    assert_eq!(TaskStatus::try_from(back.update.unwrap().status).unwrap(), status);

    let offer = Offer {
        id: "M-O1".into(),
        framework_id: "M-0000".into(),
        agent_id: "M-S0".into(),
        hostname: "agent0".into(),
        resources: "cpus:2;mem(web):1024".parse().unwrap(),
        attributes: "rack:r1".parse::<Attributes>().unwrap(),
        role: "web".into(),
        url: "http://127.0.0.1:5051".into(),
    };
    let mut offers = event(event::Type::Offers);
    offers.offers = Some(event::Offers { offers: vec![v1::Offer::from(&offer)] });
    assert_eq!(codec::encode(&offers, Format::Protobuf).unwrap(), hex(OFFERS));
    let back: v1::scheduler::Event = codec::decode(&hex(OFFERS), Format::Protobuf).unwrap();
    assert_eq!(Offer::try_from(back.offers.unwrap().offers.remove(0)).unwrap(), offer);
}

#[test]
fn an_operator_task_update_encodes_as_mesos_does() {
    let status = TaskStatus::from_master(
        "web.1",
        "M-S0",
        TaskState::Killed,
        Reason::FrameworkRemoved,
        "killed",
        1_700_000_001.0,
    );
    let e = OperatorEvent::TaskUpdated {
        framework_id: "M-0000".into(),
        status: Box::new(status),
        state: model::TaskState::Killed,
    };
    assert_eq!(codec::encode(&v1::master::Event::from(&e), Format::Protobuf).unwrap(), hex(TASK_UPDATED));
}
