//! The allocator: decides which framework is offered which agent's free resources, in which role.
//!
//! This is stage 2 of Mesos's hierarchical DRF allocator (no quota). For each agent (in an order rotated between
//! passes), each role with an eligible framework is visited in ascending weighted dominant share, and within the
//! role each framework in ascending dominant share; the first eligible framework whose refusal filters do not
//! match receives the agent's *whole* remaining availability allocatable to that role. Shares are updated after
//! every allocation, so the next agent already sees the new order.
//!
//! The module is pure: no I/O, no clock, no randomness. The master hands in a [`Snapshot`] of its state, the
//! [`RefusalFilters`] it keeps between passes, the current time and a rotation counter, and turns the returned
//! [`Allocation`]s into offers. Determinism makes every pass reproducible in tests.
//!
//! Cost of one pass: O(F·R + A·log F) in the common case (A agents, F frameworks, R roles per framework), because
//! the DRF orders are kept in ordered sets and only the entries whose share changed are moved; nothing is
//! re-sorted per agent.

mod filters;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use agora_proto::model::{Fixed, Resource, Resources, UNRESERVED, Value};

pub use filters::RefusalFilters;

/// One agent as the allocator sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSlot {
    pub id: String,
    /// Everything the agent has; the cluster total used for shares is the sum of these.
    pub total: Resources,
    /// `total` minus the resources of running tasks minus outstanding offers.
    pub available: Resources,
}

/// One framework as the allocator sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkSlot {
    pub id: String,
    /// The roles the framework subscribed with; never empty.
    pub roles: Vec<String>,
    /// Roles in which the framework asked for no offers (SUPPRESS).
    pub suppressed_roles: BTreeSet<String>,
    /// Disconnected frameworks get no offers.
    pub active: bool,
    /// Per role: resources of the framework's tasks plus its outstanding offers (for DRF shares).
    pub allocated: HashMap<String, Resources>,
}

/// What one allocation pass looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub agents: Vec<AgentSlot>,
    pub frameworks: Vec<FrameworkSlot>,
    /// Role weights; a missing role weighs 1.0 (as does a weight that is not a finite positive number).
    pub role_weights: HashMap<String, f64>,
    /// Alternatives: a candidate is worth offering if it holds the scalar amounts of at least one of them.
    /// An empty list accepts any non-empty candidate.
    pub min_allocatable: Vec<Resources>,
}

/// One decision: `framework_id` is offered `resources` of `agent_id` in `role`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub framework_id: String,
    pub role: String,
    pub agent_id: String,
    pub resources: Resources,
}

/// Mesos's default `--min_allocatable_resources`: `cpus:0.01|mem:32`, i.e. either suffices.
pub fn default_min_allocatable() -> Vec<Resources> {
    vec![Resources::from_vec([Resource::scalar("cpus", 0.01)]), Resources::from_vec([Resource::scalar("mem", 32.0)])]
}

/// Weighted dominant share: the largest `allocated_r / total_r` over the scalar resources `r` of `cluster_total`
/// (summed over roles; resources absent from the total do not count), divided by `weight`. A weight that is not
/// a finite positive number counts as 1.0.
pub fn dominant_share(allocated: &Resources, cluster_total: &Resources, weight: f64) -> f64 {
    let mut names: Vec<&str> = cluster_total.scalar_names().collect();
    names.dedup();
    let mut max = 0.0f64;
    for name in names {
        let total = cluster_total.scalar(name);
        if total.is_positive() {
            max = max.max(ratio(allocated.scalar(name), total));
        }
    }
    max / effective_weight(weight)
}

fn ratio(allocated: Fixed, total: Fixed) -> f64 {
    allocated.milli() as f64 / total.milli() as f64
}

fn effective_weight(weight: f64) -> f64 {
    if weight.is_finite() && weight > 0.0 { weight } else { 1.0 }
}

