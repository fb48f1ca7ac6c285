//! The Prometheus text exposition format (0.0.4): typed metric descriptors ([`Desc`]), a [`Histogram`], and
//! [`render`], which the master's and the agent's `/metrics` use, so every metric they expose has its `# HELP` and
//! `# TYPE` lines, counters end in `_total`, and durations and sizes are in seconds and bytes. [`lint`] checks a
//! text against the rules `promtool check metrics` enforces, so tests keep the output honest without promtool.
//!
//! [`text`] is the older, untyped form (every figure a gauge, no HELP), kept for Marathon's `/metrics` and its
//! names.

use std::fmt::{Display, Write};

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

/// What a metric's value means over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (from the process's start); the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets, with their sum and count.
    Histogram,
}

/// The base unit a metric is measured in; it ends the name (before `_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A count or another dimensionless figure (cpus).
    None,
    Seconds,
    Bytes,
    /// A fraction from 0 to 1.
    Ratio,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Seconds => "_seconds",
            Unit::Bytes => "_bytes",
            Unit::Ratio => "_ratio",
        }
    }
}

/// A metric's identity: its base name (`master_uptime`), what it means, its kind and unit. The exposed name adds
/// the unit and, for a counter, `_total`: `master_uptime_seconds`, `master_offers_sent_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub base: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub unit: Unit,
}

/// A counter without a unit (`base` + `_total`).
pub const fn counter(base: &'static str, help: &'static str) -> Desc {
    Desc { base, help, kind: Kind::Counter, unit: Unit::None }
}

/// A gauge without a unit; [`Desc::in_unit`] gives it one.
pub const fn gauge(base: &'static str, help: &'static str) -> Desc {
    Desc { base, help, kind: Kind::Gauge, unit: Unit::None }
}

/// A histogram of durations, in seconds.
pub const fn seconds_histogram(base: &'static str, help: &'static str) -> Desc {
    Desc { base, help, kind: Kind::Histogram, unit: Unit::Seconds }
}

/// Mesos reports memory and disk in megabytes (of 2^20 bytes); Prometheus wants bytes.
pub const MEGABYTE: f64 = 1_048_576.0;

impl Desc {
    pub const fn in_unit(self, unit: Unit) -> Desc {
        Desc { unit, ..self }
    }

    /// The name as exposed.
    pub fn name(&self) -> String {
        let total = if self.kind == Kind::Counter { "_total" } else { "" };
        format!("{}{}{total}", self.base, self.unit.suffix())
    }
}

/// Bucket bounds (seconds) for durations from a millisecond to a minute: an allocation pass, a container launch.
pub const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Observations counted in buckets (`le`: less than or equal to the bound), with their sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative; the last one is above every bound (`+Inf`).
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// A histogram over `bounds`, which must increase.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    /// Counts one observation (a value that is not finite counts in `+Inf` and not in the sum).
    pub fn observe(&mut self, value: f64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        if value.is_finite() {
            self.sum += value;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(bound, observations ≤ bound)` for each bound, then `(+∞, count)`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        bounds.zip(self.counts.iter().scan(0, |acc, n| {
            *acc += n;
            Some(*acc)
        }))
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new(DURATION_BUCKETS)
    }
}

/// How one figure of a Mesos-style snapshot (`master/mem_total`) is exposed: its key, its descriptor, and the
/// factor from the snapshot's unit to the base unit (e.g. [`MEGABYTE`]).
pub type Exposed = (&'static str, Desc, f64);

/// The figures of `snapshot` that `table` exposes, in the table's order, in base units.
pub fn figures<'a>(
    table: &'a [Exposed],
    snapshot: &'a std::collections::BTreeMap<String, f64>,
) -> impl Iterator<Item = (Desc, Sample<'a>)> + 'a {
    table.iter().filter_map(|(key, desc, factor)| snapshot.get(*key).map(|v| (*desc, Sample::Number(v * factor))))
}

/// A metric's current value.
#[derive(Clone, Copy, Debug)]
pub enum Sample<'a> {
    Number(f64),
    Histogram(&'a Histogram),
}

/// Renders metrics in the text format, each with its `# HELP` and `# TYPE` lines. A histogram's descriptor must
/// come with a [`Sample::Histogram`] and the others with a number; a mismatch renders the number as a gauge.
pub fn render<'a>(metrics: impl IntoIterator<Item = (Desc, Sample<'a>)>) -> String {
    let mut out = String::new();
    for (desc, sample) in metrics {
        let name = desc.name();
        let help = desc.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        match (desc.kind, sample) {
            (Kind::Histogram, Sample::Histogram(h)) => {
                let _ = writeln!(out, "# TYPE {name} histogram");
                for (bound, n) in h.cumulative() {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", number(bound));
                }
                let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", number(h.sum()), h.count());
            }
            (kind, Sample::Number(v)) => {
                let kind = if kind == Kind::Counter { "counter" } else { "gauge" };
                let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {}", number(v));
            }
            (_, Sample::Histogram(h)) => {
                let _ = writeln!(out, "# TYPE {name} gauge\n{name} {}", h.count());
            }
        }
    }
    out
}

