//! The agent's metrics: `/metrics/snapshot` with Mesos's `slave/...` keys and the same figures as Prometheus text
//! at `/metrics`. [`snapshot`] is pure: it reads the agent's `/state` document and the current time passed in.
//!
//! Task gauges (`slave/tasks_running`, ...) count the tasks the agent runs now; the terminal counts
//! (`slave/tasks_finished`, ...) count the completed tasks the agent still remembers (its `/state` keeps the
//! latest ones), not every task over its life.

use std::collections::BTreeMap;

use serde_json::Value;

/// Every figure, by its Mesos key.
pub type Snapshot = BTreeMap<String, f64>;

const TASK_KEYS: [(&str, &str); 10] = [
    ("TASK_STAGING", "slave/tasks_staging"),
    ("TASK_STARTING", "slave/tasks_starting"),
    ("TASK_RUNNING", "slave/tasks_running"),
    ("TASK_KILLING", "slave/tasks_killing"),
    ("TASK_FINISHED", "slave/tasks_finished"),
    ("TASK_FAILED", "slave/tasks_failed"),
    ("TASK_KILLED", "slave/tasks_killed"),
    ("TASK_LOST", "slave/tasks_lost"),
    ("TASK_ERROR", "slave/tasks_error"),
    ("TASK_GONE", "slave/tasks_gone"),
];

/// The figures from the agent's `/state` (`AgentCore::state_json`) at `now_wall` (Unix seconds).
pub fn snapshot(state: &Value, now_wall: f64) -> Snapshot {
    let mut s = Snapshot::new();
    s.insert("slave/registered".into(), if state["registered"].as_bool() == Some(true) { 1.0 } else { 0.0 });
    s.insert("slave/uptime_secs".into(), (now_wall - state["start_time"].as_f64().unwrap_or(now_wall)).max(0.0));
    for (_, key) in TASK_KEYS {
        s.insert(key.into(), 0.0);
    }
    let mut used: BTreeMap<&str, f64> = BTreeMap::new();
    let mut executors = 0.0;
    let frameworks = state["frameworks"].as_array().map(Vec::as_slice).unwrap_or_default();
    let count = |task: &Value, s: &mut Snapshot| {
        if let Some((_, key)) = TASK_KEYS.iter().find(|(name, _)| task["state"] == *name) {
            *s.entry(key.to_string()).or_default() += 1.0;
        }
    };
    for f in frameworks {
        for e in f["executors"].as_array().into_iter().flatten() {
            executors += 1.0;
            for t in e["tasks"].as_array().into_iter().flatten() {
                count(t, &mut s);
                for name in ["cpus", "mem", "disk"] {
                    *used.entry(name).or_default() += t["resources"][name].as_f64().unwrap_or(0.0);
                }
            }
        }
        for t in f["completed_tasks"].as_array().into_iter().flatten() {
            count(t, &mut s);
        }
    }
    s.insert("slave/frameworks_active".into(), frameworks.len() as f64);
    s.insert("slave/executors_running".into(), executors);
    for name in ["cpus", "mem", "disk"] {
        let total = state["resources"][name].as_f64().unwrap_or(0.0);
        let u = used.get(name).copied().unwrap_or(0.0);
        s.insert(format!("slave/{name}_total"), total);
        s.insert(format!("slave/{name}_used"), u);
        s.insert(format!("slave/{name}_percent"), if total > 0.0 { u / total } else { 0.0 });
    }
    s
}

/// The sandbox collector's counters under Mesos's keys (`gc/path_removals_succeeded`, `_failed`, `_pending`).
pub fn add_gc(s: &mut Snapshot, gc: &crate::gc::Counters) {
    s.insert("gc/path_removals_succeeded".into(), gc.succeeded as f64);
    s.insert("gc/path_removals_failed".into(), gc.failed as f64);
    s.insert("gc/path_removals_pending".into(), gc.pending as f64);
}

/// Prometheus text exposition: `slave/tasks_running` becomes `slave_tasks_running`, each a gauge.
pub fn prometheus(snapshot: &Snapshot) -> String {
    agora_proto::prometheus::text(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_tasks_and_resources_from_state() {
        let state = json!({
            "registered": true,
            "start_time": 100.0,
            "resources": {"cpus": 4.0, "mem": 1024.0, "disk": 0.0},
            "frameworks": [{
                "executors": [{"tasks": [{"state": "TASK_RUNNING", "resources": {"cpus": 0.5, "mem": 64.0}}]}],
                "completed_tasks": [{"state": "TASK_FINISHED"}, {"state": "TASK_FAILED"}, {"state": "TASK_FINISHED"}],
            }],
        });
        let s = snapshot(&state, 110.0);
        assert_eq!(s["slave/registered"], 1.0);
        assert_eq!(s["slave/uptime_secs"], 10.0);
        assert_eq!(s["slave/tasks_running"], 1.0);
        assert_eq!(s["slave/tasks_finished"], 2.0);
        assert_eq!(s["slave/tasks_failed"], 1.0);
        assert_eq!(s["slave/cpus_used"], 0.5);
        assert_eq!(s["slave/cpus_total"], 4.0);
        assert_eq!(s["slave/mem_percent"], 0.0625);
        let text = prometheus(&s);
        assert!(text.contains("# TYPE slave_tasks_running gauge\nslave_tasks_running 1\n"), "{text}");

        let mut s = s;
        add_gc(&mut s, &crate::gc::Counters { succeeded: 3, failed: 1, pending: 2 });
        assert_eq!(["succeeded", "failed", "pending"].map(|k| s[&format!("gc/path_removals_{k}")]), [3.0, 1.0, 2.0]);
    }
}
