//! Marathon with ZooKeeper end to end: two real `agora-marathon` with `--zk` on one path against a real master, an
//! agent and the harness's ZooKeeper. The standby proxies the API to the leader; `kill -9` of the leader hands the
//! lead to the other, which reloads the state from ZooKeeper and keeps the running tasks (same ids, nothing
//! launched twice); `DELETE /v2/leader` abdicates; a leader frozen past its session (SIGSTOP) is replaced and
//! stops when it runs again; a leader whose state another writer changed stops on its next save; a leader that
//! cannot save new instance records launches none of them until it can. The store
//! itself (`ZkStore`) is tested against the same ZooKeeper: a save is applied whole or not at all, a new leader's
//! load fences the old one off, a save over ZooKeeper's request limit is split. Build the binaries first:
//! `cargo build --workspace --bins`.

use std::sync::Arc;

use agora_integration_tests::marathon::{Marathon, instance_record};
use agora_integration_tests::{Cluster, WAIT, ZK_DEFAULT_MAX_BUFFER, ZooKeeper, free_port, wait_for};
use agora_marathon::core::{Core, Persisted};
use agora_marathon::store::zk::ZkStore;
use agora_marathon::store::{StateStore, StoreError};
use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde_json::json;
use zookeeper_client as zk;

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

/// Two instances on one path, once both name the same leader: (the leader, the standby).
async fn leader_and_standby(cluster: &Cluster, zk: &ZooKeeper) -> Result<(Marathon, Marathon)> {
    let (port_a, port_b) = (free_port(), free_port());
    let a = start(cluster, zk, port_a, "marathon-a").await?;
    let b = start(cluster, zk, port_b, "marathon-b").await?;
    // One leader, named alike by both (each answers /ping on its own: start waited for it).
    let leader = wait_for("both instances to name one leader", WAIT, async || {
        let (la, lb) = (leader_seen_by(&a).await?, leader_seen_by(&b).await?);
        (la == lb).then_some(la)
    })
    .await?;
    let (leading, standby) = if leader == format!("127.0.0.1:{port_a}") { (a, b) } else { (b, a) };
    ensure!(leading.url == format!("http://{leader}"), "leader {leader} is neither instance");
    Ok((leading, standby))
}

/// Creates `/ha/sleepy` (2 instances) through `m` and waits until both run, on Marathon and on the master:
/// (the framework id, the running task ids).
async fn sleepy_running(cluster: &Cluster, m: &Marathon) -> Result<(String, Vec<String>)> {
    let app = json!({"id": "/ha/sleepy", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16});
    let (status, _, body) = m.call(Method::POST, "/v2/apps", Some(app)).await?;
    ensure!(status == 201, "POST /v2/apps: {status} {body}");
    let before =
        wait_for("2 running tasks", WAIT * 2, async || running_tasks(m).await.filter(|ids| ids.len() == 2)).await?;
    let (framework_id, _, _, _) = wait_for("the master to list both tasks running", WAIT, async || {
        on_master(cluster).await.filter(|(_, _, running, _)| *running == before)
    })
    .await?;
    Ok((framework_id, before))
}

/// After a failover to `new_leader`: it leads, shows the same two tasks running, is subscribed as the same
/// framework, and the master has exactly those two tasks (nothing launched or killed again).
async fn took_over_keeping_the_tasks(
    cluster: &Cluster,
    new_leader: &Marathon,
    framework_id: &str,
    before: &[String],
) -> Result<()> {
    let me = new_leader.url.trim_start_matches("http://").to_string();
    wait_for("the standby to take the lead", WAIT * 2, async || {
        (leader_seen_by(new_leader).await? == me).then_some(())
    })
    .await?;
    let after = wait_for("the new leader to show the app with its tasks", WAIT, async || {
        running_tasks(new_leader).await.filter(|ids| ids.len() == 2)
    })
    .await?;
    assert_eq!(after, before, "the same tasks, not new ones");
    wait_for("the new leader to subscribe as the same framework", WAIT * 2, async || {
        on_master(cluster).await.filter(|(id, active, _, _)| id == framework_id && *active)
    })
    .await?;
    let (_, _, running, all) = on_master(cluster).await.context("the master's state")?;
    assert_eq!(running, before, "the tasks kept running");
    assert_eq!(all, 2, "nothing was launched or killed again");
    assert_eq!(new_leader.get("/v2/queue").await?["queue"], json!([]), "nothing waits to be launched");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_fails_over_through_zookeeper_without_relaunching() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:1024;ports:[32300-32399]").await?;
    let zk = ZooKeeper::start(&cluster.dir.path().join("zk")).await?;
    let (mut leading, standby) = leader_and_standby(&cluster, &zk).await?;

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
    // The web UI is the standby's own (not proxied, so no X-Marathon-Leader), and `/` redirects to it.
    let r = no_redirects.get(format!("{}/", standby.url)).send().await?;
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str()?), (302, "/ui/"));
    let r = no_redirects.get(format!("{}/ui/", standby.url)).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(!r.headers().contains_key("x-marathon-leader"), "the standby's own page, not the leader's");
    assert!(r.text().await?.contains("<title>Marathon"));
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
    // The answer comes before the instance steps down: wait until its log says it stepped down and leads anew
    // (asserting at once failed when the test got there first).
    wait_for("the instance to step down and lead anew", WAIT, async || {
        m.proc.log_text().contains("this one leads again").then_some(())
    })
    .await?;
    let me = m.url.trim_start_matches("http://").to_string();
    wait_for("the instance to lead again", WAIT, async || (leader_seen_by(&m).await? == me).then_some(())).await?;
    let again = wait_for("the app with its tasks", WAIT, async || running_tasks(&m).await).await?;
    assert_eq!(again, before);
    let mut m = m;
    assert!(m.proc.child.try_wait()?.is_none(), "a lone instance keeps running");
    wait_for("the framework to be subscribed again", WAIT, async || {
        on_master(&cluster).await.filter(|(id, active, _, _)| *id == framework_id && *active)
    })
    .await?;
    let (_, _, running, all) = on_master(&cluster).await.context("the master's state")?;
    assert_eq!((running, all), (before, 2), "nothing launched or killed");
    Ok(())
}

