//! The agent's flags (Mesos names, kebab-case) and their validation into a [`Config`].
//!
//! Validation reports every bad value at once. Resource auto-detection is split into a probe of the machine
//! ([`Detected::probe`]) and a pure merge ([`merge_detected`]) so the rules are testable without a machine.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::model::{AgentInfo, Attributes, Resource, Resources, parse_duration};

/// Default `--ip`.
pub const DEFAULT_IP: &str = "127.0.0.1";
/// Default `--port` (Mesos's agent port).
pub const DEFAULT_PORT: &str = "5051";
/// `--isolation` when the agent runs as root; `process` otherwise.
pub const DEFAULT_ISOLATION: &str = "libcontainer";
/// Default `--status-update-retry-interval` (Mesos's `STATUS_UPDATE_RETRY_INTERVAL_MIN`).
pub const DEFAULT_STATUS_UPDATE_RETRY_INTERVAL: &str = "10secs";
/// Default `--registration-backoff-factor`.
pub const DEFAULT_REGISTRATION_BACKOFF_FACTOR: &str = "1secs";
/// Default `--fetcher-cache-size` (Mesos's).
pub const DEFAULT_FETCHER_CACHE_SIZE: &str = "2GB";
/// Default `--executor-shutdown-grace-period`.
pub const DEFAULT_EXECUTOR_SHUTDOWN_GRACE_PERIOD: &str = "3secs";
/// Default `--gc-delay` (Mesos's): how long an ended container's sandbox is kept when the disk is empty.
pub const DEFAULT_GC_DELAY: &str = "1weeks";
/// Default `--gc-disk-headroom` (Mesos's).
pub const DEFAULT_GC_DISK_HEADROOM: &str = "0.1";
/// Default `--disk-watch-interval` (Mesos's): how often the disk is measured and old sandboxes deleted.
pub const DEFAULT_DISK_WATCH_INTERVAL: &str = "1mins";

/// Default `--network-netns-dir`: where container network namespaces are pinned.
pub const DEFAULT_NETNS_DIR: &str = "/run/agora/netns";
/// The prefix of the host ends of containers' veth pairs.
pub const NETWORK_LINK_PREFIX: &str = "ag";
/// The agent's nftables table (`ip agora`).
pub const NETWORK_TABLE: &str = agora_net::nft::TABLE;

/// The longest duration any flag accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The ports offered when `--resources` names none.
pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);
/// Fallbacks when detection fails (Mesos's `src/slave/constants.hpp`).
pub const FALLBACK_CPUS: f64 = 1.0;
pub const FALLBACK_MEM_MB: u64 = 1024;
pub const FALLBACK_DISK_MB: u64 = 10 * 1024;

/// The agent's command-line flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "agora-agent", version, about = "The Agora agent: runs tasks for the Agora master")]
pub struct Flags {
    /// The master to register with, `HOST:PORT` or `http://HOST:PORT`, or `zk://HOST:PORT[,HOST:PORT]/PATH` to
    /// follow whichever master leads (Mesos's ZooKeeper layout).
    #[arg(long)]
    pub master: String,

    /// The IP address the agent listens on and advertises.
    #[arg(long, default_value = DEFAULT_IP)]
    pub ip: String,

    /// The port of the agent's HTTP endpoints (also advertised to the master).
    #[arg(long, default_value = DEFAULT_PORT)]
    pub port: String,

    /// Where sandboxes live: `<work-dir>/slaves/<agent id>/frameworks/...`.
    #[arg(long = "work-dir", visible_alias = "work_dir")]
    pub work_dir: PathBuf,

    /// Total resources, Mesos syntax (`cpus:2;mem:1024;disk:4096;ports:[31000-32000]`); missing names are detected.
    #[arg(long)]
    pub resources: Option<String>,

    /// Attributes, Mesos syntax (`rack:r1;zone:a`).
    #[arg(long)]
    pub attributes: Option<String>,

    /// The hostname to advertise (default: the system hostname, else the ip).
    #[arg(long)]
    pub hostname: Option<String>,

    /// How tasks are isolated: `libcontainer` (containers with cgroups; the default as root), `process` (plain
    /// processes; the default otherwise, for development) or `simulated` (no process at all: a task runs from its
    /// launch until it is killed; meant for benchmarks and tests at scale, never for real work).
    #[arg(long)]
    pub isolation: Option<String>,

