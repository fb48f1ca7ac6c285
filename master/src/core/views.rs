//! What the operator API shows: the core's registries as the views of [`agora_proto::model::cluster`] — the
//! `GET_STATE` snapshot, roles, and the agent, framework and task views the operator events carry.

use std::collections::BTreeMap;

use agora_proto::model::cluster::{AgentView, ClusterState, FrameworkView, RoleView, TaskView};
use agora_proto::model::{AgentInfo, Resources, TaskState, VERSION};

use super::{Agent, AgentState, Framework, Master, Task};

pub(crate) fn task_view(t: &Task) -> TaskView {
    TaskView {
        info: t.info.clone(),
        framework_id: t.framework_id.clone(),
        state: t.state,
        statuses: t.statuses.clone(),
    }
}

pub(crate) fn agent_view(a: &Agent) -> AgentView {
    AgentView {
        info: a.info.clone(),
        active: a.state == AgentState::Active,
        version: VERSION.to_string(),
        registered_time: a.registered_time,
        reregistered_time: a.reregistered_time,
        allocated: a.used.clone(),
        offered: a.offered.clone(),
    }
}

impl Master {
    pub(crate) fn framework_view(&self, f: &Framework) -> FrameworkView {
        let offers: Vec<_> = f.offers.iter().filter_map(|id| self.offers.get(id)).map(|o| o.offer.clone()).collect();
        let mut offered = Resources::new();
        for o in &offers {
            offered.add(&o.resources);
        }
        let mut allocated = Resources::new();
        for t in f.tasks.values().filter(|t| !t.resources_released) {
            allocated.add(&t.info.resources);
        }
        FrameworkView {
            info: f.info.clone(),
            active: f.active(),
            connected: f.active(),
            recovered: f.recovered,
            registered_time: f.registered_time,
            reregistered_time: f.reregistered_time,
            unregistered_time: f.unregistered_time,
            offers,
            allocated,
            offered,
        }
    }

    /// The view of a framework the master knows (for its operator events).
    pub(crate) fn framework_view_of(&self, id: &str) -> Option<FrameworkView> {
        self.frameworks.get(id).map(|f| self.framework_view(f))
    }

    /// Everything `GET_STATE` answers, now.
    pub fn cluster_state(&self) -> ClusterState {
        let mut state = ClusterState {
            agents: self.agents.values().filter(|a| a.state != AgentState::Unreachable).map(agent_view).collect(),
            recovered_agents: self
                .recovering
                .iter()
                .map(|(id, a)| AgentInfo {
                    id: Some(id.clone()),
                    hostname: a.hostname.clone(),
                    ip: String::new(),
                    port: a.port,
                    resources: Resources::new(),
                    attributes: Default::default(),
                })
                .collect(),
            frameworks: self.frameworks.values().map(|f| self.framework_view(f)).collect(),
            completed_frameworks: self.completed_frameworks.iter().map(|f| self.framework_view(f)).collect(),
            ..ClusterState::default()
        };
        for f in self.frameworks.values().chain(self.completed_frameworks.iter()) {
            for t in f.tasks.values() {
                match t.state {
                    TaskState::Unreachable => state.unreachable_tasks.push(task_view(t)),
                    _ => state.tasks.push(task_view(t)),
                }
            }
            state.completed_tasks.extend(f.completed_tasks.iter().map(task_view));
        }
        state
    }

    /// Every role with a weight or a framework, and what its frameworks hold (Mesos's `GET_ROLES`).
    pub fn roles(&self) -> Vec<RoleView> {
        let weights = &self.config.weights;
        let mut roles: BTreeMap<String, RoleView> = BTreeMap::new();
        fn role<'a>(roles: &'a mut BTreeMap<String, RoleView>, weight: f64, name: &str) -> &'a mut RoleView {
            roles.entry(name.to_string()).or_insert_with(|| RoleView {
                name: name.to_string(),
                weight,
                frameworks: vec![],
                allocated: Resources::new(),
            })
        }
        let weight = |name: &str| weights.get(name).copied().unwrap_or(1.0);
        for name in weights.keys() {
            role(&mut roles, weight(name), name);
        }
        for f in self.frameworks.values() {
            for r in &f.info.roles {
                role(&mut roles, weight(r), r).frameworks.push(f.id.clone());
            }
            // Held by tasks and outstanding offers, as the allocator counts it.
            for (r, held) in f.allocated.iter().filter(|(_, held)| !held.is_empty()) {
                role(&mut roles, weight(r), r).allocated.add(held);
            }
        }
        roles.into_values().collect()
    }

    /// When this master started (Unix seconds); it leads from then on (`GET_MASTER`'s `start_time`).
    pub fn start_time(&self) -> f64 {
        self.start_time
    }
}
