//! The pure queries behind the web page and the CLI: a summary, paged task lists, agent and framework tables and one
//! task's history, computed from the core's registries. No I/O and no clock (the caller passes [`Now`]); the HTTP
//! handlers in `super` send these to the actor and serve the answers.

use serde::Deserialize;
use serde_json::{Value, json};

use agora_proto::model::{Resources, TaskState};

use crate::core::{AgentState, Master, Now, Task};
use crate::metrics::RESOURCE_NAMES;

/// The most tasks one page may hold.
pub const MAX_LIMIT: usize = 500;
/// Tasks per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 50;

/// `GET /master/tasks` parameters.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TaskQuery {
    #[serde(default)]
    pub offset: usize,
    pub limit: Option<usize>,
    /// `TASK_RUNNING` and the like, or `active` (non-terminal) or `completed` (terminal); empty means all.
    #[serde(default)]
    pub state: String,
    /// A case-insensitive substring of the task's id, name, framework id or name, agent id or hostname.
    #[serde(default)]
    pub search: String,
    #[serde(default)]
    pub framework_id: String,
}

fn res(r: &Resources) -> Value {
    let mut m = serde_json::Map::new();
    for name in RESOURCE_NAMES {
        m.insert(name.to_string(), json!(r.scalar(name).as_f64()));
    }
    Value::Object(m)
}

fn agent_state_name(s: AgentState) -> &'static str {
    match s {
        AgentState::Active => "active",
        AgentState::Disconnected => "disconnected",
        AgentState::Unreachable => "unreachable",
    }
}

/// Whether a task counts as completed (terminal) for the page; unreachable tasks stay with the active ones.
fn completed(t: &Task) -> bool {
    t.state.is_terminal()
}

/// Every task the master holds (active, then the completed ones it keeps), with its framework's name.
fn all_tasks(m: &Master) -> impl Iterator<Item = (&Task, &str)> {
    m.frameworks
        .values()
        .flat_map(|f| f.tasks.values().chain(f.completed_tasks.iter()).map(move |t| (t, f.info.name.as_str())))
        .chain(
            m.completed_frameworks
                .iter()
                .flat_map(|f| f.tasks.values().chain(f.completed_tasks.iter()).map(move |t| (t, f.info.name.as_str()))),
        )
}

fn task_row(m: &Master, t: &Task, framework_name: &str) -> Value {
    let last = t.statuses.last();
    json!({
        "id": t.info.task_id,
        "name": t.info.name,
        "framework_id": t.framework_id,
        "framework_name": framework_name,
        "agent_id": t.info.agent_id,
        "agent_hostname": m.agents.get(&t.info.agent_id).map(|a| a.info.hostname.as_str()).unwrap_or(""),
        "state": t.state.name(),
        "message": last.map(|s| s.message.as_str()).unwrap_or(""),
        "reason": last.and_then(|s| s.reason).map(|r| r.name()),
        "start_time": t.statuses.first().map(|s| s.timestamp),
        "updated_time": last.map(|s| s.timestamp),
        "resources": res(&t.info.resources),
        "role": t.role,
    })
}

fn matches(m: &Master, t: &Task, framework_name: &str, q: &TaskQuery, needle: &str) -> bool {
    let state_ok = match q.state.as_str() {
        "" => true,
        "active" => !completed(t),
        "completed" => completed(t),
        s => t.state.name().eq_ignore_ascii_case(s),
    };
    if !state_ok || (!q.framework_id.is_empty() && t.framework_id != q.framework_id) {
        return false;
    }
    if needle.is_empty() {
        return true;
    }
    let hostname = m.agents.get(&t.info.agent_id).map(|a| a.info.hostname.as_str()).unwrap_or("");
    [t.info.task_id.as_str(), &t.info.name, &t.framework_id, framework_name, &t.info.agent_id, hostname]
        .iter()
        .any(|s| s.to_lowercase().contains(needle))
}

