//! The real agent (`agora_agent::run`, real processes, real HTTP) against a scripted fake master that implements
//! the `AgentLink` gRPC service. Every wait is bounded, so a failure fails rather than hangs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::model::{CommandInfo, FrameworkInfo, Resources, TaskInfo, TaskState};
use agora_proto::wire::{
    self, AgentMessage, MasterMessage, agent_link_server::AgentLink, agent_link_server::AgentLinkServer,
    agent_message::Message as FromAgent, master_message::Message as ToAgent,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

/// One `Open` stream as the fake master sees it.
struct Conn {
    inbound: Streaming<AgentMessage>,
    outbound: mpsc::Sender<Result<MasterMessage, Status>>,
    /// Uuids already acknowledged: a retry that crossed its acknowledgement is skipped.
    acked: HashSet<Vec<u8>>,
}

struct FakeMaster {
    conns: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl AgentLink for FakeMaster {
    type OpenStream = ReceiverStream<Result<MasterMessage, Status>>;

    async fn open(&self, request: Request<Streaming<AgentMessage>>) -> Result<Response<Self::OpenStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        self.conns
            .send(Conn { inbound: request.into_inner(), outbound: tx, acked: HashSet::new() })
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Conn {
    async fn recv(&mut self) -> FromAgent {
        let msg = tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("the agent sent nothing in time")
            .expect("stream error")
            .expect("the agent closed the stream");
        msg.message.expect("empty agent message")
    }

    /// The next status update, skipping pongs.
    async fn update(&mut self) -> wire::StatusUpdate {
        loop {
            match self.recv().await {
                FromAgent::StatusUpdate(u) => {
                    if u.status.as_ref().is_some_and(|s| self.acked.contains(&s.uuid)) {
                        continue;
                    }
                    return u;
                }
                FromAgent::Pong(_) => continue,
                other => panic!("expected a status update, got {other:?}"),
            }
        }
    }

    async fn send(&self, msg: ToAgent) {
        self.outbound.send(Ok(MasterMessage { message: Some(msg) })).await.expect("agent stream gone");
    }

    async fn ack(&mut self, u: &wire::StatusUpdate) {
        let status = u.status.as_ref().expect("status");
        self.acked.insert(status.uuid.clone());
        self.send(ToAgent::Acknowledgement(wire::StatusUpdateAcknowledgement {
            framework_id: u.framework_id.clone(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        }))
        .await;
    }

    /// Reads the next update, checks its task and state, acknowledges it.
    async fn expect_acked(&mut self, task_id: &str, state: TaskState) -> wire::TaskStatus {
        let u = self.update().await;
        let status = u.status.clone().expect("status");
        assert_eq!(status.task_id, task_id, "{u:?}");
        assert_eq!(state_of(status.state), state, "{u:?}");
        self.ack(&u).await;
        status
    }

    async fn registered(&self, agent_id: &str) {
        self.send(ToAgent::Registered(wire::AgentRegistered {
            agent_id: agent_id.into(),
            master_info: Some(wire::MasterInfo {
                id: "m".into(),
                ip: "127.0.0.1".into(),
                port: 5050,
                hostname: "fake-master".into(),
                version: "test".into(),
            }),
            network: None,
        }))
        .await;
    }

    async fn run_task(&self, task: &TaskInfo) {
        let mut fw = FrameworkInfo::new("test-framework");
        fw.id = Some("f1".into());
        self.send(ToAgent::RunTask(wire::RunTask {
            framework: Some(wire::FrameworkInfo::from(&fw)),
            task: Some(wire::TaskInfo::from(task)),
        }))
        .await;
    }

    async fn kill_task(&self, task_id: &str) {
        self.send(ToAgent::KillTask(wire::KillTask {
            framework_id: "f1".into(),
            task_id: task_id.into(),
            kill_policy: None,
        }))
        .await;
    }
}

fn state_of(n: i32) -> TaskState {
    wire::TaskState::try_from(n).map(TaskState::from).expect("a known task state")
}

fn task(id: &str, cmd: &str, resources: &str) -> TaskInfo {
    TaskInfo {
        name: format!("{id}-name"),
        task_id: id.into(),
        agent_id: "m-S0".into(),
        resources: Resources::parse(resources).expect("resources"),
        command: Some(CommandInfo::shell(cmd)),
        container: None,
        health_check: None,
        kill_grace_period: None,
        labels: vec![],
        discovery: None,
        data: vec![],
    }
}

struct Harness {
    conns: mpsc::UnboundedReceiver<Conn>,
    agent_addr: std::net::SocketAddr,
    work_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    agent: tokio::task::JoinHandle<Result<(), agora_agent::AgentError>>,
}

impl Harness {
    async fn start() -> Harness {
        let (conns_tx, conns) = mpsc::unbounded_channel();
        let master_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind master");
        let master_addr = master_listener.local_addr().expect("master addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentLinkServer::new(FakeMaster { conns: conns_tx }))
                .serve_with_incoming(TcpListenerStream::new(master_listener)),
        );
        let work_dir = tempfile::tempdir().expect("tempdir");
        let work = work_dir.path().to_str().expect("utf-8 path").to_string();
        let master = format!("http://{master_addr}");
        // These tests are about the shell and plain process groups; the containers have their own tests.
        let config = agent_config(&[
            "--isolation",
            "process",
            "--master",
            &master,
            "--work-dir",
            &work,
            "--hostname",
            "testhost",
            "--resources",
            "cpus:2;mem:1024;disk:2048;ports:[31000-31010]",
            "--attributes",
            "rack:r1",
            "--status-update-retry-interval",
            "200ms",
            "--registration-backoff-factor",
            "100ms",
            "--executor-shutdown-grace-period",
            "1secs",
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind agent");
        let agent_addr = listener.local_addr().expect("agent addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let agent = tokio::spawn(agora_agent::run(config, listener, async {
            let _ = stopped.await;
        }));
        Harness { conns, agent_addr, work_dir, stop: Some(stop), agent }
    }

    async fn connection(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv()).await.expect("no connection in time").expect("server gone")
    }

    /// Accepts the first connection and registers the agent as `m-S0`.
    async fn registered(&mut self) -> Conn {
        let mut conn = self.connection().await;
        match conn.recv().await {
            FromAgent::Register(r) => {
                let info = r.agent_info.expect("agent_info");
                assert!(info.id.is_empty());
                assert_eq!(info.hostname, "testhost");
                assert_eq!(info.port, u32::from(self.agent_addr.port()));
                assert_eq!(info.ip, "127.0.0.1");
                let resources = agora_proto::convert::resources_from_wire(info.resources).expect("resources");
                assert_eq!(resources.to_string(), "cpus:2;disk:2048;mem:1024;ports:[31000-31010]");
                assert_eq!(info.attributes.len(), 1);
                assert_eq!(r.version, agora_proto::model::VERSION);
            }
            other => panic!("expected register, got {other:?}"),
        }
        conn.registered("m-S0").await;
        conn
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let url = format!("http://{}{path}", self.agent_addr);
        tokio::time::timeout(WAIT, reqwest::get(&url)).await.expect("http timeout").expect("http error")
    }

    async fn state(&self) -> serde_json::Value {
        self.get("/state").await.json().await.expect("state json")
    }

    /// Stops the agent and waits for `run` to return.
    async fn stop(mut self) -> PathBuf {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(WAIT, &mut self.agent).await.expect("run did not return in time");
        result.expect("agent task panicked").expect("run failed");
        self.work_dir.keep()
    }
}

fn agent_config(args: &[&str]) -> agora_agent::Config {
    use clap::Parser;
    let mut all = vec!["agora-agent"];
    all.extend_from_slice(args);
    agora_agent::Flags::try_parse_from(all).expect("flags").config().expect("config")
}

/// Pids in process group `pgid` that are not zombies, from `/proc/<pid>/stat`.
fn running_members_of_group(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command name: state, ppid, pgrp.
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && fields.first() != Some(&"Z") {
            out.push(pid);
        }
    }
    out
}

/// Waits until the task has written its pid to `pid` in its sandbox.
async fn pid_written_in(sandbox: &Path) -> i32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(pid) = std::fs::read_to_string(sandbox.join("pid")).ok().and_then(|s| s.trim().parse().ok()) {
            return pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "the task never wrote its pid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sandbox_of(work_dir: &Path, task_id: &str) -> PathBuf {
    let runs = work_dir.join(format!("slaves/m-S0/frameworks/f1/executors/{task_id}/runs"));
    let entry = std::fs::read_dir(&runs).expect("runs dir").next().expect("one run").expect("dir entry");
    entry.path()
}

#[tokio::test]
async fn registers_pongs_and_runs_a_task_with_reliable_updates() {
    let mut h = Harness::start().await;
    let mut conn = h.registered().await;

    conn.send(ToAgent::Ping(wire::Ping {})).await;
    assert!(matches!(conn.recv().await, FromAgent::Pong(_)));

    let t = task(
        "t1",
        "echo hello; echo port=$PORT0 ports=$PORTS host=$HOST id=$MESOS_TASK_ID",
        "cpus:0.1;ports:[31005-31006]",
    );
    conn.run_task(&t).await;

    // STARTING is re-sent, with the same uuid, until it is acknowledged; RUNNING waits behind it.
    let first = conn.update().await;
    let status = first.status.clone().expect("status");
    assert_eq!(state_of(status.state), TaskState::Starting);
    assert_eq!(first.framework_id, "f1");
    assert_eq!(status.agent_id, "m-S0");
    assert_eq!(status.source, wire::task_status::Source::Executor as i32);
    assert_eq!(status.uuid.len(), 16);
    assert!(status.timestamp > 1.0e9);
    let again = conn.update().await;
    assert_eq!(again.status.as_ref().map(|s| s.uuid.clone()), Some(status.uuid.clone()), "a retry, not a new update");
    conn.ack(&again).await;

    conn.expect_acked("t1", TaskState::Running).await;
    let fin = conn.expect_acked("t1", TaskState::Finished).await;
    assert_eq!(fin.message, "Command exited with status 0");

    let sandbox = sandbox_of(h.work_dir.path(), "t1");
    let stdout = std::fs::read_to_string(sandbox.join("stdout")).expect("stdout");
    assert_eq!(stdout, "hello\nport=31005 ports=31005,31006 host=testhost id=t1\n");
    assert!(sandbox.join("stderr").exists());

    // Once the terminal update is acknowledged the task is a completed one.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = h.state().await;
        let completed = &state["frameworks"][0]["completed_tasks"];
        if completed[0]["id"] == "t1" {
            assert_eq!(completed[0]["state"], "TASK_FINISHED");
            assert_eq!(completed[0]["framework_id"], "f1");
            assert_eq!(completed[0]["slave_id"], "m-S0");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "t1 never completed: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn failed_and_killed_tasks() {
    let mut h = Harness::start().await;
    let mut conn = h.registered().await;

    conn.run_task(&task("bad", "exit 3", "cpus:0.1")).await;
    conn.expect_acked("bad", TaskState::Starting).await;
    conn.expect_acked("bad", TaskState::Running).await;
    let failed = conn.expect_acked("bad", TaskState::Failed).await;
    assert!(failed.message.contains("status 3"), "{}", failed.message);
    assert_eq!(failed.reason, Some(wire::task_status::Reason::CommandExecutorFailed as i32));

    let mut missing = task("missing", "/no/such/binary", "cpus:0.1");
    if let Some(c) = missing.command.as_mut() {
        c.shell = false;
    }
    conn.run_task(&missing).await;
    conn.expect_acked("missing", TaskState::Starting).await;
    let failed = conn.expect_acked("missing", TaskState::Failed).await;
    assert_eq!(failed.reason, Some(wire::task_status::Reason::ContainerLaunchFailed as i32));
    assert!(failed.message.contains("/no/such/binary"), "{}", failed.message);

    conn.run_task(&task("sleeper", "sleep 60", "cpus:0.1")).await;
    conn.expect_acked("sleeper", TaskState::Starting).await;
    conn.expect_acked("sleeper", TaskState::Running).await;

    // /state shows the running task in its executor, with its sandbox.
    let state = h.state().await;
    let executor = &state["frameworks"][0]["executors"][0];
    assert_eq!(executor["tasks"][0]["id"], "sleeper");
    assert_eq!(executor["tasks"][0]["state"], "TASK_RUNNING");
    let directory = executor["directory"].as_str().expect("directory").to_string();
    assert!(directory.contains("/executors/sleeper/runs/"), "{directory}");

    let asked = tokio::time::Instant::now();
    conn.kill_task("sleeper").await;
    conn.kill_task("no-such-task").await;
    let killed = conn.expect_acked("sleeper", TaskState::Killed).await;
    assert!(asked.elapsed() < Duration::from_secs(2), "killed within the 1s grace period: {:?}", asked.elapsed());
    assert_eq!(killed.message, "Command terminated with signal SIGTERM");
    h.stop().await;
}

#[tokio::test]
async fn reconnects_and_reregisters_with_its_running_task() {
    let mut h = Harness::start().await;
    let mut conn = h.registered().await;
    conn.run_task(&task("web", "sleep 60", "cpus:0.1;ports:[31001-31001]")).await;
    conn.expect_acked("web", TaskState::Starting).await;
    let running = conn.update().await;
    assert_eq!(state_of(running.status.as_ref().expect("status").state), TaskState::Running);

    // The master drops the stream without acknowledging RUNNING.
    drop(conn);
    let mut conn = h.connection().await;
    match conn.recv().await {
        FromAgent::Reregister(r) => {
            assert_eq!(r.agent_info.expect("agent_info").id, "m-S0");
            assert_eq!(r.tasks.len(), 1);
            assert_eq!(r.tasks[0].framework_id, "f1");
            assert_eq!(r.tasks[0].task.as_ref().expect("task").task_id, "web");
            assert_eq!(state_of(r.tasks[0].state), TaskState::Running);
            assert_eq!(r.frameworks.len(), 1);
            assert_eq!(r.frameworks[0].id, "f1");
        }
        other => panic!("expected reregister, got {other:?}"),
    }
    conn.registered("m-S0").await;
    // The unacknowledged front goes out again at once.
    let resent = conn.expect_acked("web", TaskState::Running).await;
    assert_eq!(resent.uuid, running.status.expect("status").uuid);

    conn.kill_task("web").await;
    conn.expect_acked("web", TaskState::Killed).await;
    h.stop().await;
}

#[tokio::test]
async fn health_and_state_over_http() {
    let mut h = Harness::start().await;
    let health = h.get("/health").await;
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    assert!(health.text().await.expect("body").is_empty());

    let _conn = h.registered().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let state = loop {
        let state = h.state().await;
        if state["id"] == "m-S0" {
            break state;
        }
        assert!(tokio::time::Instant::now() < deadline, "never registered: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let port = h.agent_addr.port();
    assert_eq!(state["pid"], format!("slave(1)@127.0.0.1:{port}"));
    assert_eq!(state["hostname"], "testhost");
    assert_eq!(state["port"], port);
    assert_eq!(state["version"], agora_proto::model::VERSION);
    assert_eq!(state["resources"]["cpus"], 2);
    assert_eq!(state["resources"]["ports"], "[31000-31010]");
    assert_eq!(state["attributes"]["rack"], "r1");
    assert_eq!(state["master_hostname"], "fake-master");
    assert!(state["start_time"].as_f64().expect("start_time") > 1.0e9);
    assert_eq!(state["frameworks"], serde_json::json!([]));

    let mesos_path: serde_json::Value = h.get("/slave(1)/state").await.json().await.expect("json");
    assert_eq!(mesos_path["id"], "m-S0");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_kills_tasks_and_leaves_no_process() {
    let mut h = Harness::start().await;
    let mut conn = h.registered().await;
    // The shell ignores SIGTERM, so only SIGKILL after the grace period ends it.
    conn.run_task(&task("stubborn", "trap '' TERM; echo $$ > pid; while true; do sleep 0.1; done", "cpus:0.1")).await;
    conn.expect_acked("stubborn", TaskState::Starting).await;
    conn.expect_acked("stubborn", TaskState::Running).await;
    let sandbox = sandbox_of(h.work_dir.path(), "stubborn");
    let pid = pid_written_in(&sandbox).await;
    let started = tokio::time::Instant::now();
    let work_dir = h.stop().await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "SIGKILL came before the 1s grace: {took:?}");
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(!alive, "task process {pid} survived the agent");
    // Killed children of the task may linger as zombies until init reaps them; none may still be running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let running = running_members_of_group(pid);
        if running.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "processes {running:?} of group {pid} survived the agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(work_dir);
}

#[tokio::test]
async fn refused_by_the_master_kills_tasks_and_registers_anew() {
    let mut h = Harness::start().await;
    let mut conn = h.registered().await;
    conn.run_task(&task("doomed", "echo $$ > pid; exec sleep 60", "cpus:0.1")).await;
    conn.expect_acked("doomed", TaskState::Starting).await;
    conn.expect_acked("doomed", TaskState::Running).await;
    let sandbox = sandbox_of(h.work_dir.path(), "doomed");
    let pid = pid_written_in(&sandbox).await;

    conn.send(ToAgent::Error(wire::AgentError { message: "agent m-S0 was removed".into() })).await;
    let mut conn = h.connection().await;
    match conn.recv().await {
        FromAgent::Register(r) => assert!(r.agent_info.expect("agent_info").id.is_empty(), "the old id is forgotten"),
        other => panic!("expected a fresh register, got {other:?}"),
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "task {pid} still runs after the master refused the agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.registered("m-S1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = h.state().await;
        if state["id"] == "m-S1" && state["frameworks"][0]["completed_tasks"][0]["state"] == "TASK_KILLED" {
            assert_eq!(state["frameworks"][0]["executors"], serde_json::json!([]));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "unexpected state: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

/// `POST /api/v1` with a JSON call; the status and the body.
async fn v1(h: &Harness, call: serde_json::Value) -> (reqwest::StatusCode, String) {
    let url = format!("http://{}/api/v1", h.agent_addr);
    let request = reqwest::Client::new().post(url).header("content-type", "application/json").body(call.to_string());
    let r = tokio::time::timeout(WAIT, request.send()).await.expect("http timeout").expect("http error");
    (r.status(), r.text().await.expect("body"))
}

async fn v1_json(h: &Harness, call: serde_json::Value) -> serde_json::Value {
    let (status, body) = v1(h, call.clone()).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{call}: {body}");
    serde_json::from_str(&body).expect("json")
}

#[tokio::test]
async fn the_v1_operator_api_reports_tasks_containers_and_sandbox_files() {
    use serde_json::json;
    let mut h = Harness::start().await;
    let mut conn = h.registered().await;
    conn.run_task(&task("web", "echo hello-v1 > greeting; sleep 30", "cpus:0.5;mem:64")).await;
    conn.expect_acked("web", TaskState::Starting).await;
    conn.expect_acked("web", TaskState::Running).await;
    let sandbox = sandbox_of(h.work_dir.path(), "web");
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::fs::read_to_string(sandbox.join("greeting")).unwrap_or_default().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the task never wrote its file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(
        v1(&h, json!({"type": "GET_HEALTH"})).await,
        (reqwest::StatusCode::OK, r#"{"type":"GET_HEALTH","get_health":{"healthy":true}}"#.into())
    );
    let agent = v1_json(&h, json!({"type": "GET_AGENT"})).await;
    let port = h.agent_addr.port();
    assert_eq!(agent["get_agent"]["agent_info"]["id"], json!({"value": "m-S0"}));
    assert_eq!(agent["get_agent"]["agent_info"]["hostname"], "testhost");
    assert_eq!(agent["get_agent"]["agent_info"]["port"], port);
    assert_eq!(
        agent["get_agent"]["agent_info"]["attributes"],
        json!([{"name": "rack", "type": "TEXT", "text": {"value": "r1"}}])
    );

    let state = v1_json(&h, json!({"type": "GET_STATE"})).await;
    let launched = &state["get_state"]["get_tasks"]["launched_tasks"];
    assert_eq!(launched.as_array().map(Vec::len), Some(1), "{state}");
    let t = &launched[0];
    assert_eq!(
        (&t["task_id"], &t["framework_id"], &t["executor_id"], &t["agent_id"], &t["state"]),
        (
            &json!({"value": "web"}),
            &json!({"value": "f1"}),
            &json!({"value": "web"}),
            &json!({"value": "m-S0"}),
            &json!("TASK_RUNNING")
        )
    );
    assert_eq!(
        t["resources"],
        json!([
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, "role": "*"},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 64.0}, "role": "*"},
        ])
    );
    let executor = &state["get_state"]["get_executors"]["executors"][0]["executor_info"];
    assert_eq!(
        (&executor["executor_id"], &executor["name"]),
        (&json!({"value": "web"}), &json!("Command Executor (Task: web)"))
    );
    let framework = &state["get_state"]["get_frameworks"]["frameworks"][0]["framework_info"];
    assert_eq!((&framework["id"], &framework["name"]), (&json!({"value": "f1"}), &json!("test-framework")));
    let containers = v1_json(&h, json!({"type": "GET_CONTAINERS"})).await;
    let c = &containers["get_containers"]["containers"][0];
    let container_id = sandbox.file_name().unwrap().to_str().unwrap();
    assert_eq!(c["container_id"], json!({"value": container_id}));
    assert_eq!(c["executor_id"], json!({"value": "web"}));

    let dir = sandbox.display().to_string();
    let files = v1_json(&h, json!({"type": "LIST_FILES", "list_files": {"path": dir}})).await;
    let entry = files["list_files"]["file_infos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == format!("{dir}/greeting"))
        .cloned()
        .expect("the task's file is listed");
    assert_eq!(entry["size"], 9);
    assert_eq!(entry["mode"].as_u64().unwrap() & 0o170000, 0o100000, "a regular file: {entry}");
    let read = v1_json(
        &h,
        json!({"type": "READ_FILE", "read_file": {"path": format!("{dir}/greeting"), "offset": 6, "length": 2}}),
    )
    .await;
    // `data` is bytes, base64 in JSON: "v1".
    assert_eq!(read, json!({"type": "READ_FILE", "read_file": {"size": 9, "data": "djE="}}));

    // Refusals: Mesos's statuses, the reason in the body.
    let cases = [
        (
            json!({"type": "READ_FILE", "read_file": {"path": "/etc/passwd", "offset": 0}}),
            reqwest::StatusCode::FORBIDDEN,
        ),
        (
            json!({"type": "READ_FILE", "read_file": {"path": format!("{dir}/nope"), "offset": 0}}),
            reqwest::StatusCode::NOT_FOUND,
        ),
        (
            json!({"type": "READ_FILE", "read_file": {"path": dir.clone(), "offset": 0}}),
            reqwest::StatusCode::BAD_REQUEST,
        ),
        (json!({"type": "READ_FILE"}), reqwest::StatusCode::BAD_REQUEST),
        (json!({"type": "LAUNCH_NESTED_CONTAINER"}), reqwest::StatusCode::NOT_IMPLEMENTED),
    ];
    for (call, status) in cases {
        assert_eq!(v1(&h, call.clone()).await.0, status, "{call}");
    }
    assert_eq!(
        v1(&h, json!({"type": "READ_FILE"})).await.1,
        "Failed to validate agent::Call: Expecting 'read_file' to be present"
    );
    let flags = v1_json(&h, json!({"type": "GET_FLAGS"})).await;
    assert!(
        flags["get_flags"]["flags"].as_array().unwrap().contains(&json!({"name": "isolation", "value": "process"}))
    );
    let metrics = v1_json(&h, json!({"type": "GET_METRICS", "get_metrics": {}})).await;
    assert!(metrics["get_metrics"]["metrics"].as_array().unwrap().iter().any(|m| m["name"] == "slave/tasks_running"));
    h.stop().await;
}
