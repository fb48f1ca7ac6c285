//! The Prometheus text exposition format (0.0.4) for flat, Mesos-style metric snapshots: every component serves
//! its `/metrics/snapshot` figures through this at `/metrics`.

use std::fmt::Display;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A metric name Prometheus accepts: `master/tasks_running` → `master_tasks_running` (every character outside
/// `[a-zA-Z0-9_:]` becomes `_`).
pub fn metric_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect()
}

/// Each `(key, value)` as a gauge with its `# TYPE` line, in the given order.
pub fn text<K: AsRef<str>, V: Display>(metrics: impl IntoIterator<Item = (K, V)>) -> String {
    let mut out = String::new();
    for (k, v) in metrics {
        let name = metric_name(k.as_ref());
        out.push_str(&format!("# TYPE {name} gauge\n{name} {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_and_values_kept() {
        let t = text([("master/tasks_running", 3.0), ("service.marathon.app-count", 1.5)]);
        assert_eq!(
            t,
            "# TYPE master_tasks_running gauge\nmaster_tasks_running 3\n\
             # TYPE service_marathon_app_count gauge\nservice_marathon_app_count 1.5\n"
        );
    }
}
