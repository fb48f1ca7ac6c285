//! The SDK side of the shell: the [`Scheduler`] that feeds offers and status updates to the core, and
//! [`Shared::settle`], which turns the core's wishes into calls (kills, REVIVE/SUPPRESS), persists the state and
//! publishes events, after every change whether it came from the master, the API or the clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use agora_framework_sdk::{MasterInfo, Offer, Scheduler, SchedulerDriver, TaskInfo, TaskStatus};
use serde_json::json;

use crate::core::Core;
use crate::events::EventBus;
use crate::store::StateStore;
use crate::time::{Millis, now_millis};

/// Unused offers are declined for this long (Marathon's `--decline_offer_duration`); REVIVE clears the filters
/// whenever more launches are wanted.
pub const DECLINE_SECONDS: f64 = 120.0;

/// The least time between two settles after status updates ([`Shared::spawn_settler`]).
pub const SETTLE_PACE: std::time::Duration = std::time::Duration::from_millis(20);

/// Every known task is reconciled this often, and the master asked for every task it knows of ours (implicit
/// reconciliation; tasks that belong to no app are killed) — Marathon's `--reconciliation_interval`.
pub const RECONCILIATION_INTERVAL_MS: Millis = 600_000;

/// Facts about this Marathon for `/v2/info` and `/v2/leader`.
#[derive(Clone, Debug)]
pub struct Info {
    pub hostname: String,
    pub http_port: u16,
    pub master: String,
    pub framework_name: String,
    pub failover_timeout: f64,
    /// `--zk` and its session timeout, shown by `/v2/info` (`None` standalone).
    pub zk: Option<(String, u64)>,
    /// `--access-control-allow-origin`: the origins CORS answers allow (none: no CORS headers).
    pub access_control_allow_origin: Vec<String>,
    /// `--mesos-role`.
    pub mesos_role: String,
}

#[derive(Default)]
struct OfferMode {
    suppressed: bool,
    last_wanted: u32,
    last_reconciliation: Millis,
    /// Offers were answered (declined with a filter, or accepted, whose leftovers the master filters) since the
    /// last REVIVE: only then can a REVIVE bring more. Without this, 1,000 apps POSTed at once sent 1,000
    /// REVIVEs, and the launches queued behind them.
    filtered: bool,
}

/// What the API handlers and the scheduler share.
pub struct Shared {
    core: Mutex<Core>,
    store: Box<dyn StateStore>,
    pub bus: EventBus,
    pub driver: SchedulerDriver,
    pub info: Info,
    mode: Mutex<OfferMode>,
    /// `DELETE /v2/leader`: the server stops leading (and the process ends, as Marathon's does).
    pub abdicated: tokio::sync::Notify,
    /// The store refused a write because another Marathon wrote there: the server stops at once.
    pub overtaken: tokio::sync::Notify,
    /// Status updates ask the settler ([`Shared::spawn_settler`]) to settle; a burst of them costs one settle.
    updated: tokio::sync::Notify,
    /// Tasks rendered as JSON for `GET /v2/apps?embed=apps.tasks`, reused while unchanged.
    pub rendered: crate::api::RenderedTasks,
    /// The web UI of the master we subscribed with (`http://HOST:PORT/` from its `MasterInfo`), for `/v2/info`'s
    /// `mesos_leader_ui_url` when `--master` is `zk://` and the leader changes.
    pub leader_ui: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(core: Core, store: Box<dyn StateStore>, driver: SchedulerDriver, info: Info) -> Shared {
        Shared {
            core: Mutex::new(core),
            store,
            bus: EventBus::default(),
            driver,
            info,
            mode: Mutex::default(),
            abdicated: tokio::sync::Notify::new(),
            overtaken: tokio::sync::Notify::new(),
            updated: tokio::sync::Notify::new(),
            rendered: crate::api::RenderedTasks::default(),
            leader_ui: Mutex::new(None),
        }
    }

