//! Groups: Marathon's tree of apps under slash paths, behind `/v2/groups`. A group exists when it was created
//! through the API (it then has a record, [`GroupMeta`], with its dependencies) or when apps lie below it.
//!
//! The pure part turns a group body (Marathon's `GroupUpdate`: nested `apps` and `groups`, `dependencies`) into
//! a target [`Tree`], expands group dependencies onto the apps below for the deployment plan, and checks the
//! tree (ids, cycles). The `Core` methods here diff a target tree against the apps and hand the changes to the
//! core's deployments, so group changes lock, deploy, cancel and roll back like app changes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::{AppDefinition, Detail, Invalid, parse_app};
use crate::core::{ApiError, Core, DeploymentResult, LOCAL_PORT_MAX, LOCAL_PORT_MIN, MAX_VERSIONS, set_version};
use crate::deploy::Step;
use crate::pathid;
use crate::time::{Millis, format_iso, parse_iso};

/// At most this many app references (app id → version) over all stored versions of one group; older versions go
/// first. With 1,000 apps in a group, its last 10 versions stay.
pub const MAX_GROUP_VERSION_REFS: usize = 10_000;

/// What a group created through the API keeps besides its apps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMeta {
    /// Absolute ids of apps or groups every app below must wait for.
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub version: String,
}

/// A group as it was at one version: the groups within it and its apps by version (their definitions are in
/// the apps' own versions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupVersion {
    pub groups: BTreeMap<String, GroupMeta>,
    pub apps: BTreeMap<String, String>,
}

/// The group an id lies in (`/a/b` → `/a`, `/a` → `/`).
pub fn parent(id: &str) -> String {
    match id.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => id[..i].to_string(),
    }
}

/// `id` lies strictly below `group`.
pub fn is_under(id: &str, group: &str) -> bool {
    if group == "/" {
        return id != "/";
    }
    id.len() > group.len() && id.starts_with(group) && id.as_bytes()[group.len()] == b'/'
}

/// `id` is `group` or lies below it.
pub fn within(id: &str, group: &str) -> bool {
    id == group || is_under(id, group)
}

/// The child of `group` on the way to `id` (which lies below `group`).
fn direct_child(id: &str, group: &str) -> String {
    let rest = if group == "/" { &id[1..] } else { &id[group.len() + 1..] };
    let first = rest.split('/').next().unwrap_or(rest);
    if group == "/" { format!("/{first}") } else { format!("{group}/{first}") }
}

/// The ids in `map` below `group`, in order (a range scan, not a walk of the whole map).
fn keys_under<'a, V>(map: &'a BTreeMap<String, V>, group: &str) -> impl Iterator<Item = &'a String> + 'a {
    let prefix = if group == "/" { "/".to_string() } else { format!("{group}/") };
    map.range(prefix.clone()..).map(|(k, _)| k).take_while(move |k| k.starts_with(&prefix))
}

/// Whether the group `id` exists in a tree of `apps` and `groups`.
pub fn exists(apps: &BTreeMap<String, AppDefinition>, groups: &BTreeMap<String, GroupMeta>, id: &str) -> bool {
    id == "/"
        || groups.contains_key(id)
        || keys_under(groups, id).next().is_some()
        || keys_under(apps, id).next().is_some()
}

/// The direct subgroups of `group`: recorded ones and those implied by app ids.
pub fn children(
    apps: &BTreeMap<String, AppDefinition>,
    groups: &BTreeMap<String, GroupMeta>,
    group: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for g in keys_under(groups, group) {
        out.insert(direct_child(g, group));
    }
    for a in keys_under(apps, group) {
        if parent(a) != group {
            out.insert(direct_child(a, group));
        }
    }
    out
}

/// The group's version: its own, or the newest of anything below it.
pub fn version_of(apps: &BTreeMap<String, AppDefinition>, groups: &BTreeMap<String, GroupMeta>, id: &str) -> String {
    let own = groups.get(id).map(|m| m.version.clone());
    let below = keys_under(groups, id)
        .filter_map(|g| groups.get(g).map(|m| m.version.clone()))
        .chain(keys_under(apps, id).filter_map(|a| apps.get(a).map(|a| a.version.clone())));
    own.into_iter().chain(below).max().unwrap_or_default()
}

