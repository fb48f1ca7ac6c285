//! Conversions between the generated wire messages (`crate::wire`) and the domain model (`crate::model`).
//!
//! Model → wire is infallible (`From`). Wire → model is `TryFrom` and fails with a [`ConvertError`] naming the
//! field, because what arrives on the wire comes from other programs.

mod network;

use crate::model::{self, Fixed};
use crate::wire;

pub use network::{
    agent_network_from_wire, agent_network_to_wire, assignment_from_wire, assignment_to_wire, network_info_to_wire,
    peers_from_wire, peers_to_wire,
};

/// A wire message that does not describe a valid model value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ConvertError {
    pub field: String,
    pub message: String,
}

impl ConvertError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ConvertError {
        ConvertError { field: field.into(), message: message.into() }
    }

    /// Prefixes the field path, e.g. `resources[2]` + `.scalar` → `resources[2].scalar`.
    pub(crate) fn within(self, outer: &str) -> ConvertError {
        ConvertError { field: format!("{outer}.{}", self.field), message: self.message }
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

// --- resources ------------------------------------------------------------------------------------------------------

fn ranges_to_wire(r: &model::Ranges) -> wire::Ranges {
    wire::Ranges { range: r.iter().map(|(begin, end)| wire::Range { begin, end }).collect() }
}

fn ranges_from_wire(r: wire::Ranges) -> Result<model::Ranges, ConvertError> {
    if let Some(bad) = r.range.iter().find(|x| x.begin > x.end) {
        return Err(ConvertError::new("ranges", format!("range {}-{} ends before it begins", bad.begin, bad.end)));
    }
    Ok(model::Ranges::new(r.range.into_iter().map(|x| (x.begin, x.end))))
}

fn scalar_from_wire(v: f64) -> Result<Fixed, ConvertError> {
    if !v.is_finite() || v < 0.0 {
        return Err(ConvertError::new("scalar", format!("{v} is not a finite non-negative number")));
    }
    Ok(Fixed::from_f64(v))
}

impl From<&model::Resource> for wire::Resource {
    fn from(r: &model::Resource) -> Self {
        let value = match &r.value {
            model::Value::Scalar(v) => wire::resource::Value::Scalar(wire::Scalar { value: v.as_f64() }),
            model::Value::Ranges(rs) => wire::resource::Value::Ranges(ranges_to_wire(rs)),
            model::Value::Set(s) => wire::resource::Value::Set(wire::Set { item: s.iter().cloned().collect() }),
        };
        wire::Resource { name: r.name.clone(), value: Some(value), role: r.role.clone() }
    }
}

impl TryFrom<wire::Resource> for model::Resource {
    type Error = ConvertError;
    fn try_from(r: wire::Resource) -> Result<Self, ConvertError> {
        if r.name.is_empty() {
            return Err(ConvertError::new("name", "empty resource name"));
        }
        let value = match r.value {
            Some(wire::resource::Value::Scalar(s)) => model::Value::Scalar(scalar_from_wire(s.value)?),
            Some(wire::resource::Value::Ranges(rs)) => model::Value::Ranges(ranges_from_wire(rs)?),
            Some(wire::resource::Value::Set(s)) => model::Value::Set(s.item.into_iter().collect()),
            None => return Err(ConvertError::new(r.name, "resource has no value")),
        };
        let role = if r.role.is_empty() { model::UNRESERVED.to_string() } else { r.role };
        Ok(model::Resource { name: r.name, role, value })
    }
}

pub fn resources_to_wire(r: &model::Resources) -> Vec<wire::Resource> {
    r.iter().map(wire::Resource::from).collect()
}

pub fn resources_from_wire(items: Vec<wire::Resource>) -> Result<model::Resources, ConvertError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        out.push(model::Resource::try_from(item).map_err(|e| e.within(&format!("resources[{i}]")))?);
    }
    Ok(model::Resources::from_vec(out))
}

// --- attributes -----------------------------------------------------------------------------------------------------