/// One allocation pass over `snapshot`.
///
/// Agents are visited in snapshot order, starting at index `rotation % agents.len()` and wrapping around, so the
/// master can spread the first pick over the agents by incrementing `rotation` between passes. The result lists
/// the allocations in the order they were made. Agents or frameworks whose id repeats an earlier one are ignored.
pub fn allocate(snapshot: &Snapshot, filters: &RefusalFilters, now: Instant, rotation: usize) -> Vec<Allocation> {
    let mut state = PassState::new(snapshot, filters);
    if state.role_order.is_empty() || snapshot.agents.is_empty() {
        return Vec::new();
    }
    let mins = MinAllocatable::new(&snapshot.min_allocatable);
    let n = snapshot.agents.len();
    let start = rotation % n;
    let mut seen_agents: HashSet<&str> = HashSet::with_capacity(n);
    // Typically one allocation per agent with free resources; reserving avoids regrowing a large vector.
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let agent = &snapshot.agents[(start + k) % n];
        if !seen_agents.insert(agent.id.as_str()) {
            continue;
        }
        state.allocate_agent(agent, &mins, now, &mut out);
    }
    out
}

/// An `f64` with a total order, for share keys.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Share(f64);

impl Eq for Share {}
impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The scalar names of the cluster total, with their totals; allocations are kept as dense vectors over them.
struct ScalarSpace {
    names: Vec<String>,
    totals: Vec<i64>,
}

impl ScalarSpace {
    fn new(agents: &[AgentSlot]) -> ScalarSpace {
        let mut totals: Vec<(String, i64)> = Vec::new();
        for agent in agents {
            for r in agent.total.iter() {
                if let Value::Scalar(v) = r.value {
                    match totals.binary_search_by(|(n, _)| n.as_str().cmp(&r.name)) {
                        Ok(i) => totals[i].1 += v.milli(),
                        Err(i) => totals.insert(i, (r.name.clone(), v.milli())),
                    }
                }
            }
        }
        let (names, totals) = totals.into_iter().unzip();
        ScalarSpace { names, totals }
    }

    fn zero(&self) -> Vec<i64> {
        vec![0; self.names.len()]
    }

    /// Adds the scalars of `res` (all roles) into `acc`; names outside the cluster total are dropped.
    fn add_into(&self, acc: &mut [i64], res: &Resources) {
        for r in res.iter() {
            if let Value::Scalar(v) = r.value
                && let Ok(i) = self.names.binary_search_by(|n| n.as_str().cmp(&r.name))
            {
                acc[i] += v.milli();
            }
        }
    }

    /// Same arithmetic as [`dominant_share`], on the dense vector.
    fn share(&self, alloc: &[i64], weight: f64) -> f64 {
        let mut max = 0.0f64;
        for (a, t) in alloc.iter().zip(&self.totals) {
            if *t > 0 {
                max = max.max(ratio(Fixed::from_milli(*a), Fixed::from_milli(*t)));
            }
        }
        max / weight
    }
}

/// A (framework, role) pair in which the framework may receive offers.
struct Member<'a> {
    framework: &'a FrameworkSlot,
    /// The framework's filters in this role, looked up once per pass.
    filters: Option<&'a HashMap<String, Vec<filters::Refusal>>>,
    alloc: Vec<i64>,
    share: Share,
    /// Rank of the framework id among all framework ids: the DRF tie-breaker.
    rank: u32,
}

struct Role<'a> {
    name: &'a str,
    weight: f64,
    alloc: Vec<i64>,
    share: Share,
    /// Eligible members, in DRF order: (share, framework rank, member index).
    order: BTreeSet<(Share, u32, usize)>,
    /// The agent (position in the pass) this role was last visited on, so a role is visited once per agent.
    visited: usize,
}

struct PassState<'a> {
    space: ScalarSpace,
    members: Vec<Member<'a>>,
    /// Roles sorted by name, so that a role's index is its name tie-breaker.
    roles: Vec<Role<'a>>,
    role_index: HashMap<&'a str, usize>,
    /// Roles with an eligible framework, in weighted DRF order: (share, role index).
    role_order: BTreeSet<(Share, usize)>,
    /// Counts agents, for `Role::visited`.
    agent_seq: usize,
    /// Scratch space for the scalars of one allocation.
    delta: Vec<i64>,
}

