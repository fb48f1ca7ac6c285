//! The master's metrics: `/metrics/snapshot` in Mesos's flat JSON shape and the same figures as Prometheus text at
//! `/metrics`. Both are computed from the core's registries and counters ([`snapshot`] is pure: no I/O, no clock).

use std::collections::BTreeMap;

use agora_proto::model::{Resources, TaskState};

use crate::core::{AgentState, Master, Now};

/// Every figure, by its Mesos key (`master/tasks_running`, `allocator/mesos/allocation_runs`, ...).
pub type Snapshot = BTreeMap<String, f64>;

/// The scalar resources the master reports totals for, as Mesos does.
pub const RESOURCE_NAMES: [&str; 3] = ["cpus", "mem", "disk"];

/// The current figures. Task gauges count the tasks the master holds now; `master/tasks_finished`, `_failed`,
/// `_killed`, `_lost`, `_error`, `_dropped`, `_gone` count tasks that reached that state over the master's life.
pub fn snapshot(m: &Master, now: Now) -> Snapshot {
    let mut s = Snapshot::new();
    let mut put = |k: &str, v: f64| {
        s.insert(k.to_string(), v);
    };
    put("master/elected", 1.0);
    put("master/uptime_secs", (now.wall - m.start_time).max(0.0));

    let count = |st: AgentState| m.agents.values().filter(|a| a.state == st).count() as f64;
    put("master/slaves_active", count(AgentState::Active));
    put("master/slaves_inactive", 0.0);
    put("master/slaves_disconnected", count(AgentState::Disconnected));
    put("master/slaves_connected", m.agents.values().filter(|a| a.conn.is_some()).count() as f64);
    put("master/slaves_unreachable", count(AgentState::Unreachable));

    let active = m.frameworks.values().filter(|f| f.active()).count() as f64;
    put("master/frameworks_active", active);
    put("master/frameworks_connected", active);
    put("master/frameworks_inactive", m.frameworks.len() as f64 - active);
    put("master/frameworks_disconnected", m.frameworks.len() as f64 - active);
    put("master/frameworks_completed", m.completed_frameworks.len() as f64);
    put("master/outstanding_offers", m.offers.len() as f64);

    let mut gauges: BTreeMap<TaskState, u64> = BTreeMap::new();
    for f in m.frameworks.values() {
        for t in f.tasks.values() {
            *gauges.entry(t.state).or_default() += 1;
        }
    }
    for st in TaskState::ALL {
        let key = format!("master/tasks_{}", st.name().trim_start_matches("TASK_").to_ascii_lowercase());
        let v = if st.is_terminal() { m.counters.tasks_terminal.get(&st) } else { gauges.get(&st) };
        put(&key, v.copied().unwrap_or(0) as f64);
    }

    // Resources over agents that are not unreachable (Mesos counts registered agents).
    let (mut total, mut used, mut offered) = (Resources::new(), Resources::new(), Resources::new());
    for a in m.agents.values().filter(|a| a.state != AgentState::Unreachable) {
        total.add(&a.info.resources);
        used.add(&a.used);
        offered.add(&a.offered);
    }
    for name in RESOURCE_NAMES {
        let t = total.scalar(name).as_f64();
        let u = used.scalar(name).as_f64();
        let o = offered.scalar(name).as_f64();
        put(&format!("master/{name}_total"), t);
        put(&format!("master/{name}_used"), u);
        put(&format!("master/{name}_percent"), if t > 0.0 { u / t } else { 0.0 });
        put(&format!("master/{name}_offered"), o);
        put(&format!("allocator/mesos/resources/{name}/total"), t);
        put(&format!("allocator/mesos/resources/{name}/offered_or_allocated"), u + o);
    }

    let c = m.counters();
    put("allocator/mesos/allocation_runs", c.allocation_runs as f64);
    put("allocator/mesos/allocation_run_ms", c.last_allocation_ms);
    put("master/slave_registrations", c.agent_registrations as f64);
    put("master/slave_reregistrations", c.agent_reregistrations as f64);
    put("master/slave_unreachable_completed", c.agents_unreachable as f64);
    put("master/offers_sent", c.offers_sent as f64);
    put("master/offers_accepted", c.offers_accepted as f64);
    put("master/offers_declined", c.offers_declined as f64);
    put("master/offers_rescinded", c.offers_rescinded as f64);
    put("master/tasks_invalid", c.tasks_invalid as f64);
    s
}

/// Prometheus text exposition of a Mesos-style snapshot: `master/tasks_running` becomes `master_tasks_running`
/// (every character outside `[a-zA-Z0-9_:]` becomes `_`), each a gauge with a `# TYPE` line.
pub fn prometheus(snapshot: &BTreeMap<String, f64>) -> String {
    agora_proto::prometheus::text(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_are_sanitised_and_values_kept() {
        let mut s = Snapshot::new();
        s.insert("master/tasks_running".into(), 3.0);
        s.insert("allocator/mesos/allocation_run_ms".into(), 0.25);
        let text = prometheus(&s);
        assert!(text.contains("# TYPE master_tasks_running gauge\nmaster_tasks_running 3\n"), "{text}");
        assert!(text.contains("allocator_mesos_allocation_run_ms 0.25\n"), "{text}");
    }
}