/// The leader freezes (SIGSTOP) past its ZooKeeper session: ZooKeeper expires the session and removes its member,
/// the standby is elected, loads the state (claiming it) and subscribes as the same framework; the tasks run on
/// and nothing is launched twice. When the old leader runs again it finds its session gone (or the framework failed
/// over, or its next save refused) and exits instead of acting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_session_is_replaced_and_exits_when_it_wakes() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:1024;ports:[32500-32599]").await?;
    let zk = ZooKeeper::start(&cluster.dir.path().join("zk")).await?;
    let (mut leading, standby) = leader_and_standby(&cluster, &zk).await?;
    let (framework_id, before) = sleepy_running(&cluster, &standby).await?;

    leading.proc.pause()?;
    took_over_keeping_the_tasks(&cluster, &standby, &framework_id, &before).await?;
    leading.proc.resume()?;
    let exit = wait_for("the old leader to exit once it runs again", WAIT, async || {
        leading.proc.child.try_wait().ok().flatten()
    })
    .await?;
    let log = leading.proc.log_text();
    assert!(!exit.success(), "losing the lead is an error exit ({exit}):\n{log}");
    let reasons = [
        "lost leadership in ZooKeeper",     // its session was disconnected or expired
        "another Marathon wrote the state", // its next save was refused (the new leader's load)
        "stopped on an error from the master: framework failed over", // the new leader subscribed
    ];
    assert!(reasons.iter().any(|r| log.contains(r)), "it says why it stopped:\n{log}");
    // It did not launch anything on the way out, and the new leader still leads with the same tasks.
    let (_, _, running, all) = on_master(&cluster).await.context("the master's state")?;
    assert_eq!((running, all), (before.clone(), 2), "nothing launched or killed");
    let me = standby.url.trim_start_matches("http://").to_string();
    assert_eq!(leader_seen_by(&standby).await, Some(me));
    assert_eq!(running_tasks(&standby).await, Some(before));
    Ok(())
}

/// Another writer changes the leader's state in ZooKeeper (as a second Marathon that believes it leads would): the
/// leader's next save is refused whole (`StoreError::Conflict`), it stops without launching, and the standby takes
/// over from the state as it was before that save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stops_when_another_writer_changed_its_state() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:1024;ports:[32600-32699]").await?;
    let zk = ZooKeeper::start(&cluster.dir.path().join("zk")).await?;
    let (mut leading, standby) = leader_and_standby(&cluster, &zk).await?;
    let (framework_id, before) = sleepy_running(&cluster, &leading).await?;

    // The "other Marathon": rewrites the app's node (same bytes, so the state stays valid; its version moves).
    let client = zk::Client::connect(&zk.servers()).await?;
    let node = "/marathon/state/apps/_ha_sleepy";
    let (data, stat) = client.get_data(node).await.with_context(|| format!("read {node}"))?;
    client.set_data(node, &data, Some(stat.version)).await?;

    // Scaling makes the leader save the app's node: refused, so it stops, with the node named.
    let _ = leading.call(Method::PUT, "/v2/apps/ha/sleepy", Some(json!({"instances": 3}))).await;
    let exit =
        wait_for("the leader to stop on the conflict", WAIT, async || leading.proc.child.try_wait().ok().flatten())
            .await?;
    let log = leading.proc.log_text();
    assert!(!exit.success(), "a conflict is an error exit ({exit}):\n{log}");
    assert!(log.contains(&format!("{node} was changed by another Marathon")), "it names the node:\n{log}");
    assert!(log.contains("another Marathon wrote the state"), "it says why it stopped:\n{log}");

    // Nothing of the refused save was applied: the new leader has the app at 2 instances, the same 2 tasks.
    took_over_keeping_the_tasks(&cluster, &standby, &framework_id, &before).await?;
    let app = standby.app("/ha/sleepy").await.context("the app on the new leader")?;
    assert_eq!(app["instances"], json!(2), "the scale to 3 was not saved: {app}");
    Ok(())
}

