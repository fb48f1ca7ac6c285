//! Marathon's REST API (axum): paths, JSON field names, status codes, headers and error bodies as Marathon's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::app::{AppDefinition, Invalid};
use crate::core::{ApiError, Core, DeploymentResult, Instance};
use crate::events::{event_type, wanted};
use crate::groups::{self, Outcome};
use crate::pathid;
use crate::scheduler::Shared;
use crate::time::{Millis, format_iso, now_millis};

type Params = Query<Vec<(String, String)>>;
type AppState = State<Arc<Shared>>;

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn all<'a>(q: &'a [(String, String)], name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let name = name.to_string();
    q.iter().filter(move |(k, _)| *k == name).map(|(_, v)| v.as_str())
}

/// JAX-RS parses booleans case-insensitively.
fn flag(q: &[(String, String)], name: &str, default: bool) -> bool {
    param(q, name).map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(default)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn message(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, json!({"message": msg.into()}))
}

/// Marathon's answer to a method a resource does not have: 405 `{"message":"Method Not Allowed"}` (the reason
/// phrase its exception mapper puts in the body; Jersey's `Allow` header does not survive that mapper).
fn method_not_allowed() -> Response {
    message(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

async fn method_not_allowed_fallback() -> Response {
    method_not_allowed()
}

fn invalid(e: &Invalid) -> Response {
    match e {
        Invalid::Types(d) => json_response(StatusCode::BAD_REQUEST, json!({"message": "Invalid JSON", "details": d})),
        Invalid::Semantics(d) => {
            json_response(StatusCode::UNPROCESSABLE_ENTITY, json!({"message": "Object is not valid", "details": d}))
        }
    }
}

fn error(e: ApiError) -> Response {
    match e {
        ApiError::Invalid(i) => invalid(&i),
        ApiError::NotFound(m) => message(StatusCode::NOT_FOUND, m),
        ApiError::Exists(m) => message(StatusCode::CONFLICT, m),
        ApiError::BadRequest(m) => message(StatusCode::BAD_REQUEST, m),
        ApiError::TooManyDeployments(max) => message(
            StatusCode::FORBIDDEN,
            format!(
                "Max number ({max}) of running deployments is achieved. Wait for existing deployments to complete or \
                 cancel one using force=true parameter. You can increase max deployment number by using \
                 --max_running_deployments parameter but be advised that this can have negative effects on the \
                 performance."
            ),
        ),
        ApiError::Locked(ids) => {
            let details: Vec<String> = ids.iter().map(|id| format!("/v2/deployments/{id}")).collect();
            json_response(
                StatusCode::CONFLICT,
                json!({
                    "message": format!(
                        "App is locked by one or more deployments. Override with the option '?force=true'. View details at '{}'.",
                        details.join(", ")
                    ),
                    "deployments": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                }),
            )
        }
    }
}

/// Malformed JSON is a 400 with the parser's message; the error is the response to return.
#[allow(clippy::result_large_err)]
fn parse_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [e.to_string()]}]}),
        )
    })
}

fn deployment_response(status: StatusCode, r: &DeploymentResult) -> Response {
    let mut resp = json_response(status, serde_json::to_value(r).unwrap_or_default());
    if let Ok(v) = HeaderValue::from_str(&r.deployment_id) {
        resp.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    resp
}

/// `api_post_event` says who asked (`clientIp`) and what (`uri`, the request path).
fn stamp_origin(core: &mut Core, ext: &Extensions, uri: &Uri) {
    let ip = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    core.stamp_api_events(&ip, uri.path());
}

fn new_deployment_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---- JSON views ---------------------------------------------------------------------------------------------

// The large views (`GET /v2/apps?embed=apps.tasks`, `GET /v2/tasks`) are serialised straight from borrowed
// records rather than built as `serde_json::Value` trees first: at 10,000 tasks that tree was most of the cost.

/// A task as Marathon shows it (`/v2/tasks`, `/v2/apps/{id}/tasks`, embedded in apps).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView<'a> {
    id: &'a str,
    app_id: &'a str,
    host: &'a str,
    slave_id: &'a str,
    #[serde(serialize_with = "ip_addresses")]
    ip_addresses: Option<&'a str>,
    ports: &'a [u32],
    service_ports: &'a [u32],
    state: &'static str,
    staged_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    version: &'a str,
    local_volumes: [(); 0],
    role: &'a str,
    health_check_results: Vec<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IpAddress<'a> {
    ip_address: &'a str,
    protocol: &'static str,
}

impl<'a> TaskView<'a> {
    pub fn of(i: &'a Instance) -> TaskView<'a> {
        TaskView {
            id: &i.task_id,
            app_id: &i.app_id,
            host: &i.placement.hostname,
            slave_id: &i.agent_id,
            ip_addresses: i.agent_ip.as_deref(),
            ports: &i.host_ports,
            service_ports: &i.service_ports,
            state: i.state.name(),
            staged_at: format_iso(i.staged_at),
            started_at: i.started_at.map(format_iso),
            version: &i.version,
            local_volumes: [],
            role: if i.role.is_empty() { agora_proto::model::UNRESERVED } else { &i.role },
            health_check_results: i.health.iter().map(|h| h.json(&i.instance_id)).collect(),
        }
    }
}

/// `{"tasks": [...]}`.
#[derive(Serialize)]
struct Tasks<'a> {
    tasks: Vec<TaskView<'a>>,
}

/// `ipAddresses`: the agent's address, if known, as Marathon's list.
fn ip_addresses<S: serde::Serializer>(ip: &Option<&str>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ip.iter().map(|ip| IpAddress { ip_address: ip, protocol: "IPv4" }))
}

/// An app's tasks as embedded in an AppInfo: the array rendered already, or rendered now.
#[derive(Serialize)]
#[serde(untagged)]
enum AppTasks<'a> {
    Rendered(&'a RawValue),
    Views(Vec<TaskView<'a>>),
}

/// Tasks rendered as JSON once, reused while their instance is unchanged. `GET /v2/apps?embed=apps.tasks` (what
/// load balancers such as marathon-lb poll) rendered every task again for every request: at 10,000 tasks 39 % of
/// its time went to serde_json escaping the same strings (perf). A task's JSON depends on its instance record only
/// ([`TaskView::of`]), so an entry is reused while the record's [`Core::instance_revision`] is the one it was
/// rendered at (comparing whole instances instead cost as much as rendering). About 0.5 KB a task.
///
/// Each app's whole `tasks` array is kept too, while [`Core::app_revision`] (stamped with every change of one of
/// its instances) is the one it was put together at: a request then looks up one entry per app instead of one per
/// task, and copies the arrays. One task's change re-renders that task and joins its app's array again.
#[derive(Default)]
pub struct RenderedTasks(Mutex<Rendered>);

#[derive(Default)]
struct Rendered {
    tasks: HashMap<String, RenderedTask>,
    apps: HashMap<String, RenderedTask>,
}

struct RenderedTask {
    revision: (u64, u64),
    json: Box<RawValue>,
}

/// Entries beyond the live instances kept before those of instances that are gone are dropped.
const RENDERED_SLACK: usize = 1024;

impl RenderedTasks {
    /// Brings the `tasks` array of each of `apps` up to date, rendering the tasks whose record changed, and
    /// returns the entries (the lock is held while the answer is serialised). Entries of instances and apps that
    /// are gone are dropped once there are [`RENDERED_SLACK`] more entries than there are of them.
    fn fresh(&self, core: &Core, apps: &[&AppDefinition]) -> MutexGuard<'_, Rendered> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let rendered = &mut *guard;
        for app in apps {
            let revision = core.app_revision(&app.id);
            if rendered.apps.get(&app.id).is_some_and(|r| r.revision == revision) {
                continue;
            }
            let mut complete = true;
            for i in core.instances_of(&app.id) {
                let revision = core.instance_revision(&i.task_id);
                if rendered.tasks.get(&i.task_id).is_some_and(|r| r.revision == revision) {
                    continue;
                }
                // Plain data with string keys: rendering cannot fail; should it, the app's tasks are rendered per
                // request.
                match serde_json::value::to_raw_value(&TaskView::of(i)) {
                    Ok(json) => rendered.tasks.insert(i.task_id.clone(), RenderedTask { revision, json }),
                    Err(_) => {
                        complete = false;
                        rendered.tasks.remove(&i.task_id)
                    }
                };
            }
            let joined = complete.then(|| {
                let tasks: Vec<&RawValue> = core
                    .instances_of(&app.id)
                    .filter_map(|i| rendered.tasks.get(&i.task_id).map(|r| &*r.json))
                    .collect();
                serde_json::value::to_raw_value(&tasks)
            });
            match joined {
                Some(Ok(json)) => rendered.apps.insert(app.id.clone(), RenderedTask { revision, json }),
                _ => rendered.apps.remove(&app.id),
            };
        }
        let all = &core.state.instances;
        if rendered.tasks.len() > all.len() + RENDERED_SLACK {
            rendered.tasks.retain(|task_id, _| all.contains_key(task_id));
        }
        let all = &core.state.apps;
        if rendered.apps.len() > all.len() + RENDERED_SLACK {
            rendered.apps.retain(|app_id, _| all.contains_key(app_id));
        }
        guard
    }
}

