//! Reliable, ordered status updates (Mesos's status update manager), as a plain state machine.
//!
//! One stream per task, keyed by [`TaskKey`] (framework id and task id: task ids are unique only per framework).
//! Only the front update of a stream is in flight; it is re-sent with a doubling backoff until
//! the master forwards an acknowledgement carrying its uuid, and only then does the next update go out. Nothing here
//! reads a clock or touches a socket: every method takes `now` and returns the updates to send.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use agora_proto::model::{TaskState, TaskStatus};

/// A task as the agent tracks it: task ids are unique only within a framework, so two frameworks may both run a
/// task `hello-0` on one agent. Every per-task structure of the agent is keyed by this pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub framework_id: String,
    pub task_id: String,
}

impl TaskKey {
    pub fn new(framework_id: impl Into<String>, task_id: impl Into<String>) -> TaskKey {
        TaskKey { framework_id: framework_id.into(), task_id: task_id.into() }
    }
}

impl std::fmt::Display for TaskKey {
    /// `<framework>/<task>`: unambiguous, as neither id may contain '/'.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.framework_id, self.task_id)
    }
}

/// Mesos's `STATUS_UPDATE_RETRY_INTERVAL_MAX`.
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(600);

/// A status update to send to the master (the wire `StatusUpdate`).
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    pub framework_id: String,
    pub status: TaskStatus,
    /// The newest state of the task, which may be newer than `status` while older updates wait.
    pub latest_state: TaskState,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    /// The front update was acknowledged; `next` is the following update, to send now (if connected).
    Acked { next: Option<Outbound>, terminal_done: bool },
    /// No stream for the task, or the uuid is not the front's (a duplicate or stale acknowledgement).
    Ignored,
}

#[derive(Debug)]
struct Stream {
    pending: VecDeque<TaskStatus>,
    latest_state: TaskState,
    /// When the front is due to be (re-)sent; `None` while it waits for a connection.
    next_send: Option<Instant>,
    interval: Duration,
}

/// Per-task queues of unacknowledged status updates.
#[derive(Debug)]
pub struct StatusUpdateManager {
    streams: BTreeMap<TaskKey, Stream>,
    min_interval: Duration,
    max_interval: Duration,
    /// The tasks whose checkpointed queue (its updates, its latest state) changed since [`Self::take_changed`];
    /// retry times are not checkpointed, so re-sends leave it alone.
    changed: BTreeSet<TaskKey>,
    /// `(next_send, task)` of every stream with a retry time, earliest first: timers look here, not at every stream.
    schedule: BTreeSet<(Instant, TaskKey)>,
}

/// Sets the stream's retry time, keeping `schedule` in step.
fn reschedule(schedule: &mut BTreeSet<(Instant, TaskKey)>, key: &TaskKey, stream: &mut Stream, at: Option<Instant>) {
    if stream.next_send == at {
        return;
    }
    if let Some(old) = stream.next_send {
        schedule.remove(&(old, key.clone()));
    }
    if let Some(at) = at {
        schedule.insert((at, key.clone()));
    }
    stream.next_send = at;
}

impl StatusUpdateManager {
    /// `min_interval` is the first retry interval (`--status-update-retry-interval`); it doubles up to 10 minutes.
    pub fn new(min_interval: Duration) -> StatusUpdateManager {
        StatusUpdateManager {
            streams: BTreeMap::new(),
            min_interval,
            max_interval: MAX_RETRY_INTERVAL.max(min_interval),
            changed: BTreeSet::new(),
            schedule: BTreeSet::new(),
        }
    }

    /// Queues `status`. When it is the only update of its task and `connected`, it is returned to send now.
    pub fn enqueue(
        &mut self,
        framework_id: &str,
        status: TaskStatus,
        now: Instant,
        connected: bool,
    ) -> Option<Outbound> {
        let min = self.min_interval;
        let key = TaskKey::new(framework_id, status.task_id.clone());
        let stream = self.streams.entry(key.clone()).or_insert_with(|| Stream {
            pending: VecDeque::new(),
            latest_state: status.state,
            next_send: None,
            interval: min,
        });
        stream.latest_state = status.state;
        stream.pending.push_back(status);
        self.changed.insert(key.clone());
        if stream.pending.len() == 1 && connected {
            stream.interval = min;
            reschedule(&mut self.schedule, &key, stream, Some(now + min));
            return front(&key, stream);
        }
        // A waiting front now carries a newer latest_state; it goes out at its next retry.
        None
    }

