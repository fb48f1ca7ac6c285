//! `model` ⇄ Mesos v1. Every v1 → model conversion goes through Agora's own wire message (`crate::wire`), whose
//! conversion to the model holds the rules (names, ranges, roles, health checks): this module only maps Mesos's
//! shapes (id wrappers, proto2 defaults, `TimeInfo` nanoseconds) onto Agora's, so each rule has one home in
//! `crate::convert`. Model → v1 is infallible; v1 → model fails with a [`ConvertError`] naming the field.

mod cluster;
mod frameworks;
mod resources;
mod tasks;

pub use cluster::*;
pub use resources::*;
pub use tasks::*;

use super::v1;
use crate::ConvertError;

/// Seconds (as the model keeps time) to Mesos's `TimeInfo`.
pub fn time_info(seconds: f64) -> v1::TimeInfo {
    v1::TimeInfo { nanoseconds: (seconds * 1e9) as i64 }
}

/// Seconds to Mesos's `DurationInfo`.
pub fn duration_info(seconds: f64) -> v1::DurationInfo {
    v1::DurationInfo { nanoseconds: (seconds * 1e9) as i64 }
}

/// Mesos's `DurationInfo` as seconds; a negative duration is refused.
pub(crate) fn seconds_from(d: &v1::DurationInfo, field: &str) -> Result<f64, ConvertError> {
    if d.nanoseconds < 0 {
        return Err(ConvertError::new(field, format!("{} nanoseconds is negative", d.nanoseconds)));
    }
    Ok(d.nanoseconds as f64 / 1e9)
}

macro_rules! ids {
    ($($f:ident => $ty:ident),* $(,)?) => {
        $(
            #[doc = concat!("`", stringify!($ty), "{value}`.")]
            pub fn $f(value: impl Into<String>) -> v1::$ty {
                v1::$ty { value: value.into() }
            }
        )*
    };
}

ids! {
    framework_id => FrameworkId,
    agent_id => AgentId,
    offer_id => OfferId,
    task_id => TaskId,
    executor_id => ExecutorId,
    operation_id => OperationId,
}

fn labels_to_v1(l: &crate::model::Labels) -> Option<v1::Labels> {
    (!l.is_empty()).then(|| v1::Labels {
        labels: l.iter().map(|(k, v)| v1::Label { key: k.clone(), value: Some(v.clone()) }).collect(),
    })
}

fn labels_v1_to_wire(l: Option<v1::Labels>) -> Option<crate::wire::Labels> {
    l.map(|l| crate::wire::Labels {
        labels: l
            .labels
            .into_iter()
            .map(|x| crate::wire::Label { key: x.key, value: x.value.unwrap_or_default() })
            .collect(),
    })
}
