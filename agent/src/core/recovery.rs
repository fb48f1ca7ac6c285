//! What survives a restart: the checkpoint records that changed since the last write ([`AgentCore::take_changes`]),
//! and carrying on from a checkpoint and the containers the containerizer recovered ([`AgentCore::recover`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agora_proto::model::{Reason, TaskState};
use nix::sys::signal::Signal;
use tracing::{info, info_span, warn};

use super::tasks::{Container, Kill, TaskRun};
use super::{AgentCore, Effect, TaskKey};
use crate::checkpoint::{AgentCheckpoint, AgentRecord, Changes, TaskCheckpoint, TaskRecord};
use crate::containerizer::{Recovered, RecoveredContainer};

impl AgentCore {
    /// Everything a restarted agent needs to carry on, whole (tests, and the benchmark of the single-file format).
    pub fn checkpoint(&self) -> AgentCheckpoint {
        AgentCheckpoint {
            agent_id: self.agent_id.clone(),
            frameworks: self.frameworks.values().cloned().collect(),
            tasks: self.tasks.values().map(task_checkpoint).collect(),
            updates: self.updates.snapshot(),
        }
    }

    /// The checkpoint records that changed since the last call (the shell writes them before the batch's effects go
    /// out): the agent record, frameworks and tasks, `None` for those that are gone. O(what changed).
    pub fn take_changes(&mut self) -> Changes {
        let mut keys = std::mem::take(&mut self.tasks.changed);
        keys.extend(self.updates.take_changed());
        let tasks = keys
            .into_iter()
            .map(|key| {
                let task = self.tasks.get(&key).map(task_checkpoint);
                let updates = self.updates.queue(&key);
                let record = (task.is_some() || updates.is_some()).then(|| TaskRecord {
                    framework_id: key.framework_id.clone(),
                    task_id: key.task_id.clone(),
                    task,
                    updates,
                });
                (key, record)
            })
            .collect();
        let frameworks = std::mem::take(&mut self.frameworks_changed)
            .into_iter()
            .map(|id| {
                let info = self.frameworks.get(&id).cloned();
                (id, info)
            })
            .collect();
        let agent = std::mem::take(&mut self.agent_changed)
            .then(|| AgentRecord { version: crate::checkpoint::VERSION, agent_id: self.agent_id.clone() });
        Changes { agent, frameworks, tasks }
    }

    /// Marks everything changed, so the next [`Self::take_changes`] holds the whole checkpoint: a fresh agent's
    /// first write, or the migration from the single-file checkpoint.
    pub fn mark_all_changed(&mut self) {
        self.agent_changed = true;
        self.frameworks_changed.extend(self.frameworks.keys().cloned());
        self.tasks.changed.extend(self.tasks.map.keys().cloned());
        self.updates.mark_all_changed();
    }

    /// Marks what `changes` held changed again (its write failed), so the next write retries it.
    pub fn retry_changes(&mut self, changes: &Changes) {
        self.agent_changed |= changes.agent.is_some();
        self.frameworks_changed.extend(changes.frameworks.keys().cloned());
        self.tasks.changed.extend(changes.tasks.keys().cloned());
    }

