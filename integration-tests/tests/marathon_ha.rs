//! Marathon with ZooKeeper end to end: two real `agora-marathon` with `--zk` on one path against a real master, an
//! agent and the harness's ZooKeeper. The standby proxies the API to the leader; `kill -9` of the leader hands the
//! lead to the other, which reloads the state from ZooKeeper and keeps the running tasks (same ids, nothing
//! launched twice); `DELETE /v2/leader` abdicates. Build the binaries first: `cargo build --workspace --bins`.

use agora_integration_tests::marathon::Marathon;
use agora_integration_tests::{Cluster, WAIT, ZooKeeper, free_port, wait_for};
use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde_json::json;

/// The Marathon instances' ZooKeeper session timeout (ms): a killed leader's member is gone about this long after.
const SESSION_MS: &str = "2000";

async fn start(cluster: &Cluster, zk: &ZooKeeper, port: u16, name: &str) -> Result<Marathon> {
    let url = zk.url("/marathon");
    let flags = ["--zk", url.as_str(), "--zk-session-timeout", SESSION_MS];
    Marathon::start_with(cluster, &cluster.dir.path().join(name), port, name, &flags).await
}

async fn leader_seen_by(m: &Marathon) -> Option<String> {
    let (status, _, v) = m.call(Method::GET, "/v2/leader", None).await.ok()?;
    (status == 200).then(|| v["leader"].as_str().map(String::from)).flatten()
}

/// Running task ids of `/ha/sleepy` as `m` reports them (a standby proxies the question), once all run.
async fn running_tasks(m: &Marathon) -> Option<Vec<String>> {
    let app = m.app("/ha/sleepy").await?;
    let tasks = app["tasks"].as_array()?;
    let mut ids: Vec<String> = tasks
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    (ids.len() == tasks.len()).then_some(ids)
}

/// The Marathon framework on the master: (id, active, running task ids, every task id it ever had there).
async fn on_master(cluster: &Cluster) -> Option<(String, bool, Vec<String>, usize)> {
    let s = cluster.state().await.ok()?;
    let f = s["frameworks"].as_array()?.iter().find(|f| f["name"] == "marathon")?.clone();
    let mut running: Vec<String> = f["tasks"]
        .as_array()?
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    running.sort();
    let all = f["tasks"].as_array()?.len() + f["completed_tasks"].as_array().map_or(0, Vec::len);
    Some((f["id"].as_str()?.to_string(), f["active"] == true, running, all))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_fails_over_through_zookeeper_without_relaunching() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:1024;ports:[32300-32399]").await?;
    let zk = ZooKeeper::start(&cluster.dir.path().join("zk")).await?;
    let (port_a, port_b) = (free_port(), free_port());
    let a = start(&cluster, &zk, port_a, "marathon-a").await?;
    let b = start(&cluster, &zk, port_b, "marathon-b").await?;

    // One leader, named alike by both (each answers /ping on its own: start waited for it).
    let leader = wait_for("both instances to name one leader", WAIT, async || {
        let (la, lb) = (leader_seen_by(&a).await?, leader_seen_by(&b).await?);
        (la == lb).then_some(la)
    })
    .await?;
    let (mut leading, standby) = if leader == format!("127.0.0.1:{port_a}") { (a, b) } else { (b, a) };
    ensure!(leading.url == format!("http://{leader}"), "leader {leader} is neither instance");

    // Create through the standby: proxied to the leader.
    let app = json!({"id": "/ha/sleepy", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16});
    let (status, headers, body) = standby.call(Method::POST, "/v2/apps", Some(app)).await?;
    ensure!(status == 201, "POST through the standby: {status} {body}");
    assert_eq!(headers["x-marathon-leader"], leading.url.as_str(), "answered by the leader");
    assert!(headers.contains_key("marathon-deployment-id") && headers.contains_key("location"));
    // The event stream is not proxied: a standby redirects it to the leader.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let r = no_redirects.get(format!("{}/v2/events?event_type=deployment_info", standby.url)).send().await?;
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["location"], format!("{}/v2/events?event_type=deployment_info", leading.url).as_str());
    ensure!(body["id"] == "/ha/sleepy", "{body}");
    let before =
        wait_for("2 running tasks", WAIT * 2, async || running_tasks(&standby).await.filter(|ids| ids.len() == 2))
            .await?;
    let (framework_id, _, on_master_before, _) = wait_for("the master to list both tasks running", WAIT, async || {
        on_master(&cluster).await.filter(|(_, _, running, _)| *running == before)
    })
    .await?;

    // kill -9 the leader: the standby takes over, reloads the state from ZooKeeper, keeps the tasks.
    leading.proc.kill9();
    let new_leader = standby.url.trim_start_matches("http://").to_string();
    wait_for("the standby to take the lead", WAIT * 2, async || {
        (leader_seen_by(&standby).await? == new_leader).then_some(())
    })
    .await?;
    let after = wait_for("the new leader to show the app with its tasks", WAIT, async || {
        running_tasks(&standby).await.filter(|ids| ids.len() == 2)
    })
    .await?;
    assert_eq!(after, before, "the same tasks, not new ones");
    // The new leader subscribed with the same framework id; the master still has exactly the two tasks.
    wait_for("the new leader to resubscribe as the same framework", WAIT * 2, async || {
        on_master(&cluster).await.filter(|(id, active, _, _)| *id == framework_id && *active)
    })
    .await?;
    let (_, _, running, all) = on_master(&cluster).await.context("the master's state")?;
    assert_eq!(running, on_master_before, "the tasks kept running");
    assert_eq!(all, 2, "nothing was launched or killed again");
    assert_eq!(standby.get("/v2/queue").await?["queue"], json!([]), "nothing waits to be launched");
    let info = standby.get("/v2/info").await?;
    assert_eq!(info["marathon_config"]["ha"], json!(true), "{info}");
    assert_eq!(info["leader"], json!(new_leader), "{info}");
    let zk_url = info["zookeeper_config"]["zk"].as_str().context("zookeeper_config.zk")?;
    assert_eq!(zk_url, zk.url("/marathon"), "{info}");

    // The old leader comes back as a standby; DELETE /v2/leader through it makes the leader abdicate and exit.
    let port_old = leading.url.rsplit(':').next().context("a port")?.parse::<u16>()?;
    drop(leading);
    let mut standby = standby;
    let back = start(&cluster, &zk, port_old, "marathon-back").await?;
    wait_for("the old leader to come back as a standby", WAIT, async || {
        (leader_seen_by(&back).await? == new_leader).then_some(())
    })
    .await?;
    let (status, _, body) = back.call(Method::DELETE, "/v2/leader", None).await?;
    assert_eq!((status, body), (200, json!({"message": "Leadership abdicated"})));
    let exit =
        wait_for("the abdicated leader to exit", WAIT, async || standby.proc.child.try_wait().ok().flatten()).await?;
    assert!(exit.success(), "abdication is a clean exit: {exit}");
    wait_for("the restarted instance to lead", WAIT * 2, async || {
        (leader_seen_by(&back).await? == format!("127.0.0.1:{port_old}")).then_some(())
    })
    .await?;
    let again = wait_for("the app and its tasks on the third leader", WAIT, async || {
        running_tasks(&back).await.filter(|ids| ids.len() == 2)
    })
    .await?;
    assert_eq!(again, before);
    let (_, _, running, all) = on_master(&cluster).await.context("the master's state")?;
    assert_eq!((running, all), (on_master_before, 2));
    Ok(())
}

