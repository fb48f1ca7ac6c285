//! The v1 HTTP APIs of a real master on loopback, data-driven: requests in, exact status and body out (Mesos's
//! texts), and the first records of the event streams in Mesos's JSON and protobuf.

use agora_proto::mesos::codec::{self, Format};
use agora_proto::mesos::v1::{master, scheduler};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::test_support::{Records, TestMaster, start_master};

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/x-protobuf";

async fn post(m: &TestMaster, path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> reqwest::Response {
    let mut req = m.http.post(format!("{}{path}", m.base)).body(body.into());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// (what, headers, body, status, body text)
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, StatusCode, String);

async fn answer(r: reqwest::Response) -> (StatusCode, String) {
    (r.status(), r.text().await.unwrap())
}

fn subscribe_body(extra: Value) -> String {
    let mut info = json!({"user": "root", "name": "v1-test", "failover_timeout": 3600});
    if let (Some(info), Some(extra)) = (info.as_object_mut(), extra.as_object()) {
        info.extend(extra.clone());
    }
    json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}).to_string()
}

/// Subscribes over JSON; the stream, the framework id and the stream id.
async fn subscribe(m: &TestMaster, extra: Value) -> (Records, String, String) {
    let r = post(m, "/api/v1/scheduler", &[("content-type", JSON)], subscribe_body(extra)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let stream_id = r.headers()["mesos-stream-id"].to_str().unwrap().to_string();
    let mut records = Records::new(r);
    let first: Value = serde_json::from_slice(&records.next().await.unwrap()).unwrap();
    assert_eq!(first["type"], "SUBSCRIBED", "{first}");
    let fid = first["subscribed"]["framework_id"]["value"].as_str().unwrap().to_string();
    (records, fid, stream_id)
}

#[tokio::test]
async fn scheduler_calls_get_mesos_answers() {
    let m = start_master(&[]).await;
    let (records, fid, sid) = subscribe(&m, json!({})).await;
    let call = |kind: &str, payload: Value| {
        let mut c = json!({"framework_id": {"value": fid}, "type": kind});
        if let (Some(c), Some(p)) = (c.as_object_mut(), payload.as_object()) {
            c.extend(p.clone());
        }
        c.to_string()
    };
    let other_sid = "0f8ae4e3-6b13-4ef4-baa9-9f2e85c3e9af";
    let good_uuid = "Zk1x0Qm2T4uZ3y9cX2M7Qw==";
    let with_stream = [("content-type", JSON), ("mesos-stream-id", sid.as_str())];
    let validation = "Failed to validate scheduler::Call: ";
    let cases: Vec<Case> = vec![
        ("no content type", vec![], "{}".into(), StatusCode::BAD_REQUEST, "Expecting 'Content-Type' to be present".into()),
        (
            "unsupported content type",
            vec![("content-type", "text/plain")],
            "{}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expecting 'Content-Type' of application/json or application/x-protobuf".into(),
        ),
        (
            "malformed JSON",
            vec![("content-type", JSON)],
            "{".into(),
            StatusCode::BAD_REQUEST,
            "Failed to parse body into JSON: EOF while parsing an object at line 1 column 1".into(),
        ),
        (
            "JSON that is no Call",
            vec![("content-type", JSON)],
            r#"{"type":"KILL","kill":{"task_id":{}}}"#.into(),
            StatusCode::BAD_REQUEST,
            "Failed to convert JSON into Call protobuf: Missing required fields: kill.task_id.value".into(),
        ),
        (
            "malformed protobuf",
            vec![("content-type", PROTOBUF)],
            "\u{1a}\u{5}\n".into(),
            StatusCode::BAD_REQUEST,
            "Failed to parse body into Call protobuf: failed to decode Protobuf message: buffer underflow".into(),
        ),
        ("no type", vec![("content-type", JSON)], "{}".into(), StatusCode::BAD_REQUEST, format!("{validation}Expecting 'type' to be present")),
        (
            "no framework id",
            vec![("content-type", JSON)],
            r#"{"type":"TEARDOWN"}"#.into(),
            StatusCode::BAD_REQUEST,
            format!("{validation}Expecting 'framework_id' to be present"),
        ),
        ("no payload", with_stream.to_vec(), call("ACCEPT", json!({})), StatusCode::BAD_REQUEST, format!("{validation}Expecting 'accept' to be present")),
        (
            "a uuid that is not one",
            with_stream.to_vec(),
            call("ACKNOWLEDGE", json!({"acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "AAEC"}})),
            StatusCode::BAD_REQUEST,
            format!("{validation}Not a valid UUID"),
        ),
        (
            "unknown framework",
            with_stream.to_vec(),
            json!({"framework_id": {"value": "nobody"}, "type": "REVIVE"}).to_string(),
            StatusCode::BAD_REQUEST,
            "Framework cannot be found".into(),
        ),
        (
            "no stream id",
            vec![("content-type", JSON)],
            call("REVIVE", json!({})),
            StatusCode::BAD_REQUEST,
            "All non-subscribe calls should include the 'Mesos-Stream-Id' header".into(),
        ),
        (
            "wrong stream id",
            vec![("content-type", JSON), ("mesos-stream-id", other_sid)],
            call("REVIVE", json!({})),
            StatusCode::BAD_REQUEST,
            format!(
                "The stream ID '{other_sid}' included in this request didn't match the stream ID currently associated \
                 with framework ID {fid}"
            ),
        ),
        ("revive", with_stream.to_vec(), call("REVIVE", json!({"revive": {"roles": ["*"]}})), StatusCode::ACCEPTED, String::new()),
        ("suppress", with_stream.to_vec(), call("SUPPRESS", json!({})), StatusCode::ACCEPTED, String::new()),
        ("request", with_stream.to_vec(), call("REQUEST", json!({"request": {"requests": []}})), StatusCode::ACCEPTED, String::new()),
        (
            "operation acknowledgement",
            with_stream.to_vec(),
            call("ACKNOWLEDGE_OPERATION_STATUS", json!({"acknowledge_operation_status": {"agent_id": {"value": "a"}, "uuid": good_uuid, "operation_id": {"value": "o"}}})),
            StatusCode::ACCEPTED,
            String::new(),
        ),
        (
            "launch group",
            with_stream.to_vec(),
            call("ACCEPT", json!({"accept": {"offer_ids": [{"value": "o"}], "operations": [{"type": "LAUNCH_GROUP"}]}})),
            StatusCode::BAD_REQUEST,
            "Offer operation LAUNCH_GROUP (accept.operations[0]) is not supported by this master".into(),
        ),
        (
            "custom executor",
            with_stream.to_vec(),
            call("ACCEPT", json!({"accept": {"offer_ids": [{"value": "o"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                {"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"}, "executor": {"executor_id": {"value": "e"}}}
            ]}}]}})),
            StatusCode::BAD_REQUEST,
            "invalid task 't'.executor: custom executors are not supported (the executor API is not served); give the \
             task a `command` to run it with the command executor"
                .into(),
        ),
        (
            "an immutable field",
            with_stream.to_vec(),
            call("UPDATE_FRAMEWORK", json!({"update_framework": {"framework_info": {"id": {"value": fid}, "user": "bob", "name": "v1-test", "failover_timeout": 3600}}})),
            StatusCode::BAD_REQUEST,
            "Updating 'FrameworkInfo.user' is unsupported".into(),
        ),
        (
            "another framework's info",
            with_stream.to_vec(),
            call("UPDATE_FRAMEWORK", json!({"update_framework": {"framework_info": {"id": {"value": "x"}, "user": "root", "name": "n"}}})),
            StatusCode::BAD_REQUEST,
            format!("{validation}'framework_id' differs from 'update_framework.framework_info.id'"),
        ),
        (
            "update framework",
            with_stream.to_vec(),
            call("UPDATE_FRAMEWORK", json!({"update_framework": {"framework_info": {"id": {"value": fid}, "user": "root", "name": "renamed", "failover_timeout": 3600}}})),
            StatusCode::OK,
            String::new(),
        ),
        ("unknown call", with_stream.to_vec(), call("UNKNOWN", json!({})), StatusCode::NOT_IMPLEMENTED, "Received an 'UNKNOWN' call".into()),
        (
            "subscribe with a stream id",
            with_stream.to_vec(),
            subscribe_body(json!({})),
            StatusCode::BAD_REQUEST,
            "Subscribe calls should not include the 'Mesos-Stream-Id' header".into(),
        ),
        (
            "subscribe accepting neither format",
            vec![("content-type", JSON), ("accept", "text/html")],
            subscribe_body(json!({})),
            StatusCode::NOT_ACCEPTABLE,
            "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'".into(),
        ),
        (
            "subscribe naming two ids",
            vec![("content-type", JSON)],
            json!({"type": "SUBSCRIBE", "framework_id": {"value": "a"}, "subscribe": {"framework_info": {"user": "u", "name": "n"}}}).to_string(),
            StatusCode::BAD_REQUEST,
            format!("{validation}'framework_id' differs from 'subscribe.framework_info.id'"),
        ),
    ];
    for (what, headers, body, status, text) in cases {
        let got = answer(post(&m, "/api/v1/scheduler", &headers, body).await).await;
        assert_eq!(got, (status, text), "{what}");
    }

    // Once the stream is gone the framework is known but not subscribed: 403 until it subscribes again.
    drop(records);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = answer(post(&m, "/api/v1/scheduler", &with_stream, call("REVIVE", json!({}))).await).await;
        if got.0 == StatusCode::FORBIDDEN {
            assert_eq!(got.1, "Framework is not subscribed");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the master never noticed the closed stream: {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn subscribe_streams_mesos_events_in_json_and_protobuf() {
    let m = start_master(&["--heartbeat-interval", "200ms"]).await;
    let r = post(&m, "/api/v1/scheduler", &[("content-type", JSON), ("accept", JSON)], subscribe_body(json!({}))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], JSON);
    assert_eq!(r.headers()["transfer-encoding"], "chunked", "pymesos refuses a stream that is not chunked");
    let sid = r.headers()["mesos-stream-id"].to_str().unwrap().to_string();
    let mut records = Records::new(r);
    let first: Value = serde_json::from_slice(&records.next().await.unwrap()).unwrap();
    let fid = first["subscribed"]["framework_id"]["value"].as_str().unwrap().to_string();
    let info = &first["subscribed"]["master_info"];
    let port: u64 = m.base.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        first,
        json!({"type": "SUBSCRIBED", "subscribed": {
            "framework_id": {"value": fid},
            "heartbeat_interval_seconds": 0.2,
            "master_info": {
                "id": info["id"], "ip": 16777343, "port": port, "pid": format!("master@127.0.0.1:{port}"),
                "hostname": info["hostname"], "version": agora_proto::model::VERSION,
                "address": {"hostname": info["hostname"], "ip": "127.0.0.1", "port": port},
            },
        }})
    );
    assert_eq!(records.next().await.unwrap(), br#"{"type":"HEARTBEAT"}"#);

    // RECONCILE_OPERATIONS is answered on the stream.
    let reconcile = json!({"framework_id": {"value": fid}, "type": "RECONCILE_OPERATIONS",
        "reconcile_operations": {"operations": [{"operation_id": {"value": "op-1"}}]}});
    let headers = [("content-type", JSON), ("mesos-stream-id", sid.as_str())];
    assert_eq!(post(&m, "/api/v1/scheduler", &headers, reconcile.to_string()).await.status(), StatusCode::ACCEPTED);
    let update = loop {
        let r: Value = serde_json::from_slice(&records.next().await.unwrap()).unwrap();
        if r["type"] != "HEARTBEAT" {
            break r;
        }
    };
    assert_eq!(
        update,
        json!({"type": "UPDATE_OPERATION_STATUS", "update_operation_status": {"status": {
            "operation_id": {"value": "op-1"}, "state": "OPERATION_UNKNOWN",
            "message": "Reconciliation: the master does not know this operation"}}})
    );

    // A second subscription of the same framework (in protobuf) takes over: the old stream gets ERROR and ends.
    let resubscribe = scheduler::Call {
        r#type: Some(scheduler::call::Type::Subscribe as i32),
        framework_id: Some(agora_proto::mesos::framework_id(fid.clone())),
        subscribe: Some(scheduler::call::Subscribe {
            framework_info: agora_proto::mesos::v1::FrameworkInfo {
                user: "root".into(),
                name: "v1-test".into(),
                id: Some(agora_proto::mesos::framework_id(fid.clone())),
                failover_timeout: Some(3600.0),
                ..Default::default()
            },
            suppressed_roles: vec![],
        }),
        ..Default::default()
    };
    let body = codec::encode(&resubscribe, Format::Protobuf).unwrap();
    let r = post(&m, "/api/v1/scheduler", &[("content-type", PROTOBUF), ("accept", PROTOBUF)], body).await;
    assert_eq!((r.status(), r.headers()["content-type"].to_str().unwrap()), (StatusCode::OK, PROTOBUF));
    assert_ne!(r.headers()["mesos-stream-id"].to_str().unwrap(), sid, "a new subscription has a new stream id");
    let mut again = Records::new(r);
    let subscribed: scheduler::Event = codec::decode(&again.next().await.unwrap(), Format::Protobuf).unwrap();
    assert_eq!(subscribed.r#type(), scheduler::event::Type::Subscribed);
    assert_eq!(subscribed.subscribed.unwrap().framework_id.value, fid);
    let mut old = Vec::new();
    while let Some(r) = records.next().await {
        old.push(String::from_utf8(r).unwrap());
    }
    assert_eq!(old.last().map(String::as_str), Some(r#"{"type":"ERROR","error":{"message":"framework failed over"}}"#));

    // An invalid FrameworkInfo is refused on the stream, as Mesos refuses it: ERROR, then the end.
    let bad = subscribe_body(json!({"roles": ["a b"], "capabilities": [{"type": "MULTI_ROLE"}]}));
    let r = post(&m, "/api/v1/scheduler", &[("content-type", JSON)], bad).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut refused = Records::new(r);
    let error: Value = serde_json::from_slice(&refused.next().await.unwrap()).unwrap();
    assert_eq!(
        error,
        json!({"type": "ERROR", "error": {"message": "invalid framework_info.roles: 'a b' is not a valid role name"}})
    );
    assert_eq!(refused.next().await, None);
}

async fn operator(m: &TestMaster, body: Value) -> (StatusCode, String) {
    answer(post(m, "/api/v1", &[("content-type", JSON)], body.to_string()).await).await
}

#[tokio::test]
async fn operator_calls_answer_in_mesos_shapes() {
    let m = start_master(&["--heartbeat-interval", "300ms"]).await;
    let ok = |body: &str| (StatusCode::OK, body.to_string());
    let cases: Vec<(Value, (StatusCode, String))> = vec![
        (json!({"type": "GET_HEALTH"}), ok(r#"{"type":"GET_HEALTH","get_health":{"healthy":true}}"#)),
        (json!({"type": "GET_LOGGING_LEVEL"}), ok(r#"{"type":"GET_LOGGING_LEVEL","get_logging_level":{"level":0}}"#)),
        (
            json!({"type": "GET_VERSION"}),
            ok(&format!(
                r#"{{"type":"GET_VERSION","get_version":{{"version_info":{{"version":"{}"}}}}}}"#,
                agora_proto::model::VERSION
            )),
        ),
        (
            json!({"type": "GET_STATE"}),
            ok(
                r#"{"type":"GET_STATE","get_state":{"get_tasks":{},"get_executors":{},"get_frameworks":{},"get_agents":{}}}"#,
            ),
        ),
        (json!({"type": "GET_AGENTS"}), ok(r#"{"type":"GET_AGENTS","get_agents":{}}"#)),
        (json!({"type": "GET_TASKS"}), ok(r#"{"type":"GET_TASKS","get_tasks":{}}"#)),
        (json!({"type": "GET_EXECUTORS"}), ok(r#"{"type":"GET_EXECUTORS","get_executors":{}}"#)),
        (json!({"type": "GET_ROLES"}), ok(r#"{"type":"GET_ROLES","get_roles":{}}"#)),
        (
            json!({"type": "GET_METRICS"}),
            (StatusCode::BAD_REQUEST, "Failed to validate master::Call: Expecting 'get_metrics' to be present".into()),
        ),
        (
            json!({}),
            (StatusCode::BAD_REQUEST, "Failed to validate master::Call: Expecting 'type' to be present".into()),
        ),
        (json!({"type": "UNKNOWN"}), (StatusCode::NOT_IMPLEMENTED, "Received an 'UNKNOWN' call".into())),
        (
            json!({"type": "GET_QUOTA"}),
            (StatusCode::NOT_IMPLEMENTED, "The 'GET_QUOTA' call is not supported by this master".into()),
        ),
    ];
    for (call, want) in cases {
        assert_eq!(operator(&m, call.clone()).await, want, "{call}");
    }

    let (_, metrics) = operator(&m, json!({"type": "GET_METRICS", "get_metrics": {}})).await;
    let metrics: Value = serde_json::from_str(&metrics).unwrap();
    let elected = metrics["get_metrics"]["metrics"].as_array().unwrap().iter().find(|x| x["name"] == "master/elected");
    assert_eq!(elected, Some(&json!({"name": "master/elected", "value": 1.0})));
    let (_, flags) = operator(&m, json!({"type": "GET_FLAGS"})).await;
    let flags: Value = serde_json::from_str(&flags).unwrap();
    assert!(
        flags["get_flags"]["flags"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "heartbeat_interval", "value": "0.3secs"})),
        "{flags}"
    );
    let (_, master) = operator(&m, json!({"type": "GET_MASTER"})).await;
    let master: Value = serde_json::from_str(&master).unwrap();
    let state: Value = m.http.get(format!("{}/master/state", m.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(master["get_master"]["master_info"]["id"], state["id"]);
    assert_eq!(master["get_master"]["start_time"], state["start_time"]);

    // Protobuf answers when only protobuf is accepted.
    let r = post(&m, "/api/v1", &[("content-type", JSON), ("accept", PROTOBUF)], r#"{"type":"GET_HEALTH"}"#).await;
    assert_eq!(r.headers()["content-type"], PROTOBUF);
    let health: master::Response = codec::decode(&r.bytes().await.unwrap(), Format::Protobuf).unwrap();
    assert_eq!(health.get_health.map(|h| h.healthy), Some(true));

    // The event stream: the state first, then the changes after it, with heartbeats.
    let r = post(&m, "/api/v1", &[("content-type", JSON)], r#"{"type":"SUBSCRIBE"}"#).await;
    assert_eq!((r.status(), r.headers()["transfer-encoding"].to_str().unwrap()), (StatusCode::OK, "chunked"));
    let mut events = Records::new(r);
    assert_eq!(
        events.next().await.unwrap(),
        br#"{"type":"SUBSCRIBED","subscribed":{"get_state":{"get_tasks":{},"get_executors":{},"get_frameworks":{},"get_agents":{}},"heartbeat_interval_seconds":0.3}}"#
    );
    let (_scheduler, fid, _) = subscribe(&m, json!({"roles": ["web"], "capabilities": [{"type": "MULTI_ROLE"}]})).await;
    let added: Value = loop {
        let e: Value = serde_json::from_slice(&events.next().await.unwrap()).unwrap();
        if e["type"] != "HEARTBEAT" {
            break e;
        }
    };
    assert_eq!(added["type"], "FRAMEWORK_ADDED", "{added}");
    let framework = &added["framework_added"]["framework"];
    assert_eq!(framework["framework_info"]["id"]["value"], fid.as_str());
    assert_eq!(framework["framework_info"]["roles"], json!(["web"]));
    assert_eq!(
        (&framework["active"], &framework["connected"], &framework["recovered"]),
        (&json!(true), &json!(true), &json!(false))
    );
    let heartbeat = events.next().await.unwrap();
    assert_eq!(heartbeat, br#"{"type":"HEARTBEAT"}"#);
    let (_, roles) = operator(&m, json!({"type": "GET_ROLES"})).await;
    assert_eq!(
        roles,
        format!(
            r#"{{"type":"GET_ROLES","get_roles":{{"roles":[{{"name":"web","weight":1.0,"frameworks":[{{"value":"{fid}"}}]}}]}}}}"#
        )
    );
}
