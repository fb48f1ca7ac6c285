//! Allocator tests: examples through a small harness, then invariants and a naive reference model with proptest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_proto::model::{Fixed, Resources};
use proptest::prelude::*;

use super::*;

const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";

fn res(text: &str) -> Resources {
    text.parse().unwrap_or_else(|e| panic!("bad resources {text:?}: {e}"))
}

/// An allocation detached from the snapshot, so that a test can change the snapshot and keep the result.
#[derive(Clone, Debug, PartialEq)]
struct Offered {
    framework_id: String,
    role: String,
    agent_id: String,
    resources: Resources,
}

impl From<&Allocation<'_>> for Offered {
    fn from(a: &Allocation<'_>) -> Offered {
        Offered {
            framework_id: a.framework_id.into(),
            role: a.role.into(),
            agent_id: a.agent_id.into(),
            resources: a.resources.clone().into_owned(),
        }
    }
}

/// A snapshot under construction plus the filters and clock the master would hold.
struct Harness {
    snapshot: Snapshot,
    filters: RefusalFilters,
    now: Instant,
}

impl Harness {
    /// `n` agents `a00`, `a01`, … of [`AGENT`], nothing used.
    fn new(n: usize) -> Harness {
        let mut h = Harness {
            snapshot: Snapshot {
                agents: Vec::new(),
                frameworks: Vec::new(),
                role_weights: HashMap::new(),
                min_allocatable: default_min_allocatable(),
            },
            filters: RefusalFilters::default(),
            now: Instant::now(),
        };
        for i in 0..n {
            h = h.agent(&format!("a{i:02}"), AGENT);
        }
        h
    }

    fn agent(mut self, id: &str, total: &str) -> Harness {
        self.snapshot.agents.push(AgentSlot { id: id.into(), total: res(total), available: res(total) });
        self
    }

    fn framework(mut self, id: &str, roles: &[&str]) -> Harness {
        self.snapshot.frameworks.push(FrameworkSlot {
            id: id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            suppressed_roles: BTreeSet::new(),
            active: true,
            allocated: HashMap::new(),
        });
        self
    }

    fn weight(mut self, role: &str, w: f64) -> Harness {
        self.snapshot.role_weights.insert(role.into(), w);
        self
    }

    fn fw(&mut self, id: &str) -> &mut FrameworkSlot {
        self.snapshot.frameworks.iter_mut().find(|f| f.id == id).expect("no such framework")
    }

    fn agent_mut(&mut self, id: &str) -> &mut AgentSlot {
        self.snapshot.agents.iter_mut().find(|a| a.id == id).expect("no such agent")
    }

    fn pass(&self) -> Vec<Offered> {
        self.pass_rotated(0)
    }

    fn pass_rotated(&self, rotation: usize) -> Vec<Offered> {
        let out = allocate(&self.snapshot, &self.filters, self.now, rotation);
        check_invariants(&self.snapshot, &self.filters, self.now, &out).unwrap();
        out.iter().map(Offered::from).collect()
    }

    /// Turns allocations into outstanding offers, as the master does.
    fn apply(&mut self, allocations: &[Offered]) {
        for a in allocations {
            self.agent_mut(&a.agent_id).available.subtract(&a.resources);
            self.fw(&a.framework_id).allocated.entry(a.role.clone()).or_default().add(&a.resources);
        }
    }

    /// The framework declines the (not applied) offer `a` with a filter of `secs` seconds.
    fn decline(&mut self, a: &Offered, secs: u64) {
        let expires = self.now + Duration::from_secs(secs);
        self.filters.add(&a.framework_id, &a.role, &a.agent_id, a.resources.clone(), expires);
    }
}

/// Allocations per framework.
fn per_framework(allocations: &[Offered]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for a in allocations {
        *m.entry(a.framework_id.as_str()).or_default() += 1;
    }
    m
}

/// Allocations per role.
fn per_role(allocations: &[Offered]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for a in allocations {
        *m.entry(a.role.as_str()).or_default() += 1;
    }
    m
}

#[test]
fn offers_the_whole_remainder_of_each_agent() {
    let mut h = Harness::new(2).framework("f1", &["*"]);
    h.agent_mut("a01").available = res("cpus:0.5;mem:100;ports:[31500-32000]");
    let out = h.pass();
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0],
        Offered { framework_id: "f1".into(), role: "*".into(), agent_id: "a00".into(), resources: res(AGENT) }
    );
    assert_eq!(out[1].agent_id, "a01");
    assert_eq!(out[1].resources, res("cpus:0.5;mem:100;ports:[31500-32000]"));
}

