//! What operators look at, against real master and agent processes: `/metrics/snapshot` and `/metrics` on both,
//! the `agora state|agents|frameworks|tasks|task log` tables, sandbox confinement over HTTP, and the status page in
//! a real headless Chromium driven by playwright-core (`integration-tests/web/page.test.mjs`).

use std::path::Path;
use std::process::Stdio;

use agora_integration_tests::browser_prerequisites;
use agora_integration_tests::{Cluster, WAIT, bin_dir, kill_processes_matching, run_browser_script, wait_for};
use anyhow::{Context, Result};
use serde_json::{Value, json};

const AGENT: &str = "cpus:2;mem:1024;disk:4096";
const TASK: &str = "cpus:0.1;mem:32";

/// A cluster with one agent, two finished tasks (`hello-0`, `hello-1`, printing to stdout and stderr), one failed
/// task (`failing-0`) and one long-running task (`ticker-0`) that prints a line a second.
struct Busy {
    cluster: Cluster,
    agent_id: String,
    /// The `agora execute` that keeps `ticker-0` running; killed on drop.
    _ticker: tokio::process::Child,
    marker: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        kill_processes_matching(&self.marker);
    }
}

async fn busy_cluster() -> Result<Busy> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent_id = cluster.add_agent(AGENT).await?;
    let m = cluster.master_addr.clone();
    let hello = "echo hello from $AGORA_TASK_ID; echo complaint from $AGORA_TASK_ID >&2";
    let (code, out, err) = cluster
        .agora(&[
            "execute",
            "--master",
            &m,
            "--name",
            "hello",
            "--instances",
            "2",
            "--resources",
            TASK,
            "--command",
            hello,
        ])
        .await?;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let (code, out, err) = cluster
        .agora(&["execute", "--master", &m, "--name", "failing", "--resources", TASK, "--command", "exit 3"])
        .await?;
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let marker = format!("agora-ops-{}-{}", std::process::id(), agora_integration_tests::free_port());
    let ticker = format!("i=0; while true; do echo tick $i {marker}; i=$((i+1)); sleep 0.5; done");
    let child = tokio::process::Command::new(bin_dir().join("agora"))
        .args(["execute", "--master", &m, "--name", "ticker", "--framework-name", "long-runner"])
        .args(["--resources", TASK, "--command", &ticker])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn agora execute for the long-running task")?;
    let busy = Busy { cluster, agent_id, _ticker: child, marker };
    let c = &busy.cluster;
    wait_for("ticker-0 to run", WAIT, async || {
        let t = get(c, "/master/tasks/ticker-0").await.ok()?;
        (t["state"] == "TASK_RUNNING").then_some(())
    })
    .await?;
    Ok(busy)
}

async fn get(c: &Cluster, path: &str) -> Result<Value> {
    get_at(c, &c.master_addr, path).await
}

async fn get_at(c: &Cluster, addr: &str, path: &str) -> Result<Value> {
    let url = format!("http://{addr}{path}");
    let r = c.http.get(&url).send().await?.error_for_status().with_context(|| url.clone())?;
    Ok(r.json().await?)
}

async fn text_at(c: &Cluster, addr: &str, path: &str) -> Result<String> {
    let url = format!("http://{addr}{path}");
    Ok(c.http.get(&url).send().await?.error_for_status().with_context(|| url.clone())?.text().await?)
}

