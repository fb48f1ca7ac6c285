//! `/master/state` in Mesos's JSON shape, built from the core's registries.

use serde_json::{Value, json};

use agora_proto::model::{HealthCheck, HealthCheckType, IpProtocol, Resources, TaskState};

use super::{Agent, AgentState, Framework, Master, Now, Task};

fn resources_json(r: &Resources) -> Value {
    Value::Object(r.flat_json())
}

fn task_json(t: &Task) -> Value {
    let statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|s| {
            let mut v = json!({"state": s.state.name(), "timestamp": s.timestamp});
            if let Some(h) = s.healthy {
                v["healthy"] = json!(h);
            }
            if let Some(c) = &s.container_status {
                v["container_status"] = c.mesos_json();
            }
            v
        })
        .collect();
    let last = t.statuses.last();
    let mut v = json!({
        "id": t.info.task_id,
        "name": t.info.name,
        "framework_id": t.framework_id,
        "executor_id": "",
        "slave_id": t.info.agent_id,
        "state": t.state.name(),
        "resources": resources_json(&t.info.resources),
        "role": t.role,
        "statuses": statuses,
        "labels": t.info.labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
    });
    if let Some(s) = last {
        if let Some(r) = s.reason {
            v["reason"] = json!(r.name());
        }
        if !s.message.is_empty() {
            v["message"] = json!(s.message);
        }
    }
    if let Some(c) = &t.info.command {
        v["command"] = json!({"shell": c.shell, "value": c.value});
    }
    if let Some(h) = &t.info.health_check {
        v["health_check"] = health_check_json(h);
    }
    if let Some(c) = t.info.container.as_ref().filter(|c| !c.network_infos.is_empty()) {
        let networks: Vec<Value> = c.network_infos.iter().map(|n| n.mesos_json()).collect();
        v["container"] = json!({"type": "MESOS", "network_infos": networks});
    }
    v
}

/// A task's `health_check` as Mesos's JSON renders the `HealthCheck` message.
fn health_check_json(h: &HealthCheck) -> Value {
    let mut v = json!({
        "type": match h.kind {
            HealthCheckType::Command => "COMMAND",
            HealthCheckType::Http => "HTTP",
            HealthCheckType::Tcp => "TCP",
        },
        "delay_seconds": h.delay_seconds,
        "interval_seconds": h.interval_seconds,
        "timeout_seconds": h.timeout_seconds,
        "consecutive_failures": h.consecutive_failures,
        "grace_period_seconds": h.grace_period_seconds,
    });
    match h.kind {
        HealthCheckType::Http => {
            let mut http = json!({"port": h.port.unwrap_or_default()});
            if let Some(p) = &h.path {
                http["path"] = json!(p);
            }
            if let Some(s) = &h.scheme {
                http["scheme"] = json!(s);
            }
            if !h.statuses.is_empty() {
                http["statuses"] = json!(h.statuses);
            }
            if h.ip_protocol == IpProtocol::V6 {
                http["protocol"] = json!("IPv6");
            }
            v["http"] = http;
        }
        HealthCheckType::Tcp => {
            v["tcp"] = json!({"port": h.port.unwrap_or_default()});
            if h.ip_protocol == IpProtocol::V6 {
                v["tcp"]["protocol"] = json!("IPv6");
            }
        }
        HealthCheckType::Command => {
            if let Some(c) = &h.command {
                v["command"] = json!({"shell": c.shell, "value": c.value});
            }
        }
    }
    v
}

fn agent_json(a: &Agent) -> Value {
    let mut v = json!({
        "id": a.id,
        "hostname": a.info.hostname,
        "port": a.info.port,
        "pid": format!("slave(1)@{}:{}", a.info.ip, a.info.port),
        "attributes": Value::Object(a.info.attributes.flat_json()),
        "registered_time": a.registered_time,
        "resources": resources_json(&a.info.resources),
        "used_resources": resources_json(&a.used),
        "offered_resources": resources_json(&a.offered),
        "unreserved_resources": resources_json(&a.info.resources.reserved_for(agora_proto::model::UNRESERVED)),
        "active": a.state == AgentState::Active,
        "connected": a.conn.is_some(),
        "deactivated": false,
        "version": agora_proto::model::VERSION,
    });
    if let Some(t) = a.reregistered_time {
        v["reregistered_time"] = json!(t);
    }
    v
}