#[test]
fn an_agent_goes_to_one_framework_per_role() {
    let h = Harness::new(1).framework("f1", &["*"]).framework("f2", &["*"]).framework("f3", &["*"]);
    let out = h.pass();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].framework_id, "f1", "equal shares: ties go to the smallest id");
}

#[test]
fn nothing_to_offer_without_frameworks_or_agents() {
    assert!(Harness::new(3).pass().is_empty());
    assert!(Harness::new(0).framework("f1", &["*"]).pass().is_empty());
}

#[test]
fn drf_splits_evenly_between_equal_frameworks() {
    let h = Harness::new(10).framework("f1", &["*"]).framework("f2", &["*"]);
    let out = h.pass();
    assert_eq!(per_framework(&out), BTreeMap::from([("f1", 5), ("f2", 5)]));
    // The shares are updated after each agent, so the frameworks alternate.
    let order: Vec<&str> = out.iter().map(|a| a.framework_id.as_str()).collect();
    assert_eq!(order, ["f1", "f2", "f1", "f2", "f1", "f2", "f1", "f2", "f1", "f2"]);
}

#[test]
fn drf_accounts_for_existing_allocations() {
    let mut h = Harness::new(10).framework("f1", &["*"]).framework("f2", &["*"]);
    // f1 already holds 4 agents' worth of cpus (its dominant resource): f2 catches up first.
    h.fw("f1").allocated.insert("*".into(), res("cpus:8;mem:100"));
    let out = h.pass();
    assert_eq!(per_framework(&out), BTreeMap::from([("f1", 3), ("f2", 7)]));
    assert!(out[..4].iter().all(|a| a.framework_id == "f2"));
}

#[test]
fn weighted_roles_share_two_to_one() {
    let h = Harness::new(30).framework("f1", &["heavy"]).framework("f2", &["light"]).weight("heavy", 2.0);
    let out = h.pass();
    assert_eq!(per_role(&out), BTreeMap::from([("heavy", 20), ("light", 10)]));
}

#[test]
fn frameworks_share_evenly_within_a_role_while_roles_are_weighted() {
    let h = Harness::new(40)
        .framework("f1", &["heavy"])
        .framework("f2", &["heavy"])
        .framework("f3", &["light"])
        .weight("heavy", 3.0);
    let out = h.pass();
    assert_eq!(per_framework(&out), BTreeMap::from([("f1", 15), ("f2", 15), ("f3", 10)]));
}

#[test]
fn shares_persist_across_passes() {
    // Two passes with offers outstanding in between, as the master runs them: the second pass sees the first.
    let mut h = Harness::new(4).framework("f1", &["*"]).framework("f2", &["*"]);
    let first = h.pass();
    h.apply(&first);
    assert!(h.pass().is_empty(), "everything is offered");
    h.snapshot.agents.push(AgentSlot { id: "a99".into(), total: res(AGENT), available: res(AGENT) });
    h.fw("f2").allocated.get_mut("*").unwrap().add(&res("cpus:1"));
    let third = h.pass();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].framework_id, "f1", "f2 has the larger share now");
}

#[test]
fn multi_role_framework_gets_one_allocation_per_role_and_agent() {
    let h = Harness::new(1).agent("r1", "cpus(a):1;mem(a):64;cpus(b):1;mem(b):64;cpus:1").framework("f1", &["a", "b"]);
    let out = h.pass();
    let keys: Vec<(&str, &str)> = out.iter().map(|a| (a.agent_id.as_str(), a.role.as_str())).collect();
    // a00 has only unreserved resources: the first role (by name on equal shares) takes them all.
    assert_eq!(keys, [("a00", "a"), ("r1", "b"), ("r1", "a")]);
    assert_eq!(out[1].resources, res("cpus(b):1;mem(b):64;cpus:1"), "b's share is lower after a00");
    assert_eq!(out[2].resources, res("cpus(a):1;mem(a):64"));
}

