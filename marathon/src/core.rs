//! The core state machine: apps and their versions, instances, deployments, the launch queue and backoff. The
//! REST API and the scheduler drive it; it never reads a clock (every call takes `now`) and never talks to the
//! master — it returns what to launch, kill and say, and records events for the event stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agora_proto::model::{Offer, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::{AppDefinition, Invalid, UnreachableStrategy, VersionInfo, parse_app};
use crate::constraints::Placement;
use crate::deploy::{self, Member, Step};
use crate::groups::{GroupMeta, GroupVersion};
use crate::health::HealthRecord;
use crate::pathid;
use crate::planner::{self, Launch, OfferStats, Reason, Request};
use crate::time::{Millis, format_iso, parse_iso};

/// Versions kept per app (Marathon's `--zk_max_versions`).
pub const MAX_VERSIONS: usize = 50;
/// Service ports are allocated from `[LOCAL_PORT_MIN, LOCAL_PORT_MAX)`.
/// Marathon's `--max_running_deployments` default: a change that would start one more is refused with 403.
pub const MAX_RUNNING_DEPLOYMENTS: usize = 100;
pub const LOCAL_PORT_MIN: u32 = 10_000;
pub const LOCAL_PORT_MAX: u32 = 20_000;
/// An instance that is not RUNNING this long after it was staged is killed (Marathon's `--task_launch_timeout`).
pub const TASK_LAUNCH_TIMEOUT_MS: Millis = 300_000;
/// A kill without a terminal update is sent again after this long.
pub const KILL_RETRY_MS: Millis = 10_000;

/// One instance of an app: one Mesos task (an instance is replaced by a new instance, not relaunched).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub task_id: String,
    pub instance_id: String,
    pub app_id: String,
    /// The app version it was launched with.
    pub version: String,
    pub state: TaskState,
    pub healthy: Option<bool>,
    pub agent_id: String,
    pub placement: Placement,
    pub host_ports: Vec<u32>,
    pub service_ports: Vec<u32>,
    pub staged_at: Millis,
    pub started_at: Option<Millis>,
    /// A kill was sent.
    pub killing: bool,
    /// When the kill was last sent (not persisted: a restarted Marathon sends it again).
    #[serde(skip)]
    pub kill_sent_at: Option<Millis>,
    pub unreachable_since: Option<Millis>,
    /// The agent's IP (from its offer), which readiness probes address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ip: Option<String>,
    /// The agent's health check results (apps with health checks), for `healthCheckResults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthRecord>,
    /// The role it was launched in (its app's); empty in records from before roles, which ran in `*`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
}

impl Instance {
    fn rank(&self) -> u8 {
        match self.state {
            TaskState::Unreachable => 0,
            TaskState::Staging => 1,
            TaskState::Starting => 2,
            _ => 3,
        }
    }

    /// Counted as one of the app's instances: not given up on as unreachable-inactive.
    fn active(&self, app: Option<&AppDefinition>, now: Millis) -> bool {
        match (self.unreachable_since, app.map(|a| a.unreachable_strategy)) {
            (Some(since), Some(UnreachableStrategy::Enabled { inactive_after_seconds, .. })) => {
                now < since + inactive_after_seconds * 1000
            }
            _ => true,
        }
    }
}

/// The last failed task of an app (`lastTaskFailure`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    pub app_id: String,
    pub host: String,
    pub message: String,
    pub state: String,
    pub task_id: String,
    pub timestamp: String,
    pub version: String,
    pub slave_id: String,
}

/// A running deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub affected_apps: Vec<String>,
    pub steps: Vec<Step>,
    /// The affected apps as they were before (`None`: did not exist), for rollback.
    pub original: BTreeMap<String, Option<AppDefinition>>,
    /// Steps already reported done (`deployment_step_success`).
    #[serde(default)]
    pub reported_steps: usize,
}

/// Marathon's instance condition for a Mesos task state.
pub fn condition(state: TaskState) -> &'static str {
    match state {
        TaskState::Staging => "Staging",
        TaskState::Starting => "Starting",
        TaskState::Running => "Running",
        TaskState::Killing => "Killing",
        TaskState::Finished => "Finished",
        TaskState::Failed => "Failed",
        TaskState::Killed => "Killed",
        TaskState::Error => "Error",
        TaskState::Lost | TaskState::Unreachable => "Unreachable",
        TaskState::Dropped => "Dropped",
        TaskState::Gone | TaskState::GoneByOperator => "Gone",
        TaskState::Unknown => "Unknown",
    }
}

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub framework_id: Option<String>,
    pub apps: BTreeMap<String, AppDefinition>,
    pub versions: BTreeMap<String, BTreeMap<String, AppDefinition>>,
    pub instances: BTreeMap<String, Instance>,
    pub deployments: BTreeMap<String, Deployment>,
    pub failures: BTreeMap<String, TaskFailure>,
    /// Groups created through `/v2/groups` (groups implied by app ids need no record).
    #[serde(default)]
    pub groups: BTreeMap<String, GroupMeta>,
    /// Group versions by the group written and its version, for `/v2/groups/{id}/versions` and rollback.
    #[serde(default)]
    pub group_versions: BTreeMap<String, BTreeMap<String, GroupVersion>>,
    /// Instances to relaunch, by app: (instance id, incarnation of its last task). As in Marathon since 1.8, an
    /// instance whose task failed or was killed without `wipe` keeps its id and relaunches as its next incarnation
    /// (`<instance id>._app.<n + 1>`); one killed with `wipe`, by a scale-down or by a deployment is replaced by a
    /// new instance. Persisted with the app, so a restarted Marathon relaunches the same instances.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub relaunch: BTreeMap<String, Vec<(String, u32)>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Backoff {
    delay_secs: f64,
    until: Millis,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct QueueStats {
    since: Millis,
    stats: OfferStats,
    last_used: Option<Millis>,
    last_unused: Option<Millis>,
    /// The last offer of each agent the app could not use, by agent id, as Marathon keeps them (so at most one
    /// per agent); forgotten with the queue entry once the app waits for nothing.
    unused_offers: BTreeMap<String, UnusedOffer>,
}

/// An offer an app could not use, when, and why (`lastUnusedOffers`).
#[derive(Clone, Debug, PartialEq)]
struct UnusedOffer {
    offer: std::sync::Arc<Offer>,
    reason: Reason,
    at: Millis,
}

/// Marathon's reject funnel: each reason with the offers it declined and the offers still in play when it was
/// checked (`processed`), reasons in the order Marathon checks them.
fn reject_funnel(processed: u64, declined: impl Fn(Reason) -> u64) -> Vec<Value> {
    let mut processed = processed;
    Reason::ALL
        .iter()
        .map(|r| {
            let declined = declined(*r);
            let v = json!({"reason": format!("{r:?}"), "declined": declined, "processed": processed});
            processed = processed.saturating_sub(declined);
            v
        })
        .collect()
}

/// An offer as Marathon's queue shows it: id, agent, hostname, resources and attributes.
fn offer_json(o: &Offer) -> Value {
    use agora_proto::model::{AttrValue, Value as R};
    let ranges = |r: &agora_proto::model::Ranges| -> Value {
        json!(r.iter().map(|(b, e)| json!({"begin": b, "end": e})).collect::<Vec<_>>())
    };
    let resources: Vec<Value> = o
        .resources
        .iter()
        .map(|r| {
            let mut v = json!({"name": r.name, "role": r.role});
            match &r.value {
                R::Scalar(x) => v["scalar"] = crate::app::marathon_number_value(x.as_f64()),
                R::Ranges(x) => v["ranges"] = ranges(x),
                R::Set(x) => v["set"] = json!(x),
            }
            v
        })
        .collect();
    let attributes: Vec<Value> = o
        .attributes
        .iter()
        .map(|a| {
            let mut v = json!({"name": a.name});
            match &a.value {
                AttrValue::Scalar(x) => v["scalar"] = crate::app::marathon_number_value(x.as_f64()),
                AttrValue::Ranges(x) => v["ranges"] = ranges(x),
                AttrValue::Set(x) => v["set"] = json!(x),
                AttrValue::Text(x) => v["text"] = json!(x),
            }
            v
        })
        .collect();
    json!({"id": o.id, "agentId": o.agent_id, "hostname": o.hostname, "resources": resources, "attributes": attributes})
}

/// API errors, mapped to Marathon's status codes and bodies by the API layer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("App is locked by one or more deployments: {0:?}")]
    Locked(Vec<String>),
    #[error("{0}")]
    BadRequest(String),
    #[error("Max number ({0}) of running deployments is achieved")]
    TooManyDeployments(usize),
}

/// `{"deploymentId", "version"}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResult {
    pub deployment_id: String,
    pub version: String,
}

