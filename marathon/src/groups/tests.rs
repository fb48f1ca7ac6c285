//! Group changes through the core: a hand-driven clock and offers, no I/O.

use super::*;
use crate::core::Persisted;
use agora_proto::model::{Attributes, Offer, Source, TaskState, TaskStatus};

struct H {
    core: Core,
    now: Millis,
    next: u64,
}

impl H {
    fn new() -> H {
        H { core: Core::new(Persisted::default()), now: 1_700_000_000_000, next: 0 }
    }

    fn did(&mut self) -> String {
        self.next += 1;
        format!("deployment-{}", self.next)
    }

    /// One offer round on one big agent; returns the apps launched, in order.
    fn round(&mut self) -> Vec<String> {
        self.now += 1000;
        let offer = Offer {
            id: format!("offer-{}", self.now),
            framework_id: "fw".into(),
            agent_id: "agent-0".into(),
            hostname: "host0".into(),
            resources: "cpus:16;mem:16384;ports:[31000-32000]".parse().unwrap(),
            attributes: Attributes::default(),
            role: "*".into(),
            url: String::new(),
        };
        let mut n = self.next;
        let m = self.core.match_offers(&[offer], self.now, &mut |app| {
            n += 1;
            format!("{}.instance-{n}", pathid::task_prefix(app))
        });
        self.next = n;
        m.launches.iter().map(|l| l.app_id.clone()).collect()
    }

    fn update(&mut self, task: &str, state: TaskState) {
        self.now += 10;
        let status = TaskStatus {
            task_id: task.into(),
            state,
            reason: None,
            source: Source::Agent,
            message: String::new(),
            uuid: None,
            timestamp: 0.0,
            healthy: None,
            agent_id: "agent-0".into(),
            unreachable_time: None,
            container_status: None,
        };
        self.core.on_update(&status, self.now);
    }

    fn run_all(&mut self) {
        let staged: Vec<String> = self
            .core
            .state
            .instances
            .values()
            .filter(|i| i.state == TaskState::Staging)
            .map(|i| i.task_id.clone())
            .collect();
        for t in staged {
            self.update(&t, TaskState::Running);
        }
    }

    /// Sends the kills the core asks for and completes them; returns the apps whose tasks were killed.
    fn complete_kills(&mut self) -> Vec<String> {
        let kills = self.core.actions(self.now).kills;
        let mut apps = Vec::new();
        for (t, _) in kills {
            if let Some(i) = self.core.state.instances.get(&t) {
                apps.push(i.app_id.clone());
            }
            self.update(&t, TaskState::Killed);
        }
        apps
    }

    fn create(&mut self, body: Value) -> Result<(String, DeploymentResult), ApiError> {
        let id = self.did();
        self.core.create_group("/", &body, false, self.now, id)
    }

    fn update_group(&mut self, id: &str, body: Value, force: bool) -> Result<(bool, Outcome), ApiError> {
        self.now += 1000;
        let did = self.did();
        self.core.update_group(id, &body, force, false, self.now, did)
    }
}

fn app(id: &str, instances: u32) -> Value {
    json!({"id": id, "cmd": "sleep 1000", "instances": instances, "cpus": 0.1, "mem": 16})
}

fn shop() -> Value {
    json!({
        "id": "/shop",
        "apps": [app("db", 1)],
        "groups": [{"id": "web", "dependencies": ["../db"], "apps": [app("front", 2), app("./back", 1)]}],
    })
}

fn step_names(steps: &[Step]) -> Vec<Vec<String>> {
    steps.iter().map(|s| s.actions.iter().map(|a| format!("{} {}", a.action, a.app)).collect()).collect()
}