    /// Handles an acknowledgement; the acknowledged update leaves its queue and the next one goes out.
    pub fn acknowledge(&mut self, key: &TaskKey, uuid: &[u8], now: Instant, connected: bool) -> AckOutcome {
        let Some(stream) = self.streams.get_mut(key) else { return AckOutcome::Ignored };
        let matches = stream.pending.front().and_then(|s| s.uuid.as_deref()) == Some(uuid);
        if !matches {
            return AckOutcome::Ignored;
        }
        let acked = stream.pending.pop_front();
        self.changed.insert(key.clone());
        let was_terminal = acked.map(|s| s.state.is_terminal()).unwrap_or(false);
        if stream.pending.is_empty() {
            reschedule(&mut self.schedule, key, stream, None);
            self.streams.remove(key);
            return AckOutcome::Acked { next: None, terminal_done: was_terminal };
        }
        stream.interval = self.min_interval;
        reschedule(&mut self.schedule, key, stream, connected.then(|| now + self.min_interval));
        let next = if connected { front(key, stream) } else { None };
        AckOutcome::Acked { next, terminal_done: false }
    }

    /// Fronts whose retry time has come; each is re-scheduled with a doubled interval (capped).
    pub fn due(&mut self, now: Instant) -> Vec<Outbound> {
        let max = self.max_interval;
        let due: Vec<TaskKey> =
            self.schedule.iter().take_while(|(at, _)| *at <= now).map(|(_, key)| key.clone()).collect();
        let mut out = Vec::new();
        for key in due {
            let Some(stream) = self.streams.get_mut(&key) else { continue };
            stream.interval = (stream.interval * 2).min(max);
            let at = Some(now + stream.interval);
            reschedule(&mut self.schedule, &key, stream, at);
            out.extend(front(&key, stream));
        }
        out
    }

    /// After (re)registration: every front goes out at once, with the backoff reset.
    pub fn resend_all(&mut self, now: Instant) -> Vec<Outbound> {
        let min = self.min_interval;
        let schedule = &mut self.schedule;
        self.streams
            .iter_mut()
            .filter_map(|(key, stream)| {
                stream.interval = min;
                reschedule(schedule, key, stream, Some(now + min));
                front(key, stream)
            })
            .collect()
    }

    /// The connection is gone: nothing is re-sent until [`StatusUpdateManager::resend_all`].
    pub fn pause(&mut self) {
        for stream in self.streams.values_mut() {
            stream.next_send = None;
        }
        self.schedule.clear();
    }

    /// The earliest retry time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.schedule.first().map(|(at, _)| *at)
    }

    /// True while some update of the task awaits acknowledgement.
    pub fn has_pending(&self, key: &TaskKey) -> bool {
        self.streams.contains_key(key)
    }

    /// Drops every queue (the master removed this agent; nobody will acknowledge them).
    pub fn clear(&mut self) {
        self.changed.extend(std::mem::take(&mut self.streams).into_keys());
        self.schedule.clear();
    }

    /// Drops the queues of one framework's tasks (the framework is gone; nobody will acknowledge them).
    pub fn remove_framework(&mut self, framework_id: &str) {
        let (changed, schedule) = (&mut self.changed, &mut self.schedule);
        self.streams.retain(|key, stream| {
            let keep = key.framework_id != framework_id;
            if !keep {
                changed.insert(key.clone());
                reschedule(schedule, key, stream, None);
            }
            keep
        });
    }

    /// The queued states of a task, front first.
    pub fn pending_states(&self, key: &TaskKey) -> Vec<TaskState> {
        self.streams.get(key).map(|s| s.pending.iter().map(|p| p.state).collect()).unwrap_or_default()
    }
}

/// One task's queue as checkpointed: every unacknowledged update, front first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueuedUpdates {
    pub task_id: String,
    pub framework_id: String,
    pub pending: Vec<TaskStatus>,
    pub latest_state: TaskState,
}

impl StatusUpdateManager {
    /// Every queue, for the checkpoint.
    pub fn snapshot(&self) -> Vec<QueuedUpdates> {
        self.streams.iter().map(|(key, s)| queued(key, s)).collect()
    }

    /// One task's queue as checkpointed; `None` when nothing of it awaits acknowledgement.
    pub fn queue(&self, key: &TaskKey) -> Option<QueuedUpdates> {
        self.streams.get(key).map(|s| queued(key, s))
    }

    /// The tasks whose queue changed since the last call (an update queued or acknowledged, queues dropped).
    pub fn take_changed(&mut self) -> BTreeSet<TaskKey> {
        std::mem::take(&mut self.changed)
    }

    /// Every task with a queue, as changed (the whole checkpoint is rewritten).
    pub fn mark_all_changed(&mut self) {
        self.changed.extend(self.streams.keys().cloned());
    }

    /// Restores checkpointed queues; they wait for the next registration, as after a disconnection.
    pub fn restore(&mut self, queues: Vec<QueuedUpdates>) {
        for q in queues.into_iter().filter(|q| !q.pending.is_empty()) {
            let key = TaskKey::new(q.framework_id, q.task_id);
            let stream = Stream {
                pending: q.pending.into(),
                latest_state: q.latest_state,
                next_send: None,
                interval: self.min_interval,
            };
            if let Some(at) = self.streams.insert(key.clone(), stream).and_then(|old| old.next_send) {
                self.schedule.remove(&(at, key));
            }
        }
    }
}