/// Orders `web-2` before `web-10`: runs of digits compare as numbers, the rest as text.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        let (dx, dy) = (
            x.find(|c: char| !c.is_ascii_digit()).unwrap_or(x.len()),
            y.find(|c: char| !c.is_ascii_digit()).unwrap_or(y.len()),
        );
        if dx > 0 && dy > 0 {
            let (nx, ny) = (x[..dx].trim_start_matches('0'), y[..dy].trim_start_matches('0'));
            let ord = nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny));
            if ord.is_ne() {
                return ord;
            }
            (x, y) = (&x[dx..], &y[dy..]);
            continue;
        }
        let (Some(cx), Some(cy)) = (x.chars().next(), y.chars().next()) else { return x.len().cmp(&y.len()) };
        if cx != cy {
            return cx.cmp(&cy);
        }
        (x, y) = (&x[cx.len_utf8()..], &y[cy.len_utf8()..]);
    }
}

/// One page of tasks, newest first (ties in natural order of ids): `{"total", "offset", "limit", "tasks": [...]}`; `total` counts every match.
pub fn tasks(m: &Master, q: &TaskQuery) -> Value {
    let needle = q.search.trim().to_lowercase();
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut hits: Vec<(&Task, &str)> = all_tasks(m).filter(|(t, n)| matches(m, t, n, q, &needle)).collect();
    let start = |t: &Task| t.statuses.first().map(|s| s.timestamp).unwrap_or(0.0);
    hits.sort_by(|(a, _), (b, _)| {
        start(b).total_cmp(&start(a)).then_with(|| natural_cmp(&a.info.task_id, &b.info.task_id))
    });
    let page: Vec<Value> = hits.iter().skip(q.offset).take(limit).map(|(t, n)| task_row(m, t, n)).collect();
    json!({"total": hits.len(), "offset": q.offset, "limit": limit, "tasks": page})
}

/// One task with its status history, or `None` when the master does not know it. `framework_id` narrows the
/// search when task ids repeat across frameworks.
pub fn task(m: &Master, task_id: &str, framework_id: Option<&str>) -> Option<Value> {
    let (t, name) = all_tasks(m)
        .filter(|(t, _)| framework_id.is_none_or(|f| t.framework_id == f))
        .find(|(t, _)| t.info.task_id == task_id)?;
    let mut v = task_row(m, t, name);
    v["statuses"] = t
        .statuses
        .iter()
        .map(|s| {
            json!({
                "state": s.state.name(),
                "timestamp": s.timestamp,
                "message": s.message,
                "reason": s.reason.map(|r| r.name()),
                "source": format!("{:?}", s.source),
            })
        })
        .collect();
    if let Some(c) = &t.info.command {
        v["command"] = json!(c.value);
    }
    if let Some(a) = m.agents.get(&t.info.agent_id) {
        v["agent_url"] = json!(format!("http://{}:{}", a.info.ip, a.info.port));
    }
    Some(v)
}

/// `http://ip:port` of an agent the master knows.
pub fn agent_url(m: &Master, agent_id: &str) -> Option<String> {
    m.agents.get(agent_id).map(|a| format!("http://{}:{}", a.info.ip, a.info.port))
}

/// The agent and framework a task ran under, for finding its sandbox.
pub fn task_location(m: &Master, task_id: &str, framework_id: Option<&str>) -> Option<(String, String)> {
    all_tasks(m)
        .filter(|(t, _)| framework_id.is_none_or(|f| t.framework_id == f))
        .find(|(t, _)| t.info.task_id == task_id)
        .map(|(t, _)| (t.info.agent_id.clone(), t.framework_id.clone()))
}

/// The agents table.
pub fn agents(m: &Master) -> Value {
    let rows: Vec<Value> = m
        .agents
        .values()
        .map(|a| {
            json!({
                "id": a.id,
                "hostname": a.info.hostname,
                "address": format!("{}:{}", a.info.ip, a.info.port),
                "attributes": Value::Object(a.info.attributes.flat_json()),
                "resources": res(&a.info.resources),
                "used": res(&a.used),
                "offered": res(&a.offered),
                "registered_time": a.registered_time,
                "reregistered_time": a.reregistered_time,
                "state": agent_state_name(a.state),
                "tasks": a.tasks.len(),
            })
        })
        .collect();
    json!({"agents": rows})
}