/// What the shell must do after a change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Actions {
    /// (task id, agent id)
    pub kills: Vec<(String, String)>,
    /// Launches still wanted (placed or not): > 0 means offers are needed.
    pub wanted: u32,
}

/// The whole state.
#[derive(Debug, Default)]
pub struct Core {
    pub state: Persisted,
    /// At most this many deployments run at once (`None`: [`MAX_RUNNING_DEPLOYMENTS`]).
    pub max_running_deployments: Option<usize>,
    /// The role Marathon subscribes in (`--mesos-role`; `None`: `*`), every new app's role.
    pub mesos_role: Option<String>,
    backoff: BTreeMap<String, Backoff>,
    queue: BTreeMap<String, QueueStats>,
    events: Vec<Value>,
    pub dirty: bool,
    /// Deployment events carry the `original` and `target` root groups in their plans (building them costs a walk
    /// of every app, so the shell sets this only while an event stream wants them).
    pub plan_groups: bool,
    /// Readiness of new instances during deployments, by task id (not persisted, as in Marathon).
    pub(crate) readiness: BTreeMap<String, crate::readiness::Readiness>,
    /// The incremental part: what changed since the decisions and the deployment progress were last worked out.
    /// Every event touches only the apps it concerns, so a settle costs O(touched), not O(apps + deployments).
    touched: Touched,
    /// The records changed since the last save, for [`crate::store::StateStore::save_changes`].
    changes: crate::store::Changes,
    /// Which core this is (unique per process) and, per instance, at which change its record is: what is derived
    /// from an instance (`api::RenderedTasks`) stays valid while [`Core::instance_revision`] is the same. Every
    /// change of an instance record is marked by `instance_changed` (the store relies on it too).
    generation: u64,
    revisions: HashMap<String, u64>,
    /// Per app, the change of its last changed instance (added, changed or removed): what is derived from an app's
    /// instances stays valid while [`Core::app_revision`] is the same. Stamped by `instance_changed` too.
    app_revisions: HashMap<String, u64>,
    next_revision: u64,
}

/// The incarnation of a task (`<instance id>._app.<n>`; 1 for an id without one).
fn incarnation(task_id: &str) -> u32 {
    task_id.rsplit_once("._app.").and_then(|(_, n)| n.parse().ok()).unwrap_or(1)
}

/// The bookkeeping that makes the core incremental (none of it is persisted: [`Core::new`] starts with every app
/// touched). An app is *touched* when anything its decision or its deployments' progress depends on changed: its
/// definition or versions, its instances (state, health, kill marks), its readiness results, its deployments, or
/// the clock crossing one of its instances' `inactiveAfterSeconds`.
#[derive(Debug, Default)]
struct Touched {
    /// Apps whose deployments may have progressed (emptied by [`Core::finish_deployments`]).
    progress: BTreeSet<String>,
    /// Apps whose decision may have changed (emptied by [`Core::refresh_decisions`]).
    decision: BTreeSet<String>,
    /// The last decision of every app (its kills already marked on the instances).
    decisions: HashMap<String, deploy::Decision>,
    /// Deployment ids by every app they affect or act on.
    deployments: HashMap<String, BTreeSet<String>>,
    /// `now` of the last refresh: the clock thresholds crossed since then touch their apps.
    last_refresh: Millis,
}

/// What every task id of the app's instances starts with.
pub fn instance_prefix(app_id: &str) -> String {
    format!("{}.instance-", pathid::task_prefix(app_id))
}

fn event(kind: &str, now: Millis, mut body: Value) -> Value {
    if let Value::Object(m) = &mut body {
        m.insert("eventType".into(), json!(kind));
        m.insert("timestamp".into(), json!(format_iso(now)));
    }
    body
}

/// Gives `app` the version `version`; its `lastConfigChangeAt` moves only if the configuration changed.
pub(crate) fn set_version(app: &mut AppDefinition, previous: Option<&AppDefinition>, version: String) {
    app.version = version;
    let config_changed = previous.is_none_or(|p| p.needs_restart(app));
    app.version_info = VersionInfo {
        last_scaling_at: app.version.clone(),
        last_config_change_at: match previous {
            Some(p) if !config_changed => p.version_info.last_config_change_at.clone(),
            _ => app.version.clone(),
        },
    };
}

impl Core {
    pub fn new(state: Persisted) -> Core {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut core = Core { state, dirty: false, generation, ..Core::default() };
        let ids: Vec<String> = core.state.deployments.keys().cloned().collect();
        for id in ids {
            core.index_deployment(&id);
        }
        let apps: Vec<String> = core.state.apps.keys().cloned().collect();
        for id in apps {
            core.touch(&id);
        }
        core
    }

    /// The records changed since the last call, to be saved.
    pub fn take_changes(&mut self) -> crate::store::Changes {
        std::mem::take(&mut self.changes)
    }

    /// Gives back changes a failed save did not write, so the next save writes them.
    pub fn restore_changes(&mut self, changes: crate::store::Changes) {
        self.changes.merge(changes);
    }

    pub(crate) fn changes_mut(&mut self) -> &mut crate::store::Changes {
        &mut self.changes
    }

    /// Replaces the group records, marking every one that was or is there.
    pub(crate) fn set_groups(&mut self, groups: BTreeMap<String, GroupMeta>) {
        self.changes.groups.extend(self.state.groups.keys().chain(groups.keys()).cloned());
        self.state.groups = groups;
    }

    /// An instance record changed (or went): touches its app and marks the record for the next save.
    fn instance_changed(&mut self, task_id: &str, app_id: &str) {
        self.touch(app_id);
        self.changes.instances.insert(task_id.to_string());
        self.next_revision += 1;
        self.revisions.insert(task_id.to_string(), self.next_revision);
        if self.revisions.len() > 2 * self.state.instances.len() + 1024 {
            let instances = &self.state.instances;
            self.revisions.retain(|task_id, _| instances.contains_key(task_id));
        }
        match self.app_revisions.get_mut(app_id) {
            Some(r) => *r = self.next_revision,
            None => {
                self.app_revisions.insert(app_id.to_string(), self.next_revision);
                if self.app_revisions.len() > 2 * self.state.apps.len() + 1024 {
                    let apps = &self.state.apps;
                    self.app_revisions.retain(|app_id, _| apps.contains_key(app_id));
                }
            }
        }
    }

    /// Where the record of instance `task_id` is: the same pair means the same record (see `revisions`).
    pub fn instance_revision(&self, task_id: &str) -> (u64, u64) {
        (self.generation, self.revisions.get(task_id).copied().unwrap_or(0))
    }

    /// Where the instances of `app_id` are: the same pair means the same instances with the same records (see
    /// `app_revisions`).
    pub fn app_revision(&self, app_id: &str) -> (u64, u64) {
        (self.generation, self.app_revisions.get(app_id).copied().unwrap_or(0))
    }

    /// Marks `app_id` for a new decision and a progress check of its deployments.
    pub(crate) fn touch(&mut self, app_id: &str) {
        if !self.touched.decision.contains(app_id) {
            self.touched.decision.insert(app_id.to_string());
        }
        if !self.touched.progress.contains(app_id) {
            self.touched.progress.insert(app_id.to_string());
        }
    }

    /// The apps a deployment affects or acts on.
    fn deployment_apps(d: &Deployment) -> BTreeSet<String> {
        d.affected_apps.iter().chain(d.steps.iter().flat_map(|s| &s.actions).map(|a| &a.app)).cloned().collect()
    }

    /// Adds the deployment `id` (already in the state) to the index, touching its apps.
    fn index_deployment(&mut self, id: &str) {
        let Some(d) = self.state.deployments.get(id) else { return };
        for app in Self::deployment_apps(d) {
            self.touch(&app);
            self.touched.deployments.entry(app).or_default().insert(id.to_string());
        }
    }

    /// Starts a deployment: into the state and the index.
    fn insert_deployment(&mut self, d: Deployment) {
        let id = d.id.clone();
        self.changes.deployments.insert(id.clone());
        self.state.deployments.insert(id.clone(), d);
        self.index_deployment(&id);
    }

    /// Ends a deployment (finished or cancelled): out of the state and the index, its apps touched.
    fn remove_deployment(&mut self, id: &str) -> Option<Deployment> {
        let d = self.state.deployments.remove(id)?;
        self.changes.deployments.insert(id.to_string());
        for app in Self::deployment_apps(&d) {
            self.touch(&app);
            if let Some(ids) = self.touched.deployments.get_mut(&app) {
                ids.remove(id);
                if ids.is_empty() {
                    self.touched.deployments.remove(&app);
                }
            }
        }
        Some(d)
    }

    /// The deployments that affect or act on `app_id`, from the index.
    fn deployments_for(&self, app_id: &str) -> Vec<&Deployment> {
        self.touched
            .deployments
            .get(app_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.state.deployments.get(id))
            .collect()
    }

