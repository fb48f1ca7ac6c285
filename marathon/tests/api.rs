//! The REST API over real HTTP, without a master: the router on a loopback port over a core whose driver never
//! runs (its calls only queue). Status codes, headers and bodies as Marathon's.

use std::net::SocketAddr;
use std::sync::Arc;

use agora_framework_sdk::{Driver, DriverOptions, FrameworkInfo};
use agora_marathon::core::{Core, Persisted};
use agora_marathon::scheduler::{Info, Shared};
use agora_marathon::store::MemoryStore;
use serde_json::{Value, json};

struct Api {
    url: String,
    http: reqwest::Client,
    _driver: Driver,
}

async fn start() -> Api {
    start_with(Core::new(Persisted::default())).await
}

async fn start_with(core: Core) -> Api {
    start_full(core, info()).await.0
}

fn info() -> Info {
    Info {
        hostname: "127.0.0.1".into(),
        http_port: 8080,
        master: "127.0.0.1:9".into(),
        framework_name: "marathon".into(),
        failover_timeout: 604_800.0,
        zk: None,
        access_control_allow_origin: Vec::new(),
    }
}

/// The API over `core` with `info`, and what its handlers share (to publish events, as the scheduler does).
async fn start_full(core: Core, info: Info) -> (Api, Arc<Shared>) {
    let driver = Driver::new("127.0.0.1:9", FrameworkInfo::new("marathon"), DriverOptions::default()).unwrap();
    let shared = Arc::new(Shared::new(core, Box::new(MemoryStore::default()), driver.handle(), info));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = agora_marathon::api::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (Api { url: format!("http://{addr}"), http: reqwest::Client::new(), _driver: driver }, shared)
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, headers, body }
    }
}

fn app(id: &str) -> Value {
    json!({"id": id, "cmd": "sleep 100", "instances": 2, "cpus": 0.1, "mem": 16, "labels": {"tier": "web"}})
}

#[tokio::test]
async fn ping_info_leader_and_unknown_routes() {
    let api = start().await;
    let r = api.call("GET", "/ping", None).await;
    assert_eq!((r.status, r.body), (200, json!("pong")));
    let r = api.call("GET", "/v2/info", None).await;
    assert_eq!(r.body["name"], "marathon");
    assert_eq!(r.body["marathon_config"]["failover_timeout"], 604_800);
    assert_eq!(r.body["http_config"]["http_port"], 8080);
    assert_eq!((&r.body["marathon_config"]["ha"], &r.body["zookeeper_config"]), (&json!(false), &json!({})));
    assert_eq!(api.call("GET", "/v2/leader", None).await.body, json!({"leader": "127.0.0.1:8080"}));
    let r = api.call("DELETE", "/v2/leader", None).await;
    assert_eq!((r.status, r.body), (200, json!({"message": "Leadership abdicated"})));
    api.call("POST", "/v2/apps", Some(app("/m"))).await;
    let m = api.call("GET", "/metrics", None).await.body;
    assert_eq!(m["gauges"]["marathon.apps.active.gauge"]["value"], 1);
    assert_eq!(m["gauges"]["marathon.launch-queue.size.gauge"]["value"], 2);
    let text = api.http.get(format!("{}/metrics/prometheus", api.url)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("marathon_apps_active_gauge 1\n"), "{text}");
    let r = api.call("GET", "/v2/nothing", None).await;
    assert_eq!((r.status, r.body), (404, json!({"message": "URI not found"})));
    assert_eq!(r.headers["cache-control"], "no-cache, no-store, must-revalidate");
}

