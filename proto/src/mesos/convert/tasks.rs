//! Tasks: `TaskInfo` with its command, container, health check and discovery info, `TaskStatus`, `TaskState`.

use super::super::v1;
use super::resources::resources_v1_to_wire;
use super::{duration_info, labels_to_v1, labels_v1_to_wire, seconds_from, time_info};
use crate::model;
use crate::{ConvertError, wire};

/// Mesos's number of a task state.
pub fn task_state_to_v1(s: model::TaskState) -> i32 {
    // Agora's wire protocol numbers task states exactly as Mesos does.
    wire::TaskState::from(s) as i32
}

pub fn task_state_from_v1(v: i32, field: &str) -> Result<model::TaskState, ConvertError> {
    crate::convert::task_state_from_i32(v, field)
}

impl From<&model::TaskStatus> for v1::TaskStatus {
    fn from(s: &model::TaskStatus) -> Self {
        let w = wire::TaskStatus::from(s);
        v1::TaskStatus {
            task_id: super::task_id(w.task_id),
            state: w.state,
            message: Some(w.message).filter(|m| !m.is_empty()),
            source: Some(w.source),
            reason: w.reason,
            agent_id: Some(w.agent_id).filter(|a| !a.is_empty()).map(super::agent_id),
            timestamp: Some(w.timestamp),
            uuid: Some(w.uuid).filter(|u| !u.is_empty()),
            healthy: w.healthy,
            unreachable_time: w.unreachable_time.map(time_info),
            container_status: s.container_status.as_ref().map(|c| v1::ContainerStatus {
                network_infos: c.network_infos.iter().map(network_info_to_v1).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl TryFrom<v1::TaskStatus> for model::TaskStatus {
    type Error = ConvertError;
    fn try_from(s: v1::TaskStatus) -> Result<Self, ConvertError> {
        let w = wire::TaskStatus {
            task_id: s.task_id.value,
            state: s.state,
            reason: s.reason,
            source: s.source.unwrap_or_default(),
            message: s.message.unwrap_or_default(),
            uuid: s.uuid.unwrap_or_default(),
            timestamp: s.timestamp.unwrap_or_default(),
            healthy: s.healthy,
            agent_id: s.agent_id.map(|a| a.value).unwrap_or_default(),
            executor_id: s.executor_id.map(|e| e.value).unwrap_or_default(),
            unreachable_time: s.unreachable_time.map(|t| t.nanoseconds as f64 / 1e9),
            labels: labels_v1_to_wire(s.labels),
            container_status: s.container_status.map(|c| wire::ContainerStatus {
                network_infos: c.network_infos.into_iter().map(network_info_v1_to_wire).collect(),
            }),
        };
        model::TaskStatus::try_from(w)
    }
}

// --- TaskInfo, v1 → model -------------------------------------------------------------------------------------------

impl TryFrom<v1::TaskInfo> for model::TaskInfo {
    type Error = ConvertError;
    fn try_from(t: v1::TaskInfo) -> Result<Self, ConvertError> {
        let id = t.task_id.value.clone();
        let within = |e: ConvertError| e.within(&format!("task '{id}'"));
        if t.executor.is_some() {
            return Err(within(ConvertError::new(
                "executor",
                "custom executors are not supported (the executor API is not served); give the task a `command` to \
                 run it with the command executor",
            )));
        }
        let w = wire::TaskInfo {
            resources: resources_v1_to_wire(t.resources).map_err(within)?,
            command: t.command.map(command_v1_to_wire).transpose().map_err(within)?,
            container: t.container.map(container_v1_to_wire).transpose().map_err(within)?,
            health_check: t.health_check.map(health_v1_to_wire).transpose().map_err(within)?,
            kill_policy: t
                .kill_policy
                .and_then(|k| k.grace_period)
                .map(|g| seconds_from(&g, "kill_policy.grace_period"))
                .transpose()
                .map_err(within)?
                .map(|g| wire::KillPolicy { grace_period_seconds: Some(g) }),
            labels: labels_v1_to_wire(t.labels),
            discovery: t.discovery.map(discovery_v1_to_wire),
            data: t.data.unwrap_or_default(),
            name: t.name,
            task_id: t.task_id.value,
            agent_id: t.agent_id.value,
        };
        model::TaskInfo::try_from(w)
    }
}

fn command_v1_to_wire(c: v1::CommandInfo) -> Result<wire::CommandInfo, ConvertError> {
    use v1::environment::variable::Type as VarType;
    let shell = c.shell();
    let mut variables = Vec::new();
    for v in c.environment.map(|e| e.variables).unwrap_or_default() {
        if v.r#type() == VarType::Secret {
            return Err(ConvertError::new(
                format!("command.environment.variables '{}'", v.name),
                "secret environment variables are not supported",
            ));
        }
        variables.push(wire::environment::Variable { name: v.name, value: v.value.unwrap_or_default() });
    }
    Ok(wire::CommandInfo {
        shell: Some(shell),
        environment: Some(wire::Environment { variables }),
        uris: c
            .uris
            .into_iter()
            .map(|u| wire::command_info::Uri {
                executable: u.executable(),
                extract: Some(u.extract()),
                cache: u.cache(),
                output_file: u.output_file.unwrap_or_default(),
                value: u.value,
            })
            .collect(),
        value: c.value.unwrap_or_default(),
        arguments: c.arguments,
        user: c.user.unwrap_or_default(),
    })
}

/// The one image a container names: `docker.image` (DOCKER) or `mesos.image.docker.name` (MESOS).
fn image_of(c: &v1::ContainerInfo) -> Result<Option<String>, ConvertError> {
    if let Some(d) = &c.docker {
        return Ok(Some(d.image.clone()));
    }
    match c.mesos.as_ref().and_then(|m| m.image.as_ref()) {
        None => Ok(None),
        Some(image) => match (v1::image::Type::try_from(image.r#type), &image.docker) {
            (Ok(v1::image::Type::Docker), Some(d)) => Ok(Some(d.name.clone())),
            _ => Err(ConvertError::new("container.mesos.image", "only DOCKER images (`docker.name`) are supported")),
        },
    }
}

fn container_v1_to_wire(c: v1::ContainerInfo) -> Result<wire::ContainerInfo, ConvertError> {
    use v1::container_info::Type as T;
    let kind = match T::try_from(c.r#type) {
        Ok(T::Docker) => wire::container_info::Type::Docker,
        Ok(T::Mesos) => wire::container_info::Type::Mesos,
        Err(_) => return Err(ConvertError::new("container.type", format!("unknown container type {}", c.r#type))),
    };
    let image = image_of(&c)?.unwrap_or_default();
    let mut volumes = Vec::with_capacity(c.volumes.len());
    for v in c.volumes {
        if v.image.is_some() {
            return Err(ConvertError::new(
                format!("container.volumes '{}'", v.container_path),
                "image volumes are not supported",
            ));
        }
        let read_only = v.mode == v1::volume::Mode::Ro as i32;
        volumes.push(wire::Volume {
            container_path: v.container_path,
            host_path: v.host_path.unwrap_or_default(),
            mode: if read_only { wire::volume::Mode::Ro } else { wire::volume::Mode::Rw } as i32,
        });
    }
    Ok(wire::ContainerInfo {
        r#type: kind as i32,
        rootfs: String::new(),
        volumes,
        hostname: c.hostname.unwrap_or_default(),
        image,
        network_infos: c.network_infos.into_iter().map(network_info_v1_to_wire).collect(),
    })
}

/// A container network as Mesos's `NetworkInfo` (its `groups` are not used).
fn network_info_to_v1(n: &model::NetworkInfo) -> v1::NetworkInfo {
    let w = crate::convert::network_info_to_wire(n);
    v1::NetworkInfo {
        groups: vec![],
        labels: labels_to_v1(&n.labels),
        ip_addresses: w
            .ip_addresses
            .into_iter()
            .map(|a| v1::network_info::IpAddress { protocol: Some(a.protocol), ip_address: Some(a.ip_address) })
            .collect(),
        name: n.name.clone(),
        port_mappings: w
            .port_mappings
            .into_iter()
            .map(|p| v1::network_info::PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: Some(p.protocol).filter(|p| !p.is_empty()),
            })
            .collect(),
    }
}

/// Mesos's `NetworkInfo` as Agora's wire message, checked when it becomes the model's.
fn network_info_v1_to_wire(n: v1::NetworkInfo) -> wire::NetworkInfo {
    wire::NetworkInfo {
        ip_addresses: n
            .ip_addresses
            .into_iter()
            .map(|a| wire::network_info::IpAddress {
                protocol: a.protocol.unwrap_or(wire::network_info::Protocol::IPv4 as i32),
                ip_address: a.ip_address.unwrap_or_default(),
            })
            .collect(),
        name: n.name.unwrap_or_default(),
        labels: labels_v1_to_wire(n.labels),
        port_mappings: n
            .port_mappings
            .into_iter()
            .map(|p| wire::network_info::PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol.unwrap_or_default(),
            })
            .collect(),
    }
}

fn health_v1_to_wire(h: v1::HealthCheck) -> Result<wire::HealthCheck, ConvertError> {
    let command = h.command.clone().map(command_v1_to_wire).transpose().map_err(|e| e.within("health_check"))?;
    // Mesos's `NetworkInfo.Protocol` and Agora's `IpProtocol` number IPv4 and IPv6 alike (1 and 2).
    Ok(wire::HealthCheck {
        r#type: h.r#type.unwrap_or_default(),
        delay_seconds: h.delay_seconds(),
        interval_seconds: h.interval_seconds(),
        timeout_seconds: h.timeout_seconds(),
        consecutive_failures: h.consecutive_failures(),
        grace_period_seconds: h.grace_period_seconds(),
        http: h.http.map(|x| wire::health_check::HttpCheckInfo {
            protocol: x.protocol() as i32,
            scheme: x.scheme.unwrap_or_default(),
            port: x.port,
            path: x.path.unwrap_or_default(),
            statuses: x.statuses,
            ignore_1xx: false,
        }),
        tcp: h.tcp.map(|x| wire::health_check::TcpCheckInfo { protocol: x.protocol() as i32, port: x.port }),
        command,
    })
}

fn discovery_v1_to_wire(d: v1::DiscoveryInfo) -> wire::DiscoveryInfo {
    let visibility =
        v1::discovery_info::Visibility::try_from(d.visibility).map(|v| v.as_str_name().to_string()).unwrap_or_default();
    wire::DiscoveryInfo {
        visibility,
        name: d.name.unwrap_or_default(),
        environment: d.environment.unwrap_or_default(),
        location: d.location.unwrap_or_default(),
        version: d.version.unwrap_or_default(),
        ports: d
            .ports
            .map(|p| p.ports)
            .unwrap_or_default()
            .into_iter()
            .map(|p| wire::discovery_info::Port {
                number: p.number,
                name: p.name.unwrap_or_default(),
                protocol: p.protocol.unwrap_or_default(),
            })
            .collect(),
        labels: labels_v1_to_wire(d.labels),
    }
}

// --- TaskInfo, model → v1 -------------------------------------------------------------------------------------------

impl From<&model::TaskInfo> for v1::TaskInfo {
    fn from(t: &model::TaskInfo) -> Self {
        v1::TaskInfo {
            name: t.name.clone(),
            task_id: super::task_id(t.task_id.clone()),
            agent_id: super::agent_id(t.agent_id.clone()),
            resources: super::resources_to_v1(&t.resources, None),
            executor: None,
            data: Some(t.data.clone()).filter(|d| !d.is_empty()),
            command: t.command.as_ref().map(command_to_v1),
            health_check: t.health_check.as_ref().map(health_to_v1),
            container: t.container.as_ref().map(container_to_v1),
            labels: labels_to_v1(&t.labels),
            discovery: t.discovery.as_ref().map(discovery_to_v1),
            kill_policy: kill_policy_to_v1(t.kill_grace_period),
        }
    }
}

pub(crate) fn kill_policy_to_v1(grace: Option<f64>) -> Option<v1::KillPolicy> {
    grace.map(|g| v1::KillPolicy { grace_period: Some(duration_info(g)) })
}

pub(crate) fn command_to_v1(c: &model::CommandInfo) -> v1::CommandInfo {
    v1::CommandInfo {
        uris: c
            .uris
            .iter()
            .map(|u| v1::command_info::Uri {
                value: u.value.clone(),
                executable: Some(u.executable),
                extract: Some(u.extract),
                cache: Some(u.cache),
                output_file: Some(u.output_file.clone()).filter(|o| !o.is_empty()),
            })
            .collect(),
        environment: (!c.environment.is_empty()).then(|| v1::Environment {
            variables: c
                .environment
                .iter()
                .map(|(name, value)| v1::environment::Variable {
                    name: name.clone(),
                    value: Some(value.clone()),
                    r#type: Some(v1::environment::variable::Type::Value as i32),
                })
                .collect(),
        }),
        value: Some(c.value.clone()).filter(|v| !v.is_empty()),
        user: c.user.clone(),
        shell: Some(c.shell),
        arguments: c.arguments.clone(),
    }
}

pub(crate) fn container_to_v1(c: &model::ContainerInfo) -> v1::ContainerInfo {
    use v1::container_info::Type as T;
    let docker = c.kind == model::ContainerType::Docker;
    v1::ContainerInfo {
        r#type: if docker { T::Docker } else { T::Mesos } as i32,
        volumes: c
            .volumes
            .iter()
            .map(|v| v1::Volume {
                container_path: v.container_path.clone(),
                host_path: Some(v.host_path.clone()).filter(|h| !h.is_empty()),
                mode: if v.read_only { v1::volume::Mode::Ro } else { v1::volume::Mode::Rw } as i32,
                image: None,
            })
            .collect(),
        docker: c
            .image
            .as_ref()
            .filter(|_| docker)
            .map(|i| v1::container_info::DockerInfo { image: i.clone(), ..Default::default() }),
        hostname: c.hostname.clone(),
        mesos: c.image.as_ref().filter(|_| !docker).map(|i| v1::container_info::MesosInfo {
            image: Some(v1::Image {
                r#type: v1::image::Type::Docker as i32,
                docker: Some(v1::image::Docker { name: i.clone() }),
                cached: None,
            }),
        }),
        network_infos: c.network_infos.iter().map(network_info_to_v1).collect(),
    }
}

pub(crate) fn health_to_v1(h: &model::HealthCheck) -> v1::HealthCheck {
    use v1::health_check::Type as T;
    let protocol = Some(match h.ip_protocol {
        model::IpProtocol::V4 => v1::network_info::Protocol::IPv4,
        model::IpProtocol::V6 => v1::network_info::Protocol::IPv6,
    } as i32);
    let port = h.port.unwrap_or_default();
    let (kind, http, tcp) = match h.kind {
        model::HealthCheckType::Command => (T::Command, None, None),
        model::HealthCheckType::Http => (
            T::Http,
            Some(v1::health_check::HttpCheckInfo {
                port,
                path: h.path.clone(),
                scheme: h.scheme.clone(),
                statuses: h.statuses.clone(),
                protocol,
            }),
            None,
        ),
        model::HealthCheckType::Tcp => (T::Tcp, None, Some(v1::health_check::TcpCheckInfo { port, protocol })),
    };
    v1::HealthCheck {
        r#type: Some(kind as i32),
        http,
        tcp,
        command: h.command.as_ref().map(command_to_v1),
        delay_seconds: Some(h.delay_seconds),
        interval_seconds: Some(h.interval_seconds),
        timeout_seconds: Some(h.timeout_seconds),
        consecutive_failures: Some(h.consecutive_failures),
        grace_period_seconds: Some(h.grace_period_seconds),
    }
}

pub(crate) fn discovery_to_v1(d: &model::DiscoveryInfo) -> v1::DiscoveryInfo {
    v1::DiscoveryInfo {
        visibility: v1::discovery_info::Visibility::from_str_name(&d.visibility).unwrap_or_default() as i32,
        name: Some(d.name.clone()).filter(|n| !n.is_empty()),
        ports: (!d.ports.is_empty()).then(|| v1::Ports {
            ports: d
                .ports
                .iter()
                .map(|p| v1::Port {
                    number: p.number,
                    name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                    protocol: Some(p.protocol.clone()).filter(|n| !n.is_empty()),
                    ..Default::default()
                })
                .collect(),
        }),
        labels: labels_to_v1(&d.labels),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_networks_and_their_addresses_cross_the_v1_api() {
        let network = model::NetworkInfo {
            name: Some("agora".into()),
            ip_addresses: vec!["10.233.1.2".into()],
            port_mappings: vec![model::PortMapping { host_port: 31000, container_port: 8080, protocol: None }],
            labels: vec![],
        };
        let status = model::TaskStatus {
            container_status: Some(model::ContainerStatus { network_infos: vec![network.clone()] }),
            ..model::TaskStatus::from_master(
                "t",
                "a",
                model::TaskState::Running,
                model::Reason::Reconciliation,
                "",
                1.0,
            )
        };
        let v = v1::TaskStatus::from(&status);
        let shown = &v.container_status.as_ref().unwrap().network_infos[0];
        assert_eq!(shown.ip_addresses[0].ip_address.as_deref(), Some("10.233.1.2"));
        assert_eq!(shown.ip_addresses[0].protocol, Some(v1::network_info::Protocol::IPv4 as i32));
        assert_eq!(model::TaskStatus::try_from(v).unwrap().container_status, status.container_status);

        let container = model::ContainerInfo::on_network(model::NetworkInfo { ip_addresses: vec![], ..network });
        let back = container_v1_to_wire(container_to_v1(&container)).unwrap();
        assert_eq!(back.network_infos[0].port_mappings[0].host_port, 31000);
        assert_eq!(back.network_infos[0].name, "agora");
    }
}