/// The frameworks table (active and inactive, then the completed ones the master keeps).
pub fn frameworks(m: &Master) -> Value {
    let row = |f: &crate::core::Framework, completed: bool| {
        let mut used = Resources::new();
        let mut active_tasks = 0;
        for t in f.tasks.values().filter(|t| !t.state.is_terminal()) {
            active_tasks += 1;
            if !t.resources_released {
                used.add(&t.info.resources);
            }
        }
        let mut offered = Resources::new();
        for o in f.offers.iter().filter_map(|id| m.offers.get(id)) {
            offered.add(&o.offer.resources);
        }
        json!({
            "id": f.id,
            "name": f.info.name,
            "roles": f.info.roles,
            "role": f.info.roles.first().cloned().unwrap_or_else(|| "*".into()),
            "principal": f.info.principal,
            "user": f.info.user,
            "webui_url": f.info.webui_url.clone().unwrap_or_default(),
            "used": res(&used),
            "offered": res(&offered),
            "active_tasks": active_tasks,
            "completed_tasks": f.completed_tasks.len(),
            "registered_time": f.registered_time,
            "state": if completed { "completed" } else if f.active() { "active" } else { "inactive" },
        })
    };
    let mut rows: Vec<Value> = m.frameworks.values().map(|f| row(f, false)).collect();
    rows.extend(m.completed_frameworks.iter().map(|f| row(f, true)));
    json!({"frameworks": rows})
}

