//! Frameworks: subscription, disconnection, failover timeouts, and the scheduler calls.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use agora_proto::model::cluster::OperatorEvent;
use agora_proto::model::{FrameworkInfo, Reason, Resources, TaskInfo, TaskState, TaskStatus, refuse_seconds};

use super::{AgentCommand, AgentState, ConnId, Effect, Framework, Master, Now, SchedulerEvent, Task, views};

/// One LAUNCH operation of an ACCEPT call.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchOp {
    pub tasks: Vec<TaskInfo>,
}

/// A scheduler call (the domain form of `wire::Call`).
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Accept {
        offer_ids: Vec<String>,
        operations: Vec<LaunchOp>,
        refuse_seconds: Option<f64>,
    },
    Decline {
        offer_ids: Vec<String>,
        refuse_seconds: Option<f64>,
    },
    Revive {
        roles: Vec<String>,
    },
    Suppress {
        roles: Vec<String>,
    },
    Kill {
        task_id: String,
        agent_id: Option<String>,
        grace_period: Option<f64>,
    },
    Acknowledge {
        agent_id: String,
        task_id: String,
        uuid: Vec<u8>,
    },
    Reconcile {
        tasks: Vec<(String, Option<String>)>,
    },
    Teardown,
    /// Shut down an executor. Agora runs every task under a command executor whose id is the task's, so this kills
    /// that task (as Mesos's command executor does when shut down); an unknown executor is ignored.
    Shutdown {
        executor_id: String,
        agent_id: String,
    },
    /// Acknowledge an offer operation's status. Agora sends no acknowledgeable operation updates, so there is
    /// nothing to release: accepted and ignored.
    AcknowledgeOperationStatus {
        operation_id: String,
        agent_id: Option<String>,
        uuid: Vec<u8>,
    },
    /// Operation ids (with their agents, if known) to reconcile; none means all the master knows.
    ReconcileOperations {
        operations: Vec<(String, Option<String>)>,
    },
    /// A message for an executor. Command executors ignore framework messages, so it is dropped (Mesos's messages
    /// are unreliable by contract).
    Message {
        agent_id: String,
        executor_id: String,
        data: Vec<u8>,
    },
    /// Resource requests: ignored, as Mesos's default allocator ignores them.
    Request,
    /// Accept or decline inverse offers. None exist until maintenance does: accepted and ignored (Mesos ignores
    /// inverse offer ids it does not know).
    AnswerInverseOffers {
        inverse_offer_ids: Vec<String>,
    },
    /// Change the framework's info (Mesos's UPDATE_FRAMEWORK): name, roles, capabilities, failover timeout,
    /// hostname, web UI URL, labels, and the suppressed roles. `user`, `principal` and `checkpoint` are immutable.
    UpdateFramework {
        info: Box<FrameworkInfo>,
        suppressed_roles: Vec<String>,
    },
}

/// Why a call was refused outright (its effects, if any, arrive as events instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The master does not know the framework (Mesos: "Framework cannot be found").
    #[error("framework '{0}' cannot be found")]
    UnknownFramework(String),
    /// The master knows the framework but it has no subscription now.
    #[error("framework '{0}' is not subscribed")]
    NotSubscribed(String),
    #[error("stream id '{stream_id}' does not match framework '{framework_id}''s subscription")]
    WrongStream { framework_id: String, stream_id: String },
    #[error("{0}")]
    Invalid(String),
}