#[test]
fn create_resolves_relative_ids_and_orders_by_group_dependencies() {
    let mut h = H::new();
    let (id, r) = h.create(shop()).unwrap();
    assert_eq!(id, "/shop");
    let apps: Vec<&String> = h.core.state.apps.keys().collect();
    assert_eq!(apps, ["/shop/db", "/shop/web/back", "/shop/web/front"]);
    assert_eq!(h.core.state.groups["/shop/web"].dependencies, ["/shop/db"]);
    assert_eq!(h.core.state.groups["/shop"].version, r.version);
    assert_eq!(h.core.state.apps["/shop/db"].version, r.version, "one version for the whole change");
    let d = &h.core.state.deployments[&r.deployment_id];
    assert_eq!(
        step_names(&d.steps),
        vec![
            vec!["StartApplication /shop/db", "StartApplication /shop/web/back", "StartApplication /shop/web/front"],
            vec!["ScaleApplication /shop/db"],
            vec!["ScaleApplication /shop/web/back", "ScaleApplication /shop/web/front"],
        ]
    );
    // The web apps wait until the database is running.
    assert_eq!(h.round(), ["/shop/db"]);
    assert!(h.round().is_empty(), "dependents wait for the db to be healthy");
    h.run_all();
    let mut second = h.round();
    second.sort();
    assert_eq!(second, ["/shop/web/back", "/shop/web/front", "/shop/web/front"]);
    h.run_all();
    h.core.actions(h.now);
    assert!(h.core.state.deployments.is_empty(), "the deployment finished");
}