/// Every app's dependencies as the deployment plan sees them: its own, plus those of every group above it; a
/// dependency naming a group stands for every app below that group. Dependencies on a group the app lies in
/// are dropped (they would make it wait for itself).
pub fn effective_dependencies(
    apps: &BTreeMap<String, AppDefinition>,
    groups: &BTreeMap<String, GroupMeta>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (id, app) in apps {
        let mut raw: Vec<&String> = app.dependencies.iter().collect();
        let mut g = parent(id);
        loop {
            if let Some(m) = groups.get(&g) {
                raw.extend(&m.dependencies);
            }
            if g == "/" {
                break;
            }
            g = parent(&g);
        }
        if raw.is_empty() {
            continue;
        }
        let mut deps = BTreeSet::new();
        for d in raw {
            if within(id, d) {
                continue;
            }
            if apps.contains_key(d) {
                deps.insert(d.clone());
            } else {
                deps.extend(keys_under(apps, d).cloned());
            }
        }
        out.insert(id.clone(), deps.into_iter().collect());
    }
    out
}

/// Replaces each app's `dependencies` by its [`effective_dependencies`] (on copies made for planning).
pub fn expand_dependencies(apps: &mut BTreeMap<String, AppDefinition>, groups: &BTreeMap<String, GroupMeta>) {
    let plain = groups.values().all(|m| m.dependencies.is_empty())
        && apps.values().all(|a| a.dependencies.iter().all(|d| apps.contains_key(d)));
    if plain {
        return;
    }
    for (id, deps) in effective_dependencies(apps, groups) {
        if let Some(app) = apps.get_mut(&id) {
            app.dependencies = deps;
        }
    }
}

/// An app on a dependency cycle, if there is one.
fn cycle(deps: &BTreeMap<String, Vec<String>>) -> Option<String> {
    // 0 unvisited, 1 on the current path, 2 done.
    fn visit(id: &str, deps: &BTreeMap<String, Vec<String>>, mark: &mut BTreeMap<String, u8>) -> bool {
        match mark.get(id) {
            Some(1) => return true,
            Some(2) => return false,
            _ => {}
        }
        mark.insert(id.to_string(), 1);
        let found = deps.get(id).into_iter().flatten().any(|d| visit(d, deps, mark));
        mark.insert(id.to_string(), 2);
        found
    }
    let mut mark = BTreeMap::new();
    deps.keys().find(|id| visit(id, deps, &mut mark)).cloned()
}

/// The whole target: every app and every recorded group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    pub apps: BTreeMap<String, AppDefinition>,
    pub groups: BTreeMap<String, GroupMeta>,
}

impl Tree {
    /// Removes `group` and everything below it (for `/`, everything).
    pub fn remove_within(&mut self, group: &str) {
        self.apps.retain(|id, _| !within(id, group));
        self.groups.retain(|id, _| !within(id, group));
    }
}

/// Validation errors with their JSON paths, grouped by path as Marathon's `details`.
#[derive(Default)]
struct Errors {
    types: Vec<Detail>,
    semantic: Vec<Detail>,
}

fn push(list: &mut Vec<Detail>, path: String, error: String) {
    match list.iter_mut().find(|d| d.path == path) {
        Some(d) => d.errors.push(error),
        None => list.push(Detail { path, errors: vec![error] }),
    }
}

fn at(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path) {
        (true, "") => "/".into(),
        (false, "/" | "") => prefix.into(),
        _ => format!("{prefix}{path}"),
    }
}