    /// How often task sandboxes are measured against their `disk` (libcontainer isolation).
    #[arg(
        long = "container-disk-watch-interval",
        visible_alias = "container_disk_watch_interval",
        default_value = "15secs"
    )]
    pub container_disk_watch_interval: String,

    /// How long the sandbox of an ended container is kept; shortened as the disk fills (see
    /// `--gc-disk-headroom`). `0secs` deletes sandboxes at the next disk watch.
    #[arg(long = "gc-delay", visible_alias = "gc_delay", default_value = DEFAULT_GC_DELAY)]
    pub gc_delay: String,

    /// The fraction of the disk kept free: sandboxes older than gc-delay × max(0, 1 − headroom − disk used) are
    /// deleted (0.0 to 1.0).
    #[arg(long = "gc-disk-headroom", visible_alias = "gc_disk_headroom", default_value = DEFAULT_GC_DISK_HEADROOM)]
    pub gc_disk_headroom: String,

    /// How often the work dir's disk is measured and old sandboxes deleted.
    #[arg(long = "disk-watch-interval", visible_alias = "disk_watch_interval", default_value = DEFAULT_DISK_WATCH_INTERVAL)]
    pub disk_watch_interval: String,

    /// First retry interval of an unacknowledged status update; doubles up to 10mins.
    #[arg(long = "status-update-retry-interval", visible_alias = "status_update_retry_interval", default_value = DEFAULT_STATUS_UPDATE_RETRY_INTERVAL)]
    pub status_update_retry_interval: String,

    /// Reconnection backoff: retry n waits a random time in [0, factor × 2^n], the bound capped at 1min (as Mesos).
    #[arg(long = "registration-backoff-factor", visible_alias = "registration_backoff_factor", default_value = DEFAULT_REGISTRATION_BACKOFF_FACTOR)]
    pub registration_backoff_factor: String,

    /// Time between SIGTERM and SIGKILL when a kill has no kill policy.
    #[arg(long = "executor-shutdown-grace-period", visible_alias = "executor_shutdown_grace_period", default_value = DEFAULT_EXECUTOR_SHUTDOWN_GRACE_PERIOD)]
    pub executor_shutdown_grace_period: String,

    /// A local image registry (an absolute directory, Mesos's local `--docker_registry`): a task's
    /// `container.image` `NAME[:TAG]` (TAG `latest` by default) runs in the root filesystem directory
    /// `DIR/NAME/TAG/`, else in the image archive (`docker save`, OCI layout or rootfs tarball) `DIR/NAME/TAG.tar` or
    /// `DIR/NAME:TAG.tar` (Mesos's naming), unpacked once into `<work-dir>/store/docker/NAME/TAG`.
    /// Needs `--isolation libcontainer`. Without it, tasks with an image fail.
    #[arg(long = "docker-registry", visible_alias = "docker_registry")]
    pub docker_registry: Option<PathBuf>,

    /// The most the fetcher cache holds (Mesos's `--fetcher_cache_size`): bytes, or with a unit `B`, `KB`, `MB`,
    /// `GB`, `TB` (powers of 1024). The least recently used entries are evicted to make room.
    #[arg(long = "fetcher-cache-size", visible_alias = "fetcher_cache_size", default_value = DEFAULT_FETCHER_CACHE_SIZE)]
    pub fetcher_cache_size: String,

    /// Where the fetcher caches the URIs fetched with `cache: true` (Mesos's `--fetcher_cache_dir`; default
    /// `<work-dir>/fetch-cache`).
    #[arg(long = "fetcher-cache-dir", visible_alias = "fetcher_cache_dir")]
    pub fetcher_cache_dir: Option<PathBuf>,

    /// CA certificates (a PEM file) the fetcher verifies `https://` servers with, instead of the system's store
    /// (Agora's own flag; Mesos's libcurl always uses the system's).
    #[arg(long = "fetcher-ca-file", visible_alias = "fetcher_ca_file")]
    pub fetcher_ca_file: Option<PathBuf>,

    /// Mesos's `--strict`: with `true` (the default) any error recovering the checkpoint stops the agent, naming
    /// the file; with `false` a corrupt task or framework file is skipped (logged) and the rest is recovered.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub strict: bool,

    /// Runs the cluster's container network on a bridge of this name (e.g. `agora0`): a task that asks for it
    /// (`container.network_infos`) gets its own network namespace and address in the subnet the master assigns this
    /// agent, reachable from every agent by routing, and its port mappings. Needs `--isolation=libcontainer`, root
    /// and nftables. Unset (the default): every task uses the host's network.
    #[arg(long = "network-bridge", visible_alias = "network_bridge")]
    pub network_bridge: Option<String>,

    /// Where container network namespaces are pinned (one file per container).
    #[arg(long = "network-netns-dir", visible_alias = "network_netns_dir", default_value = DEFAULT_NETNS_DIR)]
    pub network_netns_dir: PathBuf,

    /// Lets containers reach addresses outside the cluster CIDR (masqueraded to the agent's address). Off by
    /// default: traffic from the bridge to the outside is dropped.
    #[arg(long = "network-egress", visible_alias = "network_egress", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub network_egress: bool,

    /// The nameservers in containers' `/etc/resolv.conf` (comma-separated addresses); default: the host's, leaving
    /// out loopback resolvers.
    #[arg(long = "dns-nameserver", visible_alias = "dns_nameserver", value_delimiter = ',')]
    pub dns_nameserver: Vec<String>,

    /// The search domains in containers' `/etc/resolv.conf` (comma-separated); default: the host's.
    #[arg(long = "dns-search", visible_alias = "dns_search", value_delimiter = ',')]
    pub dns_search: Vec<String>,
}