/// The value of a Prometheus sample line `name value`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_master_and_agent_count_the_cluster() -> Result<()> {
    let busy = busy_cluster().await?;
    let c = &busy.cluster;
    let s = get(c, "/metrics/snapshot").await?;
    for (key, want) in [
        ("master/elected", 1.0),
        ("master/slaves_active", 1.0),
        ("master/frameworks_active", 1.0),
        ("master/tasks_running", 1.0),
        ("master/tasks_finished", 2.0),
        ("master/tasks_failed", 1.0),
        ("master/cpus_total", 2.0),
        ("master/cpus_used", 0.1),
        ("master/mem_total", 1024.0),
        ("master/mem_used", 32.0),
        ("allocator/mesos/resources/cpus/total", 2.0),
    ] {
        assert_eq!(s[key].as_f64(), Some(want), "{key} in {s:#}");
    }
    assert!(s["master/uptime_secs"].as_f64().is_some_and(|u| u >= 0.0), "{s:#}");
    assert!(s["allocator/mesos/allocation_runs"].as_f64().is_some_and(|n| n >= 1.0), "{s:#}");
    assert!(s["allocator/mesos/allocation_run_ms"].is_number(), "{s:#}");

    // Prometheus text carries the same figures, with Prometheus's conventions (cumulative figures are counters,
    // base units), HELP on every metric, and the allocation pass as a histogram.
    let prom = text_at(c, &c.master_addr, "/metrics").await?;
    assert_eq!(agora_proto::prometheus::lint(&prom), Ok(()), "{prom}");
    assert_eq!(sample(&prom, "master_tasks_finished_total"), Some(2.0), "{prom}");
    assert_eq!(sample(&prom, "master_tasks_running"), Some(1.0), "{prom}");
    assert_eq!(sample(&prom, "master_cpus"), Some(2.0), "{prom}");
    assert_eq!(sample(&prom, "master_mem_bytes"), Some(1024.0 * 1024.0 * 1024.0), "{prom}");
    assert!(prom.contains("# TYPE master_elected gauge\n"), "{prom}");
    assert!(prom.contains("# TYPE master_offers_sent_total counter\n"), "{prom}");
    let runs = sample(&prom, "allocator_mesos_allocation_runs_total");
    assert!(runs.is_some_and(|n| n >= 1.0), "{prom}");
    assert_eq!(sample(&prom, "allocator_mesos_allocation_run_seconds_count"), runs, "one observation per pass");

    let agent = &c.agent_addrs[0];
    let a = get_at(c, agent, "/metrics/snapshot").await?;
    assert_eq!(a["slave/registered"], 1.0, "{a:#}");
    assert_eq!(a["slave/tasks_running"], 1.0, "{a:#}");
    assert_eq!(a["slave/cpus_total"], 2.0, "{a:#}");
    assert_eq!(a["slave/cpus_used"], 0.1, "{a:#}");
    let prom = text_at(c, agent, "/metrics").await?;
    assert_eq!(agora_proto::prometheus::lint(&prom), Ok(()), "{prom}");
    assert_eq!(sample(&prom, "slave_tasks_running"), Some(1.0), "{prom}");
    assert_eq!(sample(&prom, "slave_cpus"), Some(2.0), "{prom}");
    // Every task of the cluster ran on this agent: each launch was timed, and reached TASK_RUNNING.
    let launches = sample(&prom, "slave_container_launch_seconds_count");
    assert!(launches.is_some_and(|n| n >= 3.0), "{prom}");
    assert_eq!(sample(&prom, "slave_task_launch_seconds_count"), launches, "{prom}");

    // The summary the page reads agrees.
    let sum = get(c, "/master/summary").await?;
    assert_eq!(sum["tasks"]["by_state"]["TASK_FINISHED"], 2, "{sum:#}");
    assert_eq!(sum["tasks"]["by_state"]["TASK_FAILED"], 1, "{sum:#}");
    assert_eq!(sum["resources"]["cpus"]["used"], 0.1, "{sum:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_pages_filter_search_and_page() -> Result<()> {
    let busy = busy_cluster().await?;
    let c = &busy.cluster;
    let active = get(c, "/master/tasks?state=active").await?;
    assert_eq!(active["total"], 1, "{active:#}");
    assert_eq!(active["tasks"][0]["id"], "ticker-0");
    let done = get(c, "/master/tasks?state=completed").await?;
    assert_eq!(done["total"], 3, "{done:#}");
    let failed = get(c, "/master/tasks?state=TASK_FAILED").await?;
    assert_eq!(failed["tasks"][0]["id"], "failing-0", "{failed:#}");
    assert!(failed["tasks"][0]["message"].as_str().is_some_and(|m| m.contains("status 3")), "{failed:#}");
    let found = get(c, "/master/tasks?search=HELLO-1").await?;
    assert_eq!(found["total"], 1, "{found:#}");
    let page = get(c, "/master/tasks?limit=2&offset=2").await?;
    assert_eq!((page["total"].as_u64(), page["tasks"].as_array().map(Vec::len)), (Some(4), Some(2)), "{page:#}");
    let t = get(c, "/master/tasks/hello-0").await?;
    let states: Vec<&str> =
        t["statuses"].as_array().into_iter().flatten().filter_map(|s| s["state"].as_str()).collect();
    assert_eq!(states.last(), Some(&"TASK_FINISHED"), "{t:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_files_are_served_only_from_sandboxes() -> Result<()> {
    let busy = busy_cluster().await?;
    let c = &busy.cluster;
    let sb = get(c, "/master/tasks/hello-0/sandbox").await?;
    let dir = sb["directory"].as_str().context("directory")?.to_string();
    let agent = &c.agent_addrs[0];
    let files_url = |addr: &str, op: &str| format!("http://{addr}/files/{op}");
    let via_master = |op: &str| format!("http://{}/master/agents/{}/files/{op}", c.master_addr, busy.agent_id);

    for url in [files_url(agent, "read"), via_master("read")] {
        let r: Value = c.http.get(&url).query(&[("path", format!("{dir}/stdout"))]).send().await?.json().await?;
        assert_eq!(r, json!({"data": "hello from hello-0\n", "offset": 0}), "{url}");
        let r: Value = c
            .http
            .get(&url)
            .query(&[("path", format!("{dir}/stdout")), ("offset", "-1".into())])
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(r["offset"], 19, "{url}");
    }
    let list: Value = c.http.get(via_master("browse")).query(&[("path", &dir)]).send().await?.json().await?;
    let names: Vec<&str> = list.as_array().into_iter().flatten().filter_map(|e| e["path"].as_str()).collect();
    assert!(
        names.contains(&format!("{dir}/stderr").as_str()) && names.contains(&format!("{dir}/stdout").as_str()),
        "{list:#}"
    );
    let body = c.http.get(via_master("download")).query(&[("path", format!("{dir}/stderr"))]).send().await?;
    assert!(body.status().is_success());
    assert_eq!(body.text().await?, "complaint from hello-0\n");

    let outside = c.dir.path().join("secret");
    std::fs::write(&outside, "TOP-SECRET-CONTENT")?;
    let work = Path::new(&dir).ancestors().nth(8).context("agent work dir")?.to_path_buf();
    let hostile: Vec<String> = vec![
        "/etc/passwd".into(),
        outside.display().to_string(),
        format!("{dir}/../../../../../../../../../secret"),
        format!("{dir}/../../../../../../../../../../../../etc/passwd"),
        work.display().to_string(),
        "stdout".into(),
    ];
    for op in ["read", "browse", "download"] {
        for p in &hostile {
            for url in [files_url(agent, op), via_master(op)] {
                let r = c.http.get(&url).query(&[("path", p)]).send().await?;
                let status = r.status().as_u16();
                let text = r.text().await?;
                assert!(matches!(status, 403 | 404), "{url} {p}: {status} {text}");
                assert!(!text.contains("TOP-SECRET-CONTENT") && !text.contains("root:"), "{url} {p}: {text}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tables_and_json_show_the_cluster() -> Result<()> {
    let busy = busy_cluster().await?;
    let c = &busy.cluster;
    let m = c.master_addr.as_str();

    let (code, out, err) = c.agora(&["state", "--master", m]).await?;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("leader"), "{out}");
    assert!(out.contains("TASK_FINISHED=2") && out.contains("TASK_RUNNING=1"), "{out}");
    // Offers come and go, so only total and used are fixed.
    assert!(out.lines().any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["cpus", "2", "0.1"]), "{out}");

    let (code, out, err) = c.agora(&["agents", "--master", m]).await?;
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with(&busy.agent_id)).unwrap_or_else(|| panic!("no agent row:\n{out}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[1..],
        ["agent0", &c.agent_addrs[0], "active", "0.1/2", "32/1024", "0/4096", "1"]
    );

    let (code, out, err) = c.agora(&["frameworks", "--master", m]).await?;
    assert_eq!(code, 0, "{err}");
    let fw_line = out.lines().find(|l| l.contains("long-runner")).unwrap_or_else(|| panic!("{out}"));
    let fw_id = fw_line.split_whitespace().next().unwrap().to_string();
    assert!(fw_line.contains(" active "), "{out}");

    let (code, out, err) = c.agora(&["tasks", "--master", m]).await?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "header and ticker-0 only:\n{out}");
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("ticker-0") && l.contains("TASK_RUNNING")), "{out}");

    let (code, out, err) = c.agora(&["tasks", "--all", "--master", m]).await?;
    assert_eq!(code, 0, "{err}");
    for (id, state) in [
        ("ticker-0", "TASK_RUNNING"),
        ("hello-0", "TASK_FINISHED"),
        ("hello-1", "TASK_FINISHED"),
        ("failing-0", "TASK_FAILED"),
    ] {
        assert!(out.lines().any(|l| l.starts_with(id) && l.contains(state)), "{id} {state}:\n{out}");
    }
    assert!(out.lines().any(|l| l.starts_with("failing-0") && l.contains("status 3")), "{out}");

    let (code, out, _) = c.agora(&["tasks", "--all", "--framework", &fw_id, "--master", m, "--json"]).await?;
    assert_eq!(code, 0);
    let tasks: Value = serde_json::from_str(&out)?;
    let ids: Vec<&str> = tasks.as_array().into_iter().flatten().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["ticker-0"]);

    for cmd in ["state", "agents", "frameworks"] {
        let (code, out, err) = c.agora(&[cmd, "--json", "--master", m]).await?;
        assert_eq!(code, 0, "{cmd}: {err}");
        serde_json::from_str::<Value>(&out).with_context(|| format!("agora {cmd} --json:\n{out}"))?;
    }

    let (code, out, err) = c.agora(&["task", "log", "hello-1", "--master", m]).await?;
    assert_eq!((code, out.as_str()), (0, "hello from hello-1\n"), "{err}");
    let (code, out, err) = c.agora(&["task", "log", "hello-1", "--stderr", "--master", m]).await?;
    assert_eq!((code, out.as_str()), (0, "complaint from hello-1\n"), "{err}");
    let (code, out, err) = c.agora(&["task", "log", "nope", "--master", m]).await?;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("'nope'"), "{err}");

    // An unreachable master is a clear error and a non-zero exit.
    let closed = format!("127.0.0.1:{}", agora_integration_tests::free_port());
    for cmd in ["state", "agents", "frameworks", "tasks"] {
        let (code, _, err) = c.agora(&[cmd, "--master", &closed]).await?;
        assert_ne!(code, 0, "{cmd}");
        assert!(err.contains(&format!("cannot reach the master at http://{closed}")), "{cmd}: {err}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_log_follow_prints_new_output_until_the_task_ends() -> Result<()> {
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    cluster.add_agent(AGENT).await?;
    let m = cluster.master_addr.clone();
    // The task waits for a file the test writes into its sandbox, so the follower is attached before the output
    // ends.
    let cmd = "echo first; while [ ! -e \"$MESOS_SANDBOX/gate\" ]; do sleep 0.1; done; echo second";
    let mut exec = tokio::process::Command::new(bin_dir().join("agora"))
        .args(["execute", "--master", &m, "--name", "gated", "--resources", TASK, "--command", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let http = cluster.http.clone();
    let url = format!("http://{m}/master/tasks/gated-0");
    wait_for("gated-0 to run", WAIT, async || {
        let t: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (t["state"] == "TASK_RUNNING").then_some(())
    })
    .await?;
    let mut follow = tokio::process::Command::new(bin_dir().join("agora"))
        .args(["task", "log", "gated-0", "--follow", "--master", &m])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = follow.stdout.take().context("stdout")?;
    let mut seen = Vec::new();
    // Read until "first" arrives, then open the gate; the follower must then print "second" and exit by itself.
    tokio::time::timeout(WAIT, async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("first\n") {
            let n = stdout.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "agora task log --follow ended early");
            seen.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok(())
    })
    .await
    .context("no 'first' from agora task log --follow")??;
    let sandbox: Value = http.get(format!("{url}/sandbox")).send().await?.error_for_status()?.json().await?;
    let dir = sandbox["directory"].as_str().context("sandbox directory")?;
    std::fs::write(Path::new(dir).join("gate"), "")?;
    // The follower prints the rest and exits by itself once the task is finished.
    tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut seen))
        .await
        .context("agora task log --follow did not finish")??;
    let out = tokio::time::timeout(WAIT, follow.wait_with_output()).await.context("follower did not exit")??;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&seen), "first\nsecond\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("TASK_FINISHED"));
    let _ = tokio::time::timeout(WAIT, exec.wait()).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_cluster_in_headless_chromium() -> Result<()> {
    browser_prerequisites();
    let busy = busy_cluster().await?;
    let c = &busy.cluster;
    let shots = c.dir.path().join("screenshots");
    let expect = json!({
        "agent_id": busy.agent_id,
        "agent_hostname": "agent0",
        "frameworks": ["long-runner", "agora-execute"],
        "running": ["ticker-0"],
        "finished": ["hello-0", "hello-1"],
        "failed": ["failing-0"],
        "stdout_task": "hello-1",
        "stdout_text": "hello from hello-1",
        "follow_task": "ticker-0",
    });
    let env = [("AGORA_URL", format!("http://{}/", c.master_addr)), ("AGORA_EXPECT", expect.to_string())];
    run_browser_script("page.test.mjs", &env, &shots, &["cluster.png", "task.png", "failure.png"]).await?;
    let artifacts = bin_dir().join("web-screenshots");
    assert!(artifacts.join("cluster.png").exists() && artifacts.join("task.png").exists());
    Ok(())
}
