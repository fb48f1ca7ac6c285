//! The master's metrics: `/metrics/snapshot` in Mesos's flat JSON shape, and the same figures as Prometheus text
//! at `/metrics` with Prometheus's conventions ([`EXPOSED`] says how each Mesos key is exposed: its name, HELP
//! text, type and unit), plus the allocation pass as a histogram in seconds. Both are computed from the core's
//! registries and counters ([`snapshot`] is pure: no I/O, no clock).

use std::collections::BTreeMap;

use agora_proto::model::{Resources, TaskState};
use agora_proto::prometheus::{
    Desc, Exposed, Histogram, MEGABYTE, Sample, Unit, counter, figures, gauge, render, seconds_histogram,
};

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

/// How each figure of [`snapshot`] is exposed at `/metrics`: (Mesos key, descriptor, factor to the base unit).
/// Names are the Mesos keys with `/` as `_` where that is a valid Prometheus name; cumulative figures are counters
/// (`_total`), durations are in seconds, memory and disk in bytes, `_percent` (a fraction) becomes `_ratio`, and
/// the totals lose their `_total` (which Prometheus reserves for counters).
pub const EXPOSED: &[Exposed] = &[
    ("master/elected", gauge("master_elected", "1 when this master is the elected leader"), 1.0),
    ("master/uptime_secs", gauge("master_uptime", "Time since this master started").in_unit(Unit::Seconds), 1.0),
    ("master/slaves_active", gauge("master_slaves_active", "Registered agents whose resources are offered"), 1.0),
    ("master/slaves_inactive", gauge("master_slaves_inactive", "Registered agents that are deactivated"), 1.0),
    ("master/slaves_disconnected", gauge("master_slaves_disconnected", "Agents whose link is broken"), 1.0),
    ("master/slaves_connected", gauge("master_slaves_connected", "Agents linked to this master"), 1.0),
    ("master/slaves_unreachable", gauge("master_slaves_unreachable", "Agents marked unreachable"), 1.0),
    ("master/frameworks_active", gauge("master_frameworks_active", "Frameworks subscribed and connected"), 1.0),
    ("master/frameworks_connected", gauge("master_frameworks_connected", "Frameworks connected"), 1.0),
    ("master/frameworks_inactive", gauge("master_frameworks_inactive", "Frameworks known, not connected"), 1.0),
    ("master/frameworks_disconnected", gauge("master_frameworks_disconnected", "Frameworks not connected"), 1.0),
    ("master/frameworks_completed", gauge("master_frameworks_completed", "Completed frameworks remembered"), 1.0),
    ("master/outstanding_offers", gauge("master_outstanding_offers", "Offers sent and not yet answered"), 1.0),
    ("master/tasks_staging", gauge("master_tasks_staging", "Tasks in TASK_STAGING now"), 1.0),
    ("master/tasks_starting", gauge("master_tasks_starting", "Tasks in TASK_STARTING now"), 1.0),
    ("master/tasks_running", gauge("master_tasks_running", "Tasks in TASK_RUNNING now"), 1.0),
    ("master/tasks_killing", gauge("master_tasks_killing", "Tasks in TASK_KILLING now"), 1.0),
    ("master/tasks_unreachable", gauge("master_tasks_unreachable", "Tasks in TASK_UNREACHABLE now"), 1.0),
    ("master/tasks_unknown", gauge("master_tasks_unknown", "Tasks in TASK_UNKNOWN now"), 1.0),
    ("master/tasks_finished", counter("master_tasks_finished", "Tasks that reached TASK_FINISHED"), 1.0),
    ("master/tasks_failed", counter("master_tasks_failed", "Tasks that reached TASK_FAILED"), 1.0),
    ("master/tasks_killed", counter("master_tasks_killed", "Tasks that reached TASK_KILLED"), 1.0),
    ("master/tasks_error", counter("master_tasks_error", "Tasks that reached TASK_ERROR"), 1.0),
    ("master/tasks_lost", counter("master_tasks_lost", "Tasks that reached TASK_LOST"), 1.0),
    ("master/tasks_dropped", counter("master_tasks_dropped", "Tasks that reached TASK_DROPPED"), 1.0),
    ("master/tasks_gone", counter("master_tasks_gone", "Tasks that reached TASK_GONE"), 1.0),
    (
        "master/tasks_gone_by_operator",
        counter("master_tasks_gone_by_operator", "Tasks that reached TASK_GONE_BY_OPERATOR"),
        1.0,
    ),
    ("master/cpus_total", gauge("master_cpus", "CPUs of the agents that are not unreachable"), 1.0),
    ("master/cpus_used", gauge("master_cpus_used", "CPUs used by tasks"), 1.0),
    ("master/cpus_offered", gauge("master_cpus_offered", "CPUs in outstanding offers"), 1.0),
    ("master/cpus_percent", gauge("master_cpus_used", "Fraction of the CPUs used").in_unit(Unit::Ratio), 1.0),
    ("master/mem_total", gauge("master_mem", "Memory of the agents").in_unit(Unit::Bytes), MEGABYTE),
    ("master/mem_used", gauge("master_mem_used", "Memory used by tasks").in_unit(Unit::Bytes), MEGABYTE),
    ("master/mem_offered", gauge("master_mem_offered", "Memory in offers").in_unit(Unit::Bytes), MEGABYTE),
    ("master/mem_percent", gauge("master_mem_used", "Fraction of the memory used").in_unit(Unit::Ratio), 1.0),
    ("master/disk_total", gauge("master_disk", "Disk of the agents").in_unit(Unit::Bytes), MEGABYTE),
    ("master/disk_used", gauge("master_disk_used", "Disk used by tasks").in_unit(Unit::Bytes), MEGABYTE),
    ("master/disk_offered", gauge("master_disk_offered", "Disk in offers").in_unit(Unit::Bytes), MEGABYTE),
    ("master/disk_percent", gauge("master_disk_used", "Fraction of the disk used").in_unit(Unit::Ratio), 1.0),
    ("allocator/mesos/resources/cpus/total", gauge("allocator_mesos_resources_cpus", "CPUs to allocate"), 1.0),
    (
        "allocator/mesos/resources/cpus/offered_or_allocated",
        gauge("allocator_mesos_resources_cpus_offered_or_allocated", "CPUs offered or used"),
        1.0,
    ),
    (
        "allocator/mesos/resources/mem/total",
        gauge("allocator_mesos_resources_mem", "Memory to allocate").in_unit(Unit::Bytes),
        MEGABYTE,
    ),
    (
        "allocator/mesos/resources/mem/offered_or_allocated",
        gauge("allocator_mesos_resources_mem_offered_or_allocated", "Memory offered or used").in_unit(Unit::Bytes),
        MEGABYTE,
    ),
    (
        "allocator/mesos/resources/disk/total",
        gauge("allocator_mesos_resources_disk", "Disk to allocate").in_unit(Unit::Bytes),
        MEGABYTE,
    ),
    (
        "allocator/mesos/resources/disk/offered_or_allocated",
        gauge("allocator_mesos_resources_disk_offered_or_allocated", "Disk offered or used").in_unit(Unit::Bytes),
        MEGABYTE,
    ),
    ("allocator/mesos/allocation_runs", counter("allocator_mesos_allocation_runs", "Allocation passes run"), 1.0),
    ("master/slave_registrations", counter("master_slave_registrations", "Agents that registered"), 1.0),
    ("master/slave_reregistrations", counter("master_slave_reregistrations", "Agents that re-registered"), 1.0),
    (
        "master/slave_unreachable_completed",
        counter("master_slave_unreachable_completed", "Agents marked unreachable"),
        1.0,
    ),
    ("master/offers_sent", counter("master_offers_sent", "Offers sent to frameworks"), 1.0),
    ("master/offers_accepted", counter("master_offers_accepted", "Offers accepted"), 1.0),
    ("master/offers_declined", counter("master_offers_declined", "Offers declined"), 1.0),
    ("master/offers_rescinded", counter("master_offers_rescinded", "Offers rescinded"), 1.0),
    ("master/tasks_invalid", counter("master_tasks_invalid", "Tasks refused as invalid"), 1.0),
    (
        "master/operator_event_stream_subscribers",
        gauge("master_operator_event_stream_subscribers", "Operator API event stream subscribers now"),
        1.0,
    ),
    (
        "master/operator_event_stream_slow_disconnects",
        counter(
            "master_operator_event_stream_slow_disconnects",
            "Operator API event stream subscribers disconnected for reading too slowly",
        ),
        1.0,
    ),
];

