//! The app definition: Marathon's JSON field names and defaults, parsing with partial updates, legacy shapes
//! (`ports`, `uris`) normalised, and validation that reports every problem with its JSON path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::constraints::{Constraint, Operator};
use crate::health::AppHealthCheck;
use crate::pathid;
use crate::readiness::ReadinessCheck;

/// One path's validation errors, as Marathon's `details` entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    pub path: String,
    pub errors: Vec<String>,
}

/// Why a body was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Invalid {
    /// A JSON value of the wrong type (400 `Invalid JSON`).
    #[error("invalid JSON: {0:?}")]
    Types(Vec<Detail>),
    /// Semantic errors (422 `Object is not valid`).
    #[error("object is not valid: {0:?}")]
    Semantics(Vec<Detail>),
}

impl Invalid {
    pub fn details(&self) -> &[Detail] {
        match self {
            Invalid::Types(d) | Invalid::Semantics(d) => d,
        }
    }

    pub fn one(path: &str, error: impl Into<String>) -> Invalid {
        Invalid::Semantics(vec![Detail { path: path.into(), errors: vec![error.into()] }])
    }
}

/// Problems found while parsing, by JSON path.
#[derive(Default)]
pub(crate) struct Errors {
    types: Vec<(String, String)>,
    semantic: Vec<(String, String)>,
}

fn group(list: Vec<(String, String)>) -> Vec<Detail> {
    let mut out: Vec<Detail> = Vec::new();
    for (path, e) in list {
        match out.iter_mut().find(|d| d.path == path) {
            Some(d) => d.errors.push(e),
            None => out.push(Detail { path, errors: vec![e] }),
        }
    }
    out
}

impl Errors {
    /// The objects of the JSON array `v` at `path` (`null` is none), each with its own path `path(i)`; a value of
    /// another shape is reported as a type error and skipped.
    pub(crate) fn objects<'v>(&mut self, v: &'v Value, path: &str) -> Vec<(String, &'v Map<String, Value>)> {
        let items = match v {
            Value::Null => return vec![],
            Value::Array(items) => items,
            _ => {
                self.ty(path, "jsarray");
                return vec![];
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}({i})");
            match item {
                Value::Object(m) => out.push((at, m)),
                _ => self.ty(at, "jsobject"),
            }
        }
        out
    }

    pub(crate) fn ty(&mut self, path: impl Into<String>, expected: &str) {
        self.types.push((path.into(), format!("error.expected.{expected}")));
    }
    pub(crate) fn bad(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.semantic.push((path.into(), msg.into()));
    }
    pub(crate) fn finish(self) -> Result<(), Invalid> {
        if !self.types.is_empty() {
            return Err(Invalid::Types(group(self.types)));
        }
        if !self.semantic.is_empty() {
            return Err(Invalid::Semantics(group(self.semantic)));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortDefinition {
    pub port: u32,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    pub uri: String,
    pub extract: bool,
    pub executable: bool,
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

/// `container.volumes[]`: a host volume (Mesos's host-path or sandbox-path volume on the agent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppVolume {
    pub container_path: String,
    pub host_path: String,
    /// `RO` or `RW`.
    pub mode: String,
}

/// `container`: only `"type": "MESOS"`, with host volumes and optionally `docker.image` (resolved by the agents in
/// their local image registry, `--docker-registry`; without an image the task runs on the agent's read-only host
/// filesystem). DOCKER containers, pulling (`forcePullImage`, `pullConfig`, `credential`), AppC images,
/// persistent/external volumes and port mappings are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppContainer {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub volumes: Vec<AppVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<AppDocker>,
}

/// `container.docker` of a MESOS container: the image the agent runs the task in (`ContainerInfo.image`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDocker {
    pub image: String,
    /// Always false: agents never pull; kept so responses carry Marathon's field.
    #[serde(default)]
    pub force_pull_image: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(serialize_with = "marathon_number")]
    pub minimum_health_capacity: f64,
    #[serde(serialize_with = "marathon_number")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> UpgradeStrategy {
        UpgradeStrategy { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

/// `"disabled"` or `{inactiveAfterSeconds, expungeAfterSeconds}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    Enabled {
        #[serde(rename = "inactiveAfterSeconds")]
        inactive_after_seconds: u64,
        #[serde(rename = "expungeAfterSeconds")]
        expunge_after_seconds: u64,
    },
    Disabled(Disabled),
}

/// The string `"disabled"`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Disabled {
    #[serde(rename = "disabled")]
    Disabled,
}

impl Default for UnreachableStrategy {
    fn default() -> UnreachableStrategy {
        UnreachableStrategy::Enabled { inactive_after_seconds: 0, expunge_after_seconds: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: String,
    pub last_config_change_at: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub mode: String,
}

/// An app definition with every default filled in, as `GET /v2/apps/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub instances: u32,
    #[serde(serialize_with = "marathon_number")]
    pub cpus: f64,
    #[serde(serialize_with = "marathon_number")]
    pub mem: f64,
    #[serde(serialize_with = "marathon_number")]
    pub disk: f64,
    pub gpus: u32,
    pub executor: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<FetchUri>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<AppContainer>,
    pub port_definitions: Vec<PortDefinition>,
    pub require_ports: bool,
    pub networks: Vec<Network>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<AppHealthCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness_checks: Vec<ReadinessCheck>,
    pub upgrade_strategy: UpgradeStrategy,
    pub labels: BTreeMap<String, String>,
    pub backoff_seconds: u64,
    #[serde(serialize_with = "marathon_number")]
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<u64>,
    pub kill_selection: KillSelection,
    pub unreachable_strategy: UnreachableStrategy,
    /// The roles of the offered resources the app's tasks may use: `*` (unreserved) and/or the app's role; `None`:
    /// any the framework is offered (Marathon's default, `*` and its `--mesos_role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    /// The role the app's tasks run in: Marathon's `--mesos-role`. Empty only between parsing a new definition
    /// that names none and [`crate::core::Core`] filling it in.
    pub role: String,
    pub version: String,
    pub version_info: VersionInfo,
}

impl AppDefinition {
    /// Marathon's defaults for an app with this id.
    pub fn with_defaults(id: &str) -> AppDefinition {
        AppDefinition {
            id: id.to_string(),
            cmd: None,
            args: None,
            user: None,
            env: BTreeMap::new(),
            instances: 1,
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
            gpus: 0,
            executor: String::new(),
            constraints: vec![],
            fetch: vec![],
            container: None,
            port_definitions: vec![PortDefinition {
                port: 0,
                protocol: "tcp".into(),
                name: Some("default".into()),
                labels: BTreeMap::new(),
            }],
            require_ports: false,
            networks: vec![Network { mode: "host".into() }],
            dependencies: vec![],
            health_checks: vec![],
            readiness_checks: vec![],
            upgrade_strategy: UpgradeStrategy::default(),
            labels: BTreeMap::new(),
            backoff_seconds: 1,
            backoff_factor: 1.15,
            max_launch_delay_seconds: 300,
            task_kill_grace_period_seconds: None,
            kill_selection: KillSelection::YoungestFirst,
            unreachable_strategy: UnreachableStrategy::default(),
            accepted_resource_roles: None,
            role: "*".into(),
            version: String::new(),
            version_info: VersionInfo { last_scaling_at: String::new(), last_config_change_at: String::new() },
        }
    }

