//! The state as nodes, the unit both stores write: one record per app (its definition, its versions, its last
//! failure), per instance, per deployment, per group and per group version, plus the framework id, each keyed by a
//! relative path (`apps/_shop_web`, `instances/<task id>`, `deployments/<id>`, `groups/_shop`,
//! `group-versions/_shop@<version>`, `framework-id`) and serialised as JSON. A group version is a record of its own
//! because every app change records a version of the root group naming every app: rewriting all of a group's
//! versions with each would cost O(versions × apps) per change. [`super::zk::ZkStore`] keeps one ZooKeeper node per record; [`super::FileStore`] appends the changed
//! records to its journal. Ids become names with `/` → `_` (`_` is not allowed in Marathon ids, so this is
//! reversible).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Changes, StoreError};
use crate::app::AppDefinition;
use crate::core::{Deployment, Instance, Persisted, TaskFailure};
use crate::groups::{GroupMeta, GroupVersion};

#[derive(Serialize, Deserialize, Default)]
struct AppNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app: Option<AppDefinition>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    versions: BTreeMap<String, AppDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<TaskFailure>,
    /// Instances waiting to relaunch as their next incarnation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    relaunch: Vec<(String, u32)>,
}

#[derive(Serialize, Deserialize, Default)]
struct GroupNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<GroupMeta>,
    /// Versions kept in the group's record (the layout before `group-versions/`), still read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    versions: BTreeMap<String, GroupVersion>,
}

fn key(id: &str) -> String {
    id.replace('/', "_")
}

fn unkey(name: &str) -> String {
    name.replace('_', "/")
}

fn bytes<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// An app's node, borrowed from the state: serialises as [`AppNode`] does.
#[derive(Serialize)]
struct AppNodeRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a AppDefinition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<&'a BTreeMap<String, AppDefinition>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a TaskFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relaunch: Option<&'a Vec<(String, u32)>>,
}

/// A group's node, borrowed from the state: serialises as [`GroupNode`] does.
#[derive(Serialize)]
struct GroupNodeRef<'a> {
    meta: &'a GroupMeta,
}

/// The node of app `id` (`None`: the state holds nothing of it).
fn app_node(state: &Persisted, id: &str) -> Option<Vec<u8>> {
    let node = AppNodeRef {
        app: state.apps.get(id),
        versions: state.versions.get(id).filter(|v| !v.is_empty()),
        failure: state.failures.get(id),
        relaunch: state.relaunch.get(id).filter(|r| !r.is_empty()),
    };
    let any = node.app.is_some() || node.versions.is_some() || node.failure.is_some() || node.relaunch.is_some();
    any.then(|| bytes(&node))
}

/// The node of group `id` (`None`: the state has no record of it).
fn group_node(state: &Persisted, id: &str) -> Option<Vec<u8>> {
    state.groups.get(id).map(|meta| bytes(&GroupNodeRef { meta }))
}

/// The path of version `version` of group `id`.
fn group_version_path(id: &str, version: &str) -> String {
    format!("group-versions/{}@{version}", key(id))
}

/// The state as nodes: relative path → data.
pub fn split(state: &Persisted) -> BTreeMap<String, Vec<u8>> {
    changed_nodes(state, &Changes::everything(state))
        .into_iter()
        .filter_map(|(path, data)| Some((path, data?)))
        .collect()
}

/// The nodes `changes` names, by relative path: their data now, or `None` where the state no longer has one.
pub fn changed_nodes(state: &Persisted, changes: &Changes) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    if changes.framework_id {
        out.push(("framework-id".to_string(), state.framework_id.as_ref().map(|id| id.as_bytes().to_vec())));
    }
    for id in &changes.apps {
        out.push((format!("apps/{}", key(id)), app_node(state, id)));
    }
    for id in &changes.instances {
        out.push((format!("instances/{id}"), state.instances.get(id).map(bytes)));
    }
    for id in &changes.deployments {
        out.push((format!("deployments/{id}"), state.deployments.get(id).map(bytes)));
    }
    for id in &changes.groups {
        out.push((format!("groups/{}", key(id)), group_node(state, id)));
    }
    for (id, version) in &changes.group_versions {
        let data = state.group_versions.get(id).and_then(|v| v.get(version)).map(bytes);
        out.push((group_version_path(id, version), data));
    }
    out
}

/// The state from its nodes (relative path → data); `location` names the store in errors.
pub fn assemble(nodes: &BTreeMap<String, Vec<u8>>, location: &str) -> Result<Persisted, StoreError> {
    let mut state = Persisted::default();
    let corrupt = |path: &str, source: serde_json::Error| StoreError::Corrupt {
        path: format!("{location}/{path}").into(),
        source,
    };
    for (path, data) in nodes {
        let (dir, name) = path.split_once('/').unwrap_or(("", path.as_str()));
        match dir {
            "" if name == "framework-id" => {
                state.framework_id = Some(String::from_utf8_lossy(data).into_owned());
            }
            "apps" => {
                let node: AppNode = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                let id = unkey(name);
                if let Some(app) = node.app {
                    state.apps.insert(id.clone(), app);
                }
                if !node.versions.is_empty() {
                    state.versions.insert(id.clone(), node.versions);
                }
                if let Some(f) = node.failure {
                    state.failures.insert(id.clone(), f);
                }
                if !node.relaunch.is_empty() {
                    state.relaunch.insert(id, node.relaunch);
                }
            }
            "instances" => {
                let i: Instance = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                state.instances.insert(i.task_id.clone(), i);
            }
            "deployments" => {
                let d: Deployment = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                state.deployments.insert(d.id.clone(), d);
            }
            "groups" => {
                let node: GroupNode = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                let id = unkey(name);
                if let Some(meta) = node.meta {
                    state.groups.insert(id.clone(), meta);
                }
                state.group_versions.entry(id).or_default().extend(node.versions);
            }
            "group-versions" => {
                let Some((id, version)) = name.rsplit_once('@') else {
                    let e = <serde_json::Error as serde::de::Error>::custom("not a name of the form GROUP@VERSION");
                    return Err(corrupt(path, e));
                };
                let v: GroupVersion = serde_json::from_slice(data).map_err(|e| corrupt(path, e))?;
                state.group_versions.entry(unkey(id)).or_default().insert(version.to_string(), v);
            }
            _ => {}
        }
    }
    Ok(state)
}
