//! The tracked tasks: what the core knows of each ([`TaskRun`]) and the collection that marks every change for the
//! checkpoint ([`Tasks`]), plus the finished tasks `/state` remembers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_proto::model::{TaskInfo, TaskState};

use super::TaskKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Container {
    /// Launch requested, result not yet known.
    Launching,
    Running,
    /// Exited, failed to launch, or never launched.
    Gone,
}

#[derive(Debug, Clone)]
pub(super) struct Kill {
    pub(super) grace: Duration,
    /// When SIGKILL follows; set once SIGTERM went out.
    pub(super) escalate_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(super) struct TaskRun {
    pub(super) framework_id: String,
    pub(super) info: TaskInfo,
    pub(super) state: TaskState,
    pub(super) container_id: String,
    pub(super) sandbox: PathBuf,
    pub(super) container: Container,
    pub(super) kill: Option<Kill>,
    /// The master forgot this agent: no more updates for this task, just stop it.
    pub(super) orphaned: bool,
    /// Killed for failing its health checks, with why: its terminal update says `healthy: false` and this.
    pub(super) unhealthy_kill: Option<String>,
    /// Its address on the container network (not checkpointed: a restarted agent reads it from its leases).
    pub(super) ip: Option<std::net::Ipv4Addr>,
}

#[derive(Debug, Clone)]
pub(super) struct CompletedTask {
    pub(super) framework_id: String,
    pub(super) info: TaskInfo,
    pub(super) state: TaskState,
}

/// The tracked tasks, keyed by framework id and task id (task ids are unique only per framework), with the keys
/// whose checkpointed record may have changed since [`AgentCore::take_changes`]. Every way to change a task goes
/// through here, so no change escapes the checkpoint; reading does not mark anything.
#[derive(Debug, Default)]
pub(super) struct Tasks {
    pub(super) map: BTreeMap<TaskKey, TaskRun>,
    pub(super) changed: BTreeSet<TaskKey>,
    /// The tasks being killed (`kill` set), so timers look at them alone, not at every task.
    pub(super) killing: BTreeSet<TaskKey>,
}

impl Tasks {
    pub(super) fn get(&self, key: &TaskKey) -> Option<&TaskRun> {
        self.map.get(key)
    }

    pub(super) fn contains_key(&self, key: &TaskKey) -> bool {
        self.map.contains_key(key)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &TaskRun> {
        self.map.values()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &TaskKey> {
        self.map.keys()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&TaskKey, &TaskRun)> {
        self.map.iter()
    }

    /// The tasks of one framework, in task id order.
    pub(super) fn of_framework<'a>(
        &'a self,
        framework_id: &'a str,
    ) -> impl Iterator<Item = (&'a TaskKey, &'a TaskRun)> {
        self.map.range(TaskKey::new(framework_id, "")..).take_while(move |(k, _)| k.framework_id == framework_id)
    }

    /// The task, to change when `pred` holds (it is then marked changed).
    pub(super) fn get_mut_if(&mut self, key: &TaskKey, pred: impl FnOnce(&TaskRun) -> bool) -> Option<&mut TaskRun> {
        if !self.map.get(key).is_some_and(pred) {
            return None;
        }
        self.changed.insert(key.clone());
        self.map.get_mut(key)
    }

    /// Records the container network address of the task's container `container_id` (if it is still there and not
    /// ended). The address is not checkpointed (a restarted agent reads its leases), so nothing is marked changed.
    pub(super) fn set_ip(&mut self, key: &TaskKey, container_id: &str, ip: std::net::Ipv4Addr) -> bool {
        match self.map.get_mut(key).filter(|t| t.container_id == container_id && t.container != Container::Gone) {
            Some(t) => {
                t.ip = Some(ip);
                true
            }
            None => false,
        }
    }

    pub(super) fn get_mut(&mut self, key: &TaskKey) -> Option<&mut TaskRun> {
        self.get_mut_if(key, |_| true)
    }

    pub(super) fn insert(&mut self, key: TaskKey, run: TaskRun) {
        self.changed.insert(key.clone());
        self.load(key, run);
    }

    /// A task read back from the checkpoint: already on disk as it is.
    pub(super) fn load(&mut self, key: TaskKey, run: TaskRun) {
        if run.kill.is_some() {
            self.killing.insert(key.clone());
        }
        self.map.insert(key, run);
    }

    /// Starts killing the task (a kill is never undone; the task is forgotten once it ended).
    pub(super) fn start_kill(&mut self, key: &TaskKey, kill: Kill) {
        if let Some(t) = self.get_mut(key) {
            t.kill = Some(kill);
            self.killing.insert(key.clone());
        }
    }

    /// The tasks being killed.
    pub(super) fn killing(&self) -> impl Iterator<Item = (&TaskKey, &TaskRun)> {
        self.killing.iter().filter_map(|k| self.map.get(k).map(|t| (k, t)))
    }

    pub(super) fn remove(&mut self, key: &TaskKey) -> Option<TaskRun> {
        let run = self.map.remove(key)?;
        self.changed.insert(key.clone());
        self.killing.remove(key);
        Some(run)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut TaskRun> {
        self.changed.extend(self.map.keys().cloned());
        self.map.values_mut()
    }
}