/// How tasks are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Plain processes in their own process group.
    Process,
    /// youki's libcontainer: namespaces, cgroups, a read-only root, a monitor process per container.
    Libcontainer,
    /// Nothing runs: a task is running from launch until killed (benchmarks and tests).
    Simulated,
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The master's `host:port`.
    pub master: String,
    pub ip: IpAddr,
    pub port: u16,
    pub work_dir: PathBuf,
    /// Given resources merged with the detected ones.
    pub resources: Resources,
    pub attributes: Attributes,
    pub hostname: String,
    pub isolation: Isolation,
    pub status_update_retry_interval: Duration,
    pub registration_backoff_factor: Duration,
    pub executor_shutdown_grace_period: Duration,
    pub container_disk_watch_interval: Duration,
    /// `--gc-delay`, `--gc-disk-headroom` and `--disk-watch-interval`: see [`crate::gc`].
    pub gc: GcConfig,
    /// `--docker-registry`: where `container.image` is looked up.
    pub docker_registry: Option<PathBuf>,
    /// `--fetcher-cache-dir`, or `<work_dir>/fetch-cache`.
    pub fetcher_cache_dir: PathBuf,
    /// `--fetcher-cache-size` in bytes.
    pub fetcher_cache_size: u64,
    /// `--fetcher-ca-file`.
    pub fetcher_ca_file: Option<PathBuf>,
    /// `--strict`: a corrupt checkpoint file stops the agent (else it is skipped).
    pub strict: bool,
    /// `--network-bridge` and the flags around it; `None`: host networking only.
    pub network: Option<agora_net::HostConfig>,
}

/// When sandboxes are deleted (see [`crate::gc`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcConfig {
    pub delay: Duration,
    pub disk_headroom: f64,
    pub disk_watch_interval: Duration,
}

impl Config {
    /// The agent as it registers (no id yet), listening on `port` (its real port: `--port 0` picks one).
    pub fn agent_info(&self, port: u16) -> AgentInfo {
        AgentInfo {
            id: None,
            hostname: self.hostname.clone(),
            ip: self.ip.to_string(),
            port,
            resources: self.resources.clone(),
            attributes: self.attributes.clone(),
        }
    }

    /// The master's gRPC address, `http://host:port`.
    pub fn master_url(&self) -> String {
        format!("http://{}", self.master)
    }
}