impl Errors {
    fn bad(&mut self, path: String, error: impl Into<String>) {
        push(&mut self.semantic, if path.is_empty() { "/".into() } else { path }, error.into());
    }
    fn ty(&mut self, path: String, expected: &str) {
        push(&mut self.types, if path.is_empty() { "/".into() } else { path }, format!("error.expected.{expected}"));
    }
    /// An app's errors, their paths put under `prefix` (`/apps(0)`).
    fn absorb(&mut self, prefix: &str, e: Invalid) {
        let types = matches!(e, Invalid::Types(_));
        for d in e.details() {
            for err in &d.errors {
                let list = if types { &mut self.types } else { &mut self.semantic };
                push(list, at(prefix, &d.path), err.clone());
            }
        }
    }
    fn finish(self) -> Result<(), Invalid> {
        if !self.types.is_empty() {
            return Err(Invalid::Types(self.types));
        }
        if !self.semantic.is_empty() {
            return Err(Invalid::Semantics(self.semantic));
        }
        Ok(())
    }
}

/// Resolves the `id` of an app or subgroup body against `group`; it must name a direct child.
fn child_id(body: &Value, group: &str, path: &str, errs: &mut Errors) -> Option<String> {
    let p = format!("{path}/id");
    let raw = match body.get("id") {
        Some(Value::String(raw)) => raw,
        Some(_) => {
            errs.ty(p, "jsstring");
            return None;
        }
        None => {
            errs.bad(p, "is required");
            return None;
        }
    };
    if let Err(e) = pathid::validate(raw) {
        errs.bad(p, e);
        return None;
    }
    let id = pathid::normalize(raw, group);
    if id == "/" || parent(&id) != group {
        errs.bad(p, format!("identifier {id} is not child of {group}. Hint: use relative paths."));
        return None;
    }
    Some(id)
}

/// Applies a group body (Marathon's `GroupUpdate`) for `group` at JSON path `path` to `tree`: `dependencies`
/// replace the group's; `apps`, when given, replace the apps directly in the group (full definitions, ids
/// relative to the group); `groups`, when given, replace the subgroups — those listed are updated recursively,
/// the others removed with everything below them. Fields not given keep what the tree has.
fn apply(tree: &mut Tree, body: &Value, group: &str, path: &str, errs: &mut Errors) {
    let Value::Object(m) = body else {
        errs.ty(path.to_string(), "jsobject");
        return;
    };
    if group != "/" {
        tree.groups.entry(group.to_string()).or_default();
    }
    for (k, v) in m {
        let p = format!("{path}/{k}");
        match k.as_str() {
            "id" => {}
            "dependencies" => {
                let Some(list) = v.as_array() else {
                    if !v.is_null() {
                        errs.ty(p, "jsarray");
                    }
                    continue;
                };
                let mut deps = Vec::new();
                for (i, d) in list.iter().enumerate() {
                    let dp = format!("{p}({i})");
                    match d.as_str() {
                        None => errs.ty(dp, "jsstring"),
                        Some(raw) => {
                            let id = pathid::normalize(raw, group);
                            if id == "/" || !id.split('/').skip(1).all(pathid::valid_segment) {
                                errs.bad(dp, format!("must fit regex '{}'", pathid::ID_REGEX));
                            } else if !deps.contains(&id) {
                                deps.push(id);
                            }
                        }
                    }
                }
                if group == "/" {
                    if !deps.is_empty() {
                        errs.bad(p, "the root group cannot have dependencies");
                    }
                } else if let Some(meta) = tree.groups.get_mut(group) {
                    meta.dependencies = deps;
                }
            }
            "enforceRole" => match v {
                Value::Null | Value::Bool(false) => {}
                Value::Bool(true) => {
                    errs.bad(p, "enforceRole is not supported yet: apps run in the role '*'");
                }
                _ => errs.ty(p, "jsboolean"),
            },
            "pods" => {
                if !(v.is_null() || v.as_array().is_some_and(Vec::is_empty)) {
                    errs.bad(p, "pods are not supported yet");
                }
            }
            "apps" => {
                let Some(list) = v.as_array() else {
                    if !v.is_null() {
                        errs.ty(p, "jsarray");
                    }
                    continue;
                };
                tree.apps.retain(|id, _| parent(id) != group);
                for (i, body) in list.iter().enumerate() {
                    let ap = format!("{p}({i})");
                    let Some(id) = child_id(body, group, &ap, errs) else { continue };
                    if tree.apps.contains_key(&id) {
                        errs.bad(format!("{ap}/id"), format!("the app {id} appears more than once"));
                        continue;
                    }
                    match parse_app(body, None, Some(&id)) {
                        Ok(app) => {
                            tree.apps.insert(id, app);
                        }
                        Err(e) => errs.absorb(&ap, e),
                    }
                }
            }
            "groups" => {
                let Some(list) = v.as_array() else {
                    if !v.is_null() {
                        errs.ty(p, "jsarray");
                    }
                    continue;
                };
                let mut listed: Vec<(String, &Value, String)> = Vec::new();
                for (i, body) in list.iter().enumerate() {
                    let gp = format!("{p}({i})");
                    if !body.is_object() {
                        errs.ty(gp, "jsobject");
                        continue;
                    }
                    let Some(id) = child_id(body, group, &gp, errs) else { continue };
                    if listed.iter().any(|(l, _, _)| *l == id) {
                        errs.bad(format!("{gp}/id"), format!("the group {id} appears more than once"));
                        continue;
                    }
                    listed.push((id, body, gp));
                }
                for child in children(&tree.apps, &tree.groups, group) {
                    if !listed.iter().any(|(l, _, _)| *l == child) {
                        tree.remove_within(&child);
                    }
                }
                for (id, body, gp) in listed {
                    apply(tree, body, &id, &gp, errs);
                }
            }
            "version" | "scaleBy" => {
                errs.bad(p, "can only be given alone, for the group the request names");
            }
            _ => errs.bad(p, format!("'{k}' is not a known field")),
        }
    }
}