    /// The task that settles after status updates, once per burst however many came (see
    /// [`Shared::settle_update`]). Runs until aborted.
    pub fn spawn_settler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                shared.updated.notified().await;
                let now = now_millis();
                {
                    let mut core = shared.lock();
                    shared.settle_and_persist(&mut core, now, false);
                }
                // Updates arriving meanwhile wait for the next settle (the notification keeps): a settle decides
                // again every app an update touched, O(its instances), so a stream of updates one by one on an app
                // of 10,000 instances would cost O(instances) per update.
                tokio::time::sleep(SETTLE_PACE).await;
            }
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Core> {
        let mut core = self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        core.plan_groups = self.bus.wants_plan_groups();
        core
    }

    /// The clock ticked: settle, and reconcile every [`RECONCILIATION_INTERVAL_MS`].
    pub fn tick(&self, now: Millis) {
        let mut core = self.lock();
        let due = {
            let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
            let due = now >= mode.last_reconciliation + RECONCILIATION_INTERVAL_MS;
            if due {
                mode.last_reconciliation = now;
            }
            due
        };
        if due && self.driver.framework_id().is_some() {
            let known = core.known_tasks();
            if !known.is_empty() {
                self.driver.reconcile(known);
            }
            self.driver.reconcile(vec![]);
        }
        self.settle(&mut core, now);
    }

    /// After a change: send the kills the core decided, REVIVE when more launches are wanted than before (or
    /// offers are suppressed while some are wanted), SUPPRESS when none are, persist, publish events.
    pub fn settle(&self, core: &mut Core, now: Millis) {
        self.settle_and_persist(core, now, true);
    }

    /// After a status update: publish its events now, and leave the settling to the settler
    /// ([`Shared::spawn_settler`]), which settles once for a whole burst of updates, and the write to the next
    /// settle that persists: the tick's (at most [`crate::server::TICK`] later), or an offer's or an API call's,
    /// which write before their launches or answers. Settling and writing the whole state for every update made a
    /// burst of N updates cost O(N × (apps + instances + deployments)). Nothing is lost by the delay: an update only
    /// records what the master knows, and a restarted Marathon reconciles every instance it loaded (counting them
    /// as placed meanwhile) before acting, so it learns the update again.
    pub fn settle_update(&self, core: &mut Core) {
        for e in core.drain_events() {
            self.bus.publish(e);
        }
        self.updated.notify_one();
    }

    fn settle_and_persist(&self, core: &mut Core, now: Millis, persist: bool) {
        let actions = core.actions(now);
        for (task_id, agent_id) in &actions.kills {
            tracing::info!(task_id, agent_id, "killing task");
            self.driver.kill(task_id, agent_id);
        }
        {
            let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
            if actions.wanted > 0 && (mode.suppressed || (actions.wanted > mode.last_wanted && mode.filtered)) {
                self.driver.revive(vec![]);
                mode.suppressed = false;
                mode.filtered = false;
            } else if actions.wanted == 0 && !mode.suppressed {
                self.driver.suppress(vec![]);
                mode.suppressed = true;
            }
            mode.last_wanted = actions.wanted;
        }
        if core.dirty && persist {
            // Only the records that changed are written (the file store appends them to its journal).
            let changes = core.take_changes();
            match self.store.save_changes(&core.state, &changes) {
                Ok(()) => core.dirty = false,
                Err(e) => {
                    core.restore_changes(changes);
                    match e {
                        crate::store::StoreError::Conflict { .. } => {
                            tracing::error!(error = %e, "another Marathon leads: stopping");
                            self.overtaken.notify_one();
                        }
                        e => tracing::error!(error = %e, "cannot persist Marathon's state"),
                    }
                }
            }
        }
        for e in core.drain_events() {
            self.bus.publish(e);
        }
    }
}

/// The framework: callbacks lock the core, apply, settle.
pub struct MarathonScheduler {
    pub shared: Arc<Shared>,
}