    /// Whether going from `self` to `other` needs a rolling restart (anything but `instances` and the version
    /// bookkeeping changed).
    pub fn needs_restart(&self, other: &AppDefinition) -> bool {
        let strip = |a: &AppDefinition| {
            let mut a = a.clone();
            a.instances = 0;
            a.version = String::new();
            a.version_info = VersionInfo { last_scaling_at: String::new(), last_config_change_at: String::new() };
            a
        };
        strip(self) != strip(other)
    }

    /// The group an app belongs to (`/prod/web` → `/prod`), the base for its relative dependencies.
    pub fn parent(&self) -> String {
        match self.id.rfind('/') {
            Some(0) | None => "/".into(),
            Some(i) => self.id[..i].to_string(),
        }
    }
}

/// Keys the server sets, which clients may echo back and which are ignored on input.
const READ_ONLY: &[&str] = &[
    "version",
    "versionInfo",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "readinessCheckResults",
    "tasksStats",
    "taskStats",
];

/// Marathon fields this version cannot honour yet: accepted only when absent, null or empty.
const NOT_YET: &[(&str, &str)] = &[
    ("check", "Mesos checks are not supported yet"),
    ("secrets", "secrets are not supported yet"),
    ("executorResources", "executorResources is not supported yet"),
    ("resourceLimits", "resourceLimits is not supported yet"),
    ("residency", "resident apps are not supported yet"),
    ("ipAddress", "ipAddress (IP-per-task networking) is not supported yet"),
    ("storeUrls", "storeUrls is not supported"),
    ("tty", "tty is not supported yet"),
];

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn archive(uri: &str) -> bool {
    [".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip"].iter().any(|ext| uri.ends_with(ext))
}

fn string_map(v: &Value, path: &str, errs: &mut Errors) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                match val {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Object(o) if o.contains_key("secret") => {
                        errs.bad(format!("{path}/{k}"), "secret references are not supported yet")
                    }
                    _ => errs.ty(format!("{path}/{k}"), "jsstring"),
                }
            }
        }
        Value::Null => {}
        _ => errs.ty(path, "jsobject"),
    }
    out
}

fn number(v: &Value, path: &str, errs: &mut Errors) -> Option<f64> {
    match v.as_f64() {
        Some(n) => Some(n),
        None => {
            errs.ty(path, "jsnumber");
            None
        }
    }
}

/// A JSON number that is a whole number: `2`, or `2.0` as YAML-to-JSON tools and float-typed clients write it
/// (play-json's `IntReads`, behind Marathon's integer fields, takes both); `2.5` is not.
pub(crate) fn whole_number(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

/// Writes a number as Marathon does: play-json strips trailing zeros, so `128.0` goes out as `128` and `0.5` as
/// `0.5`. Reads take either form, so stored records and clients are unaffected.
pub(crate) fn marathon_number<S: serde::Serializer>(f: &f64, s: S) -> Result<S::Ok, S::Error> {
    if f.fract() == 0.0 && f.abs() < 9.0e15 { s.serialize_i64(*f as i64) } else { s.serialize_f64(*f) }
}

/// [`marathon_number`] for values built with `json!`.
pub(crate) fn marathon_number_value(f: f64) -> Value {
    marathon_number(&f, serde_json::value::Serializer).unwrap_or(Value::Null)
}

/// [`whole_number`], not negative.
pub(crate) fn whole_u64(v: &Value) -> Option<u64> {
    whole_number(v).and_then(|n| u64::try_from(n).ok())
}

/// An integer field of at least `min`.
fn integer(v: &Value, path: &str, min: i64, errs: &mut Errors) -> Option<u64> {
    let whole = whole_number(v);
    if whole.is_none() && v.is_number() {
        errs.ty(path, "int");
        return None;
    }
    match whole {
        Some(n) if n < min => {
            errs.bad(path, format!("got {n}, expected {min} or more"));
            None
        }
        Some(n) => Some(n as u64),
        None => {
            errs.ty(path, "jsnumber");
            None
        }
    }
}

fn at_least(v: &Value, path: &str, min: f64, errs: &mut Errors) -> Option<f64> {
    let n = number(v, path, errs)?;
    if n < min {
        errs.bad(path, format!("got {n}, expected {min} or more"));
        return None;
    }
    Some(n)
}

fn string(v: &Value, path: &str, errs: &mut Errors) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => {
            errs.ty(path, "jsstring");
            None
        }
    }
}

fn strings(v: &Value, path: &str, errs: &mut Errors) -> Option<Vec<String>> {
    let Value::Array(items) = v else {
        errs.ty(path, "jsarray");
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        out.push(string(item, &format!("{path}({i})"), errs)?);
    }
    Some(out)
}

fn constraint(v: &Value, path: &str, errs: &mut Errors) -> Option<Constraint> {
    let fields = strings(v, path, errs)?;
    if fields.len() != 2 && fields.len() != 3 {
        errs.bad(path, "Each constraint must have either 2 or 3 fields");
        return None;
    }
    let Some(operator) = Operator::parse(&fields[1]) else {
        errs.bad(path, "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS");
        return None;
    };
    let c = Constraint { field: fields[0].clone(), operator, value: fields.get(2).cloned() };
    match c.check() {
        Ok(()) => Some(c),
        Err(e) => {
            errs.bad(path, e);
            None
        }
    }
}

fn port_definitions(v: &Value, errs: &mut Errors) -> Option<Vec<PortDefinition>> {
    let Value::Array(items) = v else {
        errs.ty("/portDefinitions", "jsarray");
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("/portDefinitions({i})");
        let Value::Object(m) = item else {
            errs.ty(&path, "jsobject");
            continue;
        };
        let mut pd = PortDefinition { port: 0, protocol: "tcp".into(), name: None, labels: BTreeMap::new() };
        for (k, val) in m {
            let p = format!("{path}/{k}");
            match k.as_str() {
                "port" => match whole_u64(val) {
                    Some(n) if n <= 65535 => pd.port = n as u32,
                    _ => errs.bad(&p, "must be a port number between 0 and 65535"),
                },
                "protocol" => {
                    if let Some(s) = string(val, &p, errs) {
                        if ["tcp", "udp", "udp,tcp"].contains(&s.as_str()) {
                            pd.protocol = s;
                        } else {
                            errs.bad(&p, "must be one of tcp, udp, udp,tcp");
                        }
                    }
                }
                "name" => {
                    if !val.is_null() {
                        pd.name = string(val, &p, errs);
                    }
                }
                "labels" => pd.labels = string_map(val, &p, errs),
                _ => errs.bad(&p, format!("'{k}' is not a known field")),
            }
        }
        out.push(pd);
    }
    Some(out)
}