pub fn task_json(i: &Instance) -> Value {
    serde_json::to_value(TaskView::of(i)).unwrap_or_default()
}

/// What an AppInfo carries besides the app (Marathon's `AppInfo.Embed`).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Embed {
    counts: bool,
    deployments: bool,
    tasks: bool,
    last_task_failure: bool,
    readiness: bool,
    task_stats: bool,
}

impl Embed {
    /// What `/v2/apps` always embeds.
    const LIST: Embed = Embed {
        counts: true,
        deployments: true,
        tasks: false,
        last_task_failure: false,
        readiness: false,
        task_stats: false,
    };
    /// What `/v2/apps/{id}` (and `/v2/apps/{group}/*`) always embeds, for compatibility.
    const ONE: Embed = Embed { tasks: true, last_task_failure: true, ..Embed::LIST };

    fn or(self, other: Embed) -> Embed {
        Embed {
            counts: self.counts || other.counts,
            deployments: self.deployments || other.deployments,
            tasks: self.tasks || other.tasks,
            last_task_failure: self.last_task_failure || other.last_task_failure,
            readiness: self.readiness || other.readiness,
            task_stats: self.task_stats || other.task_stats,
        }
    }
}

/// Marathon's `InfoEmbedResolver.resolveApp`: the prefixes `group.apps.`, `apps.` and `app.` (or none) are
/// interchangeable; `tasks` brings `deployments` along, `failures` (deprecated) tasks, lastTaskFailure and
/// deployments; unknown values are ignored.
fn resolve_app_embed<'a>(values: impl Iterator<Item = &'a str>) -> Embed {
    let mut e = Embed::default();
    for v in values {
        let suffix = ["group.apps.", "apps.", "app."].iter().find_map(|p| v.strip_prefix(p)).unwrap_or(v);
        match suffix {
            "tasks" => (e.tasks, e.deployments) = (true, true),
            "counts" => e.counts = true,
            "deployments" => e.deployments = true,
            "lastTaskFailure" => e.last_task_failure = true,
            "readiness" => e.readiness = true,
            "taskStats" => e.task_stats = true,
            "failures" => (e.tasks, e.last_task_failure, e.deployments) = (true, true, true),
            _ => {}
        }
    }
    e
}

/// The `embed=` values of an `/v2/apps` request.
fn embed(q: &[(String, String)]) -> Embed {
    resolve_app_embed(all(q, "embed"))
}

/// What a group view holds (Marathon's `GroupInfo.Embed`): its apps, its subgroups.
#[derive(Clone, Copy, Debug, PartialEq)]
struct GroupEmbed {
    apps: bool,
    groups: bool,
}

/// Marathon's `GroupsResource` embeds: none given means `group.apps`, `group.groups` and `group.pods`;
/// otherwise the `group.apps.*` values say what each app carries (`group.apps.counts`, `group.apps.tasks`, …;
/// nothing beyond the app by default) and `group.apps` / `group.groups` whether apps and subgroups are listed
/// (empty lists otherwise).
fn group_embed(q: &[(String, String)]) -> (Embed, GroupEmbed) {
    let given: Vec<&str> = all(q, "embed").collect();
    if given.is_empty() {
        return (Embed::default(), GroupEmbed { apps: true, groups: true });
    }
    let (app, group): (Vec<&str>, Vec<&str>) = given.into_iter().partition(|v| v.starts_with("group.apps."));
    let g = GroupEmbed { apps: group.contains(&"group.apps"), groups: group.contains(&"group.groups") };
    (resolve_app_embed(app.into_iter()), g)
}

/// `tasksStats` (Marathon's key; the embed is named `taskStats`): counts and life times of the app's tasks in
/// the buckets Marathon reports, each omitted when it holds no task.
fn tasks_stats(app: &AppDefinition, instances: &[&Instance], checked: bool, now: Millis) -> Value {
    use agora_proto::model::TaskState::*;
    let stats = |set: Vec<&&Instance>| -> Option<Value> {
        if set.is_empty() {
            return None;
        }
        let count = |f: &dyn Fn(&Instance) -> bool| set.iter().filter(|i| f(i)).count();
        let mut v = json!({"counts": {
            "staged": count(&|i| matches!(i.state, Staging | Starting)),
            "running": count(&|i| i.state == Running),
            "healthy": count(&|i| checked && i.state == Running && i.healthy == Some(true)),
            "unhealthy": count(&|i| checked && i.state == Running && i.healthy == Some(false)),
        }});
        let mut lives: Vec<f64> =
            set.iter().filter_map(|i| i.started_at).map(|s| now.saturating_sub(s) as f64 / 1000.0).collect();
        if !lives.is_empty() {
            lives.sort_by(f64::total_cmp);
            let n = lives.len();
            let median = if n % 2 == 1 { lives[n / 2] } else { (lives[n / 2 - 1] + lives[n / 2]) / 2.0 };
            let average = lives.iter().sum::<f64>() / n as f64;
            v["lifeTime"] = json!({
                "averageSeconds": crate::app::marathon_number_value(average),
                "medianSeconds": crate::app::marathon_number_value(median),
            });
        }
        Some(json!({"stats": v}))
    };
    let info = &app.version_info;
    let mut out = serde_json::Map::new();
    let buckets: [(&str, Vec<&&Instance>); 4] = [
        (
            "startedAfterLastScaling",
            instances.iter().filter(|i| format_iso(i.staged_at) >= info.last_scaling_at).collect(),
        ),
        ("withLatestConfig", instances.iter().filter(|i| i.version >= info.last_config_change_at).collect()),
        ("withOutdatedConfig", instances.iter().filter(|i| i.version < info.last_config_change_at).collect()),
        ("totalSummary", instances.iter().collect()),
    ];
    for (name, set) in buckets {
        if let Some(v) = stats(set) {
            out.insert(name.into(), v);
        }
    }
    Value::Object(out)
}

/// AppInfo: the app plus what is embedded (counts, deployments, tasks, lastTaskFailure, readiness, tasksStats).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppInfo<'a> {
    #[serde(flatten)]
    app: &'a AppDefinition,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_staged: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_running: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_healthy: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_unhealthy: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployments: Option<Vec<DeploymentRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<AppTasks<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    readiness_check_results: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_task_failure: Option<&'a crate::core::TaskFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_stats: Option<Value>,
}

#[derive(Serialize)]
struct DeploymentRef {
    id: String,
}

