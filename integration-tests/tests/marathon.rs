//! Marathon end to end: the real `agora-master`, two `agora-agent`s and `agora-marathon` on loopback, driven
//! through Marathon's REST API and event stream. Build the binaries first: `cargo build --workspace --bins`.

use std::path::PathBuf;

use agora_integration_tests::marathon::{Marathon, follow_events, http_server_cmd, task_ids, types};
use agora_integration_tests::{Cluster, Proc, WAIT, free_port, wait_for};
use anyhow::{Context, Result};
use serde_json::{Value, json};

fn marathon_tasks_on_master(state: &Value) -> Vec<String> {
    let mut ids: Vec<String> = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["name"] == "marathon")
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_runs_heals_upgrades_constrains_and_survives_a_restart() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:2048;ports:[32100-32199]").await?;
    cluster.add_agent("cpus:2;mem:2048;ports:[32200-32299]").await?;
    let work_dir: PathBuf = cluster.dir.path().join("marathon");
    let port = free_port();
    let mut marathon = Marathon::start(&cluster, &work_dir, port, "marathon").await?;
    let events = follow_events(format!("{}/v2/events", marathon.url));
    wait_for("the event stream to attach", WAIT, async || (!types(&events).is_empty()).then_some(())).await?;
    assert_eq!(types(&events)[0], "event_stream_attached");

    // ---- create: 201 with Location and Marathon-Deployment-Id, then 3 running tasks serving on $PORT0 -------
    let cmd = http_server_cmd();
    let (status, headers, body) = marathon
        .call(
            reqwest::Method::POST,
            "/v2/apps",
            Some(json!({"id": "it/web", "cmd": &cmd, "instances": 3, "cpus": 0.1, "mem": 32})),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["location"], "/it/web");
    assert!(headers.contains_key("marathon-deployment-id"));
    assert_eq!(body["id"], "/it/web");
    assert_eq!(body["tasksRunning"], 0);
    let app = marathon.settled("/it/web", 3).await?;
    let port0 = app["tasks"][0]["ports"][0].as_u64().context("a host port")?;
    // RUNNING comes when the process started; the server listens a moment later.
    wait_for(&format!("the task to serve on $PORT0 ({port0})"), WAIT, async || {
        let r = reqwest::get(format!("http://127.0.0.1:{port0}/")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await?;

    // ---- self-healing: a killed task is replaced ---------------------------------------------------------
    let victim = task_ids(&app)[0].clone();
    let (status, _, body) =
        marathon.call(reqwest::Method::DELETE, &format!("/v2/apps/it/web/tasks/{victim}"), None).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["id"], victim.as_str());
    let healed = wait_for("the killed task to be replaced", WAIT * 2, async || {
        let app = marathon.settled("/it/web", 3).await.ok()?;
        (!task_ids(&app).contains(&victim)).then_some(app)
    })
    .await?;
    assert_eq!(task_ids(&healed).len(), 3);
    // Killed without wipe, the instance relaunched as its next incarnation (Marathon since 1.8).
    let (instance, _) = victim.rsplit_once("._app.").context("a task id of the form <instance>._app.<n>")?;
    let next = format!("{instance}._app.2");
    assert!(task_ids(&healed).contains(&next), "{next} among {:?}", task_ids(&healed));

    // ---- rolling upgrade: never below minimumHealthCapacity (1.0 → 3 running) while it rolls ---------------
    let (status, headers, body) =
        marathon.call(reqwest::Method::PUT, "/v2/apps/it/web", Some(json!({"cmd": format!("{cmd} # v2")}))).await?;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("marathon-deployment-id"));
    let new_version = body["version"].as_str().context("version")?.to_string();
    let mut min_running = usize::MAX;
    let upgraded = wait_for("the rolling upgrade to finish", WAIT * 3, async || {
        let app = marathon.app("/it/web").await?;
        let tasks = app["tasks"].as_array()?.clone();
        let running = tasks.iter().filter(|t| t["state"] == "TASK_RUNNING").count();
        min_running = min_running.min(running);
        let all_new = tasks.iter().all(|t| t["version"] == new_version.as_str());
        (all_new && running == 3 && tasks.len() == 3 && app["deployments"].as_array()?.is_empty()).then_some(app)
    })
    .await?;
    assert!(min_running >= 3, "running dropped to {min_running} during the upgrade");
    assert_eq!(upgraded["cmd"], format!("{cmd} # v2"));
    assert!(task_ids(&upgraded).iter().all(|id| !task_ids(&healed).contains(id)), "every task was replaced");

    // ---- UNIQUE hostname: 3 wanted on 2 agents → 2 running, the third explained in /v2/queue --------------
    let (status, _, body) = marathon
        .call(
            reqwest::Method::POST,
            "/v2/apps",
            Some(json!({"id": "/it/uniq", "cmd": "sleep 3600", "instances": 3, "cpus": 0.1, "mem": 16,
                        "constraints": [["hostname", "UNIQUE"]]})),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let entry = wait_for("the queue to explain the unplaced instance", WAIT * 2, async || {
        let app = marathon.app("/it/uniq").await?;
        let running = app["tasks"].as_array()?.iter().filter(|t| t["state"] == "TASK_RUNNING").count();
        if running != 2 {
            return None;
        }
        let q = marathon.get("/v2/queue").await.ok()?;
        let entry = q["queue"].as_array()?.iter().find(|e| e["app"]["id"] == "/it/uniq")?.clone();
        let reasons = entry["processedOffersSummary"]["rejectSummaryLastOffers"].as_array()?;
        let uc = reasons.iter().find(|r| r["reason"] == "UnfulfilledConstraint")?;
        (uc["declined"].as_u64()? > 0).then_some(entry)
    })
    .await?;
    assert_eq!(entry["count"], 1);
    let hosts: std::collections::BTreeSet<String> = marathon.app("/it/uniq").await.context("uniq")?["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["host"].as_str().map(String::from))
        .collect();
    assert_eq!(hosts.len(), 2, "one per agent: {hosts:?}");

    // ---- 409 while its deployment cannot finish; force overrides -----------------------------------------
    let (status, _, body) =
        marathon.call(reqwest::Method::PUT, "/v2/apps/it/uniq", Some(json!({"instances": 2}))).await?;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap_or("").starts_with("App is locked by one or more deployments."));
    assert_eq!(body["deployments"].as_array().map(Vec::len), Some(1));
    let (status, _, body) =
        marathon.call(reqwest::Method::PUT, "/v2/apps/it/uniq?force=true", Some(json!({"instances": 2}))).await?;
    assert_eq!(status, 200, "{body}");
    marathon.settled("/it/uniq", 2).await?;

    // ---- errors: 422 validation, 400 malformed JSON, 404 unknown app -------------------------------------
    let (status, _, body) = marathon
        .call(reqwest::Method::POST, "/v2/apps", Some(json!({"id": "/Bad", "cmd": "x", "instances": -1})))
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["message"], "Object is not valid");
    let paths: Vec<&str> =
        body["details"].as_array().into_iter().flatten().filter_map(|d| d["path"].as_str()).collect();
    assert_eq!(paths, vec!["/id", "/instances"]);
    let resp = marathon
        .http
        .post(format!("{}/v2/apps", marathon.url))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.json::<Value>().await?["message"], "Invalid JSON");
    let (status, _, body) = marathon.call(reqwest::Method::GET, "/v2/apps/nope", None).await?;
    assert_eq!((status, body), (404, json!({"message": "App '/nope' does not exist"})));

    // ---- the event stream saw status updates and deployments -----------------------------------------------
    let seen = types(&events);
    for t in [
        "status_update_event",
        "instance_changed_event",
        "deployment_info",
        "deployment_step_success",
        "deployment_success",
        "api_post_event",
    ] {
        assert!(seen.iter().any(|s| s == t), "no {t} in {seen:?}");
    }

    // ---- restart: the new Marathon picks up the apps and the running tasks without relaunching -------------
    let framework_id = marathon.get("/v2/info").await?["frameworkId"].clone();
    let web_before = task_ids(&marathon.settled("/it/web", 3).await?);
    let uniq_before = task_ids(&marathon.settled("/it/uniq", 2).await?);
    let on_master_before = marathon_tasks_on_master(&cluster.state().await?);
    assert_eq!(on_master_before.len(), 5, "{on_master_before:?}");
    marathon.proc.terminate();
    drop(marathon);
    let marathon = Marathon::start(&cluster, &work_dir, free_port(), "marathon-2").await?;
    assert_eq!(marathon.get("/v2/info").await?["frameworkId"], framework_id);
    // Wait for the reconciliation answers (a status update per known task) before comparing.
    wait_for("the restarted Marathon to reconcile its tasks", WAIT, async || {
        let log = marathon.proc.log_text();
        web_before
            .iter()
            .chain(&uniq_before)
            .all(|id| log.contains(&format!("status update task_id={id}")))
            .then_some(())
    })
    .await?;
    assert_eq!(task_ids(&marathon.settled("/it/web", 3).await?), web_before);
    assert_eq!(task_ids(&marathon.settled("/it/uniq", 2).await?), uniq_before);
    assert_eq!(marathon_tasks_on_master(&cluster.state().await?), on_master_before, "nothing was relaunched");

    // ---- delete: every task goes away --------------------------------------------------------------------
    for id in ["/it/web", "/it/uniq"] {
        let (status, _, body) = marathon.call(reqwest::Method::DELETE, &format!("/v2/apps{id}"), None).await?;
        assert_eq!(status, 200, "{body}");
    }
    wait_for("Marathon's tasks to stop", WAIT * 2, async || {
        marathon_tasks_on_master(&cluster.state().await.ok()?).is_empty().then_some(())
    })
    .await?;
    Ok(())
}