fn fetch(v: &Value, errs: &mut Errors) -> Option<Vec<FetchUri>> {
    let Value::Array(items) = v else {
        errs.ty("/fetch", "jsarray");
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("/fetch({i})");
        let Some(m) = item.as_object() else {
            errs.ty(&path, "jsobject");
            continue;
        };
        let mut f = FetchUri { uri: String::new(), extract: true, executable: false, cache: false, dest_path: None };
        let mut has_uri = false;
        for (k, val) in m {
            let p = format!("{path}/{k}");
            match k.as_str() {
                "uri" => {
                    has_uri = true;
                    f.uri = string(val, &p, errs).unwrap_or_default();
                }
                "extract" | "executable" | "cache" => match val.as_bool() {
                    Some(b) if k == "extract" => f.extract = b,
                    Some(b) if k == "executable" => f.executable = b,
                    Some(b) => f.cache = b,
                    None if val.is_null() => {}
                    None => errs.ty(&p, "jsboolean"),
                },
                "destPath" => f.dest_path = if val.is_null() { None } else { string(val, &p, errs) },
                _ => errs.bad(&p, format!("'{k}' is not a known field")),
            }
        }
        if !has_uri {
            errs.bad(format!("{path}/uri"), "is required");
            continue;
        }
        out.push(f);
    }
    Some(out)
}

/// Why the agents cannot fetch `uri`, if they cannot: they fetch `http://` and `https://` URLs, `file://` URIs and
/// absolute paths.
fn unfetchable(uri: &str) -> Option<String> {
    if uri.is_empty() {
        return Some("must not be empty".into());
    }
    if uri.starts_with('/') || uri.starts_with("file:///") || uri.starts_with("file://localhost/") {
        return None;
    }
    match uri.split_once("://") {
        Some((scheme, rest))
            if (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) && !rest.is_empty() =>
        {
            None
        }
        Some((scheme, _)) => Some(format!(
            "the scheme '{scheme}' cannot be fetched: the agents fetch http:// and https:// URLs, file:/// URIs and \
             absolute paths"
        )),
        None => Some("must be an http:// or https:// URL, a file:/// URI or an absolute path on the agent".into()),
    }
}

/// Whether `path` is relative and stays inside the sandbox (no `..`), as a `destPath` or a sandbox volume must.
fn inside_sandbox(path: &str) -> bool {
    !path.starts_with('/')
        && !path.split('/').any(|seg| seg == "..")
        && path.split('/').any(|s| !s.is_empty() && s != ".")
}

fn container(v: &Value, errs: &mut Errors) -> Option<AppContainer> {
    let Value::Object(m) = v else {
        errs.ty("/container", "jsobject");
        return None;
    };
    // Marathon's RAML default is DOCKER.
    let kind = match m.get("type") {
        None | Some(Value::Null) => "DOCKER".to_string(),
        Some(t) => string(t, "/container/type", errs)?,
    };
    match kind.as_str() {
        "MESOS" => {}
        "DOCKER" => errs.bad(
            "/container/type",
            "DOCKER containers are not supported: the agents have no Docker engine; use \"type\": \"MESOS\" (with \
             docker.image the task runs in that image from the agents' local registry, without it on the agent's \
             read-only host filesystem)",
        ),
        other => errs.bad("/container/type", format!("'{other}' is not one of MESOS, DOCKER")),
    }
    let mut volumes = Vec::new();
    let mut docker = None;
    for (k, val) in m {
        let p = format!("/container/{k}");
        match k.as_str() {
            "type" => {}
            "docker" if !is_empty_value(val) => docker = docker_image(val, errs),
            "volumes" => match val {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(v) = volume(item, &format!("/container/volumes({i})"), errs) {
                            volumes.push(v);
                        }
                    }
                }
                Value::Null => {}
                _ => errs.ty(&p, "jsarray"),
            },
            "appc" if !is_empty_value(val) => errs.bad(
                &p,
                "AppC images are not supported; use docker.image (resolved in the agents' local image registry)",
            ),
            "portMappings" if !is_empty_value(val) => errs.bad(
                &p,
                "port mappings need container networking, which is not supported yet; use portDefinitions \
                 (host networking)",
            ),
            "linuxInfo" if !is_empty_value(val) => errs.bad(&p, "linuxInfo is not supported yet"),
            "docker" | "appc" | "portMappings" | "linuxInfo" => {}
            _ => errs.bad(&p, format!("'{k}' is not a known field")),
        }
    }
    Some(AppContainer { kind, volumes, docker })
}

/// `container.docker` of a MESOS container: `image` (required); the agents never pull, so `forcePullImage: true`,
/// `pullConfig` and `credential` are refused, as are the DOCKER-only fields.
fn docker_image(v: &Value, errs: &mut Errors) -> Option<AppDocker> {
    let Value::Object(m) = v else {
        errs.ty("/container/docker", "jsobject");
        return None;
    };
    let never_pull = "agents never pull; images come from their local registry (--docker-registry)";
    let mut image = None;
    for (k, val) in m {
        let p = format!("/container/docker/{k}");
        match (k.as_str(), val) {
            ("image", Value::String(s)) if s.trim().is_empty() => errs.bad(&p, "must not be empty"),
            ("image", Value::String(s)) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                errs.bad(&p, "must be an image name NAME[:TAG] without spaces")
            }
            ("image", Value::String(s)) => image = Some(s.clone()),
            ("image", Value::Null) => {}
            ("image", _) => errs.ty(&p, "jsstring"),
            ("forcePullImage", Value::Null | Value::Bool(false)) => {}
            ("forcePullImage", Value::Bool(true)) => {
                errs.bad(&p, format!("forcePullImage is not supported: {never_pull}"))
            }
            ("forcePullImage", _) => errs.ty(&p, "jsboolean"),
            ("pullConfig" | "credential", _) if !is_empty_value(val) => {
                errs.bad(&p, format!("{k} is not supported: {never_pull}"))
            }
            ("privileged", Value::Bool(true)) => errs.bad(&p, "privileged is only for DOCKER containers"),
            ("network" | "portMappings" | "parameters", _) if !is_empty_value(val) => {
                errs.bad(&p, format!("{k} is only for DOCKER containers, which are not supported"))
            }
            ("pullConfig" | "credential" | "privileged" | "network" | "portMappings" | "parameters", _) => {}
            _ => errs.bad(&p, format!("'{k}' is not a known field")),
        }
    }
    if m.get("image").is_none_or(Value::is_null) {
        errs.bad("/container/docker/image", "is required");
    }
    image.map(|image| AppDocker { image, force_pull_image: false })
}

