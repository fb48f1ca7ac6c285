//! The cluster as the master shows it to operators: the views of agents, frameworks and tasks that `GET_STATE`
//! (and `GET_AGENTS`, `GET_FRAMEWORKS`, `GET_TASKS`) answer with, and the [`OperatorEvent`]s of the operator
//! `SUBSCRIBE` stream that carry each change after such a snapshot. A [`ClusterState`] with every later event folded
//! into it is the cluster as a fresh `GET_STATE` would show it (what the stream reports: see [`OperatorEvent`]).

use serde::{Deserialize, Serialize};

use super::{AgentInfo, FrameworkInfo, Offer, Resources, TaskInfo, TaskState, TaskStatus};

/// A task the master knows, with every status it saw (oldest first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub info: TaskInfo,
    pub framework_id: String,
    pub state: TaskState,
    pub statuses: Vec<TaskStatus>,
}

/// A registered agent (`info.id` is set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub info: AgentInfo,
    /// Linked to the master and offered; false while disconnected.
    pub active: bool,
    pub version: String,
    /// Unix seconds.
    pub registered_time: f64,
    pub reregistered_time: Option<f64>,
    /// Held by the agent's non-terminal tasks.
    pub allocated: Resources,
    /// In outstanding offers.
    pub offered: Resources,
}

/// A framework the master knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkView {
    pub info: FrameworkInfo,
    /// Subscribed now (Agora's frameworks are active exactly when connected).
    pub active: bool,
    pub connected: bool,
    /// Known only from a re-registering agent: no scheduler subscribed to this master yet.
    pub recovered: bool,
    pub registered_time: f64,
    pub reregistered_time: Option<f64>,
    pub unregistered_time: Option<f64>,
    pub offers: Vec<Offer>,
    pub allocated: Resources,
    pub offered: Resources,
}

/// Everything `GET_STATE` reports, taken at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub agents: Vec<AgentView>,
    /// Agents from the registry that have not re-registered since a failover.
    pub recovered_agents: Vec<AgentInfo>,
    pub frameworks: Vec<FrameworkView>,
    pub completed_frameworks: Vec<FrameworkView>,
    /// Non-terminal tasks, and terminal ones whose last update is not acknowledged yet.
    pub tasks: Vec<TaskView>,
    pub unreachable_tasks: Vec<TaskView>,
    pub completed_tasks: Vec<TaskView>,
}

/// A role with its weight, the frameworks in it and what they hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleView {
    pub name: String,
    pub weight: f64,
    pub frameworks: Vec<String>,
    pub allocated: Resources,
}

/// One change of the cluster, as the operator stream reports it (Mesos's `master::Event`). The stream reports
/// membership and task state: agents added and removed (an agent that re-registers is added again, with its
/// current info), frameworks added, updated (subscribed, disconnected, UPDATE_FRAMEWORK) and removed, tasks added
/// and each status they take. Resource accounting (allocated, offered) and offers are not streamed, as in Mesos.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OperatorEvent {
    TaskAdded(Box<TaskView>),
    TaskUpdated { framework_id: String, status: Box<TaskStatus>, state: TaskState },
    AgentAdded(Box<AgentView>),
    AgentRemoved { agent_id: String },
    FrameworkAdded(Box<FrameworkView>),
    FrameworkUpdated(Box<FrameworkView>),
    FrameworkRemoved(Box<FrameworkInfo>),
}