impl Master {
    /// A framework subscribes (or resubscribes with its id) on connection `conn`.
    pub fn subscribe(&mut self, conn: ConnId, mut info: FrameworkInfo, suppressed_roles: Vec<String>, now: Now) {
        let id = match info.id.clone() {
            Some(id) => id,
            None => self.new_framework_id(),
        };
        info.id = Some(id.clone());
        let span = tracing::info_span!("subscribe", framework_id = %id, name = %info.name);
        let _g = span.enter();
        if self.completed_frameworks.iter().any(|f| f.id == id) {
            // Mesos: a framework that was torn down may not come back under its id.
            tracing::warn!("refusing the subscription of a removed framework");
            self.out.push(Effect::ToFramework(
                conn,
                SchedulerEvent::Error { message: "Framework has been removed".into() },
            ));
            self.out.push(Effect::CloseFramework(conn));
            return;
        }
        let stream_id = uuid::Uuid::new_v4().to_string();

        if let Some(f) = self.frameworks.get_mut(&id) {
            // Resubscription: a failover of the scheduler, or the first subscription after this master learnt of
            // the framework from a re-registering agent. The old stream, if any, is told and closed.
            if let Some(old) = f.conn.take() {
                self.framework_conns.remove(&old);
                self.out
                    .push(Effect::ToFramework(old, SchedulerEvent::Error { message: "framework failed over".into() }));
                self.out.push(Effect::CloseFramework(old));
            }
            let old_roles: BTreeSet<String> = f.info.roles.iter().cloned().collect();
            let f = self.frameworks.get_mut(&id).expect("checked above");
            f.info = info.clone();
            f.conn = Some(conn);
            f.stream_id = stream_id.clone();
            f.reregistered_time = Some(now.wall);
            f.disconnected_at = None;
            f.unregistered_time = None;
            f.recovered = false;
            f.suppressed_roles = suppressed_roles.into_iter().collect();
            // Offers are never carried across a subscription (Mesos rescinds and regenerates them).
            let offer_ids: Vec<String> = f.offers.iter().cloned().collect();
            for o in offer_ids {
                self.remove_offer(&o);
            }
            if old_roles.iter().any(|r| !info.roles.contains(r)) {
                tracing::warn!("framework changed its roles on resubscription; tasks keep their original roles");
            }
            tracing::info!("framework resubscribed");
            let view = self.framework_view_of(&id).expect("updated above");
            self.operator(OperatorEvent::FrameworkUpdated(Box::new(view)));
        } else {
            self.frameworks.insert(
                id.clone(),
                Framework {
                    info: info.clone(),
                    id: id.clone(),
                    conn: Some(conn),
                    stream_id: stream_id.clone(),
                    registered_time: now.wall,
                    reregistered_time: None,
                    unregistered_time: None,
                    disconnected_at: None,
                    suppressed_roles: suppressed_roles.into_iter().collect(),
                    tasks: BTreeMap::new(),
                    completed_tasks: VecDeque::new(),
                    offers: BTreeSet::new(),
                    allocated: HashMap::new(),
                    recovered: false,
                },
            );
            tracing::info!("framework subscribed");
            let view = self.framework_view_of(&id).expect("inserted above");
            self.operator(OperatorEvent::FrameworkAdded(Box::new(view)));
        }
        self.framework_conns.insert(conn, id.clone());
        self.note_framework(&id, &info);
        self.out.push(Effect::ToFramework(
            conn,
            SchedulerEvent::Subscribed {
                framework_id: id,
                heartbeat_interval_seconds: self.config.heartbeat_interval.as_secs_f64(),
                master_info: self.info.clone(),
                stream_id,
            },
        ));
        self.want_allocation();
    }

    /// A framework's event stream ended (the scheduler went away).
    pub fn framework_disconnected(&mut self, conn: ConnId, now: Now) {
        let Some(id) = self.framework_conns.remove(&conn) else { return };
        let Some(f) = self.frameworks.get_mut(&id) else { return };
        if f.conn != Some(conn) {
            return;
        }
        f.conn = None;
        f.unregistered_time = Some(now.wall);
        f.disconnected_at = Some(now.mono);
        let failover = f.info.failover_timeout;
        tracing::info!(framework_id = %id, failover_timeout = failover, "framework disconnected");
        let offers: Vec<String> = f.offers.iter().cloned().collect();
        for o in offers {
            self.remove_offer(&o);
        }
        let view = self.framework_view_of(&id).expect("checked above");
        self.operator(OperatorEvent::FrameworkUpdated(Box::new(view)));
        self.want_allocation();
        if failover <= 0.0 {
            self.remove_framework(&id, now, "framework disconnected with failover_timeout 0");
        }
    }