#[test]
fn refusal_filter_blocks_only_what_it_covers() {
    let mut h = Harness::new(1).framework("f1", &["*"]).framework("f2", &["*"]);
    let first = h.pass();
    assert_eq!(first[0].framework_id, "f1");
    h.decline(&first[0], 5);
    // f1 refused the whole agent: it now goes to f2.
    let second = h.pass();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].framework_id, "f2");
    assert!(h.filters.is_filtered("f1", "*", "a00", &res(AGENT), h.now));
    assert!(h.filters.is_filtered("f1", "*", "a00", &res("cpus:1;mem:10"), h.now), "subsets stay filtered");
    // More than was refused is offered again (Mesos's superset rule).
    assert!(!h.filters.is_filtered("f1", "*", "a00", &res("cpus:3;mem:1024"), h.now));
    assert!(!h.filters.is_filtered("f1", "*", "a00", &res("gpus:1"), h.now));
    // Other roles, frameworks and agents are unaffected.
    assert!(!h.filters.is_filtered("f1", "web", "a00", &res("cpus:1"), h.now));
    assert!(!h.filters.is_filtered("f2", "*", "a00", &res("cpus:1"), h.now));
    assert!(!h.filters.is_filtered("f1", "*", "a01", &res("cpus:1"), h.now));
}

#[test]
fn refusal_filter_lifts_when_more_is_free() {
    let mut h = Harness::new(1).framework("f1", &["*"]);
    h.agent_mut("a00").available = res("cpus:1;mem:512");
    let first = h.pass();
    h.decline(&first[0], 60);
    assert!(h.pass().is_empty());
    h.agent_mut("a00").available = res("cpus:2;mem:512");
    let out = h.pass();
    assert_eq!(out.len(), 1, "a task finished: the offer is no longer within the refused set");
}

#[test]
fn refusal_filter_expires() {
    let mut h = Harness::new(1).framework("f1", &["*"]);
    let first = h.pass();
    h.decline(&first[0], 5);
    assert!(h.pass().is_empty());
    assert_eq!(h.filters.active_count("*"), 1);
    h.now += Duration::from_secs(4);
    assert!(h.pass().is_empty());
    h.now += Duration::from_secs(1);
    assert_eq!(h.pass().len(), 1, "filtered only strictly before the expiry");
    h.filters.expire(h.now);
    assert_eq!(h.filters.active_count("*"), 0);
}

#[test]
fn revive_clears_filters_of_the_named_roles() {
    let mut h = Harness::new(1).framework("f1", &["a", "b"]);
    let now = h.now;
    let later = now + Duration::from_secs(30);
    h.filters.add("f1", "a", "a00", res(AGENT), later);
    h.filters.add("f1", "b", "a00", res(AGENT), later);
    h.filters.add("f2", "a", "a00", res(AGENT), later);
    assert!(h.pass().is_empty());
    h.filters.clear("f1", Some(&["a".to_string()]));
    assert!(!h.filters.is_filtered("f1", "a", "a00", &res(AGENT), now));
    assert!(h.filters.is_filtered("f1", "b", "a00", &res(AGENT), now));
    assert_eq!(h.pass().len(), 1);
    h.filters.clear("f1", None);
    assert!(!h.filters.is_filtered("f1", "b", "a00", &res(AGENT), now));
    assert!(h.filters.is_filtered("f2", "a", "a00", &res(AGENT), now), "other frameworks keep theirs");
    assert_eq!(h.filters.active_count("a"), 1);
}

#[test]
fn filters_are_dropped_with_their_framework_or_agent() {
    let mut f = RefusalFilters::default();
    let later = Instant::now() + Duration::from_secs(30);
    f.add("f1", "*", "a1", res("cpus:1"), later);
    f.add("f1", "*", "a2", res("cpus:1"), later);
    f.add("f2", "*", "a1", res("cpus:1"), later);
    f.add("f2", "*", "a1", res("mem:1"), later);
    assert_eq!(f.active_count("*"), 4);
    f.remove_agent("a1");
    assert_eq!(f.active_count("*"), 1);
    f.remove_framework("f1");
    assert_eq!(f.active_count("*"), 0);
}

#[test]
fn suppressed_and_inactive_frameworks_get_nothing() {
    let mut h = Harness::new(4).framework("f1", &["a", "b"]).framework("f2", &["c"]);
    h.fw("f1").suppressed_roles.insert("a".into());
    h.fw("f2").active = false;
    let out = h.pass();
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|a| a.framework_id == "f1" && a.role == "b"));
    h.fw("f1").suppressed_roles.insert("b".into());
    assert!(h.pass().is_empty());
}

