//! `net-bench`: what a container network costs, in a [`NetLab`] (two agent hosts off a switch, no route out), as root.
//!
//! 1. **Launch**: LAUNCH (the framework's accept) → TASK_RUNNING of `sleep` tasks on agent 0, alternating a task on
//!    the host's network and one on the container network (its own namespace, veth pair, address, port mapping),
//!    `--launches` of each; every task is killed before the next launch.
//! 2. **Throughput**: `iperf3` (TCP, `--iperf-seconds` each) from a container on agent 0 to a container on agent 1 by
//!    their addresses (bridge → routed through the peer → bridge), against the same from host 0 to host 1;
//!    alternated, `--rounds` of each. Both ends run in the containers' network namespaces (`nsenter --net`) but not
//!    in their cgroups, so the tasks' CPU limits do not cap what is a network measurement. Both ends run in the containers' network namespaces (`nsenter --net`) but not
//!    in their cgroups, so the tasks' CPU limits do not cap what is a network measurement.
//! 3. **Latency**: `--requests` sequential HTTP/1.0 GETs (a new TCP connection each) to busybox httpd, container to
//!    container across hosts against host to host; alternated the same way.
//!
//! Prints one JSON object, with the agent's own timing of its network steps (`agent_network_steps`). Usage (binaries built first, iperf3 installed: `apt-get install -y iperf3`):
//! `cargo run --release -p agora-integration-tests --bin net-bench -- --launches 30 --requests 2000`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agora_framework_sdk::{FrameworkInfo, TaskState};
use agora_integration_tests::bench_flags::FlagErrors;
use agora_integration_tests::netlab::cluster::{
    LabAgent, agents_with_subnets, first_port, fresh_offer, ip_of, lab_task, master_addr, run_on, spawn_master,
};
use agora_integration_tests::netlab::{NetLab, host_ip};
use agora_integration_tests::{Proc, TestFramework};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(clap::Parser, Debug)]
#[command(name = "net-bench", about = "Container network against host network: launch, throughput, latency")]
struct Flags {
    /// Tasks launched per series (host network, container network).
    #[arg(long, default_value = "20")]
    launches: String,
    /// iperf3 runs per series.
    #[arg(long, default_value = "2")]
    rounds: String,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value = "5")]
    iperf_seconds: String,
    /// HTTP requests per latency run.
    #[arg(long, default_value = "2000")]
    requests: String,
}

const IPERF_PORT: u16 = 5201;
const HTTP_PORT: u16 = 8080;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    json!({"n": ms.len(), "p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "mean_ms": mean,
           "min_ms": ms.first(), "max_ms": ms.last()})
}

/// `iperf3 -c` from the namespace `netns` to `server`; the receiver's bits per second.
fn iperf(netns: &Path, server: &str, port: u16, secs: u32) -> Result<f64> {
    let out =
        NetLab::exec_in(netns, "iperf3", &["-c", server, "-p", &port.to_string(), "-t", &secs.to_string(), "-J"])?;
    let v: Value = serde_json::from_str(&out).context("iperf3's JSON")?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3 reported no sum_received")
}