impl<'a> PassState<'a> {
    fn new(snapshot: &'a Snapshot, filters: &'a RefusalFilters) -> PassState<'a> {
        let space = ScalarSpace::new(&snapshot.agents);

        // Unique frameworks, ranked by id.
        let mut seen: HashSet<&str> = HashSet::with_capacity(snapshot.frameworks.len());
        let mut frameworks: Vec<&FrameworkSlot> =
            snapshot.frameworks.iter().filter(|f| seen.insert(f.id.as_str())).collect();
        frameworks.sort_by(|a, b| a.id.cmp(&b.id));

        // Eligible (framework, role) pairs, and the roles they name.
        let mut pairs: Vec<(u32, &FrameworkSlot, &str)> = Vec::new();
        for (rank, fw) in frameworks.iter().enumerate() {
            if !fw.active {
                continue;
            }
            let mut roles: Vec<&str> = fw.roles.iter().map(String::as_str).collect();
            roles.sort_unstable();
            roles.dedup();
            for role in roles {
                if !fw.suppressed_roles.contains(role) {
                    pairs.push((rank as u32, fw, role));
                }
            }
        }
        let mut names: Vec<&str> = pairs.iter().map(|p| p.2).collect();
        names.sort_unstable();
        names.dedup();
        let role_index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();

        // Role allocations count every framework, eligible or not.
        let mut roles: Vec<Role> = names
            .iter()
            .map(|name| Role {
                name,
                weight: effective_weight(snapshot.role_weights.get(*name).copied().unwrap_or(1.0)),
                alloc: space.zero(),
                share: Share(0.0),
                order: BTreeSet::new(),
                visited: usize::MAX,
            })
            .collect();
        for fw in &frameworks {
            for (role, res) in &fw.allocated {
                if let Some(&i) = role_index.get(role.as_str()) {
                    space.add_into(&mut roles[i].alloc, res);
                }
            }
        }
        for role in &mut roles {
            role.share = Share(space.share(&role.alloc, role.weight));
        }