/// Marathon's error for an id that would be both an app and a group.
pub const SAME_IDENTIFIER: &str = "Groups and Applications may not have the same identifier.";

/// Whole-tree rules: an id is either an app or a group, and dependencies have no cycle.
fn check_tree(tree: &Tree, errs: &mut Errors) {
    for id in tree.apps.keys() {
        if tree.groups.contains_key(id) || keys_under(&tree.apps, id).next().is_some() {
            errs.bad(String::new(), format!("{SAME_IDENTIFIER} ({id})"));
        }
    }
    if let Some(id) = cycle(&effective_dependencies(&tree.apps, &tree.groups)) {
        errs.bad(String::new(), format!("Dependency graph has cyclic dependencies (at {id})."));
    }
}

/// Gives service ports to the definitions that ask for any (port 0): an app keeps the ports it had, then new
/// ones come from `[LOCAL_PORT_MIN, LOCAL_PORT_MAX)`, unique over the whole tree.
fn allocate_ports(apps: &mut BTreeMap<String, AppDefinition>, current: &BTreeMap<String, AppDefinition>) {
    let mut used: BTreeSet<u32> =
        apps.values().flat_map(|a| a.port_definitions.iter().map(|p| p.port)).filter(|p| *p != 0).collect();
    for app in apps.values_mut().filter(|a| !a.require_ports) {
        let old: Vec<u32> =
            current.get(&app.id).map(|c| c.port_definitions.iter().map(|p| p.port).collect()).unwrap_or_default();
        for (i, pd) in app.port_definitions.iter_mut().enumerate() {
            if let Some(p) = old.get(i).copied().filter(|p| pd.port == 0 && *p != 0 && !used.contains(p)) {
                pd.port = p;
                used.insert(p);
            }
        }
    }
    let mut candidate = LOCAL_PORT_MIN;
    for app in apps.values_mut().filter(|a| !a.require_ports) {
        for pd in app.port_definitions.iter_mut().filter(|p| p.port == 0) {
            while used.contains(&candidate) && candidate < LOCAL_PORT_MAX {
                candidate += 1;
            }
            if candidate < LOCAL_PORT_MAX {
                pd.port = candidate;
                used.insert(candidate);
            }
        }
    }
}

/// A group tree as JSON (a stored version: app definitions without counts or tasks).
pub fn tree_json(tree: &Tree, id: &str) -> Value {
    let apps: Vec<Value> = keys_under(&tree.apps, id)
        .filter(|a| parent(a) == id)
        .filter_map(|a| tree.apps.get(a))
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .collect();
    let groups: Vec<Value> = children(&tree.apps, &tree.groups, id).iter().map(|g| tree_json(tree, g)).collect();
    group_shape(id, apps, groups, tree.groups.get(id), version_of(&tree.apps, &tree.groups, id))
}

