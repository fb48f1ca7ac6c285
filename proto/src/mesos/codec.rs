//! The two encodings of Mesos's v1 messages and the choice between them.
//!
//! Every body goes through one path: bytes → [`DynamicMessage`] (from protobuf, or from JSON by the `.proto`
//! descriptors) → required fields checked → the generated type. So a JSON body and a protobuf body of the same call
//! become the same value, and JSON follows Mesos's mapping exactly where prost-reflect's options can say it: proto
//! field names, enums by name, `bytes` in base64, 64-bit integers as numbers, unset fields left out. Like Mesos's
//! own JSON parser, decoding ignores fields it does not know (Agora defines a subset of Mesos's messages) and
//! refuses a message whose required fields are missing, naming them (`subscribe.framework_info.user`).
//!
//! The error texts are Mesos's (`Failed to parse body into JSON: ...`), since clients log them as they are.

use std::sync::OnceLock;

use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions,
};

use super::v1;

/// `application/json`.
pub const JSON: &str = "application/json";
/// `application/x-protobuf`.
pub const PROTOBUF: &str = "application/x-protobuf";

/// The descriptors of the `mesos.v1*` packages, written by `build.rs`.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesos_v1.bin"));

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).expect("build.rs wrote a valid descriptor set"))
}

/// A v1 message that crosses the wire as a whole body or record, in either encoding.
pub trait V1Message: prost::Message + Default {
    /// The full protobuf name, e.g. `mesos.v1.scheduler.Call`.
    const NAME: &'static str;

    /// The message's name in Mesos's error texts (`Call`, `Event`).
    fn short_name() -> &'static str {
        Self::NAME.rsplit('.').next().unwrap_or(Self::NAME)
    }

    fn descriptor() -> MessageDescriptor {
        pool().get_message_by_name(Self::NAME).expect("every V1Message is in the descriptor set")
    }
}

macro_rules! v1_messages {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl V1Message for $ty { const NAME: &'static str = $name; })*
    };
}

v1_messages! {
    v1::scheduler::Call => "mesos.v1.scheduler.Call",
    v1::scheduler::Event => "mesos.v1.scheduler.Event",
    v1::master::Call => "mesos.v1.master.Call",
    v1::master::Response => "mesos.v1.master.Response",
    v1::master::Event => "mesos.v1.master.Event",
    v1::agent::Call => "mesos.v1.agent.Call",
    v1::agent::Response => "mesos.v1.agent.Response",
    v1::TaskInfo => "mesos.v1.TaskInfo",
    v1::TaskStatus => "mesos.v1.TaskStatus",
    v1::Offer => "mesos.v1.Offer",
    v1::FrameworkInfo => "mesos.v1.FrameworkInfo",
}

/// How a body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    /// The media type, for `Content-Type`.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => JSON,
            Format::Protobuf => PROTOBUF,
        }
    }

    /// The format a `Content-Type` names (parameters such as `charset` ignored, case-insensitive), if either.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let media = value.split(';').next().unwrap_or_default().trim();
        if media.eq_ignore_ascii_case(JSON) {
            Some(Format::Json)
        } else if media.eq_ignore_ascii_case(PROTOBUF) {
            Some(Format::Protobuf)
        } else {
            None
        }
    }

    /// The answer's format for an `Accept` header, as Mesos chooses it: JSON if acceptable (also when there is no
    /// header), else protobuf if acceptable, else none. A media range with `q=0` is not acceptable.
    pub fn from_accept(accept: Option<&str>) -> Option<Format> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Some(Format::Json) };
        let accepts = |wanted: &str| {
            let (kind, _) = wanted.split_once('/').unwrap_or((wanted, ""));
            accept.split(',').any(|range| {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or_default().trim();
                let refused = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f64>().is_ok_and(|q| q <= 0.0))
                });
                !refused
                    && (media == "*/*"
                        || media.eq_ignore_ascii_case(wanted)
                        || media.strip_suffix("/*").is_some_and(|k| k.eq_ignore_ascii_case(kind)))
            })
        };
        if accepts(JSON) {
            Some(Format::Json)
        } else if accepts(PROTOBUF) {
            Some(Format::Protobuf)
        } else {
            None
        }
    }
}

