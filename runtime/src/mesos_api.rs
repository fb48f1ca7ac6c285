//! The HTTP side of Mesos's v1 APIs, shared by the master (`POST /api/v1/scheduler`, `POST /api/v1`) and the agent
//! (`POST /api/v1`): reading a call with Mesos's status codes and texts, answering in the format the client
//! accepts, and streaming RecordIO. What the messages are and how they encode is `agora_proto::mesos`.
//!
//! Mesos's answers, in the order Mesos checks: no `Content-Type` → 400 `Expecting 'Content-Type' to be present`;
//! another media type → 415; a body that does not decode → 400 with the decoder's text (`Failed to parse body into
//! JSON: ...`); an `Accept` that allows neither JSON nor protobuf → 406. [`Credentials`] is the one place a request's
//! credentials are taken from (the seam authentication will use).

use std::convert::Infallible;

use agora_proto::mesos::codec::{self, Format, V1Message};
use agora_proto::mesos::recordio;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

/// The largest call body read (an ACCEPT launching thousands of tasks is far smaller).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// What a request carries to prove who sends it. Read, not checked yet: authentication (HTTP basic or bearer
/// tokens, as Mesos's frameworks use) will check it here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
}

impl Credentials {
    pub fn of(headers: &HeaderMap) -> Credentials {
        Credentials {
            authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from),
        }
    }
}

/// A decoded call and what came with it.
#[derive(Debug)]
pub struct ApiRequest<M> {
    pub call: M,
    pub headers: HeaderMap,
    pub credentials: Credentials,
}

/// A refused request: the status and Mesos's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        text(self.status, self.message)
    }
}

/// A plain-text answer, as Mesos writes its errors.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = (status, message.into()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Reads and decodes the call `M` of a POST request.
pub async fn read_call<M: V1Message>(req: Request) -> Result<ApiRequest<M>, ApiError> {
    let (parts, body) = req.into_parts();
    let format = match parts.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or_default()) {
        None => return Err(ApiError::new(StatusCode::BAD_REQUEST, "Expecting 'Content-Type' to be present")),
        Some(value) => Format::from_content_type(value).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Expecting 'Content-Type' of {} or {}", codec::JSON, codec::PROTOBUF),
            )
        })?,
    };
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("cannot read the body (at most {MAX_BODY} bytes): {e}"))
    })?;
    let call = codec::decode::<M>(&bytes, format).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(ApiRequest { call, credentials: Credentials::of(&parts.headers), headers: parts.headers })
}

/// The format of the answer, from `Accept` (JSON unless only protobuf is accepted).
pub fn answer_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let accept = headers.get(header::ACCEPT).map(|v| v.to_str().unwrap_or_default());
    Format::from_accept(accept).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("Expecting 'Accept' to allow '{}' or '{}'", codec::PROTOBUF, codec::JSON),
        )
    })
}

/// Mesos's checks of an operator call, on the master or an agent: a known `type` (its name), and the payload of
/// GET_METRICS, LIST_FILES and READ_FILE, whose field is the type's name in lower case (`has` tells whether the call
/// has a field). The error is the reason, for `Failed to validate ...::Call: <reason>`.
pub fn check_operator_call(kind: Option<&str>, has: impl Fn(&str) -> bool) -> Result<(), String> {
    let kind = kind.ok_or("Expecting 'type' to be present")?;
    let payload = kind.to_ascii_lowercase();
    if matches!(kind, "GET_METRICS" | "LIST_FILES" | "READ_FILE") && !has(&payload) {
        return Err(format!("Expecting '{payload}' to be present"));
    }
    Ok(())
}

/// `m` as the whole body, in `format`.
pub fn message<M: V1Message>(m: &M, format: Format) -> Response {
    match codec::encode(m, format) {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.media_type())], bytes).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A `200` whose chunked body is `messages`, each encoded in `format` and framed as one RecordIO record, with
/// `headers` added (`Mesos-Stream-Id`). The stream ends when `messages` does; a message that cannot be encoded
/// ends it too (and is logged), so the client reconnects rather than misses it silently.
pub fn record_stream<M: V1Message + 'static>(
    format: Format,
    headers: &[(&'static str, String)],
    messages: impl Stream<Item = M> + Send + 'static,
) -> Response {
    let records = messages
        .map(move |m| codec::encode(&m, format))
        .take_while(|r| {
            if let Err(e) = r {
                tracing::error!(error = %e, "ending an event stream");
            }
            std::future::ready(r.is_ok())
        })
        .filter_map(|r| std::future::ready(r.ok()))
        .map(|bytes| Ok::<_, Infallible>(Bytes::from(recordio::encode(&bytes))));
    let mut response = Response::new(Body::from_stream(records));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.media_type()));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    response
}
