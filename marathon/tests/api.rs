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
        mesos_role: "*".into(),
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

/// Marathon redirects `/` to its UI at `/ui/`; the API's router serves the page (`agora_marathon::ui`).
#[tokio::test]
async fn root_redirects_to_the_ui_which_the_api_serves() {
    let api = start().await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (path, status) in [("/", 302), ("/ui", 301)] {
        let r = plain.get(format!("{}{path}", api.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(r.headers()["location"], "/ui/", "{path}");
    }
    let r = plain.get(format!("{}/ui/", api.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let page = r.text().await.unwrap();
    assert!(page.contains("<title>Marathon"), "{}", &page[..200]);
    // A redirect followed lands on the page; other paths under /ui/ are not the UI.
    let followed = api.http.get(format!("{}/", api.url)).send().await.unwrap();
    assert_eq!(followed.url().path(), "/ui/");
    assert_eq!(followed.text().await.unwrap(), page);
    assert_eq!(api.call("GET", "/ui/nothing", None).await.status, 404);
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

    // Marathon's group shape, the nested group with its dependencies; apps carry counts only when embedded.
    let shop = api.call("GET", "/v2/groups/shop", None).await.body;
    assert!(shop["apps"][0].get("tasksRunning").is_none(), "{shop}");
    let counted = "/v2/groups/shop?embed=group.apps&embed=group.apps.counts";
    let counted = api.call("GET", counted, None).await.body;
    assert_eq!((&counted["apps"][0]["tasksRunning"], &counted["groups"]), (&json!(0), &json!([])));
    let mut keys: Vec<&String> = shop.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["apps", "dependencies", "enforceRole", "groups", "id", "pods", "version"]);
    assert_eq!(shop["version"], version.as_str());
    assert_eq!(shop["apps"][0]["id"], "/shop/db");
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
                role: "*".into(),
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
    let tree = api
        .call(
            "GET",
            "/v2/groups?embed=group.groups&embed=group.apps&embed=group.apps.tasks&embed=group.apps.taskStats",
            None,
        )
        .await
        .body;
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

#[tokio::test]
async fn info_reports_every_marathon_config_key_with_our_values() {
    let api = start().await;
    let info = api.call("GET", "/v2/info", None).await.body;
    let config = &info["marathon_config"];
    for key in [
        "access_control_allow_origin",
        "checkpoint",
        "decline_offer_duration",
        "default_network_name",
        "env_vars_prefix",
        "executor",
        "failover_timeout",
        "features",
        "framework_name",
        "ha",
        "hostname",
        "launch_token",
        "launch_token_refresh_interval",
        "leader_proxy_connection_timeout_ms",
        "leader_proxy_read_timeout_ms",
        "local_port_max",
        "local_port_min",
        "master",
        "max_instances_per_offer",
        "mesos_bridge_name",
        "mesos_heartbeat_failure_threshold",
        "mesos_heartbeat_interval",
        "mesos_leader_ui_url",
        "mesos_role",
        "mesos_user",
        "new_group_enforce_role",
        "min_revive_offers_interval",
        "offer_matching_timeout",
        "on_elected_prepare_timeout",
        "reconciliation_initial_delay",
        "reconciliation_interval",
        "scale_apps_initial_delay",
        "scale_apps_interval",
        "store_cache",
        "task_launch_confirm_timeout",
        "task_launch_timeout",
        "task_lost_expunge_initial_delay",
        "task_lost_expunge_interval",
        "task_reservation_timeout",
        "webui_url",
        "maintenance_mode",
    ] {
        assert!(config.get(key).is_some(), "marathon_config lacks {key}: {config}");
    }
    let expected = json!({
        "master": "127.0.0.1:9", "framework_name": "marathon", "hostname": "127.0.0.1", "executor": "//cmd",
        "checkpoint": true, "ha": false, "mesos_role": "*", "features": [], "access_control_allow_origin": null,
        "failover_timeout": 604_800, "decline_offer_duration": 120_000, "task_launch_timeout": 300_000,
        "reconciliation_interval": 600_000, "local_port_min": 10_000, "local_port_max": 20_000,
        "leader_proxy_connection_timeout_ms": 5_000, "leader_proxy_read_timeout_ms": 10_000,
        "mesos_heartbeat_interval": 15_000, "mesos_heartbeat_failure_threshold": 5, "scale_apps_interval": 1_000,
        "mesos_leader_ui_url": "http://127.0.0.1:9/", "webui_url": "http://127.0.0.1:8080",
        "mesos_user": null, "launch_token": null, "new_group_enforce_role": "Off",
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&config[key], value, "marathon_config.{key}");
    }
    assert_eq!(info["http_config"], json!({"http_port": 8080, "https_port": null, "assets_path": null}));
    for key in ["name", "version", "buildref", "elected", "leader", "frameworkId", "event_subscriber"] {
        assert!(info.get(key).is_some(), "/v2/info lacks {key}: {info}");
    }
    assert_eq!((&info["elected"], &info["leader"]), (&json!(true), &json!("127.0.0.1:8080")));
}

/// With `--master zk://...` the master's UI is the leader Marathon subscribed with: unknown (null) before, then
/// `http://HOSTNAME:PORT/` from its MasterInfo, as Marathon's MesosLeaderInfo; the UI links task logs there.
#[tokio::test]
async fn the_leader_ui_url_follows_the_master_subscribed_with_when_masters_are_in_zookeeper() {
    use agora_framework_sdk::Scheduler;
    let info = Info { master: "zk://127.0.0.1:2181/agora".into(), ..info() };
    let (api, shared) = start_full(Core::new(Persisted::default()), info).await;
    let url = async || api.call("GET", "/v2/info", None).await.body["marathon_config"]["mesos_leader_ui_url"].clone();
    assert_eq!(url().await, Value::Null);
    let mut scheduler = agora_marathon::scheduler::MarathonScheduler { shared: shared.clone() };
    let master = agora_framework_sdk::MasterInfo {
        id: "m2".into(),
        ip: "127.0.0.2".into(),
        port: 5050,
        hostname: "master-2".into(),
        version: "1".into(),
    };
    scheduler.subscribed(&shared.driver, "fw-1", &master);
    assert_eq!(url().await, json!("http://master-2:5050/"));
    scheduler.subscribed(
        &shared.driver,
        "fw-1",
        &agora_framework_sdk::MasterInfo { hostname: String::new(), ..master },
    );
    assert_eq!(url().await, json!("http://127.0.0.2:5050/"), "no hostname: the ip");
}

#[tokio::test]
async fn cors_headers_and_preflight_with_access_control_allow_origin() {
    assert_eq!(
        agora_marathon::api::split_origins("http://a.example, http://b.example,"),
        ["http://a.example", "http://b.example"]
    );
    let mut with_cors = info();
    with_cors.access_control_allow_origin = vec!["http://a.example".into(), "http://b.example".into()];
    let (api, _) = start_full(Core::new(Persisted::default()), with_cors).await;
    let get = |origin: &'static str| api.http.get(format!("{}/v2/apps", api.url)).header("Origin", origin).send();
    let r = get("http://b.example").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "http://b.example");
    assert_eq!(r.headers()["access-control-allow-methods"], "GET, HEAD, OPTIONS");
    assert_eq!(r.headers()["access-control-max-age"], "86400");
    assert_eq!(r.headers()["vary"], "Origin");
    let r = get("http://elsewhere.example").await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "http://a.example", "a browser from elsewhere refuses it");
    // A preflight is answered here, allowing the headers it asks for.
    let r = api
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v2/apps", api.url))
        .header("Origin", "http://a.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "content-type,x-custom")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "http://a.example");
    assert_eq!(r.headers()["access-control-allow-headers"], "content-type, x-custom");
    let info = api.call("GET", "/v2/info", None).await.body;
    assert_eq!(info["marathon_config"]["access_control_allow_origin"], "http://a.example,http://b.example");
    let mut any = self::info();
    any.access_control_allow_origin = vec!["*".into()];
    let (api, _) = start_full(Core::new(Persisted::default()), any).await;
    let r = api.http.get(format!("{}/ping", api.url)).header("Origin", "http://x.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    // Without the flag: no CORS headers (OPTIONS is still answered, as Jersey answers it).
    let api = start().await;
    let r = api.http.get(format!("{}/v2/apps", api.url)).header("Origin", "http://a.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = api.http.request(reqwest::Method::OPTIONS, format!("{}/v2/apps", api.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn patch_groups_as_marathon_answers_it() {
    let api = start().await;
    for path in ["/v2/groups", "/v2/groups/"] {
        let r = api.call("PATCH", path, Some(json!({"enforceRole": false}))).await;
        assert_eq!((r.status, &r.body), (405, &json!({"message": "Method Not Allowed"})), "{path}");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let r = api.call("PATCH", "/v2/tasks", Some(json!({}))).await;
    assert_eq!((r.status, r.body), (405, json!({"message": "Method Not Allowed"})));
    let r = api.call("PATCH", "/v2/groups/missing", Some(json!({"enforceRole": false}))).await;
    assert_eq!((r.status, r.body), (404, json!({"message": "Group '/missing' does not exist"})));
    assert_eq!(api.call("POST", "/v2/groups", Some(json!({"id": "/g", "groups": [{"id": "sub"}]}))).await.status, 201);
    let r = api.call("PATCH", "/v2/groups/g", Some(json!({"enforceRole": false}))).await;
    assert_eq!((r.status, r.body), (200, Value::Null), "200 with an empty body, as Marathon's ok()");
    let r = api.call("PATCH", "/v2/groups/g/sub", Some(json!({"enforceRole": false}))).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"], json!([{"path": "/", "errors": ["Path needs to be top-level"]}]));
    let r = api.call("PATCH", "/v2/groups/g", Some(json!({"enforceRole": true}))).await;
    assert_eq!((r.status, &r.body["details"][0]["path"]), (422, &json!("/enforceRole")), "{}", r.body);
    let r = api.call("PATCH", "/v2/groups/g", Some(json!({"enforceRole": "yes"}))).await;
    assert_eq!((r.status, &r.body["message"]), (400, &json!("Invalid JSON")));
}

#[tokio::test]
async fn app_and_group_ids_may_not_clash() {
    let api = start().await;
    let r = api.call("POST", "/v2/groups", Some(json!({"id": "/g", "apps": [app("x")]}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let clash = |id: &str| {
        json!({"message": "Object is not valid", "details": [{"path": "/", "errors": [
            format!("Groups and Applications may not have the same identifier. ({id})")]}]})
    };
    // An app where a group is, or below an app.
    let r = api.call("POST", "/v2/apps", Some(app("/g"))).await;
    assert_eq!((r.status, r.body), (422, clash("/g")));
    let r = api.call("POST", "/v2/apps", Some(app("/g/x/y"))).await;
    assert_eq!((r.status, r.body), (422, clash("/g/x")));
    let r = api.call("PUT", "/v2/apps/g", Some(app("/g"))).await;
    assert_eq!((r.status, r.body), (422, clash("/g")));
    let r = api.call("PUT", "/v2/apps", Some(json!([app("/n"), app("/n/m")]))).await;
    assert_eq!((r.status, r.body), (422, clash("/n")));
    assert_eq!(api.call("GET", "/v2/apps/n", None).await.status, 404, "nothing half-applied");
    // A group where an app is.
    let r = api.call("POST", "/v2/groups", Some(json!({"id": "/g/x"}))).await;
    assert_eq!((r.status, r.body), (409, json!({"message": "An app with the path /g/x already exists."})));
    let r = api.call("PUT", "/v2/groups/g/x", Some(json!({"apps": [app("y")]}))).await;
    assert_eq!((r.status, r.body), (422, clash("/g/x")));
    // The existing app is still updated normally.
    assert_eq!(api.call("PUT", "/v2/apps/g/x?force=true", Some(json!({"instances": 1}))).await.status, 200);
}

#[tokio::test]
async fn app_changes_are_root_group_versions_to_roll_back_to() {
    let api = start().await;
    let r = api.call("POST", "/v2/apps", Some(app("/prod/web"))).await;
    let v1 = r.body["version"].as_str().unwrap().to_string();
    let r = api.call("PUT", "/v2/apps/prod/web?force=true", Some(json!({"instances": 5}))).await;
    let v2 = r.body["version"].as_str().unwrap().to_string();
    let r = api.call("POST", "/v2/apps", Some(app("/other"))).await;
    let v3 = r.body["version"].as_str().unwrap().to_string();
    assert_eq!(api.call("GET", "/v2/groups/versions", None).await.body, json!([v3, v2, v1]));
    assert_eq!(api.call("GET", "/v2/groups/prod/versions", None).await.body, json!([v3, v2, v1]));
    let at_v1 = api.call("GET", &format!("/v2/groups/prod/versions/{v1}"), None).await.body;
    assert_eq!((&at_v1["apps"][0]["id"], &at_v1["apps"][0]["instances"]), (&json!("/prod/web"), &json!(2)));

    // Deleting an app is a version too; rolling the root back to before it brings the app back.
    let r = api.call("DELETE", "/v2/apps/prod/web?force=true", None).await;
    let v4 = r.body["version"].as_str().unwrap().to_string();
    assert_eq!(api.call("GET", "/v2/groups/versions", None).await.body[0], json!(v4));
    assert_eq!(api.call("GET", "/v2/groups/prod/versions", None).await.status, 200);
    let r = api.call("PUT", "/v2/groups?force=true", Some(json!({"version": v3}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("GET", "/v2/apps/prod/web", None).await.body["app"]["instances"], 5);
    let r = api.call("PUT", "/v2/groups/prod?force=true", Some(json!({"version": v1}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("GET", "/v2/apps/prod/web", None).await.body["app"]["instances"], 2);
    assert_eq!(api.call("GET", "/v2/apps/other", None).await.status, 200, "outside /prod: untouched");
}

#[tokio::test]
async fn a_rollback_takes_the_cancelled_deployments_place_within_the_limit() {
    let mut core = Core::new(Persisted::default());
    let now = agora_marathon::time::now_millis();
    core.update_apps(&[app("/g/a"), app("/g/b")], true, false, false, now - 1000, "d-0".into()).unwrap();
    core.state.deployments.clear();
    core.max_running_deployments = Some(1);
    let api = start_with(core).await;
    let r = api.call("PUT", "/v2/apps", Some(json!([{"id": "/g/a", "instances": 5}, {"id": "/g/b", "instances": 5}])));
    let r = r.await;
    assert_eq!(r.status, 200, "{}", r.body);
    let upgrade = r.body["deploymentId"].as_str().unwrap().to_string();
    assert_eq!(api.call("POST", "/v2/apps", Some(app("/c"))).await.status, 403, "at the limit");
    // The rollback replaces the cancelled deployment: not refused, one deployment for both apps.
    let r = api.call("DELETE", &format!("/v2/deployments/{upgrade}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rollback = r.body["deploymentId"].as_str().unwrap();
    let deployments = api.call("GET", "/v2/deployments", None).await.body;
    assert_eq!(deployments.as_array().unwrap().len(), 1, "{deployments}");
    assert_eq!((&deployments[0]["id"], &deployments[0]["affectedApps"]), (&json!(rollback), &json!(["/g/a", "/g/b"])));
    for id in ["a", "b"] {
        assert_eq!(api.call("GET", &format!("/v2/apps/g/{id}"), None).await.body["app"]["instances"], 2);
    }
    assert_eq!(api.call("POST", "/v2/apps", Some(app("/c"))).await.status, 403, "the rollback counts");
}

#[tokio::test]
async fn the_tasks_of_one_app_as_text() {
    let api = start_with(core_with_tasks()).await;
    let resp = api
        .http
        .get(format!("{}/v2/apps/prod/web/tasks", api.url))
        .header("Accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "prod_web\t10000\thost-a:31001\t\n");
    assert_eq!(api.call("GET", "/v2/apps/prod/web/tasks", None).await.body["tasks"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_client_too_far_behind_on_the_event_stream_is_disconnected() {
    let (api, shared) = start_full(Core::new(Persisted::default()), info()).await;
    let mut events = api.http.get(format!("{}/v2/events", api.url)).send().await.unwrap();
    let mut buf = String::new();
    assert_eq!(next_event(&mut events, &mut buf).await["eventType"], "event_stream_attached");
    // The test's runtime has one thread: nothing is sent to the client while these are published, so it falls
    // more than the bus's buffer behind.
    let published = agora_marathon::events::BUFFER + 10;
    for n in 0..published {
        shared.bus.publish(json!({"eventType": "status_update_event", "n": n}));
    }
    let mut received = 0;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(chunk) = events.chunk().await.unwrap() {
            received += String::from_utf8_lossy(&chunk).matches("data: ").count();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a client that fell behind ends");
    assert!(received < published, "{received} of {published} events arrived before the stream ended");
}

#[tokio::test]
async fn deployment_events_carry_the_original_and_target_groups_unless_light() {
    let api = start().await;
    let url = |q: &str| format!("{}/v2/events?event_type=deployment_info{q}", api.url);
    let mut heavy = api.http.get(url("")).send().await.unwrap();
    let mut light = api.http.get(url("&plan-format=light")).send().await.unwrap();
    let (mut hb, mut lb) = (String::new(), String::new());
    assert_eq!(api.call("POST", "/v2/apps", Some(app("/keep"))).await.status, 201);
    next_event(&mut heavy, &mut hb).await;
    next_event(&mut light, &mut lb).await;
    let r = api.call("POST", "/v2/groups", Some(json!({"id": "/g", "apps": [app("a")]}))).await;
    assert_eq!(r.status, 201);
    let e = next_event(&mut heavy, &mut hb).await;
    let plan = &e["plan"];
    assert_eq!(plan["id"], r.body["deploymentId"]);
    let target = &plan["target"];
    assert_eq!((&target["id"], &target["apps"][0]["id"]), (&json!("/"), &json!("/keep")));
    assert_eq!(target["groups"][0]["apps"][0]["id"], "/g/a");
    let original = &plan["original"];
    assert_eq!(original["apps"][0]["id"], "/keep");
    assert!(!original.to_string().contains("\"/g/a\""), "{original}");
    let e = next_event(&mut light, &mut lb).await;
    assert_eq!(e["plan"]["id"], r.body["deploymentId"]);
    assert!(e["plan"].get("original").is_none() && e["plan"].get("target").is_none(), "{e}");
}

/// One offer of `resources` from agent `agent-1` on `host-1`, no attributes.
fn offer_of(resources: &str) -> agora_proto::model::Offer {
    agora_proto::model::Offer {
        id: "offer-1".into(),
        framework_id: "fw".into(),
        agent_id: "agent-1".into(),
        hostname: "host-1".into(),
        resources: resources.parse().unwrap(),
        attributes: Default::default(),
        role: "*".into(),
        url: String::new(),
    }
}

#[tokio::test]
async fn the_queue_embeds_the_last_unused_offers() {
    use agora_proto::model::{Attributes, Offer};
    let mut core = Core::new(Persisted::default());
    let now = agora_marathon::time::now_millis();
    let body = json!({"id": "/w", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
                      "constraints": [["rack", "LIKE", "r9"]]});
    core.create_app(&body, false, now, "d-1".into()).unwrap();
    let offer = |n: usize, t: u64| Offer {
        id: format!("offer-{n}-{t}"),
        agent_id: format!("agent-{n}"),
        hostname: format!("host-{n}"),
        attributes: "rack:r1".parse::<Attributes>().unwrap(),
        ..offer_of("cpus:2;mem:1024;ports:[31000-31009]")
    };
    let mut id = |app: &str| format!("{}{}", agora_marathon::core::instance_prefix(app), uuid_like());
    // Two rounds over the same two agents: one entry per agent, the newer offer kept.
    core.match_offers(&[offer(0, 1), offer(1, 1)], now + 1, &mut id);
    core.match_offers(&[offer(0, 2), offer(1, 2)], now + 2, &mut id);
    let api = start_with(core).await;
    let plain = api.call("GET", "/v2/queue", None).await.body;
    assert!(plain["queue"][0].get("lastUnusedOffers").is_none(), "{plain}");
    let q = api.call("GET", "/v2/queue?embed=lastUnusedOffers", None).await.body;
    let entry = &q["queue"][0];
    let unused = entry["lastUnusedOffers"].as_array().unwrap();
    assert_eq!(unused.len(), 2, "{entry}");
    let first = &unused[0];
    assert_eq!(first["offer"]["id"], "offer-0-2");
    assert_eq!((&first["offer"]["agentId"], &first["offer"]["hostname"]), (&json!("agent-0"), &json!("host-0")));
    assert_eq!(first["reason"], json!(["UnfulfilledConstraint"]));
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
    let resources = first["offer"]["resources"].as_array().unwrap();
    assert!(resources.contains(&json!({"name": "cpus", "role": "*", "scalar": 2})), "{resources:?}");
    assert!(resources.contains(&json!({"name": "ports", "role": "*", "ranges": [{"begin": 31000, "end": 31009}]})));
    assert_eq!(first["offer"]["attributes"], json!([{"name": "rack", "text": "r1"}]));
    // The last offers' funnel counts them; the launch attempts' counts every offer processed.
    let summary = &entry["processedOffersSummary"];
    let constraint =
        |list: &Value| list.as_array().unwrap().iter().find(|r| r["reason"] == "UnfulfilledConstraint").cloned();
    assert_eq!(constraint(&summary["rejectSummaryLastOffers"]).unwrap()["declined"], 2);
    assert_eq!(constraint(&summary["rejectSummaryLaunchAttempt"]).unwrap()["declined"], 4);
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{:08}", N.fetch_add(1, Ordering::Relaxed))
}

/// `GET /v2/apps?embed=apps.tasks` reuses each task's JSON while its instance is unchanged: what it embeds is what
/// the per-app task list renders afresh, before and after an instance changes, and a task that is gone is gone.
#[tokio::test]
async fn embedded_tasks_are_rendered_once_and_follow_their_instances() {
    use agora_proto::model::{Offer, Source, TaskState, TaskStatus};
    let mut core = Core::new(Persisted::default());
    let now = agora_marathon::time::now_millis();
    core.create_app(&json!({"id": "/w", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16}), false, now, "d".into())
        .unwrap();
    let offer = offer_of("cpus:2;mem:1024;ports:[31000-31009]");
    let mut id = |app: &str| format!("{}{}", agora_marathon::core::instance_prefix(app), uuid_like());
    assert_eq!(core.match_offers(std::slice::from_ref(&offer), now + 1, &mut id).launches.len(), 2);
    let (api, shared) = start_full(core, info()).await;
    let embedded = async || api.call("GET", "/v2/apps?embed=apps.tasks", None).await.body["apps"][0]["tasks"].clone();
    let fresh = async || api.call("GET", "/v2/apps/w/tasks", None).await.body["tasks"].clone();

    let first = embedded().await;
    assert_eq!(first.as_array().unwrap().len(), 2);
    assert_eq!(first, fresh().await);
    assert_eq!(embedded().await, first, "rendered once, answered again");

    let task = |n: usize| first[n]["id"].as_str().unwrap().to_string();
    let status = |task_id: String, state| TaskStatus {
        task_id,
        state,
        reason: None,
        source: Source::Agent,
        message: String::new(),
        uuid: None,
        timestamp: 0.0,
        healthy: None,
        agent_id: "agent-1".into(),
        unreachable_time: None,
        container_status: None,
    };
    shared.lock().on_update(&status(task(0), TaskState::Running), now + 2);
    let changed = embedded().await;
    assert_eq!(changed[0]["state"], "TASK_RUNNING");
    assert!(changed[0]["startedAt"].is_string());
    assert_eq!(changed[1], first[1]);
    assert_eq!(changed, fresh().await);

    shared.lock().on_update(&status(task(1), TaskState::Failed), now + 3);
    let after = embedded().await;
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after, fresh().await);

    // Its replacement launches: the app's tasks are joined again with the new one.
    let again = Offer { id: "offer-2".into(), ..offer.clone() };
    let launched = shared.lock().match_offers(&[again], now + 60_000, &mut id).launches.len();
    assert_eq!(launched, 1);
    let relaunched = embedded().await;
    assert_eq!(relaunched.as_array().unwrap().len(), 2, "{relaunched}");
    assert_eq!(relaunched, fresh().await);

    // A reloaded core (a new leadership term) whose record of the same task differs: rendered anew.
    let mut state = shared.lock().state.clone();
    state.instances.get_mut(&task(0)).unwrap().state = TaskState::Killing;
    *shared.lock() = Core::new(state);
    let reloaded = embedded().await;
    assert_eq!(reloaded[0]["state"], "TASK_KILLING");
    assert_eq!(reloaded, fresh().await);
}

/// Listing many apps finds each app's instances in one walk over all instances: the same tasks, in the same order,
/// as each app's own task list, for ids that prefix one another.
#[tokio::test]
async fn many_listed_apps_list_exactly_their_own_tasks() {
    let mut core = Core::new(Persisted::default());
    let now = agora_marathon::time::now_millis();
    let mut ids: Vec<String> = ["/a", "/a.b", "/ab", "/g/a", "/g/a.b", "/g.a", "/b"].map(String::from).to_vec();
    ids.extend((0..20).map(|k| format!("/n/app-{k}")));
    for (k, id) in ids.iter().enumerate() {
        let app = json!({"id": id, "cmd": "x", "instances": 1 + k % 3, "cpus": 0.01, "mem": 1});
        core.create_app(&app, false, now, format!("d{k}")).unwrap();
    }
    let offer = offer_of("cpus:64;mem:4096;ports:[31000-31999]");
    let mut id = |app: &str| format!("{}{}", agora_marathon::core::instance_prefix(app), uuid_like());
    let launched = core.match_offers(&[offer], now + 1, &mut id).launches.len();
    assert_eq!(launched, (0..ids.len()).map(|k| 1 + k % 3).sum::<usize>());
    let api = start_with(core).await;
    let listed = api.call("GET", "/v2/apps?embed=apps.tasks", None).await.body;
    let apps = listed["apps"].as_array().unwrap();
    assert_eq!(apps.len(), ids.len());
    for app in apps {
        let id = app["id"].as_str().unwrap();
        let own = api.call("GET", &format!("/v2/apps{id}/tasks"), None).await.body["tasks"].clone();
        assert_eq!(app["tasks"], own, "{id}");
        assert_eq!(app["tasks"].as_array().unwrap().len(), app["instances"].as_u64().unwrap() as usize, "{id}");
        assert!(app["tasks"].as_array().unwrap().iter().all(|t| t["appId"] == id), "{id}");
    }
}

/// The audit against Marathon 1.10's resources (`AppsResource`, `AppTasksResource`, `TasksResource`,
/// `LabelSelectorParsers`): the answers a client written for Marathon gets.
#[tokio::test]
async fn queries_and_paths_answer_as_marathons_resources() {
    let api = start_with(core_with_tasks()).await;
    let mut db = app("/prod/db");
    db["cmd"] = json!("Run-DB --fast");
    db["labels"] = json!({"tier": "db", "HAPROXY_GROUP": "internal"});
    api.call("POST", "/v2/apps", Some(db)).await;
    api.call("POST", "/v2/apps", Some(app("/other"))).await;
    let ids = |body: &Value| -> Vec<String> {
        body["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
    };
    let list = |query: &'static str| {
        let api = &api;
        async move {
            let r = api.http.get(format!("{}/v2/apps", api.url)).query(&[("label", query)]).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // Every selector needs its label: /prod/web has none, so `!=` and `notin` do not select it.
    let (status, body) = list("tier!=web").await;
    assert_eq!((status, ids(&body)), (200, vec!["/prod/db".to_string()]));
    assert_eq!(ids(&list("tier notin (db)").await.1), vec!["/other"]);
    assert_eq!(ids(&list("HAPROXY_GROUP==internal, tier in (db, web)").await.1), vec!["/prod/db"]);
    let (status, body) = list("tier==").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("Can not parse label selector tier==. Reason: "), "{body}");
    // `cmd` and `id` are case-insensitive substrings.
    assert_eq!(ids(&api.call("GET", "/v2/apps?cmd=run-db", None).await.body), vec!["/prod/db"]);
    assert_eq!(ids(&api.call("GET", "/v2/apps?id=PROD/D", None).await.body), vec!["/prod/db"]);

    // `/v2/apps/{group}/*` and `/v2/apps/{group}/*/tasks`; an unknown group is a 404.
    let r = api.call("GET", "/v2/apps/prod/*", None).await;
    let group: Vec<&str> = r.body["*"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(group, vec!["/prod/db", "/prod/web"]);
    let r = api.call("GET", "/v2/apps/prod/*/tasks", None).await;
    assert_eq!((r.status, r.body["tasks"].as_array().map(Vec::len)), (200, Some(2)));
    // `/v2/groups/{id}/apps`: an array of the group's apps (none for an unknown group).
    let r = api.call("GET", "/v2/groups/prod/apps", None).await;
    let listed: Vec<&str> = r.body.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!((r.status, listed), (200, vec!["/prod/db", "/prod/web"]));
    assert_eq!(api.call("GET", "/v2/groups/nothere/apps", None).await.body, json!([]));
    for path in ["/v2/apps/nothere/*", "/v2/apps/nothere/*/tasks"] {
        let r = api.call("GET", path, None).await;
        assert_eq!((r.status, r.body), (404, json!({"message": "Group '/nothere' does not exist"})), "{path}");
    }

    // The one-app view embeds tasks and lastTaskFailure; readiness results only with `embed=app.readiness`.
    let one = api.call("GET", "/v2/apps/prod/web", None).await.body;
    assert!(one["app"].get("readinessCheckResults").is_none(), "{one}");
    let one = api.call("GET", "/v2/apps/prod/web?embed=app.readiness", None).await.body;
    assert_eq!(one["app"]["readinessCheckResults"], json!([]));

    // `status=` knows running and staging; anything else is ignored (all tasks).
    let count = |body: Value| body["tasks"].as_array().unwrap().len();
    assert_eq!(count(api.call("GET", "/v2/tasks?status=RUNNING", None).await.body), 1);
    assert_eq!(count(api.call("GET", "/v2/tasks?status=killing", None).await.body), 2);

    // PUT creating an app: 201 with `Location`, as POST; whole numbers written as floats are integers.
    let r = api.call("PUT", "/v2/apps/made", Some(json!({"cmd": "x", "instances": 0.0, "cpus": 0.1, "mem": 16}))).await;
    assert_eq!((r.status, r.headers["location"].to_str().unwrap()), (201, "/made"), "{}", r.body);
    let r = api.call("PUT", "/v2/apps/made", Some(json!({"instances": 1.0}))).await;
    assert!(r.status == 200 && !r.headers.contains_key("location"), "{} {:?}", r.body, r.headers);
}

/// As Marathon's `HttpEventStreamHandleActor`: a stream attaching or going away is an event on every stream.
#[tokio::test]
async fn attaching_and_detaching_streams_are_events_for_all() {
    let api = start().await;
    let mut first = api.http.get(format!("{}/v2/events", api.url)).send().await.unwrap();
    let mut buf = String::new();
    assert_eq!(next_event(&mut first, &mut buf).await["eventType"], "event_stream_attached", "its own first");
    let second = api.http.get(format!("{}/v2/events", api.url)).send().await.unwrap();
    let attached = next_event(&mut first, &mut buf).await;
    assert_eq!(
        (&attached["eventType"], &attached["remoteAddress"]),
        (&json!("event_stream_attached"), &json!("127.0.0.1"))
    );
    drop(second);
    let detached = next_event(&mut first, &mut buf).await;
    assert_eq!(
        (&detached["eventType"], &detached["remoteAddress"]),
        (&json!("event_stream_detached"), &json!("127.0.0.1"))
    );
}
