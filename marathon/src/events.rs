//! The event bus behind `/v2/events`: events from the core are broadcast to every attached SSE stream, which
//! filters them by `event_type`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tokio::sync::broadcast;

/// Events buffered per slow subscriber by default (`--event-stream-max-outstanding-messages`). A stream that
/// falls further behind has missed events and is disconnected (`/v2/events`), as Marathon closes slow consumers;
/// the client re-reads the state and attaches again. Filling 10,000 instances at once publishes about 40,000 events
/// within seconds; with 4,096 the bench's own stream was cut off. A slot costs about 64 bytes up front; events are
/// freed as soon as every stream has read them.
pub const BUFFER: usize = 65_536;

/// The events whose `plan` carries the `original` and `target` root groups.
pub const DEPLOYMENT_EVENTS: [&str; 5] = [
    "deployment_info",
    "deployment_success",
    "deployment_failed",
    "deployment_step_success",
    "deployment_step_failure",
];

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Value>,
    capacity: usize,
    /// Attached streams that want deployment plans with their groups.
    plan_streams: Arc<AtomicUsize>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus::with_capacity(BUFFER)
    }
}

/// Held by a stream that wants plans with groups; dropping it (the stream ends) says so.
pub struct PlanStream(Arc<AtomicUsize>);

impl Drop for PlanStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EventBus {
    /// A bus that buffers up to `capacity` events per stream (at least 1).
    pub fn with_capacity(capacity: usize) -> EventBus {
        let capacity = capacity.max(1);
        EventBus { tx: broadcast::channel(capacity).0, capacity, plan_streams: Arc::default() }
    }

    /// How many events a stream may fall behind before it is disconnected.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A stream that wants deployment plans with their `original` and `target` groups attaches.
    pub fn plan_stream(&self) -> PlanStream {
        self.plan_streams.fetch_add(1, Ordering::Relaxed);
        PlanStream(self.plan_streams.clone())
    }

    /// Whether any attached stream wants plans with groups (the core builds them only then).
    pub fn wants_plan_groups(&self) -> bool {
        self.plan_streams.load(Ordering::Relaxed) > 0
    }

    pub fn publish(&self, event: Value) {
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.tx.subscribe()
    }
}

/// Held by an attached `/v2/events` stream: when the stream ends (the client went, or fell too far behind),
/// `event_stream_detached` with its address goes to the streams still attached, as Marathon publishes it.
pub struct Detach {
    bus: EventBus,
    remote_address: String,
}

impl Detach {
    pub fn new(bus: EventBus, remote_address: String) -> Detach {
        Detach { bus, remote_address }
    }
}

impl Drop for Detach {
    fn drop(&mut self) {
        self.bus.publish(serde_json::json!({
            "eventType": "event_stream_detached",
            "timestamp": crate::time::format_iso(crate::time::now_millis()),
            "remoteAddress": self.remote_address,
        }));
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

/// Whether a stream with `filters` may see deployment events.
pub fn wants_deployments(filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|f| DEPLOYMENT_EVENTS.contains(&f.as_str()))
}

/// A deployment event without the groups of its plan (`plan-format=light`); other events as they are.
pub fn light(event: &Value) -> Option<Value> {
    let plan = event.get("plan")?.as_object()?;
    if !plan.contains_key("original") && !plan.contains_key("target") {
        return None;
    }
    let mut e = event.clone();
    if let Some(p) = e.get_mut("plan").and_then(Value::as_object_mut) {
        p.remove("original");
        p.remove("target");
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_detach_tells_the_streams_still_attached() {
        let bus = EventBus::with_capacity(4);
        let mut rx = bus.subscribe();
        drop(Detach::new(bus.clone(), "10.0.0.9".into()));
        let e = rx.try_recv().unwrap();
        assert_eq!((event_type(&e), &e["remoteAddress"]), ("event_stream_detached", &serde_json::json!("10.0.0.9")));
        assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
