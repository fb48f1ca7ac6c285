//! The agent's packet rules: one nftables table (`ip agora`) rendered as text from plain data ([`Ruleset::render`],
//! pure and golden-tested) and applied with `nft -f -` ([`apply`]), which replaces the whole table in one atomic
//! transaction, so the kernel never holds half a ruleset.
//!
//! What the table does, in the order a packet meets it:
//! - **Safety first** (`forward`, `output`): traffic to an address of the cluster CIDR that no known subnet owns (the
//!   agent's own or a peer's) is rejected, so it can never follow a default route off the machine; traffic forwarded
//!   from the bridge to anything outside the cluster CIDR is dropped unless egress is enabled (replies of accepted
//!   connections excepted).
//! - **Port mappings** (`prerouting`, `output_nat`): `protocol . hostPort` → `containerIP . containerPort` for
//!   traffic addressed to this host, never for 127.0.0.0/8 (as Mesos's port mapper).
//! - **NAT** (`postrouting`): a container reaching a container of the same agent through a port mapping is
//!   masqueraded to the bridge's address (the reply must come back through the host); traffic to the outside is
//!   masqueraded only when egress is enabled. Traffic between containers is never translated.
//! - **The host** (`input`): from the bridge only replies, ICMP and DNS (for a discovery resolver on the bridge
//!   address) reach the agent's host; everything else (the agent's own ports among it) is rejected.
//! - **Speed** (`raw_prerouting`): traffic between containers (from the cluster CIDR to a known subnet, not to this
//!   host) is not connection-tracked: nothing translates it and every rule it meets is stateless, and conntrack
//!   cost about a tenth of the cross-host throughput in the network bench. Traffic of the host itself (health
//!   checks, port mappings, replies to them) stays tracked.

use std::net::Ipv4Addr;
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;

/// The agent's table.
pub const TABLE: &str = "agora";

/// A transport protocol of a port mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// `tcp` or `udp`, any case; Marathon's `udp,tcp` is two mappings and is split before this.
    pub fn parse(text: &str) -> Option<Protocol> {
        match text.trim().to_ascii_lowercase().as_str() {
            "tcp" | "" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// `protocol hostPort → ip:containerPort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortForward {
    pub protocol: Protocol,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub container_port: u16,
}

/// Everything the table is rendered from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    pub table: String,
    pub bridge: String,
    pub cluster: Ipv4Cidr,
    /// The agent's own subnet.
    pub local: Ipv4Cidr,
    /// The subnets traffic may go to: the agent's own and every known peer's.
    pub owned: Vec<Ipv4Cidr>,
    /// Sorted, one per `(protocol, host_port)`.
    pub forwards: Vec<PortForward>,
    /// Masquerade and forward traffic from containers to outside the cluster CIDR.
    pub egress: bool,
}

impl Ruleset {
    /// The `nft -f` text: create the table if missing, delete it, define it anew, all in one transaction.
    pub fn render(&self) -> String {
        let t = &self.table;
        let mut out = format!("table ip {t} {{}}\ndelete table ip {t}\ntable ip {t} {{\n");
        out.push_str("\tset subnets {\n\t\ttype ipv4_addr\n\t\tflags interval\n");
        if !self.owned.is_empty() {
            let owned: Vec<String> = self.owned.iter().map(|s| s.to_string()).collect();
            out.push_str(&format!("\t\telements = {{ {} }}\n", owned.join(", ")));
        }
        out.push_str("\t}\n");
        out.push_str("\tmap portmap {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n");
        if !self.forwards.is_empty() {
            let items: Vec<String> = self
                .forwards
                .iter()
                .map(|f| format!("{} . {} : {} . {}", f.protocol.name(), f.host_port, f.ip, f.container_port))
                .collect();
            out.push_str(&format!("\t\telements = {{ {} }}\n", items.join(", ")));
        }
        out.push_str("\t}\n");
        let (cluster, local, bridge) = (self.cluster, self.local, &self.bridge);
        let chain = |name: &str, hook: &str, rules: &[String]| {
            let mut c = format!("\tchain {name} {{\n\t\t{hook}\n");
            for r in rules {
                c.push_str(&format!("\t\t{r}\n"));
            }
            c.push_str("\t}\n");
            c
        };
        let unowned = format!("ip daddr {cluster} ip daddr != @subnets reject with icmp type net-unreachable");
        let dnat = "dnat ip to meta l4proto . th dport map @portmap";
        out.push_str(&chain(
            "raw_prerouting",
            "type filter hook prerouting priority -300; policy accept;",
            &[format!("ip saddr {cluster} ip daddr @subnets fib daddr type != local notrack")],
        ));
        out.push_str(&chain(
            "prerouting",
            "type nat hook prerouting priority -100; policy accept;",
            &[format!("fib daddr type local {dnat}")],
        ));
        out.push_str(&chain(
            "output_nat",
            "type nat hook output priority -100; policy accept;",
            &[format!("ip daddr != 127.0.0.0/8 fib daddr type local {dnat}")],
        ));
        let mut postrouting = vec![format!("ct status dnat ip saddr {local} ip daddr {local} masquerade")];
        if self.egress {
            postrouting.push(format!("ip saddr {local} ip daddr != {cluster} oifname != \"{bridge}\" masquerade"));
        }
        out.push_str(&chain("postrouting", "type nat hook postrouting priority 100; policy accept;", &postrouting));
        let mut forward = vec![unowned.clone(), "ct state established,related accept".to_string()];
        if !self.egress {
            forward.push(format!("iifname \"{bridge}\" ip daddr != {cluster} drop"));
        }
        out.push_str(&chain("forward", "type filter hook forward priority 0; policy accept;", &forward));
        out.push_str(&chain("output", "type filter hook output priority 0; policy accept;", &[unowned]));
        out.push_str(&chain(
            "input",
            "type filter hook input priority 0; policy accept;",
            &[
                format!("iifname \"{bridge}\" ct state established,related accept"),
                format!("iifname \"{bridge}\" ip protocol icmp accept"),
                format!("iifname \"{bridge}\" meta l4proto {{ tcp, udp }} th dport 53 accept"),
                format!("iifname \"{bridge}\" reject with icmp type admin-prohibited"),
            ],
        ));
        out.push_str("}\n");
        out
    }
}

