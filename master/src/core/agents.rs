//! Agents: registration, re-registration, health pings, status updates, and partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use agora_proto::model::cluster::OperatorEvent;
use agora_proto::model::{AgentInfo, AgentNetwork, FrameworkInfo, Reason, TaskInfo, TaskState, TaskStatus};

use super::{Agent, AgentCommand, AgentState, ConnId, Effect, Framework, Master, Now, SchedulerEvent, Task, views};

/// A task as a re-registering agent reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedTask {
    pub framework_id: String,
    pub task: TaskInfo,
    pub state: TaskState,
}

/// Messages from an agent (the domain form of `wire::AgentMessage`).
#[derive(Clone, Debug, PartialEq)]
pub enum AgentMessage {
    /// `network`: the agent runs container networks (and the subnet it holds, if any).
    Register {
        info: AgentInfo,
        network: Option<AgentNetwork>,
    },
    Reregister {
        info: AgentInfo,
        tasks: Vec<ReportedTask>,
        frameworks: Vec<FrameworkInfo>,
        network: Option<AgentNetwork>,
    },
    Pong,
    StatusUpdate {
        framework_id: String,
        status: TaskStatus,
        latest_state: TaskState,
    },
}

impl Master {
    /// A message on agent link `conn`.
    pub fn agent_message(&mut self, conn: ConnId, msg: AgentMessage, now: Now) {
        match msg {
            AgentMessage::Register { info, network } => self.register_agent(conn, info, network, now),
            AgentMessage::Reregister { info, tasks, frameworks, network } => {
                self.reregister_agent(conn, info, tasks, frameworks, network, now)
            }
            AgentMessage::Pong => {
                if let Some(a) = self.agent_conns.get(&conn).and_then(|id| self.agents.get_mut(id)) {
                    a.awaiting_pong = false;
                    a.missed_pings = 0;
                }
            }
            AgentMessage::StatusUpdate { framework_id, status, latest_state } => {
                match self.agent_conns.get(&conn).cloned() {
                    Some(agent_id) => self.status_update(&agent_id, framework_id, status, latest_state, now),
                    None => tracing::warn!(task_id = %status.task_id, "status update on an unregistered agent link"),
                }
            }
        }
    }

    fn register_agent(&mut self, conn: ConnId, mut info: AgentInfo, network: Option<AgentNetwork>, now: Now) {
        let id = self.new_agent_id();
        info.id = Some(id.clone());
        tracing::info!(agent_id = %id, hostname = %info.hostname, resources = %info.resources, "agent registered");
        self.counters.agent_registrations += 1;
        self.admit_agent(&id, &info);
        let ip = info.ip.clone();
        self.agents.insert(id.clone(), Agent::new(id.clone(), info, conn, now));
        self.agent_conns.insert(conn, id.clone());
        let network = network.and_then(|n| self.lease_subnet(&id, &ip, &n));
        self.operator(OperatorEvent::AgentAdded(Box::new(views::agent_view(&self.agents[&id]))));
        let master_info = self.info.clone();
        self.emit(Effect::ToAgent(conn, AgentCommand::Registered { agent_id: id, master_info, network }));
        self.want_allocation();
    }

