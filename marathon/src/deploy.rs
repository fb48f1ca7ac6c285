//! Deployments, pure: the plan of steps for a change (current apps → target apps), and the rolling-upgrade and
//! scaling arithmetic that decides, at any moment, how many new instances to start and which to kill.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::app::{AppDefinition, KillSelection};

/// A deployment action, with Marathon's names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Action {
    pub action: String,
    pub app: String,
}

/// One step: actions that run together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Step {
    pub actions: Vec<Action>,
}

fn action(name: &str, app: &str) -> Action {
    Action { action: name.into(), app: app.into() }
}

/// The length of the longest dependency path from `id` among `apps` (cycles are cut by the visited set).
fn depth(id: &str, apps: &BTreeMap<String, AppDefinition>, seen: &mut BTreeSet<String>) -> usize {
    let Some(app) = apps.get(id) else { return 0 };
    if !seen.insert(id.to_string()) {
        return 0;
    }
    let d = app.dependencies.iter().map(|d| 1 + depth(d, apps, seen)).max().unwrap_or(0);
    seen.remove(id);
    d
}

/// Marathon's `DeploymentPlan(original, target)`: stops first (dependents before what they depend on), then
/// starts (at 0 instances), then the affected apps in layers by the length of their longest dependency path
/// (dependencies first); empty steps dropped.
pub fn plan_steps(current: &BTreeMap<String, AppDefinition>, target: &BTreeMap<String, AppDefinition>) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut stops: BTreeMap<usize, Vec<Action>> = BTreeMap::new();
    for id in current.keys().filter(|id| !target.contains_key(*id)) {
        stops.entry(depth(id, current, &mut BTreeSet::new())).or_default().push(action("StopApplication", id));
    }
    steps.extend(stops.into_values().rev().map(|actions| Step { actions }));
    let starts: Vec<Action> =
        target.keys().filter(|id| !current.contains_key(*id)).map(|id| action("StartApplication", id)).collect();
    steps.push(Step { actions: starts });

    let mut layers: BTreeMap<usize, Vec<Action>> = BTreeMap::new();
    for (id, app) in target {
        let a = match current.get(id) {
            None => Some(action("ScaleApplication", id)),
            Some(old)
                if old.needs_restart(app)
                    || old.version_info.last_config_change_at != app.version_info.last_config_change_at =>
            {
                Some(action("RestartApplication", id))
            }
            Some(old) if old.instances != app.instances => Some(action("ScaleApplication", id)),
            Some(_) => None,
        };
        if let Some(a) = a {
            layers.entry(depth(id, target, &mut BTreeSet::new())).or_default().push(a);
        }
    }
    steps.extend(layers.into_values().map(|actions| Step { actions }));
    steps.retain(|s| !s.actions.is_empty());
    steps
}

/// What the rolling/scaling arithmetic sees of one instance of the app. The task id is borrowed where it can be:
/// members are built for every decision of a touched app, one per instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Member<'a> {
    pub task_id: std::borrow::Cow<'a, str>,
    /// Runs the target version.
    pub new: bool,
    /// RUNNING and not reported unhealthy (without agent-side health checks, RUNNING counts as healthy).
    pub healthy: bool,
    /// A kill was already sent; it still holds capacity until its terminal update.
    pub killing: bool,
    /// Kill-order rank: 0 unreachable, 1 staging, 2 starting, 3 running.
    pub rank: u8,
    pub staged_at: u64,
}

/// What to do now for one app.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub launch: u32,
    pub kill: Vec<String>,
    /// During an upgrade: the app reached its target (no old instances, `instances` new healthy ones).
    pub complete: bool,
}

/// Marathon's bounds: `(ceil(n × minimumHealthCapacity), floor(n × (1 + maximumOverCapacity)))`.
pub fn bounds(app: &AppDefinition) -> (u32, u32) {
    let n = f64::from(app.instances);
    let s = app.upgrade_strategy;
    // Round away float noise (3 × 0.7 = 2.0999…96) before ceil/floor, as Marathon's doubles would give the
    // documented results.
    let min_healthy = ((n * s.minimum_health_capacity * 1e9).round() / 1e9).ceil() as u32;
    let max_capacity = ((n * (1.0 + s.maximum_over_capacity) * 1e9).round() / 1e9).floor() as u32;
    (min_healthy, max_capacity)
}