/// Marathon's group JSON: `id`, `apps`, `groups`, `pods`, `dependencies`, `version`, and `enforceRole` for groups
/// other than the root.
pub fn group_shape(id: &str, apps: Vec<Value>, groups: Vec<Value>, meta: Option<&GroupMeta>, version: String) -> Value {
    let mut v = json!({
        "id": id, "apps": apps, "groups": groups, "pods": [],
        "dependencies": meta.map(|m| m.dependencies.clone()).unwrap_or_default(), "version": version,
    });
    if id != "/" {
        v["enforceRole"] = json!(false);
    }
    v
}

/// What a group change did: a deployment, or with `dryRun` only its plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Deployed(DeploymentResult),
    DryRun(Vec<Step>),
}

impl Core {
    fn tree(&self) -> Tree {
        Tree { apps: self.state.apps.clone(), groups: self.state.groups.clone() }
    }

    /// A new app `id` must not be a group (one created, or apps below it) nor lie below an app: 422 with
    /// Marathon's message, as Marathon's root group validation refuses it.
    pub(crate) fn check_new_app_id(&self, id: &str) -> Result<(), ApiError> {
        let mut above = parent(id);
        let below_app = loop {
            if above == "/" {
                break None;
            }
            if self.state.apps.contains_key(&above) {
                break Some(above);
            }
            above = parent(&above);
        };
        let clash = if self.group_exists(id) { Some(id.to_string()) } else { below_app };
        match clash {
            Some(g) => Err(ApiError::Invalid(Invalid::one("/", format!("{SAME_IDENTIFIER} ({g})")))),
            None => Ok(()),
        }
    }

    pub fn group_exists(&self, id: &str) -> bool {
        exists(&self.state.apps, &self.state.groups, id)
    }

    fn group_or_404(&self, id: &str) -> Result<(), ApiError> {
        if self.group_exists(id) { Ok(()) } else { Err(ApiError::NotFound(format!("Group '{id}' does not exist"))) }
    }

