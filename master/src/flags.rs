//! The master's flags (Mesos names, kebab-case) and their validation into a [`Config`].
//!
//! Every bad value is reported at once: an operator fixes a command line in one go.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use agora_proto::model::parse_duration;
use clap::Parser;

pub const DEFAULT_IP: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 5050;
pub const DEFAULT_AGENT_PING_TIMEOUT: &str = "15secs";
pub const DEFAULT_MAX_AGENT_PING_TIMEOUTS: u32 = 5;
pub const DEFAULT_ALLOCATION_INTERVAL: &str = "1secs";
pub const DEFAULT_OFFER_TIMEOUT: &str = "1mins";
pub const DEFAULT_HEARTBEAT_INTERVAL: &str = "15secs";
pub const DEFAULT_MAX_COMPLETED_TASKS_PER_FRAMEWORK: usize = 1000;
pub const DEFAULT_MAX_COMPLETED_FRAMEWORKS: usize = 50;
/// Mesos's `--zk_session_timeout` default.
pub const DEFAULT_ZK_SESSION_TIMEOUT: &str = "10secs";
/// Mesos's `--agent_reregister_timeout` default (also its minimum there; Agora allows less, for tests).
pub const DEFAULT_AGENT_REREGISTER_TIMEOUT: &str = "10mins";
/// The cluster CIDR agents' container subnets are carved from. 10.233.0.0/16 is private, routed nowhere by default,
/// and away from the ranges container runtimes and clouds usually take; agents refuse it when it overlaps a route
/// their host has.
pub const DEFAULT_NETWORK_CIDR: &str = "10.233.0.0/16";
/// The length of each agent's subnet: 254 addresses, the bridge's and 253 containers'.
pub const DEFAULT_NETWORK_SUBNET_PREFIX: u8 = 24;
/// The name tasks give the cluster's container network (`container.network_infos[].name`, Marathon's network name).
pub const DEFAULT_NETWORK_NAME: &str = "agora";
/// Mesos's `--max_operator_event_stream_subscribers` default.
pub const DEFAULT_MAX_OPERATOR_EVENT_STREAM_SUBSCRIBERS: usize = 1000;

#[derive(Debug, Clone, Parser)]
#[command(name = "agora-master", version, about = "The Agora master: offers agents' resources to frameworks")]
pub struct Flags {
    /// IP address to listen on (gRPC and HTTP share one port).
    #[arg(long, default_value = DEFAULT_IP)]
    pub ip: String,
    /// Port to listen on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Directory for the master's state.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// Hostname the master advertises (default: the system hostname, else the IP).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Interval between pings to each agent; an agent that does not answer in this time misses one ping.
    #[arg(long, default_value = DEFAULT_AGENT_PING_TIMEOUT)]
    pub agent_ping_timeout: String,
    /// Missed pings after which an agent is unreachable and its tasks are reported UNREACHABLE or LOST.
    #[arg(long, default_value_t = DEFAULT_MAX_AGENT_PING_TIMEOUTS)]
    pub max_agent_ping_timeouts: u32,
    /// Period of the batch allocation pass (allocation also runs at once on new agents, freed resources, revives).
    #[arg(long, default_value = DEFAULT_ALLOCATION_INTERVAL)]
    pub allocation_interval: String,
    /// Offers not answered within this time are rescinded; `0secs` (or `none`) keeps offers until answered.
    #[arg(long, default_value = DEFAULT_OFFER_TIMEOUT)]
    pub offer_timeout: String,
    /// Interval of HEARTBEAT events to subscribed frameworks.
    #[arg(long, default_value = DEFAULT_HEARTBEAT_INTERVAL)]
    pub heartbeat_interval: String,
    /// Completed tasks kept per framework for /master/state.
    #[arg(long, default_value_t = DEFAULT_MAX_COMPLETED_TASKS_PER_FRAMEWORK)]
    pub max_completed_tasks_per_framework: usize,
    /// Completed frameworks kept for /master/state.
    #[arg(long, default_value_t = DEFAULT_MAX_COMPLETED_FRAMEWORKS)]
    pub max_completed_frameworks: usize,
    /// Role weights for weighted DRF, e.g. `web=2,batch=1` (roles not listed weigh 1).
    #[arg(long, default_value = "")]
    pub weights: String,
    /// ZooKeeper URL for leader election and the registry, `zk://HOST:PORT[,HOST:PORT]/PATH`; without it the
    /// master runs standalone with its registry in the work dir.
    #[arg(long)]
    pub zk: Option<String>,
    /// ZooKeeper session timeout: a leader that loses its session for this long has lost leadership.
    #[arg(long, default_value = DEFAULT_ZK_SESSION_TIMEOUT)]
    pub zk_session_timeout: String,
    /// After a failover, agents in the registry that do not re-register within this time are marked unreachable.
    #[arg(long, default_value = DEFAULT_AGENT_REREGISTER_TIMEOUT)]
    pub agent_reregister_timeout: String,
    /// The cluster's container network: every agent started with `--network-bridge` gets a subnet of this IPv4
    /// prefix and routes the others' to their agents; `none` turns container networks off.
    #[arg(long, default_value = DEFAULT_NETWORK_CIDR)]
    pub network_cidr: String,
    /// The prefix length of each agent's subnet of `--network-cidr`.
    #[arg(long, default_value_t = DEFAULT_NETWORK_SUBNET_PREFIX)]
    pub network_subnet_prefix: u8,
    /// The name of the cluster's container network, as tasks name it.
    #[arg(long, default_value = DEFAULT_NETWORK_NAME)]
    pub network_name: String,
    /// Operators that may follow the v1 operator event stream (`POST /api/v1` SUBSCRIBE) at once.
    #[arg(long, default_value_t = DEFAULT_MAX_OPERATOR_EVENT_STREAM_SUBSCRIBERS)]
    pub max_operator_event_stream_subscribers: usize,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub ip: IpAddr,
    pub port: u16,
    pub work_dir: PathBuf,
    pub hostname: String,
    pub agent_ping_timeout: Duration,
    pub max_agent_ping_timeouts: u32,
    pub allocation_interval: Duration,
    pub offer_timeout: Option<Duration>,
    pub heartbeat_interval: Duration,
    pub max_completed_tasks_per_framework: usize,
    pub max_completed_frameworks: usize,
    pub weights: Vec<(String, f64)>,
    pub zk: Option<agora_detector::ZkUrl>,
    pub zk_session_timeout: Duration,
    pub agent_reregister_timeout: Duration,
    /// `--network-cidr`, `--network-subnet-prefix`, `--network-name`; `None` with `--network-cidr=none`.
    pub network: Option<crate::core::NetworkConfig>,
    pub max_operator_event_stream_subscribers: usize,
}

