//! What operators read: the agent's `/state` in Mesos's shape and the running containers for
//! `/monitor/statistics`.

use agora_proto::model::{TaskInfo, TaskState};
use serde_json::{Value, json};

use super::AgentCore;
use super::tasks::Container;

impl AgentCore {
    /// The running tasks' ids for `/monitor/statistics`: (framework id, task id = executor id, container id).
    pub fn running_containers(&self) -> Vec<(String, String, String)> {
        self.tasks
            .values()
            .filter(|t| t.container == Container::Running)
            .map(|t| (t.framework_id.clone(), t.info.task_id.clone(), t.container_id.clone()))
            .collect()
    }

    /// The agent's `/state`, in the Mesos shape.
    pub fn state_json(&self) -> Value {
        let a = &self.settings.agent;
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let task_json = |framework_id: &str, info: &TaskInfo, state: TaskState| {
            json!({
                "id": info.task_id,
                "name": info.name,
                "framework_id": framework_id,
                "executor_id": "",
                "slave_id": agent_id,
                "state": state.name(),
                "resources": Value::Object(info.resources.flat_json()),
            })
        };
        // A bridged task shows its address as Mesos's agent does: in its latest status's `container_status`.
        let live_task_json = |framework_id: &str, t: &super::tasks::TaskRun| {
            let mut v = task_json(framework_id, &t.info, t.state);
            if let Some(c) = self.container_status(t) {
                v["statuses"] = json!([{"state": t.state.name(), "container_status": c.mesos_json()}]);
            }
            v
        };
        let mut ids: Vec<&String> = self.tasks.values().map(|t| &t.framework_id).collect();
        ids.extend(self.completed.iter().map(|c| &c.framework_id));
        ids.sort();
        ids.dedup();
        let frameworks: Vec<Value> = ids
            .into_iter()
            .map(|fid| {
                let executors: Vec<Value> = self
                    .tasks
                    .of_framework(fid)
                    .map(|(_, t)| {
                        json!({
                            "id": t.info.task_id,
                            "name": format!("Command Executor (Task: {})", t.info.task_id),
                            "container": t.container_id,
                            "directory": t.sandbox.display().to_string(),
                            "tasks": [live_task_json(fid, t)],
                        })
                    })
                    .collect();
                let completed: Vec<Value> = self
                    .completed
                    .iter()
                    .filter(|c| &c.framework_id == fid)
                    .map(|c| task_json(fid, &c.info, c.state))
                    .collect();
                let name = self.frameworks.get(fid).map(|f| f.name.clone()).unwrap_or_default();
                json!({"id": fid, "name": name, "executors": executors, "completed_tasks": completed})
            })
            .collect();
        json!({
            "id": agent_id,
            "pid": format!("slave(1)@{}:{}", a.ip, a.port),
            "hostname": a.hostname,
            "port": a.port,
            "version": agora_proto::model::VERSION,
            "resources": Value::Object(a.resources.flat_json()),
            "attributes": Value::Object(a.attributes.flat_json()),
            "master_hostname": self.master.as_ref().map(|m| m.hostname.clone()).unwrap_or_default(),
            "start_time": self.settings.started.1,
            "registered": self.is_registered(),
            "frameworks": frameworks,
        })
    }
}