    fn reregister_agent(
        &mut self,
        conn: ConnId,
        info: AgentInfo,
        reported: Vec<ReportedTask>,
        frameworks: Vec<FrameworkInfo>,
        network: Option<AgentNetwork>,
        now: Now,
    ) {
        let Some(id) = info.id.clone() else {
            self.emit(Effect::ToAgent(
                conn,
                AgentCommand::Error { message: "reregistration without an agent id".into() },
            ));
            self.emit(Effect::CloseAgent(conn));
            return;
        };
        let span = tracing::info_span!("reregister", agent_id = %id);
        let _g = span.enter();
        if !self.readmit_agent(&id, &info) {
            tracing::warn!("refusing a removed agent; it must register anew");
            self.emit(Effect::ToAgent(
                conn,
                AgentCommand::Error { message: format!("agent {id} was removed; register as a new agent") },
            ));
            self.emit(Effect::CloseAgent(conn));
            return;
        }
        self.counters.agent_reregistrations += 1;

        // Replace an older link of the same agent.
        if let Some(old) = self.agents.get(&id).and_then(|a| a.conn).filter(|c| *c != conn) {
            self.agent_conns.remove(&old);
            self.emit(Effect::CloseAgent(old));
        }
        let was_unreachable = self.agents.get(&id).is_some_and(|a| a.state == AgentState::Unreachable);
        match self.agents.get_mut(&id) {
            Some(a) => {
                a.info = info;
                a.conn = Some(conn);
                a.state = AgentState::Active;
                a.reregistered_time = Some(now.wall);
                a.unreachable_time = None;
                a.awaiting_pong = false;
                a.missed_pings = 0;
                a.last_ping = Some(now.mono);
            }
            None => {
                // An agent this master has not seen (e.g. the master restarted): admit it under its id.
                tracing::info!("admitting re-registering agent unknown to this master");
                let mut agent = Agent::new(id.clone(), info, conn, now);
                agent.reregistered_time = Some(now.wall);
                self.agents.insert(id.clone(), agent);
            }
        }
        self.agent_conns.insert(conn, id.clone());
        // Added again, with its info as it re-registered (operators see the agent's current info).
        self.operator(OperatorEvent::AgentAdded(Box::new(views::agent_view(&self.agents[&id]))));

        // Frameworks the master does not know yet are recovered from the agent's report (inactive until their
        // schedulers subscribe).
        for fi in frameworks {
            let Some(fid) = fi.id.clone() else { continue };
            if self.frameworks.contains_key(&fid) {
                continue;
            }
            self.frameworks.insert(
                fid.clone(),
                Framework {
                    info: fi,
                    id: fid.clone(),
                    conn: None,
                    stream_id: String::new(),
                    registered_time: now.wall,
                    reregistered_time: None,
                    unregistered_time: None,
                    disconnected_at: Some(now.mono),
                    suppressed_roles: BTreeSet::new(),
                    tasks: BTreeMap::new(),
                    completed_tasks: VecDeque::new(),
                    offers: BTreeSet::new(),
                    allocated: HashMap::new(),
                    recovered: true,
                },
            );
            let view = self.framework_view_of(&fid).expect("inserted above");
            self.operator(OperatorEvent::FrameworkAdded(Box::new(view)));
        }

        // Reconcile the master's view of this agent's tasks with the agent's report.
        let reported_keys: BTreeSet<(String, String)> =
            reported.iter().map(|t| (t.framework_id.clone(), t.task.task_id.clone())).collect();
        let known: Vec<(String, String)> = self.agents[&id].tasks.iter().cloned().collect();
        for (fid, tid) in known {
            if reported_keys.contains(&(fid.clone(), tid.clone())) {
                continue;
            }
            // The agent does not know the task (e.g. the launch never reached it).
            let state = self.frameworks.get(&fid).and_then(|f| f.tasks.get(&tid)).map(|t| t.state);
            if state.is_some_and(|s| !s.is_terminal()) {
                let status = self.for_framework(
                    &fid,
                    TaskStatus::from_master(
                        &tid,
                        &id,
                        TaskState::Dropped,
                        Reason::AgentReregistered,
                        "Task was not reported by its agent on re-registration",
                        now.wall,
                    ),
                );
                self.set_task_state(&fid, &tid, &status, status.state);
                self.send_framework(&fid, SchedulerEvent::Update(status));
            }
            self.complete_task(&fid, &tid);
        }
        for rt in reported {
            self.restore_reported_task(&id, rt, was_unreachable, now);
        }

        let ip = self.agents[&id].info.ip.clone();
        let network = network.and_then(|n| self.lease_subnet(&id, &ip, &n));
        let master_info = self.info.clone();
        self.emit(Effect::ToAgent(conn, AgentCommand::Registered { agent_id: id, master_info, network }));
        self.want_allocation();
    }

