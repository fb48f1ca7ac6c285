//! The agent's metrics: `/metrics/snapshot` with Mesos's `slave/...` keys, and the same figures as Prometheus text
//! at `/metrics` with Prometheus's conventions ([`EXPOSED`] says how each key is exposed), plus the launch stages
//! as histograms in seconds ([`LaunchTimes`], which the shell fills). [`snapshot`] is pure: it reads the agent's
//! `/state` document and the current time passed in.
//!
//! Task gauges (`slave/tasks_running`, ...) count the tasks the agent runs now; the terminal counts
//! (`slave/tasks_finished`, ...) count the completed tasks the agent still remembers (its `/state` keeps the
//! latest ones), not every task over its life, so they are gauges too.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use agora_proto::prometheus::{
    Desc, Exposed, Histogram, MEGABYTE, Sample, Unit, counter, figures, gauge, render, seconds_histogram,
};
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

/// How each figure of [`snapshot`] (and [`add_gc`]) is exposed at `/metrics`: (Mesos key, descriptor, factor to
/// the base unit). As on the master: `/` becomes `_`, cumulative figures are counters, sizes are in bytes,
/// `_percent` (a fraction) becomes `_ratio`, and the totals lose their `_total`.
pub const EXPOSED: &[Exposed] = &[
    ("slave/registered", gauge("slave_registered", "1 when registered with a master"), 1.0),
    ("slave/uptime_secs", gauge("slave_uptime", "Time since this agent started").in_unit(Unit::Seconds), 1.0),
    ("slave/tasks_staging", gauge("slave_tasks_staging", "Tasks in TASK_STAGING now"), 1.0),
    ("slave/tasks_starting", gauge("slave_tasks_starting", "Tasks in TASK_STARTING now"), 1.0),
    ("slave/tasks_running", gauge("slave_tasks_running", "Tasks in TASK_RUNNING now"), 1.0),
    ("slave/tasks_killing", gauge("slave_tasks_killing", "Tasks in TASK_KILLING now"), 1.0),
    ("slave/tasks_finished", gauge("slave_tasks_finished", "Remembered tasks that ended TASK_FINISHED"), 1.0),
    ("slave/tasks_failed", gauge("slave_tasks_failed", "Remembered tasks that ended TASK_FAILED"), 1.0),
    ("slave/tasks_killed", gauge("slave_tasks_killed", "Remembered tasks that ended TASK_KILLED"), 1.0),
    ("slave/tasks_lost", gauge("slave_tasks_lost", "Remembered tasks that ended TASK_LOST"), 1.0),
    ("slave/tasks_error", gauge("slave_tasks_error", "Remembered tasks that ended TASK_ERROR"), 1.0),
    ("slave/tasks_gone", gauge("slave_tasks_gone", "Remembered tasks that ended TASK_GONE"), 1.0),
    ("slave/frameworks_active", gauge("slave_frameworks_active", "Frameworks with tasks on this agent"), 1.0),
    ("slave/executors_running", gauge("slave_executors_running", "Executors running"), 1.0),
    ("slave/cpus_total", gauge("slave_cpus", "CPUs of this agent"), 1.0),
    ("slave/cpus_used", gauge("slave_cpus_used", "CPUs used by tasks"), 1.0),
    ("slave/cpus_percent", gauge("slave_cpus_used", "Fraction of the CPUs used").in_unit(Unit::Ratio), 1.0),
    ("slave/mem_total", gauge("slave_mem", "Memory of this agent").in_unit(Unit::Bytes), MEGABYTE),
    ("slave/mem_used", gauge("slave_mem_used", "Memory used by tasks").in_unit(Unit::Bytes), MEGABYTE),
    ("slave/mem_percent", gauge("slave_mem_used", "Fraction of the memory used").in_unit(Unit::Ratio), 1.0),
    ("slave/disk_total", gauge("slave_disk", "Disk of this agent").in_unit(Unit::Bytes), MEGABYTE),
    ("slave/disk_used", gauge("slave_disk_used", "Disk used by tasks").in_unit(Unit::Bytes), MEGABYTE),
    ("slave/disk_percent", gauge("slave_disk_used", "Fraction of the disk used").in_unit(Unit::Ratio), 1.0),
    (
        "gc/path_removals_succeeded",
        counter("gc_path_removals_succeeded", "Sandboxes the garbage collector removed"),
        1.0,
    ),
    (
        "gc/path_removals_failed",
        counter("gc_path_removals_failed", "Sandboxes the garbage collector failed to remove"),
        1.0,
    ),
    ("gc/path_removals_pending", gauge("gc_path_removals_pending", "Sandboxes waiting to be removed"), 1.0),
];