    /// Carries on from a checkpoint after a restart, given what the containerizer recovered. Running containers are
    /// re-attached; those that ended while the agent was down report their real termination; a live task whose
    /// container is lost (or unknown) fails with `REASON_EXECUTOR_TERMINATED` and the reason. Recovered containers
    /// no task claims are destroyed. The agent then re-registers with its old id.
    ///
    /// `leases` are the container network's addresses by container id (the shell's IPAM), which live bridged tasks
    /// get back; the host's network is applied again and what no live container holds is freed.
    pub fn recover(
        &mut self,
        cp: AgentCheckpoint,
        containers: Vec<RecoveredContainer>,
        leases: &BTreeMap<String, std::net::Ipv4Addr>,
        now: Instant,
    ) -> Vec<Effect> {
        let _span = info_span!("recover", agent_id = %cp.agent_id.clone().unwrap_or_default()).entered();
        // What is loaded is on disk as it is; only what recovery changes is written again.
        self.agent_id = cp.agent_id;
        self.frameworks = cp.frameworks.into_iter().filter_map(|f| f.id.clone().map(|id| (id, f))).collect();
        self.updates.restore(cp.updates);
        let mut found: BTreeMap<String, Recovered> =
            containers.into_iter().map(|c| (c.container_id, c.state)).collect();
        let mut effects = Vec::new();
        for t in cp.tasks {
            let key = TaskKey::new(t.framework_id.clone(), t.info.task_id.clone());
            let kill = t.kill_grace_secs.map(|g| Kill {
                grace: Duration::try_from_secs_f64(g).unwrap_or_default(),
                escalate_at: Some(now + Duration::try_from_secs_f64(g).unwrap_or_default()),
            });
            let recovered = if t.live { found.remove(&t.container_id) } else { None };
            let container = if t.live { Container::Running } else { Container::Gone };
            self.tasks.load(
                key.clone(),
                TaskRun {
                    framework_id: t.framework_id.clone(),
                    info: t.info,
                    state: t.state,
                    container_id: t.container_id.clone(),
                    sandbox: t.sandbox,
                    container,
                    kill,
                    orphaned: t.orphaned,
                    unhealthy_kill: t.unhealthy_kill,
                    ip: if t.live { leases.get(&t.container_id).copied() } else { None },
                },
            );
            if !t.live {
                continue;
            }
            let span = self.span("recover", &key);
            let _task = span.enter();
            match recovered {
                Some(Recovered::Running) => {
                    info!(container_id = %t.container_id, "re-attached to a running container");
                    effects.push(Effect::Reattach { task: key.clone(), container_id: t.container_id.clone() });
                    if t.state == TaskState::Starting && t.kill_grace_secs.is_none() {
                        effects.extend(self.update(&key, TaskState::Running, None, String::new(), now));
                    }
                    if t.kill_grace_secs.is_none() {
                        // Checking starts afresh (delay and grace period included), as after a launch.
                        effects.extend(self.start_health_check(&key));
                    }
                    if t.kill_grace_secs.is_some() {
                        effects.push(Effect::Signal {
                            task: key.clone(),
                            container_id: t.container_id.clone(),
                            signal: Signal::SIGTERM,
                        });
                    }
                }
                Some(Recovered::Ended(term)) => {
                    info!(container_id = %t.container_id, how = %term.message(), "container ended while the agent was down");
                    effects.extend(self.exited(&key, &t.container_id, Ok(term), now));
                }
                lost => {
                    let why = match lost {
                        Some(Recovered::Lost(why)) => why,
                        _ => "the containerizer does not know it".to_string(),
                    };
                    let message =
                        format!("container {} was not recovered after the agent restarted: {why}", t.container_id);
                    warn!("{message}");
                    if let Some(run) = self.tasks.get_mut(&key) {
                        run.container = Container::Gone;
                    }
                    effects.push(Effect::Destroy { task: Some(key.clone()), container_id: t.container_id.clone() });
                    let orphaned = self.tasks.get(&key).is_some_and(|r| r.orphaned);
                    if orphaned {
                        self.forget(&key);
                    } else {
                        effects.extend(self.update(
                            &key,
                            TaskState::Failed,
                            Some(Reason::ExecutorTerminated),
                            message,
                            now,
                        ));
                    }
                }
            }
        }
        for (container_id, _) in found {
            warn!(container_id = %container_id, "destroying a recovered container no task claims");
            effects.push(Effect::Destroy { task: None, container_id });
        }
        // The host's network first, so the reattached tasks' mappings and routes are back before anything else.
        let mut all = self.recover_network();
        all.extend(effects);
        all
    }
}

fn task_checkpoint(t: &TaskRun) -> TaskCheckpoint {
    TaskCheckpoint {
        framework_id: t.framework_id.clone(),
        info: t.info.clone(),
        state: t.state,
        container_id: t.container_id.clone(),
        sandbox: t.sandbox.clone(),
        live: t.container != Container::Gone,
        kill_grace_secs: t.kill.as_ref().map(|k| k.grace.as_secs_f64()),
        orphaned: t.orphaned,
        unhealthy_kill: t.unhealthy_kill.clone(),
    }
}
