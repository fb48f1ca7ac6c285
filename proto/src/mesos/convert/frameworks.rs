//! Frameworks, masters, agents, offers and operation statuses.

use std::net::Ipv4Addr;

use super::super::v1;
use super::resources::{attributes_to_v1, resources_to_v1};
use super::{labels_to_v1, labels_v1_to_wire};
use crate::convert::CAPABILITIES;
use crate::model;
use crate::{ConvertError, wire};

impl TryFrom<v1::FrameworkInfo> for model::FrameworkInfo {
    type Error = ConvertError;
    /// Mesos's role rules: a MULTI_ROLE framework names its roles in `roles` and must not set `role`; any other
    /// names one `role` (default `*`) and must not set `roles`.
    fn try_from(f: v1::FrameworkInfo) -> Result<Self, ConvertError> {
        let multi_role =
            f.capabilities.iter().any(|c| c.r#type == Some(v1::framework_info::capability::Type::MultiRole as i32));
        let roles = match (multi_role, f.role.clone(), f.roles.is_empty()) {
            (true, Some(_), _) => {
                return Err(ConvertError::new(
                    "framework_info.role",
                    "'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable",
                ));
            }
            (true, None, _) => f.roles.clone(),
            (false, _, false) => {
                return Err(ConvertError::new(
                    "framework_info.roles",
                    "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable",
                ));
            }
            (false, role, true) => vec![role.unwrap_or_else(|| model::UNRESERVED.to_string())],
        };
        let (failover_timeout, checkpoint) = (f.failover_timeout(), f.checkpoint());
        let w = wire::FrameworkInfo {
            id: f.id.map(|i| i.value).unwrap_or_default(),
            failover_timeout,
            checkpoint,
            name: f.name,
            user: f.user,
            roles,
            principal: f.principal.unwrap_or_default(),
            // Capabilities Agora does not know (UNKNOWN, or a number from a newer Mesos) are dropped.
            capabilities: f.capabilities.into_iter().filter_map(|c| c.r#type).filter(|t| *t != 0).collect(),
            hostname: f.hostname.unwrap_or_default(),
            webui_url: f.webui_url.unwrap_or_default(),
            labels: labels_v1_to_wire(f.labels),
        };
        model::FrameworkInfo::try_from(w)
    }
}

impl From<&model::FrameworkInfo> for v1::FrameworkInfo {
    fn from(f: &model::FrameworkInfo) -> Self {
        let multi_role = f.has(model::Capability::MultiRole);
        v1::FrameworkInfo {
            user: f.user.clone(),
            name: f.name.clone(),
            id: f.id.clone().map(super::framework_id),
            failover_timeout: Some(f.failover_timeout),
            checkpoint: Some(f.checkpoint),
            role: (!multi_role).then(|| f.roles.first().cloned().unwrap_or_else(|| model::UNRESERVED.to_string())),
            roles: if multi_role { f.roles.clone() } else { vec![] },
            hostname: f.hostname.clone(),
            principal: f.principal.clone(),
            webui_url: f.webui_url.clone(),
            capabilities: f
                .capabilities
                .iter()
                .filter_map(|c| CAPABILITIES.iter().find(|(m, _)| m == c))
                .map(|(_, w)| v1::framework_info::Capability { r#type: Some(*w as i32) })
                .collect(),
            labels: labels_to_v1(&f.labels),
        }
    }
}

/// An IPv4 address as Mesos's `MasterInfo.ip`: its bytes in network order read as a little-endian number (what
/// Mesos writes on the x86 hosts it runs on; 127.0.0.1 is 16777343). 0 for anything else.
fn packed_ip(ip: &str) -> u32 {
    ip.parse::<Ipv4Addr>().map(|a| u32::from_le_bytes(a.octets())).unwrap_or_default()
}

impl From<&model::MasterInfo> for v1::MasterInfo {
    fn from(m: &model::MasterInfo) -> Self {
        v1::MasterInfo {
            id: m.id.clone(),
            ip: packed_ip(&m.ip),
            port: m.port.into(),
            pid: Some(format!("master@{}:{}", m.ip, m.port)),
            hostname: Some(m.hostname.clone()),
            version: Some(m.version.clone()),
            address: Some(v1::Address {
                hostname: Some(m.hostname.clone()),
                ip: Some(m.ip.clone()),
                port: m.port.into(),
            }),
            capabilities: vec![],
        }
    }
}

impl From<&model::AgentInfo> for v1::AgentInfo {
    fn from(a: &model::AgentInfo) -> Self {
        v1::AgentInfo {
            hostname: a.hostname.clone(),
            port: Some(a.port.into()),
            resources: resources_to_v1(&a.resources, None),
            attributes: attributes_to_v1(&a.attributes),
            id: a.id.clone().map(super::agent_id),
        }
    }
}

/// The agent's address of an offer: `url` is `http://IP:PORT`; the path is the agent's libprocess id, as Mesos
/// writes it.
fn agent_url(o: &model::Offer) -> Option<v1::Url> {
    let rest = o.url.strip_prefix("http://").or_else(|| o.url.strip_prefix("https://"))?;
    let scheme = if o.url.starts_with("https://") { "https" } else { "http" };
    let (ip, port) = rest.trim_end_matches('/').rsplit_once(':')?;
    Some(v1::Url {
        scheme: scheme.to_string(),
        address: v1::Address {
            hostname: Some(o.hostname.clone()),
            ip: Some(ip.trim_matches(['[', ']']).to_string()),
            port: port.parse().ok()?,
        },
        path: Some("/slave(1)".to_string()),
        ..Default::default()
    })
}

impl From<&model::Offer> for v1::Offer {
    fn from(o: &model::Offer) -> Self {
        v1::Offer {
            id: super::offer_id(o.id.clone()),
            framework_id: super::framework_id(o.framework_id.clone()),
            agent_id: super::agent_id(o.agent_id.clone()),
            hostname: o.hostname.clone(),
            resources: resources_to_v1(&o.resources, Some(&o.role)),
            executor_ids: vec![],
            attributes: attributes_to_v1(&o.attributes),
            url: agent_url(o),
            unavailability: None,
            allocation_info: Some(v1::resource::AllocationInfo { role: Some(o.role.clone()) }),
        }
    }
}

impl TryFrom<v1::Offer> for model::Offer {
    type Error = ConvertError;
    fn try_from(o: v1::Offer) -> Result<Self, ConvertError> {
        let id = o.id.value;
        let within = |e: ConvertError| e.within(&format!("offer '{id}'"));
        let url = o
            .url
            .map(|u| format!("{}://{}:{}", u.scheme, u.address.ip.unwrap_or_default(), u.address.port))
            .unwrap_or_default();
        let role = o.allocation_info.and_then(|a| a.role).unwrap_or_else(|| model::UNRESERVED.to_string());
        Ok(model::Offer {
            resources: super::resources_from_v1(o.resources).map_err(within)?,
            attributes: super::attributes_from_v1(o.attributes).map_err(within)?,
            framework_id: o.framework_id.value,
            agent_id: o.agent_id.value,
            hostname: o.hostname,
            role,
            url,
            id,
        })
    }
}

impl From<&model::OperationStatus> for v1::OperationStatus {
    fn from(s: &model::OperationStatus) -> Self {
        use model::OperationState as M;
        use v1::OperationState as V;
        let state = match s.state {
            M::Unsupported => V::OperationUnsupported,
            M::Pending => V::OperationPending,
            M::Finished => V::OperationFinished,
            M::Failed => V::OperationFailed,
            M::Error => V::OperationError,
            M::Dropped => V::OperationDropped,
            M::Unreachable => V::OperationUnreachable,
            M::GoneByOperator => V::OperationGoneByOperator,
            M::Recovering => V::OperationRecovering,
            M::Unknown => V::OperationUnknown,
        };
        v1::OperationStatus {
            operation_id: Some(super::operation_id(s.operation_id.clone())),
            state: state as i32,
            message: Some(s.message.clone()).filter(|m| !m.is_empty()),
            converted_resources: vec![],
            uuid: s.uuid.clone().map(|value| v1::Uuid { value }),
            agent_id: s.agent_id.clone().map(super::agent_id),
            resource_provider_id: None,
        }
    }
}
