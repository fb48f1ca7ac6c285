//! `zk-store-bench`: how long Marathon's ZooKeeper state store (`agora_marathon::store::zk::ZkStore`) takes to save
//! the state after a burst of launches, against a real ZooKeeper server (the harness's fixture, Debian's package,
//! with ZooKeeper's default 1 MiB request limit).
//!
//! Each round starts from a saved state holding one app and the framework id, then times three saves and a load:
//!
//! 1. **add**: the same state plus `--instances` new instance records (what one offer cycle launching that many
//!    instances persists before the launches are sent);
//! 2. **update**: every one of those instances changed (TASK_STAGING → TASK_RUNNING);
//! 3. **load**: a new store reading that state back (what a newly elected leader does), which then saves on;
//! 4. **remove**: back to the app alone (the instances gone).
//!
//! It prints one JSON object on stdout (milliseconds: median, min, max over `--rounds`), progress on stderr. Usage
//! (from the repository root):
//! `cargo run -p agora-integration-tests --bin zk-store-bench -- [--instances 1000] [--rounds 5]` (`--help` lists the
//! flags).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agora_integration_tests::bench_flags::FlagErrors;
use agora_integration_tests::marathon::instance_record;
use agora_integration_tests::{ZK_DEFAULT_MAX_BUFFER, ZooKeeper};
use agora_marathon::core::Persisted;
use agora_marathon::store::StateStore;
use agora_marathon::store::zk::ZkStore;
use anyhow::{Context, Result};
use serde_json::json;
use zookeeper_client as zk;

/// Instance records added per round, unless `--instances` says otherwise.
const DEFAULT_INSTANCES: &str = "1000";
/// Rounds timed, unless `--rounds` says otherwise.
const DEFAULT_ROUNDS: &str = "5";

/// The bench's flags, as typed (checked together by [`Flags::args`]).
#[derive(clap::Parser, Debug)]
#[command(name = "zk-store-bench", about = "Times Marathon's ZooKeeper state store saving a burst of launches")]
struct Flags {
    /// Instance records each round adds, updates and removes.
    #[arg(long, default_value = DEFAULT_INSTANCES)]
    instances: String,
    /// Rounds to time (the JSON reports median, min and max over them).
    #[arg(long, default_value = DEFAULT_ROUNDS)]
    rounds: String,
}

struct Args {
    instances: usize,
    rounds: usize,
}

impl Flags {
    /// The checked flags; every bad value is reported at once and the bench exits with status 2.
    fn args(self) -> Args {
        let mut errors = FlagErrors::default();
        let instances = errors.count("--instances", &self.instances, 1);
        let rounds = errors.count("--rounds", &self.rounds, 1);
        errors.exit_if_any("zk-store-bench");
        Args { instances, rounds }
    }
}

/// The state every round starts from: one app of `instances` instances and a framework id.
fn base_state(instances: usize) -> Result<Persisted> {
    let mut core = agora_marathon::core::Core::new(Persisted::default());
    let body = json!({"id": "/bench/web", "cmd": "sleep 3600", "cpus": 0.01, "mem": 8, "instances": instances});
    core.create_app(&body, false, 1_700_000_000_000, "bench-deployment".into())
        .map_err(|e| anyhow::anyhow!("the bench's app is refused: {e:?}"))?;
    core.set_framework_id("bench-framework-0000");
    let mut state = core.state.clone();
    state.deployments.clear();
    Ok(state)
}

fn stats(samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    json!({"median_ms": round(median), "min_ms": round(samples[0]), "max_ms": round(samples[samples.len() - 1])})
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// Times one blocking store call (the store blocks its caller; keep it off the runtime's workers).
async fn timed<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<(T, f64)> {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = f()?;
        Ok((out, started.elapsed().as_secs_f64() * 1000.0))
    })
    .await?
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = <Flags as clap::Parser>::parse().args();
    let dir = tempfile::Builder::new().prefix("agora-zk-store-bench-").tempdir()?;
    let zk = ZooKeeper::start_with_max_buffer(&dir.path().join("zk"), ZK_DEFAULT_MAX_BUFFER).await?;
    let client = zk::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&zk.servers())
        .await
        .context("connect to the bench's ZooKeeper")?;
    let root = "/bench/state";
    let mut store = std::sync::Arc::new(ZkStore::new(client.clone(), root)?);
    let base = base_state(args.instances)?;
    let version = base.apps["/bench/web"].version.clone();
    {
        let (s, b) = (store.clone(), base.clone());
        timed(move || {
            s.load()?;
            s.save(&b)?;
            Ok(())
        })
        .await?;
    }

    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut bytes = 0;
    for r in 0..args.rounds {
        let mut added = base.clone();
        for n in 0..args.instances {
            let i = instance_record("/bench/web", r * args.instances + n, &version)?;
            added.instances.insert(i.task_id.clone(), i);
        }
        bytes = added.instances.values().map(|i| serde_json::to_vec(i).map_or(0, |v| v.len())).sum::<usize>();
        let mut running = added.clone();
        for i in running.instances.values_mut() {
            i.state = agora_proto::model::TaskState::Running;
            i.started_at = Some(i.staged_at + 1500);
        }

        let (s, st) = (store.clone(), added.clone());
        let ((), ms) = timed(move || Ok(s.save(&st)?)).await?;
        times.entry("add").or_default().push(ms);
        let (s, st) = (store.clone(), running.clone());
        let ((), ms) = timed(move || Ok(s.save(&st)?)).await?;
        times.entry("update").or_default().push(ms);
        // A new store loads, as a newly elected leader does, and takes over (its load fences the old store off).
        let fresh = std::sync::Arc::new(ZkStore::new(client.clone(), root)?);
        let f = fresh.clone();
        let (loaded, ms) = timed(move || Ok(f.load()?)).await?;
        anyhow::ensure!(loaded.as_ref() == Some(&running), "round {r}: the loaded state is not the saved one");
        times.entry("load").or_default().push(ms);
        store = fresh;
        let (s, st) = (store.clone(), base.clone());
        let ((), ms) = timed(move || Ok(s.save(&st)?)).await?;
        times.entry("remove").or_default().push(ms);
        eprintln!("round {}/{}: {:?}", r + 1, args.rounds, times.iter().map(|(k, v)| (k, v[r])).collect::<Vec<_>>());
    }

    let mut out = serde_json::Map::new();
    out.insert("instances".into(), json!(args.instances));
    out.insert("rounds".into(), json!(args.rounds));
    out.insert("instance_record_bytes_total".into(), json!(bytes));
    for (phase, samples) in &mut times {
        out.insert((*phase).into(), stats(samples));
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
