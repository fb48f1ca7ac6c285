//! App health checks: Marathon's `healthChecks` definition (`healthCheck.raml`) with its defaults and validation,
//! its translation into the Mesos `HealthCheck` a task carries (every protocol Marathon accepts runs on the agent,
//! beside the task), and the per-instance results (`healthCheckResults`) kept from the agents' `healthy` reports.

use agora_proto::model::{CommandInfo, HealthCheck, HealthCheckType, IpProtocol};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::{AppDefinition, Errors};
use crate::time::{Millis, format_iso};

/// `protocol`, as Marathon spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    Http,
    Https,
    Tcp,
    Command,
    MesosHttp,
    MesosHttps,
    MesosTcp,
}

impl Protocol {
    const ALL: &'static str = "HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP";

    fn parse(s: &str) -> Option<Protocol> {
        Some(match s {
            "HTTP" => Protocol::Http,
            "HTTPS" => Protocol::Https,
            "TCP" => Protocol::Tcp,
            "COMMAND" => Protocol::Command,
            "MESOS_HTTP" => Protocol::MesosHttp,
            "MESOS_HTTPS" => Protocol::MesosHttps,
            "MESOS_TCP" => Protocol::MesosTcp,
            _ => return None,
        })
    }

    fn http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https | Protocol::MesosHttp | Protocol::MesosHttps)
    }

    /// Marathon-level checks (HTTP, HTTPS, TCP), which Marathon itself would run; here they run on the agent too.
    fn marathon_level(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https | Protocol::Tcp)
    }
}

/// `command` of a COMMAND check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub value: String,
}

/// One entry of `healthChecks`, every default filled in, as `GET /v2/apps/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppHealthCheck {
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    pub grace_period_seconds: u64,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
    pub max_consecutive_failures: u32,
    pub delay_seconds: u64,
    /// HTTP and HTTPS only: a 1xx answer is ignored (the check keeps its state) instead of failing the check; the
    /// agent honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_http1xx: Option<bool>,
    /// `IPv4` (127.0.0.1) or `IPv6` (::1): the address the agent checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol: Option<String>,
}

impl AppHealthCheck {
    fn with_defaults(protocol: Protocol) -> AppHealthCheck {
        AppHealthCheck {
            protocol,
            path: protocol.http().then(|| "/".to_string()),
            port_index: None,
            port: None,
            command: None,
            grace_period_seconds: 300,
            interval_seconds: 60,
            timeout_seconds: 20,
            max_consecutive_failures: 3,
            delay_seconds: 15,
            ignore_http1xx: matches!(protocol, Protocol::Http | Protocol::Https).then_some(false),
            ip_protocol: (protocol != Protocol::Command).then(|| "IPv4".to_string()),
        }
    }

    /// The Mesos check for an instance with these host ports (`portIndex` resolved). Marathon-level checks never
    /// kill with `maxConsecutiveFailures` 0, Mesos checks kill at the first failure then, as in Marathon.
    pub fn to_mesos(&self, host_ports: &[u32]) -> HealthCheck {
        let port = self.port.or_else(|| self.port_index.and_then(|i| host_ports.get(i as usize).copied()));
        let (kind, scheme) = match self.protocol {
            Protocol::Http | Protocol::MesosHttp => (HealthCheckType::Http, Some("http")),
            Protocol::Https | Protocol::MesosHttps => (HealthCheckType::Http, Some("https")),
            Protocol::Tcp | Protocol::MesosTcp => (HealthCheckType::Tcp, None),
            Protocol::Command => (HealthCheckType::Command, None),
        };
        let consecutive_failures = match self.max_consecutive_failures {
            0 if self.protocol.marathon_level() => u32::MAX,
            n => n,
        };
        HealthCheck {
            kind,
            port: (kind != HealthCheckType::Command).then_some(port).flatten(),
            path: (kind == HealthCheckType::Http).then(|| self.path.clone().unwrap_or_else(|| "/".into())),
            scheme: scheme.map(String::from),
            statuses: vec![],
            ip_protocol: match self.ip_protocol.as_deref() {
                Some("IPv6") => IpProtocol::V6,
                _ => IpProtocol::V4,
            },
            ignore_http1xx: kind == HealthCheckType::Http && self.ignore_http1xx == Some(true),
            command: self.command.as_ref().map(|c| CommandInfo::shell(c.value.clone())),
            delay_seconds: self.delay_seconds as f64,
            interval_seconds: self.interval_seconds as f64,
            timeout_seconds: self.timeout_seconds as f64,
            consecutive_failures,
            grace_period_seconds: self.grace_period_seconds as f64,
        }
    }
}