/// `rendered`: tasks rendered already ([`RenderedTasks`]); without an entry for the app they are rendered here.
fn app_info<'a>(core: &'a Core, app: &'a AppDefinition, embed: &Embed, rendered: Option<&'a Rendered>) -> AppInfo<'a> {
    let instances: Vec<&Instance> = core.instances_of(&app.id).collect();
    use agora_proto::model::TaskState::*;
    let count = |f: &dyn Fn(&Instance) -> bool| instances.iter().filter(|i| f(i)).count();
    // Without health checks Marathon reports neither healthy nor unhealthy tasks; with them, what the agents said.
    let checked = !app.health_checks.is_empty();
    let health = |h: bool| count(&|i| checked && i.healthy == Some(h) && i.state == Running);
    AppInfo {
        app,
        tasks_staged: embed.counts.then(|| count(&|i| matches!(i.state, Staging | Starting))),
        tasks_running: embed.counts.then(|| count(&|i| i.state == Running)),
        tasks_healthy: embed.counts.then(|| health(true)),
        tasks_unhealthy: embed.counts.then(|| health(false)),
        deployments: embed
            .deployments
            .then(|| core.deployments_of(&app.id).into_iter().map(|id| DeploymentRef { id }).collect()),
        tasks: embed.tasks.then(|| {
            // `fresh` brought the listed apps' entries up to date under the same lock: an entry found is current.
            match rendered.and_then(|r| r.apps.get(&app.id)) {
                Some(r) => AppTasks::Rendered(&r.json),
                None => AppTasks::Views(instances.iter().map(|i| TaskView::of(i)).collect()),
            }
        }),
        readiness_check_results: embed.readiness.then(|| core.readiness_results(&app.id)),
        last_task_failure: core.last_failure(&app.id).filter(|_| embed.last_task_failure),
        tasks_stats: embed.task_stats.then(|| tasks_stats(app, &instances, checked, now_millis())),
    }
}

/// One `label=` selector term: the label it tests and how.
#[derive(Debug, PartialEq)]
enum LabelTest {
    Exists,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// A parsed `label=` query (Marathon's `LabelSelectorParsers`): selectors joined by commas, all of which must
/// hold. Every selector, `!=` and `notin` included, needs the label to be present, as Marathon's
/// `LabelSelector.matches` does.
#[derive(Debug, PartialEq)]
pub struct LabelSelectors(Vec<(String, LabelTest)>);

impl LabelSelectors {
    /// Parses Marathon's grammar: `key`, `key==value`, `key!=value`, `key in (a, b)`, `key notin (a, b)`, comma
    /// separated; terms are `[-A-Za-z0-9_.]` and any other character escaped with a backslash; blanks between
    /// tokens are skipped. The error is Marathon's message (a 422 with only `message`).
    pub fn parse(query: &str) -> Result<LabelSelectors, String> {
        let fail = |why: String| format!("Can not parse label selector {query}. Reason: {why}");
        let mut p = SelectorParser { chars: query.chars().collect(), pos: 0 };
        let mut out = Vec::new();
        p.blanks();
        if p.pos == p.chars.len() {
            return Ok(LabelSelectors(out));
        }
        loop {
            out.push(p.selector().ok_or_else(|| fail(format!("expected a selector at offset {}", p.pos)))?);
            if p.literal(",") {
                continue;
            }
            p.blanks();
            if p.pos == p.chars.len() {
                return Ok(LabelSelectors(out));
            }
            return Err(fail(format!("unexpected '{}' at offset {}", p.chars[p.pos], p.pos)));
        }
    }

    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(key, test)| {
            labels.get(key).is_some_and(|v| match test {
                LabelTest::Exists => true,
                LabelTest::Equals(x) => v == x,
                LabelTest::NotEquals(x) => v != x,
                LabelTest::In(set) => set.contains(v),
                LabelTest::NotIn(set) => !set.contains(v),
            })
        })
    }
}

/// A cursor over a selector query; each rule restores the position when it does not match.
struct SelectorParser {
    chars: Vec<char>,
    pos: usize,
}

impl SelectorParser {
    fn blanks(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, lit: &str) -> bool {
        self.blanks();
        let n = lit.chars().count();
        if self.chars.len() >= self.pos + n && self.chars[self.pos..self.pos + n].iter().copied().eq(lit.chars()) {
            self.pos += n;
            return true;
        }
        false
    }