fn queued(key: &TaskKey, s: &Stream) -> QueuedUpdates {
    QueuedUpdates {
        task_id: key.task_id.clone(),
        framework_id: key.framework_id.clone(),
        pending: s.pending.iter().cloned().collect(),
        latest_state: s.latest_state,
    }
}

fn front(key: &TaskKey, stream: &Stream) -> Option<Outbound> {
    stream.pending.front().map(|status| Outbound {
        framework_id: key.framework_id.clone(),
        status: status.clone(),
        latest_state: stream.latest_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::model::Source;

    fn status(task: &str, state: TaskState, uuid: u8) -> TaskStatus {
        TaskStatus {
            task_id: task.to_string(),
            state,
            reason: None,
            source: Source::Executor,
            message: String::new(),
            uuid: Some(vec![uuid; 16]),
            timestamp: 0.0,
            healthy: None,
            agent_id: "a".into(),
            unreachable_time: None,
            container_status: None,
        }
    }

    fn key(framework: &str, task: &str) -> TaskKey {
        TaskKey::new(framework, task)
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn only_the_front_is_in_flight_and_acks_release_the_next() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(10 * SEC);
        let first = m.enqueue("f", status("t", TaskState::Starting, 1), t0, true).unwrap();
        assert_eq!(first.status.state, TaskState::Starting);
        assert_eq!(first.latest_state, TaskState::Starting);
        assert_eq!(m.enqueue("f", status("t", TaskState::Running, 2), t0, true), None);
        assert_eq!(m.enqueue("f", status("t", TaskState::Finished, 3), t0, true), None);
        assert_eq!(
            m.pending_states(&key("f", "t")),
            vec![TaskState::Starting, TaskState::Running, TaskState::Finished]
        );

        // A wrong uuid changes nothing.
        assert_eq!(m.acknowledge(&key("f", "t"), &[2; 16], t0, true), AckOutcome::Ignored);
        assert_eq!(m.acknowledge(&key("f", "other"), &[1; 16], t0, true), AckOutcome::Ignored);

        let AckOutcome::Acked { next: Some(next), terminal_done: false } =
            m.acknowledge(&key("f", "t"), &[1; 16], t0, true)
        else {
            panic!("expected the running update next");
        };
        assert_eq!(next.status.state, TaskState::Running);
        assert_eq!(next.latest_state, TaskState::Finished);
        let AckOutcome::Acked { next: Some(next), .. } = m.acknowledge(&key("f", "t"), &[2; 16], t0, true) else {
            panic!()
        };
        assert_eq!(next.status.state, TaskState::Finished);
        assert_eq!(
            m.acknowledge(&key("f", "t"), &[3; 16], t0, true),
            AckOutcome::Acked { next: None, terminal_done: true }
        );
        assert!(!m.has_pending(&key("f", "t")));
        assert_eq!(m.next_deadline(), None);
        // A duplicate acknowledgement after the stream is gone is ignored.
        assert_eq!(m.acknowledge(&key("f", "t"), &[3; 16], t0, true), AckOutcome::Ignored);
    }

    #[test]
    fn retries_double_up_to_ten_minutes() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(10 * SEC);
        m.enqueue("f", status("t", TaskState::Running, 1), t0, true).unwrap();
        assert_eq!(m.next_deadline(), Some(t0 + 10 * SEC));
        assert!(m.due(t0 + 9 * SEC).is_empty());
        let mut now = t0 + 10 * SEC;
        let mut gaps = Vec::new();
        for _ in 0..8 {
            let sent = m.due(now);
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].status.state, TaskState::Running);
            let next = m.next_deadline().unwrap();
            gaps.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(gaps, vec![20, 40, 80, 160, 320, 600, 600, 600]);
    }

    #[test]
    fn disconnected_updates_wait_for_resend_all() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(SEC);
        assert_eq!(m.enqueue("f", status("a", TaskState::Running, 1), t0, false), None);
        assert_eq!(m.next_deadline(), None);
        assert!(m.due(t0 + 100 * SEC).is_empty());
        m.enqueue("f", status("b", TaskState::Running, 2), t0, true).unwrap();
        m.pause();
        assert!(m.due(t0 + 100 * SEC).is_empty());
        let sent = m.resend_all(t0 + 100 * SEC);
        let tasks: Vec<&str> = sent.iter().map(|o| o.status.task_id.as_str()).collect();
        assert_eq!(tasks, vec!["a", "b"]);
        assert_eq!(m.next_deadline(), Some(t0 + 101 * SEC));
    }

    #[test]
    fn ack_while_disconnected_holds_the_next_update() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(SEC);
        m.enqueue("f", status("t", TaskState::Running, 1), t0, true);
        m.enqueue("f", status("t", TaskState::Failed, 2), t0, true);
        assert_eq!(
            m.acknowledge(&key("f", "t"), &[1; 16], t0, false),
            AckOutcome::Acked { next: None, terminal_done: false }
        );
        assert_eq!(m.next_deadline(), None);
        let sent = m.resend_all(t0);
        assert_eq!(sent[0].status.state, TaskState::Failed);
    }

    #[test]
    fn removing_a_framework_drops_only_its_queues() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(SEC);
        m.enqueue("f", status("a", TaskState::Running, 1), t0, true);
        m.enqueue("g", status("b", TaskState::Running, 2), t0, true);
        m.remove_framework("f");
        assert!(!m.has_pending(&key("f", "a")));
        assert!(m.has_pending(&key("g", "b")));
    }

    #[test]
    fn the_same_task_id_of_two_frameworks_has_two_queues() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(SEC);
        let a = m.enqueue("f", status("t", TaskState::Starting, 1), t0, true).unwrap();
        let b = m.enqueue("g", status("t", TaskState::Starting, 2), t0, true).unwrap();
        assert_eq!((a.framework_id.as_str(), b.framework_id.as_str()), ("f", "g"));
        m.enqueue("f", status("t", TaskState::Running, 3), t0, true);
        m.enqueue("g", status("t", TaskState::Running, 4), t0, true);
        // g's uuid does not acknowledge f's front.
        assert_eq!(m.acknowledge(&key("f", "t"), &[2; 16], t0, true), AckOutcome::Ignored);
        let AckOutcome::Acked { next: Some(next), .. } = m.acknowledge(&key("f", "t"), &[1; 16], t0, true) else {
            panic!()
        };
        assert_eq!((next.framework_id.as_str(), next.status.state), ("f", TaskState::Running));
        assert_eq!(m.pending_states(&key("f", "t")), vec![TaskState::Running]);
        assert_eq!(m.pending_states(&key("g", "t")), vec![TaskState::Starting, TaskState::Running]);
        let snapshot = m.snapshot();
        assert_eq!(snapshot.len(), 2);
        let mut restored = StatusUpdateManager::new(SEC);
        restored.restore(snapshot.clone());
        assert_eq!(restored.snapshot(), snapshot);
        m.remove_framework("g");
        assert!(m.has_pending(&key("f", "t")));
        assert!(!m.has_pending(&key("g", "t")));
    }

    /// The retry schedule names exactly the streams that have a retry time, at that time.
    fn schedule_is_consistent(m: &StatusUpdateManager) {
        let expected: BTreeSet<(Instant, TaskKey)> =
            m.streams.iter().filter_map(|(k, s)| s.next_send.map(|at| (at, k.clone()))).collect();
        assert_eq!(m.schedule, expected);
        assert_eq!(m.next_deadline(), expected.first().map(|(at, _)| *at));
    }

    #[test]
    fn the_retry_schedule_and_the_changed_queues_follow_every_operation() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(SEC);
        m.enqueue("f", status("a", TaskState::Starting, 1), t0, true);
        m.enqueue("f", status("b", TaskState::Starting, 2), t0 + SEC, true);
        m.enqueue("g", status("c", TaskState::Starting, 3), t0, false);
        m.enqueue("f", status("a", TaskState::Running, 4), t0, true);
        schedule_is_consistent(&m);
        assert_eq!(m.take_changed().len(), 3);
        assert!(m.take_changed().is_empty());

        let due = m.due(t0 + 2 * SEC);
        assert_eq!(due.iter().map(|o| o.status.task_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        schedule_is_consistent(&m);
        assert!(m.take_changed().is_empty(), "re-sending changes nothing checkpointed");
        m.acknowledge(&key("f", "a"), &[1; 16], t0 + 2 * SEC, true);
        m.acknowledge(&key("f", "b"), &[2; 16], t0 + 2 * SEC, true);
        schedule_is_consistent(&m);
        assert_eq!(m.take_changed().into_iter().collect::<Vec<_>>(), [key("f", "a"), key("f", "b")]);
        m.pause();
        schedule_is_consistent(&m);
        m.resend_all(t0 + 3 * SEC);
        schedule_is_consistent(&m);
        m.remove_framework("g");
        schedule_is_consistent(&m);
        assert_eq!(m.take_changed().into_iter().collect::<Vec<_>>(), [key("g", "c")]);
        m.clear();
        schedule_is_consistent(&m);
        assert_eq!(m.take_changed().into_iter().collect::<Vec<_>>(), [key("f", "a")]);
        assert_eq!(m.next_deadline(), None);
    }
}
