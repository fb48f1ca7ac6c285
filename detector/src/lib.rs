//! `agora-detector`: finds the leading Agora master, for agents, frameworks (the SDK), the CLI and the masters
//! themselves.
//!
//! A master is named either by a fixed address (`HOST:PORT`, `http://HOST:PORT`) or by a ZooKeeper URL
//! (`zk://HOST:PORT[,HOST:PORT]/PATH`). Under `PATH` each master holds an ephemeral sequential member
//! `json.info_NNNNNNNNNN` whose data is its `MasterInfo` as JSON, exactly as Mesos writes it; the member with the lowest
//! sequence leads. Like Mesos's detectors this one lists the children, ignores everything that is not a
//! `json.info_` member (e.g. the registry node), takes the minimum and reads `address.ip` / `address.port`.
//!
//! This crate is separate from the master so that the agent, the SDK and the CLI can follow the leader without
//! depending on the master crate; it depends on nothing of Agora's. Being the lowest crate every reconnecting
//! crate depends on, it also holds [`backoff`], the retry delays every reconnect loop uses (the detector's and the
//! election's ZooKeeper sessions, the SDK driver, the agent's link).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use zookeeper_client as zk;

pub mod backoff;
pub mod election;

/// Mesos's label for the JSON `MasterInfo` members (`MASTER_INFO_JSON_LABEL`), followed by `_` and the sequence.
pub const MEMBER_PREFIX: &str = "json.info_";

/// The ZooKeeper session timeout a detector uses (Mesos's `--zk_session_timeout` default).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How the detector and the election retry ZooKeeper: from half a second, doubling up to 10 s, with jitter.
pub const ZK_BACKOFF: backoff::Backoff = backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectorError {
    #[error("'{url}' is not a ZooKeeper URL zk://HOST:PORT[,HOST:PORT]/PATH: {why}")]
    BadZkUrl { url: String, why: &'static str },
    #[error("'{0}' is not a master address: expected HOST:PORT, http://HOST:PORT or zk://HOST:PORT/PATH")]
    BadAddress(String),
}

/// A ZooKeeper ensemble and the path under which the masters contend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port[,host:port]`, as the ZooKeeper client takes it.
    pub servers: String,
    /// Absolute path without a trailing slash, e.g. `/agora`.
    pub path: String,
}

impl ZkUrl {
    pub fn parse(url: &str) -> Result<ZkUrl, DetectorError> {
        let bad = |why| DetectorError::BadZkUrl { url: url.to_string(), why };
        let rest = url.strip_prefix("zk://").ok_or_else(|| bad("it must start with zk://"))?;
        let (servers, path) = rest.split_once('/').ok_or_else(|| bad("it has no /PATH"))?;
        if servers.is_empty()
            || servers
                .split(',')
                .any(|s| s.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()))
        {
            return Err(bad("every server must be HOST:PORT"));
        }
        let path = format!("/{}", path.trim_end_matches('/'));
        if path == "/" || path.contains("//") {
            return Err(bad("the path must name a node, e.g. /agora"));
        }
        Ok(ZkUrl { servers: servers.to_string(), path })
    }

    /// The path of a member's node.
    pub fn member_path(&self, member: &str) -> String {
        format!("{}/{member}", self.path)
    }
}

impl fmt::Display for ZkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zk://{}{}", self.servers, self.path)
    }
}

/// How to find the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSpec {
    /// `host:port`.
    Fixed(String),
    ZooKeeper(ZkUrl),
}

impl MasterSpec {
    /// Parses `zk://...`, `http://HOST:PORT[/]` or `HOST:PORT`.
    pub fn parse(text: &str) -> Result<MasterSpec, DetectorError> {
        let text = text.trim();
        if text.starts_with("zk://") {
            return ZkUrl::parse(text).map(MasterSpec::ZooKeeper);
        }
        let hostport = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(MasterSpec::Fixed(hostport.to_string()))
            }
            _ => Err(DetectorError::BadAddress(text.to_string())),
        }
    }
}

impl fmt::Display for MasterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterSpec::Fixed(a) => f.write_str(a),
            MasterSpec::ZooKeeper(z) => z.fmt(f),
        }
    }
}

/// `MasterInfo.address` as Mesos writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub hostname: String,
    pub ip: String,
    pub port: u16,
}

