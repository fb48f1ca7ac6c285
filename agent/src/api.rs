//! `POST /api/v1` on the agent, Mesos's agent operator API: health, flags, version, metrics and logging level; the
//! agent's state (`GET_STATE` = tasks + executors + frameworks, `GET_AGENT`, `GET_CONTAINERS`); and the sandbox files
//! (`LIST_FILES`, `READ_FILE`) through the same confinement as `/files/*` ([`crate::files`]). Calls Agora's agent
//! does not serve (nested and standalone containers, resource providers, image pruning) are `501`.
//!
//! Every task runs under a command executor whose id is the task's (Mesos's command executor), so executors and
//! containers are one per task. The answers are read from the core's checkpoint view (live tasks, with their infos)
//! and its `/state` (tasks already completed), under one lock.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agora_proto::mesos::v1::agent::{call, response};
use agora_proto::mesos::v1::{self, agent};
use agora_proto::mesos::{self as m};
use agora_proto::model::cluster::TaskView;
use agora_proto::model::{AgentInfo, Resources, TaskInfo, VERSION};
use agora_runtime::mesos_api::{self, ApiRequest};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use crate::config::Config;
use crate::core::AgentCore;
use crate::files::{self, FilesError};

/// The agent's figures now (`/metrics/snapshot`'s), as `crate::http` computes them.
pub(crate) type MetricsFn = fn(&Mutex<AgentCore>) -> crate::metrics::Snapshot;

#[derive(Clone)]
struct Api {
    core: Arc<Mutex<AgentCore>>,
    metrics: MetricsFn,
    /// `<work_dir>/slaves`, the root every file call is confined to.
    sandboxes: PathBuf,
    /// The agent as configured (its id comes from the core once registered).
    agent: AgentInfo,
    flags: Arc<Vec<v1::Flag>>,
}

/// The routes of an agent listening on `port` (its real port; `config.port` may be 0).
pub(crate) fn router(core: Arc<Mutex<AgentCore>>, config: &Config, port: u16, metrics: MetricsFn) -> Router {
    let agent = config.agent_info(port);
    let flags = Arc::new(flags(config, port));
    let api = Api { core, metrics, sandboxes: files::sandboxes_root(&config.work_dir), agent, flags };
    Router::new().route("/api/v1", post(handle)).with_state(api)
}

/// The flags as Mesos lists them (names in Mesos's snake case, values as strings).
fn flags(c: &Config, port: u16) -> Vec<v1::Flag> {
    let secs = |d: std::time::Duration| format!("{}secs", d.as_secs_f64());
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let mut out: Vec<(&str, String)> = vec![
        ("master", c.master.clone()),
        ("ip", c.ip.to_string()),
        ("port", port.to_string()),
        ("work_dir", c.work_dir.display().to_string()),
        ("resources", c.resources.to_string()),
        ("attributes", c.attributes.iter().map(|a| format!("{}:{}", a.name, a.value)).collect::<Vec<_>>().join(";")),
        ("hostname", c.hostname.clone()),
        ("isolation", format!("{:?}", c.isolation).to_lowercase()),
        ("status_update_retry_interval", secs(c.status_update_retry_interval)),
        ("registration_backoff_factor", secs(c.registration_backoff_factor)),
        ("executor_shutdown_grace_period", secs(c.executor_shutdown_grace_period)),
        ("container_disk_watch_interval", secs(c.container_disk_watch_interval)),
        ("gc_delay", secs(c.gc.delay)),
        ("gc_disk_headroom", c.gc.disk_headroom.to_string()),
        ("disk_watch_interval", secs(c.gc.disk_watch_interval)),
        ("docker_registry", path(&c.docker_registry)),
        ("fetcher_cache_dir", c.fetcher_cache_dir.display().to_string()),
        ("fetcher_cache_size", c.fetcher_cache_size.to_string()),
        ("fetcher_ca_file", path(&c.fetcher_ca_file)),
        ("strict", c.strict.to_string()),
    ];
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.into_iter().map(|(name, value)| v1::Flag { name: name.to_string(), value: Some(value) }).collect()
}