/// Every bad flag value, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl Flags {
    /// Validates every flag (reporting all bad values), then detects the resources `--resources` leaves out.
    pub fn config(&self) -> Result<Config, ConfigErrors> {
        let v = self.validate()?;
        let given = v.resources.clone();
        let detected = Detected::probe(&self.work_dir);
        let hostname = self
            .hostname
            .clone()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| system_hostname().unwrap_or_else(|| v.ip.to_string()));
        Ok(Config {
            master: v.master,
            ip: v.ip,
            port: v.port,
            work_dir: self.work_dir.clone(),
            resources: merge_detected(given, &detected),
            attributes: v.attributes,
            hostname,
            isolation: v.isolation,
            status_update_retry_interval: v.status_update_retry_interval,
            registration_backoff_factor: v.registration_backoff_factor,
            executor_shutdown_grace_period: v.executor_shutdown_grace_period,
            container_disk_watch_interval: v.container_disk_watch_interval,
            gc: v.gc,
            docker_registry: self.docker_registry.clone(),
            fetcher_cache_dir: self
                .fetcher_cache_dir
                .clone()
                .unwrap_or_else(|| self.work_dir.join(crate::fetcher::CACHE_DIR)),
            fetcher_cache_size: v.fetcher_cache_size,
            fetcher_ca_file: self.fetcher_ca_file.clone(),
            strict: self.strict,
            network: v.network.map(|mut n| {
                if self.dns_nameserver.is_empty() || self.dns_search.is_empty() {
                    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                    let (servers, search) = agora_net::plan::host_resolvers(&host);
                    if n.nameservers.is_empty() {
                        n.nameservers = servers;
                    }
                    if n.search.is_empty() {
                        n.search = search;
                    }
                }
                n
            }),
        })
    }

    /// The pure part of [`Flags::config`]: every flag checked, nothing probed.
    fn validate(&self) -> Result<Validated, ConfigErrors> {
        let mut errors = Vec::new();
        let master = parse_master(&self.master).map_err(|e| errors.push(format!("--master: {e}"))).ok();
        let ip = self
            .ip
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| errors.push(format!("--ip: '{}' is not an IP address", self.ip)))
            .ok();
        let port = self
            .port
            .trim()
            .parse::<u16>()
            .map_err(|_| errors.push(format!("--port: '{}' is not a port number (0-65535)", self.port)))
            .ok();
        if self.work_dir.as_os_str().is_empty() {
            errors.push("--work-dir: must not be empty".to_string());
        }
        if let Some(dir) = &self.docker_registry
            && !dir.is_absolute()
        {
            errors.push(format!("--docker-registry: '{}' must be an absolute directory", dir.display()));
        }
        if let Some(dir) = &self.fetcher_cache_dir
            && !dir.is_absolute()
        {
            errors.push(format!("--fetcher-cache-dir: '{}' must be an absolute directory", dir.display()));
        }
        if let Some(file) = &self.fetcher_ca_file
            && !file.is_file()
        {
            errors.push(format!("--fetcher-ca-file: '{}' is not a file", file.display()));
        }
        let fetcher_cache_size = parse_bytes(&self.fetcher_cache_size)
            .map_err(|e| errors.push(format!("--fetcher-cache-size: {e}")))
            .unwrap_or_default();
        let resources = match &self.resources {
            None => Some(Resources::new()),
            Some(text) => Resources::parse(text)
                .map_err(|errs| errors.extend(errs.iter().map(|e| format!("--resources: {e}"))))
                .ok(),
        };
        let attributes = match &self.attributes {
            None => Some(Attributes::default()),
            Some(text) => Attributes::parse(text)
                .map_err(|errs| {
                    errors.extend(
                        errs.iter()
                            .map(|e| format!("--attributes: {}", e.to_string().replacen("resource", "attribute", 1))),
                    )
                })
                .ok(),
        };
        let default_isolation = if nix::unistd::Uid::effective().is_root() { DEFAULT_ISOLATION } else { "process" };
        let isolation = match self.isolation.as_deref().unwrap_or(default_isolation).trim() {
            "process" => Some(Isolation::Process),
            "libcontainer" => Some(Isolation::Libcontainer),
            "simulated" => Some(Isolation::Simulated),
            other => {
                errors.push(format!(
                    "--isolation: '{other}' is not supported; the isolations are 'libcontainer', 'process' and \
                     'simulated'"
                ));
                None
            }
        };
        let mut duration = |flag: &str, text: &str| match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                errors.push(format!("--{flag}: '{text}' must be longer than zero"));
                None
            }
            Ok(d) if d > MAX_DURATION => {
                errors.push(format!("--{flag}: '{text}' is longer than a year"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("--{flag}: {e}"));
                None
            }
        };
        let retry = duration("status-update-retry-interval", &self.status_update_retry_interval);
        let backoff = duration("registration-backoff-factor", &self.registration_backoff_factor);
        let disk_watch = duration("container-disk-watch-interval", &self.container_disk_watch_interval);
        let gc_watch = duration("disk-watch-interval", &self.disk_watch_interval);
        let gc_delay = match parse_duration(&self.gc_delay) {
            Ok(d) if d > MAX_DURATION => {
                errors.push(format!("--gc-delay: '{}' is longer than a year", self.gc_delay));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("--gc-delay: {e}"));
                None
            }
        };
        let headroom = match self.gc_disk_headroom.trim().parse::<f64>() {
            Ok(h) if (0.0..=1.0).contains(&h) => Some(h),
            _ => {
                let text = &self.gc_disk_headroom;
                errors.push(format!("--gc-disk-headroom: '{text}' is not a fraction between 0.0 and 1.0"));
                None
            }
        };
        let gc = match (gc_delay, headroom, gc_watch) {
            (Some(delay), Some(disk_headroom), Some(disk_watch_interval)) => {
                Some(GcConfig { delay, disk_headroom, disk_watch_interval })
            }
            _ => None,
        };
        let grace = match parse_duration(&self.executor_shutdown_grace_period) {
            Ok(d) if d > MAX_DURATION => {
                let text = &self.executor_shutdown_grace_period;
                errors.push(format!("--executor-shutdown-grace-period: '{text}' is longer than a year"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("--executor-shutdown-grace-period: {e}"));
                None
            }
        };
        let network = self.network_bridge.as_deref().map(str::trim).and_then(|bridge| {
            let before = errors.len();
            let name_ok = !bridge.is_empty()
                && bridge.len() <= 15
                && bridge.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                errors.push(format!(
                    "--network-bridge: '{bridge}' is not a link name (1-15 letters, digits, '-', '_' or '.')"
                ));
            }
            if isolation.is_some_and(|i| i != Isolation::Libcontainer) {
                errors.push(
                    "--network-bridge: container networks need --isolation=libcontainer (a network namespace per \
                     container)"
                        .to_string(),
                );
            }
            if !self.network_netns_dir.is_absolute() {
                let dir = self.network_netns_dir.display();
                errors.push(format!("--network-netns-dir: '{dir}' must be an absolute directory"));
            }
            for server in self.dns_nameserver.iter().filter(|s| s.trim().parse::<IpAddr>().is_err()) {
                errors.push(format!("--dns-nameserver: '{server}' is not an IP address"));
            }
            (errors.len() == before).then(|| agora_net::HostConfig {
                bridge: bridge.to_string(),
                netns_dir: self.network_netns_dir.clone(),
                link_prefix: NETWORK_LINK_PREFIX.to_string(),
                table: NETWORK_TABLE.to_string(),
                egress: self.network_egress,
                nameservers: self.dns_nameserver.iter().map(|s| s.trim().to_string()).collect(),
                search: self.dns_search.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            })
        });
        match (master, ip, port, resources, attributes, isolation, retry, backoff, (grace, disk_watch, gc)) {
            (
                Some(master),
                Some(ip),
                Some(port),
                Some(resources),
                Some(attributes),
                Some(isolation),
                Some(status_update_retry_interval),
                Some(registration_backoff_factor),
                (Some(executor_shutdown_grace_period), Some(container_disk_watch_interval), Some(gc)),
            ) if errors.is_empty() => Ok(Validated {
                fetcher_cache_size,
                master,
                ip,
                port,
                resources,
                attributes,
                isolation,
                status_update_retry_interval,
                registration_backoff_factor,
                executor_shutdown_grace_period,
                container_disk_watch_interval,
                gc,
                network,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

struct Validated {
    fetcher_cache_size: u64,
    master: String,
    ip: IpAddr,
    port: u16,
    resources: Resources,
    attributes: Attributes,
    isolation: Isolation,
    status_update_retry_interval: Duration,
    registration_backoff_factor: Duration,
    executor_shutdown_grace_period: Duration,
    container_disk_watch_interval: Duration,
    gc: GcConfig,
    network: Option<agora_net::HostConfig>,
}

/// A flag value that does not parse; each names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("'{0}' is not a size (a whole number with B, KB, MB, GB or TB)")]
    NotASize(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
    #[error("{0}")]
    ZooKeeper(String),
    #[error("'{0}' must be HOST:PORT or http://HOST:PORT")]
    Scheme(String),
    #[error("'{0}' has no port (expected HOST:PORT)")]
    NoPort(String),
    #[error("'{0}' has no valid host (expected HOST:PORT)")]
    BadHost(String),
    #[error("'{0}' has no valid port (expected HOST:PORT)")]
    BadPort(String),
}

/// Mesos's `Bytes`: a whole number with a unit `B`, `KB`, `MB`, `GB` or `TB` (powers of 1024), or a bare number of
/// bytes.
pub fn parse_bytes(text: &str) -> Result<u64, FlagError> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        _ => return Err(FlagError::NotASize(text.to_string())),
    };
    let n: u64 = number.parse().map_err(|_| FlagError::NotASize(text.to_string()))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| FlagError::TooLarge(text.to_string()))
}