/// Every bad flag value, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

fn duration(flag: &str, value: &str, errors: &mut Vec<String>) -> Duration {
    parse_duration(value).unwrap_or_else(|e| {
        errors.push(format!("--{flag}: {e}"));
        Duration::ZERO
    })
}

impl Flags {
    pub fn config(&self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let ip: IpAddr = self.ip.parse().unwrap_or_else(|_| {
            errors.push(format!("--ip: '{}' is not an IP address", self.ip));
            IpAddr::from([127, 0, 0, 1])
        });
        let agent_ping_timeout = duration("agent-ping-timeout", &self.agent_ping_timeout, &mut errors);
        if agent_ping_timeout.is_zero() && parse_duration(&self.agent_ping_timeout).is_ok() {
            errors.push("--agent-ping-timeout: must be positive".into());
        }
        if self.max_agent_ping_timeouts == 0 {
            errors.push("--max-agent-ping-timeouts: must be at least 1".into());
        }
        let allocation_interval = duration("allocation-interval", &self.allocation_interval, &mut errors);
        if allocation_interval.is_zero() && parse_duration(&self.allocation_interval).is_ok() {
            errors.push("--allocation-interval: must be positive".into());
        }
        let offer_timeout = if self.offer_timeout == "none" {
            None
        } else {
            Some(duration("offer-timeout", &self.offer_timeout, &mut errors)).filter(|d| !d.is_zero())
        };
        let heartbeat_interval = duration("heartbeat-interval", &self.heartbeat_interval, &mut errors);
        if heartbeat_interval.is_zero() && parse_duration(&self.heartbeat_interval).is_ok() {
            errors.push("--heartbeat-interval: must be positive".into());
        }
        let mut weights = Vec::new();
        for item in self.weights.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=').map(|(r, w)| (r.trim(), w.trim().parse::<f64>())) {
                Some((role, Ok(w))) if !role.is_empty() && w.is_finite() && w > 0.0 => {
                    weights.push((role.to_string(), w))
                }
                _ => errors.push(format!("--weights: '{item}' is not 'role=positive number'")),
            }
        }
        let zk = self
            .zk
            .as_deref()
            .and_then(|z| agora_detector::ZkUrl::parse(z).map_err(|e| errors.push(format!("--zk: {e}"))).ok());
        let zk_session_timeout = duration("zk-session-timeout", &self.zk_session_timeout, &mut errors);
        if zk_session_timeout.is_zero() && parse_duration(&self.zk_session_timeout).is_ok() {
            errors.push("--zk-session-timeout: must be positive".into());
        }
        let agent_reregister_timeout =
            duration("agent-reregister-timeout", &self.agent_reregister_timeout, &mut errors);
        let network = match self.network_cidr.trim() {
            "none" => None,
            cidr => match cidr.parse::<agora_net::Ipv4Cidr>() {
                Err(e) => {
                    errors.push(format!("--network-cidr: {e}"));
                    None
                }
                Ok(cluster) => match agora_net::AddressPlan::new(cluster, self.network_subnet_prefix) {
                    Ok(plan) => Some(crate::core::NetworkConfig { name: self.network_name.trim().to_string(), plan }),
                    Err(e) => {
                        errors.push(format!("--network-subnet-prefix: {e}"));
                        None
                    }
                },
            },
        };
        if self.network_name.trim().is_empty() {
            errors.push("--network-name: must not be empty".into());
        }
        if let Err(e) = std::fs::create_dir_all(&self.work_dir) {
            errors.push(format!("--work-dir: cannot create '{}': {e}", self.work_dir.display()));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let hostname = self.hostname.clone().unwrap_or_else(|| system_hostname().unwrap_or_else(|| ip.to_string()));
        Ok(Config {
            ip,
            port: self.port,
            work_dir: self.work_dir.clone(),
            hostname,
            agent_ping_timeout,
            max_agent_ping_timeouts: self.max_agent_ping_timeouts,
            allocation_interval,
            offer_timeout,
            heartbeat_interval,
            max_completed_tasks_per_framework: self.max_completed_tasks_per_framework,
            max_completed_frameworks: self.max_completed_frameworks,
            weights,
            zk,
            zk_session_timeout,
            agent_reregister_timeout,
            network,
            max_operator_event_stream_subscribers: self.max_operator_event_stream_subscribers,
        })
    }
}

