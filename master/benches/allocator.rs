//! One full allocation pass over a fresh snapshot: {1000, 10000, 50000} agents × {1, 100, 1000, 3000} frameworks.
//!
//! Every agent is `cpus:2;mem:1024;disk:4096;ports:[31000-32000]` with nothing in use, so each pass offers every
//! agent once (10,000 allocations at 10k agents). Three series: all frameworks in role `*`; one role per
//! framework; and role `*` again after every framework declined (with a long filter) what the first pass offered
//! it, so the next pass must skip the filtered framework on every agent (as in Mesos's `DeclineOffers` benchmark).
//! Run with `cargo bench -p agora-master --bench allocator`.

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use agora_master::allocator::{AgentSlot, FrameworkSlot, RefusalFilters, Snapshot, allocate, default_min_allocatable};
use agora_proto::model::Resources;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

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

fn series(c: &mut Criterion, name: &str, role_per_framework: bool, after_decline: bool) {
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

fn pass_role_star(c: &mut Criterion) {
    series(c, "allocate_pass_role_star", false, false);
}

fn pass_role_per_framework(c: &mut Criterion) {
    series(c, "allocate_pass_role_per_framework", true, false);
}

fn pass_after_decline(c: &mut Criterion) {
    series(c, "allocate_pass_after_decline", false, true);
}

criterion_group!(benches, pass_role_star, pass_role_per_framework, pass_after_decline);
criterion_main!(benches);
