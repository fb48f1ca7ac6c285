//! Marathon health checks end to end: the real `agora-master`, two `agora-agent`s (containers) and
//! `agora-marathon` on loopback. Checks run on the agents beside the tasks and come back as `healthy` in status
//! updates; Marathon counts them, replaces what dies or fails its checks, and rolls upgrades on health. Build the
//! binaries first: `cargo build --workspace --bins`.

use agora_integration_tests::marathon::{Marathon, follow_events, http_server_cmd, https_server_cmd, task_ids, types};
use agora_integration_tests::{Cluster, WAIT, free_port, wait_for};
use anyhow::{Context, Result};
use serde_json::{Value, json};

/// The pid of the host process whose command line holds every one of `needles`.
fn pid_of(needles: &[&str]) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        needles.iter().all(|n| cmdline.contains(n)).then_some(pid)
    })
}

fn count(app: &Value, key: &str) -> u64 {
    app[key].as_u64().unwrap_or(0)
}

fn events_of(events: &[Value], kind: &str) -> Vec<Value> {
    events.iter().filter(|e| e["eventType"] == kind).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checked_apps_heal_roll_on_health_and_replace_failing_instances() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:2048;ports:[32300-32399]").await?;
    cluster.add_agent("cpus:2;mem:2048;ports:[32400-32499]").await?;
    let work_dir = cluster.dir.path().join("marathon");
    let marathon = Marathon::start(&cluster, &work_dir, free_port(), "marathon").await?;
    let events = follow_events(format!("{}/v2/events", marathon.url));
    wait_for("the event stream to attach", WAIT, async || (!types(&events).is_empty()).then_some(())).await?;

    // ---- 3 instances of an HTTP server with a MESOS_HTTP check on $PORT0 → 3 healthy ------------------------
    let cmd = http_server_cmd();
    let check = json!({"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 30,
                       "intervalSeconds": 1, "timeoutSeconds": 5, "delaySeconds": 0, "maxConsecutiveFailures": 3});
    let (status, _, body) = marathon
        .call(
            reqwest::Method::POST,
            "/v2/apps",
            Some(json!({"id": "/hc/web", "cmd": &cmd, "instances": 3, "cpus": 0.1, "mem": 32,
                        "healthChecks": [check],
                        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.34}})),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["healthChecks"][0]["protocol"], "MESOS_HTTP");
    let healthy = async |what: &str, exclude: &[String]| {
        wait_for(what, WAIT * 3, async || {
            let app = marathon.app("/hc/web").await?;
            let ids = task_ids(&app);
            let settled = count(&app, "tasksHealthy") == 3
                && ids.len() == 3
                && !ids.iter().any(|id| exclude.contains(id))
                && app["deployments"].as_array()?.is_empty();
            settled.then_some(app)
        })
        .await
    };
    let app = healthy("3 healthy instances", &[]).await?;
    assert_eq!(count(&app, "tasksUnhealthy"), 0);
    for t in app["tasks"].as_array().context("tasks")? {
        let r = &t["healthCheckResults"][0];
        assert_eq!(r["alive"], true, "{t:#}");
        assert!(r["firstSuccess"].is_string(), "{t:#}");
        assert!(t["id"].as_str().unwrap().starts_with(r["instanceId"].as_str().unwrap()), "{t:#}");
    }
    // The master keeps `healthy` in the task's statuses and shows the task's check.
    let state = cluster.state().await?;
    let on_master: Vec<Value> = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .collect();
    let first = on_master.iter().find(|t| t["id"] == task_ids(&app)[0].as_str()).context("the task on the master")?;
    assert_eq!(first["statuses"].as_array().and_then(|s| s.last()).map(|s| s["healthy"].clone()), Some(json!(true)));
    assert_eq!(first["health_check"]["type"], "HTTP");
    assert_eq!(first["health_check"]["http"]["port"], app["tasks"][0]["ports"][0]);
    let seen = events.lock().unwrap().clone();
    let changed = events_of(&seen, "health_status_changed_event");
    assert!(changed.len() >= 3 && changed.iter().all(|e| e["appId"] == "/hc/web"), "{changed:#?}");
    assert!(!events_of(&seen, "instance_health_changed_event").is_empty());

    // ---- kill one task's process → it is replaced, back to 3 healthy ------------------------------------
    let victim = app["tasks"][0].clone();
    let victim_id = victim["id"].as_str().context("task id")?.to_string();
    let port0 = victim["ports"][0].as_u64().context("a host port")?;
    let pid = pid_of(&["httpd", &format!("127.0.0.1:{port0}")])
        .with_context(|| format!("no httpd process serving on port {port0}"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
    let healed = healthy("the killed task to be replaced by a healthy one", std::slice::from_ref(&victim_id)).await?;
    assert!(!task_ids(&healed).contains(&victim_id));

    // ---- rolling upgrade: tasksHealthy never below ceil(3 × 1.0) while it rolls, and the version changes -----
    let old_version = healed["version"].as_str().context("version")?.to_string();
    let (status, _, body) =
        marathon.call(reqwest::Method::PUT, "/v2/apps/hc/web", Some(json!({"cmd": format!("{cmd} # v2")}))).await?;
    assert_eq!(status, 200, "{body}");
    let new_version = body["version"].as_str().context("version")?.to_string();
    assert_ne!(new_version, old_version);
    let mut samples = Vec::new();
    let upgraded = wait_for("the rolling upgrade to finish", WAIT * 4, async || {
        let app = marathon.app("/hc/web").await?;
        samples.push(count(&app, "tasksHealthy"));
        let tasks = app["tasks"].as_array()?.clone();
        let all_new = tasks.iter().all(|t| t["version"] == new_version.as_str());
        let done = all_new && tasks.len() == 3 && count(&app, "tasksHealthy") == 3;
        (done && app["deployments"].as_array()?.is_empty()).then_some(app)
    })
    .await?;
    assert!(samples.len() > 3, "sampled the rollout {} times", samples.len());
    let lowest = samples.iter().min().copied().unwrap_or_default();
    assert!(lowest >= 3, "tasksHealthy dropped to {lowest} during the upgrade: {samples:?}");
    assert_eq!(upgraded["version"], new_version.as_str());
    assert!(task_ids(&upgraded).iter().all(|id| !task_ids(&healed).contains(id)), "every task was replaced");

    // ---- a COMMAND check that passes, then fails: the agent kills the task, Marathon replaces it ----------
    // The check runs inside the task's container: it sees the sandbox at /mnt/sandbox.
    let sick = json!({"id": "/hc/sick", "cmd": "sleep 4 && touch broken && exec sleep 3600", "instances": 1,
        "cpus": 0.1, "mem": 16, "backoffSeconds": 1,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test ! -e /mnt/sandbox/broken"},
                          "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 5, "delaySeconds": 0,
                          "maxConsecutiveFailures": 2}]});
    let (status, _, body) = marathon.call(reqwest::Method::POST, "/v2/apps", Some(sick)).await?;
    assert_eq!(status, 201, "{body}");
    let killed = wait_for("the failing instance to be killed for its health", WAIT * 3, async || {
        let seen = events.lock().unwrap().clone();
        events_of(&seen, "unhealthy_instance_kill_event").into_iter().find(|e| e["appId"] == "/hc/sick")
    })
    .await?;
    let sick_task = killed["taskId"].as_str().context("taskId")?.to_string();
    let reason = killed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("COMMAND health check failed 2 times consecutively"), "{killed:#}");
    let seen = events.lock().unwrap().clone();
    let sick_health: Vec<bool> = events_of(&seen, "health_status_changed_event")
        .iter()
        .filter(|e| e["taskId"] == sick_task.as_str())
        .filter_map(|e| e["alive"].as_bool())
        .collect();
    assert_eq!(sick_health, vec![true, false], "healthy in its container first, then failing");
    let failures = events_of(&seen, "failed_health_check_event");
    assert!(failures.iter().filter(|e| e["taskId"] == sick_task.as_str()).count() >= 2, "{failures:#?}");
    let replaced = wait_for("the unhealthy instance to be replaced", WAIT * 2, async || {
        let app = marathon.app("/hc/sick").await?;
        let ids = task_ids(&app);
        (ids.len() == 1 && ids[0] != sick_task).then_some(ids)
    })
    .await?;
    assert_ne!(replaced[0], sick_task);
    let app = marathon.get("/v2/apps/hc/sick?embed=app.lastTaskFailure").await?;
    assert_eq!(app["app"]["lastTaskFailure"]["taskId"], sick_task.as_str(), "{app:#}");
    // The master ended it TASK_KILLED with healthy=false, as Mesos's executors report it.
    let state = cluster.state().await?;
    let ended = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["completed_tasks"].as_array().cloned().unwrap_or_default())
        .find(|t| t["id"] == sick_task.as_str())
        .context("the killed task among the master's completed tasks")?;
    assert_eq!(ended["state"], "TASK_KILLED", "{ended:#}");
    let last = ended["statuses"].as_array().and_then(|s| s.last()).cloned().unwrap_or_default();
    assert_eq!(last["healthy"], false, "{ended:#}");
    Ok(())
}