    /// Puts a task a re-registering agent reported back into the books.
    fn restore_reported_task(&mut self, agent_id: &str, rt: ReportedTask, was_unreachable: bool, now: Now) {
        let ReportedTask { framework_id: fid, task, state } = rt;
        let tid = task.task_id.clone();
        let Some(f) = self.frameworks.get_mut(&fid) else {
            tracing::warn!(task_id = %tid, framework_id = %fid, "agent reported a task of an unknown framework");
            return;
        };
        match f.tasks.get_mut(&tid) {
            Some(t) => {
                let previous = t.state;
                if previous == TaskState::Unreachable || previous == TaskState::Lost || was_unreachable {
                    // The partition healed: the task is back with the state the agent knows, and the framework is
                    // told (Mesos re-sends the latest state).
                    t.state = state;
                    if t.resources_released && !state.is_terminal() {
                        t.resources_released = false;
                        let (role, res) = (t.role.clone(), t.info.resources.clone());
                        f.alloc_add(&role, &res);
                        if let Some(a) = self.agents.get_mut(agent_id) {
                            a.used.add(&res);
                        }
                    }
                    let status = TaskStatus::from_master(
                        &tid,
                        agent_id,
                        state,
                        Reason::AgentReregistered,
                        "Agent re-registered",
                        now.wall,
                    );
                    self.set_task_state(&fid, &tid, &status, state);
                    self.send_framework(&fid, SchedulerEvent::Update(status));
                }
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.tasks.insert((fid.clone(), tid.clone()));
                }
            }
            None => {
                let role = f.info.roles.first().cloned().unwrap_or_else(|| "*".to_string());
                let status = TaskStatus::from_master(&tid, agent_id, state, Reason::AgentReregistered, "", now.wall);
                let released = state.is_terminal();
                if !released {
                    f.alloc_add(&role, &task.resources);
                }
                f.tasks.insert(
                    tid.clone(),
                    Task {
                        info: task.clone(),
                        framework_id: fid.clone(),
                        role,
                        state,
                        statuses: vec![status],
                        resources_released: released,
                    },
                );
                if let Some(a) = self.agents.get_mut(agent_id) {
                    if !released {
                        a.used.add(&task.resources);
                    }
                    a.tasks.insert((fid.clone(), tid.clone()));
                }
                let view = views::task_view(&self.frameworks[&fid].tasks[&tid]);
                self.operator(OperatorEvent::TaskAdded(Box::new(view)));
            }
        }
    }

    fn status_update(&mut self, agent_id: &str, framework_id: String, status: TaskStatus, latest: TaskState, now: Now) {
        let span =
            tracing::debug_span!("status_update", agent_id, framework_id = %framework_id, task_id = %status.task_id);
        let _g = span.enter();
        let known = self.frameworks.get(&framework_id).is_some_and(|f| f.tasks.contains_key(&status.task_id));
        if !self.frameworks.contains_key(&framework_id) {
            // The framework is gone: acknowledge on its behalf and make sure the agent stops its tasks.
            tracing::info!(state = %status.state, "status update for a removed framework; acknowledging it");
            if let Some(uuid) = status.uuid.clone() {
                self.send_agent(
                    agent_id,
                    AgentCommand::Acknowledge {
                        framework_id: framework_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid,
                    },
                );
            }
            if !latest.is_terminal() {
                self.send_agent(agent_id, AgentCommand::ShutdownFramework { framework_id });
            }
            return;
        }
        if known {
            let previous = self.frameworks[&framework_id].tasks[&status.task_id].state;
            if previous.is_terminal() && !latest.is_terminal() {
                tracing::warn!(%previous, new = %latest, "ignoring a non-terminal state for a terminal task");
            } else {
                self.set_task_state(&framework_id, &status.task_id, &status, latest);
            }
            tracing::debug!(state = %status.state, latest = %latest, "status update");
        } else {
            tracing::info!(state = %status.state, "status update for a task this master does not know");
        }
        let mut forwarded = status;
        forwarded.agent_id = agent_id.to_string();
        self.send_framework(&framework_id, SchedulerEvent::Update(forwarded));
        let _ = now;
    }

    /// An agent's link ended. The agent stays registered (its tasks keep running); it is no longer offered, and
    /// it becomes unreachable if it does not come back within the ping timeouts.
    pub fn agent_disconnected(&mut self, conn: ConnId) {
        let Some(id) = self.agent_conns.remove(&conn) else { return };
        let Some(a) = self.agents.get_mut(&id) else { return };
        if a.conn != Some(conn) {
            return;
        }
        a.conn = None;
        if a.state == AgentState::Active {
            a.state = AgentState::Disconnected;
        }
        tracing::info!(agent_id = %id, "agent disconnected");
        self.rescind_agent_offers(&id);
    }

    /// Sends pings and counts the ones not answered; declares agents unreachable after too many.
    pub(crate) fn ping_agents(&mut self, now: Now) {
        let timeout = self.config.agent_ping_timeout;
        let max = self.config.max_agent_ping_timeouts;
        let mut unreachable = Vec::new();
        let mut pings = Vec::new();
        for a in self.agents.values_mut() {
            if a.state == AgentState::Unreachable {
                continue;
            }
            if a.last_ping.is_some_and(|t| now.mono < t + timeout) {
                continue;
            }
            if a.awaiting_pong || a.conn.is_none() {
                a.missed_pings += 1;
            }
            if a.missed_pings >= max {
                unreachable.push(a.id.clone());
                continue;
            }
            a.last_ping = Some(now.mono);
            if let Some(c) = a.conn {
                a.awaiting_pong = true;
                pings.push(c);
            }
        }
        for c in pings {
            self.emit(Effect::ToAgent(c, AgentCommand::Ping));
        }
        for id in unreachable {
            self.mark_unreachable(&id, now);
        }
    }

    /// Mesos's `markUnreachable`: no more offers from the agent; each of its tasks is reported TASK_UNREACHABLE to
    /// partition-aware frameworks and TASK_LOST to the others; every framework gets a FAILURE event.
    pub(crate) fn mark_unreachable(&mut self, id: &str, now: Now) {
        let Some(a) = self.agents.get_mut(id) else { return };
        let missed = a.missed_pings;
        a.state = AgentState::Unreachable;
        a.unreachable_time = Some(now.wall);
        a.awaiting_pong = false;
        if let Some(c) = a.conn.take() {
            self.agent_conns.remove(&c);
            self.emit(Effect::CloseAgent(c));
        }
        tracing::warn!(agent_id = %id, missed_pings = missed, "agent is unreachable");
        self.operator(OperatorEvent::AgentRemoved { agent_id: id.to_string() });
        self.registry_unreachable(id, now);
        self.counters.agents_unreachable += 1;
        self.rescind_agent_offers(id);
        self.filters.remove_agent(id);
        let tasks: Vec<(String, String)> = self.agents[id].tasks.iter().cloned().collect();
        for (fid, tid) in tasks {
            let state = self.frameworks.get(&fid).and_then(|f| f.tasks.get(&tid)).map(|t| t.state);
            if state.is_none_or(|s| s.is_terminal()) {
                continue;
            }
            let mut status = self.for_framework(
                &fid,
                TaskStatus::from_master(
                    &tid,
                    id,
                    TaskState::Unreachable,
                    Reason::AgentRemoved,
                    format!("Agent {id} is unreachable: it missed {missed} pings"),
                    now.wall,
                ),
            );
            status.unreachable_time = Some(now.wall);
            // The task is not terminal for the books (it may come back), but its resources are no longer offered
            // along with the agent, and the framework's share no longer counts them.
            if let Some(t) = self.frameworks.get_mut(&fid).and_then(|f| f.tasks.get_mut(&tid)) {
                t.state = TaskState::Unreachable;
                t.statuses.push(status.clone());
            }
            self.operator(OperatorEvent::TaskUpdated {
                framework_id: fid.clone(),
                status: Box::new(status.clone()),
                state: TaskState::Unreachable,
            });
            self.release_unreachable(&fid, &tid);
            self.send_framework(&fid, SchedulerEvent::Update(status));
        }
        let conns: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
        for c in conns {
            self.emit(Effect::ToFramework(c, SchedulerEvent::Failure { agent_id: id.to_string() }));
        }
    }

    fn release_unreachable(&mut self, fid: &str, tid: &str) {
        let Some(f) = self.frameworks.get_mut(fid) else { return };
        let Some(t) = f.tasks.get_mut(tid) else { return };
        if t.resources_released {
            return;
        }
        t.resources_released = true;
        let (role, res, agent) = (t.role.clone(), t.info.resources.clone(), t.info.agent_id.clone());
        f.alloc_sub(&role, &res);
        if let Some(a) = self.agents.get_mut(&agent) {
            a.used.subtract(&res);
        }
    }
}
