//! Failover: recovering from the registry, keeping the registry in step with admissions, unreachability and
//! frameworks, and the deadlines for agents and frameworks that do not come back.
//!
//! A new leader starts from the registry ([`Master::recover`]): admitted agents become *recovering* until they
//! re-register (their tasks come back with them); those still away after `agent_reregister_timeout` are marked
//! unreachable. Frameworks named in the registry get their `failover_timeout` from the moment of recovery; one that
//! neither re-subscribes nor is reported by an agent by then is forgotten, and one that is reported but does not
//! re-subscribe is torn down by the usual failover timeout (its tasks killed).

use std::time::Duration;

use agora_proto::model::{AgentInfo, FrameworkInfo, MasterInfo};

use super::{CoreConfig, Effect, Master, Now, SchedulerEvent};
use crate::registry::{AdmittedAgent, RegisteredFramework, Registry};

impl Master {
    /// A leader's core, starting from what the registry says survived the previous leader.
    pub fn recover(info: MasterInfo, config: CoreConfig, registry: Registry, now: Now) -> Master {
        let mut m = Master::new(info, config, now);
        m.recovering = registry.agents.iter().map(|(id, a)| (id.clone(), a.clone())).collect();
        if !m.recovering.is_empty() {
            m.recovery_deadline = Some(now.mono + m.config.agent_reregister_timeout);
        }
        for (id, f) in &registry.frameworks {
            let timeout = Duration::try_from_secs_f64(f.failover_timeout).unwrap_or(Duration::MAX);
            m.framework_deadlines.insert(
                id.clone(),
                now.mono.checked_add(timeout).unwrap_or(now.mono + Duration::from_secs(100 * 365 * 86_400)),
            );
        }
        tracing::info!(
            agents = m.recovering.len(),
            unreachable = registry.unreachable.len(),
            frameworks = registry.frameworks.len(),
            "recovered the registry; waiting for agents to re-register"
        );
        m.registry = registry;
        m
    }

    /// What must survive a failover, as of now.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Agents from the registry that have not re-registered yet.
    pub fn recovering_agents(&self) -> usize {
        self.recovering.len()
    }

    pub(crate) fn persist(&mut self) {
        self.emit(Effect::PersistRegistry);
    }

    /// A new agent is admitted (persisted before it is told).
    pub(crate) fn admit_agent(&mut self, id: &str, info: &AgentInfo) {
        self.registry.agents.insert(id.to_string(), AdmittedAgent { hostname: info.hostname.clone(), port: info.port });
        self.persist();
    }

    /// An agent re-registered: it is no longer recovering, and the registry learns of it if it did not know it or
    /// had it as unreachable. Returns false if the agent was removed for good (it must register anew).
    pub(crate) fn readmit_agent(&mut self, id: &str, info: &AgentInfo) -> bool {
        if self.registry.removed.contains(id) {
            return false;
        }
        self.recovering.remove(id);
        let admitted = AdmittedAgent { hostname: info.hostname.clone(), port: info.port };
        let was_unreachable = self.registry.unreachable.remove(id).is_some();
        let changed = self.registry.agents.get(id) != Some(&admitted);
        if was_unreachable || changed {
            self.registry.agents.insert(id.to_string(), admitted);
            self.persist();
        }
        true
    }

    /// Records an agent as unreachable in the registry.
    pub(crate) fn registry_unreachable(&mut self, id: &str, now: Now) {
        self.registry.agents.remove(id);
        self.registry.unreachable.insert(id.to_string(), now.wall);
        self.persist();
    }

    /// True while `agent_id` is admitted but has not re-registered with this master (reconciliation stays silent).
    pub(crate) fn is_recovering(&self, agent_id: &str) -> bool {
        self.recovering.contains_key(agent_id)
    }

    /// True if the registry has `agent_id` as unreachable.
    pub(crate) fn registry_says_unreachable(&self, agent_id: &str) -> bool {
        self.registry.unreachable.contains_key(agent_id)
    }

    /// A framework subscribed: the registry knows it with its current failover timeout.
    pub(crate) fn note_framework(&mut self, id: &str, info: &FrameworkInfo) {
        self.framework_deadlines.remove(id);
        let entry = RegisteredFramework { name: info.name.clone(), failover_timeout: info.failover_timeout };
        if self.registry.frameworks.get(id) != Some(&entry) {
            self.registry.frameworks.insert(id.to_string(), entry);
            self.persist();
        }
    }

    /// A framework was torn down: the registry forgets it.
    pub(crate) fn forget_framework(&mut self, id: &str) {
        self.framework_deadlines.remove(id);
        if self.registry.frameworks.remove(id).is_some() {
            self.persist();
        }
    }

    /// Agents that did not re-register in time become unreachable; registry frameworks nobody brought back within
    /// their failover timeout are forgotten (those an agent reported are torn down by `expire_frameworks`).
    pub(crate) fn expire_recovery(&mut self, now: Now) {
        if self.recovery_deadline.is_some_and(|d| now.mono >= d) {
            self.recovery_deadline = None;
            let late: Vec<String> = std::mem::take(&mut self.recovering).into_keys().collect();
            if !late.is_empty() {
                tracing::warn!(
                    agents = late.len(),
                    "agents did not re-register within --agent-reregister-timeout; marking them unreachable"
                );
            }
            for id in &late {
                self.counters.agents_unreachable += 1;
                self.registry.agents.remove(id);
                self.registry.unreachable.insert(id.clone(), now.wall);
            }
            if !late.is_empty() {
                self.persist();
                let conns: Vec<_> = self.frameworks.values().filter_map(|f| f.conn).collect();
                for id in late {
                    for c in &conns {
                        self.emit(Effect::ToFramework(*c, SchedulerEvent::Failure { agent_id: id.clone() }));
                    }
                }
            }
        }
        let expired: Vec<String> =
            self.framework_deadlines.iter().filter(|(_, d)| now.mono >= **d).map(|(id, _)| id.clone()).collect();
        for id in expired {
            self.framework_deadlines.remove(&id);
            if self.frameworks.get(&id).is_some_and(|f| f.conn.is_none()) {
                self.remove_framework(
                    &id,
                    now,
                    "framework did not resubscribe within its failover_timeout after a master failover",
                );
            } else if !self.frameworks.contains_key(&id) {
                tracing::info!(framework_id = %id, "framework did not return within its failover_timeout; forgetting it");
                self.forget_framework(&id);
            }
        }
    }
}