pub fn attributes_to_wire(a: &model::Attributes) -> Vec<wire::Attribute> {
    use wire::attribute::Value as V;
    a.iter()
        .map(|a| wire::Attribute {
            name: a.name.clone(),
            value: Some(match &a.value {
                model::AttrValue::Scalar(v) => V::Scalar(wire::Scalar { value: v.as_f64() }),
                model::AttrValue::Ranges(r) => V::Ranges(ranges_to_wire(r)),
                model::AttrValue::Set(s) => V::Set(wire::Set { item: s.iter().cloned().collect() }),
                model::AttrValue::Text(t) => V::Text(wire::Text { value: t.clone() }),
            }),
        })
        .collect()
}

pub fn attributes_from_wire(items: Vec<wire::Attribute>) -> Result<model::Attributes, ConvertError> {
    use wire::attribute::Value as V;
    let mut out = Vec::with_capacity(items.len());
    for (i, a) in items.into_iter().enumerate() {
        let field = format!("attributes[{i}]");
        let value = match a.value {
            Some(V::Scalar(s)) => model::AttrValue::Scalar(Fixed::from_f64(s.value)),
            Some(V::Ranges(r)) => model::AttrValue::Ranges(ranges_from_wire(r).map_err(|e| e.within(&field))?),
            Some(V::Set(s)) => model::AttrValue::Set(s.item.into_iter().collect()),
            Some(V::Text(t)) => model::AttrValue::Text(t.value),
            None => return Err(ConvertError::new(field, "attribute has no value")),
        };
        out.push(model::Attribute { name: a.name, value });
    }
    Ok(model::Attributes(out))
}

fn labels_to_wire(l: &model::Labels) -> Option<wire::Labels> {
    if l.is_empty() {
        return None;
    }
    Some(wire::Labels { labels: l.iter().map(|(k, v)| wire::Label { key: k.clone(), value: v.clone() }).collect() })
}

fn labels_from_wire(l: Option<wire::Labels>) -> model::Labels {
    l.map(|l| l.labels.into_iter().map(|x| (x.key, x.value)).collect()).unwrap_or_default()
}

// --- task states, reasons, statuses ---------------------------------------------------------------------------------

impl From<model::TaskState> for wire::TaskState {
    fn from(s: model::TaskState) -> Self {
        use model::TaskState as M;
        use wire::TaskState as W;
        match s {
            M::Staging => W::TaskStaging,
            M::Starting => W::TaskStarting,
            M::Running => W::TaskRunning,
            M::Killing => W::TaskKilling,
            M::Finished => W::TaskFinished,
            M::Failed => W::TaskFailed,
            M::Killed => W::TaskKilled,
            M::Error => W::TaskError,
            M::Lost => W::TaskLost,
            M::Dropped => W::TaskDropped,
            M::Unreachable => W::TaskUnreachable,
            M::Gone => W::TaskGone,
            M::GoneByOperator => W::TaskGoneByOperator,
            M::Unknown => W::TaskUnknown,
        }
    }
}

impl From<wire::TaskState> for model::TaskState {
    fn from(s: wire::TaskState) -> Self {
        use model::TaskState as M;
        use wire::TaskState as W;
        match s {
            W::TaskStaging => M::Staging,
            W::TaskStarting => M::Starting,
            W::TaskRunning => M::Running,
            W::TaskKilling => M::Killing,
            W::TaskFinished => M::Finished,
            W::TaskFailed => M::Failed,
            W::TaskKilled => M::Killed,
            W::TaskError => M::Error,
            W::TaskLost => M::Lost,
            W::TaskDropped => M::Dropped,
            W::TaskUnreachable => M::Unreachable,
            W::TaskGone => M::Gone,
            W::TaskGoneByOperator => M::GoneByOperator,
            W::TaskUnknown => M::Unknown,
        }
    }
}

/// Decodes a wire task state number.
pub fn task_state_from_i32(v: i32, field: &str) -> Result<model::TaskState, ConvertError> {
    wire::TaskState::try_from(v)
        .map(model::TaskState::from)
        .map_err(|_| ConvertError::new(field, format!("unknown task state {v}")))
}

