//! `NetLab`: hosts made of network namespaces, for container network tests that never send a packet off the machine.
//!
//! ```text
//!   switch netns  (bridge br0, 198.51.100.1/24: the master and the test itself live here)
//!     ├── veth ── host netns 0  (eth0 198.51.100.10/24: agent 0 with its own bridge, routes and nft table)
//!     ├── veth ── host netns 1  (eth0 198.51.100.11/24: agent 1)
//!     ...
//! ```
//!
//! - No namespace has a default route or any link to the root namespace: the only addresses anything can reach are
//!   the lab's own (198.51.100.0/24, TEST-NET-2, and the agents' subnets of the cluster CIDR they route to each
//!   other). The root namespace is never touched.
//! - Namespaces are created with `ip netns add` under a per-test prefix `agnl-<pid>-<tag>`; a lab sweeps the stale
//!   namespaces of dead test processes (`agnl-<pid>-*` whose pid is gone) when it starts, and deletes its own when
//!   dropped, so a failed test leaves nothing behind.
//! - Processes run in a host with `nsenter --net=<netns>` (not `ip netns exec`, which remounts `/sys` and hides the
//!   cgroup hierarchies containers need). The test body runs on a thread that joined the switch namespace
//!   ([`NetLab::run`]), so its sockets (HTTP clients, the SDK's gRPC) live there too.
//! - [`NetLab::leftovers`] lists what an agent left in its host after it stopped: links other than `lo` and `eth0`,
//!   routes other than the lab's, nftables objects, pinned namespaces, IPAM leases.

pub mod cluster;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// The lab's prefix of namespace names.
pub const PREFIX: &str = "agnl";
/// The switch's address; hosts are `198.51.100.(10 + n)`.
pub const SWITCH_IP: &str = "198.51.100.1";
/// Where `ip netns` pins named namespaces.
const NETNS_RUN: &str = "/run/netns";

/// The address of host `n` on the switch.
pub fn host_ip(n: usize) -> String {
    format!("198.51.100.{}", 10 + n)
}

/// Fails the test, saying how to install them, when root, `ip`, `nft`, `nsenter` or busybox are missing.
pub fn require_netlab_prerequisites() {
    crate::require_container_prerequisites();
    for (tool, flag, package) in [
        ("ip", "-V", "iproute2"),
        ("nft", "--version", "nftables"),
        ("nsenter", "--version", "util-linux"),
        ("busybox", "true", "busybox-static"),
    ] {
        let found = Command::new(tool).arg(flag).output().is_ok_and(|o| o.status.success());
        assert!(found, "network lab tests need `{tool}`: apt-get install -y {package}");
    }
}

/// Runs a command to completion; an error names it with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("run {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A lab: a switch namespace and `hosts` host namespaces hanging off it.
pub struct NetLab {
    /// Names of the namespaces, the switch's first.
    names: Vec<String>,
}