        let mut members = Vec::with_capacity(pairs.len());
        for (rank, fw, role) in pairs {
            let mut alloc = space.zero();
            if let Some(res) = fw.allocated.get(role) {
                space.add_into(&mut alloc, res);
            }
            let share = Share(space.share(&alloc, 1.0));
            let ri = role_index[role];
            roles[ri].order.insert((share, rank, members.len()));
            members.push(Member {
                framework: fw,
                filters: filters.for_framework_role(&fw.id, role),
                alloc,
                share,
                rank,
            });
        }
        let role_order = roles.iter().enumerate().map(|(i, r)| (r.share, i)).collect();
        let delta = space.zero();
        PassState { space, members, roles, role_index, role_order, agent_seq: 0, delta }
    }

    fn allocate_agent(&mut self, agent: &'a AgentSlot, mins: &MinAllocatable, now: Instant, out: &mut Vec<Allocation>) {
        self.agent_seq += 1;
        let seq = self.agent_seq;
        let mut remaining = Cow::Borrowed(&agent.available);

        // Walk the roles in DRF order while the unreserved remainder is still worth offering: every role may
        // receive it. The order is taken from the cursor `after`; only the visited role's key changes meanwhile,
        // and it only grows, so this is the order as of the start of the agent.
        let mut after: Option<(Share, usize)> = None;
        while mins.qualifies(&remaining, |role| role == UNRESERVED) {
            let next = match after {
                None => self.role_order.first().copied(),
                Some(key) => {
                    self.role_order.range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)).next().copied()
                }
            };
            let Some(key) = next else { break };
            after = Some(key);
            if self.roles[key.1].visited == seq {
                continue;
            }
            self.visit(key.1, seq, agent, &mut remaining, mins, now, out);
        }

        // What is left can only go to roles holding reservations on this agent.
        let mut reserved: Vec<(Share, usize)> = Vec::new();
        for r in remaining.iter() {
            if r.is_unreserved() {
                continue;
            }
            if let Some(&i) = self.role_index.get(r.role.as_str())
                && self.roles[i].visited != seq
                && !reserved.iter().any(|k| k.1 == i)
            {
                reserved.push((self.roles[i].share, i));
            }
        }
        reserved.sort_unstable();
        for (_, i) in reserved {
            self.visit(i, seq, agent, &mut remaining, mins, now, out);
        }
    }

    /// Offers the agent's remainder allocatable to role `ri` to the role's first eligible framework.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &mut self,
        ri: usize,
        seq: usize,
        agent: &AgentSlot,
        remaining: &mut Cow<'_, Resources>,
        mins: &MinAllocatable,
        now: Instant,
        out: &mut Vec<Allocation>,
    ) {
        let role = &mut self.roles[ri];
        role.visited = seq;
        let name = role.name;
        if !mins.qualifies(remaining, |r| r == UNRESERVED || r == name) {
            return;
        }
        let candidate = remaining.allocatable_to(name);
        let chosen = role.order.iter().copied().find(|&(_, _, m)| {
            let member = &self.members[m];
            !member.filters.is_some_and(|f| filters::matches(f, &agent.id, &candidate, now))
        });
        let Some(key) = chosen else { return };
        let mi = key.2;

        // Update the framework's share within the role, then the role's share.
        let member = &mut self.members[mi];
        let delta = &mut self.delta;
        delta.fill(0);
        self.space.add_into(delta, &candidate);
        for (a, d) in member.alloc.iter_mut().zip(delta.iter()) {
            *a += d;
        }
        member.share = Share(self.space.share(&member.alloc, 1.0));
        role.order.remove(&key);
        role.order.insert((member.share, member.rank, mi));

        let old_key = (role.share, ri);
        for (a, d) in role.alloc.iter_mut().zip(delta.iter()) {
            *a += d;
        }
        role.share = Share(self.space.share(&role.alloc, role.weight));
        self.role_order.remove(&old_key);
        self.role_order.insert((role.share, ri));

        // The whole candidate goes: what remains is what is reserved for other roles.
        *remaining = Cow::Owned(Resources::from_vec(
            remaining.iter().filter(|r| !(r.is_unreserved() || r.role == name)).cloned(),
        ));
        out.push(Allocation {
            framework_id: member.framework.id.clone(),
            role: name.to_string(),
            agent_id: agent.id.clone(),
            resources: candidate,
        });
    }
}

/// `min_allocatable`, flattened to the scalar amounts of each alternative.
struct MinAllocatable {
    alternatives: Vec<Vec<(String, i64)>>,
}

impl MinAllocatable {
    fn new(alternatives: &[Resources]) -> MinAllocatable {
        let alternatives = alternatives
            .iter()
            .map(|alt| {
                let mut names: Vec<&str> = alt.scalar_names().collect();
                names.sort_unstable();
                names.dedup();
                names.into_iter().map(|n| (n.to_string(), alt.scalar(n).milli())).collect()
            })
            .collect();
        MinAllocatable { alternatives }
    }

    /// Whether the part of `res` whose role passes `role_ok` is non-empty and holds one alternative's scalars.
    fn qualifies(&self, res: &Resources, role_ok: impl Fn(&str) -> bool) -> bool {
        if !res.iter().any(|r| role_ok(&r.role)) {
            return false;
        }
        if self.alternatives.is_empty() {
            return true;
        }
        self.alternatives.iter().any(|alt| {
            alt.iter().all(|(name, need)| {
                let have: i64 = res
                    .iter()
                    .filter(|r| r.name == *name && role_ok(&r.role))
                    .map(|r| match r.value {
                        Value::Scalar(v) => v.milli(),
                        _ => 0,
                    })
                    .sum();
                have >= *need
            })
        })
    }
}