/// Like `Cluster::add_agent`, with agent attributes.
async fn add_agent_with_attributes(cluster: &mut Cluster, resources: &str, attributes: &str) -> Result<String> {
    let n = cluster.agents.len();
    let port = free_port();
    let args: Vec<String> = vec![
        "--master".into(),
        cluster.master_addr.clone(),
        "--ip".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--work-dir".into(),
        cluster.dir.path().join(format!("agent{n}")).display().to_string(),
        "--resources".into(),
        resources.into(),
        "--attributes".into(),
        attributes.into(),
        "--hostname".into(),
        format!("agent{n}"),
    ];
    let before = cluster.agent_ids().await?;
    cluster.agents.push(Proc::spawn(&format!("agent{n}"), "agora-agent", &args, cluster.dir.path())?);
    cluster.agent_addrs.push(format!("127.0.0.1:{port}"));
    wait_for("the agent to register", WAIT, async || {
        cluster.agent_ids().await.ok()?.into_iter().find(|id| !before.contains(id))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_and_max_per_spread_instances() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    add_agent_with_attributes(&mut cluster, "cpus:2;mem:1024;ports:[32300-32399]", "rack:r1").await?;
    add_agent_with_attributes(&mut cluster, "cpus:2;mem:1024;ports:[32400-32499]", "rack:r2").await?;
    add_agent_with_attributes(&mut cluster, "cpus:2;mem:1024;ports:[32500-32599]", "rack:r2").await?;
    let marathon = Marathon::start(&cluster, &cluster.dir.path().join("marathon"), free_port(), "marathon").await?;
    let (status, _, body) = marathon
        .call(
            reqwest::Method::POST,
            "/v2/apps",
            Some(json!({"id": "/spread", "cmd": "sleep 3600", "instances": 4, "cpus": 0.1, "mem": 16,
                        "constraints": [["rack", "GROUP_BY", "2"], ["hostname", "MAX_PER", "2"]]})),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let app = marathon.settled("/spread", 4).await?;
    let mut per_host = std::collections::BTreeMap::<String, usize>::new();
    for t in app["tasks"].as_array().into_iter().flatten() {
        *per_host.entry(t["host"].as_str().unwrap_or("").to_string()).or_default() += 1;
    }
    let r1 = per_host.get("agent0").copied().unwrap_or(0);
    let r2 = per_host.get("agent1").copied().unwrap_or(0) + per_host.get("agent2").copied().unwrap_or(0);
    assert_eq!((r1, r2), (2, 2), "GROUP_BY rack spreads evenly: {per_host:?}");
    assert!(per_host.values().all(|n| *n <= 2), "MAX_PER hostname 2: {per_host:?}");
    let (status, _, _) = marathon.call(reqwest::Method::DELETE, "/v2/apps/spread", None).await?;
    assert_eq!(status, 200);
    wait_for("the tasks to stop", WAIT * 2, async || {
        marathon_tasks_on_master(&cluster.state().await.ok()?).is_empty().then_some(())
    })
    .await?;
    Ok(())
}

/// `agora app`, `agora deployment` and `agora queue` drive a real Marathon: add from a file, list, scale, update
/// with `key=value`, tasks, versions and rollback, a validation error shown with its path, the queue saying why an
/// app cannot launch, and remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agora_cli_drives_marathon() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:1024;ports:[32300-32399]").await?;
    let port = free_port();
    let marathon = Marathon::start(&cluster, &cluster.dir.path().join("marathon"), port, "marathon").await?;
    let at = ["--marathon", marathon.url.as_str()];
    let agora = async |args: &[&str]| -> Result<(i32, String, String)> {
        agora_integration_tests::run_agora(&[args, &at[..]].concat()).await
    };

    // add from a file
    let file = cluster.dir.path().join("web.json");
    std::fs::write(
        &file,
        json!({"id": "/cli/web", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16}).to_string(),
    )?;
    let (code, out, err) = agora(&["app", "add", file.to_str().context("utf-8 path")?]).await?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("created /cli/web (1 instances): deployment "), "{out}");
    marathon.settled("/cli/web", 1).await?;

    // list: one running of one, nothing waiting
    let (code, out, err) = agora(&["app", "list"]).await?;
    assert_eq!(code, 0, "{out}{err}");
    let row: Vec<&str> =
        out.lines().find(|l| l.starts_with("/cli/web")).context(out.clone())?.split_whitespace().collect();
    assert_eq!(row, ["/cli/web", "16", "0.1", "1/1", "-", "-", "no", "sleep", "1000"]);

    // scale with --wait: it returns once the deployment has finished, so both tasks run by then; then the tasks
    let (code, out, err) = agora(&["app", "scale", "/cli/web", "2", "--wait"]).await?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("scaling /cli/web to 2: deployment "), "{out}");
    assert!(out.contains("  step done: ScaleApplication /cli/web") && out.trim_end().ends_with("finished"), "{out}");
    let app = marathon.app("/cli/web").await.context("/cli/web")?;
    let states: Vec<&Value> = app["tasks"].as_array().context("tasks")?.iter().map(|t| &t["state"]).collect();
    assert_eq!(states, [&json!("TASK_RUNNING"); 2], "{app}");
    assert_eq!(app["deployments"], json!([]), "{app}");
    let (code, out, err) = agora(&["app", "tasks", "cli/web"]).await?;
    assert_eq!(code, 0, "{out}{err}");
    for task in app["tasks"].as_array().context("tasks")? {
        let id = task["id"].as_str().context("a task id")?;
        let line = out.lines().find(|l| l.starts_with(id)).with_context(|| format!("{id} in\n{out}"))?;
        let port = task["ports"][0].to_string();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[2..4], [port.as_str(), "TASK_RUNNING"], "{line}");
    }

    // update with key=value, then roll back to the first version
    let (code, out, err) = agora(&["app", "update", "/cli/web", "cmd=sleep 2000", "env={\"MODE\":\"two\"}"]).await?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("updated /cli/web: deployment "), "{out}");
    let updated = wait_for("the update to roll out", WAIT * 2, async || {
        let app = marathon.settled("/cli/web", 2).await.ok()?;
        (app["cmd"] == "sleep 2000" && app["env"]["MODE"] == "two").then_some(app)
    })
    .await?;
    assert_eq!(updated["instances"], 2);
    let (code, out, err) = agora(&["app", "versions", "/cli/web"]).await?;
    assert_eq!(code, 0, "{out}{err}");
    let versions: Vec<&str> = out.lines().collect();
    assert_eq!(versions.len(), 3, "create, scale, update: {out}");
    let first = versions.last().context("a version")?;
    let (code, out, err) = agora(&["app", "show", "/cli/web", "--version", first]).await?;
    assert_eq!(code, 0, "{out}{err}");
    let shown: Value = serde_json::from_str(&out)?;
    assert_eq!((shown["cmd"].as_str(), shown["instances"].as_u64()), (Some("sleep 1000"), Some(1)));
    let (code, out, err) = agora(&["app", "rollback", "/cli/web", first]).await?;
    assert_eq!(code, 0, "{out}{err}");
    wait_for("the rollback", WAIT * 2, async || {
        let app = marathon.settled("/cli/web", 1).await.ok()?;
        (app["cmd"] == "sleep 1000").then_some(())
    })
    .await?;

    // a validation error: exit 1, Marathon's message and the path
    std::fs::write(&file, json!({"id": "/cli/Bad", "cmd": "x", "cpus": -1}).to_string())?;
    let (code, out, err) = agora(&["app", "add", file.to_str().context("utf-8 path")?]).await?;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("POST /v2/apps: 422 Object is not valid") && err.contains("  /id: ") && err.contains("  /cpus: "),
        "{err}"
    );

    // an app that cannot fit waits in the queue, which says why
    let (code, out, err) = agora(&["app", "update", "/cli/huge", "cmd=sleep 1", "cpus=64", "mem=16"]).await?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("created /cli/huge: deployment "), "PUT creates a missing app: {out}");
    let queued = wait_for("the queue to explain", WAIT, async || {
        let (_, out, _) = agora(&["queue"]).await.ok()?;
        out.lines().find(|l| l.starts_with("/cli/huge") && l.contains("InsufficientCpus")).map(String::from)
    })
    .await?;
    assert!(queued.split_whitespace().nth(1) == Some("1"), "{queued}");
    let (_, out, _) = agora(&["app", "list"]).await?;
    let huge = out.lines().find(|l| l.starts_with("/cli/huge")).context(out.clone())?;
    assert_eq!(huge.split_whitespace().nth(6), Some("yes"), "waiting: {huge}");
    let (code, out, err) = agora(&["deployment", "list"]).await?;
    assert_eq!(code, 0, "{out}{err}");
    let deployment = out
        .lines()
        .find(|l| l.contains("/cli/huge"))
        .context(out.clone())?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();

    // a deployment that cannot finish: watching it ends at --wait-timeout, exit 1; --wait on a read is refused
    let (code, out, err) = agora(&["deployment", "watch", &deployment, "--wait-timeout", "2secs"]).await?;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with(&format!("watching deployment {deployment}")), "{out}");
    assert!(err.contains(&format!("deployment {deployment} is still running after 2secs")), "{err}");
    let (code, _, err) = agora(&["app", "list", "--wait"]).await?;
    assert!(code == 1 && err.contains("--wait applies to changes that start a deployment"), "{code} {err}");

    // the deployment holds the app: a plain scale is refused with the deployment named, --force overrides
    let (code, _, err) = agora(&["app", "scale", "/cli/huge", "0"]).await?;
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains(&deployment) && err.contains("--force overrides"), "{err}");
    let (code, out, err) = agora(&["deployment", "stop", &deployment]).await?;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("stopped {deployment}"));

    // remove both
    for id in ["/cli/huge", "/cli/web"] {
        let (code, out, err) = agora(&["app", "remove", id]).await?;
        assert_eq!(code, 0, "{out}{err}");
    }
    wait_for("the apps to be gone", WAIT, async || {
        let v = marathon.get("/v2/apps").await.ok()?;
        v["apps"].as_array()?.is_empty().then_some(())
    })
    .await?;
    let (code, _, err) = agora(&["app", "show", "/cli/web"]).await?;
    assert_eq!(code, 1);
    assert!(err.contains("404") && err.contains("/cli/web"), "{err}");
    Ok(())
}