#[test]
fn inactive_frameworks_still_count_in_their_role_share() {
    let mut h = Harness::new(2).framework("f1", &["a"]).framework("f2", &["b"]).framework("f3", &["a"]);
    h.fw("f3").active = false;
    h.fw("f3").allocated.insert("a".into(), res("cpus:1"));
    let out = h.pass();
    assert_eq!(out[0].role, "b", "role a already holds f3's cpus");
}

#[test]
fn reserved_resources_go_only_to_their_role() {
    let mixed = "cpus(ads):4;mem(ads):2048;cpus:1;mem:256";
    // ads < web by name: ads visits first and takes its reservation plus the unreserved part.
    let h = Harness::new(0).agent("r", mixed).framework("fa", &["ads"]).framework("fw", &["web"]);
    let out = h.pass();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].framework_id.as_str(), &out[0].resources), ("fa", &res(mixed)));

    // With ads ahead in share, web visits first and gets only the unreserved part; ads still gets its own.
    let mut h = Harness::new(0).agent("r", mixed).framework("fa", &["ads"]).framework("fw", &["web"]);
    h.fw("fa").allocated.insert("ads".into(), res("cpus:1"));
    let out = h.pass();
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].framework_id.as_str(), &out[0].resources), ("fw", &res("cpus:1;mem:256")));
    assert_eq!((out[1].framework_id.as_str(), &out[1].resources), ("fa", &res("cpus(ads):4;mem(ads):2048")));

    // Only reserved resources: other roles get nothing.
    let h = Harness::new(0).agent("r", "cpus(ads):4;mem(ads):2048").framework("fw", &["web"]).framework("f*", &["*"]);
    assert!(h.pass().is_empty());
}

#[test]
fn reservation_of_a_role_without_frameworks_stays_put() {
    let h = Harness::new(0).agent("r", "cpus(ads):4;cpus:1").framework("fw", &["web"]);
    let out = h.pass();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].resources, res("cpus:1"));
}

#[test]
fn min_allocatable_defaults_to_cpus_or_mem() {
    let h = Harness::new(0)
        .agent("tiny", "cpus:0.009;mem:31;ports:[1-100]")
        .agent("cpu-only", "cpus:0.01")
        .agent("mem-only", "mem:32")
        .agent("ports-only", "ports:[31000-32000]")
        .framework("f1", &["*"]);
    let got: Vec<String> = h.pass().into_iter().map(|a| a.agent_id).collect();
    assert_eq!(got, ["cpu-only", "mem-only"]);
}

#[test]
fn min_allocatable_alternatives_and_empty_list() {
    let mut h = Harness::new(0)
        .agent("small", "cpus:1;mem:100")
        .agent("big", "cpus:1;mem:600")
        .agent("disk", "cpus:0.1;disk:100")
        .agent("ports", "ports:[1-2]")
        .framework("f1", &["*"]);
    h.snapshot.min_allocatable = vec![res("cpus:1;mem:512"), res("disk:100")];
    let got: Vec<String> = h.pass().into_iter().map(|a| a.agent_id).collect();
    assert_eq!(got, ["big", "disk"]);
    h.snapshot.min_allocatable = Vec::new();
    assert_eq!(h.pass().len(), 4, "no minimum: anything non-empty goes");
}

#[test]
fn reserved_scalars_count_towards_the_minimum_of_their_role() {
    let mut h = Harness::new(0).agent("split", "cpus(a):0.5;cpus:0.5").framework("fa", &["a"]).framework("fs", &["*"]);
    h.snapshot.min_allocatable = vec![res("cpus:1")];
    let got: Vec<(String, String)> = h.pass().into_iter().map(|a| (a.agent_id, a.framework_id)).collect();
    assert_eq!(got, [("split".to_string(), "fa".to_string())], "role * sees only 0.5 cpus");
}

#[test]
fn rotation_changes_the_first_agent() {
    let h = Harness::new(5).framework("f1", &["*"]).framework("f2", &["*"]);
    let out = h.pass_rotated(3);
    let agents: Vec<&str> = out.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(agents, ["a03", "a04", "a00", "a01", "a02"]);
    assert_eq!(out[0].framework_id, "f1");
    assert_eq!(h.pass_rotated(8), out, "rotation is taken modulo the agent count");
}