/// The first file named `name` under `dir` (a sandbox somewhere in an agent's work dir).
fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let kind = entry.file_type().ok()?;
        if kind.is_file() && entry.file_name() == name {
            return Some(path);
        }
        if kind.is_dir()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

/// The cgroup of `controller` in a `/proc/<pid>/cgroup` text.
fn cgroup_of<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == controller).then_some(path)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_checks_run_in_the_tasks_cgroups_https_checks_reach_ipv6_and_1xx_can_be_ignored() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:2048;ports:[32600-32699]").await?;
    let marathon = Marathon::start(&cluster, &cluster.dir.path().join("marathon"), free_port(), "marathon").await?;

    // ---- a COMMAND check records its own cgroups; the task records its own --------------------------------
    let check = "cat /proc/self/cgroup > /mnt/sandbox/check.tmp && mv /mnt/sandbox/check.tmp /mnt/sandbox/check-cgroup";
    let app = json!({"id": "/hc/cgroups", "cmd": "cat /proc/self/cgroup > task-cgroup && exec sleep 3600",
        "instances": 1, "cpus": 0.1, "mem": 32,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": check}, "gracePeriodSeconds": 0,
                          "intervalSeconds": 1, "timeoutSeconds": 5, "delaySeconds": 0}]});
    let (status, _, body) = marathon.call(reqwest::Method::POST, "/v2/apps", Some(app)).await?;
    assert_eq!(status, 201, "{body}");
    // ---- an HTTPS server checked with MESOS_HTTPS over IPv6 ----------------------------------------------
    let app = json!({"id": "/hc/tls", "cmd": https_server_cmd(), "instances": 1, "cpus": 0.1, "mem": 32,
        "healthChecks": [{"protocol": "MESOS_HTTPS", "path": "/", "ipProtocol": "IPv6", "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 5, "delaySeconds": 0}]});
    let (status, _, body) = marathon.call(reqwest::Method::POST, "/v2/apps", Some(app)).await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["healthChecks"][0]["ipProtocol"], "IPv6", "{body}");

    for id in ["/hc/cgroups", "/hc/tls"] {
        let app = wait_for(&format!("{id} to be healthy"), WAIT * 2, async || {
            let app = marathon.app(id).await?;
            (count(&app, "tasksHealthy") == 1).then_some(app)
        })
        .await?;
        assert_eq!(app["tasks"][0]["healthCheckResults"][0]["alive"], true, "{app:#}");
    }

    let agent_dir = cluster.dir.path().join("agent0");
    let (task_file, check_file) = wait_for("both cgroup records in the sandbox", WAIT, async || {
        Some((find_file(&agent_dir, "task-cgroup")?, find_file(&agent_dir, "check-cgroup")?))
    })
    .await?;
    let (task, check) = (std::fs::read_to_string(&task_file)?, std::fs::read_to_string(&check_file)?);
    // Inside the container's cgroup namespace its own cgroup is "/": a check outside it would see "/../..".
    for controller in ["memory", "cpu", "pids"] {
        assert_eq!(cgroup_of(&task, controller), Some("/"), "the task in its {controller} cgroup:\n{task}");
        assert_eq!(cgroup_of(&check, controller), Some("/"), "the check in the task's {controller} cgroup:\n{check}");
    }

    // ---- ignoreHttp1xx: a server answering a lone 102 twice, then 200 -------------------------------------
    // Ignored, the 102s neither fail nor kill (limit 1); counted, they are failures before the success.
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    assert!(on_path("busybox"), "this test serves with busybox nc: apt-get install busybox-static");
    let files = tempfile::Builder::new().prefix("agora-1xx-").tempdir()?;
    let script = files.path().join("answer.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nread -r request\nn=$(cat n 2>/dev/null || echo 0)\necho $((n + 1)) > n\n\
         if [ \"$n\" -lt 2 ]; then printf 'HTTP/1.1 102 Processing\\r\\n\\r\\n'; \
         else printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n'; fi\n",
    )?;
    let app_1xx = |id: &str, ignore: bool, failures: u32| {
        json!({"id": id, "cmd": "exec busybox nc -ll -p $PORT0 -e ./answer.sh", "instances": 1, "cpus": 0.1,
               "mem": 32, "fetch": [{"uri": script.display().to_string(), "executable": true}],
               "healthChecks": [{"protocol": "HTTP", "path": "/health", "ignoreHttp1xx": ignore,
                                 "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 5,
                                 "delaySeconds": 0, "maxConsecutiveFailures": failures}]})
    };
    for (id, ignore, failures) in [("/hc/ignoring", true, 1), ("/hc/counting", false, 3)] {
        let (status, _, body) =
            marathon.call(reqwest::Method::POST, "/v2/apps", Some(app_1xx(id, ignore, failures))).await?;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["healthChecks"][0]["ignoreHttp1xx"], ignore, "{body}");
    }
    let healthy = async |id: &str| {
        wait_for(&format!("{id} to be healthy"), WAIT * 2, async || {
            let app = marathon.app(id).await?;
            (count(&app, "tasksHealthy") == 1).then_some(app["tasks"][0].clone())
        })
        .await
    };
    let ignoring = healthy("/hc/ignoring").await?;
    assert_eq!(ignoring["healthCheckResults"][0]["lastFailureCause"], Value::Null, "{ignoring:#}");
    let counting = healthy("/hc/counting").await?;
    let cause = counting["healthCheckResults"][0]["lastFailureCause"].as_str().unwrap_or_default();
    assert!(cause.contains("answered 102"), "the 102s counted as failures: {counting:#}");
    let ignoring_now = marathon.app("/hc/ignoring").await.context("/hc/ignoring")?;
    assert_eq!(task_ids(&ignoring_now), vec![ignoring["id"].as_str().unwrap_or_default().to_string()], "never killed");

    // The master shows the IPv6 check as Mesos renders it.
    let state = cluster.state().await?;
    let tls = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .find(|t| t["name"].as_str().is_some_and(|n| n.contains("tls")))
        .context("the HTTPS task on the master")?;
    assert_eq!(tls["health_check"]["http"]["scheme"], "https", "{tls:#}");
    assert_eq!(tls["health_check"]["http"]["protocol"], "IPv6", "{tls:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_waits_for_its_readiness_check() -> Result<()> {
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_agent("cpus:2;mem:2048;ports:[32500-32599]").await?;
    let work_dir = cluster.dir.path().join("marathon");
    let marathon = Marathon::start(&cluster, &work_dir, free_port(), "marathon").await?;
    assert!(http_server_cmd().contains("busybox"), "this test needs busybox on PATH (apt-get install busybox-static)");
    // The server answers /ready with 404 for its first 3 seconds, then 200.
    let cmd = "echo ok > index.html; (sleep 3; echo yes > ready) & exec busybox httpd -f -p 127.0.0.1:$PORT0 -h .";
    let app = |interval: u32, timeout: u32| {
        json!({"id": "/rd/web", "cmd": cmd, "instances": 1, "cpus": 0.1, "mem": 32,
               "portDefinitions": [{"port": 0, "name": "http"}],
               "readinessChecks": [{"name": "ready", "protocol": "HTTP", "path": "/ready", "portName": "http",
                                    "intervalSeconds": interval, "timeoutSeconds": timeout,
                                    "preserveLastResponse": true}]})
    };
    let (status, _, body) = marathon.call(reqwest::Method::POST, "/v2/apps", Some(app(1, 0))).await?;
    assert_eq!(status, 422, "timeoutSeconds 0 is refused: {body}");
    let (status, _, body) = marathon.call(reqwest::Method::POST, "/v2/apps", Some(app(2, 1))).await?;
    assert_eq!(status, 201, "{body}");
    // While the task runs but is not ready, the deployment stays, showing the probe's last answer.
    let waiting = wait_for("a running task the deployment waits for", WAIT * 2, async || {
        let deployments = marathon.get("/v2/deployments").await.ok()?;
        let results = deployments[0]["currentActions"][0]["readinessCheckResults"].as_array()?.clone();
        let r = results.first()?.clone();
        (r["ready"] == false && r["lastResponse"]["status"] == 404).then_some(r)
    })
    .await?;
    assert_eq!(waiting["name"], "ready");
    let app = marathon.app("/rd/web").await.context("the app")?;
    assert_eq!(app["tasks"][0]["state"], "TASK_RUNNING", "{app:#}");
    assert_eq!(app["tasks"][0]["ipAddresses"], json!([{"ipAddress": "127.0.0.1", "protocol": "IPv4"}]));
    wait_for("the deployment to finish once the task is ready", WAIT * 2, async || {
        let deployments = marathon.get("/v2/deployments").await.ok()?;
        deployments.as_array()?.is_empty().then_some(())
    })
    .await?;
    Ok(())
}