/// `agora group` and `agora app start|stop` against a real Marathon: a group tree added from a file, listed with
/// its totals, scaled by a factor (and by 0), updated, shown and removed; an app stopped and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agora_cli_drives_marathon_groups_and_stops_and_starts_apps() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:1024;ports:[32400-32499]").await?;
    let marathon = Marathon::start(&cluster, &cluster.dir.path().join("marathon"), free_port(), "marathon").await?;
    let at = ["--marathon", marathon.url.as_str()];
    let agora = async |args: &[&str]| -> Result<(i32, String, String)> {
        agora_integration_tests::run_agora(&[args, &at[..]].concat()).await
    };
    let ok = |(code, out, err): (i32, String, String)| -> Result<String> {
        anyhow::ensure!(code == 0, "exit {code}: {out}{err}");
        Ok(out)
    };
    let sleeper = |id: &str, n: u32| json!({"id": id, "cmd": "sleep 1000", "instances": n, "cpus": 0.1, "mem": 16});

    let file = cluster.dir.path().join("shop.json");
    let shop =
        json!({"id": "/shop", "apps": [sleeper("db", 1)], "groups": [{"id": "web", "apps": [sleeper("front", 2)]}]});
    std::fs::write(&file, shop.to_string())?;
    let out = ok(agora(&["group", "add", file.to_str().context("utf-8 path")?]).await?)?;
    assert!(out.starts_with("created /shop: deployment "), "{out}");
    marathon.settled("/shop/db", 1).await?;
    marathon.settled("/shop/web/front", 2).await?;

    let out = ok(agora(&["group", "list"]).await?)?;
    let row = |out: &str, id: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row(&out, "/shop")[1..3], ["2", "3"], "{out}");
    assert_eq!(row(&out, "/shop/web")[1..3], ["1", "2"], "{out}");

    let out = ok(agora(&["group", "scale", "shop", "2"]).await?)?;
    assert!(out.starts_with("scaling shop by 2: deployment "), "{out}");
    marathon.settled("/shop/db", 2).await?;
    marathon.settled("/shop/web/front", 4).await?;

    let out = ok(agora(&["group", "update", "/shop/web", "dependencies=[\"/shop/db\"]"]).await?)?;
    assert!(out.starts_with("updated /shop/web: deployment "), "{out}");
    let shown: Value = serde_json::from_str(&ok(agora(&["group", "show", "/shop/web"]).await?)?)?;
    assert_eq!(shown["dependencies"], json!(["/shop/db"]), "{shown}");
    assert_eq!(shown["apps"][0]["instances"], 4, "a dependencies change keeps the apps: {shown}");

    // stop, refused twice; start with a count, refused twice
    let out = ok(agora(&["app", "stop", "/shop/web/front"]).await?)?;
    assert!(out.starts_with("stopping /shop/web/front: deployment "), "{out}");
    marathon.settled("/shop/web/front", 0).await?;
    let (code, _, err) = agora(&["app", "stop", "/shop/web/front"]).await?;
    assert!(code == 1 && err.contains("already stopped"), "{code} {err}");
    let out = ok(agora(&["app", "start", "/shop/web/front", "3"]).await?)?;
    assert!(out.starts_with("starting /shop/web/front with 3 instances: deployment "), "{out}");
    marathon.settled("/shop/web/front", 3).await?;
    let (code, _, err) = agora(&["app", "start", "/shop/web/front"]).await?;
    assert!(code == 1 && err.contains("already started with 3 instances"), "{code} {err}");

    // scale by 0 stops everything below; a group that does not exist is Marathon's 404
    ok(agora(&["group", "scale", "/shop", "0"]).await?)?;
    marathon.settled("/shop/db", 0).await?;
    marathon.settled("/shop/web/front", 0).await?;
    let (code, _, err) = agora(&["group", "scale", "/nope", "2"]).await?;
    assert!(code == 1 && err.contains("404") && err.contains("/nope"), "{code} {err}");

    // with --wait the removal has finished when the command returns
    let out = ok(agora(&["group", "remove", "/shop", "--wait"]).await?)?;
    assert!(out.starts_with("removing /shop: deployment ") && out.trim_end().ends_with("finished"), "{out}");
    assert_eq!(marathon.get("/v2/apps").await?["apps"], json!([]));
    let out = ok(agora(&["group", "list"]).await?)?;
    assert!(row(&out, "/shop").is_empty(), "{out}");
    Ok(())
}