impl Scheduler for MarathonScheduler {
    fn subscribed(&mut self, driver: &SchedulerDriver, framework_id: &str, master: &MasterInfo) {
        tracing::info!(framework_id, master = %master.id, "subscribed");
        let host = if master.hostname.is_empty() { &master.ip } else { &master.hostname };
        *self.shared.leader_ui.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("http://{host}:{}/", master.port));
        let now = now_millis();
        let mut core = self.shared.lock();
        core.set_framework_id(framework_id);
        // Reconcile every instance we know of before trusting the records; until the answers come, persisted
        // instances count as placed, so nothing is launched twice.
        let known = core.known_tasks();
        if !known.is_empty() {
            driver.reconcile(known);
        }
        // And ask for every task the master knows of ours: one that belongs to no app is killed.
        driver.reconcile(vec![]);
        self.shared.bus.publish(json!({
            "eventType": "scheduler_registered_event", "timestamp": crate::time::format_iso(now),
            "frameworkId": framework_id, "master": format!("{}:{}", master.hostname, master.port),
        }));
        // The driver (re)subscribes with offers suppressed: REVIVE if anything is wanted.
        *self.shared.mode.lock().unwrap_or_else(|p| p.into_inner()) =
            OfferMode { suppressed: true, last_wanted: 0, last_reconciliation: now, filtered: false };
        self.shared.settle(&mut core, now);
    }

    fn offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let now = now_millis();
        let mut core = self.shared.lock();
        let matched = core.match_offers(&offers, now, &mut |app_id| {
            format!("{}{}", crate::core::instance_prefix(app_id), uuid::Uuid::new_v4())
        });
        // Persist the new instances before the launches go out; if they are not persisted (another Marathon wrote,
        // or ZooKeeper failed), launch nothing: a restarted Marathon must know of every task it launched.
        self.shared.settle(&mut core, now);
        if core.dirty {
            tracing::error!(
                launches = matched.launches.len(),
                "the new instances could not be persisted: launching none"
            );
            // Declined with the master's short default filter, as the resources are wanted; and the instances
            // recorded for these launches are reconciled now: the master answers TASK_GONE (never launched), so the
            // core drops them and plans them again at the next offer, rather than waiting for the launch timeout.
            for offer in &offers {
                driver.decline(&offer.id, None);
            }
            self.shared.mode.lock().unwrap_or_else(|p| p.into_inner()).filtered = true;
            let unlaunched: Vec<(String, String)> =
                matched.launches.iter().map(|l| (l.task.task_id.clone(), l.task.agent_id.clone())).collect();
            if !unlaunched.is_empty() {
                driver.reconcile(unlaunched);
            }
            return;
        }
        let mut per_offer: BTreeMap<String, Vec<TaskInfo>> = BTreeMap::new();
        for l in matched.launches {
            tracing::info!(task_id = %l.task.task_id, app_id = %l.app_id, agent_id = %l.task.agent_id, "launching");
            per_offer.entry(l.offer_id).or_default().push(l.task);
        }
        for offer in &offers {
            match per_offer.remove(&offer.id) {
                Some(tasks) => driver.launch(offer, tasks),
                None => driver.decline(&offer.id, Some(DECLINE_SECONDS)),
            }
        }
        self.shared.mode.lock().unwrap_or_else(|p| p.into_inner()).filtered = true;
    }

    fn update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        let now = now_millis();
        let mut core = self.shared.lock();
        tracing::info!(task_id = %status.task_id, state = %status.state, "status update");
        if let Some((task_id, agent_id)) = core.on_update(status, now) {
            tracing::warn!(task_id, "killing a task that belongs to no app");
            driver.kill(&task_id, &agent_id);
        }
        self.shared.settle_update(&mut core);
    }

    fn error(&mut self, _driver: &SchedulerDriver, message: &str) {
        tracing::error!(message, "the master reported a framework error");
    }

    fn disconnected(&mut self, _driver: &SchedulerDriver) {
        tracing::warn!("disconnected from the master; resubscribing");
        self.shared.bus.publish(json!({
            "eventType": "scheduler_disconnected_event", "timestamp": crate::time::format_iso(now_millis()),
        }));
    }
}
