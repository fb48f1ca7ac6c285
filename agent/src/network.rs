//! The container network's shell: applies what the core decides ([`crate::core::NetworkState`]) through an
//! [`agora_net::NetworkDriver`] and keeps the agent's network state under `<work_dir>/network`:
//!
//! - `assignment.json`: the master's assignment, so a restarted agent brings its host network back (and asks for the
//!   same subnet) before it has registered again;
//! - `ipam/`: the address leases ([`agora_net::Ipam`]), the durable record of which container holds which address;
//! - `containers/<id>/{resolv.conf,hosts}`: the files bound into a bridged container;
//! - the driver's own state (`ip_forward`'s previous value).
//!
//! Attaching a container allocates its address first and frees it when any later step fails; detaching frees the
//! address last, so an address is never handed out while a namespace may still use it. Every driver call blocks and
//! runs on tokio's blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agora_net::plan::{attachment, host_link_name, host_spec, hosts_file, resolv_conf};
use agora_net::{Assignment, HostConfig, HostSpec, Ipam, IpamError, NetError, NetworkDriver};
use tracing::{info, warn};

use crate::containerizer::spec::{AttachedNetwork, ContainerNetwork};
use crate::core::NetworkState;

/// The agent's network state directory under its work dir.
pub const NETWORK_DIR: &str = "network";
const ASSIGNMENT: &str = "assignment.json";
const IPAM_DIR: &str = "ipam";
const CONTAINERS_DIR: &str = "containers";

/// Why a network step failed; names the container or path.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Driver(#[from] NetError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Save(#[from] agora_runtime::WriteError),
    #[error("cannot attach container {container_id} to the container network: {source}")]
    Attach { container_id: String, source: Box<NetworkError> },
    #[error("a network task panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the container network is not in place on this agent: {0}")]
    NotInPlace(String),
}

/// The agent's container network.
pub struct NetworkManager {
    config: HostConfig,
    dir: PathBuf,
    ipam: Ipam,
    driver: Arc<dyn NetworkDriver>,
    /// The host side as last applied (for teardown).
    applied: Mutex<Option<HostSpec>>,
    /// Why the host side could not be applied last time (a cluster CIDR that overlaps a route, no nft, ...):
    /// containers are not attached while it holds, and their launch fails saying why.
    broken: Mutex<Option<String>>,
}

impl NetworkManager {
    /// The network state under `<work_dir>/network`, applied through `driver`.
    pub fn new(config: HostConfig, work_dir: &Path, driver: Arc<dyn NetworkDriver>) -> Result<Self, NetworkError> {
        let dir = work_dir.join(NETWORK_DIR);
        let ipam = Ipam::open(&dir.join(IPAM_DIR))?;
        Ok(NetworkManager { config, dir, ipam, driver, applied: Mutex::new(None), broken: Mutex::new(None) })
    }

    /// The real driver's state lives beside the rest.
    pub fn linux_driver(work_dir: &Path) -> Arc<dyn NetworkDriver> {
        Arc::new(agora_net::LinuxDriver::new(&work_dir.join(NETWORK_DIR)))
    }

    /// The assignment the agent last applied, if any (unreadable is none, logged).
    pub fn assignment(&self) -> Option<Assignment> {
        let path = self.dir.join(ASSIGNMENT);
        let text = std::fs::read(&path).ok()?;
        serde_json::from_slice(&text)
            .map_err(|e| warn!(path = %path.display(), error = %e, "ignoring an unreadable network assignment"))
            .ok()
    }

    /// The address of every container that holds one.
    pub fn leases(&self) -> BTreeMap<String, Ipv4Addr> {
        match self.ipam.leases() {
            Ok(l) => l.into_iter().filter(|(_, owner)| !owner.is_empty()).map(|(ip, owner)| (owner, ip)).collect(),
            Err(e) => {
                warn!(error = %e, "cannot read the address leases");
                BTreeMap::new()
            }
        }
    }