fn volume(v: &Value, path: &str, errs: &mut Errors) -> Option<AppVolume> {
    let Value::Object(m) = v else {
        errs.ty(path, "jsobject");
        return None;
    };
    for (kind, why) in [
        ("persistent", "local persistent volumes are not supported yet (they need reservations)"),
        ("external", "external volumes are not supported (no volume driver)"),
        ("secret", "secret volumes are not supported yet"),
        ("image", "image volumes are not supported: there is no image registry"),
    ] {
        if m.get(kind).is_some_and(|x| !x.is_null()) {
            errs.bad(format!("{path}/{kind}"), why);
            return None;
        }
    }
    let mut text = |key: &str| -> Option<String> {
        let p = format!("{path}/{key}");
        match m.get(key) {
            None | Some(Value::Null) => {
                errs.bad(&p, "is required");
                None
            }
            Some(x) => string(x, &p, errs),
        }
    };
    let (container_path, host_path, mode) = (text("containerPath"), text("hostPath"), text("mode"));
    for key in m.keys() {
        if !["containerPath", "hostPath", "mode"].contains(&key.as_str()) {
            errs.bad(format!("{path}/{key}"), format!("'{key}' is not a known field"));
        }
    }
    let (container_path, host_path, mode) = (container_path?, host_path?, mode?);
    let mut ok = true;
    if !["RO", "RW"].contains(&mode.as_str()) {
        errs.bad(format!("{path}/mode"), "must be one of RO, RW");
        ok = false;
    }
    let absolute_ok = |p: &str| p.len() > 1 && !p.split('/').any(|seg| seg == "..");
    if !(if container_path.starts_with('/') { absolute_ok(&container_path) } else { inside_sandbox(&container_path) }) {
        errs.bad(
            format!("{path}/containerPath"),
            "must be an absolute path other than / or a path relative to the sandbox, without '..'",
        );
        ok = false;
    }
    if !(if host_path.starts_with('/') {
        absolute_ok(&host_path) || host_path == "/"
    } else {
        inside_sandbox(&host_path)
    }) {
        errs.bad(
            format!("{path}/hostPath"),
            "must be an absolute path on the agent or a path relative to the sandbox, without '..'",
        );
        ok = false;
    }
    ok.then_some(AppVolume { container_path, host_path, mode })
}

/// Parses an app body. `base` is the current definition for a partial update (absent fields keep its values),
/// `None` for a create or full replace (absent fields take Marathon's defaults). `id` overrides the body's id
/// (the URL's, already normalised). The result's `version` is left for the caller to set.
pub fn parse_app(body: &Value, base: Option<&AppDefinition>, id: Option<&str>) -> Result<AppDefinition, Invalid> {
    let mut errs = Errors::default();
    let Value::Object(m) = body else {
        return Err(Invalid::Types(vec![Detail { path: "/".into(), errors: vec!["error.expected.jsobject".into()] }]));
    };
    let id = match id {
        Some(id) => id.to_string(),
        None => match m.get("id") {
            Some(Value::String(raw)) => match pathid::validate(raw) {
                Ok(id) => id,
                Err(e) => {
                    errs.bad("/id", e);
                    String::new()
                }
            },
            Some(_) => {
                errs.ty("/id", "jsstring");
                String::new()
            }
            None => match base {
                Some(b) => b.id.clone(),
                None => {
                    errs.bad("/id", "is required");
                    String::new()
                }
            },
        },
    };
    let mut app = match base {
        Some(b) => AppDefinition { id: id.clone(), ..b.clone() },
        // No role yet: the core gives a new definition Marathon's role, or the one the app had.
        None => AppDefinition { role: String::new(), ..AppDefinition::with_defaults(&id) },
    };
    apply_fields(m, &mut app, &mut errs);
    validate_whole(&app, &mut errs);
    errs.finish().map(|()| app)
}

