//! Reconciliation: of tasks (RECONCILE, and a KILL of a task the master does not know) and of offer operations
//! (RECONCILE_OPERATIONS).

use agora_proto::model::{OperationState, OperationStatus, Reason, TaskState, TaskStatus};

use super::{AgentState, Master, Now, SchedulerEvent, Task};

impl Master {
    /// Mesos's reconciliation: implicit (no tasks named) answers every non-terminal task; explicit answers each
    /// named task with its latest state or, when unknown, by what is known of its agent.
    pub(crate) fn reconcile(&mut self, framework_id: &str, tasks: Vec<(String, Option<String>)>, now: Now) {
        let mut updates = Vec::new();
        let f = &self.frameworks[framework_id];
        let latest = |t: &Task| {
            let mut s = t.statuses.last().cloned().unwrap_or_else(|| {
                agora_proto::model::TaskStatus::from_master(
                    &t.info.task_id,
                    &t.info.agent_id,
                    t.state,
                    Reason::Reconciliation,
                    "",
                    now.wall,
                )
            });
            s.state = t.state;
            s.reason = Some(Reason::Reconciliation);
            s.uuid = None;
            s.source = agora_proto::model::Source::Master;
            s
        };
        if tasks.is_empty() {
            for t in f.tasks.values().filter(|t| !t.state.is_terminal()) {
                updates.push(latest(t));
            }
        } else {
            for (task_id, agent_id) in tasks {
                if let Some(t) = f.tasks.get(&task_id) {
                    updates.push(latest(t));
                    continue;
                }
                if let Some(t) = f.completed_tasks.iter().rev().find(|t| t.info.task_id == task_id) {
                    updates.push(latest(t));
                    continue;
                }
                let agent_id = agent_id.unwrap_or_default();
                if self.is_recovering(&agent_id) {
                    // Mesos: the agent is admitted but has not re-registered since the failover; the task may well
                    // be running there, so no answer until the agent is back or declared unreachable.
                    continue;
                }
                let (state, message) = match self.agents.get(&agent_id) {
                    None if self.registry_says_unreachable(&agent_id) => {
                        (TaskState::Unreachable, format!("Task is unknown; agent '{agent_id}' is unreachable"))
                    }
                    Some(a) if a.state == AgentState::Unreachable => {
                        (TaskState::Unreachable, format!("Task is unknown; agent '{agent_id}' is unreachable"))
                    }
                    Some(_) => (TaskState::Gone, "Reconciliation: task is unknown to the agent".to_string()),
                    None => (TaskState::Unknown, "Reconciliation: task is unknown".to_string()),
                };
                updates.push(self.for_framework(
                    framework_id,
                    TaskStatus::from_master(&task_id, &agent_id, state, Reason::Reconciliation, message, now.wall),
                ));
            }
        }
        for u in updates {
            self.send_framework(framework_id, SchedulerEvent::Update(u));
        }
    }

    /// Mesos's operation reconciliation. Agora's offer operations (LAUNCH) report through task updates, so the master
    /// knows no operation by id: each named one is answered by what is known of its agent — RECOVERING while the
    /// agent has not re-registered after a failover, UNREACHABLE when it is, GONE_BY_OPERATOR when it was removed,
    /// UNKNOWN otherwise. Implicit reconciliation (none named) has nothing to answer.
    pub(crate) fn reconcile_operations(&mut self, framework_id: &str, operations: Vec<(String, Option<String>)>) {
        for (operation_id, agent_id) in operations {
            let state = match agent_id.as_deref() {
                Some(a) if self.is_recovering(a) => OperationState::Recovering,
                Some(a) if self.registry_says_unreachable(a) => OperationState::Unreachable,
                Some(a) if self.agents.get(a).is_some_and(|a| a.state == AgentState::Unreachable) => {
                    OperationState::Unreachable
                }
                Some(a) if self.registry.removed.contains(a) => OperationState::GoneByOperator,
                _ => OperationState::Unknown,
            };
            let status = OperationStatus {
                operation_id,
                state,
                message: "Reconciliation: the master does not know this operation".into(),
                agent_id,
                uuid: None,
            };
            self.send_framework(framework_id, SchedulerEvent::UpdateOperationStatus(status));
        }
    }
}