/// Why `nft` could not apply or check a ruleset.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft ({0}); install nftables: apt-get install -y nftables")]
    Missing(#[source] std::io::Error),
    #[error("nft {args} failed ({status}): {stderr}")]
    Failed { args: String, status: std::process::ExitStatus, stderr: String },
}

/// Runs `nft <args> -f -` with `text` on its stdin.
fn run(args: &[&str], text: &str) -> Result<(), NftError> {
    let mut child = std::process::Command::new("nft")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Missing)?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        // A failed write shows up as nft's own error below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(NftError::Missing)?;
    if !out.status.success() {
        return Err(NftError::Failed {
            args: args.join(" "),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Applies `text` in one transaction (`nft -f -`).
pub fn apply(text: &str) -> Result<(), NftError> {
    run(&[], text)
}

/// Checks `text` without applying it (`nft -c -f -`).
pub fn check(text: &str) -> Result<(), NftError> {
    run(&["-c"], text)
}

/// Removes the table `table` if it exists.
pub fn delete_table(table: &str) -> Result<(), NftError> {
    apply(&format!("table ip {table} {{}}\ndelete table ip {table}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(egress: bool) -> Ruleset {
        Ruleset {
            table: TABLE.into(),
            bridge: "agora0".into(),
            cluster: "10.233.0.0/16".parse().unwrap(),
            local: "10.233.1.0/24".parse().unwrap(),
            owned: vec!["10.233.1.0/24".parse().unwrap(), "10.233.2.0/24".parse().unwrap()],
            forwards: vec![
                PortForward {
                    protocol: Protocol::Tcp,
                    host_port: 31000,
                    ip: "10.233.1.2".parse().unwrap(),
                    container_port: 8080,
                },
                PortForward {
                    protocol: Protocol::Udp,
                    host_port: 31001,
                    ip: "10.233.1.3".parse().unwrap(),
                    container_port: 53,
                },
            ],
            egress,
        }
    }

    const GOLDEN: &str = include_str!("../tests/golden/ruleset.nft");
    const GOLDEN_EGRESS_EMPTY: &str = include_str!("../tests/golden/ruleset-egress-empty.nft");

    #[test]
    fn the_ruleset_renders_as_the_golden_file() {
        assert_eq!(ruleset(false).render(), GOLDEN);
        let mut empty = ruleset(true);
        empty.owned.clear();
        empty.forwards.clear();
        assert_eq!(empty.render(), GOLDEN_EGRESS_EMPTY);
    }

    #[test]
    fn masquerade_and_outbound_forwarding_follow_the_egress_flag() {
        let off = ruleset(false).render();
        assert!(!off.contains("oifname != \"agora0\" masquerade"));
        assert!(off.contains("iifname \"agora0\" ip daddr != 10.233.0.0/16 drop"));
        let on = ruleset(true).render();
        assert!(on.contains("ip saddr 10.233.1.0/24 ip daddr != 10.233.0.0/16 oifname != \"agora0\" masquerade"));
        assert!(!on.contains("ip daddr != 10.233.0.0/16 drop"));
        // The rejection of unowned cluster addresses is there either way, and comes first in forward.
        for text in [&off, &on] {
            let forward = text.split("chain forward").nth(1).unwrap();
            assert!(forward.lines().nth(2).unwrap().contains("ip daddr != @subnets reject"), "{forward}");
        }
    }

    /// `nft -c` parses the rendered text against the kernel without changing anything; it needs nft and
    /// CAP_NET_ADMIN, and fails loudly saying so when they are missing.
    #[test]
    fn nft_accepts_the_rendered_ruleset() {
        if let Err(e) = check(&ruleset(false).render()) {
            panic!("nft -c refused the ruleset (this test needs nftables and root: apt-get install -y nftables): {e}");
        }
        let mut egress_empty = ruleset(true);
        egress_empty.owned.clear();
        egress_empty.forwards.clear();
        check(&egress_empty.render()).unwrap();
    }
}