async fn handle(State(api): State<Api>, req: Request) -> Response {
    let ApiRequest { call, headers, credentials } = match mesos_api::read_call::<agent::Call>(req).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    tracing::trace!(authorization = credentials.authorization.is_some(), "agent operator call");
    if let Err(why) = validate(&call) {
        return mesos_api::text(StatusCode::BAD_REQUEST, format!("Failed to validate agent::Call: {why}"));
    }
    let format = match mesos_api::answer_format(&headers) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    use call::Type as T;
    let answer = |r: agent::Response| mesos_api::message(&r, format);
    let kind = call.r#type();
    match kind {
        T::Unknown => mesos_api::text(StatusCode::NOT_IMPLEMENTED, "Received an 'UNKNOWN' call"),
        T::GetHealth => {
            answer(reply(response::Type::GetHealth, |r| r.get_health = Some(response::GetHealth { healthy: true })))
        }
        T::GetFlags => answer(reply(response::Type::GetFlags, |r| {
            r.get_flags = Some(response::GetFlags { flags: api.flags.to_vec() })
        })),
        T::GetVersion => answer(reply(response::Type::GetVersion, |r| {
            let version_info = v1::VersionInfo { version: VERSION.to_string(), ..Default::default() };
            r.get_version = Some(response::GetVersion { version_info })
        })),
        T::GetLoggingLevel => answer(reply(response::Type::GetLoggingLevel, |r| {
            r.get_logging_level = Some(response::GetLoggingLevel { level: 0 })
        })),
        T::GetMetrics => {
            let snapshot = (api.metrics)(&api.core);
            answer(reply(response::Type::GetMetrics, |r| {
                let metrics = snapshot.into_iter().map(|(name, value)| v1::Metric { name, value: Some(value) });
                r.get_metrics = Some(response::GetMetrics { metrics: metrics.collect() })
            }))
        }
        T::GetAgent => {
            let mut info = api.agent.clone();
            info.id = lock(&api.core).agent_id().map(String::from);
            answer(reply(response::Type::GetAgent, |r| {
                r.get_agent = Some(response::GetAgent { agent_info: Some(v1::AgentInfo::from(&info)) })
            }))
        }
        T::GetState | T::GetTasks | T::GetExecutors | T::GetFrameworks | T::GetContainers => {
            answer(state_response(kind, &AgentView::of(&api.core)))
        }
        T::ListFiles => {
            let path = call.list_files.map(|l| l.path).unwrap_or_default();
            match files::list(&api.sandboxes, &path) {
                Ok(entries) => answer(reply(response::Type::ListFiles, |r| {
                    r.list_files = Some(response::ListFiles { file_infos: entries.iter().map(file_info).collect() })
                })),
                Err(e) => files_error(e),
            }
        }
        T::ReadFile => {
            let read = call.read_file.expect("validated");
            let length = read.length.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
            match files::read_bytes(&api.sandboxes, &read.path, read.offset, length) {
                Ok((size, data)) => {
                    answer(reply(response::Type::ReadFile, |r| r.read_file = Some(response::ReadFile { size, data })))
                }
                Err(e) => files_error(e),
            }
        }
        other => mesos_api::text(
            StatusCode::NOT_IMPLEMENTED,
            format!("The '{}' call is not supported by this agent", other.as_str_name()),
        ),
    }
}

fn lock(core: &Mutex<AgentCore>) -> std::sync::MutexGuard<'_, AgentCore> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Mesos's structural checks: the type, and the payload of the calls that need one.
fn validate(c: &agent::Call) -> Result<(), String> {
    let kind = c.r#type.and_then(|t| call::Type::try_from(t).ok()).map(|t| t.as_str_name());
    mesos_api::check_operator_call(kind, |field| match field {
        "get_metrics" => c.get_metrics.is_some(),
        "list_files" => c.list_files.is_some(),
        _ => c.read_file.is_some(),
    })
}

