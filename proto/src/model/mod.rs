//! The domain model: what masters, agents and frameworks reason about, free of the wire format.
//!
//! These types are plain Rust with serde derives (the HTTP/JSON side uses them directly); `crate::convert` maps
//! them to and from the generated gRPC messages.
//!
//! Rules that Marathon and the agent both apply live here once: which URIs agents can fetch ([`FetchSource`]) and
//! which paths stay inside a task's sandbox ([`SandboxPath`]).

mod attributes;
pub mod cluster;
mod duration;
mod network;
mod operation;
mod resources;
mod sandbox_path;
mod uri;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use attributes::{AttrValue, Attribute, Attributes};
pub use duration::parse_duration;
pub use network::{AgentNetwork, ContainerStatus, NetworkAssignment, NetworkInfo, NetworkPeer, PortMapping};
pub use operation::{OperationState, OperationStatus};
pub use resources::{Fixed, ParseError, Ranges, Resource, Resources, UNRESERVED, Value, parse_value};
pub use sandbox_path::{SandboxPath, SandboxPathError};
pub use uri::{FetchSource, UriError};

/// Task states, named and ordered as Mesos names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(clippy::enum_variant_names)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_ERROR")]
    Error,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "TASK_GONE")]
    Gone,
    #[serde(rename = "TASK_GONE_BY_OPERATOR")]
    GoneByOperator,
    #[serde(rename = "TASK_UNKNOWN")]
    Unknown,
}

impl TaskState {
    pub const ALL: [TaskState; 14] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// Mesos's terminal states. TASK_LOST counts as terminal for bookkeeping, as in Mesos's `isTerminalState`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    /// The Mesos name, e.g. `TASK_RUNNING`.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL.into_iter().find(|st| st.name() == s).ok_or_else(|| format!("unknown task state '{s}'"))
    }
}

/// Why a task reached its state, with Mesos's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    #[serde(rename = "REASON_COMMAND_EXECUTOR_FAILED")]
    CommandExecutorFailed,
    #[serde(rename = "REASON_EXECUTOR_TERMINATED")]
    ExecutorTerminated,
    #[serde(rename = "REASON_FRAMEWORK_REMOVED")]
    FrameworkRemoved,
    #[serde(rename = "REASON_INVALID_OFFERS")]
    InvalidOffers,
    #[serde(rename = "REASON_MASTER_DISCONNECTED")]
    MasterDisconnected,
    #[serde(rename = "REASON_CONTAINER_LIMITATION_MEMORY")]
    ContainerLimitationMemory,
    #[serde(rename = "REASON_RECONCILIATION")]
    Reconciliation,
    #[serde(rename = "REASON_AGENT_DISCONNECTED")]
    AgentDisconnected,
    #[serde(rename = "REASON_AGENT_REMOVED")]
    AgentRemoved,
    #[serde(rename = "REASON_AGENT_RESTARTED")]
    AgentRestarted,
    #[serde(rename = "REASON_AGENT_UNKNOWN")]
    AgentUnknown,
    #[serde(rename = "REASON_TASK_INVALID")]
    TaskInvalid,
    #[serde(rename = "REASON_TASK_UNAUTHORIZED")]
    TaskUnauthorized,
    #[serde(rename = "REASON_TASK_UNKNOWN")]
    TaskUnknown,
    #[serde(rename = "REASON_CONTAINER_LIMITATION")]
    ContainerLimitation,
    #[serde(rename = "REASON_CONTAINER_LIMITATION_DISK")]
    ContainerLimitationDisk,
    #[serde(rename = "REASON_CONTAINER_LAUNCH_FAILED")]
    ContainerLaunchFailed,
    #[serde(rename = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED")]
    TaskHealthCheckStatusUpdated,
    #[serde(rename = "REASON_TASK_KILLED_DURING_LAUNCH")]
    TaskKilledDuringLaunch,
    #[serde(rename = "REASON_AGENT_REREGISTERED")]
    AgentReregistered,
    #[serde(rename = "REASON_CONTAINER_LIMITATION_PIDS")]
    ContainerLimitationPids,
    /// A wire reason this model does not name; keeps its Mesos number.
    #[serde(untagged)]
    Other(i32),
}

impl Reason {
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            _ => match self {
                Reason::Other(n) => format!("REASON_{n}"),
                _ => unreachable!("named reasons serialise as strings"),
            },
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Who produced a status update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    #[serde(rename = "SOURCE_MASTER")]
    Master,
    #[serde(rename = "SOURCE_AGENT")]
    Agent,
    #[serde(rename = "SOURCE_EXECUTOR")]
    Executor,
}