/// The containerizer's launch of a task's container.
pub const CONTAINER_LAUNCH: Desc =
    seconds_histogram("slave_container_launch", "How long the containerizer took to launch a container");
/// From the agent starting a task (sandbox, fetch, image, container) to the task running (TASK_RUNNING).
pub const TASK_LAUNCH: Desc =
    seconds_histogram("slave_task_launch", "Time from starting a task's launch to TASK_RUNNING");

/// The launch stages' durations, observed by the shell as launches end, read by `/metrics`.
#[derive(Debug, Default)]
pub struct LaunchTimes {
    stages: Mutex<LaunchStages>,
}

#[derive(Clone, Debug, Default)]
pub struct LaunchStages {
    pub container_launch: Histogram,
    pub task_launch: Histogram,
}

impl LaunchTimes {
    pub fn container_launched(&self, took: Duration) {
        self.stages().container_launch.observe(took.as_secs_f64());
    }

    pub fn task_running(&self, took: Duration) {
        self.stages().task_launch.observe(took.as_secs_f64());
    }

    pub fn snapshot(&self) -> LaunchStages {
        self.stages().clone()
    }

    fn stages(&self) -> std::sync::MutexGuard<'_, LaunchStages> {
        self.stages.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `/metrics`: the figures of [`snapshot`] as [`EXPOSED`] says, and the launch stages.
pub fn prometheus(snapshot: &Snapshot, launches: &LaunchStages) -> String {
    render(figures(EXPOSED, snapshot).chain([
        (CONTAINER_LAUNCH, Sample::Histogram(&launches.container_launch)),
        (TASK_LAUNCH, Sample::Histogram(&launches.task_launch)),
    ]))
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
        let launches = LaunchTimes::default();
        launches.container_launched(Duration::from_millis(30));
        launches.task_running(Duration::from_millis(40));
        let text = prometheus(&s, &launches.snapshot());
        assert!(text.contains("# TYPE slave_tasks_running gauge\nslave_tasks_running 1\n"), "{text}");
        assert!(text.contains("\nslave_mem_bytes 1073741824\n"), "{text}");
        assert!(text.contains("\nslave_mem_used_ratio 0.0625\n"), "{text}");
        assert!(text.contains("slave_container_launch_seconds_bucket{le=\"0.05\"} 1\n"), "{text}");
        assert!(text.contains("slave_task_launch_seconds_sum 0.04\nslave_task_launch_seconds_count 1\n"), "{text}");
        assert_eq!(agora_proto::prometheus::lint(&text), Ok(()), "{text}");

        let mut s = s;
        add_gc(&mut s, &crate::gc::Counters { succeeded: 3, failed: 1, pending: 2 });
        assert_eq!(["succeeded", "failed", "pending"].map(|k| s[&format!("gc/path_removals_{k}")]), [3.0, 1.0, 2.0]);
        let text = prometheus(&s, &LaunchStages::default());
        assert!(text.contains("# TYPE gc_path_removals_succeeded_total counter\ngc_path_removals_succeeded_total 3\n"));
        // Every figure is exposed once, and under a name of its own (two under one name: a TYPE given twice).
        for key in s.keys() {
            assert_eq!(EXPOSED.iter().filter(|(k, _, _)| k == key).count(), 1, "{key}");
        }
        assert_eq!(agora_proto::prometheus::lint(&text), Ok(()), "{text}");
    }
}