fn framework_json(f: &Framework) -> Value {
    let mut used = Resources::new();
    let mut tasks = Vec::new();
    let mut unreachable = Vec::new();
    for t in f.tasks.values() {
        if t.state == TaskState::Unreachable {
            unreachable.push(task_json(t));
            continue;
        }
        if !t.resources_released {
            used.add(&t.info.resources);
        }
        tasks.push(task_json(t));
    }
    let mut v = json!({
        "id": f.id,
        "name": f.info.name,
        "user": f.info.user,
        "hostname": f.info.hostname.clone().unwrap_or_default(),
        "webui_url": f.info.webui_url.clone().unwrap_or_default(),
        "principal": f.info.principal,
        "role": f.info.roles.first().cloned().unwrap_or_else(|| "*".into()),
        "roles": f.info.roles,
        "failover_timeout": f.info.failover_timeout,
        "checkpoint": f.info.checkpoint,
        "capabilities": f.info.capabilities,
        "active": f.active(),
        "connected": f.active(),
        "recovered": f.recovered,
        "registered_time": f.registered_time,
        "suppressed_roles": f.suppressed_roles,
        "tasks": tasks,
        "unreachable_tasks": unreachable,
        "completed_tasks": f.completed_tasks.iter().map(task_json).collect::<Vec<_>>(),
        "executors": [],
    });
    v["used_resources"] = resources_json(&used);
    if let Some(t) = f.reregistered_time {
        v["reregistered_time"] = json!(t);
    }
    if let Some(t) = f.unregistered_time {
        v["unregistered_time"] = json!(t);
    }
    v
}

impl Master {
    /// The whole of `/master/state`.
    pub fn state_json(&self, now: Now, flags: Value) -> Value {
        let leader = format!("master@{}:{}", self.info.ip, self.info.port);
        let mut frameworks: Vec<Value> = Vec::new();
        for f in self.frameworks.values() {
            let mut v = framework_json(f);
            let mut offered = Resources::new();
            let mut offers = Vec::new();
            for id in &f.offers {
                if let Some(o) = self.offers.get(id) {
                    offered.add(&o.offer.resources);
                    offers.push(json!({
                        "id": o.offer.id,
                        "framework_id": o.offer.framework_id,
                        "slave_id": o.offer.agent_id,
                        "resources": resources_json(&o.offer.resources),
                    }));
                }
            }
            v["offered_resources"] = resources_json(&offered);
            v["offers"] = json!(offers);
            frameworks.push(v);
        }
        let activated = self.agents.values().filter(|a| a.state == AgentState::Active).count();
        let unreachable = self.agents.values().filter(|a| a.state == AgentState::Unreachable).count();
        json!({
            "version": agora_proto::model::VERSION,
            "id": self.info.id,
            "pid": leader,
            "hostname": self.info.hostname,
            "leader": leader,
            "leader_info": {
                "id": self.info.id,
                "hostname": self.info.hostname,
                "port": self.info.port,
                "address": {"hostname": self.info.hostname, "ip": self.info.ip, "port": self.info.port},
                "version": self.info.version,
            },
            "start_time": self.start_time,
            "elected_time": self.start_time,
            "uptime_secs": now.wall - self.start_time,
            "activated_slaves": activated,
            "deactivated_slaves": 0,
            "unreachable_slaves": unreachable,
            "flags": flags,
            "slaves": self
                .agents
                .values()
                .filter(|a| a.state != AgentState::Unreachable)
                .map(|a| {
                    let mut v = agent_json(a);
                    // Agora's addition: the agent's subnet of the cluster's container network.
                    if let Some(lease) = self.registry.subnets.get(&a.id) {
                        v["network"] = json!({"subnet": lease.subnet.to_string(), "ip": lease.ip});
                    }
                    v
                })
                .collect::<Vec<_>>(),
            "recovered_slaves": [],
            "frameworks": frameworks,
            "completed_frameworks": self.completed_frameworks.iter().map(framework_json).collect::<Vec<_>>(),
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        })
    }
}