/// Keys of [`EXPOSED`] that the shell adds to the core's [`snapshot`] (the operator event streams it serves).
pub const FROM_THE_SHELL: &[&str] =
    &["master/operator_event_stream_subscribers", "master/operator_event_stream_slow_disconnects"];

/// Keys of [`snapshot`] that `/metrics` leaves out: the last pass's duration, which the histogram replaces.
pub const JSON_ONLY: &[&str] = &["allocator/mesos/allocation_run_ms"];

/// The allocation pass (building the allocator's snapshot, allocating, making the offers), as a histogram.
pub const ALLOCATION_RUN: Desc =
    seconds_histogram("allocator_mesos_allocation_run", "How long one allocation pass took");

/// `/metrics`: the figures of a [`snapshot`] (with the shell's [`FROM_THE_SHELL`]) as [`EXPOSED`] says, and the
/// allocation pass durations.
pub fn prometheus(snapshot: &Snapshot, allocation_runs: &Histogram) -> String {
    render(figures(EXPOSED, snapshot).chain([(ALLOCATION_RUN, Sample::Histogram(allocation_runs))]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::model::MasterInfo;
    use agora_proto::prometheus::lint;

    fn master() -> (Master, Now) {
        let now = Now { mono: std::time::Instant::now(), wall: 1_700_000_000.0 };
        let info = MasterInfo {
            id: "m".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            hostname: "m".into(),
            version: "1".into(),
        };
        (Master::new(info, crate::core::CoreConfig::default(), now), now)
    }

    #[test]
    fn every_figure_is_exposed_once_with_prometheus_conventions() {
        let (mut m, now) = master();
        m.tick(now);
        let s = snapshot(&m, now);
        for key in s.keys() {
            let exposed = EXPOSED.iter().filter(|(k, _, _)| k == key).count();
            assert!(exposed == 1 || JSON_ONLY.contains(&key.as_str()), "{key} exposed {exposed} times");
        }
        for (key, _, _) in EXPOSED {
            assert!(s.contains_key(*key) || FROM_THE_SHELL.contains(key), "{key} is exposed but not in the snapshot");
        }
        let text = prometheus(&s, &m.counters().allocation_seconds);
        assert_eq!(lint(&text), Ok(()), "{text}");
        assert!(text.contains("# HELP master_tasks_running Tasks in TASK_RUNNING now\n"), "{text}");
        assert!(text.contains("# TYPE master_tasks_finished_total counter\nmaster_tasks_finished_total 0\n"));
        assert!(text.contains("# TYPE master_uptime_seconds gauge\n"), "{text}");
        assert!(text.contains("# TYPE allocator_mesos_allocation_runs_total counter\n"), "{text}");
        assert!(text.contains("allocator_mesos_allocation_run_seconds_count 1\n"), "the tick ran a pass: {text}");
    }

    #[test]
    fn megabytes_are_exposed_in_bytes_and_names_are_unique() {
        let mut s = Snapshot::new();
        for (key, _, _) in EXPOSED {
            s.insert(key.to_string(), 0.0);
        }
        s.insert("master/mem_total".into(), 1024.0);
        s.insert("master/cpus_percent".into(), 0.25);
        let text = prometheus(&s, &Histogram::default());
        assert!(text.contains("\nmaster_mem_bytes 1073741824\n"), "{text}");
        assert!(text.contains("\nmaster_cpus_used_ratio 0.25\n"), "{text}");
        // Every figure is in the text: two under one name would be a TYPE given twice.
        assert_eq!(lint(&text), Ok(()), "{text}");
    }
}