const REASONS: [(model::Reason, wire::task_status::Reason); 21] = {
    use model::Reason as M;
    use wire::task_status::Reason as W;
    [
        (M::CommandExecutorFailed, W::CommandExecutorFailed),
        (M::ExecutorTerminated, W::ExecutorTerminated),
        (M::FrameworkRemoved, W::FrameworkRemoved),
        (M::InvalidOffers, W::InvalidOffers),
        (M::MasterDisconnected, W::MasterDisconnected),
        (M::ContainerLimitationMemory, W::ContainerLimitationMemory),
        (M::Reconciliation, W::Reconciliation),
        (M::AgentDisconnected, W::AgentDisconnected),
        (M::AgentRemoved, W::AgentRemoved),
        (M::AgentRestarted, W::AgentRestarted),
        (M::AgentUnknown, W::AgentUnknown),
        (M::TaskInvalid, W::TaskInvalid),
        (M::TaskUnauthorized, W::TaskUnauthorized),
        (M::TaskUnknown, W::TaskUnknown),
        (M::ContainerLimitation, W::ContainerLimitation),
        (M::ContainerLimitationDisk, W::ContainerLimitationDisk),
        (M::ContainerLaunchFailed, W::ContainerLaunchFailed),
        (M::TaskHealthCheckStatusUpdated, W::TaskHealthCheckStatusUpdated),
        (M::TaskKilledDuringLaunch, W::TaskKilledDuringLaunch),
        (M::AgentReregistered, W::AgentReregistered),
        (M::ContainerLimitationPids, W::ContainerLimitationPids),
    ]
};

pub fn reason_to_i32(r: model::Reason) -> i32 {
    match r {
        model::Reason::Other(n) => n,
        named => REASONS.iter().find(|(m, _)| *m == named).map(|(_, w)| *w as i32).unwrap_or_default(),
    }
}

pub fn reason_from_i32(v: i32) -> model::Reason {
    REASONS.iter().find(|(_, w)| *w as i32 == v).map(|(m, _)| *m).unwrap_or(model::Reason::Other(v))
}

impl From<&model::TaskStatus> for wire::TaskStatus {
    fn from(s: &model::TaskStatus) -> Self {
        wire::TaskStatus {
            task_id: s.task_id.clone(),
            state: wire::TaskState::from(s.state) as i32,
            reason: s.reason.map(reason_to_i32),
            source: match s.source {
                model::Source::Master => wire::task_status::Source::Master,
                model::Source::Agent => wire::task_status::Source::Agent,
                model::Source::Executor => wire::task_status::Source::Executor,
            } as i32,
            message: s.message.clone(),
            uuid: s.uuid.clone().unwrap_or_default(),
            timestamp: s.timestamp,
            healthy: s.healthy,
            agent_id: s.agent_id.clone(),
            executor_id: String::new(),
            unreachable_time: s.unreachable_time,
            labels: None,
            container_status: s.container_status.as_ref().map(network::container_status_to_wire),
        }
    }
}

impl TryFrom<wire::TaskStatus> for model::TaskStatus {
    type Error = ConvertError;
    fn try_from(s: wire::TaskStatus) -> Result<Self, ConvertError> {
        if s.task_id.is_empty() {
            return Err(ConvertError::new("status.task_id", "empty task id"));
        }
        let source = match wire::task_status::Source::try_from(s.source) {
            Ok(wire::task_status::Source::Master) => model::Source::Master,
            Ok(wire::task_status::Source::Agent) => model::Source::Agent,
            Ok(wire::task_status::Source::Executor) => model::Source::Executor,
            Err(_) => return Err(ConvertError::new("status.source", format!("unknown source {}", s.source))),
        };
        Ok(model::TaskStatus {
            state: task_state_from_i32(s.state, "status.state")?,
            task_id: s.task_id,
            reason: s.reason.map(reason_from_i32),
            source,
            message: s.message,
            uuid: if s.uuid.is_empty() { None } else { Some(s.uuid) },
            timestamp: s.timestamp,
            healthy: s.healthy,
            agent_id: s.agent_id,
            unreachable_time: s.unreachable_time,
            container_status: s.container_status.map(network::container_status_from_wire).transpose()?,
        })
    }
}

// --- tasks ----------------------------------------------------------------------------------------------------------