    pub(crate) fn expire_frameworks(&mut self, now: Now) {
        let expired: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| {
                f.conn.is_none()
                    && f.disconnected_at.is_some_and(|t| {
                        now.mono >= t + Duration::try_from_secs_f64(f.info.failover_timeout).unwrap_or(Duration::MAX)
                    })
            })
            .map(|f| f.id.clone())
            .collect();
        for id in expired {
            self.remove_framework(&id, now, "framework did not resubscribe within its failover_timeout");
        }
    }

    /// Tears a framework down: its tasks are killed, its offers rescinded, and it moves to the completed list.
    pub(crate) fn remove_framework(&mut self, id: &str, now: Now, why: &str) {
        if !self.frameworks.contains_key(id) {
            return;
        }
        tracing::info!(framework_id = %id, reason = why, "removing framework");
        self.forget_framework(id);
        let Some(f) = self.frameworks.get(id) else { return };
        let agents: BTreeSet<String> = f.tasks.values().map(|t| t.info.agent_id.clone()).collect();
        let offers: Vec<String> = f.offers.iter().cloned().collect();
        let tasks: Vec<String> = f.tasks.keys().cloned().collect();
        if let Some(conn) = f.conn {
            self.framework_conns.remove(&conn);
            self.out.push(Effect::ToFramework(
                conn,
                SchedulerEvent::Error { message: format!("framework removed: {why}") },
            ));
            self.out.push(Effect::CloseFramework(conn));
        }
        for o in offers {
            self.remove_offer(&o);
        }
        for agent_id in agents {
            self.send_agent(&agent_id, AgentCommand::ShutdownFramework { framework_id: id.to_string() });
        }
        for task_id in tasks {
            let task = &self.frameworks[id].tasks[&task_id];
            if task.state.is_terminal() {
                // Finished (but not yet acknowledged) tasks keep the state they ended in.
                self.complete_task(id, &task_id);
                continue;
            }
            let agent_id = task.info.agent_id.clone();
            let status = agora_proto::model::TaskStatus::from_master(
                &task_id,
                &agent_id,
                TaskState::Killed,
                Reason::FrameworkRemoved,
                why,
                now.wall,
            );
            self.set_task_state(id, &task_id, &status, TaskState::Killed);
            self.complete_task(id, &task_id);
        }
        self.filters.remove_framework(id);
        if let Some(mut f) = self.frameworks.remove(id) {
            self.operator(OperatorEvent::FrameworkRemoved(Box::new(f.info.clone())));
            f.conn = None;
            f.unregistered_time.get_or_insert(now.wall);
            self.completed_frameworks.push_back(f);
            while self.completed_frameworks.len() > self.config.max_completed_frameworks {
                self.completed_frameworks.pop_front();
            }
        }
        self.want_allocation();
    }

    /// Checks that `framework_id` is subscribed with `stream_id`.
    fn check_stream(&self, framework_id: &str, stream_id: &str) -> Result<(), CallError> {
        let f =
            self.frameworks.get(framework_id).ok_or_else(|| CallError::UnknownFramework(framework_id.to_string()))?;
        if f.conn.is_none() {
            return Err(CallError::NotSubscribed(framework_id.to_string()));
        }
        if f.stream_id != stream_id {
            return Err(CallError::WrongStream { framework_id: framework_id.into(), stream_id: stream_id.into() });
        }
        Ok(())
    }

    /// A scheduler call. `Err` means refused outright; everything else is answered on the event stream.
    pub fn call(&mut self, framework_id: &str, stream_id: &str, call: Call, now: Now) -> Result<(), CallError> {
        self.check_stream(framework_id, stream_id)?;
        let span = tracing::debug_span!("call", framework_id = %framework_id);
        let _g = span.enter();
        match call {
            Call::Accept { offer_ids, operations, refuse_seconds } => {
                self.accept(framework_id, offer_ids, operations, refuse_seconds, now);
            }
            Call::Decline { offer_ids, refuse_seconds } => {
                self.counters.offers_declined += offer_ids.len() as u64;
                self.accept(framework_id, offer_ids, vec![], refuse_seconds, now);
            }
            Call::Revive { roles } => {
                let f = self.frameworks.get_mut(framework_id).expect("checked by check_stream");
                let roles = if roles.is_empty() { f.info.roles.clone() } else { roles };
                for r in &roles {
                    f.suppressed_roles.remove(r);
                }
                self.filters.clear(framework_id, Some(&roles));
                self.want_allocation();
            }
            Call::Suppress { roles } => {
                let f = self.frameworks.get_mut(framework_id).expect("checked by check_stream");
                let roles = if roles.is_empty() { f.info.roles.clone() } else { roles };
                f.suppressed_roles.extend(roles);
            }
            Call::Kill { task_id, agent_id, grace_period } => {
                self.kill(framework_id, &task_id, agent_id, grace_period, now)
            }
            Call::Acknowledge { agent_id, task_id, uuid } => self.acknowledge(framework_id, &agent_id, &task_id, uuid),
            Call::Reconcile { tasks } => self.reconcile(framework_id, tasks, now),
            Call::Teardown => self.remove_framework(framework_id, now, "framework asked for TEARDOWN"),
            Call::Shutdown { executor_id, agent_id } => self.shutdown_executor(framework_id, &executor_id, &agent_id),
            Call::AcknowledgeOperationStatus { operation_id, .. } => {
                tracing::debug!(operation_id, "acknowledgement of an operation status the master never sent");
            }
            Call::ReconcileOperations { operations } => self.reconcile_operations(framework_id, operations),
            Call::Message { agent_id, executor_id, data } => {
                tracing::debug!(agent_id, executor_id, bytes = data.len(), "dropping a message for a command executor");
            }
            Call::Request => tracing::debug!("ignoring a resource request (the allocator does not take requests)"),
            Call::AnswerInverseOffers { inverse_offer_ids } => {
                tracing::debug!(?inverse_offer_ids, "ignoring an answer to inverse offers that do not exist");
            }
            Call::UpdateFramework { info, suppressed_roles } => {
                return self.update_framework(framework_id, *info, suppressed_roles, now);
            }
        }
        Ok(())
    }

    fn accept(
        &mut self,
        framework_id: &str,
        offer_ids: Vec<String>,
        operations: Vec<LaunchOp>,
        refuse: Option<f64>,
        now: Now,
    ) {
        let tasks: Vec<TaskInfo> = operations.into_iter().flat_map(|op| op.tasks).collect();

        // Validate the offers first: they must exist, belong to this framework, and share one agent and role.
        let mut problem: Option<String> = None;
        let mut agent_id: Option<String> = None;
        let mut role: Option<String> = None;
        if offer_ids.is_empty() {
            problem = Some("no offers named".into());
        }
        let mut seen = BTreeSet::new();
        for id in &offer_ids {
            if !seen.insert(id) {
                problem.get_or_insert_with(|| format!("offer '{id}' is named twice"));
                continue;
            }
            match self.offers.get(id) {
                None => {
                    problem.get_or_insert_with(|| format!("offer '{id}' is no longer valid"));
                }
                Some(o) if o.offer.framework_id != framework_id => {
                    problem.get_or_insert_with(|| format!("offer '{id}' belongs to another framework"));
                }
                Some(o) => {
                    if agent_id.get_or_insert_with(|| o.offer.agent_id.clone()) != &o.offer.agent_id {
                        problem.get_or_insert_with(|| "aggregated offers must belong to one single agent".into());
                    }
                    if role.get_or_insert_with(|| o.offer.role.clone()) != &o.offer.role {
                        problem.get_or_insert_with(|| "aggregated offers must belong to one single role".into());
                    }
                }
            }
        }
        if let Some(problem) = problem {
            // Offers that do belong to this framework go back to the pool (never leaked), unfiltered.
            for id in &offer_ids {
                if self.offers.get(id).is_some_and(|o| o.offer.framework_id == framework_id) {
                    self.remove_offer(id);
                }
            }
            for t in tasks {
                let status = self.for_framework(
                    framework_id,
                    TaskStatus::from_master(
                        &t.task_id,
                        &t.agent_id,
                        TaskState::Dropped,
                        Reason::InvalidOffers,
                        format!("Task launched with invalid offers: {problem}"),
                        now.wall,
                    ),
                );
                self.counters.tasks_invalid += 1;
                self.send_framework(framework_id, SchedulerEvent::Update(status));
            }
            self.want_allocation();
            return;
        }
        let (agent_id, role) = (agent_id.expect("offers validated"), role.expect("offers validated"));

        // Pool the offered resources; launches are carved out of it in order.
        let mut pool = Resources::new();
        for id in &offer_ids {
            if let Some(o) = self.remove_offer(id) {
                pool.add(&o.resources);
            }
        }
        if !tasks.is_empty() {
            self.counters.offers_accepted += offer_ids.len() as u64;
        }
        let mut batch_ids = BTreeSet::new();
        for task in tasks {
            let span = tracing::info_span!("launch", framework_id = %framework_id, task_id = %task.task_id, agent_id = %agent_id);
            let _g = span.enter();
            if let Err(message) = self.validate_task(framework_id, &task, &agent_id, &role, &pool, &batch_ids) {
                tracing::warn!(%message, "refusing task");
                self.counters.tasks_invalid += 1;
                let status = agora_proto::model::TaskStatus::from_master(
                    &task.task_id,
                    &task.agent_id,
                    TaskState::Error,
                    Reason::TaskInvalid,
                    message,
                    now.wall,
                );
                self.send_framework(framework_id, SchedulerEvent::Update(status));
                continue;
            }
            batch_ids.insert(task.task_id.clone());
            pool.subtract(&task.resources);
            self.launch(framework_id, &agent_id, &role, task, now);
        }

        // What was not used returns to the pool, filtered for refuse_seconds (Mesos: at least one allocation
        // interval).
        let refuse = refuse_seconds(refuse);
        if refuse > 0.0 && !pool.is_empty() {
            let d = Duration::from_secs_f64(refuse).max(self.config.allocation_interval);
            self.filters.add(framework_id, &role, &agent_id, pool, now.mono + d);
        }
        self.want_allocation();
    }

    fn validate_task(
        &self,
        framework_id: &str,
        task: &TaskInfo,
        agent_id: &str,
        role: &str,
        pool: &Resources,
        batch_ids: &BTreeSet<String>,
    ) -> Result<(), String> {
        if task.task_id.is_empty() {
            return Err("Task has an empty task_id".into());
        }
        if task.task_id.contains('/') || task.task_id.chars().any(char::is_control) {
            return Err(format!("Task id '{}' contains '/' or control characters", task.task_id));
        }
        let f = &self.frameworks[framework_id];
        if f.tasks.contains_key(&task.task_id) || batch_ids.contains(&task.task_id) {
            return Err(format!("Task has duplicate ID: {}", task.task_id));
        }
        if task.agent_id != agent_id {
            return Err(format!("Task uses agent '{}' but its offers are on agent '{}'", task.agent_id, agent_id));
        }
        // Agents key their tasks by framework id and task id, so another framework's task of the same id on the
        // agent is no conflict.
        match self.agents.get(agent_id) {
            Some(a) if a.state == AgentState::Active => {}
            Some(_) => return Err(format!("Agent '{agent_id}' is not connected")),
            None => return Err(format!("Agent '{agent_id}' is unknown")),
        }
        // Only a task in an image may leave its command to the image's Entrypoint/Cmd (Mesos's docker/runtime
        // rules: `shell: false` and no value).
        let in_image = task.container.as_ref().is_some_and(|c| c.image.is_some());
        match &task.command {
            Some(c) if !c.value.is_empty() || (in_image && !c.shell) => {}
            _ => return Err("Task has no command to run".into()),
        }
        if let Some(check) = &task.health_check {
            check.validate()?;
        }
        if let Some(c) = &task.container
            && let (Some(rootfs), Some(image)) = (&c.rootfs, &c.image)
        {
            return Err(format!(
                "Task's container sets both rootfs '{rootfs}' and image '{image}'; a container has one root filesystem"
            ));
        }
        self.validate_networks(task, agent_id)?;
        if task.resources.is_empty() {
            return Err("Task uses no resources".into());
        }
        if let Some(r) = task.resources.iter().find(|r| !r.is_unreserved() && r.role != role) {
            return Err(format!("Task uses resources reserved for role '{}' in an offer for role '{role}'", r.role));
        }
        if !pool.contains(&task.resources) {
            let mut missing = task.resources.clone();
            missing.subtract(pool);
            return Err(format!(
                "Task uses more resources {} than available {} in its offers (short by {missing})",
                task.resources, pool
            ));
        }
        Ok(())
    }

    fn launch(&mut self, framework_id: &str, agent_id: &str, role: &str, task: TaskInfo, now: Now) {
        let status = agora_proto::model::TaskStatus {
            task_id: task.task_id.clone(),
            state: TaskState::Staging,
            reason: None,
            source: agora_proto::model::Source::Master,
            message: String::new(),
            uuid: None,
            timestamp: now.wall,
            healthy: None,
            agent_id: agent_id.to_string(),
            unreachable_time: None,
            container_status: None,
        };
        let f = self.frameworks.get_mut(framework_id).expect("caller checked");
        f.alloc_add(role, &task.resources);
        let framework = f.info.clone();
        f.tasks.insert(
            task.task_id.clone(),
            Task {
                info: task.clone(),
                framework_id: framework_id.to_string(),
                role: role.to_string(),
                state: TaskState::Staging,
                statuses: vec![status],
                resources_released: false,
            },
        );
        let a = self.agents.get_mut(agent_id).expect("caller checked");
        a.used.add(&task.resources);
        a.tasks.insert((framework_id.to_string(), task.task_id.clone()));
        let view = views::task_view(&self.frameworks[framework_id].tasks[&task.task_id]);
        self.operator(OperatorEvent::TaskAdded(Box::new(view)));
        tracing::info!("launching task");
        self.send_agent(agent_id, AgentCommand::RunTask { framework: Box::new(framework), task: Box::new(task) });
    }

    fn kill(&mut self, framework_id: &str, task_id: &str, agent_id: Option<String>, grace: Option<f64>, now: Now) {
        let task = self.frameworks[framework_id].tasks.get(task_id).map(|t| (t.info.agent_id.clone(), t.state));
        match task {
            Some((agent, state)) if !state.is_terminal() => {
                let sent = self.send_agent(
                    &agent,
                    AgentCommand::KillTask {
                        framework_id: framework_id.to_string(),
                        task_id: task_id.to_string(),
                        grace_period: grace,
                    },
                );
                if !sent {
                    tracing::warn!(task_id, agent_id = %agent, "cannot kill task now: its agent is not connected");
                }
            }
            Some(_) => {}
            None => {
                // Unknown task: Mesos answers with explicit reconciliation for it.
                self.reconcile(framework_id, vec![(task_id.to_string(), agent_id)], now);
            }
        }
    }

    /// SHUTDOWN of a command executor: kills its task (the executor's id is the task's) on that agent.
    fn shutdown_executor(&mut self, framework_id: &str, executor_id: &str, agent_id: &str) {
        let task = self.frameworks[framework_id].tasks.get(executor_id);
        match task {
            Some(t) if t.info.agent_id == agent_id && !t.state.is_terminal() => {
                let grace = t.info.kill_grace_period;
                let cmd = AgentCommand::KillTask {
                    framework_id: framework_id.to_string(),
                    task_id: executor_id.to_string(),
                    grace_period: grace,
                };
                if !self.send_agent(agent_id, cmd) {
                    tracing::warn!(
                        executor_id,
                        agent_id,
                        "cannot shut the executor down now: its agent is not connected"
                    );
                }
            }
            _ => tracing::info!(executor_id, agent_id, "SHUTDOWN of an executor that does not run; ignored"),
        }
    }

    fn acknowledge(&mut self, framework_id: &str, agent_id: &str, task_id: &str, uuid: Vec<u8>) {
        let terminal_acked = self.frameworks[framework_id].tasks.get(task_id).is_some_and(|t| {
            t.state.is_terminal()
                && t.statuses.iter().any(|s| s.uuid.as_deref() == Some(&uuid[..]) && s.state.is_terminal())
        });
        self.send_agent(
            agent_id,
            AgentCommand::Acknowledge { framework_id: framework_id.to_string(), task_id: task_id.to_string(), uuid },
        );
        if terminal_acked {
            self.complete_task(framework_id, task_id);
        }
    }
}