fn reply(kind: response::Type, fill: impl FnOnce(&mut agent::Response)) -> agent::Response {
    let mut r = agent::Response { r#type: Some(kind as i32), ..Default::default() };
    fill(&mut r);
    r
}

/// Mesos's answers to a refused file call: 400, 403, 404, 500 with the reason.
fn files_error(e: FilesError) -> Response {
    let status = match e {
        FilesError::BadRequest(_) => StatusCode::BAD_REQUEST,
        FilesError::Forbidden(_) => StatusCode::FORBIDDEN,
        FilesError::NotFound(_) => StatusCode::NOT_FOUND,
        FilesError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    mesos_api::text(status, e.to_string())
}

fn file_info(e: &files::FileEntry) -> v1::FileInfo {
    v1::FileInfo {
        path: e.path.clone(),
        nlink: Some(i32::try_from(e.nlink).unwrap_or(i32::MAX)),
        size: Some(e.size),
        mtime: Some(m::time_info(e.mtime)),
        mode: Some(e.mode),
        uid: Some(e.uid.to_string()),
        gid: Some(e.gid.to_string()),
    }
}

/// The agent's tasks as the operator API sorts them.
struct AgentView {
    frameworks: Vec<agora_proto::model::FrameworkInfo>,
    /// Launched (not terminal) and terminated (terminal, update not yet acknowledged) tasks, with their container
    /// ids and whether the container runs.
    live: Vec<(TaskView, String, bool)>,
    /// Tasks whose end was acknowledged (as `/state` lists them: no infos beyond their names and states).
    completed: Vec<TaskView>,
}

impl AgentView {
    fn of(core: &Mutex<AgentCore>) -> AgentView {
        let (checkpoint, state) = {
            let core = lock(core);
            (core.checkpoint(), core.state_json())
        };
        let agent_id = checkpoint.agent_id.clone().unwrap_or_default();
        let live = checkpoint
            .tasks
            .into_iter()
            .map(|t| {
                let view = TaskView { info: t.info, framework_id: t.framework_id, state: t.state, statuses: vec![] };
                (view, t.container_id, t.live)
            })
            .collect();
        AgentView { frameworks: checkpoint.frameworks, live, completed: completed_tasks(&state, &agent_id) }
    }
}

/// The completed tasks of the agent's `/state`.
fn completed_tasks(state: &Value, agent_id: &str) -> Vec<TaskView> {
    let mut out = Vec::new();
    for f in state["frameworks"].as_array().into_iter().flatten() {
        for t in f["completed_tasks"].as_array().into_iter().flatten() {
            let (Some(id), Some(state)) = (t["id"].as_str(), t["state"].as_str().and_then(|s| s.parse().ok())) else {
                continue;
            };
            let info = TaskInfo {
                name: t["name"].as_str().unwrap_or_default().to_string(),
                task_id: id.to_string(),
                agent_id: agent_id.to_string(),
                resources: Resources::new(),
                command: None,
                container: None,
                health_check: None,
                kill_grace_period: None,
                labels: vec![],
                discovery: None,
                data: vec![],
            };
            let framework_id = f["id"].as_str().unwrap_or_default().to_string();
            out.push(TaskView { info, framework_id, state, statuses: vec![] });
        }
    }
    out
}

fn state_response(kind: call::Type, view: &AgentView) -> agent::Response {
    use call::Type as T;
    let task = |t: &TaskView| m::task_to_v1(t, Some(&t.info.task_id));
    let get_tasks = || response::GetTasks {
        launched_tasks: view.live.iter().filter(|(t, ..)| !t.state.is_terminal()).map(|(t, ..)| task(t)).collect(),
        terminated_tasks: view.live.iter().filter(|(t, ..)| t.state.is_terminal()).map(|(t, ..)| task(t)).collect(),
        completed_tasks: view.completed.iter().map(task).collect(),
        ..Default::default()
    };
    let get_executors = || response::GetExecutors {
        executors: view
            .live
            .iter()
            .map(|(t, ..)| response::get_executors::Executor {
                executor_info: m::command_executor_to_v1(&t.framework_id, &t.info),
            })
            .collect(),
        completed_executors: vec![],
    };
    let get_frameworks = || response::GetFrameworks {
        frameworks: view
            .frameworks
            .iter()
            .map(|f| response::get_frameworks::Framework { framework_info: v1::FrameworkInfo::from(f) })
            .collect(),
        completed_frameworks: vec![],
    };
    match kind {
        T::GetTasks => reply(response::Type::GetTasks, |r| r.get_tasks = Some(get_tasks())),
        T::GetExecutors => reply(response::Type::GetExecutors, |r| r.get_executors = Some(get_executors())),
        T::GetFrameworks => reply(response::Type::GetFrameworks, |r| r.get_frameworks = Some(get_frameworks())),
        T::GetContainers => reply(response::Type::GetContainers, |r| {
            let containers = view
                .live
                .iter()
                .filter(|(_, _, running)| *running)
                .map(|(t, container_id, _)| {
                    let executor = m::command_executor_to_v1(&t.framework_id, &t.info);
                    response::get_containers::Container {
                        framework_id: executor.framework_id,
                        executor_id: Some(executor.executor_id),
                        executor_name: executor.name,
                        container_id: v1::ContainerId { value: container_id.clone(), parent: None },
                        container_status: None,
                    }
                })
                .collect();
            r.get_containers = Some(response::GetContainers { containers })
        }),
        _ => reply(response::Type::GetState, |r| {
            r.get_state = Some(response::GetState {
                get_tasks: Some(get_tasks()),
                get_executors: Some(get_executors()),
                get_frameworks: Some(get_frameworks()),
            })
        }),
    }
}