/// Scale-down order: requested rank first (unreachable < staging < starting < running), then by age per
/// `killSelection`.
pub fn kill_order(members: &mut [&Member<'_>], selection: KillSelection) {
    members.sort_by(|a, b| {
        a.rank.cmp(&b.rank).then(match selection {
            KillSelection::YoungestFirst => b.staged_at.cmp(&a.staged_at),
            KillSelection::OldestFirst => a.staged_at.cmp(&b.staged_at),
        })
    });
}

/// The decision for one app. Outside an upgrade every member counts, whatever its version: scale up or down to
/// `instances`. During an upgrade (`upgrading`), Marathon's `TaskReplaceActor` arithmetic, evaluated on the
/// current state: old instances are killed while the healthy count stays at or above `minHealthy` (unhealthy old
/// ones first — they do not lower it), new ones are launched while every live instance (including those being
/// killed) stays within `maxCapacity`.
pub fn decide(app: &AppDefinition, members: &[Member<'_>], upgrading: bool) -> Decision {
    let n = app.instances;
    let live: Vec<&Member> = members.iter().filter(|m| !m.killing).collect();
    if !upgrading {
        let count = live.len() as u32;
        if count < n {
            return Decision { launch: n - count, kill: vec![], complete: false };
        }
        let mut order = live.clone();
        kill_order(&mut order, app.kill_selection);
        let kill = order.iter().take((count - n) as usize).map(|m| m.task_id.to_string()).collect();
        return Decision { launch: 0, kill, complete: false };
    }

    let (min_healthy, mut max_capacity) = bounds(app);
    let mut healthy = live.iter().filter(|m| m.healthy).count() as u32;
    if min_healthy == max_capacity && max_capacity <= healthy {
        // Marathon lets one instance over so that a replacement can start at all.
        max_capacity += 1;
    }
    let mut kill = Vec::new();
    let mut old: Vec<&Member> = live.iter().copied().filter(|m| !m.new).collect();
    old.sort_by_key(|m| m.healthy);
    for m in old {
        if !m.healthy {
            kill.push(m.task_id.to_string());
        } else if healthy > min_healthy {
            healthy -= 1;
            kill.push(m.task_id.to_string());
        }
    }
    let mut new: Vec<&Member> = live.iter().copied().filter(|m| m.new).collect();
    let new_count = new.len() as u32;
    if new_count > n {
        kill_order(&mut new, app.kill_selection);
        kill.extend(new.iter().take((new_count - n) as usize).map(|m| m.task_id.to_string()));
    }
    let holding = members.len() as u32;
    let launch = n.saturating_sub(new_count).min(max_capacity.saturating_sub(holding));
    let old_left = members.iter().any(|m| !m.new);
    let complete = !old_left && new_count == n && live.iter().all(|m| m.healthy);
    Decision { launch, kill, complete }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn app(n: u32, mhc: f64, moc: f64) -> AppDefinition {
        let mut a = AppDefinition::with_defaults("/a");
        a.cmd = Some("x".into());
        a.instances = n;
        a.upgrade_strategy.minimum_health_capacity = mhc;
        a.upgrade_strategy.maximum_over_capacity = moc;
        a
    }

    fn member(i: usize, new: bool, healthy: bool) -> Member<'static> {
        Member { task_id: format!("t{i}").into(), new, healthy, killing: false, rank: 3, staged_at: i as u64 }
    }

    #[test]
    fn bounds_follow_marathon_examples() {
        assert_eq!(bounds(&app(3, 0.7, 0.0)), (3, 3));
        assert_eq!(bounds(&app(4, 0.5, 0.2)), (2, 4));
        assert_eq!(bounds(&app(3, 1.0, 1.0)), (3, 6));
    }

    #[test]
    fn full_capacity_upgrade_starts_all_new_first() {
        let a = app(3, 1.0, 1.0);
        let old: Vec<_> = (0..3).map(|i| member(i, false, true)).collect();
        let d = decide(&a, &old, true);
        assert_eq!((d.launch, d.kill.len()), (3, 0));
    }

    #[test]
    fn zero_min_health_kills_all_old_first() {
        let a = app(3, 0.0, 0.0);
        let old: Vec<_> = (0..3).map(|i| member(i, false, true)).collect();
        let d = decide(&a, &old, true);
        assert_eq!(d.kill.len(), 3);
        assert_eq!(d.launch, 0, "the killed ones still hold capacity until they are gone");
    }

    #[test]
    fn min_equals_max_allows_one_over() {
        let a = app(2, 1.0, 0.0);
        let old: Vec<_> = (0..2).map(|i| member(i, false, true)).collect();
        assert_eq!(decide(&a, &old, true).launch, 1);
    }

    #[test]
    fn scale_down_kills_youngest_first() {
        let a = app(1, 1.0, 1.0);
        let ms: Vec<_> = (0..3).map(|i| member(i, true, true)).collect();
        let d = decide(&a, &ms, false);
        assert_eq!(d.kill, vec!["t2", "t1"]);
    }

    #[test]
    fn plan_orders_stop_start_then_dependency_layers() {
        let mut db = app(1, 1.0, 1.0);
        db.id = "/db".into();
        let mut web = app(1, 1.0, 1.0);
        web.id = "/web".into();
        web.dependencies = vec!["/db".into()];
        let mut gone = app(1, 1.0, 1.0);
        gone.id = "/gone".into();
        let current = BTreeMap::from([("/gone".to_string(), gone)]);
        let target = BTreeMap::from([("/db".to_string(), db), ("/web".to_string(), web)]);
        let steps = plan_steps(&current, &target);
        let names: Vec<Vec<String>> =
            steps.iter().map(|s| s.actions.iter().map(|a| format!("{} {}", a.action, a.app)).collect()).collect();
        assert_eq!(
            names,
            vec![
                vec!["StopApplication /gone".to_string()],
                vec!["StartApplication /db".into(), "StartApplication /web".into()],
                vec!["ScaleApplication /db".into()],
                vec!["ScaleApplication /web".into()],
            ]
        );
    }

    proptest! {
        /// Driving an upgrade step by step — kills complete and launches become healthy in arbitrary order —
        /// never exceeds maxCapacity (+1 in Marathon's min == max case) live instances, never drops the
        /// healthy count below minHealthy, and always finishes with `instances` new healthy instances.
        #[test]
        fn rolling_upgrade_respects_bounds(n in 1u32..8, mhc in 0u32..=10, moc in 0u32..=10,
                                           choices in proptest::collection::vec(any::<u8>(), 200)) {
            let a = app(n, f64::from(mhc) / 10.0, f64::from(moc) / 10.0);
            let (min_healthy, max_capacity) = bounds(&a);
            let limit = max_capacity.max(min_healthy + 1).max(n);
            let mut members: Vec<Member> = (0..n as usize).map(|i| member(i, false, true)).collect();
            let mut next = n as usize;
            let mut done = false;
            for c in choices {
                let d = decide(&a, &members, true);
                if d.complete { done = true; break; }
                for id in &d.kill {
                    if let Some(m) = members.iter_mut().find(|m| m.task_id == id.as_str()) { m.killing = true; }
                }
                let healthy = members.iter().filter(|m| m.healthy && !m.killing).count() as u32;
                prop_assert!(healthy >= min_healthy.min(n), "healthy {} < {}", healthy, min_healthy);
                for _ in 0..d.launch {
                    members.push(member(next, true, false));
                    next += 1;
                }
                prop_assert!(members.len() as u32 <= limit, "{} live > {}", members.len(), limit);
                // The world moves: a kill completes, or a new instance becomes healthy.
                let pending: Vec<usize> = members.iter().enumerate()
                    .filter(|(_, m)| m.killing || !m.healthy).map(|(i, _)| i).collect();
                if pending.is_empty() { continue; }
                let i = pending[c as usize % pending.len()];
                if members[i].killing { members.remove(i); } else { members[i].healthy = true; }
            }
            // Let the rest settle deterministically.
            for _ in 0..200 {
                let d = decide(&a, &members, true);
                if d.complete { done = true; break; }
                for id in &d.kill {
                    if let Some(m) = members.iter_mut().find(|m| m.task_id == id.as_str()) { m.killing = true; }
                }
                for _ in 0..d.launch { members.push(member(next, true, false)); next += 1; }
                prop_assert!(members.len() as u32 <= limit);
                members.retain(|m| !m.killing);
                for m in members.iter_mut() { m.healthy = true; }
            }
            prop_assert!(done, "upgrade did not finish: {:?}", members);
        }
    }
}