fn system_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_value_at_once() {
        let dir = std::env::temp_dir().join("agora-master-flags-test");
        let flags = Flags::try_parse_from([
            "agora-master",
            "--work-dir",
            dir.to_str().unwrap(),
            "--ip",
            "nope",
            "--agent-ping-timeout",
            "15parsecs",
            "--max-agent-ping-timeouts",
            "0",
            "--weights",
            "web=2,batch=-1",
            "--network-cidr",
            "10.233.1.0/16",
        ])
        .unwrap();
        let errs = flags.config().unwrap_err();
        assert_eq!(errs.0.len(), 5, "{errs}");
        assert_eq!(errs.0[4], "--network-cidr: '10.233.1.0/16' has host bits set (did you mean 10.233.0.0/16?)");
        assert!(errs.0[0].contains("--ip"));
        assert!(errs.0[1].contains("--agent-ping-timeout"));
        assert!(errs.0[2].contains("--max-agent-ping-timeouts"));
        assert!(errs.0[3].contains("batch=-1"));
    }

    #[test]
    fn mesos_durations_and_defaults() {
        let dir = std::env::temp_dir().join("agora-master-flags-test2");
        let flags = Flags::try_parse_from([
            "agora-master",
            "--work-dir",
            dir.to_str().unwrap(),
            "--agent-ping-timeout",
            "2secs",
        ])
        .unwrap();
        let c = flags.config().unwrap();
        assert_eq!(c.agent_ping_timeout, Duration::from_secs(2));
        assert_eq!(c.max_agent_ping_timeouts, 5);
        assert_eq!(c.allocation_interval, Duration::from_secs(1));
        assert_eq!(c.offer_timeout, Some(Duration::from_secs(60)));
        let network = c.network.unwrap();
        assert_eq!((network.name.as_str(), network.plan.cluster.to_string()), ("agora", "10.233.0.0/16".into()));
        assert_eq!(network.plan.subnet_prefix, 24);
    }

    #[test]
    fn container_networks_can_be_turned_off_and_a_subnet_must_fit() {
        let dir = std::env::temp_dir().join("agora-master-flags-test3");
        let work_dir = dir.to_str().unwrap();
        let off = Flags::try_parse_from(["agora-master", "--work-dir", work_dir, "--network-cidr", "none"]).unwrap();
        assert!(off.config().unwrap().network.is_none());
        let bad =
            ["agora-master", "--work-dir", work_dir, "--network-cidr", "10.0.0.0/24", "--network-subnet-prefix", "16"];
        let errs = Flags::try_parse_from(bad).unwrap().config().unwrap_err();
        assert!(errs.0[0].starts_with("--network-subnet-prefix: agent subnets of /16 do not fit"), "{errs}");
    }
}