fn seconds(v: &Value, path: &str, min: u64, errs: &mut Errors) -> Option<u64> {
    match crate::app::whole_u64(v) {
        Some(n) if n >= min => Some(n),
        Some(n) => {
            errs.bad(path, format!("got {n}, expected {min} or more"));
            None
        }
        None if v.is_i64() || v.is_f64() => {
            errs.bad(path, format!("got {v}, expected a whole number of {min} or more"));
            None
        }
        None => {
            errs.ty(path, "jsnumber");
            None
        }
    }
}

/// Parses `healthChecks` (at `path`); problems go to `errs` with their JSON paths.
pub(crate) fn parse(v: &Value, path: &str, errs: &mut Errors) -> Vec<AppHealthCheck> {
    let mut out = Vec::new();
    for (at, m) in errs.objects(v, path) {
        let protocol = match m.get("protocol") {
            None | Some(Value::Null) => Protocol::Http,
            Some(Value::String(s)) => match Protocol::parse(s) {
                Some(p) => p,
                None => {
                    errs.bad(format!("{at}/protocol"), format!("'{s}' is not one of {}", Protocol::ALL));
                    continue;
                }
            },
            Some(_) => {
                errs.ty(format!("{at}/protocol"), "jsstring");
                continue;
            }
        };
        let mut hc = AppHealthCheck::with_defaults(protocol);
        for (k, val) in m {
            let p = format!("{at}/{k}");
            if val.is_null() {
                continue;
            }
            match k.as_str() {
                "protocol" => {}
                "path" if protocol.http() => match val.as_str() {
                    Some(s) if s.starts_with('/') => hc.path = Some(s.to_string()),
                    Some(_) => errs.bad(&p, "must start with /"),
                    None => errs.ty(&p, "jsstring"),
                },
                "portIndex" => match crate::app::whole_u64(val) {
                    Some(n) => hc.port_index = Some(n.min(u64::from(u32::MAX)) as u32),
                    None => errs.bad(&p, "must be a non-negative index into the app's ports"),
                },
                "port" => match crate::app::whole_u64(val) {
                    Some(n) if (1..=65535).contains(&n) => hc.port = Some(n as u32),
                    _ => errs.bad(&p, "must be a port number between 1 and 65535"),
                },
                "command" if protocol == Protocol::Command => {
                    let value = match val {
                        Value::String(s) => Some(s.clone()),
                        Value::Object(o) => o.get("value").and_then(Value::as_str).map(String::from),
                        _ => None,
                    };
                    match value {
                        Some(v) if !v.trim().is_empty() => hc.command = Some(CommandCheck { value: v }),
                        _ => errs.bad(&p, "must be {\"value\": \"<a non-empty shell command>\"}"),
                    }
                }
                "gracePeriodSeconds" => {
                    hc.grace_period_seconds = seconds(val, &p, 0, errs).unwrap_or(hc.grace_period_seconds)
                }
                "intervalSeconds" => hc.interval_seconds = seconds(val, &p, 1, errs).unwrap_or(hc.interval_seconds),
                "timeoutSeconds" => hc.timeout_seconds = seconds(val, &p, 1, errs).unwrap_or(hc.timeout_seconds),
                "delaySeconds" => hc.delay_seconds = seconds(val, &p, 0, errs).unwrap_or(hc.delay_seconds),
                "maxConsecutiveFailures" => {
                    if let Some(n) = seconds(val, &p, 0, errs) {
                        hc.max_consecutive_failures = n.min(u64::from(u32::MAX)) as u32;
                    }
                }
                "ignoreHttp1xx" if matches!(protocol, Protocol::Http | Protocol::Https) => match val.as_bool() {
                    Some(b) => hc.ignore_http1xx = Some(b),
                    None => errs.ty(&p, "jsboolean"),
                },
                "ipProtocol" if protocol != Protocol::Command => match val.as_str() {
                    Some(v @ ("IPv4" | "IPv6")) => hc.ip_protocol = Some(v.to_string()),
                    _ => errs.bad(&p, "must be one of IPv4, IPv6"),
                },
                // Marathon accepts these on every protocol and drops them where they mean nothing; their
                // no-op values are taken here too (forms and old GET output send them), any other is refused.
                "ignoreHttp1xx" if val.as_bool() == Some(false) => {}
                "ipProtocol" if val.as_str() == Some("IPv4") => {}
                _ => errs.bad(&p, format!("'{k}' is not a known field for a {} health check", protocol_name(protocol))),
            }
        }
        if protocol == Protocol::Command {
            if hc.command.is_none() && !m.contains_key("command") {
                errs.bad(format!("{at}/command"), "is required for a COMMAND health check");
            }
        } else {
            if hc.port.is_some() && hc.port_index.is_some() {
                errs.bad(&at, "Health check port indices and values are exclusive.");
            }
            if hc.port.is_none() && hc.port_index.is_none() {
                hc.port_index = Some(0);
            }
        }
        out.push(hc);
    }
    out
}