#[test]
fn an_existing_group_conflicts_and_ids_must_be_children() {
    let mut h = H::new();
    h.create(shop()).unwrap();
    let err = h.create(json!({"id": "shop"})).unwrap_err();
    assert_eq!(err, ApiError::Exists("Group /shop is already created. Use PUT to change this group.".into()));
    let err = h
        .create(json!({"id": "/g", "apps": [{"id": "/other/x", "cmd": "x"}, {"id": "y"}], "groups": [{"id": "a/b"}]}))
        .unwrap_err();
    let ApiError::Invalid(Invalid::Semantics(details)) = err else { panic!("{err:?}") };
    let paths: Vec<(&str, &str)> =
        details.iter().flat_map(|d| d.errors.iter().map(|e| (d.path.as_str(), e.as_str()))).collect();
    assert!(paths.contains(&("/apps(0)/id", "identifier /other/x is not child of /g. Hint: use relative paths.")));
    assert!(
        paths
            .contains(&("/apps(1)", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."))
    );
    assert!(paths.contains(&("/groups(0)/id", "identifier /g/a/b is not child of /g. Hint: use relative paths.")));
    assert!(!h.core.group_exists("/g"), "nothing of a refused body is applied");
    let err = h.create(json!({"id": "/t", "apps": [{"id": "x", "cmd": "x", "instances": "two"}]})).unwrap_err();
    assert!(matches!(&err, ApiError::Invalid(Invalid::Types(d)) if d[0].path == "/apps(0)/instances"), "{err:?}");
    let err = h.create(json!({"id": "/p", "pods": [{"id": "x"}], "enforceRole": true, "frob": 1})).unwrap_err();
    let paths: Vec<String> = err_paths(err);
    assert_eq!(paths, ["/enforceRole", "/frob", "/pods"]);
}

fn err_paths(err: ApiError) -> Vec<String> {
    let ApiError::Invalid(i) = err else { panic!("{err:?}") };
    let mut p: Vec<String> = i.details().iter().map(|d| d.path.clone()).collect();
    p.sort();
    p
}

#[test]
fn cyclic_dependencies_are_refused() {
    let mut h = H::new();
    let body = json!({"id": "/c", "groups": [
        {"id": "a", "dependencies": ["/c/b"], "apps": [app("x", 1)]},
        {"id": "b", "apps": [{"id": "y", "cmd": "y", "dependencies": ["/c/a/x"]}]},
    ]});
    let err = h.create(body).unwrap_err();
    let ApiError::Invalid(Invalid::Semantics(d)) = err else { panic!() };
    assert!(d[0].errors[0].starts_with("Dependency graph has cyclic dependencies"), "{d:?}");
}

#[test]
fn update_replaces_listed_apps_scales_and_rolls_back() {
    let mut h = H::new();
    let (_, first) = h.create(shop()).unwrap();
    h.round();
    h.run_all();
    h.round();
    h.run_all();
    h.core.actions(h.now);
    assert!(h.core.state.deployments.is_empty());
    let port = h.core.state.apps["/shop/db"].port_definitions[0].port;

    // Listing the web group's apps replaces them: back goes, front is unchanged and keeps its version.
    let front_version = h.core.state.apps["/shop/web/front"].version.clone();
    let (created, out) =
        h.update_group("/shop/web", json!({"apps": [app("front", 2)], "dependencies": ["/shop/db"]}), false).unwrap();
    assert!(!created);
    let Outcome::Deployed(r) = out else { panic!() };
    assert_eq!(step_names(&h.core.state.deployments[&r.deployment_id].steps), [["StopApplication /shop/web/back"]]);
    assert_eq!(h.core.state.apps["/shop/web/front"].version, front_version);
    assert_eq!(h.complete_kills(), ["/shop/web/back"]);
    h.core.actions(h.now);

    // scaleBy multiplies every app below, rounding up.
    let (_, out) = h.update_group("/shop", json!({"scaleBy": 1.5}), false).unwrap();
    assert!(matches!(out, Outcome::Deployed(_)));
    assert_eq!(h.core.state.apps["/shop/db"].instances, 2);
    assert_eq!(h.core.state.apps["/shop/web/front"].instances, 3);
    assert_eq!(h.core.state.apps["/shop/db"].port_definitions[0].port, port, "service ports stay");

    // A change while that deployment runs conflicts, unless forced.
    let err = h.update_group("/shop", json!({"scaleBy": 2}), false).unwrap_err();
    assert!(matches!(err, ApiError::Locked(ref ids) if ids.len() == 1), "{err:?}");
    h.update_group("/shop", json!({"scaleBy": 1}), true).unwrap();

    // Rolling back to the first version brings back the app removed since and the original counts.
    let versions = h.core.group_versions("/shop").unwrap();
    assert_eq!(versions.last(), Some(&first.version), "{versions:?}");
    assert_eq!(h.core.group_versions("/shop/web").unwrap().len(), 4, "the web group's own write counts too");
    let (_, out) = h.update_group("/shop", json!({"version": first.version}), true).unwrap();
    let Outcome::Deployed(r) = out else { panic!() };
    assert!(r.version > first.version, "a rollback is a new version");
    assert_eq!(h.core.state.apps["/shop/web/back"].instances, 1);
    assert_eq!(h.core.state.apps["/shop/db"].instances, 1);
    assert_eq!(h.core.state.apps["/shop/web/front"].instances, 2);
    let err = h.update_group("/shop", json!({"version": "2001-01-01T00:00:00.000Z"}), false).unwrap_err();
    assert!(matches!(err, ApiError::NotFound(_)));
    let err = h.update_group("/nope", json!({"scaleBy": 2}), false).unwrap_err();
    assert_eq!(err, ApiError::NotFound("Group '/nope' does not exist".into()));
}

/// Marathon's `scaleBy` has `minimum: 0`: 0 suspends every app below; a negative factor is refused, changing nothing.
#[test]
fn scale_by_zero_suspends_the_group_and_a_negative_factor_is_refused() {
    let mut h = H::new();
    h.update_group(
        "/shop",
        json!({"apps": [app("db", 2)], "groups": [{"id": "web", "apps": [app("front", 3)]}]}),
        false,
    )
    .unwrap();
    h.core.actions(h.now);
    for bad in [json!({"scaleBy": -1}), json!({"scaleBy": "2"})] {
        let err = h.update_group("/shop", bad, true).unwrap_err();
        let ApiError::Invalid(invalid) = err else { panic!("{err:?}") };
        assert_eq!(invalid.details()[0].path, "/scaleBy");
        assert_eq!(h.core.state.apps["/shop/web/front"].instances, 3, "nothing changed");
    }
    let (_, out) = h.update_group("/shop", json!({"scaleBy": 0}), true).unwrap();
    assert!(matches!(out, Outcome::Deployed(_)));
    assert_eq!(h.core.state.apps["/shop/db"].instances, 0);
    assert_eq!(h.core.state.apps["/shop/web/front"].instances, 0);
}

#[test]
fn put_creates_a_missing_group_and_dry_run_changes_nothing() {
    let mut h = H::new();
    let did = h.did();
    let (_, out) = h.core.update_group("/new", &json!({"apps": [app("a", 1)]}), false, true, h.now, did).unwrap();
    assert_eq!(
        out,
        Outcome::DryRun(vec![
            Step { actions: vec![crate::deploy::Action { action: "StartApplication".into(), app: "/new/a".into() }] },
            Step { actions: vec![crate::deploy::Action { action: "ScaleApplication".into(), app: "/new/a".into() }] },
        ])
    );
    assert!(!h.core.group_exists("/new") && h.core.state.deployments.is_empty());
    let (created, _) = h.update_group("/new", json!({"apps": [app("a", 1)]}), false).unwrap();
    assert!(created);
    assert!(h.core.state.apps.contains_key("/new/a"));
}

#[test]
fn delete_stops_dependents_first_and_forgets_the_groups() {
    let mut h = H::new();
    h.create(shop()).unwrap();
    h.round();
    h.run_all();
    h.round();
    h.run_all();
    h.core.actions(h.now);
    let did = h.did();
    let r = h.core.delete_group("/shop", false, h.now, did).unwrap();
    assert_eq!(
        step_names(&h.core.state.deployments[&r.deployment_id].steps),
        vec![
            vec!["StopApplication /shop/web/back", "StopApplication /shop/web/front"],
            vec!["StopApplication /shop/db"],
        ]
    );
    assert!(!h.core.group_exists("/shop") && h.core.state.groups.is_empty());
    let mut first = h.complete_kills();
    first.sort();
    assert_eq!(first, ["/shop/web/back", "/shop/web/front", "/shop/web/front"], "the db stops last");
    assert_eq!(h.complete_kills(), ["/shop/db"]);
    h.core.actions(h.now);
    assert!(h.core.state.deployments.is_empty() && h.core.state.instances.is_empty());
    assert_eq!(
        h.core.delete_group("/shop", false, h.now, "d".into()).unwrap_err(),
        ApiError::NotFound("Group '/shop' does not exist".into())
    );
}

#[test]
fn tree_helpers() {
    let mut apps = BTreeMap::new();
    for id in ["/a/x", "/a/b/y", "/ab/z", "/top"] {
        apps.insert(id.to_string(), AppDefinition::with_defaults(id));
    }
    let groups = BTreeMap::from([("/a/c".to_string(), GroupMeta::default())]);
    assert_eq!(children(&apps, &groups, "/").into_iter().collect::<Vec<_>>(), ["/a", "/ab"]);
    assert_eq!(children(&apps, &groups, "/a").into_iter().collect::<Vec<_>>(), ["/a/b", "/a/c"]);
    assert!(exists(&apps, &groups, "/a/c") && exists(&apps, &groups, "/a/b") && !exists(&apps, &groups, "/x"));
    assert!(!exists(&apps, &groups, "/top/x") && !is_under("/ab/z", "/a") && is_under("/a/b/y", "/a"));
    let groups =
        BTreeMap::from([("/a".to_string(), GroupMeta { dependencies: vec!["/ab".into()], ..GroupMeta::default() })]);
    let deps = effective_dependencies(&apps, &groups);
    assert_eq!(deps["/a/b/y"], ["/ab/z"]);
    assert_eq!(deps["/a/x"], ["/ab/z"]);
    assert!(!deps.contains_key("/top"));
}

#[test]
fn group_versions_stay_within_the_reference_budget() {
    // 2,500 apps in the root group: each root version refers to all of them, so only 4 versions fit in
    // MAX_GROUP_VERSION_REFS; the newest always stays, and versions go oldest first.
    let mut h = H::new();
    let app = parse_app(&json!({"id": "/a", "cmd": "x"}), None, None).unwrap();
    for n in 0..2_500 {
        let mut a = app.clone();
        a.id = format!("/app-{n:04}");
        h.core.state.apps.insert(a.id.clone(), a);
    }
    let versions: Vec<String> = (0..6).map(|i| format_iso(h.now + i)).collect();
    for v in &versions {
        h.core.record_root_version(v);
    }
    let kept = h.core.group_versions("/").unwrap();
    let newest_first: Vec<String> = versions.iter().rev().take(4).cloned().collect();
    assert_eq!(kept, newest_first);
    let refs: usize = h.core.state.group_versions["/"].values().map(|v| v.apps.len()).sum();
    assert!(refs <= MAX_GROUP_VERSION_REFS, "{refs}");
    // A group too big for the budget still keeps its newest version.
    for n in 2_500..12_000 {
        let mut a = app.clone();
        a.id = format!("/app-{n:05}");
        h.core.state.apps.insert(a.id.clone(), a);
    }
    h.core.record_root_version(&format_iso(h.now + 100));
    assert_eq!(h.core.group_versions("/").unwrap(), [format_iso(h.now + 100)]);
}
