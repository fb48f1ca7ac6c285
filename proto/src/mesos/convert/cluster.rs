//! The operator API's views ([`crate::model::cluster`]) as Mesos's `mesos.v1.master` messages: `GET_STATE` and its
//! parts, roles, and the events of the operator `SUBSCRIBE` stream.

use super::super::v1;
use super::super::v1::master::{event, response};
use super::resources::resources_to_v1;
use super::tasks::{container_to_v1, discovery_to_v1, health_to_v1, kill_policy_to_v1, task_state_to_v1};
use super::{labels_to_v1, time_info};
use crate::model::TaskInfo;
use crate::model::cluster::{AgentView, ClusterState, FrameworkView, OperatorEvent, RoleView, TaskView};

/// A task as Mesos's `Task`: its info, latest state and every status. `executor_id` is set for tasks an agent runs
/// under its command executor (whose id is the task's), as Mesos's agents report them.
pub fn task_to_v1(t: &TaskView, executor_id: Option<&str>) -> v1::Task {
    let TaskInfo { name, task_id, agent_id, resources, .. } = &t.info;
    v1::Task {
        name: name.clone(),
        task_id: super::task_id(task_id.clone()),
        framework_id: super::framework_id(t.framework_id.clone()),
        executor_id: executor_id.map(super::executor_id),
        agent_id: super::agent_id(agent_id.clone()),
        state: task_state_to_v1(t.state),
        resources: resources_to_v1(resources, None),
        statuses: t.statuses.iter().map(v1::TaskStatus::from).collect(),
        labels: labels_to_v1(&t.info.labels),
        discovery: t.info.discovery.as_ref().map(discovery_to_v1),
        container: t.info.container.as_ref().map(container_to_v1),
        health_check: t.info.health_check.as_ref().map(health_to_v1),
        kill_policy: kill_policy_to_v1(t.info.kill_grace_period),
        user: t.info.command.as_ref().and_then(|c| c.user.clone()),
        ..Default::default()
    }
}

/// The executor an agent runs a command task under (Mesos's command executor: its id is the task's).
pub fn command_executor_to_v1(framework_id: &str, task: &TaskInfo) -> v1::ExecutorInfo {
    v1::ExecutorInfo {
        executor_id: super::executor_id(task.task_id.clone()),
        framework_id: Some(super::framework_id(framework_id)),
        name: Some(format!("Command Executor (Task: {})", task.task_id)),
        command: task.command.as_ref().map(super::tasks::command_to_v1),
        r#type: Some(v1::executor_info::Type::Default as i32),
        ..Default::default()
    }
}

pub fn agent_to_v1(a: &AgentView) -> response::get_agents::Agent {
    response::get_agents::Agent {
        agent_info: v1::AgentInfo::from(&a.info),
        active: a.active,
        deactivated: Some(false),
        version: a.version.clone(),
        pid: Some(format!("slave(1)@{}:{}", a.info.ip, a.info.port)),
        registered_time: Some(time_info(a.registered_time)),
        reregistered_time: a.reregistered_time.map(time_info),
        total_resources: resources_to_v1(&a.info.resources, None),
        allocated_resources: resources_to_v1(&a.allocated, None),
        offered_resources: resources_to_v1(&a.offered, None),
        capabilities: vec![v1::agent_info::Capability {
            r#type: Some(v1::agent_info::capability::Type::MultiRole as i32),
        }],
    }
}

pub fn framework_to_v1(f: &FrameworkView) -> response::get_frameworks::Framework {
    response::get_frameworks::Framework {
        framework_info: v1::FrameworkInfo::from(&f.info),
        active: f.active,
        connected: f.connected,
        recovered: f.recovered,
        registered_time: Some(time_info(f.registered_time)),
        reregistered_time: f.reregistered_time.map(time_info),
        unregistered_time: f.unregistered_time.map(time_info),
        offers: f.offers.iter().map(v1::Offer::from).collect(),
        inverse_offers: vec![],
        allocated_resources: resources_to_v1(&f.allocated, None),
        offered_resources: resources_to_v1(&f.offered, None),
    }
}