/// A task's status, as frameworks receive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    pub reason: Option<Reason>,
    pub source: Source,
    pub message: String,
    /// Set on updates that must be acknowledged (those that come from an agent).
    pub uuid: Option<Vec<u8>>,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    pub healthy: Option<bool>,
    pub agent_id: String,
    pub unreachable_time: Option<f64>,
    /// The container's networks with its addresses (Mesos's `container_status.network_infos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
}

impl TaskStatus {
    /// A master-generated status: no uuid, so nothing to acknowledge.
    pub fn from_master(
        task_id: &str,
        agent_id: &str,
        state: TaskState,
        reason: Reason,
        message: impl Into<String>,
        now: f64,
    ) -> TaskStatus {
        TaskStatus {
            task_id: task_id.to_string(),
            state,
            reason: Some(reason),
            source: Source::Master,
            message: message.into(),
            uuid: None,
            timestamp: now,
            healthy: None,
            agent_id: agent_id.to_string(),
            unreachable_time: None,
            container_status: None,
        }
    }
}

/// Key/value labels.
pub type Labels = Vec<(String, String)>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uri {
    pub value: String,
    pub executable: bool,
    pub extract: bool,
    pub cache: bool,
    pub output_file: String,
}

/// What to run: `/bin/sh -c value` when `shell`, otherwise `value` with `arguments` as its argv.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    pub shell: bool,
    pub value: String,
    pub arguments: Vec<String>,
    pub environment: Vec<(String, String)>,
    pub uris: Vec<Uri>,
    pub user: Option<String>,
}