/// Accepts `host:port` and `http://host:port` (a trailing `/` is fine), returning `host:port`, and
/// `zk://host:port[,host:port]/path`, returned as given (normalised).
pub fn parse_master(text: &str) -> Result<String, FlagError> {
    let t = text.trim();
    if t.starts_with("zk://") {
        return agora_detector::ZkUrl::parse(t).map(|u| u.to_string()).map_err(|e| FlagError::ZooKeeper(e.to_string()));
    }
    let bare = t.strip_prefix("http://").unwrap_or(t).trim_end_matches('/');
    if bare.contains("://") {
        return Err(FlagError::Scheme(text.to_string()));
    }
    let (host, port) = bare.rsplit_once(':').ok_or_else(|| FlagError::NoPort(text.to_string()))?;
    if host.is_empty() || host.contains('/') {
        return Err(FlagError::BadHost(text.to_string()));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(bare.to_string()),
        _ => Err(FlagError::BadPort(text.to_string())),
    }
}

/// What the machine offers, as far as it could be found out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detected {
    pub cpus: Option<f64>,
    /// Total memory in MB.
    pub mem_total_mb: Option<u64>,
    /// Size of the work dir's filesystem in MB.
    pub disk_total_mb: Option<u64>,
}

impl Detected {
    /// Reads the online CPUs, `/proc/meminfo` and the work dir's filesystem (or its nearest existing ancestor).
    pub fn probe(work_dir: &Path) -> Detected {
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|t| count_cpu_list(&t))
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get() as u64))
            .map(|n| n as f64);
        let mem_total_mb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| meminfo_total_mb(&t));
        let disk_total_mb = work_dir.ancestors().find_map(|dir| nix::sys::statvfs::statvfs(dir).ok()).map(|s| {
            let bytes = (s.blocks() as u128) * (s.fragment_size() as u128);
            (bytes / (1024 * 1024)) as u64
        });
        Detected { cpus, mem_total_mb, disk_total_mb }
    }
}