    /// `(\\.|[-A-Za-z0-9_.])+`, unescaped.
    fn term(&mut self) -> Option<String> {
        self.blanks();
        let mut out = String::new();
        while let Some(&c) = self.chars.get(self.pos) {
            if c == '\\' && self.pos + 1 < self.chars.len() {
                out.push(self.chars[self.pos + 1]);
                self.pos += 2;
            } else if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                out.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// `set | equality | existence`, the first that matches.
    fn selector(&mut self) -> Option<(String, LabelTest)> {
        let start = self.pos;
        if let Some(found) = self.set_selector() {
            return Some(found);
        }
        self.pos = start;
        if let Some(found) = self.equality_selector() {
            return Some(found);
        }
        self.pos = start;
        self.term().map(|key| (key, LabelTest::Exists))
    }

    fn set_selector(&mut self) -> Option<(String, LabelTest)> {
        let key = self.term()?;
        // `in` is tried first as Marathon's `(in|notin)` does; `notin` does not start with it.
        let negated = if self.literal("in") {
            false
        } else if self.literal("notin") {
            true
        } else {
            return None;
        };
        if !self.literal("(") {
            return None;
        }
        let mut set = Vec::new();
        if !self.literal(")") {
            loop {
                set.push(self.term()?);
                if self.literal(")") {
                    break;
                }
                if !self.literal(",") {
                    return None;
                }
            }
        }
        Some((key, if negated { LabelTest::NotIn(set) } else { LabelTest::In(set) }))
    }

    fn equality_selector(&mut self) -> Option<(String, LabelTest)> {
        let key = self.term()?;
        let equals = if self.literal("==") {
            true
        } else if self.literal("!=") {
            false
        } else {
            return None;
        };
        let value = self.term()?;
        Some((key, if equals { LabelTest::Equals(value) } else { LabelTest::NotEquals(value) }))
    }
}

// ---- handlers -----------------------------------------------------------------------------------------------

async fn ping() -> &'static str {
    "pong"
}

/// `GET /v2/info`: every key Marathon reports, with the values this Marathon really works with; a setting it has
/// no counterpart for is `null`, as Marathon reports an unset option.
async fn info(State(s): AppState) -> Response {
    let fw = s.lock().state.framework_id.clone();
    let leader_ui = s.leader_ui.lock().unwrap_or_else(|p| p.into_inner()).clone();
    json_response(StatusCode::OK, info_json(&s.info, fw, leader_ui))
}

/// `leader_ui`: the web UI of the master Marathon subscribed with, if it has.
fn info_json(info: &crate::scheduler::Info, framework_id: Option<String>, leader_ui: Option<String>) -> Value {
    use crate::core::{LOCAL_PORT_MAX, LOCAL_PORT_MIN, MAX_VERSIONS, TASK_LAUNCH_TIMEOUT_MS};
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let leader = format!("{}:{}", info.hostname, info.http_port);
    // Only the leader answers (standbys proxy), so `elected` is true; with `--zk` it says where the state is.
    let zookeeper_config = match &info.zk {
        Some((url, timeout)) => json!({
            "zk": url, "zk_session_timeout": timeout, "zk_timeout": timeout, "zk_connection_timeout": null,
            "zk_max_versions": MAX_VERSIONS, "zk_compression": false, "zk_compression_threshold": null,
            "zk_max_node_size": crate::store::zk::MAX_NODE_BYTES,
        }),
        None => json!({}),
    };
    // The master's web UI: the address `--master` names, or with zk:// the leader Marathon subscribed with (its
    // MasterInfo's hostname and port, as Marathon's MesosLeaderInfo); the UI links each task's logs there.
    let mesos_leader_ui_url = match agora_detector::MasterSpec::parse(&info.master) {
        Ok(agora_detector::MasterSpec::Fixed(addr)) => Some(format!("http://{addr}/")),
        _ => leader_ui,
    };
    let origins = (!info.access_control_allow_origin.is_empty()).then(|| info.access_control_allow_origin.join(","));
    // In two parts: one `json!` of them all is deeper than the macro's recursion limit.
    let mut marathon_config = json!({
            "access_control_allow_origin": origins,
            "checkpoint": true,
            "decline_offer_duration": (crate::scheduler::DECLINE_SECONDS * 1000.0) as u64,
            "default_network_name": null,
            "env_vars_prefix": null,
            "executor": "//cmd",
            "failover_timeout": info.failover_timeout as u64,
            "features": [],
            "framework_name": info.framework_name,
            "ha": info.zk.is_some(),
            "hostname": info.hostname,
            "launch_token": null,
            "launch_token_refresh_interval": null,
            "leader_proxy_connection_timeout_ms": ms(crate::proxy::LEADER_PROXY_CONNECTION_TIMEOUT),
            "leader_proxy_read_timeout_ms": ms(crate::proxy::LEADER_PROXY_READ_TIMEOUT),
            "local_port_max": LOCAL_PORT_MAX,
            "local_port_min": LOCAL_PORT_MIN,
            "master": info.master,
            "max_instances_per_offer": null,
            "mesos_bridge_name": null,
            "mesos_heartbeat_failure_threshold": agora_framework_sdk::DEFAULT_MISSED_HEARTBEATS,
            "mesos_heartbeat_interval": ms(agora_framework_sdk::DEFAULT_HEARTBEAT_INTERVAL),
            "mesos_leader_ui_url": mesos_leader_ui_url,
    });
    let rest = json!({
            "mesos_role": info.mesos_role,
            "mesos_user": null,
            "new_group_enforce_role": "Off",
            "min_revive_offers_interval": null,
            "offer_matching_timeout": null,
            "on_elected_prepare_timeout": null,
            // Reconciliation starts as soon as Marathon has subscribed.
            "reconciliation_initial_delay": 0,
            "reconciliation_interval": crate::scheduler::RECONCILIATION_INTERVAL_MS,
            // Every tick decides the scaling of every app.
            "scale_apps_initial_delay": 0,
            "scale_apps_interval": ms(crate::server::TICK),
            "store_cache": null,
            "task_launch_confirm_timeout": null,
            "task_launch_timeout": TASK_LAUNCH_TIMEOUT_MS,
            "task_lost_expunge_initial_delay": null,
            "task_lost_expunge_interval": null,
            "task_reservation_timeout": null,
            "webui_url": format!("http://{leader}"),
            "maintenance_mode": null,
    });
    if let (Value::Object(all), Value::Object(rest)) = (&mut marathon_config, rest) {
        all.extend(rest);
    }
    json!({
        "name": "marathon", "version": env!("CARGO_PKG_VERSION"), "buildref": "agora",
        "elected": true, "leader": leader, "frameworkId": framework_id,
        "marathon_config": marathon_config,
        "zookeeper_config": zookeeper_config,
        "http_config": {"http_port": info.http_port, "https_port": null, "assets_path": null},
        "event_subscriber": null,
    })
}

async fn leader(State(s): AppState) -> Response {
    json_response(StatusCode::OK, json!({"leader": format!("{}:{}", s.info.hostname, s.info.http_port)}))
}

/// `DELETE /v2/leader`: this instance stops leading; with `--zk` another one takes over.
async fn abdicate(State(s): AppState) -> Response {
    tracing::warn!("leadership abdicated through DELETE /v2/leader");
    s.abdicated.notify_one();
    message(StatusCode::OK, "Leadership abdicated")
}

async fn list_apps(State(s): AppState, Query(q): Params) -> Response {
    let core = s.lock();
    let e = Embed::LIST.or(embed(&q));
    // Marathon's `AppsResource.search`: both are case-insensitive substrings.
    let id_filter = param(&q, "id").map(str::to_lowercase);
    let cmd_filter = param(&q, "cmd").map(str::to_lowercase);
    let label = match param(&q, "label").map(LabelSelectors::parse).transpose() {
        Ok(l) => l,
        // Marathon's IllegalArgumentException: 422 with the reason.
        Err(why) => return message(StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    let listed: Vec<&AppDefinition> = core
        .state
        .apps
        .values()
        .filter(|a| id_filter.as_deref().is_none_or(|f| a.id.to_lowercase().contains(f)))
        .filter(|a| {
            cmd_filter.as_deref().is_none_or(|f| a.cmd.as_deref().is_some_and(|c| c.to_lowercase().contains(f)))
        })
        .filter(|a| label.as_ref().is_none_or(|l| l.matches(&a.labels)))
        .collect();
    let rendered = e.tasks.then(|| s.rendered.fresh(&core, &listed));
    let apps: Vec<AppInfo> = listed.iter().map(|a| app_info(&core, a, &e, rendered.as_deref())).collect();
    #[derive(Serialize)]
    struct Apps<'a> {
        apps: Vec<AppInfo<'a>>,
    }
    (StatusCode::OK, axum::Json(Apps { apps })).into_response()
}

async fn create_app(State(s): AppState, ext: Extensions, uri: Uri, Query(q): Params, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = now_millis();
    let mut core = s.lock();
    let result = core.create_app(&body, flag(&q, "force", false), now, new_deployment_id());
    let resp = match result {
        Ok((app, r)) => {
            let info = app_info(&core, &app, &Embed::LIST, None);
            let mut resp = json_response(StatusCode::CREATED, json!(info));
            if let Ok(v) = HeaderValue::from_str(&app.id) {
                resp.headers_mut().insert("Location", v);
            }
            if let Ok(v) = HeaderValue::from_str(&r.deployment_id) {
                resp.headers_mut().insert("Marathon-Deployment-Id", v);
            }
            resp
        }
        Err(e) => error(e),
    };
    stamp_origin(&mut core, &ext, &uri);
    s.settle(&mut core, now);
    resp
}

/// `PUT /v2/apps` (create or update, partial by default) and `PATCH /v2/apps` (update existing): one deployment.
async fn bulk_update(
    State(s): AppState,
    method: Method,
    ext: Extensions,
    uri: Uri,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(apps) = body.as_array() else {
        return invalid(&Invalid::Types(vec![crate::app::Detail {
            path: "/".into(),
            errors: vec!["error.expected.jsarray".into()],
        }]));
    };
    let now = now_millis();
    let mut core = s.lock();
    let patch = method == Method::PATCH;
    let partial = patch || flag(&q, "partialUpdate", true);
    let resp = match core.update_apps(apps, partial, patch, flag(&q, "force", false), now, new_deployment_id()) {
        Ok(r) => deployment_response(StatusCode::OK, &r),
        Err(e) => error(e),
    };
    stamp_origin(&mut core, &ext, &uri);
    s.settle(&mut core, now);
    resp
}

fn group_json(core: &Core, id: &str, e: Embed, g: GroupEmbed) -> Value {
    let prefix = if id == "/" { "/".to_string() } else { format!("{id}/") };
    let apps: Vec<Value> = match g.apps {
        true => core
            .state
            .apps
            .range(prefix.clone()..)
            .take_while(|(a, _)| a.starts_with(&prefix))
            .filter(|(a, _)| groups::parent(a) == id)
            .map(|(_, a)| json!(app_info(core, a, &e, None)))
            .collect(),
        false => Vec::new(),
    };
    let groups: Vec<Value> = match g.groups {
        true => groups::children(&core.state.apps, &core.state.groups, id)
            .iter()
            .map(|child| group_json(core, child, e, g))
            .collect(),
        false => Vec::new(),
    };
    let mut version = groups::version_of(&core.state.apps, &core.state.groups, id);
    if version.is_empty() {
        version = format_iso(now_millis());
    }
    groups::group_shape(id, apps, groups, core.state.groups.get(id), version)
}

/// The sub-resource a `/v2/groups/...` path names.
enum GroupPath {
    Group(String),
    Versions(String),
    Version(String, String),
}

fn group_path(rest: &str) -> GroupPath {
    let path = pathid::normalize(rest, "/");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let n = segs.len();
    let join = |k: usize| format!("/{}", segs[..k].join("/"));
    if n >= 1 && segs[n - 1] == "versions" {
        return GroupPath::Versions(join(n - 1));
    }
    if n >= 2 && segs[n - 2] == "versions" {
        return GroupPath::Version(join(n - 2), segs[n - 1].to_string());
    }
    GroupPath::Group(path)
}

fn group_rest(path: Option<Path<String>>) -> String {
    path.map(|Path(p)| p).unwrap_or_else(|| "/".into())
}

/// `GET /v2/groups/{id}/apps` (Marathon's `ListApps`, for GET only): the group's apps, nested ones included, as
/// an array of AppInfo; an unknown group has none.
fn group_apps_path(rest: &str) -> Option<String> {
    let path = pathid::normalize(rest, "/");
    let group = path.strip_suffix("/apps")?;
    Some(if group.is_empty() { "/".into() } else { group.to_string() })
}

/// `GET /v2/groups[/{id}]`, `/v2/groups/{id}/apps`, `/v2/groups/{id}/versions` and
/// `/v2/groups/{id}/versions/{version}`.
async fn group_get(State(s): AppState, path: Option<Path<String>>, Query(q): Params) -> Response {
    let core = s.lock();
    let rest = group_rest(path);
    if let Some(group) = group_apps_path(&rest) {
        let prefix = if group == "/" { "/".to_string() } else { format!("{group}/") };
        let (e, _) = group_embed(&q);
        let apps: Vec<AppInfo> = core
            .state
            .apps
            .range(prefix.clone()..)
            .take_while(|(id, _)| id.starts_with(&prefix))
            .map(|(_, a)| app_info(&core, a, &e, None))
            .collect();
        return (StatusCode::OK, axum::Json(apps)).into_response();
    }
    match group_path(&rest) {
        GroupPath::Group(id) => {
            if !core.group_exists(&id) {
                return message(StatusCode::NOT_FOUND, format!("Group '{id}' does not exist"));
            }
            let (e, g) = group_embed(&q);
            json_response(StatusCode::OK, group_json(&core, &id, e, g))
        }
        GroupPath::Versions(id) => match core.group_versions(&id) {
            Ok(v) => json_response(StatusCode::OK, json!(v)),
            Err(e) => error(e),
        },
        GroupPath::Version(id, version) => match core.group_at(&id, &version) {
            Ok(tree) => json_response(StatusCode::OK, groups::tree_json(&tree, &id)),
            Err(e) => error(e),
        },
    }
}

/// `POST /v2/groups[/{id}]`: 201 with the deployment, `Location` and `Marathon-Deployment-Id`.
async fn group_create(State(s): AppState, path: Option<Path<String>>, Query(q): Params, body: Bytes) -> Response {
    let GroupPath::Group(base) = group_path(&group_rest(path)) else {
        return method_not_allowed();
    };
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = now_millis();
    let mut core = s.lock();
    let resp = match core.create_group(&base, &body, flag(&q, "force", false), now, new_deployment_id()) {
        Ok((id, r)) => {
            let mut resp = deployment_response(StatusCode::CREATED, &r);
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("Location", v);
            }
            resp
        }
        Err(e) => error(e),
    };
    s.settle(&mut core, now);
    resp
}

/// `PUT /v2/groups[/{id}]`: update or create, `{"version"}` rollback, `{"scaleBy"}`; `dryRun=true` gives the plan.
async fn group_update(State(s): AppState, path: Option<Path<String>>, Query(q): Params, body: Bytes) -> Response {
    let GroupPath::Group(id) = group_path(&group_rest(path)) else {
        return method_not_allowed();
    };
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = now_millis();
    let mut core = s.lock();
    let (force, dry_run) = (flag(&q, "force", false), flag(&q, "dryRun", false));
    let resp = match core.update_group(&id, &body, force, dry_run, now, new_deployment_id()) {
        Ok((_, Outcome::Deployed(r))) => deployment_response(StatusCode::OK, &r),
        Ok((_, Outcome::DryRun(steps))) => json_response(StatusCode::OK, json!({"steps": steps})),
        Err(e) => error(e),
    };
    s.settle(&mut core, now);
    resp
}

/// `DELETE /v2/groups[/{id}]`: the group and everything below it, as a deployment.
async fn group_delete(State(s): AppState, path: Option<Path<String>>, Query(q): Params) -> Response {
    let GroupPath::Group(id) = group_path(&group_rest(path)) else {
        return method_not_allowed();
    };
    let now = now_millis();
    let mut core = s.lock();
    let resp = match core.delete_group(&id, flag(&q, "force", false), now, new_deployment_id()) {
        Ok(r) => deployment_response(StatusCode::OK, &r),
        Err(e) => error(e),
    };
    s.settle(&mut core, now);
    resp
}

/// `PATCH /v2/groups/{id}`: Marathon's `GroupPartialUpdate`, which only sets `enforceRole` of a top-level group;
/// 200 with an empty body. (`PATCH /v2/groups` has no resource: 405.)
async fn group_patch(State(s): AppState, path: Option<Path<String>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = now_millis();
    let mut core = s.lock();
    let resp = match core.patch_group(&group_rest(path), &body) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error(e),
    };
    s.settle(&mut core, now);
    resp
}