/// Standalone, `DELETE /v2/leader` is an election this lone instance wins again: it keeps serving, reloads its
/// state and resubscribes as the same framework, and its tasks run on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_abdication_is_won_again_without_touching_the_tasks() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:1024;ports:[32400-32499]").await?;
    let m = Marathon::start(&cluster, &cluster.dir.path().join("marathon"), free_port(), "marathon").await?;
    let app = json!({"id": "/ha/sleepy", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16});
    let (status, _, body) = m.call(Method::POST, "/v2/apps", Some(app)).await?;
    ensure!(status == 201, "{status} {body}");
    let before =
        wait_for("2 running tasks", WAIT * 2, async || running_tasks(&m).await.filter(|ids| ids.len() == 2)).await?;
    let (framework_id, _, _, _) = on_master(&cluster).await.context("the master's state")?;

    let (status, _, body) = m.call(Method::DELETE, "/v2/leader", None).await?;
    assert_eq!((status, body), (200, json!({"message": "Leadership abdicated"})));
    let me = m.url.trim_start_matches("http://").to_string();
    wait_for("the instance to lead again", WAIT, async || (leader_seen_by(&m).await? == me).then_some(())).await?;
    let again = wait_for("the app with its tasks", WAIT, async || running_tasks(&m).await).await?;
    assert_eq!(again, before);
    let mut m = m;
    assert!(m.proc.child.try_wait()?.is_none(), "a lone instance keeps running");
    let log = m.proc.log_text();
    assert!(log.contains("this one leads again"), "the instance stepped down and led anew:\n{log}");
    wait_for("the framework to be subscribed again", WAIT, async || {
        on_master(&cluster).await.filter(|(id, active, _, _)| *id == framework_id && *active)
    })
    .await?;
    let (_, _, running, all) = on_master(&cluster).await.context("the master's state")?;
    assert_eq!((running, all), (before, 2), "nothing launched or killed");
    Ok(())
}