/// ZooKeeper refuses the leader's save of new instance records (the test takes away the create permission on
/// `PATH/state/instances`; not a conflict, so the leader stays): it launches none of them, and once saves go
/// through again it launches the instances, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_launches_nothing_it_could_not_persist() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:1024;ports:[32700-32799]").await?;
    let zk = ZooKeeper::start(&cluster.dir.path().join("zk")).await?;
    let (mut leading, _standby) = leader_and_standby(&cluster, &zk).await?;
    let (_, before) = sleepy_running(&cluster, &leading).await?;

    let client = zk::Client::connect(&zk.servers()).await?;
    let dir = "/marathon/state/instances";
    // Every permission but CREATE: ADMIN stays, so the test can give CREATE back.
    let (perm, anyone) = (zk::Permission::READ | zk::Permission::WRITE | zk::Permission::DELETE, zk::AuthId::anyone());
    let no_create = [zk::Acl::new(perm | zk::Permission::ADMIN, anyone)];
    client.set_acl(dir, &no_create, None).await.with_context(|| format!("take CREATE away on {dir}"))?;
    let (status, _, body) = leading.call(Method::PUT, "/v2/apps/ha/sleepy", Some(json!({"instances": 3}))).await?;
    ensure!(status == 200, "scale to 3: {status} {body}");
    wait_for("the leader to refuse to launch what it could not save", WAIT, async || {
        leading.proc.log_text().contains("the new instances could not be persisted: launching none").then_some(())
    })
    .await?;
    let (_, _, running, all) = on_master(&cluster).await.context("the master's state")?;
    assert_eq!((running, all), (before.clone(), 2), "no task was launched without its record");
    assert!(leading.proc.child.try_wait()?.is_none(), "a ZooKeeper error that is no conflict does not stop the leader");

    client.set_acl(dir, &zk::Acls::anyone_all(), None).await.with_context(|| format!("give CREATE back on {dir}"))?;
    let three = wait_for("3 running tasks once the records can be saved", WAIT * 2, async || {
        running_tasks(&leading).await.filter(|ids| ids.len() == 3)
    })
    .await?;
    assert!(before.iter().all(|id| three.contains(id)), "the first two kept running: {three:?}");
    let (_, _, running, all) = on_master(&cluster).await.context("the master's state")?;
    assert_eq!((running, all), (three, 3), "each instance launched once");
    Ok(())
}

/// Runs a blocking store call off the runtime's workers (the store blocks its caller until ZooKeeper answers).
async fn blocking<T: Send + 'static>(
    store: &Arc<ZkStore>,
    f: impl FnOnce(&ZkStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await.expect("the store call does not panic")
}

