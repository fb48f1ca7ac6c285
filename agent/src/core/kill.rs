//! Killing: one task (its kill policy's grace period, TASK_KILLING for frameworks that asked for it, SIGTERM then
//! SIGKILL from [`AgentCore::tick`]), a framework's tasks, everything when the master refuses the agent or the agent
//! shuts down; and the timers that drive it (`tick`, `next_deadline`).

use std::time::{Duration, Instant};

use agora_proto::model::{Capability, TaskState};
use nix::sys::signal::Signal;
use tracing::{debug, info, info_span, warn};

use super::tasks::{Container, Kill, TaskRun};
use super::{AgentCore, Effect, MAX_KILL_GRACE, TaskKey, ToMaster};

impl AgentCore {
    pub(super) fn kill_task(
        &mut self,
        framework_id: &str,
        task_id: &str,
        grace: Option<Duration>,
        now: Instant,
    ) -> Vec<Effect> {
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let _span =
            info_span!("kill_task", task_id = %task_id, framework_id = %framework_id, agent_id = %agent_id).entered();
        let default_grace = self.settings.executor_shutdown_grace_period;
        let killing_capable = self.frameworks.get(framework_id).is_some_and(|f| f.has(Capability::TaskKillingState));
        let key = TaskKey::new(framework_id, task_id);
        let Some(t) = self.tasks.get(&key) else {
            info!("ignoring kill of a task unknown to this agent");
            return vec![];
        };
        if t.state.is_terminal() || t.container == Container::Gone {
            debug!("ignoring kill of a task that already ended");
            return vec![];
        }
        if t.kill.is_some() {
            debug!("task is already being killed");
            return vec![];
        }
        let Some(t) = self.tasks.get(&key) else { return vec![] };
        let grace = grace
            .or_else(|| t.info.kill_grace_period.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()))
            .unwrap_or(default_grace)
            .min(MAX_KILL_GRACE);
        let launching = t.container == Container::Launching;
        let container_id = t.container_id.clone();
        let orphaned = t.orphaned;
        let has_check = t.info.health_check.is_some();
        self.tasks.start_kill(&key, Kill { grace, escalate_at: (!launching).then_some(now + grace) });
        info!(grace_secs = grace.as_secs_f64(), "killing task");
        let mut effects = Vec::new();
        if has_check {
            // As Mesos's executors: no more checks once the task is being killed.
            effects.push(Effect::StopHealthCheck { task: key.clone() });
        }
        if killing_capable && !orphaned {
            effects.extend(self.update(&key, TaskState::Killing, None, String::new(), now));
        }
        if !launching {
            effects.push(Effect::Signal { task: key, container_id, signal: Signal::SIGTERM });
        }
        effects
    }

    /// The framework was torn down: kill its tasks and, as Mesos's status update manager cleans up, drop its
    /// pending updates (nobody will acknowledge them). Its tasks are forgotten as they exit.
    pub(super) fn shutdown_framework(&mut self, framework_id: &str, now: Instant) -> Vec<Effect> {
        let _span = info_span!("shutdown_framework", framework_id = %framework_id).entered();
        info!("master asked to shut the framework down; killing its tasks");
        self.updates.remove_framework(framework_id);
        let keys: Vec<TaskKey> = self.tasks.of_framework(framework_id).map(|(k, _)| k.clone()).collect();
        let mut effects = Vec::new();
        for key in &keys {
            let Some(t) = self.tasks.get_mut(key) else { continue };
            t.orphaned = true;
            if t.container == Container::Gone {
                self.forget(key);
            } else {
                effects.extend(self.kill_task(&key.framework_id, &key.task_id, None, now));
            }
        }
        effects
    }

    /// The master refused this agent: stop every task, drop their updates, forget the id and register anew.
    pub(super) fn master_error(&mut self, message: &str, now: Instant) -> Vec<Effect> {
        warn!(error = %message, "the master refused this agent; killing all tasks and registering anew");
        self.updates.clear();
        self.set_agent_id(None);
        for t in self.tasks.values_mut() {
            t.orphaned = true;
        }
        let gone: Vec<TaskKey> =
            self.tasks.iter().filter(|(_, t)| t.container == Container::Gone).map(|(key, _)| key.clone()).collect();
        for key in gone {
            self.forget(&key);
        }
        self.kill_everything(now)
    }

    /// `run`'s shutdown: kill every task; no new ones start.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Effect> {
        info!("agent shutting down; killing all tasks");
        self.shutting_down = true;
        self.kill_everything(now)
    }

    pub(super) fn kill_everything(&mut self, now: Instant) -> Vec<Effect> {
        let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
        keys.iter().flat_map(|k| self.kill_task(&k.framework_id, &k.task_id, None, now)).collect()
    }

    /// The longest grace period of any kill in progress (at least `--executor-shutdown-grace-period`).
    pub fn longest_grace(&self) -> Duration {
        let graces = self.tasks.killing().filter_map(|(_, t)| t.kill.as_ref().map(|k| k.grace));
        graces.max().unwrap_or_default().max(self.settings.executor_shutdown_grace_period)
    }

    /// Timers: SIGKILL after the grace period, status update retries.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        let due = |t: &TaskRun| {
            t.container == Container::Running
                && t.kill.as_ref().is_some_and(|k| k.escalate_at.is_some_and(|at| at <= now))
        };
        let escalate: Vec<TaskKey> = self.tasks.killing().filter(|(_, t)| due(t)).map(|(k, _)| k.clone()).collect();
        for key in escalate {
            let Some(t) = self.tasks.get_mut(&key) else { continue };
            if let Some(kill) = t.kill.as_mut() {
                kill.escalate_at = None;
            }
            let _span = info_span!("kill_task", task_id = %key.task_id, framework_id = %key.framework_id).entered();
            info!("grace period over; sending SIGKILL");
            let container_id = t.container_id.clone();
            effects.push(Effect::Signal { task: key, container_id, signal: Signal::SIGKILL });
        }
        if self.is_registered() {
            effects.extend(self.updates.due(now).into_iter().map(|o| Effect::Send(ToMaster::StatusUpdate(o))));
        }
        effects
    }

    /// When `tick` has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let kills = self
            .tasks
            .killing()
            .filter(|(_, t)| t.container == Container::Running)
            .filter_map(|(_, t)| t.kill.as_ref().and_then(|k| k.escalate_at));
        let retries = if self.is_registered() { self.updates.next_deadline() } else { None };
        kills.chain(retries).min()
    }
}