#[test]
fn duplicate_ids_are_ignored() {
    let h = Harness::new(2).agent("a00", AGENT).framework("f1", &["*", "*"]).framework("f1", &["*"]);
    let out = h.pass();
    assert_eq!(out.len(), 2);
}

#[test]
fn dominant_share_is_the_weighted_maximum() {
    let total = res("cpus:10;mem:1000;ports:[1-100]");
    assert_eq!(dominant_share(&res("cpus:1;mem:500"), &total, 1.0), 0.5);
    assert_eq!(dominant_share(&res("cpus:5;mem:100"), &total, 2.0), 0.25);
    assert_eq!(dominant_share(&res("cpus(ads):2;cpus:3"), &total, 1.0), 0.5, "reserved scalars count too");
    assert_eq!(dominant_share(&res("gpus:4;ports:[1-100]"), &total, 1.0), 0.0, "not in the total: ignored");
    assert_eq!(dominant_share(&Resources::new(), &Resources::new(), 1.0), 0.0);
    assert_eq!(dominant_share(&res("cpus:1"), &total, 0.0), 0.1, "invalid weights count as 1");
    assert_eq!(dominant_share(&res("cpus:1"), &total, f64::NAN), 0.1);
}

#[test]
fn default_min_allocatable_is_mesos_default() {
    assert_eq!(default_min_allocatable(), vec![res("cpus:0.01"), res("mem:32")]);
}

// ---- invariants and reference model ----

/// The invariants every pass must hold.
fn check_invariants(s: &Snapshot, filters: &RefusalFilters, now: Instant, out: &[Allocation]) -> Result<(), String> {
    let agents: HashMap<&str, &AgentSlot> = s.agents.iter().map(|a| (a.id.as_str(), a)).collect();
    let frameworks: HashMap<&str, &FrameworkSlot> = s.frameworks.iter().map(|f| (f.id.as_str(), f)).collect();
    let mut per_agent: HashMap<&str, Resources> = HashMap::new();
    let mut keys = HashSet::new();
    for a in out {
        let agent = agents.get(a.agent_id).ok_or(format!("unknown agent in {a:?}"))?;
        let fw = frameworks.get(a.framework_id).ok_or(format!("unknown framework in {a:?}"))?;
        if !fw.active || !fw.roles.iter().any(|r| r == a.role) || fw.suppressed_roles.contains(a.role) {
            return Err(format!("ineligible framework/role in {a:?}"));
        }
        if a.resources.is_empty() || !agent.available.allocatable_to(a.role).contains(&a.resources) {
            return Err(format!("resources not allocatable to the role in {a:?}"));
        }
        if filters.is_filtered(a.framework_id, a.role, a.agent_id, &a.resources, now) {
            return Err(format!("filtered allocation {a:?}"));
        }
        if !keys.insert((a.agent_id, a.framework_id, a.role)) {
            return Err(format!("duplicate (agent, framework, role) in {a:?}"));
        }
        let sum = per_agent.entry(a.agent_id).or_default();
        // Ranges merge on add, so check disjointness explicitly before adding.
        for r in a.resources.iter() {
            if let Value::Ranges(new) = &r.value {
                for old in sum.iter().filter(|o| o.name == r.name && o.role == r.role) {
                    if let Value::Ranges(old) = &old.value
                        && new.values().any(|v| old.contains_value(v))
                    {
                        return Err(format!("ranges offered twice on {}", a.agent_id));
                    }
                }
            }
        }
        sum.add(&a.resources);
    }
    for (id, sum) in per_agent {
        if !agents[id].available.contains(&sum) {
            return Err(format!("agent {id} over-allocated: {sum} of {}", agents[id].available));
        }
    }
    Ok(())
}