    /// Makes the host's network match `state`, after recording the assignment (when it changed).
    pub async fn apply(&self, state: &NetworkState) -> Result<(), NetworkError> {
        let known = self.applied.lock().ok().and_then(|a| a.as_ref().map(|s| s.subnet));
        if known != Some(state.assignment.subnet) || self.assignment().as_ref() != Some(&state.assignment) {
            let text = serde_json::to_vec_pretty(&state.assignment).unwrap_or_default();
            let path = self.dir.join(ASSIGNMENT);
            agora_runtime::write_atomically(&path, &text, agora_runtime::Durability::MachineCrash)?;
        }
        let spec = host_spec(&self.config, &state.assignment, &state.forwards);
        let driver = self.driver.clone();
        let applied = spec.clone();
        // Only the port mappings changed (a bridged task started or ended): the table alone is replaced.
        let rules_only = self.applied.lock().ok().and_then(|a| a.clone()).is_some_and(|old| {
            let mut old = old;
            old.ruleset.forwards = spec.ruleset.forwards.clone();
            old == spec
        });
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            if rules_only { driver.apply_rules(&applied.ruleset) } else { driver.apply_host(&applied) }
        })
        .await?;
        if let Ok(mut broken) = self.broken.lock() {
            *broken = result.as_ref().err().map(|e| e.to_string());
        }
        result?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(forwards = spec.ruleset.forwards.len(), took_ms = format!("{ms:.1}"), "host network applied");
        if let Ok(mut a) = self.applied.lock() {
            *a = Some(spec);
        }
        Ok(())
    }

    fn files_dir(&self, container_id: &str) -> PathBuf {
        self.dir.join(CONTAINERS_DIR).join(container_id)
    }

    /// Gives `container_id` an address in `network.subnet`, its namespace, veth pair and files.
    pub async fn attach(
        &self,
        container_id: &str,
        network: &ContainerNetwork,
    ) -> Result<AttachedNetwork, NetworkError> {
        if let Some(why) = self.broken.lock().ok().and_then(|b| b.clone()) {
            return Err(NetworkError::NotInPlace(why));
        }
        let started = std::time::Instant::now();
        let ip = self.ipam.allocate(&network.subnet, container_id)?;
        match self.attach_at(container_id, network, ip).await {
            Ok(attached) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                info!(container_id, ip = %ip, took_ms = format!("{ms:.1}"), "container attached to the container network");
                Ok(attached)
            }
            Err(e) => {
                let _ = self.detach(container_id).await;
                Err(NetworkError::Attach { container_id: container_id.to_string(), source: Box::new(e) })
            }
        }
    }

    async fn attach_at(
        &self,
        container_id: &str,
        network: &ContainerNetwork,
        ip: Ipv4Addr,
    ) -> Result<AttachedNetwork, NetworkError> {
        let files = self.files_dir(container_id);
        std::fs::create_dir_all(&files).map_err(|source| NetworkError::Write { path: files.clone(), source })?;
        let (resolv, hosts) = (files.join("resolv.conf"), files.join("hosts"));
        for (path, text) in [
            (&resolv, resolv_conf(&self.config.nameservers, &self.config.search)),
            (&hosts, hosts_file(ip, &network.hostname)),
        ] {
            std::fs::write(path, text).map_err(|source| NetworkError::Write { path: path.clone(), source })?;
        }
        let a = attachment(&self.config, &network.subnet, container_id, ip);
        let driver = self.driver.clone();
        let netns = a.netns.clone();
        tokio::task::spawn_blocking(move || driver.attach(&a)).await??;
        Ok(AttachedNetwork { ip, netns, resolv_conf: resolv, hosts })
    }

    /// Removes a container's veth pair, namespace and files, then frees its address.
    pub async fn detach(&self, container_id: &str) -> Result<(), NetworkError> {
        let netns = self.config.netns_dir.join(container_id);
        let link = host_link_name(&self.config.link_prefix, container_id);
        let driver = self.driver.clone();
        tokio::task::spawn_blocking(move || driver.detach(&netns, &link)).await??;
        let files = self.files_dir(container_id);
        if files.exists() {
            std::fs::remove_dir_all(&files).map_err(|source| NetworkError::Write { path: files, source })?;
        }
        self.ipam.release_container(container_id)?;
        Ok(())
    }

    /// Detaches every container but the `live` ones: leases, pinned namespaces and files left by containers that
    /// ended while the agent was away (or a launch cut short); leases of no container are freed too.
    pub async fn reconcile(&self, live: &BTreeSet<String>) {
        let mut stale: BTreeSet<String> = agora_net::netns::list(&self.config.netns_dir).into_iter().collect();
        stale.extend(self.leases().into_keys());
        if let Ok(entries) = std::fs::read_dir(self.dir.join(CONTAINERS_DIR)) {
            stale.extend(entries.flatten().filter_map(|e| e.file_name().to_str().map(String::from)));
        }
        for id in stale.iter().filter(|id| !live.contains(*id)) {
            info!(container_id = %id, "freeing the network of a container that is gone");
            if let Err(e) = self.detach(id).await {
                warn!(container_id = %id, error = %e, "cannot free a container's network");
            }
        }
        if let Ok(leases) = self.ipam.leases() {
            for (ip, _) in leases.into_iter().filter(|(_, owner)| owner.is_empty()) {
                let _ = self.ipam.release(ip);
            }
        }
    }

    /// Removes the host side (bridge, routes, table; `ip_forward` restored): the agent stops and no container is
    /// left.
    pub async fn teardown(&self) -> Result<(), NetworkError> {
        let spec = self.applied.lock().ok().and_then(|mut a| a.take());
        let Some(spec) = spec.or_else(|| self.assignment().map(|a| host_spec(&self.config, &a, &[]))) else {
            return Ok(());
        };
        let driver = self.driver.clone();
        tokio::task::spawn_blocking(move || driver.remove_host(&spec)).await??;
        info!("container network removed from the host");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_net::RecordingDriver;
    use agora_net::driver::DriverCall;

    fn config(dir: &Path) -> HostConfig {
        HostConfig {
            bridge: "agora0".into(),
            netns_dir: dir.join("netns"),
            link_prefix: "ag".into(),
            table: "agora".into(),
            egress: false,
            nameservers: vec!["192.0.2.53".into()],
            search: vec![],
        }
    }

    fn network() -> ContainerNetwork {
        ContainerNetwork {
            name: "agora".into(),
            subnet: "10.233.1.0/24".parse().unwrap(),
            hostname: "agora".into(),
            attached: None,
        }
    }

    #[tokio::test]
    async fn attach_leases_an_address_writes_the_files_and_detach_frees_everything() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(RecordingDriver::default());
        let m = NetworkManager::new(config(dir.path()), dir.path(), driver.clone()).unwrap();
        let a = m.attach("c1", &network()).await.unwrap();
        assert_eq!(a.ip.to_string(), "10.233.1.2");
        assert_eq!(
            std::fs::read_to_string(&a.resolv_conf).unwrap(),
            "# written by the agora agent\nnameserver 192.0.2.53\n"
        );
        assert!(std::fs::read_to_string(&a.hosts).unwrap().contains("10.233.1.2\tagora"));
        assert_eq!(m.leases(), BTreeMap::from([("c1".to_string(), a.ip)]));
        assert!(
            matches!(&driver.calls()[0], DriverCall::Attach(at) if at.ip == a.ip && at.netns == dir.path().join("netns/c1"))
        );
        m.detach("c1").await.unwrap();
        assert!(m.leases().is_empty());
        assert!(!a.resolv_conf.exists());
        assert!(
            matches!(&driver.calls()[1], DriverCall::Detach { host_link, .. } if *host_link == host_link_name("ag", "c1"))
        );
    }

    #[tokio::test]
    async fn a_failed_attachment_frees_its_address_and_reconcile_frees_what_is_not_live() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(RecordingDriver::default());
        driver.fail_attach.lock().unwrap().push("bad".into());
        let m = NetworkManager::new(config(dir.path()), dir.path(), driver.clone()).unwrap();
        let e = m.attach("bad", &network()).await.unwrap_err().to_string();
        assert!(e.starts_with("cannot attach container bad to the container network"), "{e}");
        assert!(m.leases().is_empty());
        m.attach("keep", &network()).await.unwrap();
        m.attach("gone", &network()).await.unwrap();
        m.reconcile(&BTreeSet::from(["keep".to_string()])).await;
        assert_eq!(m.leases().into_keys().collect::<Vec<_>>(), ["keep"]);
    }

    #[tokio::test]
    async fn a_host_side_that_cannot_be_applied_refuses_attachments_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(RecordingDriver::default());
        *driver.fail_host.lock().unwrap() = Some("the cluster CIDR overlaps a route".into());
        let m = NetworkManager::new(config(dir.path()), dir.path(), driver.clone()).unwrap();
        let assignment = Assignment {
            name: "agora".into(),
            cluster: "10.233.0.0/16".parse().unwrap(),
            subnet: "10.233.1.0/24".parse().unwrap(),
            peers: vec![],
        };
        let state = NetworkState { assignment, forwards: vec![] };
        assert!(m.apply(&state).await.is_err());
        let e = m.attach("c1", &network()).await.unwrap_err().to_string();
        assert!(e.contains("not in place") && e.contains("overlaps a route"), "{e}");
        assert!(m.leases().is_empty(), "nothing was leased");
        *driver.fail_host.lock().unwrap() = None;
        m.apply(&state).await.unwrap();
        m.attach("c1", &network()).await.unwrap();
    }

    #[tokio::test]
    async fn the_assignment_is_kept_and_teardown_removes_the_host_side() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(RecordingDriver::default());
        let m = NetworkManager::new(config(dir.path()), dir.path(), driver.clone()).unwrap();
        assert_eq!(m.assignment(), None);
        let assignment = Assignment {
            name: "agora".into(),
            cluster: "10.233.0.0/16".parse().unwrap(),
            subnet: "10.233.1.0/24".parse().unwrap(),
            peers: vec![],
        };
        m.apply(&NetworkState { assignment: assignment.clone(), forwards: vec![] }).await.unwrap();
        let again = NetworkManager::new(config(dir.path()), dir.path(), driver.clone()).unwrap();
        assert_eq!(again.assignment(), Some(assignment.clone()));
        again.teardown().await.unwrap();
        assert!(matches!(driver.calls().last(), Some(DriverCall::RemoveHost(b)) if b == "agora0"));
        // A change of port mappings alone replaces the table alone.
        let forward = agora_net::PortForward {
            protocol: agora_net::Protocol::Tcp,
            host_port: 31000,
            ip: "10.233.1.2".parse().unwrap(),
            container_port: 80,
        };
        m.apply(&NetworkState { assignment: assignment.clone(), forwards: vec![forward] }).await.unwrap();
        assert!(matches!(driver.calls().last(), Some(DriverCall::ApplyRules(r)) if r.forwards == vec![forward]));
    }
}