pub fn get_agents(c: &ClusterState) -> response::GetAgents {
    response::GetAgents {
        agents: c.agents.iter().map(agent_to_v1).collect(),
        recovered_agents: c.recovered_agents.iter().map(v1::AgentInfo::from).collect(),
    }
}

pub fn get_frameworks(c: &ClusterState) -> response::GetFrameworks {
    response::GetFrameworks {
        frameworks: c.frameworks.iter().map(framework_to_v1).collect(),
        completed_frameworks: c.completed_frameworks.iter().map(framework_to_v1).collect(),
        recovered_frameworks: vec![],
    }
}

/// The master's executors: Agora runs tasks under command executors only, which Mesos's master does not list.
pub fn get_executors(_: &ClusterState) -> response::GetExecutors {
    response::GetExecutors::default()
}

pub fn get_tasks(c: &ClusterState) -> response::GetTasks {
    let tasks = |ts: &[TaskView]| ts.iter().map(|t| task_to_v1(t, None)).collect();
    response::GetTasks {
        pending_tasks: vec![],
        tasks: tasks(&c.tasks),
        unreachable_tasks: tasks(&c.unreachable_tasks),
        completed_tasks: tasks(&c.completed_tasks),
        orphan_tasks: vec![],
    }
}

pub fn get_state(c: &ClusterState) -> response::GetState {
    response::GetState {
        get_tasks: Some(get_tasks(c)),
        get_executors: Some(get_executors(c)),
        get_frameworks: Some(get_frameworks(c)),
        get_agents: Some(get_agents(c)),
    }
}

pub fn role_to_v1(r: &RoleView) -> v1::Role {
    v1::Role {
        name: r.name.clone(),
        weight: r.weight,
        frameworks: r.frameworks.iter().map(super::framework_id).collect(),
        resources: resources_to_v1(&r.allocated, None),
    }
}

/// The first record of the operator stream: the state at the moment of subscription.
pub fn operator_subscribed(c: &ClusterState, heartbeat_interval_seconds: f64) -> v1::master::Event {
    v1::master::Event {
        r#type: Some(event::Type::Subscribed as i32),
        subscribed: Some(event::Subscribed {
            get_state: Some(get_state(c)),
            heartbeat_interval_seconds: Some(heartbeat_interval_seconds),
        }),
        ..Default::default()
    }
}

pub fn operator_heartbeat() -> v1::master::Event {
    v1::master::Event { r#type: Some(event::Type::Heartbeat as i32), ..Default::default() }
}

impl From<&OperatorEvent> for v1::master::Event {
    fn from(e: &OperatorEvent) -> Self {
        use event::Type as T;
        let mut out = v1::master::Event::default();
        let kind = match e {
            OperatorEvent::TaskAdded(t) => {
                out.task_added = Some(event::TaskAdded { task: task_to_v1(t, None) });
                T::TaskAdded
            }
            OperatorEvent::TaskUpdated { framework_id, status, state } => {
                out.task_updated = Some(event::TaskUpdated {
                    framework_id: super::framework_id(framework_id.clone()),
                    status: v1::TaskStatus::from(&**status),
                    state: task_state_to_v1(*state),
                });
                T::TaskUpdated
            }
            OperatorEvent::AgentAdded(a) => {
                out.agent_added = Some(event::AgentAdded { agent: agent_to_v1(a) });
                T::AgentAdded
            }
            OperatorEvent::AgentRemoved { agent_id } => {
                out.agent_removed = Some(event::AgentRemoved { agent_id: super::agent_id(agent_id.clone()) });
                T::AgentRemoved
            }
            OperatorEvent::FrameworkAdded(f) => {
                out.framework_added = Some(event::FrameworkAdded { framework: framework_to_v1(f) });
                T::FrameworkAdded
            }
            OperatorEvent::FrameworkUpdated(f) => {
                out.framework_updated = Some(event::FrameworkUpdated { framework: framework_to_v1(f) });
                T::FrameworkUpdated
            }
            OperatorEvent::FrameworkRemoved(info) => {
                out.framework_removed =
                    Some(event::FrameworkRemoved { framework_info: v1::FrameworkInfo::from(&**info) });
                T::FrameworkRemoved
            }
        };
        out.r#type = Some(kind as i32);
        out
    }
}
