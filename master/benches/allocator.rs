//! One full allocation pass over a fresh snapshot: {1000, 10000} agents × {1, 100, 1000} frameworks.
//!
//! Every agent is `cpus:2;mem:1024;disk:4096;ports:[31000-32000]` with nothing in use, so each pass offers every
//! agent once (10,000 allocations at 10k agents). Two series: all frameworks in role `*`, and one role per
//! framework. Run with `cargo bench -p agora-master --bench allocator`.

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use agora_master::allocator::{AgentSlot, FrameworkSlot, RefusalFilters, Snapshot, allocate, default_min_allocatable};
use agora_proto::model::Resources;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";
const AGENTS: [usize; 2] = [1_000, 10_000];
const FRAMEWORKS: [usize; 3] = [1, 100, 1_000];

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

fn series(c: &mut Criterion, name: &str, role_per_framework: bool) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let filters = RefusalFilters::default();
    let now = Instant::now();
    for agents in AGENTS {
        for frameworks in FRAMEWORKS {
            let snap = snapshot(agents, frameworks, role_per_framework);
            let id = BenchmarkId::new(format!("{agents}_agents"), format!("{frameworks}_frameworks"));
            group.bench_with_input(id, &snap, |b, snap| {
                b.iter(|| {
                    let out = allocate(black_box(snap), black_box(&filters), now, 0);
                    assert_eq!(out.len(), agents);
                    out
                })
            });
        }
    }
    group.finish();
}

fn pass_role_star(c: &mut Criterion) {
    series(c, "allocate_pass_role_star", false);
}

fn pass_role_per_framework(c: &mut Criterion) {
    series(c, "allocate_pass_role_per_framework", true);
}

criterion_group!(benches, pass_role_star, pass_role_per_framework);
criterion_main!(benches);