/// The overview: leader, version, uptime, resources (total / used / offered / idle), and counts.
pub fn summary(m: &Master, now: Now) -> Value {
    let (mut total, mut used, mut offered) = (Resources::new(), Resources::new(), Resources::new());
    let mut agents = json!({"active": 0, "disconnected": 0, "unreachable": 0});
    for a in m.agents.values() {
        let k = agent_state_name(a.state);
        agents[k] = json!(agents[k].as_u64().unwrap_or(0) + 1);
        if a.state != AgentState::Unreachable {
            total.add(&a.info.resources);
            used.add(&a.used);
            offered.add(&a.offered);
        }
    }
    let mut resources = serde_json::Map::new();
    for name in RESOURCE_NAMES {
        let (t, u, o) = (total.scalar(name).as_f64(), used.scalar(name).as_f64(), offered.scalar(name).as_f64());
        resources.insert(name.into(), json!({"total": t, "used": u, "offered": o, "idle": (t - u - o).max(0.0)}));
    }
    let mut by_state = serde_json::Map::new();
    for st in TaskState::ALL {
        by_state.insert(st.name().into(), json!(0));
    }
    let (mut active, mut done) = (0u64, 0u64);
    for (t, _) in all_tasks(m) {
        if completed(t) {
            done += 1;
        } else {
            active += 1;
        }
        let slot = by_state.entry(t.state.name()).or_insert(json!(0));
        *slot = json!(slot.as_u64().unwrap_or(0) + 1);
    }
    let active_frameworks = m.frameworks.values().filter(|f| f.active()).count();
    json!({
        "id": m.info.id,
        "leader": format!("{}:{}", m.info.hostname, m.info.port),
        "leader_address": format!("{}:{}", m.info.ip, m.info.port),
        "hostname": m.info.hostname,
        "version": m.info.version,
        "start_time": m.start_time,
        "uptime_secs": (now.wall - m.start_time).max(0.0),
        "resources": resources,
        "agents": agents,
        "frameworks": {
            "active": active_frameworks,
            "inactive": m.frameworks.len() - active_frameworks,
            "completed": m.completed_frameworks.len(),
        },
        "tasks": {"active": active, "completed": done, "by_state": by_state},
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use agora_proto::model::{
        AgentInfo, Attributes, CommandInfo, FrameworkInfo, MasterInfo, Source, TaskInfo, TaskState, TaskStatus,
    };

    use super::*;
    use crate::core::{AgentCommand, AgentMessage, Call, ConnId, CoreConfig, Effect, LaunchOp, SchedulerEvent};

    const TASKS: usize = 10_000;
    const FINISHED: usize = 3_000;

    /// A master with one agent and one framework running [`TASKS`] tasks, the first [`FINISHED`] of them finished,
    /// driven through the core's public inputs.
    fn busy_master() -> (Master, Now, String, String) {
        let mut now = Now { mono: Instant::now(), wall: 1_700_000_000.0 };
        let info = MasterInfo {
            id: "m".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            hostname: "master1".into(),
            version: "test".into(),
        };
        let config = CoreConfig { max_completed_tasks_per_framework: TASKS, ..CoreConfig::default() };
        let mut m = Master::new(info, config, now);
        let agent = AgentInfo {
            id: None,
            hostname: "node1".into(),
            ip: "127.0.0.1".into(),
            port: 5051,
            resources: "cpus:20000;mem:20000;disk:100".parse().unwrap(),
            attributes: Attributes::default(),
        };
        m.agent_message(ConnId(1), AgentMessage::Register { info: agent, network: None }, now);
        m.subscribe(ConnId(2), FrameworkInfo::new("big"), vec![], now);
        m.allocate_if_wanted(now);
        let effects = m.drain_effects();
        let agent_id = effects
            .iter()
            .find_map(|e| match e {
                Effect::ToAgent(_, AgentCommand::Registered { agent_id, .. }) => Some(agent_id.clone()),
                _ => None,
            })
            .expect("agent registered");
        let (framework_id, stream_id) = effects
            .iter()
            .find_map(|e| match e {
                Effect::ToFramework(_, SchedulerEvent::Subscribed { framework_id, stream_id, .. }) => {
                    Some((framework_id.clone(), stream_id.clone()))
                }
                _ => None,
            })
            .expect("subscribed");
        let offer = effects
            .iter()
            .find_map(|e| match e {
                Effect::ToFramework(_, SchedulerEvent::Offers(o)) => o.first().cloned(),
                _ => None,
            })
            .expect("an offer");
        let tasks: Vec<TaskInfo> = (0..TASKS)
            .map(|i| TaskInfo {
                name: if i % 2 == 0 { "web".into() } else { "batch".into() },
                task_id: format!("t{i:05}"),
                agent_id: agent_id.clone(),
                resources: "cpus:1;mem:1".parse().unwrap(),
                command: Some(CommandInfo::shell("true")),
                container: None,
                health_check: None,
                kill_grace_period: None,
                labels: vec![],
                discovery: None,
                data: vec![],
            })
            .collect();
        let accept =
            Call::Accept { offer_ids: vec![offer.id], operations: vec![LaunchOp { tasks }], refuse_seconds: None };
        m.call(&framework_id, &stream_id, accept, now).expect("launch accepted");
        for i in 0..TASKS {
            now.wall += 0.001;
            let state = if i < FINISHED { TaskState::Finished } else { TaskState::Running };
            let status = TaskStatus {
                task_id: format!("t{i:05}"),
                state,
                reason: None,
                source: Source::Executor,
                message: if i < FINISHED { "Command exited with status 0".into() } else { String::new() },
                uuid: Some(vec![(i % 251) as u8; 16]),
                timestamp: now.wall,
                healthy: None,
                agent_id: agent_id.clone(),
                unreachable_time: None,
                container_status: None,
            };
            let msg = AgentMessage::StatusUpdate { framework_id: framework_id.clone(), status, latest_state: state };
            m.agent_message(ConnId(1), msg, now);
        }
        m.drain_effects();
        (m, now, agent_id, framework_id)
    }

    fn q(state: &str, search: &str, offset: usize, limit: Option<usize>) -> TaskQuery {
        TaskQuery { offset, limit, state: state.into(), search: search.into(), framework_id: String::new() }
    }

    fn ids(page: &Value) -> Vec<&str> {
        page["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn ids_sort_naturally() {
        let mut ids = vec!["web-10", "web-2", "web-1", "a", "web-02x", "web-", "b1", "web-2a"];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(ids, ["a", "b1", "web-", "web-1", "web-2", "web-2a", "web-02x", "web-10"]);
    }

    #[test]
    fn task_pages_stay_small_at_ten_thousand_tasks() {
        let (m, now, agent_id, framework_id) = busy_master();
        let page = tasks(&m, &q("", "", 0, None));
        assert_eq!(page["total"], TASKS);
        assert_eq!(ids(&page).len(), DEFAULT_LIMIT);
        let active = tasks(&m, &q("active", "", 0, Some(10)));
        assert_eq!(active["total"], TASKS - FINISHED);
        assert!(active["tasks"].as_array().unwrap().iter().all(|t| t["state"] == "TASK_RUNNING"));
        let done = tasks(&m, &q("completed", "", 0, Some(1_000_000)));
        assert_eq!(done["total"], FINISHED);
        assert_eq!(done["limit"], MAX_LIMIT);
        assert_eq!(ids(&done).len(), MAX_LIMIT);
        let finished = tasks(&m, &q("task_finished", "", 0, Some(1)));
        assert_eq!(finished["total"], FINISHED);
        assert_eq!(finished["tasks"][0]["message"], "Command exited with status 0");
        assert_eq!(finished["tasks"][0]["agent_hostname"], "node1");
        assert_eq!(finished["tasks"][0]["framework_name"], "big");

        // Pages tile the list without overlap.
        let first = tasks(&m, &q("active", "", 0, Some(100)));
        let second = tasks(&m, &q("active", "", 100, Some(100)));
        let (a, b) = (ids(&first), ids(&second));
        assert!(a.iter().all(|id| !b.contains(id)));
        let past = tasks(&m, &q("", "", TASKS + 5, None));
        assert_eq!((past["total"].as_u64(), ids(&past).len()), (Some(TASKS as u64), 0));

        // Search is a case-insensitive substring of ids, names, framework and agent.
        assert_eq!(tasks(&m, &q("", "T0999", 0, None))["total"], 10);
        assert_eq!(tasks(&m, &q("", "BATCH", 0, None))["total"], TASKS / 2);
        assert_eq!(tasks(&m, &q("", "node1", 0, None))["total"], TASKS);
        assert_eq!(tasks(&m, &q("", "no-such-thing", 0, None))["total"], 0);
        let mut by_fw = q("", "", 0, None);
        by_fw.framework_id = "other".into();
        assert_eq!(tasks(&m, &by_fw)["total"], 0);
        by_fw.framework_id = framework_id.clone();
        assert_eq!(tasks(&m, &by_fw)["total"], TASKS);

        // One task with its history.
        let t = task(&m, "t00000", None).expect("t00000");
        let states: Vec<&str> =
            t["statuses"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
        assert_eq!(states.last(), Some(&"TASK_FINISHED"));
        assert!(task(&m, "nope", None).is_none());
        assert_eq!(task_location(&m, "t09999", Some(&framework_id)), Some((agent_id.clone(), framework_id.clone())));
        assert_eq!(agent_url(&m, &agent_id).as_deref(), Some("http://127.0.0.1:5051"));

        // The summary, the tables and the metrics agree.
        let s = summary(&m, now);
        assert_eq!(s["tasks"]["by_state"]["TASK_RUNNING"], TASKS - FINISHED);
        assert_eq!(s["tasks"]["by_state"]["TASK_FINISHED"], FINISHED);
        assert_eq!(s["tasks"]["completed"], FINISHED);
        assert_eq!(s["resources"]["cpus"]["used"], (TASKS - FINISHED) as f64);
        assert_eq!(s["resources"]["cpus"]["total"], 20000.0);
        assert_eq!(s["agents"]["active"], 1);
        let f = frameworks(&m);
        assert_eq!(f["frameworks"][0]["active_tasks"], TASKS - FINISHED);
        assert_eq!(f["frameworks"][0]["used"]["cpus"], (TASKS - FINISHED) as f64);
        let a = agents(&m);
        assert_eq!(a["agents"][0]["state"], "active");
        assert_eq!(a["agents"][0]["used"]["cpus"], (TASKS - FINISHED) as f64);
        let metrics = crate::metrics::snapshot(&m, now);
        assert_eq!(metrics["master/tasks_running"], (TASKS - FINISHED) as f64);
        assert_eq!(metrics["master/tasks_finished"], FINISHED as f64);
        assert_eq!(metrics["master/cpus_used"], (TASKS - FINISHED) as f64);
        assert_eq!(metrics["master/slaves_active"], 1.0);
        assert_eq!(metrics["master/frameworks_active"], 1.0);
    }
}