/// Counts the CPUs of a kernel CPU list such as `0-3,6,8-9`.
pub fn count_cpu_list(text: &str) -> Option<u64> {
    let mut n = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (b, e) = part.split_once('-').unwrap_or((part, part));
        let (b, e): (u64, u64) = (b.trim().parse().ok()?, e.trim().parse().ok()?);
        n += e.checked_sub(b)? + 1;
    }
    (n > 0).then_some(n)
}

/// `MemTotal` of `/proc/meminfo`, in MB.
pub fn meminfo_total_mb(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.trim_start_matches("MemTotal:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024)
}

/// Memory offered: total − 1 GB, or half when the total is under 2 GB.
pub fn offered_mem_mb(total_mb: u64) -> u64 {
    if total_mb < 2048 { total_mb / 2 } else { total_mb - 1024 }
}

/// Disk offered: total − 5 GB, or half when the total is under 10 GB.
pub fn offered_disk_mb(total_mb: u64) -> u64 {
    if total_mb < 10 * 1024 { total_mb / 2 } else { total_mb - 5 * 1024 }
}

/// Adds the detected cpus, mem, disk and ports for every name `given` lacks (in any role).
pub fn merge_detected(given: Resources, detected: &Detected) -> Resources {
    let has = |name: &str| given.iter().any(|r| r.name == name);
    let mut extra = Vec::new();
    if !has("cpus") {
        extra.push(Resource::scalar("cpus", detected.cpus.unwrap_or(FALLBACK_CPUS)));
    }
    if !has("mem") {
        let mem = detected.mem_total_mb.map(offered_mem_mb).unwrap_or(FALLBACK_MEM_MB);
        extra.push(Resource::scalar("mem", mem as f64));
    }
    if !has("disk") {
        let disk = detected.disk_total_mb.map(offered_disk_mb).unwrap_or(FALLBACK_DISK_MB);
        extra.push(Resource::scalar("disk", disk as f64));
    }
    if !has("ports") {
        extra.push(Resource::ranges("ports", [DEFAULT_PORTS]));
    }
    let mut out = given;
    out.add(&Resources::from_vec(extra));
    out
}

/// The kernel's hostname, if it can be read.
fn system_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::model::{Fixed, Ranges};
    use clap::Parser;

    fn flags(extra: &[&str]) -> Result<Flags, clap::Error> {
        let mut args = vec!["agora-agent", "--master", "127.0.0.1:5050", "--work-dir", "/tmp/agora-agent-test"];
        args.extend_from_slice(extra);
        Flags::try_parse_from(args)
    }

    #[test]
    fn defaults_are_mesos_defaults() {
        let c = flags(&["--resources", "cpus:2;mem:1024;disk:4096;ports:[31000-31009]"]).unwrap().config().unwrap();
        assert_eq!(c.master, "127.0.0.1:5050");
        assert_eq!(c.master_url(), "http://127.0.0.1:5050");
        assert_eq!(c.port, 5051);
        assert_eq!(c.ip.to_string(), "127.0.0.1");
        let root = nix::unistd::Uid::effective().is_root();
        assert_eq!(c.isolation, if root { Isolation::Libcontainer } else { Isolation::Process });
        assert_eq!(c.container_disk_watch_interval, Duration::from_secs(15));
        assert_eq!(c.status_update_retry_interval, Duration::from_secs(10));
        assert_eq!(c.registration_backoff_factor, Duration::from_secs(1));
        assert_eq!(c.executor_shutdown_grace_period, Duration::from_secs(3));
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(c.gc, GcConfig { delay: week, disk_headroom: 0.1, disk_watch_interval: Duration::from_secs(60) });
        assert_eq!(c.resources.to_string(), "cpus:2;disk:4096;mem:1024;ports:[31000-31009]");
        assert!(!c.hostname.is_empty());
    }

    #[test]
    fn the_fetcher_cache_has_mesos_size_and_a_dir() {
        let res = ["--resources", "cpus:1;mem:64;disk:64;ports:[1-2]"];
        let c = flags(&res).unwrap().config().unwrap();
        assert_eq!(c.fetcher_cache_size, 2 << 30, "Mesos's 2GB");
        assert_eq!(c.fetcher_cache_dir, PathBuf::from("/tmp/agora-agent-test/fetch-cache"));
        assert_eq!(c.fetcher_ca_file, None);
        let c = flags(&[&res[..], &["--fetcher_cache_size", "512MB", "--fetcher-cache-dir", "/var/cache/f"]].concat())
            .unwrap()
            .config()
            .unwrap();
        assert_eq!((c.fetcher_cache_size, c.fetcher_cache_dir), (512 << 20, PathBuf::from("/var/cache/f")));
        let errors =
            flags(&["--fetcher-cache-size", "lots", "--fetcher-cache-dir", "rel", "--fetcher-ca-file", "/nope"])
                .unwrap()
                .config()
                .unwrap_err();
        assert_eq!(
            errors.0,
            vec![
                "--fetcher-cache-dir: 'rel' must be an absolute directory".to_string(),
                "--fetcher-ca-file: '/nope' is not a file".to_string(),
                "--fetcher-cache-size: 'lots' is not a size (a whole number with B, KB, MB, GB or TB)".to_string(),
            ]
        );
    }

    #[test]
    fn sizes_are_mesos_bytes() {
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("100B"), Ok(100));
        assert_eq!(parse_bytes("3KB"), Ok(3072));
        assert_eq!(parse_bytes("2GB"), Ok(2 << 30));
        assert_eq!(parse_bytes(" 1tb "), Ok(1 << 40));
        assert!(parse_bytes("1.5GB").is_err());
        assert!(parse_bytes("GB").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999TB").unwrap_err().to_string().contains("too large"));
    }

    #[test]
    fn strict_recovery_is_the_default_and_can_be_turned_off_as_in_mesos() {
        assert!(flags(&[]).unwrap().strict);
        assert!(!flags(&["--strict=false"]).unwrap().strict);
        assert!(flags(&["--strict", "true"]).unwrap().strict);
        let err = flags(&["--strict=maybe"]).unwrap_err().to_string();
        assert!(err.contains("--strict") && err.contains("maybe"), "{err}");
    }

    #[test]
    fn container_networks_are_off_by_default_and_need_libcontainer() {
        let res = ["--resources", "cpus:1;mem:64;disk:64;ports:[1-2]"];
        assert_eq!(flags(&res).unwrap().config().unwrap().network, None);
        let on =
            [&res[..], &["--isolation", "libcontainer", "--network-bridge", "agora0", "--dns-nameserver", "10.0.0.53"]]
                .concat();
        let n = flags(&on).unwrap().config().unwrap().network.unwrap();
        assert_eq!((n.bridge.as_str(), n.egress, n.table.as_str()), ("agora0", false, "agora"));
        assert_eq!(n.netns_dir, PathBuf::from(DEFAULT_NETNS_DIR));
        assert_eq!(n.nameservers, vec!["10.0.0.53".to_string()]);
        let bad = [
            &res[..],
            &[
                "--isolation",
                "process",
                "--network-bridge",
                "a-bridge-name-too-long",
                "--dns-nameserver",
                "dns.example",
            ],
            &["--network-netns-dir", "rel"],
        ]
        .concat();
        let errors = flags(&bad).unwrap().config().unwrap_err().0;
        assert_eq!(
            errors,
            vec![
                "--network-bridge: 'a-bridge-name-too-long' is not a link name (1-15 letters, digits, '-', '_' or '.')"
                    .to_string(),
                "--network-bridge: container networks need --isolation=libcontainer (a network namespace per container)"
                    .to_string(),
                "--network-netns-dir: 'rel' must be an absolute directory".to_string(),
                "--dns-nameserver: 'dns.example' is not an IP address".to_string(),
            ]
        );
    }

    #[test]
    fn the_docker_registry_is_an_absolute_directory() {
        let c = flags(&["--resources", "cpus:1;mem:64;disk:64;ports:[1-2]"]).unwrap().config().unwrap();
        assert_eq!(c.docker_registry, None);
        let c = flags(&["--docker_registry", "/srv/images", "--resources", "cpus:1;mem:64;disk:64;ports:[1-2]"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(c.docker_registry, Some(PathBuf::from("/srv/images")));
        let errors = flags(&["--docker-registry", "images"]).unwrap().config().unwrap_err();
        assert_eq!(errors.to_string(), "--docker-registry: 'images' must be an absolute directory");
    }

    #[test]
    fn master_accepts_http_prefix() {
        assert_eq!(parse_master("http://m1:5050/"), Ok("m1:5050".to_string()));
        assert_eq!(parse_master("m1:5050"), Ok("m1:5050".to_string()));
        assert!(parse_master("m1").unwrap_err().to_string().contains("'m1'"));
        assert_eq!(parse_master("zk://a:2181,b:2181/mesos/"), Ok("zk://a:2181,b:2181/mesos".to_string()));
        assert!(parse_master("zk://a:2181").is_err());
        assert!(parse_master("m1:99999").is_err());
    }

    #[test]
    fn every_isolation_is_selectable_by_name() {
        for (name, want) in [
            ("process", Isolation::Process),
            ("libcontainer", Isolation::Libcontainer),
            ("simulated", Isolation::Simulated),
        ] {
            let c =
                flags(&["--isolation", name, "--resources", "cpus:2;mem:1024;disk:4096"]).unwrap().config().unwrap();
            assert_eq!(c.isolation, want, "{name}");
        }
    }

    #[test]
    fn reports_every_bad_value_at_once() {
        let f = flags(&[
            "--port",
            "70000",
            "--ip",
            "nowhere",
            "--isolation",
            "cgroups/cpu",
            "--status-update-retry-interval",
            "10",
            "--registration-backoff-factor",
            "1parsec",
            "--executor-shutdown-grace-period",
            "soon",
            "--resources",
            "cpus:two;mem:1024;ports:[5-1]",
            "--attributes",
            "rack:r1;zone",
            "--gc_delay",
            "2years",
            "--gc-disk-headroom",
            "1.5",
            "--disk-watch-interval",
            "0secs",
        ])
        .unwrap();
        let errors = f.config().unwrap_err();
        let text = errors.to_string();
        assert_eq!(errors.0.len(), 12, "{text}");
        assert_eq!(text.lines().count(), 12, "{text}");
        assert!(text.contains("--gc-delay: '2years' has an unknown unit"), "{text}");
        assert!(text.contains("--gc-disk-headroom: '1.5' is not a fraction between 0.0 and 1.0"), "{text}");
        assert!(text.contains("--disk-watch-interval: '0secs' must be longer than zero"), "{text}");
        assert!(text.contains("--port: '70000'"), "{text}");
        assert!(text.contains("--ip: 'nowhere'"), "{text}");
        assert!(text.contains("--isolation: 'cgroups/cpu' is not supported; the isolations are"), "{text}");
        assert!(text.contains("--status-update-retry-interval: '10' has no unit"), "{text}");
        assert!(text.contains("--registration-backoff-factor: '1parsec'"), "{text}");
        assert!(text.contains("--executor-shutdown-grace-period: 'soon'"), "{text}");
        assert!(text.contains("--resources: resource item 'cpus:two' is malformed"), "{text}");
        assert!(text.contains("'ports:[5-1]'"), "{text}");
        assert!(text.contains("--attributes: attribute item 'zone' is malformed"), "{text}");
    }

    #[test]
    fn short_durations_and_underscore_names() {
        let f = Flags::try_parse_from([
            "agora-agent",
            "--master=http://m:5050",
            "--work_dir=/tmp/x",
            "--status-update-retry-interval=200ms",
            "--registration_backoff_factor=15s",
        ])
        .unwrap();
        let c = f.config().unwrap();
        assert_eq!(c.status_update_retry_interval, Duration::from_millis(200));
        assert_eq!(c.registration_backoff_factor, Duration::from_secs(15));
    }

    #[test]
    fn zero_and_huge_durations_are_refused() {
        let err = flags(&["--status-update-retry-interval", "0secs"]).unwrap().config().unwrap_err();
        assert!(err.to_string().contains("longer than zero"), "{err}");
        let err = flags(&["--registration-backoff-factor", "10000000000000000000secs"]).unwrap().config().unwrap_err();
        assert!(err.to_string().contains("longer than a year"), "{err}");
        let err = flags(&["--executor-shutdown-grace-period", "400days"]).unwrap().config().unwrap_err();
        assert!(err.to_string().contains("--executor-shutdown-grace-period: '400days' is longer than a year"), "{err}");
    }

    #[test]
    fn master_and_work_dir_are_required() {
        assert!(Flags::try_parse_from(["agora-agent", "--work-dir", "/tmp"]).is_err());
        assert!(Flags::try_parse_from(["agora-agent", "--master", "m:1"]).is_err());
    }

    #[test]
    fn detection_follows_mesos_rules() {
        assert_eq!(offered_mem_mb(16 * 1024), 15 * 1024);
        assert_eq!(offered_mem_mb(1024), 512);
        assert_eq!(offered_disk_mb(100 * 1024), 95 * 1024);
        assert_eq!(offered_disk_mb(8 * 1024), 4 * 1024);
        assert_eq!(count_cpu_list("0-3,6,8-9\n"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("x"), None);
        assert_eq!(meminfo_total_mb("MemTotal:       16384000 kB\nMemFree: 1 kB\n"), Some(16000));
    }

    #[test]
    fn given_resources_override_detected_ones() {
        let detected = Detected { cpus: Some(8.0), mem_total_mb: Some(4096), disk_total_mb: Some(20 * 1024) };
        let merged = merge_detected(Resources::parse("cpus(ads):2;mem:100").unwrap(), &detected);
        assert_eq!(merged.scalar("cpus"), Fixed::from_int(2));
        assert_eq!(merged.scalar("mem"), Fixed::from_int(100));
        assert_eq!(merged.scalar("disk"), Fixed::from_int(15 * 1024));
        assert_eq!(merged.ranges("ports"), Ranges::new([(31000, 32000)]));
    }

    #[test]
    fn failed_detection_falls_back() {
        let merged = merge_detected(Resources::new(), &Detected::default());
        assert_eq!(merged.scalar("cpus"), Fixed::from_int(1));
        assert_eq!(merged.scalar("mem"), Fixed::from_int(1024));
        assert_eq!(merged.scalar("disk"), Fixed::from_int(10 * 1024));
    }

    #[test]
    fn probe_finds_something_on_linux() {
        let d = Detected::probe(Path::new("/definitely/not/here"));
        assert!(d.cpus.unwrap_or(0.0) >= 1.0);
        assert!(d.disk_total_mb.is_some(), "statvfs of an ancestor ('/') works");
    }
}