    /// Events recorded since the last call, oldest first.
    pub fn drain_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    fn emit(&mut self, kind: &str, now: Millis, body: Value) {
        self.events.push(event(kind, now, body));
    }

    /// The shell knows who asked: fills `clientIp` and `uri` of the `api_post_event`s recorded since the last
    /// [`Core::drain_events`] (the core itself never sees the request).
    pub fn stamp_api_events(&mut self, client_ip: &str, uri: &str) {
        for e in self.events.iter_mut().filter(|e| e["eventType"] == "api_post_event") {
            e["clientIp"] = json!(client_ip);
            e["uri"] = json!(uri);
        }
    }

    // ---- queries -------------------------------------------------------------------------------------------

    pub fn app(&self, id: &str) -> Result<&AppDefinition, ApiError> {
        self.state.apps.get(id).ok_or_else(|| ApiError::NotFound(format!("App '{id}' does not exist")))
    }

    /// The instances of one app. Task ids start with the app's instance prefix (`prod_web.instance-<uuid>._app.1`,
    /// Marathon's format, checked where instances are created in [`Core::match_offers`]), so this is a range of
    /// the task-id-ordered map, not a scan of every instance: loops over all apps stay O(instances), not
    /// O(apps × instances). The `app_id` check keeps out apps whose prefix extends this one's.
    pub fn instances_of<'a>(&'a self, app_id: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        let start = instance_prefix(app_id);
        self.state
            .instances
            .range(start.clone()..)
            .take_while(move |(task_id, _)| task_id.starts_with(&start))
            .map(|(_, i)| i)
            .filter(move |i| i.app_id == app_id)
    }

    /// The deployments that affect `app_id`, by id.
    pub fn deployments_of(&self, app_id: &str) -> Vec<String> {
        self.deployments_for(app_id)
            .into_iter()
            .filter(|d| d.affected_apps.iter().any(|a| a == app_id))
            .map(|d| d.id.clone())
            .collect()
    }

    /// Whether a deployment affects `app_id` ([`Core::deployments_of`] is not empty).
    pub(crate) fn deploying(&self, app_id: &str) -> bool {
        self.deployments_for(app_id).iter().any(|d| d.affected_apps.iter().any(|a| a == app_id))
    }

    pub fn last_failure(&self, app_id: &str) -> Option<&TaskFailure> {
        self.state.failures.get(app_id)
    }

    /// `/v2/deployments` entries.
    pub fn deployments_json(&self, now: Millis) -> Vec<Value> {
        self.state.deployments.values().map(|d| self.deployment_json(d, now)).collect()
    }

    fn step_done(&self, step: &Step, now: Millis) -> bool {
        step.actions.iter().all(|a| match a.action.as_str() {
            "StartApplication" => true,
            "StopApplication" => self.instances_of(&a.app).next().is_none(),
            _ => self.app_converged(&a.app, a.action == "RestartApplication", now),
        })
    }

    fn current_step(&self, d: &Deployment, now: Millis) -> usize {
        let done = d.steps.iter().take_while(|s| self.step_done(s, now)).count();
        (done + 1).min(d.steps.len())
    }

    fn deployment_json(&self, d: &Deployment, now: Millis) -> Value {
        let current = self.current_step(d, now);
        let actions: Vec<Value> = d
            .steps
            .get(current.saturating_sub(1))
            .map(|s| {
                s.actions
                    .iter()
                    .map(|a| {
                        json!({"action": a.action, "app": a.app,
                               "readinessCheckResults": self.readiness_results(&a.app)})
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "id": d.id, "version": d.version, "affectedApps": d.affected_apps, "affectedPods": [],
            "steps": d.steps, "currentActions": actions, "currentStep": current, "totalSteps": d.steps.len(),
        })
    }

    /// A deployment plan in events: `id`, `steps`, `version`, and, while [`Core::plan_groups`] is set, the root
    /// group before (`original`) and after (`target`) the deployment, as Marathon's (heavy) events carry them.
    /// `target` is the tree as it is, `original` the same with the deployment's apps as they were before it.
    fn plan_json(&self, d: &Deployment) -> Value {
        let mut plan = json!({"id": d.id, "steps": d.steps, "version": d.version});
        if self.plan_groups {
            let target = crate::groups::Tree { apps: self.state.apps.clone(), groups: self.state.groups.clone() };
            let mut original = target.clone();
            for (id, app) in &d.original {
                match app {
                    Some(a) => original.apps.insert(id.clone(), a.clone()),
                    None => original.apps.remove(id),
                };
            }
            plan["original"] = crate::groups::tree_json(&original, "/");
            plan["target"] = crate::groups::tree_json(&target, "/");
        }
        plan
    }

    /// `/v2/queue` entries: apps waiting for launches, with their delay and offer statistics.
    pub fn queue_json(&self, now: Millis) -> Vec<Value> {
        let mut out = Vec::new();
        for (id, app) in &self.state.apps {
            let d = self.decision(app, now);
            if d.launch == 0 {
                continue;
            }
            let q = self.queue.get(id).cloned().unwrap_or(QueueStats { since: now, ..QueueStats::default() });
            let b = self.backoff.get(id).cloned().unwrap_or_default();
            let left = b.until.saturating_sub(now);
            // Over every offer processed since the app started waiting, and over the last unused offer of each
            // agent, as Marathon sums them.
            let attempts = reject_funnel(q.stats.processed, |r| q.stats.declined.get(&r).copied().unwrap_or(0));
            let last = reject_funnel(q.unused_offers.len() as u64, |r| {
                q.unused_offers.values().filter(|u| u.reason == r).count() as u64
            });
            let mut summary = json!({
                "processedOffersCount": q.stats.processed,
                "unusedOffersCount": q.stats.processed.saturating_sub(q.stats.used),
                "rejectSummaryLastOffers": last,
                "rejectSummaryLaunchAttempt": attempts,
            });
            if let Some(t) = q.last_unused {
                summary["lastUnusedOfferAt"] = json!(format_iso(t));
            }
            if let Some(t) = q.last_used {
                summary["lastUsedOfferAt"] = json!(format_iso(t));
            }
            out.push(json!({
                "count": d.launch,
                "delay": {"timeLeftSeconds": left.div_ceil(1000), "overdue": left == 0},
                "since": format_iso(q.since),
                "processedOffersSummary": summary,
                "app": app,
            }));
        }
        out
    }

    /// `lastUnusedOffers` of an app in `/v2/queue` (`embed=lastUnusedOffers`): the last offer of each agent it
    /// could not use, newest first, with the reason.
    pub fn last_unused_offers_json(&self, app_id: &str) -> Vec<Value> {
        let Some(q) = self.queue.get(app_id) else { return Vec::new() };
        let mut unused: Vec<&UnusedOffer> = q.unused_offers.values().collect();
        unused.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.offer.id.cmp(&b.offer.id)));
        unused
            .into_iter()
            .map(|u| {
                json!({"offer": offer_json(&u.offer), "timestamp": format_iso(u.at), "reason": [format!("{:?}", u.reason)]})
            })
            .collect()
    }

    /// Keeps, per app and agent, the last offer the app could not use ([`Core::last_unused_offers_json`]).
    fn record_unused_offers(&mut self, offers: &[Offer], no_matches: &[planner::NoMatch], now: Millis) {
        if no_matches.is_empty() {
            return;
        }
        let by_id: HashMap<&str, &Offer> = offers.iter().map(|o| (o.id.as_str(), o)).collect();
        let mut shared: HashMap<&str, std::sync::Arc<Offer>> = HashMap::new();
        for m in no_matches {
            let (Some(q), Some(offer)) = (self.queue.get_mut(&m.app_id), by_id.get(m.offer_id.as_str())) else {
                continue;
            };
            let offer =
                shared.entry(offer.id.as_str()).or_insert_with(|| std::sync::Arc::new((*offer).clone())).clone();
            q.unused_offers.insert(offer.agent_id.clone(), UnusedOffer { offer, reason: m.reason, at: now });
        }
    }

    // ---- the decision for one app ---------------------------------------------------------------------------

    /// Whether one of `deployments` restarts (upgrades) the app.
    fn upgrading<'a>(&self, app_id: &str, mut deployments: impl Iterator<Item = &'a Deployment>) -> bool {
        deployments.any(|d| {
            d.steps.iter().flat_map(|s| &s.actions).any(|a| a.app == app_id && a.action == "RestartApplication")
        })
    }

    /// Whether the instance counts as healthy: RUNNING, and reported healthy by its agent when the app version it
    /// runs has health checks (RUNNING alone otherwise), as Marathon counts.
    pub(crate) fn counts_healthy(&self, i: &Instance, app: &AppDefinition) -> bool {
        let own = if i.version == app.version {
            app
        } else {
            self.state.versions.get(&i.app_id).and_then(|v| v.get(&i.version)).unwrap_or(app)
        };
        let checked = !own.health_checks.is_empty();
        i.state == TaskState::Running && if checked { i.healthy == Some(true) } else { i.healthy != Some(false) }
    }

    /// The app's active instances as the deployment arithmetic sees them. Called for every decision of a touched
    /// app, so it is O(the app's instances) with nothing looked up per instance but its readiness result.
    fn members<'a>(&'a self, app: &'a AppDefinition, now: Millis) -> Vec<Member<'a>> {
        let waiting = self.waiting_for_readiness(&app.id);
        self.instances_of(&app.id)
            .filter(|i| i.active(Some(app), now))
            .map(|i| {
                Member {
                    task_id: std::borrow::Cow::Borrowed(&i.task_id),
                    new: i.version == app.version,
                    // During a deployment a new instance with a readiness check counts once it is also ready.
                    healthy: self.counts_healthy(i, app) && self.ready(i, waiting),
                    killing: i.killing,
                    rank: i.rank(),
                    staged_at: i.staged_at,
                }
            })
            .collect()
    }

    /// The decision for `app` now.
    fn decision(&self, app: &AppDefinition, now: Millis) -> deploy::Decision {
        let deployments = self.deployments_for(&app.id);
        if self.held_back(&app.id, now, deployments.iter().copied()) {
            return deploy::Decision::default();
        }
        deploy::decide(app, &self.members(app, now), self.upgrading(&app.id, deployments.iter().copied()))
    }

    /// Whether a deployment holds the app back: its action is in a step after the first unfinished one, so
    /// the apps it depends on start (and the apps depending on it stop) first.
    fn held_back<'a>(&self, app_id: &str, now: Millis, mut deployments: impl Iterator<Item = &'a Deployment>) -> bool {
        deployments.any(|d| {
            if d.steps.len() < 2 || !d.affected_apps.iter().any(|a| a == app_id) {
                return false;
            }
            let acts = |s: &Step| s.actions.iter().any(|a| a.app == app_id && a.action != "StartApplication");
            match d.steps.iter().position(acts) {
                Some(pos) => !d.steps[..pos].iter().all(|s| self.step_done(s, now)),
                None => false,
            }
        })
    }

    fn app_converged(&self, app_id: &str, upgrade: bool, now: Millis) -> bool {
        let Some(app) = self.state.apps.get(app_id) else { return true };
        if upgrade {
            return deploy::decide(app, &self.members(app, now), true).complete;
        }
        // What `members` would give, counted without building it: this runs for every step of every deployment on
        // each settle.
        let waiting = self.waiting_for_readiness(app_id);
        let mut n = 0u32;
        for i in self.instances_of(app_id).filter(|i| i.active(Some(app), now)) {
            if i.killing || !(self.counts_healthy(i, app) && self.ready(i, waiting)) {
                return false;
            }
            n += 1;
        }
        n == app.instances
    }

    // ---- changes from the API -------------------------------------------------------------------------------

    pub(crate) fn new_version(&self, id: &str, now: Millis) -> String {
        let mut t = now;
        if let Some(last) = self.state.versions.get(id).and_then(|v| v.keys().filter_map(|k| parse_iso(k)).max()) {
            t = t.max(last + 1);
        }
        format_iso(t)
    }

    /// Refuses a change to `app_ids` that would start a deployment beyond the limit; with `force` the deployments
    /// it would cancel make room.
    pub(crate) fn check_capacity<'a>(
        &self,
        app_ids: impl IntoIterator<Item = &'a str>,
        force: bool,
    ) -> Result<(), ApiError> {
        let limit = self.max_running_deployments.unwrap_or(MAX_RUNNING_DEPLOYMENTS);
        let mut running = self.state.deployments.len();
        if running < limit {
            return Ok(());
        }
        if force {
            let cancelled: BTreeSet<String> = app_ids.into_iter().flat_map(|id| self.deployments_of(id)).collect();
            running -= cancelled.len();
        }
        if running >= limit { Err(ApiError::TooManyDeployments(limit)) } else { Ok(()) }
    }

    /// [`Core::check_lock`] for several apps at once: without `force`, every blocking deployment is named in
    /// one 409 and nothing is cancelled.
    pub(crate) fn check_locks<'a>(
        &mut self,
        app_ids: impl IntoIterator<Item = &'a str> + Clone,
        force: bool,
        now: Millis,
    ) -> Result<(), ApiError> {
        if !force {
            let blocking: BTreeSet<String> =
                app_ids.clone().into_iter().flat_map(|id| self.deployments_of(id)).collect();
            if !blocking.is_empty() {
                return Err(ApiError::Locked(blocking.into_iter().collect()));
            }
        }
        for id in app_ids {
            self.check_lock(id, force, now)?;
        }
        Ok(())
    }

    pub(crate) fn check_lock(&mut self, app_id: &str, force: bool, now: Millis) -> Result<(), ApiError> {
        let blocking = self.deployments_of(app_id);
        if blocking.is_empty() {
            return Ok(());
        }
        if !force {
            return Err(ApiError::Locked(blocking));
        }
        for id in blocking {
            if let Some(d) = self.remove_deployment(&id) {
                self.emit(
                    "deployment_failed",
                    now,
                    json!({"id": d.id, "plan": self.plan_json(&d), "reason": "canceled by a forced change"}),
                );
            }
        }
        Ok(())
    }

    pub(crate) fn allocate_service_ports(&self, app: &mut AppDefinition, previous: Option<&AppDefinition>) {
        if app.require_ports {
            return;
        }
        let mut used: BTreeSet<u32> = self
            .state
            .apps
            .values()
            .filter(|a| a.id != app.id)
            .flat_map(|a| a.port_definitions.iter().map(|p| p.port))
            .collect();
        let old: Vec<u32> = previous.map(|p| p.port_definitions.iter().map(|d| d.port).collect()).unwrap_or_default();
        let mut candidate = LOCAL_PORT_MIN;
        for (i, pd) in app.port_definitions.iter_mut().enumerate() {
            if pd.port != 0 {
                used.insert(pd.port);
                continue;
            }
            // Keep the port this definition had before, so that updates do not move service ports.
            if let Some(p) = old.get(i).copied().filter(|p| *p != 0 && !used.contains(p)) {
                pd.port = p;
                used.insert(p);
                continue;
            }
            while used.contains(&candidate) && candidate < LOCAL_PORT_MAX {
                candidate += 1;
            }
            if candidate < LOCAL_PORT_MAX {
                pd.port = candidate;
                used.insert(candidate);
            }
        }
    }

    fn store_version(&mut self, app: &AppDefinition) {
        self.changes.apps.insert(app.id.clone());
        let versions = self.state.versions.entry(app.id.clone()).or_default();
        versions.insert(app.version.clone(), app.clone());
        while versions.len() > MAX_VERSIONS {
            let first = versions.keys().next().cloned();
            if let Some(k) = first {
                versions.remove(&k);
            }
        }
    }

    /// Installs `target` (or removes the app when `None`) and starts the deployment for it.
    fn deploy(
        &mut self,
        app_id: &str,
        target: Option<AppDefinition>,
        now: Millis,
        deployment_id: String,
    ) -> DeploymentResult {
        self.deploy_many(vec![(app_id.to_string(), target)], now, deployment_id)
    }

    /// The steps of a deployment for `changes` (a target definition, or `None` to remove the app), with
    /// `groups`' dependencies; changes nothing.
    pub(crate) fn plan(
        &self,
        changes: &[(String, Option<AppDefinition>)],
        groups: &BTreeMap<String, GroupMeta>,
    ) -> Vec<Step> {
        let mut current = BTreeMap::new();
        let mut wanted = BTreeMap::new();
        for (id, target) in changes {
            if let Some(b) = self.state.apps.get(id) {
                current.insert(id.clone(), b.clone());
            }
            if let Some(t) = target {
                wanted.insert(id.clone(), t.clone());
            }
        }
        // Dependencies outside the change still order the layers: the apps the changed ones depend on,
        // transitively, or every app when a group has dependencies or an app depends on a group.
        let changed: BTreeSet<&str> = changes.iter().map(|(c, _)| c.as_str()).collect();
        let mut needed: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = changes
            .iter()
            .flat_map(|(id, target)| target.iter().chain(self.state.apps.get(id)))
            .flat_map(|a| &a.dependencies)
            .map(String::as_str)
            .collect();
        let mut everything = groups.values().any(|g| !g.dependencies.is_empty());
        while let Some(dep) = todo.pop() {
            if everything || changed.contains(dep) || !needed.insert(dep) {
                continue;
            }
            match self.state.apps.get(dep) {
                Some(app) => todo.extend(app.dependencies.iter().map(String::as_str)),
                None => everything = true,
            }
        }
        let others: Box<dyn Iterator<Item = (&String, &AppDefinition)>> = if everything {
            Box::new(self.state.apps.iter())
        } else {
            Box::new(needed.iter().filter_map(|id| self.state.apps.get_key_value(*id)))
        };
        for (id, app) in others {
            if !changed.contains(id.as_str()) {
                current.entry(id.clone()).or_insert_with(|| app.clone());
                wanted.entry(id.clone()).or_insert_with(|| app.clone());
            }
        }
        // Group dependencies are inherited by the apps below, and a dependency on a group means its apps.
        crate::groups::expand_dependencies(&mut current, groups);
        crate::groups::expand_dependencies(&mut wanted, groups);
        deploy::plan_steps(&current, &wanted)
    }

    /// Installs every change (a target definition, or `None` to remove the app) and starts one deployment for
    /// all of them, its steps planned by [`deploy::plan_steps`] (stops, starts, then dependency layers).
    pub(crate) fn deploy_many(
        &mut self,
        changes: Vec<(String, Option<AppDefinition>)>,
        now: Millis,
        deployment_id: String,
    ) -> DeploymentResult {
        let original: BTreeMap<String, Option<AppDefinition>> =
            changes.iter().map(|(id, _)| (id.clone(), self.state.apps.get(id).cloned())).collect();
        let steps = self.plan(&changes, &self.state.groups);
        let version = changes
            .iter()
            .filter_map(|(_, t)| t.as_ref().map(|a| a.version.clone()))
            .max()
            .unwrap_or_else(|| format_iso(now));
        for (app_id, target) in changes {
            match target {
                Some(app) => {
                    self.store_version(&app);
                    if original[&app_id].as_ref().is_none_or(|o| {
                        o.needs_restart(&app)
                            || o.version_info.last_config_change_at != app.version_info.last_config_change_at
                    }) {
                        // A new configuration resets the launch delay, and its instances are new instances.
                        self.backoff.remove(&app_id);
                        self.state.relaunch.remove(&app_id);
                    }
                    self.touch(&app_id);
                    self.changes.apps.insert(app_id.clone());
                    self.state.apps.insert(app_id, app);
                }
                None => {
                    self.touch(&app_id);
                    self.changes.apps.insert(app_id.clone());
                    self.state.apps.remove(&app_id);
                    self.backoff.remove(&app_id);
                    self.queue.remove(&app_id);
                    self.state.relaunch.remove(&app_id);
                    self.emit("app_terminated_event", now, json!({"appId": app_id}));
                }
            }
        }
        let d = Deployment {
            id: deployment_id.clone(),
            version: version.clone(),
            affected_apps: original.keys().cloned().collect(),
            steps,
            original,
            reported_steps: 0,
        };
        let group_id = pathid::common_group(d.affected_apps.iter().map(String::as_str));
        if !d.steps.is_empty() {
            let first =
                d.steps[0].actions.iter().map(|a| json!({"action": a.action, "app": a.app})).collect::<Vec<_>>();
            self.emit("deployment_info", now, json!({"plan": self.plan_json(&d), "currentStep": {"actions": first}}));
            self.insert_deployment(d);
        } else {
            self.emit("deployment_success", now, json!({"id": d.id, "plan": self.plan_json(&d)}));
        }
        self.emit("group_change_success", now, json!({"groupId": group_id, "version": version}));
        self.dirty = true;
        DeploymentResult { deployment_id, version }
    }

    fn finish_versioning(&self, app: &mut AppDefinition, previous: Option<&AppDefinition>, now: Millis) {
        set_version(app, previous, self.new_version(&app.id, now));
    }

    /// The role Marathon subscribes in.
    pub fn framework_role(&self) -> &str {
        self.mesos_role.as_deref().unwrap_or(agora_proto::model::UNRESERVED)
    }

    /// Gives a new definition without a role Marathon's (or the one `previous` had) and checks its roles: `role`
    /// is Marathon's or the app's current one, `acceptedResourceRoles` holds only `*` and that role. `prefix`
    /// leads the paths of the errors (`/apps/ID` in a group).
    pub(crate) fn settle_role(
        &self,
        app: &mut AppDefinition,
        previous: Option<&AppDefinition>,
        prefix: &str,
        errs: &mut crate::app::Errors,
    ) {
        let framework = self.framework_role();
        if app.role.is_empty() {
            app.role = previous.map_or(framework, |p| p.role.as_str()).to_string();
        }
        if app.role != framework && previous.is_none_or(|p| p.role != app.role) {
            errs.bad(
                format!("{prefix}/role"),
                format!("'{}' is not Marathon's role '{framework}' (--mesos-role) nor the app's current one", app.role),
            );
        }
        for r in app.accepted_resource_roles.iter().flatten() {
            if r != agora_proto::model::UNRESERVED && *r != app.role {
                errs.bad(
                    format!("{prefix}/acceptedResourceRoles"),
                    format!("'{r}' is neither '*' nor the app's role '{}'", app.role),
                );
            }
        }
    }

    fn settled_role(
        &self,
        mut app: AppDefinition,
        previous: Option<&AppDefinition>,
    ) -> Result<AppDefinition, ApiError> {
        let mut errs = crate::app::Errors::default();
        self.settle_role(&mut app, previous, "", &mut errs);
        errs.finish().map_err(ApiError::Invalid)?;
        Ok(app)
    }

    /// `POST /v2/apps`.
    pub fn create_app(
        &mut self,
        body: &Value,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<(AppDefinition, DeploymentResult), ApiError> {
        let app = parse_app(body, None, None).map_err(ApiError::Invalid)?;
        let mut app = self.settled_role(app, None)?;
        if self.state.apps.contains_key(&app.id) {
            return Err(ApiError::Exists(format!("An app with id [{}] already exists.", app.id)));
        }
        self.check_new_app_id(&app.id)?;
        self.check_capacity([app.id.as_str()], force)?;
        self.check_lock(&app.id, force, now)?;
        self.allocate_service_ports(&mut app, None);
        self.finish_versioning(&mut app, None, now);
        self.emit("api_post_event", now, json!({"clientIp": "", "uri": "/v2/apps", "appDefinition": app}));
        let id = app.id.clone();
        let r = self.deploy(&id, Some(app.clone()), now, deployment_id);
        self.record_root_version(&r.version);
        Ok((app, r))
    }

    /// The new definition of `id` for an update body: a partial (or full) update, a create, or a rollback with
    /// `{"version": ...}`; versioned, service ports allocated. Changes nothing.
    fn prepare_update(
        &self,
        id: &str,
        body: &Value,
        partial: bool,
        now: Millis,
    ) -> Result<(AppDefinition, Option<AppDefinition>), ApiError> {
        let id = pathid::validate(id).map_err(|e| ApiError::Invalid(Invalid::one("/id", e)))?;
        let previous = self.state.apps.get(&id).cloned();
        if previous.is_none() {
            self.check_new_app_id(&id)?;
        }
        let rollback = body.as_object().filter(|m| m.len() == 1).and_then(|m| m.get("version")).and_then(Value::as_str);
        let mut app =
            if let Some(version) = rollback {
                let old =
                    self.state.versions.get(&id).and_then(|v| v.get(version)).ok_or_else(|| {
                        ApiError::NotFound(format!("Version '{version}' of app '{id}' does not exist"))
                    })?;
                old.clone()
            } else {
                let base = if partial { previous.as_ref() } else { None };
                self.settled_role(parse_app(body, base, Some(&id)).map_err(ApiError::Invalid)?, previous.as_ref())?
            };
        self.allocate_service_ports(&mut app, previous.as_ref());
        self.finish_versioning(&mut app, previous.as_ref(), now);
        Ok((app, previous))
    }

    /// `PUT`/`PATCH /v2/apps/{id}`: partial (or full) update, create-if-missing, or rollback with
    /// `{"version": ...}`. Returns whether the app was created.
    pub fn update_app(
        &mut self,
        id: &str,
        body: &Value,
        partial: bool,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<(bool, DeploymentResult), ApiError> {
        let (app, previous) = self.prepare_update(id, body, partial, now)?;
        self.check_capacity([app.id.as_str()], force)?;
        self.check_lock(&app.id, force, now)?;
        self.emit(
            "api_post_event",
            now,
            json!({"clientIp": "", "uri": format!("/v2/apps{}", app.id), "appDefinition": app}),
        );
        let id = app.id.clone();
        let r = self.deploy(&id, Some(app), now, deployment_id);
        self.record_root_version(&r.version);
        Ok((previous.is_none(), r))
    }

    /// `PUT`/`PATCH /v2/apps` with an array: every app (by its `id`) created or updated in one deployment. With
    /// `must_exist` (PATCH) every app must exist. All bodies are validated before anything changes.
    pub fn update_apps(
        &mut self,
        bodies: &[Value],
        partial: bool,
        must_exist: bool,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<DeploymentResult, ApiError> {
        let mut targets = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let Some(id) = body.get("id").and_then(Value::as_str) else {
                return Err(ApiError::Invalid(Invalid::one(&format!("/({i})/id"), "is required")));
            };
            let normalized = pathid::normalize(id, "/");
            if must_exist {
                self.app(&normalized)?;
            }
            if targets.iter().any(|(a, _): &(AppDefinition, Option<AppDefinition>)| a.id == normalized) {
                return Err(ApiError::Invalid(Invalid::one(&format!("/({i})/id"), "appears more than once")));
            }
            targets.push(self.prepare_update(id, body, partial, now)?);
        }
        let ids: Vec<String> = targets.iter().map(|(a, _)| a.id.clone()).collect();
        // Two apps of one request may clash too (`/a` and `/a/b`).
        if let Some(g) = ids.iter().find(|g| ids.iter().any(|a| crate::groups::is_under(a, g))) {
            return Err(ApiError::Invalid(Invalid::one("/", format!("{} ({g})", crate::groups::SAME_IDENTIFIER))));
        }
        self.check_capacity(ids.iter().map(String::as_str), force)?;
        self.check_locks(ids.iter().map(String::as_str), force, now)?;
        for (app, _) in &targets {
            self.emit("api_post_event", now, json!({"clientIp": "", "uri": "/v2/apps", "appDefinition": app}));
        }
        let r =
            self.deploy_many(targets.into_iter().map(|(a, _)| (a.id.clone(), Some(a))).collect(), now, deployment_id);
        self.record_root_version(&r.version);
        Ok(r)
    }

    /// `DELETE /v2/apps/{id}`.
    pub fn delete_app(
        &mut self,
        id: &str,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<DeploymentResult, ApiError> {
        let id = pathid::normalize(id, "/");
        self.app(&id)?;
        self.check_capacity([id.as_str()], force)?;
        self.check_lock(&id, force, now)?;
        let r = self.deploy(&id, None, now, deployment_id);
        self.record_root_version(&r.version);
        Ok(r)
    }

    /// `POST /v2/apps/{id}/restart`: a new version with the same configuration, rolled out as an upgrade.
    pub fn restart_app(
        &mut self,
        id: &str,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<DeploymentResult, ApiError> {
        let id = pathid::normalize(id, "/");
        let mut app = self.app(&id)?.clone();
        self.check_capacity([id.as_str()], force)?;
        self.check_lock(&id, force, now)?;
        app.version = self.new_version(&id, now);
        app.version_info =
            VersionInfo { last_scaling_at: app.version.clone(), last_config_change_at: app.version.clone() };
        let r = self.deploy(&id, Some(app), now, deployment_id);
        self.record_root_version(&r.version);
        Ok(r)
    }

    /// `DELETE /v2/apps/{id}/tasks[/{taskId}]` and `POST /v2/tasks/delete`: kills the tasks (the app's
    /// self-healing replaces them) or, with `scale`, also lowers `instances` by as many (a deployment).
    pub fn kill_tasks(
        &mut self,
        task_ids: &[String],
        scale: bool,
        wipe: bool,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<(Vec<Instance>, Option<DeploymentResult>), ApiError> {
        let found: Vec<Instance> = task_ids.iter().filter_map(|t| self.state.instances.get(t).cloned()).collect();
        let mut per_app: BTreeMap<String, u32> = BTreeMap::new();
        for i in &found {
            *per_app.entry(i.app_id.clone()).or_default() += 1;
        }
        if scale {
            // Refuse before marking anything, so a 403 or 409 leaves every task running.
            self.check_capacity(per_app.keys().map(String::as_str), force)?;
            self.check_locks(per_app.keys().map(String::as_str), force, now)?;
        }
        for i in &found {
            if let Some(inst) = self.state.instances.get_mut(&i.task_id) {
                if !scale && !wipe && !inst.killing {
                    // Its replacement is the same instance, next incarnation.
                    let again = (inst.instance_id.clone(), incarnation(&inst.task_id));
                    self.state.relaunch.entry(inst.app_id.clone()).or_default().push(again);
                    self.changes.apps.insert(inst.app_id.clone());
                }
                inst.killing = true;
            }
            self.instance_changed(&i.task_id, &i.app_id);
        }
        self.dirty = true;
        if !scale {
            return Ok((found, None));
        }
        // One deployment scales every app the killed tasks belonged to.
        let mut changes = Vec::new();
        for (app_id, n) in per_app {
            let Ok(app) = self.app(&app_id) else { continue };
            let mut app = app.clone();
            let previous = app.clone();
            app.instances = app.instances.saturating_sub(n);
            self.finish_versioning(&mut app, Some(&previous), now);
            changes.push((app_id, Some(app)));
        }
        if changes.is_empty() {
            return Ok((found, None));
        }
        let r = self.deploy_many(changes, now, deployment_id);
        self.record_root_version(&r.version);
        Ok((found, Some(r)))
    }

    /// `DELETE /v2/deployments/{id}`: without `force`, a rollback deployment to the original definitions; with
    /// it, the deployment is only forgotten (the app stays as it is).
    pub fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<Option<DeploymentResult>, ApiError> {
        let d = self
            .remove_deployment(id)
            .ok_or_else(|| ApiError::NotFound(format!("DeploymentPlan {id} does not exist")))?;
        self.emit("deployment_failed", now, json!({"id": d.id, "plan": self.plan_json(&d), "reason": "canceled"}));
        self.dirty = true;
        if force {
            return Ok(None);
        }
        // One rollback deployment for every app the cancelled one affected. It takes the cancelled one's place,
        // so it is never refused for being one deployment too many (the cancelled one no longer counts).
        let mut changes = Vec::new();
        for (app_id, original) in d.original {
            let target = original.map(|mut a| {
                let previous = self.state.apps.get(&app_id).cloned();
                self.finish_versioning(&mut a, previous.as_ref(), now);
                a
            });
            changes.push((app_id, target));
        }
        if changes.is_empty() {
            return Ok(None);
        }
        let r = self.deploy_many(changes, now, deployment_id);
        self.record_root_version(&r.version);
        Ok(Some(r))
    }

    /// `DELETE /v2/queue/{id}/delay`.
    pub fn reset_delay(&mut self, id: &str) -> Result<(), ApiError> {
        let id = pathid::normalize(id, "/");
        self.app(&id)?;
        self.backoff.remove(&id);
        Ok(())
    }

    // ---- the scheduler side ---------------------------------------------------------------------------------

    pub fn set_framework_id(&mut self, id: &str) {
        if self.state.framework_id.as_deref() != Some(id) {
            self.state.framework_id = Some(id.to_string());
            self.changes.framework_id = true;
            self.dirty = true;
        }
    }

    /// Every known task, for reconciliation: (task id, agent id).
    pub fn known_tasks(&self) -> Vec<(String, String)> {
        self.state.instances.values().map(|i| (i.task_id.clone(), i.agent_id.clone())).collect()
    }

    /// A status update. Unknown tasks that are not terminal are returned to be killed (they belong to no app).
    pub fn on_update(&mut self, status: &TaskStatus, now: Millis) -> Option<(String, String)> {
        let Some(inst) = self.state.instances.get_mut(&status.task_id) else {
            return (!status.state.is_terminal()).then(|| (status.task_id.clone(), status.agent_id.clone()));
        };
        let was = inst.state;
        let was_healthy = inst.healthy;
        inst.state = status.state;
        // A health report (not the healthy=false of an unhealthy task's end, which is no new check result).
        let report = status.reason == Some(agora_proto::model::Reason::TaskHealthCheckStatusUpdated);
        if let Some(h) = status.healthy {
            inst.healthy = Some(h);
            if report {
                inst.health.get_or_insert_with(HealthRecord::default).record(h, &status.message, now);
            }
        }
        if !status.agent_id.is_empty() {
            inst.agent_id = status.agent_id.clone();
        }
        if status.state == TaskState::Running && inst.started_at.is_none() {
            inst.started_at = Some(now);
        }
        inst.unreachable_since = match status.state {
            TaskState::Unreachable => inst.unreachable_since.or(Some(now)),
            _ => None,
        };
        let inst = inst.clone();
        self.instance_changed(&inst.task_id, &inst.app_id);
        self.emit(
            "status_update_event",
            now,
            json!({
                "slaveId": inst.agent_id, "taskId": inst.task_id, "taskStatus": status.state.name(),
                "message": status.message, "appId": inst.app_id, "host": inst.placement.hostname,
                "ipAddresses": inst.agent_ip.iter().map(|ip| json!({"ipAddress": ip, "protocol": "IPv4"})).collect::<Vec<_>>(),
                "ports": inst.host_ports, "version": inst.version,
            }),
        );
        if let (Some(h), true) = (status.healthy, report) {
            self.health_events(&inst, h, was_healthy, now);
        }
        // Killed by its agent for failing its health checks (not by us): Marathon's unhealthy kill.
        let unhealthy_kill = status.state.is_terminal() && status.healthy == Some(false) && !inst.killing;
        if unhealthy_kill {
            self.emit(
                "unhealthy_instance_kill_event",
                now,
                json!({
                    "appId": inst.app_id, "taskId": inst.task_id, "instanceId": inst.instance_id,
                    "version": inst.version, "reason": status.message, "host": inst.placement.hostname,
                    "slaveId": inst.agent_id,
                }),
            );
        }
        // TASK_UNKNOWN (reconciliation: the master does not know the task) ends the instance too.
        self.emit(
            "instance_changed_event",
            now,
            json!({
                "instanceId": inst.instance_id, "condition": condition(status.state), "runSpecId": inst.app_id,
                "agentId": inst.agent_id, "host": inst.placement.hostname, "runSpecVersion": inst.version,
            }),
        );
        if status.state.is_terminal() || status.state == TaskState::Unknown {
            self.state.instances.remove(&status.task_id);
            if status.state.is_terminal() && !inst.killing && self.state.apps.contains_key(&inst.app_id) {
                // Ended on its own (failed, finished, lost, killed by its agent): relaunched as the same instance.
                let again = (inst.instance_id.clone(), incarnation(&inst.task_id));
                self.state.relaunch.entry(inst.app_id.clone()).or_default().push(again);
                self.changes.apps.insert(inst.app_id.clone());
            }
            // Health check kills count as failures for backoff, as in Marathon.
            let failed =
                unhealthy_kill || matches!(status.state, TaskState::Failed | TaskState::Finished | TaskState::Error);
            if unhealthy_kill || matches!(status.state, TaskState::Failed | TaskState::Error | TaskState::Lost) {
                self.changes.apps.insert(inst.app_id.clone());
                self.state.failures.insert(
                    inst.app_id.clone(),
                    TaskFailure {
                        app_id: inst.app_id.clone(),
                        host: inst.placement.hostname.clone(),
                        message: status.message.clone(),
                        state: status.state.name().into(),
                        task_id: inst.task_id.clone(),
                        timestamp: format_iso(now),
                        version: inst.version.clone(),
                        slave_id: inst.agent_id.clone(),
                    },
                );
            }
            if failed
                && !inst.killing
                && let Some(app) = self.state.apps.get(&inst.app_id)
            {
                let b = self.backoff.entry(inst.app_id.clone()).or_default();
                b.delay_secs = if b.delay_secs == 0.0 {
                    app.backoff_seconds as f64
                } else {
                    (b.delay_secs * app.backoff_factor).min(app.max_launch_delay_seconds as f64)
                };
                b.until = now + (b.delay_secs * 1000.0) as u64;
            }
        }
        self.dirty = self.dirty
            || was != status.state
            || report
            || status.state.is_terminal()
            || status.state == TaskState::Unknown;
        self.finish_deployments(now);
        None
    }

    /// Marathon's events for a health report: `failed_health_check_event` for a failure, and on a change
    /// `health_status_changed_event` and `instance_health_changed_event`.
    fn health_events(&mut self, inst: &Instance, healthy: bool, was: Option<bool>, now: Millis) {
        if !healthy {
            let check = self
                .state
                .versions
                .get(&inst.app_id)
                .and_then(|v| v.get(&inst.version))
                .or_else(|| self.state.apps.get(&inst.app_id))
                .and_then(|a| a.health_checks.first())
                .map(|h| serde_json::to_value(h).unwrap_or_default())
                .unwrap_or_default();
            self.emit(
                "failed_health_check_event",
                now,
                json!({"appId": inst.app_id, "taskId": inst.task_id, "instanceId": inst.instance_id,
                       "version": inst.version, "healthCheck": check}),
            );
        }
        if was == Some(healthy) {
            return;
        }
        self.emit(
            "health_status_changed_event",
            now,
            json!({"appId": inst.app_id, "instanceId": inst.instance_id, "taskId": inst.task_id,
                   "version": inst.version, "alive": healthy}),
        );
        self.emit(
            "instance_health_changed_event",
            now,
            json!({"instanceId": inst.instance_id, "runSpecId": inst.app_id, "runSpecVersion": inst.version,
                   "healthy": healthy}),
        );
    }

    /// Reports the steps newly done and completes the deployments whose steps are all done, looking only at the
    /// deployments of the apps touched since the last call.
    pub(crate) fn finish_deployments(&mut self, now: Millis) {
        let apps = std::mem::take(&mut self.touched.progress);
        let ids: BTreeSet<String> =
            apps.iter().filter_map(|a| self.touched.deployments.get(a)).flatten().cloned().collect();
        for id in ids {
            let Some(d) = self.state.deployments.get(&id) else { continue };
            // Steps complete in order: report each newly completed one, then the deployment when all are.
            let done = d.steps.iter().take_while(|s| self.step_done(s, now)).count();
            if done <= d.reported_steps && done < d.steps.len() {
                continue;
            }
            let plan = self.plan_json(d);
            let newly: Vec<Value> = d.steps[d.reported_steps.min(done)..done]
                .iter()
                .map(|step| {
                    let actions: Vec<Value> =
                        step.actions.iter().map(|a| json!({"action": a.action, "app": a.app})).collect();
                    json!({"plan": plan, "currentStep": {"actions": actions}})
                })
                .collect();
            let complete = done == d.steps.len();
            if let Some(d) = self.state.deployments.get_mut(&id) {
                d.reported_steps = d.reported_steps.max(done);
                self.changes.deployments.insert(id.clone());
            }
            for body in newly {
                self.emit("deployment_step_success", now, body);
                self.dirty = true;
            }
            if complete {
                self.remove_deployment(&id);
                self.emit("deployment_success", now, json!({"id": id, "plan": plan}));
                self.dirty = true;
            }
        }
    }

    /// Touches the apps of instances whose `inactiveAfterSeconds` ran out since the last refresh (the one change
    /// that comes from the clock rather than an event).
    fn touch_due(&mut self, now: Millis) {
        let since = self.touched.last_refresh;
        let mut due = Vec::new();
        for i in self.state.instances.values() {
            let Some(unreachable) = i.unreachable_since else { continue };
            let Some(app) = self.state.apps.get(&i.app_id) else { continue };
            if let UnreachableStrategy::Enabled { inactive_after_seconds, .. } = app.unreachable_strategy {
                let at = unreachable + inactive_after_seconds * 1000;
                if since < at && at <= now {
                    due.push(i.app_id.clone());
                }
            }
        }
        for app in due {
            self.touch(&app);
        }
    }

    /// Works out the decisions of the touched apps (and of every app sharing a deployment with one, whose
    /// decision may hang on its progress), marks their kills on the instances, and keeps the decisions for
    /// [`Core::actions`] and [`Core::match_offers`]. An app with kills is touched again, so its next decision
    /// sees them as killing.
    fn refresh_decisions(&mut self, now: Millis) {
        self.touch_due(now);
        self.finish_deployments(now);
        self.touched.last_refresh = now;
        let touched = std::mem::take(&mut self.touched.decision);
        let mut apps: BTreeSet<String> = BTreeSet::new();
        for app in touched {
            if let Some(ids) = self.touched.deployments.get(&app) {
                for d in ids.iter().filter_map(|id| self.state.deployments.get(id)) {
                    apps.extend(Self::deployment_apps(d));
                }
            }
            apps.insert(app);
        }
        let mut kills = Vec::new();
        for id in apps {
            let Some(app) = self.state.apps.get(&id) else {
                self.touched.decisions.remove(&id);
                continue;
            };
            let d = self.decision(app, now);
            kills.extend(d.kill.iter().cloned());
            // Instances waiting to relaunch stand for missing instances: after a scale-down, fewer are missing.
            let live = self.instances_of(&id).filter(|i| !i.killing).count();
            let missing = (app.instances as usize).saturating_sub(live);
            if let Some(waiting) = self.state.relaunch.get_mut(&id)
                && waiting.len() > missing
            {
                // The last ones relaunch first (they are popped), so the oldest go.
                waiting.drain(..waiting.len() - missing);
                if waiting.is_empty() {
                    self.state.relaunch.remove(&id);
                }
                self.changes.apps.insert(id.clone());
            }
            self.touched.decisions.insert(id, d);
        }
        for task_id in kills {
            if let Some(i) = self.state.instances.get_mut(&task_id)
                && !i.killing
            {
                i.killing = true;
                self.dirty = true;
                let app = i.app_id.clone();
                // A kill also changes the app's progress (a killing instance no longer counts).
                self.instance_changed(&task_id, &app);
            }
        }
    }

    /// The incremental invariant, for tests: after a refresh, every app not touched since has the decision a
    /// full recomputation gives, and every deployment none of whose apps is touched has reported every step
    /// that is done.
    #[cfg(test)]
    pub(crate) fn check_incremental(&mut self, now: Millis) -> Result<(), String> {
        self.refresh_decisions(now);
        for app in self.state.apps.values() {
            if self.touched.decision.contains(&app.id) {
                continue;
            }
            let fresh = self.decision(app, now);
            if self.touched.decisions.get(&app.id) != Some(&fresh) {
                return Err(format!("{}: kept {:?}, full {fresh:?}", app.id, self.touched.decisions.get(&app.id)));
            }
        }
        for d in self.state.deployments.values() {
            if Self::deployment_apps(d).iter().any(|a| self.touched.progress.contains(a)) {
                continue;
            }
            let done = d.steps.iter().take_while(|s| self.step_done(s, now)).count();
            // A step once done may undo itself (an instance fails); what must not happen is progress missed.
            if done > d.reported_steps {
                return Err(format!("deployment {}: {done} steps done, {} reported", d.id, d.reported_steps));
            }
        }
        Ok(())
    }

    /// Launches the apps want now: their decisions' launches, unless a launch delay holds them back.
    fn wanted(&self, now: Millis) -> impl Iterator<Item = (&String, u32)> + '_ {
        self.touched
            .decisions
            .iter()
            .filter(|(_, d)| d.launch > 0)
            .filter(move |(id, _)| self.backoff.get(*id).is_none_or(|b| b.until <= now))
            .map(|(id, d)| (id, d.launch))
    }

    /// Kills to send now, and how many launches are wanted. Decided kills are marked; a kill not confirmed by a
    /// terminal update is sent again after [`KILL_RETRY_MS`].
    pub fn actions(&mut self, now: Millis) -> Actions {
        let mut out = Actions::default();
        let mut decided: Vec<String> = Vec::new();
        let mut expunge = Vec::new();
        // Instances are ordered by task id, which starts with the app's prefix: one app lookup per run of them.
        let mut current: Option<(&str, Option<&AppDefinition>, bool)> = None;
        for i in self.state.instances.values() {
            let (app, held) = match current {
                Some((id, app, held)) if id == i.app_id => (app, held),
                _ => {
                    let app = self.state.apps.get(&i.app_id);
                    let held =
                        app.is_none() && self.held_back(&i.app_id, now, self.deployments_for(&i.app_id).into_iter());
                    current = Some((&i.app_id, app, held));
                    (app, held)
                }
            };
            match app {
                // Instances of apps that no longer exist, once their stop step is due.
                None if !held => decided.push(i.task_id.clone()),
                None => {}
                Some(app) => {
                    if let (Some(since), UnreachableStrategy::Enabled { expunge_after_seconds, .. }) =
                        (i.unreachable_since, app.unreachable_strategy)
                        && now >= since + expunge_after_seconds * 1000
                    {
                        expunge.push((i.task_id.clone(), i.agent_id.clone(), i.app_id.clone()));
                    }
                }
            }
            // Overdue launches: staged or starting for longer than the launch timeout.
            if matches!(i.state, TaskState::Staging | TaskState::Starting)
                && now >= i.staged_at + TASK_LAUNCH_TIMEOUT_MS
            {
                decided.push(i.task_id.clone());
            }
        }
        // Unreachable instances past expungeAfterSeconds are forgotten; a kill goes out in case they come back.
        for (task_id, agent_id, app_id) in expunge {
            self.state.instances.remove(&task_id);
            self.instance_changed(&task_id, &app_id);
            out.kills.push((task_id, agent_id));
            self.dirty = true;
        }
        for id in decided {
            if let Some(i) = self.state.instances.get_mut(&id)
                && !i.killing
            {
                i.killing = true;
                self.dirty = true;
                let app = i.app_id.clone();
                self.instance_changed(&id, &app);
            }
        }
        self.refresh_decisions(now);
        out.wanted = self.wanted(now).map(|(_, n)| n).sum();
        for i in self.state.instances.values_mut() {
            if i.killing && i.kill_sent_at.is_none_or(|t| now >= t + KILL_RETRY_MS) {
                i.kill_sent_at = Some(now);
                out.kills.push((i.task_id.clone(), i.agent_id.clone()));
            }
        }
        out
    }

    /// Matches offers: records the launched instances (before the shell sends the launch, so a restart never
    /// launches them twice) and the offer statistics for `/v2/queue`. `new_id(app_id)` names a new instance:
    /// [`instance_prefix`] of the app followed by something unique (the shell uses a UUID).
    pub fn match_offers(
        &mut self,
        offers: &[Offer],
        now: Millis,
        new_id: &mut dyn FnMut(&str) -> String,
    ) -> planner::Matched {
        self.refresh_decisions(now);
        let wanted: Vec<(String, u32)> = self.wanted(now).map(|(id, n)| (id.clone(), n)).collect();
        let requests: Vec<Request<'_>> = wanted
            .iter()
            .filter_map(|(id, n)| self.state.apps.get(id).map(|app| (app, *n)))
            .map(|(app, n)| Request {
                app,
                count: n,
                service_ports: app.port_definitions.iter().map(|p| p.port).collect(),
            })
            .collect();
        // Constraints look at the app's own instances only.
        let placed: BTreeMap<String, Vec<Placement>> = requests
            .iter()
            .map(|r| (r.app.id.clone(), self.instances_of(&r.app.id).map(|i| i.placement.clone()).collect()))
            .collect();
        let relaunch = &mut self.state.relaunch;
        let changed_apps = &mut self.changes.apps;
        let mut next = |app_id: &str| match relaunch.get_mut(app_id).and_then(Vec::pop) {
            Some((instance_id, n)) => {
                changed_apps.insert(app_id.to_string());
                (instance_id, n + 1)
            }
            None => (new_id(app_id), 1),
        };
        let matched = planner::match_offers(&requests, &placed, offers, &mut next);
        self.state.relaunch.retain(|_, waiting| !waiting.is_empty());
        let agent_ips: BTreeMap<String, String> = offers
            .iter()
            .filter_map(|o| {
                let host = o.url.strip_prefix("http://")?.rsplit_once(':')?.0;
                (!host.is_empty()).then(|| (o.agent_id.clone(), host.to_string()))
            })
            .collect();
        for Launch { app_id, instance_id, task, placement, host_ports, .. } in &matched.launches {
            let app = &self.state.apps[app_id];
            // `instances_of` finds an app's instances by this prefix.
            assert!(
                task.task_id.starts_with(&instance_prefix(app_id)),
                "task id {} of app {app_id} lacks the prefix {}: new_id must return Marathon's instance ids",
                task.task_id,
                instance_prefix(app_id)
            );
            self.state.instances.insert(
                task.task_id.clone(),
                Instance {
                    task_id: task.task_id.clone(),
                    instance_id: instance_id.clone(),
                    app_id: app_id.clone(),
                    version: app.version.clone(),
                    state: TaskState::Staging,
                    healthy: None,
                    agent_id: task.agent_id.clone(),
                    placement: placement.clone(),
                    host_ports: host_ports.clone(),
                    service_ports: app.port_definitions.iter().map(|p| p.port).collect(),
                    staged_at: now,
                    started_at: None,
                    killing: false,
                    kill_sent_at: None,
                    unreachable_since: None,
                    agent_ip: agent_ips.get(&task.agent_id).cloned(),
                    health: None,
                    role: app.role.clone(),
                },
            );
            self.instance_changed(&task.task_id, app_id);
            self.dirty = true;
        }
        for (app_id, s) in &matched.stats {
            let q =
                self.queue.entry(app_id.clone()).or_insert_with(|| QueueStats { since: now, ..QueueStats::default() });
            q.stats.processed += s.processed;
            q.stats.used += s.used;
            for (r, n) in &s.declined {
                *q.stats.declined.entry(*r).or_default() += n;
            }
            if s.used > 0 {
                q.last_used = Some(now);
            }
            if s.processed > s.used {
                q.last_unused = Some(now);
            }
        }
        self.record_unused_offers(offers, &matched.no_matches, now);
        // Apps no longer waiting start a fresh queue entry next time.
        self.refresh_decisions(now);
        let waiting: BTreeSet<String> =
            self.touched.decisions.iter().filter(|(_, d)| d.launch > 0).map(|(id, _)| id.clone()).collect();
        self.queue.retain(|id, _| waiting.contains(id));
        matched
    }
}

#[cfg(test)]
mod tests;
