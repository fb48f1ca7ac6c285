//! The real driver against the kernel, entirely inside network namespaces this test creates (pinned under a
//! temporary directory, no link to the outside, no route out): the host side is applied, two containers are
//! attached and reach each other and their gateway, then everything is removed and nothing is left; a cluster CIDR
//! that overlaps a route of the host is refused before anything is installed. Needs root,
//! `ip` (iproute2) and `nft` (nftables); fails saying so when they are missing.

use std::path::Path;
use std::process::Command;

use agora_net::driver::{IP_FORWARD, LinuxDriver, NetworkDriver};
use agora_net::netlink::Netlink;
use agora_net::netns;
use agora_net::plan::{Assignment, HostConfig, Peer, attachment, host_spec};

fn require_prerequisites() {
    assert!(nix::unistd::Uid::effective().is_root(), "the network driver test needs root (namespaces, netlink)");
    for (tool, flag, package) in [
        ("nft", "--version", "nftables"),
        ("ip", "-V", "iproute2"),
        ("nsenter", "--version", "util-linux"),
        ("busybox", "true", "busybox-static"),
    ] {
        let found = Command::new(tool).arg(flag).output().is_ok_and(|o| o.status.success());
        assert!(found, "the network driver test needs `{tool}`: apt-get install -y {package}");
    }
}

/// Runs `args` inside the namespace pinned at `ns` (`nsenter --net`), returning stdout; fails the test on error.
fn inside(ns: &Path, args: &[&str]) -> String {
    let out = Command::new("nsenter").arg(format!("--net={}", ns.display())).arg("--").args(args).output().unwrap();
    assert!(out.status.success(), "{args:?} in {}: {}", ns.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_host_side_and_two_containers_come_and_go_leaving_nothing() {
    require_prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    netns::create(&host).unwrap();
    let config = HostConfig {
        bridge: "agtest0".into(),
        netns_dir: dir.path().join("netns"),
        link_prefix: "agt".into(),
        table: "agora".into(),
        egress: false,
        nameservers: vec![],
        search: vec![],
    };
    let subnet = "10.233.1.0/24".parse().unwrap();
    let assignment = Assignment {
        name: "agora".into(),
        cluster: "10.233.0.0/16".parse().unwrap(),
        subnet,
        peers: vec![Peer {
            agent_id: "S2".into(),
            subnet: "10.233.2.0/24".parse().unwrap(),
            ip: "10.233.1.250".parse().unwrap(),
        }],
    };
    let spec = host_spec(&config, &assignment, &[]);
    let driver = LinuxDriver::new(&dir.path().join("state"));
    let a = attachment(&config, &subnet, "c-a", "10.233.1.2".parse().unwrap());
    let b = attachment(&config, &subnet, "c-b", "10.233.1.3".parse().unwrap());
    netns::run_in(&host, || -> Result<(), agora_net::NetError> {
        driver.apply_host(&spec)?;
        // Applying twice changes nothing.
        driver.apply_host(&spec)?;
        driver.attach(&a)?;
        driver.attach(&b)?;
        // Re-attaching (a restarted agent redoing a half-done attachment) works too.
        driver.attach(&b)
    })
    .unwrap()
    .unwrap();

    assert_eq!(inside(&host, &["cat", IP_FORWARD]).trim(), "1");
    let table = inside(&host, &["nft", "list", "table", "ip", "agora"]);
    assert!(table.contains("ip daddr != @subnets reject"), "{table}");
    let routes = inside(&host, &["ip", "route"]);
    assert!(routes.contains("10.233.2.0/24 via 10.233.1.250 dev agtest0 proto 233"), "{routes}");
    let addr = inside(&a.netns, &["ip", "-br", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains("10.233.1.2/24"), "{addr}");
    let via = inside(&a.netns, &["ip", "route", "get", "10.233.1.3"]);
    assert!(via.contains("dev eth0"), "{via}");
    inside(&a.netns, &["busybox", "ping", "-c1", "-W2", "10.233.1.3"]);
    inside(&a.netns, &["busybox", "ping", "-c1", "-W2", "10.233.1.1"]);
    // An address of the cluster CIDR no known subnet owns is rejected at once rather than routed anywhere.
    let unowned = Command::new("nsenter")
        .arg(format!("--net={}", a.netns.display()))
        .args(["busybox", "ping", "-c1", "-W2", "10.233.77.5"])
        .output()
        .unwrap();
    assert!(!unowned.status.success());

    netns::run_in(&host, || -> Result<(), agora_net::NetError> {
        driver.detach(&a.netns, &a.host_link)?;
        driver.detach(&b.netns, &b.host_link)?;
        driver.detach(&b.netns, &b.host_link)?;
        driver.remove_host(&spec)
    })
    .unwrap()
    .unwrap();
    let links = netns::run_in(&host, || Netlink::open().unwrap().links().unwrap()).unwrap();
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo"], "only loopback is left");
    assert_eq!(inside(&host, &["ip", "route"]).trim(), "");
    assert_eq!(inside(&host, &["nft", "list", "ruleset"]).trim(), "");
    assert_eq!(inside(&host, &["cat", IP_FORWARD]).trim(), "0", "ip_forward is restored");
    assert!(netns::list(&config.netns_dir).is_empty());
    netns::remove(&host).unwrap();
    assert!(!netns::is_pinned(&host));
}

#[test]
fn a_cluster_cidr_that_overlaps_a_route_is_refused_before_anything_is_installed() {
    require_prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    netns::create(&host).unwrap();
    // A host route that covers the cluster CIDR, out of a link that leads nowhere.
    inside(&host, &["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    inside(&host, &["ip", "link", "set", "d0", "up"]);
    inside(&host, &["ip", "route", "add", "10.0.0.0/8", "dev", "d0"]);
    let config = HostConfig {
        bridge: "agtest0".into(),
        netns_dir: dir.path().join("netns"),
        link_prefix: "agt".into(),
        table: "agora".into(),
        egress: false,
        nameservers: vec![],
        search: vec![],
    };
    let assignment = Assignment {
        name: "agora".into(),
        cluster: "10.233.0.0/16".parse().unwrap(),
        subnet: "10.233.1.0/24".parse().unwrap(),
        peers: vec![],
    };
    let driver = LinuxDriver::new(&dir.path().join("state"));
    let refused = netns::run_in(&host, || driver.apply_host(&host_spec(&config, &assignment, &[]))).unwrap();
    let e = refused.expect_err("an overlapping cluster CIDR is refused").to_string();
    assert!(e.contains("overlaps the host's route to 10.0.0.0/8"), "{e}");
    assert_eq!(inside(&host, &["nft", "list", "ruleset"]).trim(), "", "no rule was installed");
    assert!(!inside(&host, &["ip", "-br", "link"]).contains("agtest0"), "no bridge was made");
    assert_eq!(inside(&host, &["cat", IP_FORWARD]).trim(), "0");
    netns::remove(&host).unwrap();
}