/// Marathon in a role (`--mesos-role public`) on an agent with part of its resources reserved for that role: an app
/// that accepts only `public` runs on the reservation, and the instance it has no room left for waits with
/// UnfulfilledRole in `/v2/queue` although unreserved resources are free; an app that accepts only `*` runs on those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_in_a_role_places_apps_by_their_accepted_resource_roles() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster
        .add_agent("cpus(public):0.5;mem(public):256;ports(public):[32500-32509];cpus:0.5;mem:256;ports:[32510-32519]")
        .await?;
    let dir = cluster.dir.path().join("marathon");
    let marathon = Marathon::start_with(&cluster, &dir, free_port(), "marathon", &["--mesos-role", "public"]).await?;
    assert_eq!(marathon.get("/v2/info").await?["marathon_config"]["mesos_role"], "public");
    let post = async |body: Value| marathon.call(reqwest::Method::POST, "/v2/apps", Some(body)).await;
    let ports = |app: &Value| -> Vec<u64> {
        app["tasks"].as_array().into_iter().flatten().filter_map(|t| t["ports"][0].as_u64()).collect()
    };

    let (status, _, body) = post(json!({"id": "/pub", "cmd": "sleep 3600", "cpus": 0.2, "mem": 32, "instances": 2,
        "acceptedResourceRoles": ["public"]}))
    .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["role"], "public", "a new app runs in Marathon's role: {body}");
    let app = marathon.settled("/pub", 2).await?;
    assert!(ports(&app).iter().all(|p| (32500..=32509).contains(p)), "reserved ports: {:?}", ports(&app));
    assert!(app["tasks"].as_array().into_iter().flatten().all(|t| t["role"] == "public"), "{app}");

    // A third does not fit in what is left of the reservation (0.1 cpus): it waits, and the queue says why.
    let (status, _, body) = marathon.call(reqwest::Method::PUT, "/v2/apps/pub", Some(json!({"instances": 3}))).await?;
    assert_eq!(status, 200, "{body}");
    wait_for("the queue to blame the role", WAIT * 2, async || {
        let q = marathon.get("/v2/queue").await.ok()?;
        let entry = q["queue"].as_array()?.iter().find(|e| e["app"]["id"] == "/pub")?.clone();
        let reasons = entry["processedOffersSummary"]["rejectSummaryLastOffers"].as_array()?;
        let r = reasons.iter().find(|r| r["reason"] == "UnfulfilledRole")?;
        (r["declined"].as_u64()? > 0 && entry["count"] == 1).then_some(())
    })
    .await?;

    // The unreserved half serves an app that accepts only `*`.
    let (status, _, body) = post(json!({"id": "/free", "cmd": "sleep 3600", "cpus": 0.2, "mem": 32, "instances": 2,
        "acceptedResourceRoles": ["*"]}))
    .await?;
    assert_eq!(status, 201, "{body}");
    let app = marathon.settled("/free", 2).await?;
    assert!(ports(&app).iter().all(|p| (32510..=32519).contains(p)), "unreserved ports: {:?}", ports(&app));
    assert_eq!(marathon.app("/pub").await.context("/pub")?["tasksRunning"], 2, "still waiting for its role");

    // Roles Marathon is not in are refused, naming the field.
    let (status, _, body) =
        post(json!({"id": "/other", "cmd": "x", "role": "other", "acceptedResourceRoles": ["third"]})).await?;
    assert_eq!(status, 422, "{body}");
    let paths: Vec<&str> =
        body["details"].as_array().into_iter().flatten().filter_map(|d| d["path"].as_str()).collect();
    assert_eq!(paths, ["/role", "/acceptedResourceRoles"], "{body}");
    Ok(())
}