impl NetLab {
    /// Builds a lab of `hosts` hosts named after `tag` (short, unique per test).
    pub fn new(tag: &str, hosts: usize) -> Result<NetLab> {
        require_netlab_prerequisites();
        sweep_stale();
        let prefix = format!("{PREFIX}-{}-{tag}", std::process::id());
        let switch = format!("{prefix}-sw");
        let mut lab = NetLab { names: vec![] };
        run("ip", &["netns", "add", &switch])?;
        lab.names.push(switch.clone());
        let sw = |args: &[&str]| -> Result<String> { run("ip", &[&["-n", switch.as_str()], args].concat()) };
        sw(&["link", "set", "lo", "up"])?;
        sw(&["link", "add", "br0", "type", "bridge"])?;
        sw(&["addr", "add", &format!("{SWITCH_IP}/24"), "dev", "br0"])?;
        sw(&["link", "set", "br0", "up"])?;
        for n in 0..hosts {
            let host = format!("{prefix}-h{n}");
            run("ip", &["netns", "add", &host])?;
            lab.names.push(host.clone());
            let port = format!("p{n}");
            sw(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host])?;
            sw(&["link", "set", &port, "master", "br0", "up"])?;
            let h = |args: &[&str]| -> Result<String> { run("ip", &[&["-n", host.as_str()], args].concat()) };
            h(&["link", "set", "lo", "up"])?;
            h(&["addr", "add", &format!("{}/24", host_ip(n)), "dev", "eth0"])?;
            h(&["link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    /// The pinned namespace of the switch.
    pub fn switch(&self) -> PathBuf {
        Path::new(NETNS_RUN).join(&self.names[0])
    }

    /// The pinned namespace of host `n`.
    pub fn host(&self, n: usize) -> PathBuf {
        Path::new(NETNS_RUN).join(&self.names[n + 1])
    }

    /// Runs `ip <args>` in host `n`.
    pub fn ip(&self, n: usize, args: &[&str]) -> Result<String> {
        run("ip", &[&["-n", self.names[n + 1].as_str()], args].concat())
    }

    /// `nsenter --net=<netns> -- <program> <args>` to completion.
    pub fn exec_in(netns: &Path, program: &str, args: &[&str]) -> Result<String> {
        let net = format!("--net={}", netns.display());
        run("nsenter", &[&[net.as_str(), "--", program], args].concat())
    }

    /// Spawns `bin` (a workspace binary) in the namespace `netns` as [`crate::Proc`] does, through `nsenter --net`.
    pub fn spawn_in(netns: &Path, name: &str, bin: &str, args: &[String], log_dir: &Path) -> Result<crate::Proc> {
        let mut all = vec![format!("--net={}", netns.display()), "--".to_string()];
        all.push(crate::bin_dir().join(bin).display().to_string());
        all.extend(args.iter().cloned());
        crate::Proc::spawn_program(name, Path::new("nsenter"), &all, log_dir)
    }

    /// Runs `body` on a thread inside the switch namespace with a tokio runtime of its own (whose threads are in the
    /// switch namespace too), and returns its result.
    pub fn run<T: Send, F: Future<Output = T>>(&self, body: impl FnOnce() -> F + Send) -> Result<T> {
        let switch = std::fs::File::open(self.switch()).context("open the switch namespace")?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                nix::sched::setns(&switch, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("enter the switch namespace")?;
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
                Ok(rt.block_on(body()))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the lab's test body panicked"))?
        })
    }

    /// Host `n`'s links, addresses, routes, `ip_forward` and nftables ruleset, for a failing test's message.
    pub fn describe(&self, n: usize) -> String {
        let show = |r: Result<String>| r.unwrap_or_else(|e| format!("({e})"));
        format!(
            "--- host {n}\n{}{}{}ip_forward={}{}",
            show(self.ip(n, &["-br", "link"])),
            show(self.ip(n, &["-br", "addr"])),
            show(self.ip(n, &["route"])),
            show(Self::exec_in(&self.host(n), "cat", &["/proc/sys/net/ipv4/ip_forward"])),
            show(Self::exec_in(&self.host(n), "nft", &["list", "ruleset"])),
        )
    }

    /// What the agent of host `n` (work dir `work_dir`, namespaces pinned under `netns_dir`) left behind once it
    /// stopped; empty when it cleaned up everything.
    pub fn leftovers(&self, n: usize, work_dir: &Path, netns_dir: &Path) -> Result<Vec<String>> {
        let mut left = Vec::new();
        for line in self.ip(n, &["-br", "link"])?.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let name = name.split('@').next().unwrap_or_default();
            if !matches!(name, "lo" | "eth0") {
                left.push(format!("link {name}"));
            }
        }
        for line in self.ip(n, &["route"])?.lines() {
            if !line.starts_with("198.51.100.0/24 ") {
                left.push(format!("route {line}"));
            }
        }
        let ruleset = Self::exec_in(&self.host(n), "nft", &["list", "ruleset"])?;
        if !ruleset.trim().is_empty() {
            left.push(format!("nft {}", ruleset.trim()));
        }
        let forward = Self::exec_in(&self.host(n), "cat", &["/proc/sys/net/ipv4/ip_forward"])?;
        if forward.trim() != "0" {
            left.push("ip_forward is still on".into());
        }
        for pin in std::fs::read_dir(netns_dir).into_iter().flatten().flatten() {
            left.push(format!("netns {}", pin.path().display()));
        }
        let ipam = work_dir.join("network/ipam");
        for lease in std::fs::read_dir(&ipam).into_iter().flatten().flatten() {
            let name = lease.file_name().to_string_lossy().to_string();
            if name.parse::<std::net::Ipv4Addr>().is_ok() {
                left.push(format!("lease {name}"));
            }
        }
        Ok(left)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", name]) {
                eprintln!("WARNING: cannot delete the lab namespace {name}: {e}");
            }
        }
    }
}

/// Deletes the lab namespaces of test processes that are gone (a test killed before its lab was dropped).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("sweeping the stale lab namespace {name}");
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

/// Fails unless `text` mentions `what` (a readable assertion for command output).
pub fn expect_contains(text: &str, what: &str) -> Result<()> {
    if !text.contains(what) {
        bail!("expected {what:?} in:\n{text}");
    }
    Ok(())
}