fn protocol_name(p: Protocol) -> String {
    serde_json::to_value(p).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// What needs the whole app: port indices address a port, and at most one check (a task carries one).
pub(crate) fn validate(app: &AppDefinition, errs: &mut Errors) {
    if app.health_checks.len() > 1 {
        errs.bad(
            "/healthChecks",
            "AppDefinition can contain at most one health check: checks run on the agent as Mesos health checks, \
             and a task carries one",
        );
    }
    for (i, hc) in app.health_checks.iter().enumerate() {
        if hc.port_index.is_some_and(|idx| idx as usize >= app.port_definitions.len()) {
            errs.bad(
                format!("/healthChecks({i})"),
                "Health check port indices must address an element of the ports array or container port mappings.",
            );
        }
    }
}

/// The latest health of an instance, from its agent's reports (`healthCheckResults`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<Millis>,
    pub last_success: Option<Millis>,
    pub last_failure: Option<Millis>,
    pub last_failure_cause: Option<String>,
}

impl HealthRecord {
    /// Records a report; `cause` is the agent's message for a failure.
    pub fn record(&mut self, healthy: bool, cause: &str, now: Millis) {
        self.alive = healthy;
        if healthy {
            self.consecutive_failures = 0;
            self.first_success.get_or_insert(now);
            self.last_success = Some(now);
        } else {
            self.consecutive_failures += 1;
            self.last_failure = Some(now);
            self.last_failure_cause = Some(cause.to_string());
        }
    }