fn apply_fields(m: &Map<String, Value>, app: &mut AppDefinition, errs: &mut Errors) {
    let has = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
    // Legacy `ports` and `uris` beside their successors, as Marathon's `AppValidation`/`AppNormalization` take
    // them (old GET output echoed back carries both): an empty legacy list is ignored, and `ports` equal to the
    // `portDefinitions`' ports are the same thing said twice; only two different non-empty lists conflict.
    let non_empty = |k: &str| m.get(k).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let definition_ports: Option<Vec<&Value>> = m
        .get("portDefinitions")
        .and_then(Value::as_array)
        .map(|defs| defs.iter().map(|d| d.get("port").unwrap_or(&Value::Null)).collect());
    let legacy_ports: Option<Vec<&Value>> = m.get("ports").and_then(Value::as_array).map(|p| p.iter().collect());
    let same_ports = match (&definition_ports, &legacy_ports) {
        (Some(d), Some(p)) => d.len() == p.len() && d.iter().zip(p).all(|(a, b)| a.as_f64() == b.as_f64()),
        _ => false,
    };
    if non_empty("ports") && non_empty("portDefinitions") && !same_ports {
        errs.bad("/", "cannot specify both ports and port definitions");
    }
    if non_empty("uris") && non_empty("fetch") {
        errs.bad("/", "cannot specify both uris and fetch fields");
    }
    let skip_ports = has("portDefinitions") && (same_ports || !non_empty("ports"));
    let skip_uris = !non_empty("uris") && has("fetch");
    // Setting one of cmd/args without the other replaces the other on a partial update.
    if has("cmd") && !m.contains_key("args") {
        app.args = None;
    }
    if has("args") && !m.contains_key("cmd") {
        app.cmd = None;
    }
    for (k, v) in m {
        let path = format!("/{k}");
        let p = path.as_str();
        match k.as_str() {
            "id" => {}
            "cmd" => app.cmd = if v.is_null() { None } else { string(v, p, errs) },
            "args" => app.args = if v.is_null() { None } else { strings(v, p, errs) },
            "user" => app.user = if v.is_null() { None } else { string(v, p, errs) },
            "env" => app.env = string_map(v, p, errs),
            "labels" => app.labels = string_map(v, p, errs),
            "instances" => {
                if let Some(n) = integer(v, p, 0, errs) {
                    app.instances = n.min(u64::from(u32::MAX)) as u32;
                }
            }
            "cpus" => app.cpus = at_least(v, p, 0.001, errs).unwrap_or(app.cpus),
            "mem" => app.mem = at_least(v, p, 0.0, errs).unwrap_or(app.mem),
            "disk" => app.disk = at_least(v, p, 0.0, errs).unwrap_or(app.disk),
            "gpus" => {
                if let Some(n) = integer(v, p, 0, errs)
                    && n > 0
                {
                    errs.bad(p, "GPU resources are not supported yet");
                }
            }
            "executor" => {
                if let Some(s) = string(v, p, errs) {
                    if s.is_empty() || s == "//cmd" {
                        app.executor = s;
                    } else {
                        errs.bad(p, "custom executors are not supported yet; use \"\" or \"//cmd\"");
                    }
                }
            }
            "constraints" => {
                if v.is_null() {
                    app.constraints = vec![];
                } else if let Value::Array(items) = v {
                    let parsed: Vec<_> = items
                        .iter()
                        .enumerate()
                        .filter_map(|(i, c)| constraint(c, &format!("/constraints({i})"), errs))
                        .collect();
                    app.constraints = parsed;
                } else {
                    errs.ty(p, "jsarray");
                }
            }
            "uris" if skip_uris => {}
            "uris" => {
                if let Some(uris) = if v.is_null() { Some(vec![]) } else { strings(v, p, errs) } {
                    app.fetch = uris
                        .into_iter()
                        .map(|uri| FetchUri {
                            extract: archive(&uri),
                            uri,
                            executable: false,
                            cache: false,
                            dest_path: None,
                        })
                        .collect();
                }
            }
            "fetch" => {
                if let Some(f) = if v.is_null() { Some(vec![]) } else { fetch(v, errs) } {
                    app.fetch = f;
                }
            }
            "container" => app.container = if v.is_null() { None } else { container(v, errs) },
            "ports" if skip_ports => {}
            "ports" => {
                if let Value::Array(items) = v {
                    let mut defs = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match whole_u64(item) {
                            Some(n) if n <= 65535 => defs.push(PortDefinition {
                                port: n as u32,
                                protocol: "tcp".into(),
                                name: None,
                                labels: BTreeMap::new(),
                            }),
                            _ => errs.bad(format!("/ports({i})"), "must be a port number between 0 and 65535"),
                        }
                    }
                    app.port_definitions = defs;
                } else if !v.is_null() {
                    errs.ty(p, "jsarray");
                }
            }
            "portDefinitions" => {
                if v.is_null() {
                    app.port_definitions = vec![];
                } else if let Some(defs) = port_definitions(v, errs) {
                    app.port_definitions = defs;
                }
            }
            "requirePorts" => match v.as_bool() {
                Some(b) => app.require_ports = b,
                None => errs.ty(p, "jsboolean"),
            },
            "networks" => {
                let host_only = match v {
                    Value::Null => true,
                    Value::Array(a) => a.iter().all(|n| n.get("mode").and_then(Value::as_str) == Some("host")),
                    _ => false,
                };
                if !host_only {
                    errs.bad(p, "only host networking ([{\"mode\":\"host\"}]) is supported yet");
                }
            }
            "dependencies" => {
                if let Some(deps) = if v.is_null() { Some(vec![]) } else { strings(v, p, errs) } {
                    // Relative to the app's own id, as Marathon's canonicalPath: `../db` from `/shop/web` is `/shop/db`.
                    let parent = app.id.clone();
                    let mut out = Vec::new();
                    for (i, d) in deps.iter().enumerate() {
                        let normalized = pathid::normalize(d, &parent);
                        if normalized == "/" || !normalized.split('/').skip(1).all(pathid::valid_segment) {
                            errs.bad(format!("/dependencies({i})"), format!("must fit regex '{}'", pathid::ID_REGEX));
                        } else {
                            out.push(normalized);
                        }
                    }
                    app.dependencies = out;
                }
            }
            "upgradeStrategy" => {
                let mut s = UpgradeStrategy::default();
                if let Value::Object(o) = v {
                    for (key, slot) in [
                        ("minimumHealthCapacity", &mut s.minimum_health_capacity),
                        ("maximumOverCapacity", &mut s.maximum_over_capacity),
                    ] {
                        let kp = format!("/upgradeStrategy/{key}");
                        if let Some(x) = o.get(key).and_then(|x| number(x, &kp, errs)) {
                            if x > 1.0 {
                                errs.bad(&kp, "is greater than 1");
                            } else if x < 0.0 {
                                errs.bad(&kp, "is less than 0");
                            }
                            *slot = x;
                        }
                    }
                    for key in o.keys() {
                        if key != "minimumHealthCapacity" && key != "maximumOverCapacity" {
                            errs.bad(format!("/upgradeStrategy/{key}"), format!("'{key}' is not a known field"));
                        }
                    }
                    app.upgrade_strategy = s;
                } else if v.is_null() {
                    app.upgrade_strategy = s;
                } else {
                    errs.ty(p, "jsobject");
                }
            }
            "healthChecks" => app.health_checks = crate::health::parse(v, p, errs),
            "readinessChecks" => app.readiness_checks = crate::readiness::parse(v, p, errs),
            "backoffSeconds" => app.backoff_seconds = integer(v, p, 0, errs).unwrap_or(app.backoff_seconds),
            "backoffFactor" => app.backoff_factor = at_least(v, p, 1.0, errs).unwrap_or(app.backoff_factor),
            "maxLaunchDelaySeconds" => {
                app.max_launch_delay_seconds = integer(v, p, 0, errs).unwrap_or(app.max_launch_delay_seconds)
            }
            "taskKillGracePeriodSeconds" => {
                app.task_kill_grace_period_seconds = if v.is_null() { None } else { integer(v, p, 0, errs) }
            }
            "killSelection" => match v.as_str() {
                Some("YOUNGEST_FIRST") => app.kill_selection = KillSelection::YoungestFirst,
                Some("OLDEST_FIRST") => app.kill_selection = KillSelection::OldestFirst,
                _ => errs.bad(p, "must be one of YOUNGEST_FIRST, OLDEST_FIRST"),
            },
            "unreachableStrategy" => match v {
                Value::String(s) if s == "disabled" => {
                    app.unreachable_strategy = UnreachableStrategy::Disabled(Disabled::Disabled)
                }
                Value::Object(o) => {
                    let get = |key: &str, errs: &mut Errors| {
                        o.get(key).and_then(|x| integer(x, &format!("/unreachableStrategy/{key}"), 0, errs))
                    };
                    let inactive = get("inactiveAfterSeconds", errs).unwrap_or(0);
                    let expunge = get("expungeAfterSeconds", errs).unwrap_or(0);
                    if inactive > expunge {
                        errs.bad(
                            "/unreachableStrategy",
                            format!(
                                "inactiveAfterSeconds ({inactive}) must be less or equal to expungeAfterSeconds, which is {expunge}"
                            ),
                        );
                    }
                    app.unreachable_strategy = UnreachableStrategy::Enabled {
                        inactive_after_seconds: inactive,
                        expunge_after_seconds: expunge,
                    };
                }
                _ => errs.bad(p, "must be \"disabled\" or {inactiveAfterSeconds, expungeAfterSeconds}"),
            },
            // Checked against Marathon's role by the core (`Core::settle_role`), which also fills in a missing one.
            "role" => match v.as_str() {
                Some(r) if agora_proto::convert::valid_role(r) => app.role = r.to_string(),
                Some(r) => errs.bad(p, format!("'{r}' is not a valid role name")),
                None if v.is_null() => {}
                None => errs.ty(p, "jsstring"),
            },
            "acceptedResourceRoles" => match v {
                Value::Null => app.accepted_resource_roles = None,
                Value::Array(a) if a.is_empty() => errs.bad(p, "must not be empty"),
                Value::Array(a) => {
                    let mut roles: Vec<String> = Vec::new();
                    for (i, r) in a.iter().enumerate() {
                        match r.as_str() {
                            Some(r) if agora_proto::convert::valid_role(r) => {
                                if !roles.iter().any(|x| x == r) {
                                    roles.push(r.to_string());
                                }
                            }
                            Some(r) => errs.bad(format!("{p}({i})"), format!("'{r}' is not a valid role name")),
                            None => errs.ty(format!("{p}({i})"), "jsstring"),
                        }
                    }
                    app.accepted_resource_roles = Some(roles);
                }
                _ => errs.ty(p, "jsarray"),
            },
            key if READ_ONLY.contains(&key) => {}
            key => match NOT_YET.iter().find(|(name, _)| *name == key) {
                Some((_, why)) => {
                    if !is_empty_value(v) {
                        errs.bad(p, *why);
                    }
                }
                None => errs.bad(p, format!("'{key}' is not a known field")),
            },
        }
    }
}