/// The allocation rule as written in the spec, naively: re-sorts everything per agent.
fn reference<'a>(s: &'a Snapshot, filters: &RefusalFilters, now: Instant, rotation: usize) -> Vec<Allocation<'a>> {
    let mut total = Resources::new();
    for a in &s.agents {
        total.add(&a.total);
    }
    let eligible = |f: &FrameworkSlot, role: &str| {
        f.active && f.roles.iter().any(|r| r == role) && !f.suppressed_roles.contains(role)
    };
    let roles: BTreeSet<&str> =
        s.frameworks.iter().flat_map(|f| f.roles.iter().map(String::as_str).filter(|r| eligible(f, r))).collect();
    let mut fw_alloc: HashMap<(String, String), Resources> = HashMap::new();
    let mut role_alloc: HashMap<String, Resources> = HashMap::new();
    for f in &s.frameworks {
        for (role, r) in &f.allocated {
            fw_alloc.entry((f.id.clone(), role.clone())).or_default().add(r);
            role_alloc.entry(role.clone()).or_default().add(r);
        }
    }
    let weight = |role: &str| s.role_weights.get(role).copied().unwrap_or(1.0);
    let qualifies = |c: &Resources| {
        !c.is_empty()
            && (s.min_allocatable.is_empty()
                || s.min_allocatable.iter().any(|alt| alt.scalar_names().all(|n| c.scalar(n) >= alt.scalar(n))))
    };
    let mut out = Vec::new();
    let n = s.agents.len();
    for k in 0..n {
        let agent = &s.agents[(rotation % n.max(1) + k) % n];
        let mut remaining = agent.available.clone();
        let mut order: Vec<(f64, &str)> = roles
            .iter()
            .map(|r| (dominant_share(role_alloc.get(*r).unwrap_or(&Resources::new()), &total, weight(r)), *r))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
        for (_, role) in order {
            let candidate = remaining.allocatable_to(role);
            if !qualifies(&candidate) {
                continue;
            }
            let mut fws: Vec<(f64, &str)> = s
                .frameworks
                .iter()
                .filter(|f| eligible(f, role))
                .map(|f| {
                    let a = fw_alloc.get(&(f.id.clone(), role.to_string())).cloned().unwrap_or_default();
                    (dominant_share(&a, &total, 1.0), f.id.as_str())
                })
                .collect();
            fws.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
            for (_, fw) in fws {
                if filters.is_filtered(fw, role, &agent.id, &candidate, now) {
                    continue;
                }
                remaining.subtract(&candidate);
                fw_alloc.entry((fw.to_string(), role.to_string())).or_default().add(&candidate);
                role_alloc.entry(role.to_string()).or_default().add(&candidate);
                out.push(Allocation { framework_id: fw, role, agent_id: &agent.id, resources: Cow::Owned(candidate) });
                break;
            }
        }
    }
    out
}

const ROLES: [&str; 4] = ["*", "a", "b", "c"];

fn scalars(cpus_milli: u32, mem: u32, role: &str) -> Resources {
    let mut r = Resources::new();
    for (name, v) in [("cpus", Fixed::from_milli(cpus_milli.into())), ("mem", Fixed::from_int(mem.into()))] {
        r.add(&Resources::from_vec([Resource { name: name.into(), role: role.into(), value: Value::Scalar(v) }]));
    }
    r
}

prop_compose! {
    fn arb_agent()(
        cpus in 0u32..4000, mem in 0u32..2048, ports in proptest::option::of((31000u64..31010, 0u64..20)),
        reservations in proptest::collection::vec((1usize..4, 0u32..2000, 0u32..1024), 0..3),
        used_cpus in 0u32..4000, used_mem in 0u32..2048, used_reserved in any::<bool>(),
    ) -> (Resources, Resources) {
        let mut total = scalars(cpus, mem, "*");
        if let Some((b, l)) = ports {
            total.add(&Resources::from_vec([Resource::ranges("ports", [(b, b + l)])]));
        }
        for &(role, c, m) in &reservations {
            total.add(&scalars(c, m, ROLES[role]));
        }
        let mut available = total.clone();
        available.subtract(&scalars(used_cpus, used_mem, "*"));
        if used_reserved {
            for &(role, c, _) in &reservations {
                available.subtract(&scalars(c / 2, 0, ROLES[role]));
            }
        }
        (total, available)
    }
}

prop_compose! {
    fn arb_framework()(
        roles in proptest::collection::vec(0usize..4, 1..4),
        suppressed in proptest::collection::vec(0usize..4, 0..2),
        active in proptest::bool::weighted(0.85),
        allocated in proptest::collection::vec((0usize..4, 0u32..3000, 0u32..1500), 0..3),
    ) -> (Vec<usize>, Vec<usize>, bool, Vec<(usize, u32, u32)>) {
        (roles, suppressed, active, allocated)
    }
}