impl From<&model::CommandInfo> for wire::CommandInfo {
    fn from(c: &model::CommandInfo) -> Self {
        wire::CommandInfo {
            shell: Some(c.shell),
            value: c.value.clone(),
            arguments: c.arguments.clone(),
            environment: Some(wire::Environment {
                variables: c
                    .environment
                    .iter()
                    .map(|(name, value)| wire::environment::Variable { name: name.clone(), value: value.clone() })
                    .collect(),
            }),
            uris: c
                .uris
                .iter()
                .map(|u| wire::command_info::Uri {
                    value: u.value.clone(),
                    executable: u.executable,
                    extract: Some(u.extract),
                    cache: u.cache,
                    output_file: u.output_file.clone(),
                })
                .collect(),
            user: c.user.clone().unwrap_or_default(),
        }
    }
}

impl From<wire::CommandInfo> for model::CommandInfo {
    fn from(c: wire::CommandInfo) -> Self {
        model::CommandInfo {
            shell: c.shell.unwrap_or(true),
            value: c.value,
            arguments: c.arguments,
            environment: c
                .environment
                .map(|e| e.variables.into_iter().map(|v| (v.name, v.value)).collect())
                .unwrap_or_default(),
            uris: c
                .uris
                .into_iter()
                .map(|u| model::Uri {
                    value: u.value,
                    executable: u.executable,
                    extract: u.extract.unwrap_or(true),
                    cache: u.cache,
                    output_file: u.output_file,
                })
                .collect(),
            user: non_empty(c.user),
        }
    }
}

fn container_to_wire(c: &model::ContainerInfo) -> wire::ContainerInfo {
    wire::ContainerInfo {
        r#type: match c.kind {
            model::ContainerType::Mesos => wire::container_info::Type::Mesos,
            model::ContainerType::Docker => wire::container_info::Type::Docker,
        } as i32,
        rootfs: c.rootfs.clone().unwrap_or_default(),
        volumes: c
            .volumes
            .iter()
            .map(|v| wire::Volume {
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone(),
                mode: if v.read_only { wire::volume::Mode::Ro } else { wire::volume::Mode::Rw } as i32,
            })
            .collect(),
        hostname: c.hostname.clone().unwrap_or_default(),
        image: c.image.clone().unwrap_or_default(),
        network_infos: c.network_infos.iter().map(network::network_info_to_wire).collect(),
    }
}

