//! One full allocation pass over a fresh snapshot: {1000, 10000, 50000} agents × {1, 100, 1000, 3000} frameworks.
//!
//! Every agent is `cpus:2;mem:1024;disk:4096;ports:[31000-32000]` with nothing in use, so each pass offers every
//! agent once (10,000 allocations at 10k agents). Three series: all frameworks in role `*`; one role per
//! framework; and role `*` again after every framework declined (with a long filter) what the first pass offered
//! it, so the next pass must skip the filtered framework on every agent (as in Mesos's `DeclineOffers` benchmark).
//! Run with `cargo bench -p agora-master --bench allocator`.
//!
//! Criterion measures wall time. With `AGORA_BENCH_CLOCK=thread-cpu` it measures the bench thread's CPU time
//! instead ([`ThreadCpu`]), which leaves out the time the thread waits for a core: on a small machine shared with
//! builds, wall time measures the scheduler as much as the code.

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use agora_master::allocator::{AgentSlot, FrameworkSlot, RefusalFilters, Snapshot, allocate, default_min_allocatable};
use agora_proto::model::Resources;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion};

const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";
const AGENTS: [usize; 3] = [1_000, 10_000, 50_000];
const FRAMEWORKS: [usize; 4] = [1, 100, 1_000, 3_000];

fn snapshot(agents: usize, frameworks: usize, role_per_framework: bool) -> Snapshot {
    let resources: Resources = AGENT.parse().expect("agent resources parse");
    Snapshot {
        agents: (0..agents)
            .map(|i| AgentSlot { id: format!("agent-{i:05}"), total: resources.clone(), available: resources.clone() })
            .collect(),
        frameworks: (0..frameworks)
            .map(|i| FrameworkSlot {
                id: format!("framework-{i:04}"),
                roles: vec![if role_per_framework { format!("role-{i:04}") } else { "*".to_string() }],
                suppressed_roles: BTreeSet::new(),
                active: true,
                allocated: HashMap::new(),
            })
            .collect(),
        role_weights: HashMap::new(),
        min_allocatable: default_min_allocatable(),
    }
}

/// The calling thread's CPU time, in nanoseconds, from `/proc/thread-self/schedstat` (its first field).
struct ThreadCpu;

fn thread_cpu_nanos() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat (Linux)");
    stat.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat starts with the CPU time in ns")
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }

    fn end(&self, started: u64) -> u64 {
        thread_cpu_nanos().saturating_sub(started)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, shown as wall time's are.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn series<M: Measurement>(c: &mut Criterion<M>, name: &str, role_per_framework: bool, after_decline: bool) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let now = Instant::now();
    for agents in AGENTS {
        for frameworks in FRAMEWORKS {
            // Built on first use, so that a filtered run (`cargo bench ... -- 10000_agents`) builds only its cases.
            let mut setup: Option<(Snapshot, RefusalFilters)> = None;
            // A lone framework that declined everything is offered nothing.
            let expected = if after_decline && frameworks == 1 { 0 } else { agents };
            let id = BenchmarkId::new(format!("{agents}_agents"), format!("{frameworks}_frameworks"));
            group.bench_function(id, |b| {
                let (snap, filters) = setup.get_or_insert_with(|| {
                    let snap = snapshot(agents, frameworks, role_per_framework);
                    let mut filters = RefusalFilters::default();
                    if after_decline {
                        let later = now + Duration::from_secs(3600);
                        // Spelled to compile against the allocator of c352483 too (owned ids and resources
                        // then), so that before/after runs can use this same file.
                        #[allow(clippy::needless_borrow)]
                        for a in allocate(&snap, &filters, now, 0) {
                            filters.add(&a.framework_id, &a.role, &a.agent_id, Resources::clone(&a.resources), later);
                        }
                    }
                    (snap, filters)
                });
                b.iter(|| {
                    let out = allocate(black_box(&*snap), black_box(&*filters), now, 0);
                    assert_eq!(out.len(), expected);
                    out
                })
            });
        }
    }
    group.finish();
}

fn all_series<M: Measurement>(c: &mut Criterion<M>) {
    series(c, "allocate_pass_role_star", false, false);
    series(c, "allocate_pass_role_per_framework", true, false);
    series(c, "allocate_pass_after_decline", false, true);
}

fn main() {
    if std::env::var("AGORA_BENCH_CLOCK").is_ok_and(|clock| clock == "thread-cpu") {
        let mut c = Criterion::default().with_measurement(ThreadCpu).configure_from_args();
        all_series(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        all_series(&mut c);
        c.final_summary();
    }
}