fn arb_case() -> impl Strategy<Value = (Snapshot, RefusalFilters, Instant, usize)> {
    (
        proptest::collection::vec(arb_agent(), 0..8),
        proptest::collection::vec(arb_framework(), 0..6),
        proptest::collection::vec((0usize..4, prop_oneof![Just(0.5), Just(1.0), Just(2.0), Just(3.0)]), 0..3),
        0usize..4,
        proptest::collection::vec((0usize..8, 0usize..6, 0usize..4, any::<bool>(), 0u64..20), 0..6),
        0usize..20,
    )
        .prop_map(|(agents, frameworks, weights, mins, filter_specs, rotation)| {
            let agents: Vec<AgentSlot> = agents
                .into_iter()
                .enumerate()
                .map(|(i, (total, available))| AgentSlot { id: format!("ag{i}"), total, available })
                .collect();
            let frameworks: Vec<FrameworkSlot> = frameworks
                .into_iter()
                .enumerate()
                .map(|(i, (roles, suppressed, active, allocated))| {
                    let mut alloc: HashMap<String, Resources> = HashMap::new();
                    for (role, c, m) in allocated {
                        alloc.entry(ROLES[role].into()).or_default().add(&scalars(c, m, "*"));
                    }
                    FrameworkSlot {
                        id: format!("fw{}", (i * 7) % 10),
                        roles: roles.iter().map(|&r| ROLES[r].to_string()).collect(),
                        suppressed_roles: suppressed.iter().map(|&r| ROLES[r].to_string()).collect(),
                        active,
                        allocated: alloc,
                    }
                })
                .collect();
            let min_allocatable = match mins {
                0 => default_min_allocatable(),
                1 => Vec::new(),
                2 => vec![res("cpus:1")],
                _ => vec![res("cpus:0.5;mem:256"), res("mem:1024")],
            };
            let base = Instant::now();
            let now = base + Duration::from_secs(10);
            let mut filters = RefusalFilters::default();
            if !agents.is_empty() && !frameworks.is_empty() {
                for (ai, fi, ri, whole, secs) in filter_specs {
                    let agent = &agents[ai % agents.len()];
                    let role = ROLES[ri];
                    let refused = if whole { agent.available.allocatable_to(role) } else { res("cpus:0.5;mem:100") };
                    filters.add(
                        &frameworks[fi % frameworks.len()].id,
                        role,
                        &agent.id,
                        refused,
                        base + Duration::from_secs(secs),
                    );
                }
            }
            let role_weights = weights.into_iter().map(|(r, w)| (ROLES[r].to_string(), w)).collect();
            (Snapshot { agents, frameworks, role_weights, min_allocatable }, filters, now, rotation)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn allocations_hold_the_invariants((snapshot, filters, now, rotation) in arb_case()) {
        let out = allocate(&snapshot, &filters, now, rotation);
        if let Err(e) = check_invariants(&snapshot, &filters, now, &out) {
            return Err(TestCaseError::fail(e));
        }
    }

    #[test]
    fn allocations_match_the_naive_reference((snapshot, filters, now, rotation) in arb_case()) {
        prop_assert_eq!(allocate(&snapshot, &filters, now, rotation), reference(&snapshot, &filters, now, rotation));
    }

    #[test]
    fn allocation_is_deterministic((snapshot, filters, now, rotation) in arb_case()) {
        prop_assert_eq!(allocate(&snapshot, &filters, now, rotation), allocate(&snapshot, &filters, now, rotation));
    }

    #[test]
    fn a_second_pass_after_applying_offers_only_uses_what_is_left((snapshot, filters, now, rotation) in arb_case()) {
        let first = allocate(&snapshot, &filters, now, rotation);
        let mut next = snapshot.clone();
        for a in &first {
            next.agents.iter_mut().find(|x| x.id == a.agent_id).unwrap().available.subtract(&a.resources);
            next.frameworks.iter_mut().find(|f| f.id == a.framework_id).unwrap()
                .allocated.entry(a.role.to_string()).or_default().add(&a.resources);
        }
        let second = allocate(&next, &filters, now, rotation + 1);
        if let Err(e) = check_invariants(&next, &filters, now, &second) {
            return Err(TestCaseError::fail(e));
        }
        // Each (agent, role) that was served already had its whole allocatable remainder offered.
        for b in &second {
            prop_assert!(!first.iter().any(|a| a.agent_id == b.agent_id && a.role == b.role && a.framework_id == b.framework_id),
                "{:?} served twice", b);
        }
    }
}