/// `MasterInfo` as JSON, field for field as Mesos's `JSON::protobuf(MasterInfo)` writes it: `ip` is the IPv4
/// address as a uint32 in network byte order read as a host (little-endian) integer, `pid` is libprocess's
/// `master@IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MesosMasterInfo {
    pub id: String,
    pub ip: u32,
    pub port: u16,
    pub pid: String,
    pub hostname: String,
    pub version: String,
    pub address: Address,
}

impl MesosMasterInfo {
    pub fn new(id: &str, ip: IpAddr, port: u16, hostname: &str, version: &str) -> MesosMasterInfo {
        let packed = match ip {
            IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
            IpAddr::V6(_) => 0,
        };
        MesosMasterInfo {
            id: id.to_string(),
            ip: packed,
            port,
            pid: format!("master@{ip}:{port}"),
            hostname: hostname.to_string(),
            version: version.to_string(),
            address: Address { hostname: hostname.to_string(), ip: ip.to_string(), port },
        }
    }

    /// `ip:port` to connect to (Mesos's detectors read `address.ip` and `address.port`).
    pub fn connect_address(&self) -> String {
        format!("{}:{}", self.address.ip, self.address.port)
    }
}

/// The leading member among `children` (names without the parent path): the `json.info_` member with the lowest
/// sequence number. Other children are ignored.
pub fn leading_member(children: &[String]) -> Option<&String> {
    lowest_member(children, MEMBER_PREFIX)
}

/// The member `<prefix>NNNN` with the lowest sequence among `children`; other children are ignored.
pub fn lowest_member<'a>(children: &'a [String], prefix: &str) -> Option<&'a String> {
    children
        .iter()
        .filter_map(|c| c.strip_prefix(prefix).and_then(|s| s.parse::<u64>().ok()).map(|seq| (seq, c)))
        .min()
        .map(|(_, c)| c)
}

/// A master's member data: Mesos's `MasterInfo` JSON.
pub fn decode_master_info(data: &[u8]) -> Option<Leader> {
    match serde_json::from_slice::<MesosMasterInfo>(data) {
        Ok(info) => Some(Leader { address: info.connect_address(), id: info.id }),
        Err(e) => {
            tracing::warn!(error = %e, "leading member holds no MasterInfo JSON; ignoring it");
            None
        }
    }
}

/// The leader as a detector last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// `ip:port`.
    pub address: String,
    /// The master's id (empty for a fixed address).
    pub id: String,
}

/// Follows the leading master. Cloning shares the background task, which ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Detector {
    rx: watch::Receiver<Option<Leader>>,
    /// For a fixed address: the sender, kept so that waiting for a change waits forever instead of failing.
    _fixed: Option<std::sync::Arc<watch::Sender<Option<Leader>>>>,
}

