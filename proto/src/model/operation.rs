//! Offer operations' feedback, as Mesos names it: an [`OperationStatus`] in an [`OperationState`].
//!
//! Agora's offer operations (LAUNCH) report through task updates; these exist so that a framework reconciling
//! operations (RECONCILE_OPERATIONS) gets Mesos's answer for operations the master does not know.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Mesos's `OperationState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationState {
    #[serde(rename = "OPERATION_UNSUPPORTED")]
    Unsupported,
    #[serde(rename = "OPERATION_PENDING")]
    Pending,
    #[serde(rename = "OPERATION_FINISHED")]
    Finished,
    #[serde(rename = "OPERATION_FAILED")]
    Failed,
    #[serde(rename = "OPERATION_ERROR")]
    Error,
    #[serde(rename = "OPERATION_DROPPED")]
    Dropped,
    #[serde(rename = "OPERATION_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "OPERATION_GONE_BY_OPERATOR")]
    GoneByOperator,
    #[serde(rename = "OPERATION_RECOVERING")]
    Recovering,
    #[serde(rename = "OPERATION_UNKNOWN")]
    Unknown,
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => f.write_str(&s),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// The status of one offer operation, as a framework receives it in UPDATE_OPERATION_STATUS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationStatus {
    pub operation_id: String,
    pub state: OperationState,
    pub message: String,
    pub agent_id: Option<String>,
    /// Set on updates that must be acknowledged (ACKNOWLEDGE_OPERATION_STATUS); never on the master's answers.
    pub uuid: Option<Vec<u8>>,
}