fn container_from_wire(c: wire::ContainerInfo) -> Result<model::ContainerInfo, ConvertError> {
    let kind = match wire::container_info::Type::try_from(c.r#type) {
        Ok(wire::container_info::Type::Mesos) => model::ContainerType::Mesos,
        Ok(wire::container_info::Type::Docker) => model::ContainerType::Docker,
        Err(_) => return Err(ConvertError::new("container.type", format!("unknown container type {}", c.r#type))),
    };
    Ok(model::ContainerInfo {
        kind,
        rootfs: non_empty(c.rootfs),
        volumes: c
            .volumes
            .into_iter()
            .map(|v| model::Volume {
                container_path: v.container_path,
                host_path: v.host_path,
                read_only: v.mode == wire::volume::Mode::Ro as i32,
            })
            .collect(),
        hostname: non_empty(c.hostname),
        image: non_empty(c.image),
        network_infos: network::network_infos_from_wire(c.network_infos, "container.network_infos")?,
    })
}

fn health_to_wire(h: &model::HealthCheck) -> wire::HealthCheck {
    use wire::health_check::Type as T;
    wire::HealthCheck {
        r#type: match h.kind {
            model::HealthCheckType::Command => T::Command,
            model::HealthCheckType::Http => T::Http,
            model::HealthCheckType::Tcp => T::Tcp,
        } as i32,
        http: (h.kind == model::HealthCheckType::Http).then(|| wire::health_check::HttpCheckInfo {
            scheme: h.scheme.clone().unwrap_or_default(),
            port: h.port.unwrap_or_default(),
            path: h.path.clone().unwrap_or_default(),
            statuses: h.statuses.clone(),
            protocol: ip_protocol_to_wire(h.ip_protocol) as i32,
            ignore_1xx: h.ignore_http1xx,
        }),
        tcp: (h.kind == model::HealthCheckType::Tcp).then(|| wire::health_check::TcpCheckInfo {
            port: h.port.unwrap_or_default(),
            protocol: ip_protocol_to_wire(h.ip_protocol) as i32,
        }),
        command: h.command.as_ref().map(wire::CommandInfo::from),
        delay_seconds: h.delay_seconds,
        interval_seconds: h.interval_seconds,
        timeout_seconds: h.timeout_seconds,
        consecutive_failures: h.consecutive_failures,
        grace_period_seconds: h.grace_period_seconds,
    }
}

fn health_from_wire(h: wire::HealthCheck) -> Result<model::HealthCheck, ConvertError> {
    use wire::health_check::Type as T;
    let kind = match T::try_from(h.r#type) {
        Ok(T::Command) => model::HealthCheckType::Command,
        Ok(T::Http) => model::HealthCheckType::Http,
        Ok(T::Tcp) => model::HealthCheckType::Tcp,
        _ => return Err(ConvertError::new("health_check.type", format!("unknown health check type {}", h.r#type))),
    };
    let (port, path, scheme, statuses, protocol, ignore_http1xx) = match (&h.http, &h.tcp) {
        (Some(http), _) => (
            Some(http.port),
            non_empty(http.path.clone()),
            non_empty(http.scheme.clone()),
            http.statuses.clone(),
            http.protocol,
            http.ignore_1xx,
        ),
        (None, Some(tcp)) => (Some(tcp.port), None, None, vec![], tcp.protocol, false),
        _ => (None, None, None, vec![], 0, false),
    };
    let field = if h.http.is_some() { "health_check.http.protocol" } else { "health_check.tcp.protocol" };
    Ok(model::HealthCheck {
        kind,
        port,
        path,
        scheme,
        statuses,
        ip_protocol: ip_protocol_from_wire(protocol, field)?,
        ignore_http1xx,
        command: h.command.map(model::CommandInfo::from),
        delay_seconds: h.delay_seconds,
        interval_seconds: h.interval_seconds,
        timeout_seconds: h.timeout_seconds,
        consecutive_failures: h.consecutive_failures,
        grace_period_seconds: h.grace_period_seconds,
    })
}

fn ip_protocol_to_wire(p: model::IpProtocol) -> wire::health_check::IpProtocol {
    match p {
        model::IpProtocol::V4 => wire::health_check::IpProtocol::Ipv4,
        model::IpProtocol::V6 => wire::health_check::IpProtocol::Ipv6,
    }
}

/// Unset means IPv4, Mesos's default.
fn ip_protocol_from_wire(v: i32, field: &str) -> Result<model::IpProtocol, ConvertError> {
    use wire::health_check::IpProtocol as P;
    match P::try_from(v) {
        Ok(P::Unspecified | P::Ipv4) => Ok(model::IpProtocol::V4),
        Ok(P::Ipv6) => Ok(model::IpProtocol::V6),
        Err(_) => Err(ConvertError::new(field, format!("unknown IP protocol {v}"))),
    }
}

fn discovery_to_wire(d: &model::DiscoveryInfo) -> wire::DiscoveryInfo {
    wire::DiscoveryInfo {
        visibility: d.visibility.clone(),
        name: d.name.clone(),
        ports: d
            .ports
            .iter()
            .map(|p| wire::discovery_info::Port {
                number: p.number,
                name: p.name.clone(),
                protocol: p.protocol.clone(),
            })
            .collect(),
        labels: labels_to_wire(&d.labels),
        ..Default::default()
    }
}

fn discovery_from_wire(d: wire::DiscoveryInfo) -> model::DiscoveryInfo {
    model::DiscoveryInfo {
        visibility: d.visibility,
        name: d.name,
        ports: d
            .ports
            .into_iter()
            .map(|p| model::DiscoveryPort { number: p.number, name: p.name, protocol: p.protocol })
            .collect(),
        labels: labels_from_wire(d.labels),
    }
}

impl From<&model::TaskInfo> for wire::TaskInfo {
    fn from(t: &model::TaskInfo) -> Self {
        wire::TaskInfo {
            name: t.name.clone(),
            task_id: t.task_id.clone(),
            agent_id: t.agent_id.clone(),
            resources: resources_to_wire(&t.resources),
            command: t.command.as_ref().map(wire::CommandInfo::from),
            container: t.container.as_ref().map(container_to_wire),
            health_check: t.health_check.as_ref().map(health_to_wire),
            kill_policy: t.kill_grace_period.map(|g| wire::KillPolicy { grace_period_seconds: Some(g) }),
            labels: labels_to_wire(&t.labels),
            discovery: t.discovery.as_ref().map(discovery_to_wire),
            data: t.data.clone(),
        }
    }
}

impl TryFrom<wire::TaskInfo> for model::TaskInfo {
    type Error = ConvertError;
    fn try_from(t: wire::TaskInfo) -> Result<Self, ConvertError> {
        let within = |e: ConvertError| e.within(&format!("task '{}'", t.task_id));
        Ok(model::TaskInfo {
            resources: resources_from_wire(t.resources.clone()).map_err(within)?,
            command: t.command.clone().map(model::CommandInfo::from),
            container: t.container.clone().map(container_from_wire).transpose().map_err(within)?,
            health_check: t.health_check.clone().map(health_from_wire).transpose().map_err(within)?,
            kill_grace_period: t.kill_policy.and_then(|k| k.grace_period_seconds),
            labels: labels_from_wire(t.labels),
            discovery: t.discovery.map(discovery_from_wire),
            name: t.name,
            task_id: t.task_id,
            agent_id: t.agent_id,
            data: t.data,
        })
    }
}

// --- frameworks, agents, masters, offers ----------------------------------------------------------------------------

pub(crate) const CAPABILITIES: [(model::Capability, wire::FrameworkCapability); 8] = {
    use model::Capability as M;
    use wire::FrameworkCapability as W;
    [
        (M::RevocableResources, W::RevocableResources),
        (M::TaskKillingState, W::TaskKillingState),
        (M::GpuResources, W::GpuResources),
        (M::SharedResources, W::SharedResources),
        (M::PartitionAware, W::PartitionAware),
        (M::MultiRole, W::MultiRole),
        (M::ReservationRefinement, W::ReservationRefinement),
        (M::RegionAware, W::RegionAware),
    ]
};

impl From<&model::FrameworkInfo> for wire::FrameworkInfo {
    fn from(f: &model::FrameworkInfo) -> Self {
        wire::FrameworkInfo {
            id: f.id.clone().unwrap_or_default(),
            name: f.name.clone(),
            user: f.user.clone(),
            roles: f.roles.clone(),
            failover_timeout: f.failover_timeout,
            principal: f.principal.clone().unwrap_or_default(),
            checkpoint: f.checkpoint,
            capabilities: f
                .capabilities
                .iter()
                .filter_map(|c| CAPABILITIES.iter().find(|(m, _)| m == c).map(|(_, w)| *w as i32))
                .collect(),
            hostname: f.hostname.clone().unwrap_or_default(),
            webui_url: f.webui_url.clone().unwrap_or_default(),
            labels: labels_to_wire(&f.labels),
        }
    }
}

impl TryFrom<wire::FrameworkInfo> for model::FrameworkInfo {
    type Error = ConvertError;
    fn try_from(f: wire::FrameworkInfo) -> Result<Self, ConvertError> {
        if f.name.is_empty() {
            return Err(ConvertError::new("framework_info.name", "a framework needs a name"));
        }
        if !f.failover_timeout.is_finite() || f.failover_timeout < 0.0 {
            return Err(ConvertError::new(
                "framework_info.failover_timeout",
                format!("{} is not a non-negative number of seconds", f.failover_timeout),
            ));
        }
        if let Some(bad) = f.roles.iter().find(|r| !valid_role(r)) {
            return Err(ConvertError::new("framework_info.roles", format!("'{bad}' is not a valid role name")));
        }
        let mut roles = f.roles;
        if roles.is_empty() {
            roles.push(model::UNRESERVED.to_string());
        }
        roles.dedup();
        Ok(model::FrameworkInfo {
            id: non_empty(f.id),
            name: f.name,
            user: f.user,
            roles,
            failover_timeout: f.failover_timeout,
            principal: non_empty(f.principal),
            checkpoint: f.checkpoint,
            capabilities: f
                .capabilities
                .into_iter()
                .filter_map(|c| CAPABILITIES.iter().find(|(_, w)| *w as i32 == c).map(|(m, _)| *m))
                .collect(),
            hostname: non_empty(f.hostname),
            webui_url: non_empty(f.webui_url),
            labels: labels_from_wire(f.labels),
        })
    }
}

/// Mesos's role name rules: a non-empty path of segments, none of them `.` or `..`, no whitespace, no leading `-`.
pub fn valid_role(role: &str) -> bool {
    if role == model::UNRESERVED {
        return true;
    }
    !role.is_empty()
        && !role.starts_with('-')
        && role.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg != "*")
        && !role.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\')
}

impl From<&model::AgentInfo> for wire::AgentInfo {
    fn from(a: &model::AgentInfo) -> Self {
        wire::AgentInfo {
            id: a.id.clone().unwrap_or_default(),
            hostname: a.hostname.clone(),
            port: a.port.into(),
            resources: resources_to_wire(&a.resources),
            attributes: attributes_to_wire(&a.attributes),
            ip: a.ip.clone(),
        }
    }
}

impl TryFrom<wire::AgentInfo> for model::AgentInfo {
    type Error = ConvertError;
    fn try_from(a: wire::AgentInfo) -> Result<Self, ConvertError> {
        let port = u16::try_from(a.port)
            .map_err(|_| ConvertError::new("agent_info.port", format!("{} is not a port", a.port)))?;
        Ok(model::AgentInfo {
            id: non_empty(a.id),
            hostname: a.hostname,
            ip: a.ip,
            port,
            resources: resources_from_wire(a.resources).map_err(|e| e.within("agent_info"))?,
            attributes: attributes_from_wire(a.attributes).map_err(|e| e.within("agent_info"))?,
        })
    }
}

impl From<&model::MasterInfo> for wire::MasterInfo {
    fn from(m: &model::MasterInfo) -> Self {
        wire::MasterInfo {
            id: m.id.clone(),
            ip: m.ip.clone(),
            port: m.port.into(),
            hostname: m.hostname.clone(),
            version: m.version.clone(),
        }
    }
}

impl From<wire::MasterInfo> for model::MasterInfo {
    fn from(m: wire::MasterInfo) -> Self {
        model::MasterInfo { id: m.id, ip: m.ip, port: m.port as u16, hostname: m.hostname, version: m.version }
    }
}

impl From<&model::Offer> for wire::Offer {
    fn from(o: &model::Offer) -> Self {
        wire::Offer {
            id: o.id.clone(),
            framework_id: o.framework_id.clone(),
            agent_id: o.agent_id.clone(),
            hostname: o.hostname.clone(),
            resources: resources_to_wire(&o.resources),
            attributes: attributes_to_wire(&o.attributes),
            role: o.role.clone(),
            url: o.url.clone(),
        }
    }
}

impl TryFrom<wire::Offer> for model::Offer {
    type Error = ConvertError;
    fn try_from(o: wire::Offer) -> Result<Self, ConvertError> {
        let within = |e: ConvertError| e.within(&format!("offer '{}'", o.id));
        Ok(model::Offer {
            resources: resources_from_wire(o.resources.clone()).map_err(within)?,
            attributes: attributes_from_wire(o.attributes.clone()).map_err(within)?,
            id: o.id,
            framework_id: o.framework_id,
            agent_id: o.agent_id,
            hostname: o.hostname,
            role: o.role,
            url: o.url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_info_round_trips() {
        let task = model::TaskInfo {
            name: "web".into(),
            task_id: "web.1".into(),
            agent_id: "m-S0".into(),
            resources: "cpus:0.1;mem:32;ports:[31000-31000]".parse().unwrap(),
            command: Some(model::CommandInfo::shell("echo hi")),
            container: None,
            health_check: None,
            kill_grace_period: Some(2.0),
            labels: vec![("a".into(), "b".into())],
            discovery: None,
            data: vec![],
        };
        let back = model::TaskInfo::try_from(wire::TaskInfo::from(&task)).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn health_check_ip_protocol_and_ignore_1xx_round_trip_and_unset_means_ipv4() {
        let check = model::HealthCheck {
            kind: model::HealthCheckType::Http,
            port: Some(31000),
            path: Some("/health".into()),
            scheme: Some("https".into()),
            statuses: vec![],
            ip_protocol: model::IpProtocol::V6,
            ignore_http1xx: true,
            command: None,
            delay_seconds: 0.0,
            interval_seconds: 1.0,
            timeout_seconds: 1.0,
            consecutive_failures: 3,
            grace_period_seconds: 0.0,
        };
        let wire = health_to_wire(&check);
        let http = wire.http.as_ref().unwrap();
        assert_eq!((http.protocol, http.ignore_1xx), (wire::health_check::IpProtocol::Ipv6 as i32, true));
        assert_eq!(health_from_wire(wire).unwrap(), check);
        let tcp = model::HealthCheck { kind: model::HealthCheckType::Tcp, ignore_http1xx: false, ..check };
        let back = health_from_wire(health_to_wire(&tcp)).unwrap();
        assert_eq!((back.kind, back.ip_protocol), (model::HealthCheckType::Tcp, model::IpProtocol::V6));

        let mut unset = health_to_wire(&tcp);
        unset.tcp.as_mut().unwrap().protocol = 0;
        assert_eq!(health_from_wire(unset.clone()).unwrap().ip_protocol, model::IpProtocol::V4);
        unset.tcp.as_mut().unwrap().protocol = 9;
        assert_eq!(health_from_wire(unset).unwrap_err().field, "health_check.tcp.protocol");
    }

    #[test]
    fn a_container_image_round_trips_and_empty_means_none() {
        let mut task = model::TaskInfo {
            name: "web".into(),
            task_id: "web.1".into(),
            agent_id: "m-S0".into(),
            resources: "cpus:0.1".parse().unwrap(),
            command: Some(model::CommandInfo::shell("ls /")),
            container: Some(model::ContainerInfo {
                kind: model::ContainerType::Mesos,
                rootfs: None,
                volumes: vec![],
                hostname: None,
                image: Some("library/busybox:1.36".into()),
                network_infos: vec![],
            }),
            health_check: None,
            kill_grace_period: None,
            labels: vec![],
            discovery: None,
            data: vec![],
        };
        let wire = wire::TaskInfo::from(&task);
        assert_eq!(wire.container.as_ref().unwrap().image, "library/busybox:1.36");
        assert_eq!(model::TaskInfo::try_from(wire).unwrap(), task);
        task.container.as_mut().unwrap().image = None;
        let wire = wire::TaskInfo::from(&task);
        assert_eq!(wire.container.as_ref().unwrap().image, "");
        assert_eq!(model::TaskInfo::try_from(wire).unwrap().container.unwrap().image, None);
    }

    #[test]
    fn bad_resource_names_its_field() {
        let t = wire::TaskInfo {
            task_id: "t1".into(),
            resources: vec![wire::Resource {
                name: "cpus".into(),
                value: Some(wire::resource::Value::Scalar(wire::Scalar { value: -1.0 })),
                role: String::new(),
            }],
            ..Default::default()
        };
        let err = model::TaskInfo::try_from(t).unwrap_err();
        assert!(err.field.starts_with("task 't1'.resources[0]"), "{err}");
    }

    #[test]
    fn reasons_keep_mesos_numbers() {
        assert_eq!(reason_to_i32(model::Reason::ContainerLimitationMemory), 8);
        assert_eq!(reason_to_i32(model::Reason::Reconciliation), 9);
        assert_eq!(reason_from_i32(11), model::Reason::AgentRemoved);
        assert_eq!(reason_from_i32(27), model::Reason::Other(27));
        assert_eq!(wire::TaskState::TaskStaging as i32, 6);
    }

    #[test]
    fn framework_without_roles_gets_star() {
        let f = model::FrameworkInfo::try_from(wire::FrameworkInfo { name: "x".into(), ..Default::default() }).unwrap();
        assert_eq!(f.roles, vec!["*".to_string()]);
        let bad = model::FrameworkInfo::try_from(wire::FrameworkInfo {
            name: "x".into(),
            roles: vec!["a/../b".into()],
            ..Default::default()
        });
        assert!(bad.is_err());
    }
}