    /// `POST /v2/groups[/{base}]`: the body's id is relative to `base`; 409 if the group exists.
    pub fn create_group(
        &mut self,
        base: &str,
        body: &Value,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<(String, DeploymentResult), ApiError> {
        let base = pathid::normalize(base, "/");
        let Value::Object(m) = body else {
            return Err(ApiError::Invalid(Invalid::Types(vec![Detail {
                path: "/".into(),
                errors: vec!["error.expected.jsobject".into()],
            }])));
        };
        let id = match m.get("id") {
            None | Some(Value::Null) => base.clone(),
            Some(Value::String(raw)) => {
                pathid::validate(raw).map_err(|e| ApiError::Invalid(Invalid::one("/id", e)))?;
                pathid::normalize(raw, &base)
            }
            Some(_) => {
                return Err(ApiError::Invalid(Invalid::Types(vec![Detail {
                    path: "/id".into(),
                    errors: vec!["error.expected.jsstring".into()],
                }])));
            }
        };
        if self.group_exists(&id) {
            return Err(ApiError::Exists(format!("Group {id} is already created. Use PUT to change this group.")));
        }
        if self.state.apps.contains_key(&id) {
            return Err(ApiError::Exists(format!("An app with the path {id} already exists.")));
        }
        let mut tree = self.tree();
        let mut errs = Errors::default();
        apply(&mut tree, body, &id, "", &mut errs);
        check_tree(&tree, &mut errs);
        errs.finish().map_err(ApiError::Invalid)?;
        match self.commit(&id, tree, force, false, true, now, deployment_id)? {
            Outcome::Deployed(r) => Ok((id, r)),
            Outcome::DryRun(_) => unreachable!("not a dry run"),
        }
    }

    /// `PUT /v2/groups/{id}`: a group body (create if missing), `{"version": ...}` (roll the group back to that
    /// version) or `{"scaleBy": f}` (every app below scaled by f, rounded up). With `dry_run` nothing changes and
    /// the plan is returned. Returns whether the group was created.
    pub fn update_group(
        &mut self,
        id: &str,
        body: &Value,
        force: bool,
        dry_run: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<(bool, Outcome), ApiError> {
        let gid = pathid::normalize(id, "/");
        if gid != "/" {
            pathid::validate(&gid).map_err(|e| ApiError::Invalid(Invalid::one("/id", e)))?;
        }
        let Value::Object(m) = body else {
            return Err(ApiError::Invalid(Invalid::Types(vec![Detail {
                path: "/".into(),
                errors: vec!["error.expected.jsobject".into()],
            }])));
        };
        if let Some(raw) = m.get("id").and_then(Value::as_str)
            && pathid::normalize(raw, &parent(&gid)) != gid
            && pathid::normalize(raw, "/") != gid
        {
            return Err(ApiError::Invalid(Invalid::one("/id", format!("must be the group of the URL, {gid}"))));
        }
        let existed = self.group_exists(&gid);
        let only = |key: &str| m.contains_key(key) && m.keys().all(|k| k == key || k == "id");
        let mut tree = self.tree();
        if only("version") {
            self.group_or_404(&gid)?;
            let Some(version) = m.get("version").and_then(Value::as_str) else {
                return Err(ApiError::Invalid(Invalid::Types(vec![Detail {
                    path: "/version".into(),
                    errors: vec!["error.expected.jsstring".into()],
                }])));
            };
            let old = self.group_at(&gid, version)?;
            tree.remove_within(&gid);
            tree.apps.extend(old.apps);
            tree.groups.extend(old.groups);
        } else if only("scaleBy") {
            self.group_or_404(&gid)?;
            let factor = m.get("scaleBy").and_then(Value::as_f64).filter(|f| *f >= 0.0 && f.is_finite());
            // Marathon's RAML says `minimum: 0`: 0 scales every app below to no instances.
            let Some(factor) = factor else {
                return Err(ApiError::Invalid(Invalid::one("/scaleBy", "must be a number of at least 0")));
            };
            for id in keys_under(&self.state.apps, &gid) {
                if let Some(app) = tree.apps.get_mut(id) {
                    // Round away float noise (3 × 1.1 = 3.3000000000000003) before rounding up, as `bounds` does.
                    let scaled = ((f64::from(app.instances) * factor * 1e9).round() / 1e9).ceil();
                    app.instances = scaled.min(f64::from(u32::MAX)) as u32;
                }
            }
        } else {
            let mut errs = Errors::default();
            apply(&mut tree, body, &gid, "", &mut errs);
            check_tree(&tree, &mut errs);
            errs.finish().map_err(ApiError::Invalid)?;
        }
        let outcome = self.commit(&gid, tree, force, dry_run, true, now, deployment_id)?;
        Ok((!existed, outcome))
    }

    /// `PATCH /v2/groups/{id}`: Marathon's `GroupPartialUpdate`, `{"enforceRole": bool}` for a top-level group.
    /// Apps run in the role `*` only, so `false` (or nothing) is accepted and changes nothing, and `true` is
    /// refused naming the field.
    pub fn patch_group(&mut self, id: &str, body: &Value) -> Result<(), ApiError> {
        let gid = pathid::normalize(id, "/");
        let Value::Object(m) = body else {
            return Err(ApiError::Invalid(Invalid::Types(vec![Detail {
                path: "/".into(),
                errors: vec!["error.expected.jsobject".into()],
            }])));
        };
        let mut errs = Errors::default();
        for (k, v) in m {
            let p = format!("/{k}");
            match (k.as_str(), v) {
                ("enforceRole", Value::Null | Value::Bool(false)) => {}
                ("enforceRole", Value::Bool(true)) => {
                    errs.bad(p, "enforceRole is not supported yet: apps run in the role '*'")
                }
                ("enforceRole", _) => errs.ty(p, "jsboolean"),
                _ => errs.bad(p, format!("'{k}' is not a known field")),
            }
        }
        errs.finish().map_err(ApiError::Invalid)?;
        if gid == "/" || parent(&gid) != "/" {
            return Err(ApiError::Invalid(Invalid::one("/", "Path needs to be top-level")));
        }
        self.group_or_404(&gid)
    }

    /// `DELETE /v2/groups/{id}`: the group, the groups and the apps below it (a deployment that stops them,
    /// dependents first).
    pub fn delete_group(
        &mut self,
        id: &str,
        force: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<DeploymentResult, ApiError> {
        let gid = pathid::normalize(id, "/");
        self.group_or_404(&gid)?;
        let mut tree = self.tree();
        tree.remove_within(&gid);
        match self.commit(&gid, tree, force, false, false, now, deployment_id)? {
            Outcome::Deployed(r) => Ok(r),
            Outcome::DryRun(_) => unreachable!("not a dry run"),
        }
    }

    /// The versions of a group, newest first: those of writes to it or to a group above it that contained it.
    pub fn group_versions(&self, id: &str) -> Result<Vec<String>, ApiError> {
        let gid = pathid::normalize(id, "/");
        let versions: BTreeSet<String> = self.snapshots(&gid).map(|(v, _)| v.clone()).collect();
        if versions.is_empty() {
            self.group_or_404(&gid)?;
        }
        Ok(versions.into_iter().rev().collect())
    }

    /// The group at `version`, as a tree of that group.
    pub fn group_at(&self, id: &str, version: &str) -> Result<Tree, ApiError> {
        let gid = pathid::normalize(id, "/");
        let (_, snap) = self
            .snapshots(&gid)
            .find(|(v, _)| *v == version)
            .ok_or_else(|| ApiError::NotFound(format!("Version '{version}' of group '{gid}' does not exist")))?;
        let mut tree = Tree::default();
        for (g, meta) in &snap.groups {
            if within(g, &gid) {
                tree.groups.insert(g.clone(), meta.clone());
            }
        }
        for (app_id, v) in snap.apps.iter().filter(|(a, _)| is_under(a, &gid)) {
            let app = self.state.versions.get(app_id).and_then(|vs| vs.get(v)).ok_or_else(|| {
                ApiError::NotFound(format!("Version '{v}' of app '{app_id}' (in group '{gid}') is no longer stored"))
            })?;
            tree.apps.insert(app_id.clone(), app.clone());
        }
        Ok(tree)
    }

    /// Stored versions that contain `gid`: written to it or to a group above it.
    fn snapshots<'a>(&'a self, gid: &'a str) -> impl Iterator<Item = (&'a String, &'a GroupVersion)> + 'a {
        self.state.group_versions.iter().filter(move |(written, _)| within(gid, written)).flat_map(move |(w, vs)| {
            vs.iter()
                .filter(move |(_, s)| w == gid || s.groups.contains_key(gid) || s.apps.keys().any(|a| is_under(a, gid)))
        })
    }

    /// Records the group `gid` as it is now as its version `version`. A group keeps at most [`MAX_VERSIONS`]
    /// versions, and, oldest dropped first, at most [`MAX_GROUP_VERSION_REFS`] app references over all of them
    /// (the newest always stays), so its record stays well below ZooKeeper's node limit however many apps it holds.
    pub(crate) fn store_group_version(&mut self, gid: &str, version: &str) {
        let snap = GroupVersion {
            groups: self
                .state
                .groups
                .iter()
                .filter(|(g, _)| within(g, gid))
                .map(|(g, m)| (g.clone(), m.clone()))
                .collect(),
            apps: keys_under(&self.state.apps, gid)
                .filter_map(|a| self.state.apps.get(a).map(|app| (a.clone(), app.version.clone())))
                .collect(),
        };
        let versions = self.state.group_versions.entry(gid.to_string()).or_default();
        versions.insert(version.to_string(), snap);
        let mut changed = vec![version.to_string()];
        let mut refs: usize = versions.values().map(|v| v.apps.len()).sum();
        while versions.len() > 1 && (versions.len() > MAX_VERSIONS || refs > MAX_GROUP_VERSION_REFS) {
            if let Some((dropped_version, dropped)) = versions.pop_first() {
                refs -= dropped.apps.len();
                changed.push(dropped_version);
            }
        }
        let changes = self.changes_mut();
        changes.group_versions.extend(changed.into_iter().map(|v| (gid.to_string(), v)));
        self.dirty = true;
    }

    /// A change through `/v2/apps` (create, update, scale, restart, delete, rollback of a cancelled deployment)
    /// is a new version of the root group, as every change is in Marathon: `/v2/groups/{id}/versions` lists it for
    /// every group it contains, and `PUT /v2/groups/{id} {"version": ...}` rolls back to it.
    pub(crate) fn record_root_version(&mut self, version: &str) {
        self.store_group_version("/", version);
    }

    /// Diffs `tree` against the apps and deploys the difference as one deployment (or, with `dry_run`, returns
    /// its plan). New and changed apps get one new version; unchanged ones stay as they are. Every affected app
    /// must be free of deployments (409 with the blocking ones) unless `force`; nothing changes before that is
    /// checked. A write (`record`) stores the group's new version.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        gid: &str,
        mut tree: Tree,
        force: bool,
        dry_run: bool,
        record: bool,
        now: Millis,
        deployment_id: String,
    ) -> Result<Outcome, ApiError> {
        let mut errs = crate::app::Errors::default();
        for (id, app) in tree.apps.iter_mut() {
            self.settle_role(app, self.state.apps.get(id), &format!("/apps{id}"), &mut errs);
        }
        errs.finish().map_err(ApiError::Invalid)?;
        allocate_ports(&mut tree.apps, &self.state.apps);
        let mut changes: Vec<(String, Option<AppDefinition>)> =
            self.state.apps.keys().filter(|id| !tree.apps.contains_key(*id)).map(|id| (id.clone(), None)).collect();
        let targets: Vec<(&String, &AppDefinition)> = tree
            .apps
            .iter()
            .filter(|(id, app)| {
                self.state.apps.get(*id).is_none_or(|prev| prev.needs_restart(app) || prev.instances != app.instances)
            })
            .collect();
        let last_group_version = self
            .state
            .group_versions
            .get(gid)
            .and_then(|vs| vs.keys().filter_map(|v| parse_iso(v)).max())
            .map_or(now, |t| now.max(t + 1));
        let version = targets
            .iter()
            .map(|(id, _)| self.new_version(id, now))
            .chain([format_iso(last_group_version)])
            .max()
            .unwrap_or_else(|| format_iso(now));
        for (id, app) in targets {
            let mut app = app.clone();
            set_version(&mut app, self.state.apps.get(id), version.clone());
            changes.push((id.clone(), Some(app)));
        }
        let deleting = !record;
        if dry_run {
            let groups = if deleting { &self.state.groups } else { &tree.groups };
            return Ok(Outcome::DryRun(self.plan(&changes, groups)));
        }
        self.check_capacity(changes.iter().map(|(id, _)| id.as_str()), force)?;
        let blocking: BTreeSet<String> = changes.iter().flat_map(|(id, _)| self.deployments_of(id)).collect();
        if !blocking.is_empty() {
            if !force {
                return Err(ApiError::Locked(blocking.into_iter().collect()));
            }
            for (id, _) in &changes {
                self.check_lock(id, true, now)?;
            }
        }
        // The plan orders stops by the dependencies that held before, and starts by those that will hold.
        let mut groups = tree.groups;
        if gid != "/"
            && let Some(meta) = groups.get_mut(gid)
        {
            meta.version = version.clone();
        }
        for meta in groups.values_mut().filter(|m| m.version.is_empty()) {
            meta.version = version.clone();
        }
        let result = if deleting {
            let r = self.deploy_many(changes, now, deployment_id);
            self.set_groups(groups);
            r
        } else {
            self.set_groups(groups);
            self.deploy_many(changes, now, deployment_id)
        };
        if record {
            self.store_group_version(gid, &version);
        }
        self.dirty = true;
        Ok(Outcome::Deployed(DeploymentResult { deployment_id: result.deployment_id, version }))
    }
}

#[cfg(test)]
mod tests;