/// A body that is not a valid message; the texts are Mesos's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("Failed to parse body into {message} protobuf: {detail}")]
    Protobuf { message: &'static str, detail: String },
    #[error("Failed to parse body into JSON: {0}")]
    Json(String),
    #[error("Failed to convert JSON into {message} protobuf: {detail}")]
    JsonToProtobuf { message: &'static str, detail: String },
}

/// A message that could not be written (never expected: the message and the descriptors come from one `.proto`).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {message} as JSON: {detail}")]
pub struct EncodeError {
    pub message: &'static str,
    pub detail: String,
}

/// Decodes a body of `format` into `M`.
pub fn decode<M: V1Message>(body: &[u8], format: Format) -> Result<M, DecodeError> {
    let desc = M::descriptor();
    let message = M::short_name();
    let dynamic = match format {
        Format::Protobuf => {
            DynamicMessage::decode(desc, body).map_err(|e| DecodeError::Protobuf { message, detail: e.to_string() })?
        }
        Format::Json => {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
            if !value.is_object() {
                return Err(DecodeError::JsonToProtobuf { message, detail: "Expecting a JSON object".into() });
            }
            let options = DeserializeOptions::new().deny_unknown_fields(false);
            DynamicMessage::deserialize_with_options(desc, value, &options)
                .map_err(|e| DecodeError::JsonToProtobuf { message, detail: e.to_string() })?
        }
    };
    let mut missing = Vec::new();
    missing_required(&dynamic, "", &mut missing);
    if !missing.is_empty() {
        let detail = format!("Missing required fields: {}", missing.join(", "));
        return Err(match format {
            Format::Protobuf => DecodeError::Protobuf { message, detail },
            Format::Json => DecodeError::JsonToProtobuf { message, detail },
        });
    }
    dynamic.transcode_to::<M>().map_err(|e| DecodeError::Protobuf { message, detail: e.to_string() })
}

/// Encodes `m` in `format`.
pub fn encode<M: V1Message>(m: &M, format: Format) -> Result<Vec<u8>, EncodeError> {
    match format {
        Format::Protobuf => Ok(m.encode_to_vec()),
        Format::Json => {
            let fail = |detail: String| EncodeError { message: M::NAME, detail };
            let mut dynamic = DynamicMessage::new(M::descriptor());
            dynamic.transcode_from(m).map_err(|e| fail(e.to_string()))?;
            let options = SerializeOptions::new()
                .use_proto_field_name(true)
                .stringify_64_bit_integers(false)
                .skip_default_fields(true);
            let mut out = Vec::with_capacity(256);
            let mut serializer = serde_json::Serializer::new(&mut out);
            dynamic.serialize_with_options(&mut serializer, &options).map_err(|e| fail(e.to_string()))?;
            Ok(out)
        }
    }
}

/// Mesos's `InitializationErrorString`: the paths of required fields that are not set, in `a.b[2].c` form.
fn missing_required(m: &DynamicMessage, prefix: &str, out: &mut Vec<String>) {
    for field in ReflectMessage::descriptor(m).fields() {
        let path = if prefix.is_empty() { field.name().to_string() } else { format!("{prefix}.{}", field.name()) };
        if field.cardinality() == prost_reflect::Cardinality::Required && !m.has_field(&field) {
            out.push(path);
            continue;
        }
        if !m.has_field(&field) || field.kind().as_message().is_none() {
            continue;
        }
        match &*m.get_field(&field) {
            prost_reflect::Value::Message(inner) => missing_required(inner, &path, out),
            prost_reflect::Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let prost_reflect::Value::Message(inner) = item {
                        missing_required(inner, &format!("{path}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}