/// A value as the format spells it (`+Inf`, `-Inf`, `NaN`, else the shortest decimal).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        v.to_string()
    }
}

/// Name tokens that are abbreviated units (promtool's list, plus `secs` and `msec`).
const ABBREVIATED_UNITS: &[&str] =
    &["s", "ms", "us", "ns", "sec", "secs", "msec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"];
/// Name tokens that are units other than the base one.
const NON_BASE_UNITS: &[(&str, &str)] = &[
    ("milliseconds", "seconds"),
    ("microseconds", "seconds"),
    ("nanoseconds", "seconds"),
    ("minutes", "seconds"),
    ("hours", "seconds"),
    ("days", "seconds"),
    ("kilobytes", "bytes"),
    ("megabytes", "bytes"),
    ("gigabytes", "bytes"),
    ("percent", "ratio"),
];

/// Checks a text exposition against the rules `promtool check metrics` enforces, plus the format's own: every
/// family has HELP text and a TYPE given once before its samples; names are snake_case without `:`, abbreviated
/// or non-base units, or the type in them; counters end in `_total` and nothing else does; only histograms have
/// `_bucket`, `_sum` and `_count` series, and a histogram's buckets increase to `+Inf`, are cumulative, and agree
/// with its count. Returns every problem found, one line each, naming the metric.
pub fn lint(text: &str) -> Result<(), Vec<String>> {
    use std::collections::BTreeMap;
    let mut problems = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: BTreeMap<String, bool> = BTreeMap::new();
    let mut histograms: BTreeMap<String, HistogramRead> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if help.trim().is_empty() {
                problems.push(format!("{name}: empty help text"));
            }
            if helped.insert(name.to_string(), true).is_some() {
                problems.push(format!("{name}: HELP given twice"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                problems.push(format!("{name}: unknown type '{kind}'"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                problems.push(format!("{name}: TYPE given twice"));
            }
            problems.extend(lint_name(name, kind));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => {
                problems.push(format!("'{line}': no value"));
                continue;
            }
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => {
                    problems.push(format!("'{line}': value is not a number"));
                    continue;
                }
            },
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').unwrap_or(labels)),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|k| k == "histogram")))
            .unwrap_or(name);
        let Some(kind) = types.get(family) else {
            problems.push(format!("{name}: sample before its TYPE line"));
            continue;
        };
        if !helped.contains_key(family) {
            problems.push(format!("{family}: no help text"));
            helped.insert(family.to_string(), false);
        }
        if kind == "histogram" {
            let h = histograms.entry(family.to_string()).or_default();
            if name.ends_with("_bucket") {
                let le = labels.strip_prefix("le=\"").and_then(|l| l.strip_suffix('"'));
                match le.map(|l| if l == "+Inf" { Ok(f64::INFINITY) } else { l.parse::<f64>() }) {
                    Some(Ok(bound)) => h.buckets.push((bound, value)),
                    _ => problems.push(format!("{name}: bucket without a valid le label")),
                }
            } else if name.ends_with("_sum") {
                h.sum = Some(value);
            } else if name.ends_with("_count") {
                h.count = Some(value);
            } else {
                problems.push(format!("{name}: a histogram has only _bucket, _sum and _count series"));
            }
        } else if kind == "counter" && value < 0.0 {
            problems.push(format!("{name}: a counter cannot be negative"));
        }
    }
    for (name, HistogramRead { buckets, sum, count }) in &histograms {
        if buckets.last().is_none_or(|(bound, _)| *bound != f64::INFINITY) {
            problems.push(format!("{name}: the last bucket must be le=\"+Inf\""));
        }
        if buckets.windows(2).any(|w| w[0].0 >= w[1].0) {
            problems.push(format!("{name}: bucket bounds must increase"));
        }
        if buckets.windows(2).any(|w| w[0].1 > w[1].1) {
            problems.push(format!("{name}: bucket counts must be cumulative"));
        }
        match (sum, count, buckets.last()) {
            (Some(_), Some(count), Some((_, inf))) if count == inf => {}
            (Some(_), Some(_), _) => problems.push(format!("{name}: _count differs from the +Inf bucket")),
            _ => problems.push(format!("{name}: a histogram needs _sum and _count")),
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// A histogram's series as [`lint`] read them.
#[derive(Default)]
struct HistogramRead {
    /// (bound, cumulative count), in the order given.
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// The naming rules for one family of type `kind`.
fn lint_name(name: &str, kind: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !valid {
        problems.push(format!("{name}: not a valid metric name"));
    }
    if name.contains(':') {
        problems.push(format!("{name}: metric names should not contain ':'"));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        problems.push(format!("{name}: metric names should be snake_case, not camelCase"));
    }
    let tokens: Vec<&str> = name.split('_').collect();
    for t in &tokens {
        if ABBREVIATED_UNITS.contains(t) {
            problems.push(format!("{name}: metric names should not contain abbreviated units ('{t}')"));
        }
        if let Some((_, base)) = NON_BASE_UNITS.iter().find(|(unit, _)| unit == t) {
            problems.push(format!("{name}: use the base unit '{base}' instead of '{t}'"));
        }
        if ["counter", "gauge", "histogram", "summary"].contains(t) {
            problems.push(format!("{name}: metric names should not include their type ('{t}')"));
        }
    }
    let total = name.ends_with("_total");
    match kind {
        "counter" if !total => problems.push(format!("{name}: counter metrics should have the '_total' suffix")),
        "counter" => {}
        _ if total => problems.push(format!("{name}: non-counter metrics should not have the '_total' suffix")),
        _ => {}
    }
    if !["histogram", "summary"].contains(&kind) {
        for suffix in ["_bucket", "_sum", "_count"] {
            if name.ends_with(suffix) {
                problems.push(format!("{name}: non-histogram metrics should not have the '{suffix}' suffix"));
            }
        }
    }
    problems
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

    #[test]
    fn descriptors_name_their_unit_and_counters_their_total() {
        assert_eq!(gauge("master_uptime", "h").in_unit(Unit::Seconds).name(), "master_uptime_seconds");
        assert_eq!(counter("master_offers_sent", "h").name(), "master_offers_sent_total");
        assert_eq!(gauge("slave_mem", "h").in_unit(Unit::Bytes).name(), "slave_mem_bytes");
        assert_eq!(seconds_histogram("allocation_run", "h").name(), "allocation_run_seconds");
    }

    #[test]
    fn renders_help_type_and_histogram_series() {
        let mut h = Histogram::new(&[0.01, 0.1]);
        for v in [0.0078125, 0.03125, 0.0625, 3.0] {
            h.observe(v);
        }
        let text = render([
            (counter("runs", "Passes run.\nSince start."), Sample::Number(4.0)),
            (gauge("up", "Whether it leads.").in_unit(Unit::Ratio), Sample::Number(0.5)),
            (seconds_histogram("run", "How long a pass took."), Sample::Histogram(&h)),
        ]);
        assert_eq!(
            text,
            "# HELP runs_total Passes run.\\nSince start.\n# TYPE runs_total counter\nruns_total 4\n\
             # HELP up_ratio Whether it leads.\n# TYPE up_ratio gauge\nup_ratio 0.5\n\
             # HELP run_seconds How long a pass took.\n# TYPE run_seconds histogram\n\
             run_seconds_bucket{le=\"0.01\"} 1\nrun_seconds_bucket{le=\"0.1\"} 3\nrun_seconds_bucket{le=\"+Inf\"} 4\n\
             run_seconds_sum 3.1015625\nrun_seconds_count 4\n"
        );
        assert_eq!(lint(&text), Ok(()));
    }

    #[test]
    fn histograms_count_at_the_bound_and_above_all_bounds() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(1.0);
        h.observe(2.5);
        h.observe(f64::NAN);
        assert_eq!(h.cumulative().collect::<Vec<_>>(), [(1.0, 1), (2.0, 1), (f64::INFINITY, 3)]);
        assert_eq!((h.count(), h.sum()), (3, 3.5));
    }

    #[test]
    fn lint_reports_what_promtool_reports() {
        // Each case: a text and a fragment of the problem it must raise.
        let cases = [
            ("# TYPE a gauge\na 1\n", "a: no help text"),
            ("# HELP a_total x\n# TYPE a_total gauge\na_total 1\n", "should not have the '_total' suffix"),
            ("# HELP runs x\n# TYPE runs counter\nruns 1\n", "should have the '_total' suffix"),
            ("# HELP run_ms x\n# TYPE run_ms gauge\nrun_ms 1\n", "abbreviated units ('ms')"),
            ("# HELP up_secs x\n# TYPE up_secs gauge\nup_secs 1\n", "abbreviated units ('secs')"),
            ("# HELP mem_megabytes x\n# TYPE mem_megabytes gauge\nmem_megabytes 1\n", "base unit 'bytes'"),
            ("# HELP a:b x\n# TYPE a:b gauge\na:b 1\n", "should not contain ':'"),
            ("# HELP x_count x\n# TYPE x_count gauge\nx_count 1\n", "should not have the '_count' suffix"),
            ("# HELP gauge_x x\n# TYPE gauge_x gauge\ngauge_x 1\n", "should not include their type"),
            ("# HELP fooBar x\n# TYPE fooBar gauge\nfooBar 1\n", "snake_case"),
            ("# HELP a \n# TYPE a gauge\na 1\n", "a: empty help text"),
            ("a 1\n", "a: sample before its TYPE line"),
            ("# HELP a x\n# TYPE a gauge\na 1\n# HELP a y\n# TYPE a gauge\na 2\n", "a: TYPE given twice"),
            ("# HELP a x\n# TYPE a gauge\na one\n", "value is not a number"),
            (
                "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "h: bucket counts must be cumulative",
            ),
            ("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "le=\"+Inf\""),
            (
                "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
                "_count differs from the +Inf bucket",
            ),
        ];
        for (text, expected) in cases {
            let problems = lint(text).expect_err(text);
            assert!(problems.iter().any(|p| p.contains(expected)), "{text:?}: {problems:?} lacks {expected:?}");
        }
    }
}
