//! The event bus behind `/v2/events`: events from the core are broadcast to every attached SSE stream, which
//! filters them by `event_type`.

use serde_json::Value;
use tokio::sync::broadcast;

/// Events buffered per slow subscriber. A stream that falls further behind has missed events and is
/// disconnected (`/v2/events`), as Marathon closes slow consumers; the client re-reads the state and attaches
/// again.
pub const BUFFER: usize = 4096;

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Value>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus { tx: broadcast::channel(BUFFER).0 }
    }
}

impl EventBus {
    pub fn publish(&self, event: Value) {
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.tx.subscribe()
    }
}

/// The `eventType` of an event.
pub fn event_type(event: &Value) -> &str {
    event.get("eventType").and_then(Value::as_str).unwrap_or("")
}

/// Whether a stream with `filters` (empty = everything) wants `event`.
pub fn wanted(filters: &[String], event: &Value) -> bool {
    filters.is_empty() || filters.iter().any(|f| f == event_type(event))
}