impl Detector {
    /// Starts detecting. A fixed address is its own leader; a ZooKeeper URL starts a thread with its own runtime
    /// that follows the group and reconnects on its own whenever ZooKeeper is unreachable. The thread keeps the
    /// session's heartbeats going however busy the caller's runtime is (a process running thousands of agents, a
    /// scheduler in a storm of updates), and ends when the last clone of the detector is dropped.
    pub fn start(spec: &MasterSpec) -> Detector {
        match spec {
            MasterSpec::Fixed(a) => {
                let (tx, rx) = watch::channel(Some(Leader { address: a.clone(), id: String::new() }));
                Detector { rx, _fixed: Some(std::sync::Arc::new(tx)) }
            }
            MasterSpec::ZooKeeper(url) => {
                let (tx, rx) = watch::channel(None);
                let url = url.clone();
                let spawned = std::thread::Builder::new().name("zk-detector".into()).spawn(move || {
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt.block_on(follow(url, DEFAULT_SESSION_TIMEOUT, tx)),
                        Err(e) => tracing::error!(error = %e, "detector: cannot start its runtime"),
                    }
                });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "detector: cannot start its thread");
                }
                Detector { rx, _fixed: None }
            }
        }
    }

    /// The leader now, if one is known.
    pub fn current(&self) -> Option<Leader> {
        self.rx.borrow().clone()
    }

    /// Waits until a leader is known and returns it.
    pub async fn leader(&mut self) -> Leader {
        loop {
            if let Some(l) = self.rx.borrow_and_update().clone() {
                return l;
            }
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Waits until the leader differs from `than` (a new leader, or one appeared) and returns it.
    pub async fn changed_from(&mut self, than: &Leader) -> Leader {
        loop {
            if let Some(l) = self.rx.borrow_and_update().clone().filter(|l| l != than) {
                return l;
            }
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The raw channel (`None` while no leader is known).
    pub fn watch(&self) -> watch::Receiver<Option<Leader>> {
        self.rx.clone()
    }
}

/// The leader's `ip:port` for a one-shot command: a fixed address as is, or one look in ZooKeeper (waiting up to
/// `within` for a leader to appear).
pub async fn resolve(spec: &MasterSpec, within: Duration) -> Result<String, String> {
    match spec {
        MasterSpec::Fixed(a) => Ok(a.clone()),
        MasterSpec::ZooKeeper(url) => {
            let mut d = Detector::start(spec);
            match tokio::time::timeout(within, d.leader()).await {
                Ok(l) => Ok(l.address),
                Err(_) => Err(format!("no leading master found under {url} within {within:?}")),
            }
        }
    }
}

/// Reads the leader under `url` (one look, no watch): `Ok(None)` when there is no member.
pub async fn read_leader(client: &zk::Client, url: &ZkUrl) -> Result<Option<Leader>, zk::Error> {
    let children = match client.list_children(&url.path).await {
        Ok(c) => c,
        Err(zk::Error::NoNode) => return Ok(None),
        Err(e) => return Err(e),
    };
    leader_from(client, url, &children).await
}

/// Reads the leader of a group of `<prefix>` members under `url`, decoding its data with `decode`.
pub async fn read_leader_with(
    client: &zk::Client,
    url: &ZkUrl,
    prefix: &str,
    decode: fn(&[u8]) -> Option<Leader>,
) -> Result<Option<Leader>, zk::Error> {
    let children = match client.list_children(&url.path).await {
        Ok(c) => c,
        Err(zk::Error::NoNode) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(member) = lowest_member(&children, prefix) else { return Ok(None) };
    match client.get_data(&url.member_path(member)).await {
        Ok((d, _)) => Ok(decode(&d)),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn leader_from(client: &zk::Client, url: &ZkUrl, children: &[String]) -> Result<Option<Leader>, zk::Error> {
    let Some(member) = leading_member(children) else { return Ok(None) };
    let data = match client.get_data(&url.member_path(member)).await {
        Ok((d, _)) => d,
        // The member went away between the listing and the read; the next watch event says who leads now.
        Err(zk::Error::NoNode) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(decode_master_info(&data))
}

/// Opens a ZooKeeper session to `url`'s servers, retrying with `retry`'s backoff until it succeeds (the first
/// failure is a warning, the rest are debug logs); `None` once `closed` resolves, i.e. nobody wants the session.
/// The caller resets `retry` once the session has done useful work, so a session that breaks at once backs off too.
pub async fn connect_retrying(
    url: &ZkUrl,
    session_timeout: Duration,
    purpose: &str,
    retry: &mut backoff::Retry,
    closed: impl std::future::Future<Output = ()>,
) -> Option<zk::Client> {
    tokio::pin!(closed);
    loop {
        let connect = zk::Client::connector().with_session_timeout(session_timeout).connect(&url.servers);
        let result = tokio::select! {
            _ = &mut closed => return None,
            c = connect => c,
        };
        let e = match result {
            Ok(client) => return Some(client),
            Err(e) => e,
        };
        let first = retry.failures() == 0;
        let delay = retry.next_delay();
        if first {
            tracing::warn!(zk = %url, error = %e, retry_in = ?delay, "{purpose}: cannot reach ZooKeeper; retrying");
        } else {
            tracing::debug!(zk = %url, error = %e, retry_in = ?delay, "{purpose}: cannot reach ZooKeeper; retrying");
        }
        if pause(delay, &mut closed).await {
            return None;
        }
    }
}

/// Sleeps for `delay`; true when `closed` resolved first.
pub(crate) async fn pause(
    delay: Duration,
    closed: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> bool {
    tokio::select! {
        _ = closed.as_mut() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

async fn follow(url: ZkUrl, session_timeout: Duration, tx: watch::Sender<Option<Leader>>) {
    let mut retry = backoff::Retry::new(ZK_BACKOFF);
    loop {
        let Some(client) = connect_retrying(&url, session_timeout, "leader detection", &mut retry, tx.closed()).await
        else {
            return;
        };
        // One session: watch the children until the session ends.
        loop {
            let step = async {
                match client.list_and_watch_children(&url.path).await {
                    Ok((children, watcher)) => {
                        let leader = leader_from(&client, &url, &children).await?;
                        Ok::<_, zk::Error>((leader, Some(watcher)))
                    }
                    Err(zk::Error::NoNode) => {
                        // No master has created the path yet: wait for it.
                        let (_, watcher) = client.check_and_watch_stat(&url.path).await?;
                        Ok((None, Some(watcher)))
                    }
                    Err(e) => Err(e),
                }
            };
            match step.await {
                Ok((leader, watcher)) => {
                    retry.reset();
                    tx.send_if_modified(|cur| {
                        if *cur != leader {
                            tracing::info!(zk = %url, leader = ?leader.as_ref().map(|l| &l.address), "leading master changed");
                            *cur = leader;
                            true
                        } else {
                            false
                        }
                    });
                    let Some(w) = watcher else { continue };
                    let ev = tokio::select! {
                        _ = tx.closed() => return,
                        ev = w.changed() => ev,
                    };
                    if matches!(
                        ev.session_state,
                        zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
                    ) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(zk = %url, error = %e, "ZooKeeper session broke; reconnecting");
                    break;
                }
            }
        }
        // Reconnecting at once could spin against a server that accepts sessions and then fails every request.
        drop(client);
        let closed = tx.closed();
        tokio::pin!(closed);
        if pause(retry.next_delay(), &mut closed).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zk_urls_and_fixed_addresses() {
        let z = ZkUrl::parse("zk://a:2181,b:2182/agora/").unwrap();
        assert_eq!(z.servers, "a:2181,b:2182");
        assert_eq!(z.path, "/agora");
        assert_eq!(z.to_string(), "zk://a:2181,b:2182/agora");
        assert!(ZkUrl::parse("zk://a:2181").is_err());
        assert!(ZkUrl::parse("zk://a/agora").is_err());
        assert!(ZkUrl::parse("zk://a:1/").is_err());
        assert_eq!(MasterSpec::parse("http://m1:5050/").unwrap(), MasterSpec::Fixed("m1:5050".into()));
        assert_eq!(MasterSpec::parse("m1:5050").unwrap(), MasterSpec::Fixed("m1:5050".into()));
        assert!(MasterSpec::parse("m1").is_err());
        assert!(MasterSpec::parse("m1:99999").is_err());
        assert!(matches!(MasterSpec::parse("zk://h:1/p").unwrap(), MasterSpec::ZooKeeper(_)));
    }

    #[test]
    fn master_info_json_is_mesos_shaped() {
        let info = MesosMasterInfo::new("abc", "127.0.0.1".parse().unwrap(), 5050, "m1", "1.11.0");
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "abc", "ip": 16777343, "port": 5050, "pid": "master@127.0.0.1:5050", "hostname": "m1",
                "version": "1.11.0", "address": {"hostname": "m1", "ip": "127.0.0.1", "port": 5050}
            })
        );
        // Mesos's own JSON (with fields this crate does not use) is read too.
        let mesos = r#"{"id":"x","ip":16777343,"port":5050,"pid":"master@10.0.0.1:5050","hostname":"m1","version":"1.11.0","address":{"hostname":"m1","ip":"10.0.0.1","port":5050},"capabilities":[{"type":"AGENT_UPDATE"}]}"#;
        let parsed: MesosMasterInfo = serde_json::from_str(mesos).unwrap();
        assert_eq!(parsed.connect_address(), "10.0.0.1:5050");
    }

    #[test]
    fn lowest_json_info_member_leads() {
        let kids: Vec<String> =
            ["json.info_0000000012", "registry", "json.info_0000000003", "info_0000000001", "log_replicas"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(leading_member(&kids).unwrap(), "json.info_0000000003");
        assert_eq!(leading_member(&["registry".to_string()]), None);
    }
}