    /// One `healthCheckResults` entry, in Marathon's shape.
    pub fn json(&self, instance_id: &str) -> Value {
        let at = |t: Option<Millis>| t.map(format_iso);
        json!({
            "alive": self.alive,
            "consecutiveFailures": self.consecutive_failures,
            "firstSuccess": at(self.first_success),
            "lastSuccess": at(self.last_success),
            "lastFailure": at(self.last_failure),
            "lastFailureCause": self.last_failure_cause,
            "instanceId": instance_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{Invalid, parse_app};

    fn app(checks: Value) -> Result<AppDefinition, Invalid> {
        parse_app(&json!({"id": "web", "cmd": "httpd", "healthChecks": checks}), None, None)
    }

    fn errors(r: Result<AppDefinition, Invalid>) -> Vec<(String, Vec<String>)> {
        r.unwrap_err().details().iter().map(|d| (d.path.clone(), d.errors.clone())).collect()
    }

    #[test]
    fn defaults_are_marathons() {
        let a = app(json!([{"protocol": "MESOS_HTTP"}])).unwrap();
        let out = serde_json::to_value(&a).unwrap();
        assert_eq!(
            out["healthChecks"],
            json!([{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 300,
                    "intervalSeconds": 60, "timeoutSeconds": 20, "maxConsecutiveFailures": 3, "delaySeconds": 15,
                    "ipProtocol": "IPv4"}])
        );
        let a = app(json!([{}])).unwrap();
        assert_eq!(a.health_checks[0].protocol, Protocol::Http, "HTTP is the default protocol");
        assert_eq!(a.health_checks[0].ignore_http1xx, Some(false));
        let a = app(json!([{"protocol": "COMMAND", "command": {"value": "true"}}])).unwrap();
        let out = serde_json::to_value(&a.health_checks[0]).unwrap();
        assert_eq!(out["command"], json!({"value": "true"}));
        assert!(out.get("portIndex").is_none() && out.get("path").is_none() && out.get("ipProtocol").is_none());
        let none = parse_app(&json!({"id": "web", "cmd": "x"}), None, None).unwrap();
        assert!(serde_json::to_value(&none).unwrap().get("healthChecks").is_none(), "omitted when empty");
    }

    #[test]
    fn validation_names_the_path() {
        assert_eq!(
            errors(app(json!([{"protocol": "MESOS_HTTP"}, {"protocol": "MESOS_TCP"}]))),
            vec![(
                "/healthChecks".to_string(),
                vec![
                    "AppDefinition can contain at most one health check: checks run on the agent as Mesos health \
                 checks, and a task carries one"
                        .to_string()
                ]
            )]
        );
        assert_eq!(
            errors(app(json!([{"protocol": "TCP", "port": 8080, "portIndex": 0}]))),
            vec![(
                "/healthChecks(0)".to_string(),
                vec!["Health check port indices and values are exclusive.".to_string()]
            )]
        );
        assert_eq!(
            errors(app(json!([{"protocol": "HTTP", "portIndex": 1}]))),
            vec![(
                "/healthChecks(0)".to_string(),
                vec![
                    "Health check port indices must address an element of the ports array or container port mappings."
                        .to_string()
                ]
            )]
        );
        assert_eq!(errors(app(json!([{"protocol": "COMMAND"}])))[0].0, "/healthChecks(0)/command");
        assert_eq!(errors(app(json!([{"protocol": "GRPC"}])))[0].0, "/healthChecks(0)/protocol");
        assert_eq!(errors(app(json!([{"protocol": "HTTP", "path": "health"}])))[0].0, "/healthChecks(0)/path");
        assert_eq!(errors(app(json!([{"intervalSeconds": 0}])))[0].0, "/healthChecks(0)/intervalSeconds");
        assert_eq!(errors(app(json!([{"ipProtocol": "IPv5"}])))[0].0, "/healthChecks(0)/ipProtocol");
        assert_eq!(
            errors(app(json!([{"protocol": "MESOS_HTTP", "ignoreHttp1xx": true}])))[0].0,
            "/healthChecks(0)/ignoreHttp1xx",
            "Marathon's HTTP and HTTPS checks only"
        );
        // Their no-op values are accepted on any protocol, as Marathon accepts them (and drops them).
        let a = app(json!([{"protocol": "MESOS_HTTP", "ignoreHttp1xx": false}])).unwrap();
        assert_eq!(a.health_checks[0].ignore_http1xx, None);
        app(json!([{"protocol": "COMMAND", "command": {"value": "true"}, "ipProtocol": "IPv4"}])).unwrap();
        assert_eq!(
            errors(app(json!([{"protocol": "COMMAND", "command": {"value": "true"}, "ipProtocol": "IPv6"}])))[0].0,
            "/healthChecks(0)/ipProtocol"
        );
        assert_eq!(errors(app(json!([{"protocol": "TCP", "path": "/x"}])))[0].0, "/healthChecks(0)/path");
        assert!(matches!(app(json!({"protocol": "HTTP"})), Err(Invalid::Types(_))), "not an array");
        // A legacy string command is accepted.
        let a = app(json!([{"protocol": "COMMAND", "command": "curl -f localhost"}])).unwrap();
        assert_eq!(a.health_checks[0].command.as_ref().unwrap().value, "curl -f localhost");
    }

    #[test]
    fn mesos_checks_resolve_the_port_index_to_the_host_port() {
        let a = parse_app(
            &json!({"id": "web", "cmd": "x", "portDefinitions": [{"port": 0}, {"port": 0}],
                    "healthChecks": [{"protocol": "MESOS_HTTPS", "portIndex": 1, "path": "/ready",
                                      "intervalSeconds": 2, "timeoutSeconds": 1, "gracePeriodSeconds": 5,
                                      "delaySeconds": 0, "maxConsecutiveFailures": 0}]}),
            None,
            None,
        )
        .unwrap();
        let m = a.health_checks[0].to_mesos(&[31000, 31001]);
        assert_eq!(
            (m.kind, m.port, m.scheme.as_deref(), m.path.as_deref()),
            (HealthCheckType::Http, Some(31001), Some("https"), Some("/ready"))
        );
        assert_eq!(
            (m.interval_seconds, m.timeout_seconds, m.grace_period_seconds, m.delay_seconds),
            (2.0, 1.0, 5.0, 0.0)
        );
        assert_eq!(m.consecutive_failures, 0, "a Mesos check with 0 kills at the first failure");
        assert!(m.validate().is_ok());

        let tcp = app(json!([{"protocol": "TCP", "port": 9000, "maxConsecutiveFailures": 0}])).unwrap();
        let m = tcp.health_checks[0].to_mesos(&[31000]);
        assert_eq!((m.kind, m.port, m.consecutive_failures), (HealthCheckType::Tcp, Some(9000), u32::MAX));
        let cmd = app(json!([{"protocol": "COMMAND", "command": {"value": "test -f ok"}}])).unwrap();
        let m = cmd.health_checks[0].to_mesos(&[31000]);
        assert_eq!((m.kind, m.port), (HealthCheckType::Command, None));
        assert_eq!(m.command.unwrap().value, "test -f ok");
    }

    #[test]
    fn ignore_http1xx_and_ipv6_reach_the_tasks_check() {
        let a = app(json!([{"protocol": "HTTPS", "ignoreHttp1xx": true, "ipProtocol": "IPv6"}])).unwrap();
        let out = serde_json::to_value(&a.health_checks[0]).unwrap();
        assert_eq!((&out["ignoreHttp1xx"], &out["ipProtocol"]), (&json!(true), &json!("IPv6")));
        let m = a.health_checks[0].to_mesos(&[31000]);
        assert_eq!((m.scheme.as_deref(), m.ignore_http1xx, m.ip_protocol), (Some("https"), true, IpProtocol::V6));
        let m = app(json!([{"protocol": "HTTP"}])).unwrap().health_checks[0].to_mesos(&[31000]);
        assert_eq!((m.ignore_http1xx, m.ip_protocol), (false, IpProtocol::V4), "Marathon's defaults");
        let tcp = app(json!([{"protocol": "MESOS_TCP", "ipProtocol": "IPv6"}])).unwrap();
        let m = tcp.health_checks[0].to_mesos(&[31000]);
        assert_eq!((m.kind, m.ip_protocol, m.ignore_http1xx), (HealthCheckType::Tcp, IpProtocol::V6, false));
    }

    #[test]
    fn records_keep_marathons_result_shape() {
        let mut r = HealthRecord::default();
        r.record(true, "", 1_000);
        r.record(false, "GET / answered 503", 2_000);
        r.record(false, "GET / answered 503", 3_000);
        let v = r.json("web.instance-1");
        assert_eq!(v["alive"], false);
        assert_eq!(v["consecutiveFailures"], 2);
        assert_eq!(v["firstSuccess"], "1970-01-01T00:00:01.000Z");
        assert_eq!(v["lastFailure"], "1970-01-01T00:00:03.000Z");
        assert_eq!(v["lastFailureCause"], "GET / answered 503");
        assert_eq!(v["instanceId"], "web.instance-1");
        r.record(true, "", 4_000);
        assert_eq!((r.alive, r.consecutive_failures, r.first_success), (true, 0, Some(1_000)));
    }
}
