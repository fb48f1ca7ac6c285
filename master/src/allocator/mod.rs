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
//! re-sorted per agent. Per agent the work is on dense vectors of scalars (one slot per resource name, so names are
//! compared once per agent, not per check), and an agent without reservations costs no heap allocation: its
//! [`Allocation`] borrows the ids and the resources from the snapshot.

mod filters;
mod hash;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use agora_proto::model::{Fixed, Resource, Resources, Value};

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

/// One decision: `framework_id` is offered `resources` of `agent_id` in `role`. It borrows from the snapshot: the
/// ids are the snapshot's, and `resources` is the agent's `available` itself when the whole of it is offered (an
/// agent without reservations, the common case), so a pass allocates nothing per offer. The master copies what it
/// keeps when it turns the allocation into an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation<'a> {
    pub framework_id: &'a str,
    pub role: &'a str,
    pub agent_id: &'a str,
    pub resources: Cow<'a, Resources>,
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
pub fn allocate<'a>(
    snapshot: &'a Snapshot,
    filters: &RefusalFilters,
    now: Instant,
    rotation: usize,
) -> Vec<Allocation<'a>> {
    let mut state = PassState::new(snapshot, filters);
    if state.role_order.is_empty() || snapshot.agents.is_empty() {
        return Vec::new();
    }
    let n = snapshot.agents.len();
    let start = rotation % n;
    // The master lists its agents by id (its registry is ordered): strictly increasing ids cannot repeat, and
    // need no set to find repeats.
    let increasing = snapshot.agents.windows(2).all(|w| w[0].id < w[1].id);
    let mut seen: Option<HashSet<&str, hash::BuildIdHasher>> =
        (!increasing).then(|| HashSet::with_capacity_and_hasher(n, Default::default()));
    // Typically one allocation per agent with free resources; reserving avoids regrowing a large vector.
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let agent = &snapshot.agents[(start + k) % n];
        if let Some(seen) = &mut seen
            && !seen.insert(agent.id.as_str())
        {
            continue;
        }
        state.allocate_agent(agent, now, &mut out);
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

/// The scalar names a pass deals in: those of the cluster total (which shares are computed over) and those
/// `min_allocatable` names. Amounts are kept as dense vectors over them, in thousandths.
struct ScalarSpace<'a> {
    names: Vec<&'a str>,
    /// The cluster total per name (0 for a name only `min_allocatable` has, which no share counts).
    totals: Vec<i64>,
}