/// `n` sequential GETs of `http://addr/` from a thread in the namespace `netns`; the latency of each in ms and the
/// wall time.
fn http_latencies(netns: &Path, addr: &str, n: usize) -> Result<(Vec<f64>, f64)> {
    let ns = std::fs::File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    let addr = addr.to_string();
    std::thread::scope(|s| {
        s.spawn(move || -> Result<(Vec<f64>, f64)> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            let target: std::net::SocketAddr = addr.parse()?;
            let started = Instant::now();
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut body = Vec::new();
                s.read_to_end(&mut body)?;
                if !body.starts_with(b"HTTP/1.") {
                    bail!("{addr} answered {}", String::from_utf8_lossy(&body));
                }
                out.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok((out, started.elapsed().as_secs_f64()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the HTTP client thread panicked"))?
    })
}

fn main() -> Result<()> {
    let flags = <Flags as clap::Parser>::parse();
    let mut errors = FlagErrors::default();
    let launches = errors.count("--launches", &flags.launches, 1);
    let rounds = errors.count("--rounds", &flags.rounds, 1);
    let secs = errors.count("--iperf-seconds", &flags.iperf_seconds, 1) as u32;
    let requests = errors.count("--requests", &flags.requests, 1);
    errors.exit_if_any("net-bench");
    let iperf_found = Command::new("iperf3").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(iperf_found, "net-bench needs iperf3: apt-get install -y iperf3");

    let lab = NetLab::new("bench", 2)?;
    let dir = tempfile::Builder::new().prefix("agora-net-bench-").tempdir()?;
    let hosts = [LabAgent::new(dir.path(), 0), LabAgent::new(dir.path(), 1)];
    let _master = spawn_master(&lab, dir.path())?;
    let mut agents: Vec<Proc> = Vec::new();
    for (n, h) in hosts.iter().enumerate() {
        agents.push(h.spawn(&lab, n, &format!("agent{n}"), dir.path())?);
    }
    // The host-network baselines: the same servers in host 1's namespace itself.
    let serve = dir.path().join("www");
    std::fs::create_dir_all(&serve)?;
    std::fs::write(serve.join("index.html"), "ok\n")?;
    let host1 = host_ip(1);
    let mut baselines = vec![
        spawn_in(&lab.host(1), "iperf3-host", &["iperf3", "-s", "-p", &IPERF_PORT.to_string()], dir.path())?,
        spawn_in(
            &lab.host(1),
            "httpd-host",
            &["busybox", "httpd", "-f", "-p", &format!("{host1}:{HTTP_PORT}"), "-h", &serve.display().to_string()],
            dir.path(),
        )?,
    ];

    let report = lab.run(|| async {
        let http = reqwest::Client::new();
        let ids = agents_with_subnets(&http, 2).await?;
        let (a0, a1) = (ids[0].0.clone(), ids[1].0.clone());
        let mut fw = TestFramework::start(&master_addr(), FrameworkInfo::new("net-bench")).await?;
        let mut spent = Vec::new();

        let (mut host_ms, mut bridge_ms) = (Vec::new(), Vec::new());
        for i in 0..launches * 2 {
            let bridged = i % 2 == 1;
            let id = format!("launch-{i}");
            let offer = fresh_offer(&mut fw, &mut spent, &a0).await?;
            let port = first_port(&offer).context("an offer with ports")?;
            let task = lab_task(&id, &a0, "exec sleep 600", bridged, port, Some(8080));
            let started = Instant::now();
            run_on(&mut fw, &offer, task).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if bridged {
                bridge_ms.push(ms)
            } else {
                host_ms.push(ms)
            }
            fw.driver.kill(&id, &a0);
            fw.seen_or_next_update(&id, |s| s.state == TaskState::Killed || s.state.is_terminal()).await?;
        }

        // The servers run in the server task's network namespace but outside its cgroups: its 0.1 CPU would cap
        // iperf3 far below what the network carries (about 2.7 Gbit/s here), and the network is what is compared.
        let offer = fresh_offer(&mut fw, &mut spent, &a1).await?;
        let port = first_port(&offer).context("an offer with ports")?;
        let running = run_on(&mut fw, &offer, lab_task("server", &a1, "exec sleep 600", true, port, None)).await?;
        let server_ip = ip_of(&running).context("the server's address")?;
        let server_ns = hosts[1].only_pin()?;
        let _servers = [
            spawn_in(&server_ns, "iperf3-container", &["iperf3", "-s", "-p", &IPERF_PORT.to_string()], dir.path())?,
            spawn_in(
                &server_ns,
                "httpd-container",
                &["busybox", "httpd", "-f", "-p", &HTTP_PORT.to_string(), "-h", &serve.display().to_string()],
                dir.path(),
            )?,
        ];
        let offer = fresh_offer(&mut fw, &mut spent, &a0).await?;
        let port = first_port(&offer).context("an offer with ports")?;
        run_on(&mut fw, &offer, lab_task("client", &a0, "exec sleep 600", true, port, None)).await?;
        let client_ns: PathBuf = hosts[0].only_pin()?;
        tokio::time::sleep(Duration::from_millis(500)).await;

        let (mut bridge_bps, mut host_bps) = (Vec::new(), Vec::new());
        let (mut bridge_http, mut host_http) = (Vec::new(), Vec::new());
        let (mut bridge_wall, mut host_wall) = (0.0, 0.0);
        for _ in 0..rounds {
            bridge_bps.push(iperf(&client_ns, &server_ip, IPERF_PORT, secs)?);
            host_bps.push(iperf(&lab.host(0), &host1, IPERF_PORT, secs)?);
            let (ms, wall) = http_latencies(&client_ns, &format!("{server_ip}:{HTTP_PORT}"), requests)?;
            bridge_http.extend(ms);
            bridge_wall += wall;
            let (ms, wall) = http_latencies(&lab.host(0), &format!("{host1}:{HTTP_PORT}"), requests)?;
            host_http.extend(ms);
            host_wall += wall;
        }
        fw.driver.kill("server", &a1);
        fw.driver.kill("client", &a0);
        for id in ["server", "client"] {
            fw.seen_or_next_update(id, |s| s.state.is_terminal()).await?;
        }
        fw.teardown().await;

        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5)
        };
        let (bridge_gbps, host_gbps) = (median(bridge_bps.clone()) / 1e9, median(host_bps.clone()) / 1e9);
        let rps = |n: usize, wall: f64| n as f64 / wall.max(1e-9);
        let launch_host = summary(host_ms);
        let launch_bridge = summary(bridge_ms);
        let added_ms =
            launch_bridge["p50_ms"].as_f64().unwrap_or_default() - launch_host["p50_ms"].as_f64().unwrap_or_default();
        Ok::<_, anyhow::Error>(json!({
            "launch": {"host": launch_host, "bridge": launch_bridge, "bridge_added_p50_ms": added_ms},
            "iperf3": {
                "seconds": secs,
                "container_to_container_gbps": bridge_bps.iter().map(|b| b / 1e9).collect::<Vec<_>>(),
                "host_to_host_gbps": host_bps.iter().map(|b| b / 1e9).collect::<Vec<_>>(),
                "median_container_gbps": bridge_gbps,
                "median_host_gbps": host_gbps,
                "container_vs_host_percent": 100.0 * (bridge_gbps - host_gbps) / host_gbps,
            },
            "http": {
                "requests_per_run": requests,
                "container_to_container": summary(bridge_http.clone()),
                "host_to_host": summary(host_http.clone()),
                "container_rps": rps(bridge_http.len(), bridge_wall),
                "host_rps": rps(host_http.len(), host_wall),
            },
        }))
    })??;
    for b in &mut baselines {
        b.terminate();
    }
    for a in &mut agents {
        a.terminate();
    }
    for (n, h) in hosts.iter().enumerate() {
        let left = lab.leftovers(n, &h.work_dir, &h.netns_dir)?;
        if !left.is_empty() {
            bail!("host {n} keeps {left:?}");
        }
    }
    let mut report = report;
    report["agent_network_steps"] = agent_steps(&dir.path().join("agent0.log"));
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The agent's own timing of its network steps, from its log: attaching a container (address, namespace, veth,
/// files) and applying the host network (`nft -f`, links, routes; logged at debug level, so run with
/// `RUST_LOG=info,agora_agent::network=debug` to see it).
fn agent_steps(log: &Path) -> Value {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let took = |what: &str| -> Vec<f64> {
        text.lines()
            .filter(|l| l.contains(what))
            .filter_map(|l| l.split("took_ms=").nth(1))
            .filter_map(|t| t.split_whitespace().next())
            .filter_map(|t| t.trim_matches('"').parse().ok())
            .collect()
    };
    json!({"attach": summary(took("container attached")), "apply_host": summary(took("host network applied"))})
}

/// A program (not a workspace binary) in the namespace `netns`, killed when dropped.
fn spawn_in(netns: &Path, name: &str, argv: &[&str], log_dir: &Path) -> Result<Proc> {
    let mut args = vec![format!("--net={}", netns.display()), "--".to_string()];
    args.extend(argv.iter().map(|s| s.to_string()));
    Proc::spawn_program(name, Path::new("nsenter"), &args, log_dir)
}
