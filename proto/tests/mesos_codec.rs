//! The Mesos v1 codec, data-driven: exact JSON shapes out, exact error texts for bad bodies, the choice of format
//! from `Content-Type`/`Accept`, and (proptest) no panic on any body.

use agora_proto::mesos::codec::{self, DecodeError, Format};
use agora_proto::mesos::v1;
use agora_proto::model::{Reason, Source, TaskState, TaskStatus};
use proptest::prelude::*;

fn json_of<M: codec::V1Message>(m: &M) -> String {
    String::from_utf8(codec::encode(m, Format::Json).unwrap()).unwrap()
}

#[test]
fn events_are_written_in_mesos_json() {
    use v1::scheduler::event;
    let status = TaskStatus {
        task_id: "web.1".into(),
        state: TaskState::Running,
        reason: Some(Reason::Reconciliation),
        source: Source::Master,
        message: String::new(),
        uuid: Some(vec![
            0x66, 0x4d, 0x71, 0xd1, 0x09, 0xb6, 0x4f, 0x8b, 0x99, 0xdf, 0x2f, 0x5c, 0x5f, 0x63, 0x3b, 0x43,
        ]),
        timestamp: 1_700_000_000.25,
        healthy: None,
        agent_id: "M-S0".into(),
        unreachable_time: Some(1_700_000_000.0),
        container_status: None,
    };
    let cases: Vec<(v1::scheduler::Event, &str)> = vec![
        (
            v1::scheduler::Event { r#type: Some(event::Type::Heartbeat as i32), ..Default::default() },
            r#"{"type":"HEARTBEAT"}"#,
        ),
        (
            v1::scheduler::Event {
                r#type: Some(event::Type::Update as i32),
                update: Some(event::Update { status: v1::TaskStatus::from(&status) }),
                ..Default::default()
            },
            // Enums by name, bytes in base64, 64-bit integers as numbers, unset fields left out.
            r#"{"type":"UPDATE","update":{"status":{"task_id":{"value":"web.1"},"state":"TASK_RUNNING","agent_id":{"value":"M-S0"},"timestamp":1700000000.25,"source":"SOURCE_MASTER","reason":"REASON_RECONCILIATION","uuid":"Zk1x0Qm2T4uZ3y9cX2M7Qw==","unreachable_time":{"nanoseconds":1700000000000000000}}}}"#,
        ),
        (
            v1::scheduler::Event {
                r#type: Some(event::Type::Error as i32),
                error: Some(event::Error { message: "framework failed over".into() }),
                ..Default::default()
            },
            r#"{"type":"ERROR","error":{"message":"framework failed over"}}"#,
        ),
    ];
    for (event, want) in cases {
        assert_eq!(json_of(&event), want);
        // What we write, we read back unchanged.
        assert_eq!(codec::decode::<v1::scheduler::Event>(want.as_bytes(), Format::Json).unwrap(), event);
    }
}

#[test]
fn bad_bodies_get_mesos_error_texts() {
    let cases: &[(&[u8], Format, &str)] = &[
        (b"{", Format::Json, "Failed to parse body into JSON: EOF while parsing an object at line 1 column 1"),
        (b"[1]", Format::Json, "Failed to convert JSON into Call protobuf: Expecting a JSON object"),
        (
            br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"x"}}}"#,
            Format::Json,
            "Failed to convert JSON into Call protobuf: Missing required fields: subscribe.framework_info.user",
        ),
        (
            br#"{"type":"ACCEPT","framework_id":{"value":"f"},"accept":{"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","agent_id":{"value":"a"}}]}}]}}"#,
            Format::Json,
            "Failed to convert JSON into Call protobuf: Missing required fields: accept.operations[0].launch.task_infos[0].task_id",
        ),
        (
            br#"{"type":"KILL","kill":{"task_id":{"value":7}}}"#,
            Format::Json,
            "Failed to convert JSON into Call protobuf: invalid type: integer `7`, expected a string",
        ),
        (b"\x1a\x05\x0a\x03", Format::Protobuf, "Failed to parse body into Call protobuf: failed to decode Protobuf message: buffer underflow"),
        (b"\x1a\x00", Format::Protobuf, "Failed to parse body into Call protobuf: Missing required fields: subscribe.framework_info"),
    ];
    for (body, format, want) in cases {
        let got = codec::decode::<v1::scheduler::Call>(body, *format).unwrap_err();
        assert_eq!(got.to_string(), *want, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn an_enum_name_from_a_newer_mesos_leaves_the_field_unset() {
    // Mesos 1.11 would refuse the body; leaving the field unset lets the API answer with what is missing (a call
    // without a `type` is a 400 naming it) and lets newer clients' extra capabilities pass.
    let call = codec::decode::<v1::scheduler::Call>(br#"{"type":"NO_SUCH_CALL"}"#, Format::Json).unwrap();
    assert_eq!(call.r#type, None);
}

#[test]
fn unknown_json_fields_are_ignored_as_mesos_ignores_them() {
    let body = br#"{"framework_id":{"value":"f","extra":1},"type":"TEARDOWN","offer_constraints":{}}"#;
    let call = codec::decode::<v1::scheduler::Call>(body, Format::Json).unwrap();
    assert_eq!(call.r#type(), v1::scheduler::call::Type::Teardown);
    assert_eq!(call.framework_id.unwrap().value, "f");
}

#[test]
fn formats_are_chosen_as_mesos_chooses_them() {
    let content: &[(&str, Option<Format>)] = &[
        ("application/json", Some(Format::Json)),
        ("application/json; charset=utf-8", Some(Format::Json)),
        ("Application/JSON", Some(Format::Json)),
        ("application/x-protobuf", Some(Format::Protobuf)),
        ("text/plain", None),
        ("application/recordio", None),
    ];
    for (header, want) in content {
        assert_eq!(Format::from_content_type(header), *want, "Content-Type: {header}");
    }
    let accept: &[(Option<&str>, Option<Format>)] = &[
        (None, Some(Format::Json)),
        (Some("*/*"), Some(Format::Json)),
        (Some("application/*"), Some(Format::Json)),
        (Some("application/x-protobuf"), Some(Format::Protobuf)),
        (Some("application/x-protobuf, application/json"), Some(Format::Json)),
        (Some("application/json;q=0, application/x-protobuf"), Some(Format::Protobuf)),
        (Some("text/html"), None),
    ];
    for (header, want) in accept {
        assert_eq!(Format::from_accept(*header), *want, "Accept: {header:?}");
    }
}

/// Valid calls of each API, to mutate.
const SEEDS: &[&str] = &[
    r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n","roles":["r"],"capabilities":[{"type":"MULTI_ROLE"}]}}}"#,
    r#"{"framework_id":{"value":"f"},"type":"ACCEPT","accept":{"offer_ids":[{"value":"o"}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"t"},"agent_id":{"value":"a"},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1}}],"command":{"value":"true"}}]}}],"filters":{"refuse_seconds":5}}}"#,
    r#"{"type":"GET_METRICS","get_metrics":{"timeout":{"nanoseconds":5000000000}}}"#,
    r#"{"type":"READ_FILE","read_file":{"path":"/x","offset":0,"length":10}}"#,
];

fn decode_all(body: &[u8]) {
    for format in [Format::Json, Format::Protobuf] {
        let _ = codec::decode::<v1::scheduler::Call>(body, format);
        let _ = codec::decode::<v1::master::Call>(body, format);
        let _ = codec::decode::<v1::agent::Call>(body, format);
        let _ = codec::decode::<v1::master::Event>(body, format);
    }
}

proptest! {
    /// Any bytes, as JSON or protobuf, as any call type: an answer or an error, never a panic.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&body);
    }

    /// Valid calls with a few bytes changed or cut reach deeper into the parsers: never a panic either, and what
    /// decodes re-encodes and decodes to the same message.
    #[test]
    fn mutated_calls_never_panic(seed in 0..SEEDS.len(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4), cut in any::<usize>()) {
        let mut body = SEEDS[seed].as_bytes().to_vec();
        for (at, byte) in edits {
            let i = at % body.len();
            body[i] = byte;
        }
        body.truncate(cut % (body.len() + 1) + body.len() / 2);
        decode_all(&body);
        if let Ok(call) = codec::decode::<v1::scheduler::Call>(&body, Format::Json) {
            let bytes = codec::encode(&call, Format::Protobuf).unwrap();
            prop_assert_eq!(codec::decode::<v1::scheduler::Call>(&bytes, Format::Protobuf).unwrap(), call.clone());
            let json = codec::encode(&call, Format::Json).unwrap();
            prop_assert_eq!(codec::decode::<v1::scheduler::Call>(&json, Format::Json).unwrap(), call);
        }
    }
}

#[test]
fn decode_error_is_typed() {
    assert!(matches!(codec::decode::<v1::master::Call>(b"{", Format::Json), Err(DecodeError::Json(_))));
}