impl<'a> ScalarSpace<'a> {
    fn new(agents: &'a [AgentSlot], min_allocatable: &'a [Resources]) -> ScalarSpace<'a> {
        let mut space = ScalarSpace { names: Vec::new(), totals: Vec::new() };
        for agent in agents {
            for (k, (name, v)) in scalars(&agent.total).enumerate() {
                let i = space.slot(name, k).unwrap_or_else(|| space.insert(name));
                space.totals[i] += v;
            }
        }
        for alt in min_allocatable {
            for name in alt.scalar_names() {
                space.index_or_insert(name);
            }
        }
        space
    }

    fn index_or_insert(&mut self, name: &'a str) -> usize {
        self.index(name).unwrap_or_else(|| self.insert(name))
    }

    fn insert(&mut self, name: &'a str) -> usize {
        self.names.push(name);
        self.totals.push(0);
        self.names.len() - 1
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| same_name(n, name))
    }

    /// The slot of `name`, trying slot `hint` first. Names are kept in first-seen order and agents list the same
    /// few scalars in the same (sorted) order, so the `k`-th scalar of an agent is nearly always in slot `k`: one
    /// string comparison instead of a search.
    fn slot(&self, name: &str, hint: usize) -> Option<usize> {
        if self.names.get(hint).is_some_and(|n| same_name(n, name)) { Some(hint) } else { self.index(name) }
    }

    fn zero(&self) -> Vec<i64> {
        vec![0; self.names.len()]
    }

    /// Adds the scalars of `res` (all roles) into `acc`; names outside the space are dropped.
    fn add_into(&self, acc: &mut [i64], res: &Resources) {
        for (k, (name, v)) in scalars(res).enumerate() {
            if let Some(i) = self.slot(name, k) {
                acc[i] += v;
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

/// A (framework, role) pair in which the framework may receive offers (`'f`: the filters' lifetime).
struct Member<'a, 'f> {
    framework: &'a FrameworkSlot,
    /// The framework's filters in this role, looked up once per pass.
    filters: Option<&'f filters::ByAgent>,
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

/// One agent's available resources, split by role: the unreserved part and the part reserved for each role.
struct AgentParts<'a> {
    /// Whether the agent has unreserved resources that have not been allocated yet on this agent.
    unreserved: bool,
    /// The scalars of the unreserved part.
    unreserved_scalars: Vec<i64>,
    /// Per role holding reservations here: its name and the scalars reserved for it (empty in the common case).
    reserved: Vec<(&'a str, Vec<i64>)>,
}

impl<'a> AgentParts<'a> {
    fn reserved_scalars(&self, role: &str) -> Option<&[i64]> {
        self.reserved.iter().find(|(r, _)| *r == role).map(|(_, v)| v.as_slice())
    }
}

struct PassState<'a, 'f> {
    space: ScalarSpace<'a>,
    mins: MinAllocatable,
    members: Vec<Member<'a, 'f>>,
    /// Roles sorted by name, so that a role's index is its name tie-breaker.
    roles: Vec<Role<'a>>,
    role_index: HashMap<&'a str, usize, hash::BuildIdHasher>,
    /// Roles with an eligible framework, in weighted DRF order: (share, role index).
    role_order: BTreeSet<(Share, usize)>,
    /// Counts agents, for `Role::visited`.
    agent_seq: usize,
    /// Scratch space: the current agent's parts, and the scalars of one candidate.
    parts: AgentParts<'a>,
    delta: Vec<i64>,
}

impl<'a, 'f> PassState<'a, 'f> {
    fn new(snapshot: &'a Snapshot, filters: &'f RefusalFilters) -> PassState<'a, 'f> {
        let space = ScalarSpace::new(&snapshot.agents, &snapshot.min_allocatable);
        let mins = MinAllocatable::new(&snapshot.min_allocatable, &space);

        // Unique frameworks, ranked by id.
        let mut seen: HashSet<&str, hash::BuildIdHasher> =
            HashSet::with_capacity_and_hasher(snapshot.frameworks.len(), Default::default());
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
        let role_index: HashMap<&str, usize, hash::BuildIdHasher> =
            names.iter().enumerate().map(|(i, n)| (*n, i)).collect();

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
        let parts = AgentParts { unreserved: false, unreserved_scalars: space.zero(), reserved: Vec::new() };
        let delta = space.zero();
        PassState { space, mins, members, roles, role_index, role_order, agent_seq: 0, parts, delta }
    }

    /// Splits `agent`'s availability into [`AgentParts`] (reusing the scratch space).
    fn split(&mut self, agent: &'a AgentSlot) {
        let parts = &mut self.parts;
        parts.unreserved = false;
        parts.unreserved_scalars.fill(0);
        parts.reserved.clear();
        let mut k = 0;
        for r in agent.available.iter() {
            let scalars = if r.is_unreserved() {
                parts.unreserved = true;
                &mut parts.unreserved_scalars
            } else {
                let i = match parts.reserved.iter().position(|(role, _)| *role == r.role) {
                    Some(i) => i,
                    None => {
                        parts.reserved.push((r.role.as_str(), self.space.zero()));
                        parts.reserved.len() - 1
                    }
                };
                &mut parts.reserved[i].1
            };
            if let Value::Scalar(v) = r.value {
                if let Some(i) = self.space.slot(&r.name, k) {
                    scalars[i] += v.milli();
                }
                k += 1;
            }
        }
    }

    fn allocate_agent(&mut self, agent: &'a AgentSlot, now: Instant, out: &mut Vec<Allocation<'a>>) {
        self.agent_seq += 1;
        let seq = self.agent_seq;
        self.split(agent);

        // Walk the roles in DRF order while the unreserved part is still there and worth offering: every role may
        // receive it. The order is taken from the cursor `after`; only the visited role's key changes meanwhile,
        // and it only grows, so this is the order as of the start of the agent.
        let mut after: Option<(Share, usize)> = None;
        while self.parts.unreserved && self.mins.qualifies(&self.parts.unreserved_scalars) {
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
            self.visit(key.1, seq, agent, now, out);
        }

        // What is left can only go to roles holding reservations on this agent.
        if self.parts.reserved.is_empty() {
            return;
        }
        let mut reserved: Vec<(Share, usize)> = Vec::new();
        for (role, _) in &self.parts.reserved {
            if let Some(&i) = self.role_index.get(role)
                && self.roles[i].visited != seq
            {
                reserved.push((self.roles[i].share, i));
            }
        }
        reserved.sort_unstable();
        for (_, i) in reserved {
            self.visit(i, seq, agent, now, out);
        }
    }

    /// Offers what of the agent is allocatable to role `ri` (its unreserved part if still there, plus what is
    /// reserved for the role) to the role's first eligible framework.
    fn visit(&mut self, ri: usize, seq: usize, agent: &'a AgentSlot, now: Instant, out: &mut Vec<Allocation<'a>>) {
        let role = &mut self.roles[ri];
        role.visited = seq;
        let name = role.name;
        let parts = &self.parts;
        let reserved = parts.reserved_scalars(name);
        if !parts.unreserved && reserved.is_none() {
            return;
        }
        let delta = &mut self.delta;
        delta.fill(0);
        if parts.unreserved {
            delta.copy_from_slice(&parts.unreserved_scalars);
        }
        if let Some(reserved) = reserved {
            delta.iter_mut().zip(reserved).for_each(|(d, r)| *d += r);
        }
        if !self.mins.qualifies(delta) {
            return;
        }
        // The whole availability when nothing of it is reserved; else the unreserved part (if left) and the role's.
        let candidate = if parts.reserved.is_empty() {
            Cow::Borrowed(&agent.available)
        } else {
            let unreserved = parts.unreserved;
            Cow::Owned(Resources::from_vec(
                agent.available.iter().filter(|r| if r.is_unreserved() { unreserved } else { r.role == name }).cloned(),
            ))
        };
        let chosen = role.order.iter().copied().find(|&(_, _, m)| {
            let member = &self.members[m];
            !member.filters.is_some_and(|f| filters::matches(f, &agent.id, &candidate, now))
        });
        let Some(key) = chosen else { return };
        let mi = key.2;

        // Update the framework's share within the role, then the role's share.
        let member = &mut self.members[mi];
        let framework: &'a FrameworkSlot = member.framework;
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
        self.parts.unreserved = false;
        self.parts.reserved.retain(|(r, _)| *r != name);
        out.push(Allocation { framework_id: &framework.id, role: name, agent_id: &agent.id, resources: candidate });
    }
}

/// `a == b` for the short resource names a pass compares per agent, byte by byte in line: `==` calls the C
/// library's `memcmp`, and those calls were a tenth of a pass.
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// The scalar resources of `res`, as (name, thousandths), in `res`'s order.
fn scalars(res: &Resources) -> impl Iterator<Item = (&str, i64)> {
    res.iter().filter_map(|r| match r.value {
        Value::Scalar(v) => Some((r.name.as_str(), v.milli())),
        _ => None,
    })
}

/// `min_allocatable`, flattened to the scalar amounts of each alternative, as (slot in the pass's scalar space,
/// amount in thousandths).
struct MinAllocatable {
    alternatives: Vec<Vec<(usize, i64)>>,
}

impl MinAllocatable {
    fn new(alternatives: &[Resources], space: &ScalarSpace) -> MinAllocatable {
        let alternatives = alternatives
            .iter()
            .map(|alt| {
                let mut names: Vec<&str> = alt.scalar_names().collect();
                names.sort_unstable();
                names.dedup();
                // Every name of an alternative has a slot: the space was built with them.
                names.into_iter().filter_map(|n| Some((space.index(n)?, alt.scalar(n).milli()))).collect()
            })
            .collect();
        MinAllocatable { alternatives }
    }

    /// Whether a (non-empty) part of an agent holding `scalars` holds one alternative's scalars.
    fn qualifies(&self, scalars: &[i64]) -> bool {
        self.alternatives.is_empty()
            || self.alternatives.iter().any(|alt| alt.iter().all(|&(i, need)| scalars[i] >= need))
    }
}