/// The sub-resource an `/v2/apps/...` path names.
enum AppPath {
    App(String),
    Restart(String),
    Tasks(String),
    /// `/v2/apps/{group}/*/tasks`: the tasks of every app in a group.
    GroupTasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
    GroupWildcard(String),
}

fn app_path(rest: &str) -> AppPath {
    let path = pathid::normalize(rest, "/");
    if let Some(group) = path.strip_suffix("/*") {
        return AppPath::GroupWildcard(if group.is_empty() { "/".into() } else { group.to_string() });
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let n = segs.len();
    let join = |k: usize| format!("/{}", segs[..k].join("/"));
    if n >= 2 && segs[n - 1] == "restart" {
        return AppPath::Restart(join(n - 1));
    }
    if n >= 2 && segs[n - 1] == "tasks" {
        if segs[n - 2] == "*" {
            return AppPath::GroupTasks(join(n - 2));
        }
        return AppPath::Tasks(join(n - 1));
    }
    if n >= 3 && segs[n - 2] == "tasks" {
        return AppPath::Task(join(n - 2), segs[n - 1].to_string());
    }
    if n >= 2 && segs[n - 1] == "versions" {
        return AppPath::Versions(join(n - 1));
    }
    if n >= 3 && segs[n - 2] == "versions" {
        return AppPath::Version(join(n - 2), segs[n - 1].to_string());
    }
    AppPath::App(path)
}

async fn app_get(State(s): AppState, headers: HeaderMap, Path(rest): Path<String>, Query(q): Params) -> Response {
    let core = s.lock();
    match app_path(&rest) {
        AppPath::App(id) => match core.app(&id) {
            Ok(app) => {
                // Marathon always embeds counts, deployments, tasks and lastTaskFailure here (compatibility),
                // and honours `embed` (`app.readiness` for readinessCheckResults).
                let e = Embed::ONE.or(embed(&q));
                json_response(StatusCode::OK, json!({"app": app_info(&core, app, &e, None)}))
            }
            Err(e) => error(e),
        },
        AppPath::GroupWildcard(group) => {
            if !core.group_exists(&group) {
                return message(StatusCode::NOT_FOUND, format!("Group '{group}' does not exist"));
            }
            let e = Embed::ONE.or(embed(&q));
            let prefix = if group == "/" { "/".to_string() } else { format!("{group}/") };
            let apps: Vec<AppInfo> = core
                .state
                .apps
                .values()
                .filter(|a| a.id.starts_with(&prefix))
                .map(|a| app_info(&core, a, &e, None))
                .collect();
            json_response(StatusCode::OK, json!({"*": apps}))
        }
        AppPath::Tasks(id) => match core.app(&id) {
            // The same text as `/v2/tasks` gives, for this app only (Marathon's `AppTasksResource.indexTxt`).
            Ok(app) if wants_text(&headers) => text_response(tasks_text(&core, std::iter::once(app))),
            Ok(_) => {
                let tasks = core.instances_of(&id).map(TaskView::of).collect();
                (StatusCode::OK, axum::Json(Tasks { tasks })).into_response()
            }
            Err(e) => error(e),
        },
        AppPath::GroupTasks(group) => {
            if !core.group_exists(&group) {
                return message(StatusCode::NOT_FOUND, format!("Group '{group}' does not exist"));
            }
            let prefix = if group == "/" { "/".to_string() } else { format!("{group}/") };
            let tasks = core
                .state
                .apps
                .range(prefix.clone()..)
                .take_while(|(id, _)| id.starts_with(&prefix))
                .flat_map(|(id, _)| core.instances_of(id))
                .map(TaskView::of)
                .collect();
            (StatusCode::OK, axum::Json(Tasks { tasks })).into_response()
        }
        AppPath::Task(id, task) => match core.app(&id) {
            Ok(_) => match core.state.instances.get(&task).filter(|i| i.app_id == id) {
                Some(i) => json_response(StatusCode::OK, json!({"task": task_json(i)})),
                None => message(StatusCode::NOT_FOUND, format!("Task '{task}' does not exist")),
            },
            Err(e) => error(e),
        },
        AppPath::Versions(id) => match core.app(&id) {
            Ok(_) => {
                let mut versions: Vec<&String> =
                    core.state.versions.get(&id).map(|v| v.keys().collect()).unwrap_or_default();
                versions.reverse();
                json_response(StatusCode::OK, json!({"versions": versions}))
            }
            Err(e) => error(e),
        },
        AppPath::Version(id, version) => match core.app(&id) {
            Ok(_) => match core.state.versions.get(&id).and_then(|v| v.get(&version)) {
                Some(app) => json_response(StatusCode::OK, serde_json::to_value(app).unwrap_or_default()),
                None => message(StatusCode::NOT_FOUND, format!("Version '{version}' of app '{id}' does not exist")),
            },
            Err(e) => error(e),
        },
        AppPath::Restart(_) => method_not_allowed(),
    }
}

async fn app_update(
    State(s): AppState,
    method: Method,
    ext: Extensions,
    uri: Uri,
    Path(rest): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let AppPath::App(id) = app_path(&rest) else {
        return method_not_allowed();
    };
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = now_millis();
    let mut core = s.lock();
    if method == Method::PATCH && core.app(&id).is_err() {
        return error(ApiError::NotFound(format!("App '{id}' does not exist")));
    }
    let partial = method == Method::PATCH || flag(&q, "partialUpdate", true);
    let result = core.update_app(&id, &body, partial, flag(&q, "force", false), now, new_deployment_id());
    let resp = match result {
        Ok((false, r)) => deployment_response(StatusCode::OK, &r),
        // Created: 201 with `Location`, as Marathon's `Response.created`.
        Ok((true, r)) => {
            let mut resp = deployment_response(StatusCode::CREATED, &r);
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("Location", v);
            }
            resp
        }
        Err(e) => error(e),
    };
    stamp_origin(&mut core, &ext, &uri);
    s.settle(&mut core, now);
    resp
}