#[tokio::test]
async fn create_get_list_and_conflicts() {
    let api = start().await;
    let r = api.call("POST", "/v2/apps", Some(app("prod/web"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.headers["location"], "/prod/web");
    let deployment = r.headers["marathon-deployment-id"].to_str().unwrap().to_string();
    assert_eq!(r.body["deployments"], json!([{"id": deployment}]));
    assert_eq!((r.body["tasksRunning"].clone(), r.body["tasksStaged"].clone()), (json!(0), json!(0)));
    assert_eq!(r.body["portDefinitions"][0]["port"], 10000, "a service port from [10000, 20000)");

    let r = api.call("POST", "/v2/apps", Some(app("/prod/web"))).await;
    assert_eq!((r.status, r.body), (409, json!({"message": "An app with id [/prod/web] already exists."})));

    // Double slashes are tolerated; the single app GET embeds tasks.
    let r = api.call("GET", "/v2/apps//prod//web", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["app"]["id"], "/prod/web");
    assert_eq!(r.body["app"]["tasks"], json!([]));

    api.call("POST", "/v2/apps", Some(json!({"id": "/db", "cmd": "postgres", "cpus": 0.1, "mem": 16}))).await;
    let ids = |v: &Value| -> Vec<String> {
        v["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(&api.call("GET", "/v2/apps", None).await.body), vec!["/db", "/prod/web"]);
    assert_eq!(ids(&api.call("GET", "/v2/apps?id=prod", None).await.body), vec!["/prod/web"]);
    assert_eq!(ids(&api.call("GET", "/v2/apps?cmd=postgres", None).await.body), vec!["/db"]);
    assert_eq!(ids(&api.call("GET", "/v2/apps?label=tier==web", None).await.body), vec!["/prod/web"]);
    let embedded = api.call("GET", "/v2/apps?embed=apps.tasks", None).await.body;
    assert!(embedded["apps"][0].get("tasks").is_some());
    assert!(api.call("GET", "/v2/apps", None).await.body["apps"][0].get("tasks").is_none());
    let r = api.call("GET", "/v2/apps/prod/*", None).await;
    assert_eq!(r.body["*"].as_array().unwrap().len(), 1);

    // No offers ever come, so the deployment stays: a change conflicts unless forced.
    let r = api.call("PUT", "/v2/apps/prod/web", Some(json!({"instances": 3}))).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.body["message"],
        format!(
            "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{deployment}'."
        )
    );
    assert_eq!(r.body["deployments"], json!([{"id": deployment}]));
    let r = api.call("PUT", "/v2/apps/prod/web?force=true", Some(json!({"instances": 3}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["deploymentId"].is_string() && r.body["version"].is_string());
    assert_eq!(r.headers["marathon-deployment-id"].to_str().unwrap(), r.body["deploymentId"].as_str().unwrap());
    assert_eq!(api.call("GET", "/v2/apps/prod/web", None).await.body["app"]["instances"], 3);
}

#[tokio::test]
async fn errors_have_marathons_codes_and_bodies() {
    let api = start().await;
    let r = api.call("POST", "/v2/apps", Some(json!({"id": "/ok", "instances": 1, "cpus": 0, "mem": 16}))).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["message"], "Object is not valid");
    assert_eq!(
        r.body["details"],
        json!([
            {"path": "/cpus", "errors": ["got 0, expected 0.001 or more"]},
            {"path": "/", "errors": ["AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."]},
        ])
    );
    let two = json!([{"protocol": "MESOS_HTTP"}, {"protocol": "MESOS_TCP"}]);
    let r = api.call("POST", "/v2/apps", Some(json!({"id": "/ok", "cmd": "x", "healthChecks": two}))).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/healthChecks");
    let r =
        api.call("POST", "/v2/apps", Some(json!({"id": "/ok", "cmd": "x", "readinessChecks": [{"name": "r"}]}))).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/readinessChecks(0)/portName", "http-api names no port of the app");

    let resp = api.http.post(format!("{}/v2/apps", api.url)).body("{\"id\": ").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["message"], "Invalid JSON");
    let r = api.call("POST", "/v2/apps", Some(json!({"id": "/ok", "cmd": "x", "instances": "two"}))).await;
    assert_eq!((r.status, r.body["message"].clone()), (400, json!("Invalid JSON")));

    let r = api.call("GET", "/v2/apps/missing", None).await;
    assert_eq!((r.status, r.body), (404, json!({"message": "App '/missing' does not exist"})));
    let r = api.call("PATCH", "/v2/apps/missing", Some(json!({"instances": 1}))).await;
    assert_eq!(r.status, 404);
    let r = api.call("DELETE", "/v2/deployments/nope", None).await;
    assert_eq!((r.status, r.body), (404, json!({"message": "DeploymentPlan nope does not exist"})));
    let r = api.call("DELETE", "/v2/queue/missing/delay", None).await;
    assert_eq!(r.status, 404);

    api.call("POST", "/v2/apps", Some(app("/a"))).await;
    let r = api.call("DELETE", "/v2/apps/a/tasks?scale=true&wipe=true", None).await;
    assert_eq!((r.status, r.body), (400, json!({"message": "You cannot use scale and wipe at the same time."})));
    let r = api.call("DELETE", "/v2/apps/a/tasks/a.instance-x._app.1", None).await;
    assert_eq!((r.status, r.body), (404, json!({"message": "Task 'a.instance-x._app.1' does not exist"})));
}

#[tokio::test]
async fn put_creates_versions_roll_back_deployments_cancel_and_delete() {
    let api = start().await;
    let r = api.call("PUT", "/v2/apps/svc", Some(json!({"cmd": "v1", "instances": 0, "cpus": 0.1, "mem": 16}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v1 = r.body["version"].as_str().unwrap().to_string();
    // Zero instances: the deployment finishes on the next settle (the next request).
    let deployments = api.call("GET", "/v2/deployments", None).await.body;
    assert!(deployments.as_array().unwrap().is_empty(), "{deployments}");

    let r = api.call("PATCH", "/v2/apps/svc", Some(json!({"cmd": "v2", "id": "/ignored"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let versions = api.call("GET", "/v2/apps/svc/versions", None).await.body;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    assert_eq!(versions["versions"][1], v1.as_str(), "newest first");
    let old = api.call("GET", &format!("/v2/apps/svc/versions/{v1}"), None).await;
    assert_eq!((old.status, old.body["cmd"].clone()), (200, json!("v1")));

    let r = api.call("PUT", "/v2/apps/svc?force=true", Some(json!({"version": v1}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("GET", "/v2/apps/svc", None).await.body["app"]["cmd"], "v1");

    // A deployment that cannot finish (no offers): listed with its steps, cancelled by force (202, empty).
    let r = api.call("PUT", "/v2/apps/svc?force=true", Some(json!({"instances": 2}))).await;
    let id = r.body["deploymentId"].as_str().unwrap().to_string();
    let list = api.call("GET", "/v2/deployments", None).await.body;
    let d = list.as_array().unwrap().iter().find(|d| d["id"] == id.as_str()).unwrap().clone();
    assert_eq!(d["affectedApps"], json!(["/svc"]));
    assert_eq!(d["steps"], json!([{"actions": [{"action": "ScaleApplication", "app": "/svc"}]}]));
    assert_eq!((d["currentStep"].clone(), d["totalSteps"].clone()), (json!(1), json!(1)));
    let q = api.call("GET", "/v2/queue", None).await.body;
    assert_eq!(q["queue"][0]["count"], 2);
    assert_eq!(q["queue"][0]["delay"], json!({"timeLeftSeconds": 0, "overdue": true}));
    assert_eq!(api.call("DELETE", "/v2/queue/svc/delay", None).await.status, 204);
    let r = api.call("DELETE", &format!("/v2/deployments/{id}?force=true"), None).await;
    assert_eq!((r.status, r.body), (202, Value::Null));

    // Without force, cancelling rolls back to the definition before the deployment (2 instances).
    let r = api.call("PUT", "/v2/apps/svc", Some(json!({"instances": 5}))).await;
    let id = r.body["deploymentId"].as_str().unwrap().to_string();
    let r = api.call("DELETE", &format!("/v2/deployments/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains_key("marathon-deployment-id"));
    assert_eq!(api.call("GET", "/v2/apps/svc", None).await.body["app"]["instances"], 2);

    let r = api.call("DELETE", "/v2/apps/svc", None).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("marathon-deployment-id"));
    assert_eq!(api.call("GET", "/v2/apps/svc", None).await.status, 404);
}

#[tokio::test]
async fn the_event_stream_starts_attached_and_filters() {
    let api = start().await;
    let mut all = api.http.get(format!("{}/v2/events", api.url)).send().await.unwrap();
    assert_eq!(all.headers()["content-type"], "text/event-stream");
    let mut only = api.http.get(format!("{}/v2/events?event_type=deployment_info", api.url)).send().await.unwrap();
    let first = String::from_utf8_lossy(&all.chunk().await.unwrap().unwrap()).to_string();
    assert!(first.starts_with("event: event_stream_attached\ndata: "), "{first}");
    api.call("POST", "/v2/apps", Some(app("/e"))).await;
    let mut seen = String::new();
    while !seen.contains("event: deployment_info") {
        seen.push_str(&String::from_utf8_lossy(&all.chunk().await.unwrap().unwrap()));
    }
    assert!(seen.contains("event: api_post_event"), "{seen}");
    let filtered = String::from_utf8_lossy(&only.chunk().await.unwrap().unwrap()).to_string();
    assert!(filtered.starts_with("event: deployment_info\n"), "{filtered}");
}

#[tokio::test]
async fn bulk_updates_and_the_group_tree() {
    let api = start().await;
    let bodies = json!([
        {"id": "/shop/db", "cmd": "db", "instances": 0, "cpus": 0.1, "mem": 16},
        {"id": "/shop/web", "cmd": "web", "instances": 0, "cpus": 0.1, "mem": 16, "dependencies": ["../db"]},
    ]);
    let r = api.call("PUT", "/v2/apps", Some(bodies)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains_key("marathon-deployment-id"));
    let web = api.call("GET", "/v2/apps/shop/web", None).await.body;
    assert_eq!(web["app"]["dependencies"], json!(["/shop/db"]));

    let r = api.call("PATCH", "/v2/apps", Some(json!([{"id": "/shop/web", "instances": 0, "cmd": "web2"}]))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("GET", "/v2/apps/shop/web", None).await.body["app"]["cmd"], "web2");
    let r = api.call("PATCH", "/v2/apps", Some(json!([{"id": "/nope", "instances": 1}]))).await;
    assert_eq!((r.status, r.body), (404, json!({"message": "App '/nope' does not exist"})));
    let r = api.call("PUT", "/v2/apps", Some(json!({"id": "/x"}))).await;
    assert_eq!(r.status, 400);

    let root = api.call("GET", "/v2/groups", None).await.body;
    assert_eq!(root["id"], "/");
    assert_eq!(root["groups"][0]["id"], "/shop");
    let shop = api.call("GET", "/v2/groups/shop", None).await.body;
    let ids: Vec<&str> = shop["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["/shop/db", "/shop/web"]);
    let r = api.call("GET", "/v2/groups/none", None).await;
    assert_eq!((r.status, r.body), (404, json!({"message": "Group '/none' does not exist"})));
}

#[tokio::test]
async fn group_writes_versions_and_errors() {
    let api = start().await;
    let body = json!({
        "id": "/shop",
        "apps": [{"id": "db", "cmd": "db", "instances": 1, "cpus": 0.1, "mem": 16}],
        "groups": [{"id": "web", "dependencies": ["../db"],
                    "apps": [{"id": "front", "cmd": "front", "instances": 2, "cpus": 0.1, "mem": 16}]}],
    });
    let r = api.call("POST", "/v2/groups", Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let deployment = r.body["deploymentId"].as_str().unwrap().to_string();
    let version = r.body["version"].as_str().unwrap().to_string();
    assert_eq!(r.headers["marathon-deployment-id"], deployment.as_str());
    assert_eq!(r.headers["location"], "/shop");
    let r = api.call("POST", "/v2/groups", Some(body)).await;
    assert_eq!(
        (r.status, r.body),
        (409, json!({"message": "Group /shop is already created. Use PUT to change this group."}))
    );

    // Marathon's group shape, the nested group with its dependencies, apps with their counts.
    let shop = api.call("GET", "/v2/groups/shop", None).await.body;
    let mut keys: Vec<&String> = shop.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["apps", "dependencies", "enforceRole", "groups", "id", "pods", "version"]);
    assert_eq!(shop["version"], version.as_str());
    assert_eq!(shop["apps"][0]["id"], "/shop/db");
    assert_eq!(shop["apps"][0]["tasksRunning"], 0);
    assert_eq!(shop["groups"][0]["id"], "/shop/web");
    assert_eq!(shop["groups"][0]["dependencies"], json!(["/shop/db"]));
    assert_eq!(shop["groups"][0]["apps"][0]["id"], "/shop/web/front");
    let deployments = api.call("GET", "/v2/deployments", None).await.body;
    assert_eq!(deployments[0]["id"], deployment.as_str());
    assert_eq!(deployments[0]["totalSteps"], 3);

    // Locked by that deployment, then forced; dry runs change nothing.
    let r = api.call("PUT", "/v2/groups/shop", Some(json!({"scaleBy": 2}))).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["deployments"][0]["id"], deployment.as_str());
    let r = api.call("PUT", "/v2/groups/shop?dryRun=true", Some(json!({"scaleBy": 2}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["steps"][0]["actions"].as_array().unwrap().len(), 1, "{}", r.body);
    let r = api.call("PUT", "/v2/groups/shop?force=true", Some(json!({"scaleBy": 2}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains_key("marathon-deployment-id"));
    assert_eq!(api.call("GET", "/v2/apps/shop/web/front", None).await.body["app"]["instances"], 4);

    // Versions, the group at a version, rollback.
    let versions = api.call("GET", "/v2/groups/shop/versions", None).await.body;
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    assert_eq!(versions[1], version.as_str());
    let old = api.call("GET", &format!("/v2/groups/shop/versions/{version}"), None).await;
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(old.body["groups"][0]["apps"][0]["instances"], 2);
    let r = api.call("PUT", "/v2/groups/shop?force=true", Some(json!({"version": version}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("GET", "/v2/apps/shop/web/front", None).await.body["app"]["instances"], 2);

    // Validation: 422 with JSON paths; malformed JSON 400.
    let r =
        api.call("POST", "/v2/groups", Some(json!({"id": "/bad", "apps": [{"id": "/elsewhere/x", "cmd": "x"}]}))).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body,
        json!({"message": "Object is not valid", "details": [{"path": "/apps(0)/id",
            "errors": ["identifier /elsewhere/x is not child of /bad. Hint: use relative paths."]}]})
    );
    let r = api.http.post(format!("{}/v2/groups", api.url)).body("{").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // POST under a path: the body's id is relative to it; PUT creates a missing group.
    let r = api.call("POST", "/v2/groups/shop", Some(json!({"id": "tools"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(api.call("GET", "/v2/groups/shop/tools", None).await.body["id"], "/shop/tools");
    let r = api.call("PUT", "/v2/groups/lab", Some(json!({"apps": [{"id": "x", "cmd": "x", "cpus": 0.1}]}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("GET", "/v2/apps/lab/x", None).await.status, 200);

    // Delete: the apps below go with the group.
    let r = api.call("DELETE", "/v2/groups/shop?force=true", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["deploymentId"].is_string() && r.headers.contains_key("marathon-deployment-id"));
    assert_eq!(api.call("GET", "/v2/apps/shop/db", None).await.status, 404);
    let r = api.call("GET", "/v2/groups/shop", None).await;
    assert_eq!((r.status, r.body), (404, json!({"message": "Group '/shop' does not exist"})));
    let r = api.call("DELETE", "/v2/groups/shop", None).await;
    assert_eq!(r.status, 404);
}

/// A core holding app `/prod/web` (service port 10000) with one running and one staging task on `host-a`.
fn core_with_tasks() -> Core {
    use agora_marathon::constraints::Placement;
    use agora_marathon::core::Instance;
    use agora_marathon::time::now_millis;
    use agora_proto::model::TaskState;
    let now = now_millis();
    let mut core = Core::new(Persisted::default());
    let body = json!({"id": "/prod/web", "cmd": "sleep 100", "instances": 2, "cpus": 0.1, "mem": 16,
                      "portDefinitions": [{"port": 10000}]});
    let (app, _) = core.create_app(&body, false, now - 60_000, "d-1".into()).unwrap();
    for (n, state) in [(1, TaskState::Running), (2, TaskState::Staging)] {
        let task_id = format!("prod_web.instance-{n}._app.1");
        core.state.instances.insert(
            task_id.clone(),
            Instance {
                task_id,
                instance_id: format!("prod_web.instance-{n}"),
                app_id: app.id.clone(),
                version: app.version.clone(),
                state,
                healthy: None,
                agent_id: "agent-1".into(),
                agent_ip: None,
                placement: Placement { hostname: "host-a".into(), ..Placement::default() },
                host_ports: vec![31000 + n],
                service_ports: vec![10000],
                staged_at: now - 30_000,
                started_at: (state == TaskState::Running).then_some(now - 20_000),
                killing: false,
                kill_sent_at: None,
                unreachable_since: None,
                health: None,
            },
        );
    }
    core.state.deployments.clear();
    core
}

#[tokio::test]
async fn embeds_task_stats_and_the_text_task_list() {
    let api = start_with(core_with_tasks()).await;
    let apps = api.call("GET", "/v2/apps?embed=apps.taskStats", None).await.body;
    let app = &apps["apps"][0];
    assert!(app.get("tasks").is_none(), "{app}");
    let total = &app["tasksStats"]["totalSummary"]["stats"];
    assert_eq!(total["counts"], json!({"staged": 1, "running": 1, "healthy": 0, "unhealthy": 0}));
    let life = total["lifeTime"]["averageSeconds"].as_f64().unwrap();
    assert!((20.0..60.0).contains(&life), "{life}");
    assert_eq!(app["tasksStats"]["withLatestConfig"]["stats"]["counts"]["running"], 1);
    assert!(app["tasksStats"].get("withOutdatedConfig").is_none(), "{app}");

    // The one-app view always has tasks and honours embed as well; `app.` and `group.apps.` prefixes work.
    let one = api.call("GET", "/v2/apps/prod/web?embed=app.taskStats", None).await.body;
    assert_eq!(one["app"]["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(one["app"]["tasksStats"]["totalSummary"]["stats"]["counts"]["staged"], 1);
    let plain = api.call("GET", "/v2/apps/prod/web", None).await.body;
    assert!(plain["app"].get("tasksStats").is_none());
    let tree = api.call("GET", "/v2/groups?embed=group.apps.tasks&embed=group.apps.taskStats", None).await.body;
    let web = &tree["groups"][0]["apps"][0];
    assert_eq!((web["id"].as_str(), web["tasks"].as_array().map(Vec::len)), (Some("/prod/web"), Some(2)));
    assert_eq!(web["tasksStats"]["totalSummary"]["stats"]["counts"]["running"], 1);

    // `Accept: text/plain` gives Marathon's endpoint lines (running tasks only).
    let resp = api.http.get(format!("{}/v2/tasks", api.url)).header("Accept", "text/plain").send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "prod_web\t10000\thost-a:31001\t\n");
    let json = api.call("GET", "/v2/tasks?status=staging", None).await.body;
    assert_eq!(json["tasks"].as_array().unwrap().len(), 1);
}

/// The next `data:` of an SSE stream, `buf` keeping what arrived beyond it.
async fn next_event(stream: &mut reqwest::Response, buf: &mut String) -> Value {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).unwrap();
            }
            continue;
        }
        buf.push_str(&String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()));
    }
}

#[tokio::test]
async fn api_post_events_name_the_client_and_the_uri() {
    let api = start().await;
    let mut events = api.http.get(format!("{}/v2/events?event_type=api_post_event", api.url)).send().await.unwrap();
    let mut buf = String::new();
    assert_eq!(api.call("POST", "/v2/apps", Some(app("/a"))).await.status, 201);
    let e = next_event(&mut events, &mut buf).await;
    assert_eq!((e["clientIp"].as_str(), e["uri"].as_str()), (Some("127.0.0.1"), Some("/v2/apps")), "{e}");
    assert_eq!(e["appDefinition"]["id"], "/a");
    assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    api.call("PUT", "/v2/apps/a?force=true", Some(json!({"instances": 1}))).await;
    assert_eq!(next_event(&mut events, &mut buf).await["uri"], "/v2/apps/a");
    // Bulk updates post one event per app, as Marathon does.
    api.call("PUT", "/v2/apps?force=true", Some(json!([app("/b"), app("/c")]))).await;
    let (b, c) = (next_event(&mut events, &mut buf).await, next_event(&mut events, &mut buf).await);
    assert_eq!((b["appDefinition"]["id"].as_str(), c["appDefinition"]["id"].as_str()), (Some("/b"), Some("/c")));
    assert_eq!(c["uri"], "/v2/apps");
}

#[tokio::test]
async fn too_many_running_deployments_is_403_unless_force_makes_room() {
    let mut core = Core::new(Persisted::default());
    core.max_running_deployments = Some(2);
    let api = start_with(core).await;
    assert_eq!(api.call("POST", "/v2/apps", Some(app("/a"))).await.status, 201);
    assert_eq!(api.call("POST", "/v2/apps", Some(app("/b"))).await.status, 201);
    let r = api.call("POST", "/v2/apps", Some(app("/c"))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let msg = r.body["message"].as_str().unwrap();
    assert!(msg.starts_with("Max number (2) of running deployments is achieved."), "{msg}");
    assert_eq!(api.call("GET", "/v2/apps/c", None).await.status, 404, "nothing half-applied");
    for (method, path, body) in [
        ("PUT", "/v2/apps/c", Some(json!({"cmd": "sleep 1"}))),
        ("PUT", "/v2/apps", Some(json!([app("/c")]))),
        ("POST", "/v2/groups", Some(json!({"id": "/g", "apps": [app("/g/x")]}))),
    ] {
        assert_eq!(api.call(method, path, body).await.status, 403, "{method} {path}");
    }
    // A forced change cancels the app's own deployment, which makes room for its new one.
    let r = api.call("PUT", "/v2/apps/a?force=true", Some(json!({"instances": 1}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("GET", "/v2/deployments", None).await.body.as_array().unwrap().len(), 2);
    // force on an app without a deployment frees nothing.
    assert_eq!(api.call("DELETE", "/v2/apps/c?force=true", None).await.status, 404);
    assert_eq!(api.call("POST", "/v2/apps/b/restart?force=true", None).await.status, 200);
}