/// A state with the app `id` (`instances` wanted) and that many instance records.
fn state_with(id: &str, instances: usize) -> Result<Persisted> {
    let mut core = Core::new(Persisted::default());
    let body = json!({"id": id, "cmd": "sleep 1000", "instances": instances, "cpus": 0.01, "mem": 8});
    core.create_app(&body, false, 1_700_000_000_000, "d1".into()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    core.set_framework_id("fw-store-test");
    let mut state = core.state.clone();
    let version = state.apps[id].version.clone();
    for n in 0..instances {
        let i = instance_record(id, n, &version)?;
        state.instances.insert(i.task_id.clone(), i);
    }
    Ok(state)
}

/// `ZkStore` against a real ZooKeeper: a save over a node another writer changed is refused whole (not one of its
/// nodes written); a second store's load fences the first off (its next save is refused at the guard, even for
/// nodes nobody else touched); a save over ZooKeeper's 1 MB request limit is split into requests that each fit,
/// and loads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zk_store_saves_whole_or_not_at_all_and_fences_off_an_older_leader() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // ZooKeeper's default request limit, as in production (the harness's default is roomier).
    let zk = ZooKeeper::start_with_max_buffer(&dir.path().join("zk"), ZK_DEFAULT_MAX_BUFFER).await?;
    let client = zk::Client::connect(&zk.servers()).await?;
    let root = "/store/state";
    let a = Arc::new(ZkStore::new(client.clone(), root)?);
    assert_eq!(blocking(&a, |s| s.load()).await?, None, "nothing saved yet");
    let s1 = state_with("/ha/store", 3)?;
    let s1c = s1.clone();
    blocking(&a, move |s| s.save(&s1c)).await?;
    let nodes = async |client: &zk::Client| -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for dir in ["apps", "instances", "deployments", "groups"] {
            let mut names = client.list_children(&format!("{root}/{dir}")).await?;
            names.sort();
            for name in names {
                let path = format!("{root}/{dir}/{name}");
                out.push((path.clone(), client.get_data(&path).await?.0));
            }
        }
        Ok(out)
    };
    let saved = nodes(&client).await?;
    let paths: Vec<&str> = saved.iter().map(|n| n.0.as_str()).collect();
    assert!(paths.contains(&"/store/state/apps/_ha_store"), "{paths:?}");
    assert_eq!(paths.iter().filter(|p| p.starts_with("/store/state/instances/")).count(), 3, "{paths:?}");

    // Another writer rewrites instance 0's node. A save changing every instance, the app, removing one instance
    // and adding one is refused at that node, and none of it is written.
    let ids: Vec<String> = s1.instances.keys().cloned().collect();
    let touched = format!("{root}/instances/{}", ids[0]);
    let (data, _) = client.get_data(&touched).await?;
    client.set_data(&touched, &data, None).await?;
    let mut s2 = s1.clone();
    for i in s2.instances.values_mut() {
        i.state = agora_proto::model::TaskState::Running;
    }
    s2.apps.get_mut("/ha/store").context("the app")?.instances = 4;
    s2.instances.remove(&ids[2]);
    let extra = instance_record("/ha/store", 99, &s1.apps["/ha/store"].version)?;
    s2.instances.insert(extra.task_id.clone(), extra);
    let s2c = s2.clone();
    let err = blocking(&a, move |s| s.save(&s2c)).await.expect_err("a save over another's write is refused");
    assert!(matches!(&err, StoreError::Conflict { path } if *path == touched), "{err}");
    assert_eq!(nodes(&client).await?, saved, "not one node of the refused save was written");

    // A new leader's store loads (claiming the guard): the old store's next save is refused at the guard, though
    // it touches only the app, which nobody else wrote.
    let b = Arc::new(ZkStore::new(client.clone(), root)?);
    assert_eq!(blocking(&b, |s| s.load()).await?.as_ref(), Some(&s1));
    let mut s3 = s1.clone();
    s3.apps.get_mut("/ha/store").context("the app")?.instances = 5;
    let s3c = s3.clone();
    let err = blocking(&a, move |s| s.save(&s3c)).await.expect_err("the fenced-off store cannot save");
    assert!(matches!(&err, StoreError::Conflict { path } if path == root), "{err}");
    assert_eq!(nodes(&client).await?, saved);
    let s2c = s2.clone();
    blocking(&b, move |s| s.save(&s2c)).await?;
    let c = Arc::new(ZkStore::new(client.clone(), root)?);
    assert_eq!(blocking(&c, |s| s.load()).await?.as_ref(), Some(&s2), "the new leader's save, whole");
    let (marker, _) = client.get_data(root).await?;
    assert_eq!(marker, br#"{"batch":1,"of":1}"#, "one request");

    // The limit is real: one request of 1.2 MB is refused by this server.
    let other = zk::Client::connect(&zk.servers()).await?;
    let mut multi = other.new_multi_writer();
    let acl = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for name in ["a", "b"] {
        multi.add_create(&format!("/too-big-{name}"), &vec![b'x'; 600_000], &acl)?;
    }
    assert!(multi.commit().await.is_err(), "ZooKeeper refuses a request over jute.maxbuffer");
    drop(other);
    let small = zk::Client::connect(&zk.servers()).await?;
    let mut multi = small.new_multi_writer();
    for name in ["a", "b"] {
        multi.add_create(&format!("/too-big-{name}"), &vec![b'x'; 1000], &acl)?;
    }
    assert_eq!(multi.commit().await?.len(), 2, "the same request, small, is accepted");
    // 3,000 new instance records (~1.6 MB) do not fit one request: the save is split into requests under that
    // limit, and loads back whole.
    let big = state_with("/ha/store", 3000)?;
    let bigc = big.clone();
    blocking(&c, move |s| s.save(&bigc)).await?;
    let (marker, _) = client.get_data(root).await?;
    let marker: serde_json::Value = serde_json::from_slice(&marker)?;
    assert!(marker["of"].as_u64() >= Some(2) && marker["batch"] == marker["of"], "split and complete: {marker}");
    let d = Arc::new(ZkStore::new(client.clone(), root)?);
    assert_eq!(blocking(&d, |s| s.load()).await?.as_ref(), Some(&big));
    Ok(())
}