impl CommandInfo {
    pub fn shell(cmd: impl Into<String>) -> CommandInfo {
        CommandInfo { shell: true, value: cmd.into(), arguments: vec![], environment: vec![], uris: vec![], user: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerType {
    #[serde(rename = "MESOS")]
    Mesos,
    #[serde(rename = "DOCKER")]
    Docker,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    #[serde(rename = "type")]
    pub kind: ContainerType,
    pub rootfs: Option<String>,
    pub volumes: Vec<Volume>,
    pub hostname: Option<String>,
    /// An image `NAME[:TAG]` the agent resolves to a root filesystem in its local image registry
    /// (`--docker-registry`); exclusive with `rootfs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The container networks the task joins; none is the host's network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthCheckType {
    #[serde(rename = "COMMAND")]
    Command,
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "TCP")]
    Tcp,
}

/// Which loopback address an HTTP or TCP check reaches (Mesos's `NetworkInfo.Protocol`): tasks share the host's
/// network, so `127.0.0.1` or `::1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpProtocol {
    #[default]
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl IpProtocol {
    /// The loopback address a check of this protocol connects to.
    pub fn loopback(self) -> std::net::IpAddr {
        match self {
            IpProtocol::V4 => std::net::Ipv4Addr::LOCALHOST.into(),
            IpProtocol::V6 => std::net::Ipv6Addr::LOCALHOST.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: HealthCheckType,
    pub port: Option<u32>,
    pub path: Option<String>,
    pub scheme: Option<String>,
    pub statuses: Vec<u32>,
    /// HTTP and TCP checks: `127.0.0.1` or `::1`.
    #[serde(default)]
    pub ip_protocol: IpProtocol,
    /// HTTP checks: Marathon's `ignoreHttp1xx`, a 1xx answer neither passes nor fails (the check keeps its state).
    #[serde(default)]
    pub ignore_http1xx: bool,
    pub command: Option<CommandInfo>,
    pub delay_seconds: f64,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub consecutive_failures: u32,
    pub grace_period_seconds: f64,
}

impl HealthCheck {
    /// An HTTP check of `port` and `path` with Mesos's defaults (no delay, every 10 s, 20 s timeout, 3 failures,
    /// no grace period), on `127.0.0.1` (or the task's own address on a container network).
    pub fn http(port: u32, path: &str) -> HealthCheck {
        HealthCheck {
            kind: HealthCheckType::Http,
            port: Some(port),
            path: Some(path.to_string()),
            scheme: None,
            statuses: vec![],
            ip_protocol: IpProtocol::V4,
            ignore_http1xx: false,
            command: None,
            delay_seconds: 0.0,
            interval_seconds: 10.0,
            timeout_seconds: 20.0,
            consecutive_failures: 3,
            grace_period_seconds: 0.0,
        }
    }

    /// Mesos's `validateHealthCheck`: what the check needs for its type, non-negative durations, a path that starts
    /// with `/`, an `http` or `https` scheme, statuses that are HTTP status codes. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let durations = [
            ("delay_seconds", self.delay_seconds),
            ("interval_seconds", self.interval_seconds),
            ("timeout_seconds", self.timeout_seconds),
            ("grace_period_seconds", self.grace_period_seconds),
        ];
        if let Some((name, v)) = durations.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
            return Err(format!("Expecting 'health_check.{name}' to be non-negative, got {v}"));
        }
        let port_ok = self.port.is_some_and(|p| (1..=65535).contains(&p));
        match self.kind {
            HealthCheckType::Command => {
                if self.command.as_ref().is_none_or(|c| c.value.is_empty()) {
                    return Err("Expecting 'health_check.command' to be set for a COMMAND health check".into());
                }
            }
            HealthCheckType::Tcp if !port_ok => {
                return Err("Expecting 'health_check.tcp.port' to be a port (1-65535) for a TCP health check".into());
            }
            HealthCheckType::Tcp => {}
            HealthCheckType::Http => {
                if !port_ok {
                    return Err(
                        "Expecting 'health_check.http.port' to be a port (1-65535) for an HTTP health check".into()
                    );
                }
                if let Some(path) = self.path.as_deref().filter(|p| !p.starts_with('/')) {
                    return Err(format!("The path '{path}' of 'health_check.http.path' must start with '/'"));
                }
                if let Some(scheme) = self.scheme.as_deref().filter(|s| !matches!(*s, "http" | "https")) {
                    return Err(format!("Unsupported 'health_check.http.scheme' '{scheme}': use 'http' or 'https'"));
                }
                if let Some(s) = self.statuses.iter().find(|s| !(100..=599).contains(*s)) {
                    return Err(format!("Invalid HTTP status code {s} in 'health_check.http.statuses'"));
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryPort {
    pub number: u32,
    pub name: String,
    pub protocol: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    pub visibility: String,
    pub name: String,
    pub ports: Vec<DiscoveryPort>,
    pub labels: Labels,
}

/// A task to launch, as a framework describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub task_id: String,
    pub agent_id: String,
    pub resources: Resources,
    pub command: Option<CommandInfo>,
    pub container: Option<ContainerInfo>,
    pub health_check: Option<HealthCheck>,
    /// Seconds between SIGTERM and SIGKILL when the task is killed.
    pub kill_grace_period: Option<f64>,
    pub labels: Labels,
    pub discovery: Option<DiscoveryInfo>,
    pub data: Vec<u8>,
}

/// Capabilities a framework declares, as Mesos names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Capability {
    RevocableResources,
    TaskKillingState,
    GpuResources,
    SharedResources,
    PartitionAware,
    MultiRole,
    ReservationRefinement,
    RegionAware,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    pub id: Option<String>,
    pub name: String,
    pub user: String,
    /// Never empty after conversion: a framework without roles has the role `*`.
    pub roles: Vec<String>,
    pub failover_timeout: f64,
    pub principal: Option<String>,
    pub checkpoint: bool,
    pub capabilities: Vec<Capability>,
    pub hostname: Option<String>,
    pub webui_url: Option<String>,
    pub labels: Labels,
}

impl FrameworkInfo {
    pub fn new(name: impl Into<String>) -> FrameworkInfo {
        FrameworkInfo {
            id: None,
            name: name.into(),
            user: String::new(),
            roles: vec![UNRESERVED.to_string()],
            failover_timeout: 0.0,
            principal: None,
            checkpoint: false,
            capabilities: vec![],
            hostname: None,
            webui_url: None,
            labels: vec![],
        }
    }

    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }

    pub fn partition_aware(&self) -> bool {
        self.has(Capability::PartitionAware)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: Option<String>,
    pub hostname: String,
    pub ip: String,
    pub port: u16,
    pub resources: Resources,
    pub attributes: Attributes,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MasterInfo {
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub hostname: String,
    pub version: String,
}

/// Resources on one agent offered to one framework for one role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: String,
    pub framework_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Attributes,
    pub role: String,
    pub url: String,
}

/// Default `refuse_seconds` of a decline filter, as in Mesos.
pub const DEFAULT_REFUSE_SECONDS: f64 = 5.0;

/// The longest decline filter Mesos allows (365 days).
pub const MAX_REFUSE_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Normalises a framework's `refuse_seconds` as Mesos does: unset or negative → 5, capped at 365 days.
pub fn refuse_seconds(requested: Option<f64>) -> f64 {
    match requested {
        Some(s) if s.is_finite() && s >= 0.0 => s.min(MAX_REFUSE_SECONDS),
        _ => DEFAULT_REFUSE_SECONDS,
    }
}

/// The version every component reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