async fn app_delete(State(s): AppState, Path(rest): Path<String>, Query(q): Params) -> Response {
    let now = now_millis();
    let mut core = s.lock();
    let force = flag(&q, "force", false);
    let resp = match app_path(&rest) {
        // Marathon 1.10 defaults `force` to true for app deletion.
        AppPath::App(id) => match core.delete_app(&id, flag(&q, "force", true), now, new_deployment_id()) {
            Ok(r) => deployment_response(StatusCode::OK, &r),
            Err(e) => error(e),
        },
        AppPath::Tasks(id) => {
            let (scale, wipe) = (flag(&q, "scale", false), flag(&q, "wipe", false));
            if scale && wipe {
                return message(StatusCode::BAD_REQUEST, "You cannot use scale and wipe at the same time.");
            }
            if let Err(e) = core.app(&id) {
                return error(e);
            }
            let host = param(&q, "host");
            let ids: Vec<String> = core
                .instances_of(&id)
                .filter(|i| host.is_none_or(|h| h == "*" || i.placement.hostname == h))
                .map(|i| i.task_id.clone())
                .collect();
            kill_response(&mut core, &ids, scale, wipe, force, now)
        }
        AppPath::Task(id, task) => {
            let (scale, wipe) = (flag(&q, "scale", false), flag(&q, "wipe", false));
            if scale && wipe {
                return message(StatusCode::BAD_REQUEST, "You cannot use scale and wipe at the same time.");
            }
            if let Err(e) = core.app(&id) {
                return error(e);
            }
            if core.state.instances.get(&task).is_none_or(|i| i.app_id != id) {
                return message(StatusCode::NOT_FOUND, format!("Task '{task}' does not exist"));
            }
            match core.kill_tasks(std::slice::from_ref(&task), scale, wipe, force, now, new_deployment_id()) {
                Ok((_, Some(r))) => deployment_response(StatusCode::OK, &r),
                Ok((killed, None)) => {
                    json_response(StatusCode::OK, json!({"task": killed.first().map(task_json).unwrap_or(Value::Null)}))
                }
                Err(e) => error(e),
            }
        }
        _ => method_not_allowed(),
    };
    s.settle(&mut core, now);
    resp
}

fn kill_response(core: &mut Core, ids: &[String], scale: bool, wipe: bool, force: bool, now: Millis) -> Response {
    match core.kill_tasks(ids, scale, wipe, force, now, new_deployment_id()) {
        Ok((_, Some(r))) => deployment_response(StatusCode::OK, &r),
        Ok((killed, None)) => {
            json_response(StatusCode::OK, json!({"tasks": killed.iter().map(task_json).collect::<Vec<_>>()}))
        }
        Err(e) => error(e),
    }
}

async fn app_post(State(s): AppState, Path(rest): Path<String>, Query(q): Params) -> Response {
    let AppPath::Restart(id) = app_path(&rest) else {
        return method_not_allowed();
    };
    let now = now_millis();
    let mut core = s.lock();
    let resp = match core.restart_app(&id, flag(&q, "force", false), now, new_deployment_id()) {
        Ok(r) => deployment_response(StatusCode::OK, &r),
        Err(e) => error(e),
    };
    s.settle(&mut core, now);
    resp
}

/// Whether the client asked for `text/plain` rather than JSON (old scripts and the haproxy bridge do).
fn wants_text(headers: &HeaderMap) -> bool {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.contains("text/plain") && !accept.contains("json")
}

/// Marathon's text endpoint list: per app and service port one line
/// `<id with / as _>\t<servicePort>\t<host:hostPort>\t…` over its running tasks; an app without service ports
/// gets one line with a blank port and the bare hosts.
fn tasks_text<'a>(core: &Core, apps: impl Iterator<Item = &'a AppDefinition>) -> String {
    use agora_proto::model::TaskState;
    let mut out = String::new();
    for app in apps {
        let clean = app.id.trim_start_matches('/').replace('/', "_");
        let running: Vec<&Instance> = core.instances_of(&app.id).filter(|i| i.state == TaskState::Running).collect();
        let service_ports: Vec<u32> = running.first().map(|i| i.service_ports.clone()).unwrap_or_default();
        let service_ports = if service_ports.is_empty() {
            app.port_definitions.iter().map(|p| p.port).collect()
        } else {
            service_ports
        };
        if service_ports.is_empty() {
            out.push_str(&format!("{clean}\t \t"));
            for i in &running {
                out.push_str(&format!("{} \t", i.placement.hostname));
            }
            out.push('\n');
            continue;
        }
        for (n, port) in service_ports.iter().enumerate() {
            out.push_str(&format!("{clean}\t{port}\t"));
            for i in &running {
                out.push_str(&format!("{}:{}\t", i.placement.hostname, i.host_ports.get(n).copied().unwrap_or(0)));
            }
            out.push('\n');
        }
    }
    out
}

fn text_response(text: String) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// `status=` / `status[]=` of `GET /v2/tasks`, as Marathon's `TasksResource` reads them: `running` and `staging`
/// (any case) select those states; other values are ignored, and with none left every task is listed.
fn status_filter(q: &[(String, String)]) -> Vec<agora_proto::model::TaskState> {
    use agora_proto::model::TaskState;
    all(q, "status")
        .chain(all(q, "status[]"))
        .filter_map(|v| match v.to_ascii_lowercase().as_str() {
            "running" => Some(TaskState::Running),
            "staging" => Some(TaskState::Staging),
            _ => None,
        })
        .collect()
}

async fn list_tasks(State(s): AppState, headers: HeaderMap, Query(q): Params) -> Response {
    let core = s.lock();
    if wants_text(&headers) {
        return text_response(tasks_text(&core, core.state.apps.values()));
    }
    let statuses = status_filter(&q);
    let tasks: Vec<TaskView> = core
        .state
        .instances
        .values()
        .filter(|i| statuses.is_empty() || statuses.contains(&i.state))
        .map(TaskView::of)
        .collect();
    (StatusCode::OK, axum::Json(Tasks { tasks })).into_response()
}