fn validate_whole(app: &AppDefinition, errs: &mut Errors) {
    let has_cmd = app.cmd.as_deref().is_some_and(|c| !c.is_empty());
    let has_args = app.args.as_ref().is_some_and(|a| !a.is_empty());
    // An app in an image may give neither: the image's Entrypoint/Cmd run.
    let in_image = app.container.as_ref().is_some_and(|c| c.docker.is_some());
    if (has_cmd && has_args) || (!has_cmd && !has_args && !in_image) {
        errs.bad("/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.");
    }
    let mut seen = std::collections::BTreeSet::new();
    for pd in &app.port_definitions {
        if pd.port != 0 && !seen.insert(pd.port) {
            errs.bad("/portDefinitions", "ports must be unique");
            break;
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for pd in &app.port_definitions {
        if let Some(n) = &pd.name
            && !names.insert(n)
        {
            errs.bad("/portDefinitions", "port names must be unique");
            break;
        }
    }
    if app.require_ports && app.port_definitions.iter().any(|p| p.port == 0) {
        errs.bad("/requirePorts", "requirePorts needs every port to be set (non-zero)");
    }
    for (i, f) in app.fetch.iter().enumerate() {
        if let Some(why) = unfetchable(&f.uri) {
            errs.bad(format!("/fetch({i})/uri"), why);
        }
        if let Some(dest) = &f.dest_path
            && !inside_sandbox(dest)
        {
            errs.bad(format!("/fetch({i})/destPath"), "must be a path relative to the sandbox, without '..'");
        }
    }
    if app.dependencies.contains(&app.id) {
        errs.bad("/dependencies", "an app cannot depend on itself");
    }
    crate::health::validate(app, errs);
    crate::readiness::validate(app, errs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<AppDefinition, Invalid> {
        parse_app(&v, None, None)
    }

    /// play-json strips trailing zeros: Marathon answers `"mem": 128`, not `128.0`; fractions stay; both read back.
    #[test]
    fn whole_numbers_are_written_without_a_fraction_and_read_back() {
        let app = parse(json!({"id": "/a", "cmd": "x", "cpus": 0.5, "mem": 128.0, "disk": 64,
            "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}}))
        .unwrap();
        let text = serde_json::to_string(&app).unwrap();
        for part in [
            r#""cpus":0.5,"mem":128,"disk":64,"#,
            r#""minimumHealthCapacity":0.5,"maximumOverCapacity":0}"#,
            r#""backoffFactor":1.15,"#,
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let back: AppDefinition = serde_json::from_str(&text).unwrap();
        assert_eq!(back, app);
        assert_eq!(marathon_number_value(2.0).to_string(), "2");
        assert_eq!(marathon_number_value(-0.25).to_string(), "-0.25");
    }

    #[test]
    fn defaults_are_marathons() {
        let app = parse(json!({"id": "web", "cmd": "sleep 100"})).unwrap();
        assert_eq!(app.id, "/web");
        assert_eq!((app.instances, app.cpus, app.mem, app.disk), (1, 1.0, 128.0, 0.0));
        assert_eq!((app.backoff_seconds, app.backoff_factor, app.max_launch_delay_seconds), (1, 1.15, 300));
        assert_eq!(app.upgrade_strategy, UpgradeStrategy { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0 });
        let out = serde_json::to_value(&app).unwrap();
        assert_eq!(out["portDefinitions"], json!([{"port": 0, "protocol": "tcp", "name": "default"}]));
        assert_eq!(out["unreachableStrategy"], json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}));
        assert_eq!(out["killSelection"], "YOUNGEST_FIRST");
        assert_eq!(out["networks"], json!([{"mode": "host"}]));
        assert!(out.get("env").is_none() && out.get("constraints").is_none());
    }

    #[test]
    fn legacy_ports_and_uris_are_normalised() {
        let app = parse(json!({"id": "/a", "cmd": "x", "ports": [0, 0]})).unwrap();
        assert_eq!(app.port_definitions.len(), 2);
        assert!(app.port_definitions.iter().all(|p| p.port == 0 && p.name.is_none()));
        // uris become fetch entries, extracted when they name an archive.
        let app = parse(json!({"id": "/a", "cmd": "x", "uris": ["http://h/app.tgz", "/opt/run.sh"]})).unwrap();
        let fetch_json = serde_json::to_value(&app.fetch).unwrap();
        assert_eq!(
            fetch_json,
            json!([
                {"uri": "http://h/app.tgz", "extract": true, "executable": false, "cache": false},
                {"uri": "/opt/run.sh", "extract": false, "executable": false, "cache": false}
            ])
        );
        assert!(parse(json!({"id": "/a", "cmd": "x", "uris": ["https://h/app.tgz"]})).is_ok(), "https is fetched");
        let err = parse(json!({"id": "/a", "cmd": "x", "uris": ["ftp://h/app.tgz"]})).unwrap_err();
        assert_eq!(err.details()[0].path, "/fetch(0)/uri");
        let mut errs = Errors::default();
        let f = fetch(&json!([{"uri": "http://h/app.tgz"}, {"uri": "x", "extract": false}]), &mut errs).unwrap();
        assert_eq!(f.iter().map(|f| f.extract).collect::<Vec<_>>(), vec![true, false]);
        assert!(archive("a.tar.gz") && !archive("a.bin"));
    }

    #[test]
    fn fetch_is_validated_with_paths() {
        let app = parse(json!({"id": "/a", "cmd": "x", "fetch": [
            {"uri": "http://h/tool", "executable": true, "extract": false, "cache": true, "destPath": "bin/tool"},
            {"uri": "file:///srv/a.zip"}
        ]}))
        .unwrap();
        assert_eq!(
            app.fetch[0],
            FetchUri {
                uri: "http://h/tool".into(),
                extract: false,
                executable: true,
                cache: true,
                dest_path: Some("bin/tool".into())
            }
        );
        assert!(app.fetch[1].extract && !app.fetch[1].executable);
        let err = parse(json!({"id": "/a", "cmd": "x", "fetch": [
            {"uri": "s3://bucket/a"}, {"uri": "relative/a"}, {"uri": "/ok", "destPath": "../out"},
            {"uri": "/ok", "destPath": "/abs"}, {"extract": true}, {"uri": "/ok", "bogus": 1}
        ]}))
        .unwrap_err();
        let paths: Vec<_> = err.details().iter().map(|d| d.path.as_str()).collect();
        for p in [
            "/fetch(0)/uri",
            "/fetch(1)/uri",
            "/fetch(2)/destPath",
            "/fetch(3)/destPath",
            "/fetch(4)/uri",
            "/fetch(5)/bogus",
        ] {
            assert!(paths.contains(&p), "{p} in {paths:?}");
        }
        let s3 = err.details().iter().find(|d| d.path == "/fetch(0)/uri").unwrap();
        assert!(s3.errors[0].contains("'s3'"), "{s3:?}");
        let err = parse(json!({"id": "/a", "cmd": "x", "fetch": [{"uri": "/ok", "cache": "yes"}]})).unwrap_err();
        assert!(matches!(err, Invalid::Types(_)), "{err:?}");
    }

    #[test]
    fn mesos_containers_with_host_volumes_are_accepted_and_the_rest_refused_by_name() {
        let app = parse(json!({"id": "/a", "cmd": "x", "container": {"type": "MESOS", "volumes": [
            {"containerPath": "/data", "hostPath": "/srv/data", "mode": "RW"},
            {"containerPath": "cache", "hostPath": "cache", "mode": "RO"}
        ], "docker": null, "portMappings": []}}))
        .unwrap();
        let out = serde_json::to_value(&app).unwrap();
        assert_eq!(
            out["container"],
            json!({"type": "MESOS", "volumes": [
                {"containerPath": "/data", "hostPath": "/srv/data", "mode": "RW"},
                {"containerPath": "cache", "hostPath": "cache", "mode": "RO"}
            ]})
        );
        let refused = |body: Value| -> Vec<String> {
            let err = parse(body).unwrap_err();
            assert!(matches!(err, Invalid::Semantics(_)), "{err:?}");
            err.details().iter().map(|d| d.path.clone()).collect()
        };
        assert_eq!(
            refused(json!({"id": "/a", "cmd": "x", "container": {"docker": {"image": "nginx"}}})),
            vec!["/container/type"]
        );
        assert_eq!(
            refused(json!({"id": "/a", "cmd": "x", "container": {"type": "MESOS", "appc": {"image": "nginx"}}})),
            vec!["/container/appc"]
        );
        let body = json!({"id": "/a", "cmd": "x", "container": {"type": "MESOS", "volumes": [
            {"containerPath": "data", "mode": "RW", "persistent": {"size": 10}},
            {"containerPath": "/ext", "mode": "RW", "external": {"name": "v"}},
            {"containerPath": "/x", "hostPath": "/srv", "mode": "RX"},
            {"containerPath": "../up", "hostPath": "/srv", "mode": "RO"},
            {"containerPath": "/y", "mode": "RO"}
        ], "portMappings": [{"containerPort": 80}]}});
        assert_eq!(
            refused(body),
            vec![
                // Keys in JSON object order (sorted).
                "/container/portMappings",
                "/container/volumes(0)/persistent",
                "/container/volumes(1)/external",
                "/container/volumes(2)/mode",
                "/container/volumes(3)/containerPath",
                "/container/volumes(4)/hostPath"
            ]
        );
    }

    #[test]
    fn a_mesos_container_carries_a_docker_image_and_pulling_is_refused_by_name() {
        let app = parse(json!({"id": "/a", "cmd": "x", "container": {"type": "MESOS",
            "docker": {"image": "library/busybox:1.36", "forcePullImage": false, "privileged": false,
                       "parameters": [], "credential": null}}}))
        .unwrap();
        let c = app.container.as_ref().unwrap();
        assert_eq!(c.docker, Some(AppDocker { image: "library/busybox:1.36".into(), force_pull_image: false }));
        // In an image neither cmd nor args is needed (the image's Entrypoint/Cmd run); without one, one of them is.
        let entry = parse(json!({"id": "/e", "container": {"type": "MESOS", "docker": {"image": "busybox"}}})).unwrap();
        assert_eq!((entry.cmd, entry.args), (None, None));
        let err = parse(json!({"id": "/e", "container": {"type": "MESOS", "volumes": []}})).unwrap_err();
        assert!(err.details()[0].errors[0].starts_with("AppDefinition must either contain"), "{:?}", err.details());
        let out = serde_json::to_value(&app).unwrap();
        assert_eq!(
            out["container"],
            json!({"type": "MESOS", "volumes": [], "docker": {"image": "library/busybox:1.36", "forcePullImage": false}})
        );
        // Stored definitions written before images round-trip unchanged.
        let old: AppContainer = serde_json::from_value(json!({"type": "MESOS", "volumes": []})).unwrap();
        assert_eq!(old.docker, None);

        let err = parse(json!({"id": "/a", "cmd": "x", "container": {"type": "MESOS", "docker": {"image": "b",
            "forcePullImage": true, "pullConfig": {"secret": "s"}, "credential": {"principal": "p"},
            "portMappings": [{"containerPort": 80}], "bogus": 1}}}))
        .unwrap_err();
        let details = err.details();
        let paths: Vec<_> = details.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/container/docker/bogus",
                "/container/docker/credential",
                "/container/docker/forcePullImage",
                "/container/docker/portMappings",
                "/container/docker/pullConfig",
            ]
        );
        for (path, word) in [
            ("/container/docker/forcePullImage", "forcePullImage is not supported"),
            ("/container/docker/pullConfig", "pullConfig is not supported"),
            ("/container/docker/credential", "credential is not supported"),
        ] {
            let d = details.iter().find(|d| d.path == path).unwrap();
            assert!(d.errors[0].starts_with(word) && d.errors[0].contains("--docker-registry"), "{d:?}");
        }
        for (docker, path) in [
            (json!({}), None),
            (json!({"forcePullImage": false}), Some("/container/docker/image")),
            (json!({"image": ""}), Some("/container/docker/image")),
            (json!({"image": "a b"}), Some("/container/docker/image")),
        ] {
            let body = json!({"id": "/a", "cmd": "x", "container": {"type": "MESOS", "docker": docker}});
            match path {
                None => assert_eq!(parse(body).unwrap().container.unwrap().docker, None),
                Some(path) => assert_eq!(parse(body).unwrap_err().details()[0].path, path),
            }
        }
    }

    #[test]
    fn semantic_errors_are_grouped_by_path() {
        let err = parse(json!({"id": "/Bad", "instances": -1, "upgradeStrategy": {"minimumHealthCapacity": 1.5}}))
            .unwrap_err();
        let Invalid::Semantics(details) = err else { panic!("{err:?}") };
        let paths: Vec<_> = details.iter().map(|d| d.path.as_str()).collect();
        assert!(paths.contains(&"/id"), "{paths:?}");
        assert!(paths.contains(&"/instances"));
        assert!(paths.contains(&"/upgradeStrategy/minimumHealthCapacity"));
        assert!(paths.contains(&"/"), "no cmd: {paths:?}");
        let ups = details.iter().find(|d| d.path == "/upgradeStrategy/minimumHealthCapacity").unwrap();
        assert_eq!(ups.errors, vec!["is greater than 1"]);
    }

    #[test]
    fn type_errors_are_separate() {
        let err = parse(json!({"id": "/a", "cmd": "x", "instances": "three"})).unwrap_err();
        assert!(matches!(err, Invalid::Types(ref d) if d[0].path == "/instances"), "{err:?}");
    }

    /// Whole numbers written as floats are integers (play-json's `IntReads`); fractions are type errors.
    #[test]
    fn whole_floats_are_integers() {
        let app = parse(json!({"id": "/a", "cmd": "x", "instances": 2.0, "gpus": 0.0, "backoffSeconds": 1.0,
                               "ports": [0.0], "maxLaunchDelaySeconds": 3600.0}));
        let app = app.unwrap();
        assert_eq!((app.instances, app.backoff_seconds, app.max_launch_delay_seconds), (2, 1, 3600));
        let err = parse(json!({"id": "/a", "cmd": "x", "instances": 2.5})).unwrap_err();
        assert!(
            matches!(err, Invalid::Types(ref d) if d[0].path == "/instances" && d[0].errors == ["error.expected.int"]),
            "{err:?}"
        );
    }

    /// Old GET output echoed back carries `ports` and `uris` beside `portDefinitions` and `fetch`: Marathon takes
    /// an empty legacy list or the same ports said twice, and refuses only two different non-empty lists.
    #[test]
    fn legacy_lists_beside_their_successors() {
        let app = parse(json!({"id": "/a", "cmd": "x", "ports": [10000, 10001], "uris": [],
                               "portDefinitions": [{"port": 10000, "name": "http"}, {"port": 10001}],
                               "fetch": [{"uri": "http://example.com/a.tgz"}]}))
        .unwrap();
        assert_eq!(app.port_definitions.iter().map(|p| p.port).collect::<Vec<_>>(), vec![10000, 10001]);
        assert_eq!(app.port_definitions[0].name.as_deref(), Some("http"), "portDefinitions win");
        assert_eq!(app.fetch.len(), 1, "an empty uris leaves fetch alone");
        let app = parse(json!({"id": "/a", "cmd": "x", "ports": [], "portDefinitions": [{"port": 0, "name": "p"}],
                               "uris": ["http://example.com/b.zip"], "fetch": []}))
        .unwrap();
        assert_eq!(app.port_definitions[0].name.as_deref(), Some("p"));
        assert_eq!(app.fetch[0].uri, "http://example.com/b.zip");
        let err = parse(json!({"id": "/a", "cmd": "x", "ports": [1], "portDefinitions": [{"port": 2}],
                               "uris": ["http://example.com/c"], "fetch": [{"uri": "http://example.com/d"}]}))
        .unwrap_err();
        assert_eq!(
            err.details()[0].errors,
            vec!["cannot specify both ports and port definitions", "cannot specify both uris and fetch fields"]
        );
    }

    #[test]
    fn unsupported_fields_are_named() {
        let err =
            parse(json!({"id": "/a", "cmd": "x", "secrets": {"s": {"source": "x"}}, "frobnicate": 1})).unwrap_err();
        let paths: Vec<_> = err.details().iter().map(|d| d.path.clone()).collect();
        assert_eq!(paths, vec!["/frobnicate", "/secrets"]);
        // Empty values of those fields are fine, as are echoed read-only fields.
        parse(json!({"id": "/a", "cmd": "x", "healthChecks": [], "container": null, "tasksRunning": 3})).unwrap();
    }

    #[test]
    fn constraint_validation() {
        let err =
            parse(json!({"id": "/a", "cmd": "x", "constraints": [["hostname", "UNIQUE", "x"], ["a", "NOPE"], ["a"]]}))
                .unwrap_err();
        let errors: Vec<_> = err.details().iter().flat_map(|d| d.errors.clone()).collect();
        assert!(errors.contains(&"UNIQUE does not accept a value".to_string()), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("operator must be one of")));
        assert!(errors.contains(&"Each constraint must have either 2 or 3 fields".to_string()));
        let ok = parse(json!({"id": "/a", "cmd": "x", "constraints": [["hostname", "unique"]]})).unwrap();
        assert_eq!(serde_json::to_value(&ok.constraints).unwrap(), json!([["hostname", "UNIQUE"]]));
    }

    #[test]
    fn partial_update_keeps_absent_fields() {
        let base = parse(json!({"id": "/a", "cmd": "x", "instances": 3, "labels": {"k": "v"}})).unwrap();
        let app = parse_app(&json!({"args": ["/bin/true"]}), Some(&base), Some("/a")).unwrap();
        assert_eq!(app.instances, 3);
        assert_eq!(app.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!((app.cmd, app.args), (None, Some(vec!["/bin/true".to_string()])));
    }

    #[test]
    fn cmd_and_args_together_are_refused() {
        let err = parse(json!({"id": "/a", "cmd": "x", "args": ["y"]})).unwrap_err();
        assert_eq!(err.details()[0].path, "/");
    }

    #[test]
    fn restart_needed_only_for_config_changes() {
        let a = parse(json!({"id": "/a", "cmd": "x"})).unwrap();
        let scaled = AppDefinition { instances: 5, version: "v2".into(), ..a.clone() };
        assert!(!a.needs_restart(&scaled));
        let changed = AppDefinition { cmd: Some("y".into()), ..a.clone() };
        assert!(a.needs_restart(&changed));
    }

    #[test]
    fn stored_definitions_round_trip() {
        let a = parse(json!({"id": "/a", "cmd": "x", "constraints": [["rack", "MAX_PER", "2"]],
            "unreachableStrategy": "disabled"}))
        .unwrap();
        let back: AppDefinition = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(a, back);
    }
}