async fn delete_tasks(State(s): AppState, Query(q): Params, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (scale, wipe) = (flag(&q, "scale", false), flag(&q, "wipe", false));
    if scale && wipe {
        return message(StatusCode::BAD_REQUEST, "You cannot use scale and wipe at the same time.");
    }
    let Some(ids) = body.get("ids").and_then(Value::as_array) else {
        return invalid(&Invalid::Types(vec![crate::app::Detail {
            path: "/ids".into(),
            errors: vec!["error.path.missing".into()],
        }]));
    };
    let ids: Vec<String> = ids.iter().filter_map(Value::as_str).map(String::from).collect();
    if let Some(bad) = ids.iter().find(|id| !id.contains(".instance-") && !id.contains('.')) {
        return message(
            StatusCode::BAD_REQUEST,
            format!("Invalid task id '{bad}'. [Task id must be of the form <app>.instance-<uuid>._app.<n>]"),
        );
    }
    let now = now_millis();
    let mut core = s.lock();
    let resp = kill_response(&mut core, &ids, scale, wipe, flag(&q, "force", false), now);
    s.settle(&mut core, now);
    resp
}

async fn list_deployments(State(s): AppState) -> Response {
    let now = now_millis();
    json_response(StatusCode::OK, json!(s.lock().deployments_json(now)))
}

async fn delete_deployment(State(s): AppState, Path(id): Path<String>, Query(q): Params) -> Response {
    let now = now_millis();
    let mut core = s.lock();
    let resp = match core.cancel_deployment(&id, flag(&q, "force", false), now, new_deployment_id()) {
        Ok(Some(r)) => deployment_response(StatusCode::OK, &r),
        Ok(None) => StatusCode::ACCEPTED.into_response(),
        Err(e) => error(e),
    };
    s.settle(&mut core, now);
    resp
}

/// `GET /v2/queue`; `embed=lastUnusedOffers` adds each app's last unused offers.
async fn queue(State(s): AppState, Query(q): Params) -> Response {
    let now = now_millis();
    let core = s.lock();
    let mut queue = core.queue_json(now);
    if all(&q, "embed").any(|e| e == "lastUnusedOffers") {
        for entry in &mut queue {
            let id = entry["app"]["id"].as_str().unwrap_or_default().to_string();
            entry["lastUnusedOffers"] = json!(core.last_unused_offers_json(&id));
        }
    }
    json_response(StatusCode::OK, json!({"queue": queue}))
}

async fn reset_delay(State(s): AppState, Path(rest): Path<String>) -> Response {
    let Some(id) = rest.strip_suffix("/delay") else {
        return message(StatusCode::NOT_FOUND, "URI not found");
    };
    let now = now_millis();
    let mut core = s.lock();
    let resp = match core.reset_delay(id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    };
    s.settle(&mut core, now);
    resp
}

async fn events(
    State(s): AppState,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(q): Params,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let filters: Vec<String> = all(&q, "event_type").map(String::from).collect();
    // Deployment plans carry the original and target root groups unless `plan-format=light` (Marathon's).
    let light = param(&q, "plan-format") == Some("light");
    let plans = (!light && crate::events::wants_deployments(&filters)).then(|| s.bus.plan_stream());
    // As Marathon's `HttpEventStreamHandleActor`: the stream subscribes, then `event_stream_attached` goes to every
    // stream (this one's first frame among them), and `event_stream_detached` when it ends.
    let rx = s.bus.subscribe();
    s.bus.publish(json!({
        "eventType": "event_stream_attached", "timestamp": format_iso(now_millis()),
        "remoteAddress": remote.ip().to_string(),
    }));
    let detach = crate::events::Detach::new(s.bus.clone(), remote.ip().to_string());
    // A client that fell more than the bus's buffer behind has missed events: it is disconnected (and can
    // re-read the state and attach again) rather than left to skip them silently, as Marathon closes slow
    // consumers.
    let rest = BroadcastStream::new(rx)
        .take_while(move |e| {
            if let Err(BroadcastStreamRecvError::Lagged(missed)) = e {
                tracing::warn!(
                    client = %remote,
                    missed,
                    buffer = s.bus.capacity(),
                    "an event stream client fell too far behind: disconnecting it"
                );
            }
            futures::future::ready(e.is_ok())
        })
        .filter_map(move |e| {
            // The stream owns its plan registration and its detach notice: both end when the client goes.
            let (_plans, _detach) = (&plans, &detach);
            let keep = e.ok().filter(|e| wanted(&filters, e)).map(|e| match light {
                true => crate::events::light(&e).unwrap_or(e),
                false => e,
            });
            async move { keep }
        });
    let stream = rest.map(|e| Ok(Event::default().event(event_type(&e)).data(e.to_string())));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The gauges behind `/metrics` and `/metrics/prometheus`, with Marathon's metric names.
fn gauges(core: &Core, now: Millis) -> Vec<(&'static str, u64)> {
    use agora_proto::model::TaskState;
    let count = |s: TaskState| core.state.instances.values().filter(|i| i.state == s).count() as u64;
    vec![
        ("marathon.apps.active.gauge", core.state.apps.len() as u64),
        ("marathon.deployments.active.gauge", core.state.deployments.len() as u64),
        ("marathon.instances.running.gauge", count(TaskState::Running)),
        ("marathon.instances.staged.gauge", count(TaskState::Staging) + count(TaskState::Starting)),
        ("marathon.instances.unreachable.gauge", count(TaskState::Unreachable)),
        (
            "marathon.launch-queue.size.gauge",
            core.queue_json(now).iter().filter_map(|q| q["count"].as_u64()).sum::<u64>(),
        ),
    ]
}

async fn metrics(State(s): AppState) -> Response {
    let now = now_millis();
    let core = s.lock();
    let g: serde_json::Map<String, Value> =
        gauges(&core, now).into_iter().map(|(k, v)| (k.to_string(), json!({"value": v}))).collect();
    json_response(
        StatusCode::OK,
        json!({"version": "4.0.0", "gauges": g, "counters": {}, "histograms": {}, "meters": {}, "timers": {}}),
    )
}

async fn metrics_prometheus(State(s): AppState) -> Response {
    let now = now_millis();
    let core = s.lock();
    let out = agora_proto::prometheus::text(gauges(&core, now));
    ([(axum::http::header::CONTENT_TYPE, agora_proto::prometheus::CONTENT_TYPE)], out).into_response()
}

/// `--access-control-allow-origin` as Marathon splits it: comma-separated, trimmed.
pub fn split_origins(flag: &str) -> Vec<String> {
    flag.split(',').map(str::trim).filter(|o| !o.is_empty()).map(String::from).collect()
}

/// Marathon's `CORSFilter`: with allowed origins configured, every answer carries `Access-Control-Allow-Origin`,
/// `Access-Control-Allow-Headers` (the headers the request asked for), `Access-Control-Allow-Methods: GET, HEAD,
/// OPTIONS` and `Access-Control-Max-Age: 86400`. Marathon sets the header once per configured origin, so only one
/// survives; here the request's `Origin` is echoed when it is one of them (`*` allows any), else the first
/// configured one is named, which a browser from elsewhere refuses. A preflight `OPTIONS` is answered 200 here,
/// as Jersey answers `OPTIONS` for every resource.
async fn cors(State(s): AppState, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header;
    let origins = &s.info.access_control_allow_origin;
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    let asked: Vec<String> = req
        .headers()
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    let mut resp = if req.method() == Method::OPTIONS { StatusCode::OK.into_response() } else { next.run(req).await };
    if origins.is_empty() {
        return resp;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        "*".to_string()
    } else {
        origin.filter(|o| origins.contains(o)).unwrap_or_else(|| origins[0].clone())
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&allow) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if allow != "*" {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Ok(v) = HeaderValue::from_str(&asked.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
}

async fn not_found(uri: Uri) -> Response {
    tracing::debug!(%uri, "unknown route");
    message(StatusCode::NOT_FOUND, "URI not found")
}

async fn no_cache(headers: HeaderMap, mut resp: Response) -> Response {
    let _ = headers;
    let h = resp.headers_mut();
    h.insert("Cache-Control", HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    h.insert("Expires", HeaderValue::from_static("0"));
    resp
}

/// The router; serve it with `into_make_service_with_connect_info::<SocketAddr>()` (the event stream reports
/// the client's address).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/v2/info", get(info))
        .route("/metrics", get(metrics))
        .route("/metrics/prometheus", get(metrics_prometheus))
        .route("/v2/leader", get(leader).delete(abdicate))
        .route("/v2/apps", get(list_apps).post(create_app).put(bulk_update).patch(bulk_update))
        .route("/v2/apps/", get(list_apps).post(create_app).put(bulk_update).patch(bulk_update))
        .route("/v2/groups", get(group_get).post(group_create).put(group_update).delete(group_delete))
        .route("/v2/groups/", get(group_get).post(group_create).put(group_update).delete(group_delete))
        .route(
            "/v2/groups/{*id}",
            get(group_get).post(group_create).put(group_update).delete(group_delete).patch(group_patch),
        )
        .route("/v2/apps/{*rest}", get(app_get).put(app_update).patch(app_update).delete(app_delete).post(app_post))
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route("/v2/deployments/{id}", delete(delete_deployment))
        .route("/v2/queue", get(queue))
        .route("/v2/queue/{*rest}", delete(reset_delay))
        .route("/v2/events", get(events))
        .merge(crate::ui::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed_fallback)
        .layer(axum::middleware::map_response(|resp: Response| async move { no_cache(HeaderMap::new(), resp).await }))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), cors))
        .with_state(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks are serialised straight from their records: Marathon's fields, lists where Marathon has lists.
    #[test]
    fn a_task_has_marathons_fields() {
        let mut i = crate::core::Instance {
            task_id: "web.a1".into(),
            instance_id: "web.instance-a1".into(),
            app_id: "/web".into(),
            version: "2026-11-24T10:00:00.000Z".into(),
            state: agora_proto::model::TaskState::Running,
            healthy: None,
            agent_id: "agent-1".into(),
            placement: crate::constraints::Placement { hostname: "h1".into(), attributes: Default::default() },
            host_ports: vec![31000],
            service_ports: vec![10000],
            staged_at: 1_764_000_000_000,
            started_at: None,
            killing: false,
            kill_sent_at: None,
            unreachable_since: None,
            agent_ip: None,
            health: None,
            role: String::new(),
        };
        let t = task_json(&i);
        assert_eq!(
            t,
            json!({"id": "web.a1", "appId": "/web", "host": "h1", "slaveId": "agent-1", "ipAddresses": [],
                   "ports": [31000], "servicePorts": [10000], "state": "TASK_RUNNING",
                   "stagedAt": format_iso(1_764_000_000_000), "version": "2026-11-24T10:00:00.000Z",
                   "localVolumes": [], "role": "*", "healthCheckResults": []})
        );
        i.agent_ip = Some("10.0.0.7".into());
        i.started_at = Some(1_764_000_001_000);
        let t = task_json(&i);
        assert_eq!(t["ipAddresses"], json!([{"ipAddress": "10.0.0.7", "protocol": "IPv4"}]));
        assert_eq!(t["startedAt"], json!(format_iso(1_764_000_001_000)));
    }

    /// Marathon's `LabelSelectorParsersTest` cases: every selector needs its label, escapes, blanks, errors.
    #[test]
    fn label_selectors() {
        let labels = std::collections::BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("x".into(), "1".into()),
            ("a!b".into(), "c d".into()),
        ]);
        let matches = |q: &str| LabelSelectors::parse(q).unwrap().matches(&labels);
        assert!(matches("env"));
        assert!(matches(""));
        assert!(matches("env==prod,x"));
        assert!(matches(" env == prod , x "));
        assert!(!matches("env!=prod"));
        assert!(matches("env!=dev"));
        assert!(matches("env in (dev, prod)"));
        assert!(matches("env in(prod)"));
        assert!(!matches("env notin (dev,prod)"));
        assert!(matches("env notin (dev)"));
        assert!(!matches("missing"));
        // A missing label matches neither `!=` nor `notin` (Marathon: `labels.contains(key) && fn(value)`).
        assert!(!matches("missing!=prod"));
        assert!(!matches("missing notin (prod)"));
        assert!(matches(r"a\!b==c\ d"));
        assert_eq!(
            LabelSelectors::parse("env==dev").unwrap(),
            LabelSelectors(vec![("env".into(), LabelTest::Equals("dev".into()))])
        );
        for bad in ["env==", "env in (a", "env == a b", "a,,b", "env=prod", ",a"] {
            let err = LabelSelectors::parse(bad).unwrap_err();
            assert!(err.starts_with(&format!("Can not parse label selector {bad}. Reason: ")), "{bad}: {err}");
        }
    }

    #[test]
    fn task_status_filter_knows_running_and_staging_only() {
        use agora_proto::model::TaskState;
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(status_filter(&q(&[("status", "running")])), vec![TaskState::Running]);
        assert_eq!(
            status_filter(&q(&[("status[]", "Staging"), ("status[]", "RUNNING")])),
            vec![TaskState::Staging, TaskState::Running]
        );
        // Unknown values select nothing, so every task is listed (Marathon ignores them).
        assert!(status_filter(&q(&[("status", "killing"), ("status", "bogus")])).is_empty());
    }

    #[test]
    fn embeds_resolve_as_marathons_info_embed_resolver() {
        let q = |values: &[&str]| -> Vec<(String, String)> {
            values.iter().map(|v| ("embed".to_string(), v.to_string())).collect()
        };
        let e = embed(&q(&["apps.tasks", "app.lastTaskFailure", "group.apps.taskStats", "readiness", "x.counts"]));
        let want = Embed {
            tasks: true,
            deployments: true,
            last_task_failure: true,
            task_stats: true,
            readiness: true,
            counts: false,
        };
        assert_eq!(e, want, "x.counts has no known prefix: ignored");
        assert_eq!(
            embed(&q(&["apps.failures"])),
            Embed { tasks: true, last_task_failure: true, deployments: true, ..Embed::default() }
        );
        assert_eq!(Embed::LIST.or(embed(&q(&["apps.bogus"]))), Embed::LIST);

        // Groups: nothing given = apps and subgroups, apps bare; given = only what is named.
        assert_eq!(group_embed(&q(&[])), (Embed::default(), GroupEmbed { apps: true, groups: true }));
        let (e, g) = group_embed(&q(&["group.groups", "group.apps", "group.apps.counts", "apps.tasks"]));
        assert_eq!((e, g), (Embed { counts: true, ..Embed::default() }, GroupEmbed { apps: true, groups: true }));
        let (e, g) = group_embed(&q(&["group.apps.tasks"]));
        assert_eq!((e.tasks, g), (true, GroupEmbed { apps: false, groups: false }));
    }

    #[test]
    fn group_apps_paths() {
        assert_eq!(group_apps_path("shop/apps").as_deref(), Some("/shop"));
        assert_eq!(group_apps_path("apps").as_deref(), Some("/"));
        assert_eq!(group_apps_path("shop//apps/").as_deref(), Some("/shop"));
        assert_eq!(group_apps_path("shop/apps/x"), None);
        assert_eq!(group_apps_path("shop/myapps"), None);
    }

    #[test]
    fn app_paths() {
        assert!(matches!(app_path("//prod//web"), AppPath::App(id) if id == "/prod/web"));
        assert!(matches!(app_path("prod/web/restart"), AppPath::Restart(id) if id == "/prod/web"));
        assert!(matches!(app_path("web/tasks"), AppPath::Tasks(id) if id == "/web"));
        assert!(
            matches!(app_path("web/tasks/web.instance-1._app.1"), AppPath::Task(id, t) if id == "/web" && t == "web.instance-1._app.1")
        );
        assert!(matches!(app_path("web/versions"), AppPath::Versions(id) if id == "/web"));
        assert!(matches!(app_path("prod/*"), AppPath::GroupWildcard(g) if g == "/prod"));
        assert!(matches!(app_path("prod/*/tasks"), AppPath::GroupTasks(g) if g == "/prod"));
        assert!(matches!(app_path("*/tasks"), AppPath::GroupTasks(g) if g == "/"));
    }
}
