//! The fetcher and container volumes end to end, as root: a real master and agent (libcontainer isolation, the
//! default as root) run tasks whose `CommandInfo.uris` are served over loopback HTTP (and HTTPS, by
//! `openssl s_server`, trusted through `--fetcher-ca-file` or not) and from local paths, and whose
//! `ContainerInfo.volumes` bind host directories read-write and read-only; then the same through `agora-marathon`'s
//! `fetch` and `container.volumes`. Build the binaries first: `cargo build --workspace --bins`. Missing
//! prerequisites (root, cgroups, libseccomp-dev, tar, unzip, openssl, curl) fail the tests with how to install them.

use std::path::{Path, PathBuf};

use agora_framework_sdk::{FrameworkInfo, Reason, Resources, TaskInfo, TaskInfoExt, TaskState, TaskStatus};
use agora_integration_tests::marathon::Marathon;
use agora_integration_tests::{
    Cluster, HttpsFiles, TestFramework, WAIT, free_port, require_container_prerequisites, wait_for,
};
use agora_proto::model::{ContainerInfo, ContainerType, Uri, Volume};
use anyhow::{Context, Result};
use serde_json::{Value, json};

const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";

fn res(s: &str) -> Resources {
    s.parse().expect("test resources")
}

fn uri(value: &str) -> Uri {
    Uri { value: value.into(), executable: false, extract: true, cache: false, output_file: String::new() }
}

fn require_tools() {
    for tool in ["tar", "gzip", "unzip"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "'{tool}' is missing: apt-get install tar gzip unzip bzip2 xz-utils");
    }
}

/// Serves `dir` at `http://127.0.0.1:PORT/files/...` from this process until the test ends.
async fn serve(dir: PathBuf) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/files/{name}",
        axum::routing::get(move |axum::extract::Path(name): axum::extract::Path<String>| {
            let path = dir.join(name);
            async move {
                match std::fs::read(path) {
                    Ok(bytes) => Ok(bytes),
                    Err(_) => Err(axum::http::StatusCode::NOT_FOUND),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/files"))
}

/// The latest run directory of a task on the cluster's first agent.
fn sandbox_of(cluster: &Cluster, framework_id: &str, task_id: &str) -> Option<PathBuf> {
    let slaves = cluster.dir.path().join("agent0/slaves");
    for agent in std::fs::read_dir(slaves).ok()?.flatten() {
        let runs = agent.path().join("frameworks").join(framework_id).join("executors").join(task_id).join("runs");
        if let Some(run) = std::fs::read_dir(runs).ok()?.flatten().next() {
            return Some(run.path());
        }
    }
    None
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The terminal update of `task_id`, already seen or still to come.
async fn terminal(fw: &mut TestFramework, task_id: &str) -> Result<TaskStatus> {
    let seen = fw.seen.iter().find_map(|e| match e {
        agora_integration_tests::Event::Update(s) if s.task_id == task_id && s.state.is_terminal() => Some(s.clone()),
        _ => None,
    });
    match seen {
        Some(s) => Ok(s),
        None => fw.update_of(task_id, |s| s.state.is_terminal()).await,
    }
}

fn tar_czf(dir: &Path, archive: &str, member: &str) {
    let status =
        std::process::Command::new("tar").arg("-C").arg(dir).arg("-czf").arg(dir.join(archive)).arg(member).status();
    assert!(status.expect("tar runs").success(), "tar -czf {archive}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uris_are_fetched_extracted_and_made_executable_and_a_bad_one_fails_the_task() -> Result<()> {
    require_container_prerequisites();
    require_tools();
    let files = tempfile::Builder::new().prefix("agora-fetch-").tempdir()?;
    let d = files.path();
    std::fs::write(d.join("tool.sh"), "#!/bin/sh\necho tool ran\n")?;
    std::fs::create_dir_all(d.join("bundle"))?;
    std::fs::write(d.join("bundle/hello.txt"), "hello from http\n")?;
    tar_czf(d, "bundle.tar.gz", "bundle");
    std::fs::create_dir_all(d.join("localpkg"))?;
    std::fs::write(d.join("localpkg/x.txt"), "hello from a local archive\n")?;
    tar_czf(d, "localpkg.tgz", "localpkg");
    std::fs::write(d.join("plain.txt"), "a plain local file\n")?;
    let base = serve(d.to_path_buf()).await?;

    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("fetch")).await?;
    let offer = fw.next_offers().await?.remove(0);

    let script = "set -e; ./tool.sh; cat bundle/hello.txt; cat localpkg/x.txt; cat conf/plain.txt; \
                  test -x tool.sh && echo executable; test -f bundle.tar.gz && echo archive-kept";
    let mut good = TaskInfo::command("good", "good", &agent, res("cpus:0.5;mem:64"), script);
    let mut tool = uri(&format!("{base}/tool.sh"));
    tool.executable = true;
    let mut local = uri(&format!("file://{}", d.join("plain.txt").display()));
    local.output_file = "conf/plain.txt".into();
    let mut cached = uri(&d.join("localpkg.tgz").display().to_string());
    cached.cache = true;
    good.command.as_mut().expect("a command").uris = vec![tool, uri(&format!("{base}/bundle.tar.gz")), local, cached];

    // As another user, the fetched files are the task's own.
    let script = "id -u; echo more >> plain.txt && cat plain.txt";
    let mut as_nobody = TaskInfo::command("nobody", "nobody", &agent, res("cpus:0.2;mem:32"), script);
    let command = as_nobody.command.as_mut().expect("a command");
    command.user = Some("nobody".into());
    command.uris = vec![uri(&d.join("plain.txt").display().to_string())];

    let missing = format!("{base}/missing.tgz");
    let mut bad = TaskInfo::command("bad", "bad", &agent, res("cpus:0.5;mem:64"), "echo must not run");
    bad.command.as_mut().expect("a command").uris = vec![uri(&missing)];
    fw.driver.launch(&offer, vec![good, bad, as_nobody]);

    let status = terminal(&mut fw, "good").await?;
    let sandbox = sandbox_of(&cluster, &fw.id, "good").context("the good task's sandbox")?;
    let (out, err) = (read(&sandbox.join("stdout")), read(&sandbox.join("stderr")));
    assert_eq!(status.state, TaskState::Finished, "{status:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out,
        "tool ran\nhello from http\nhello from a local archive\na plain local file\nexecutable\narchive-kept\n"
    );
    assert!(err.contains(&format!("Fetching URI '{base}/tool.sh'")), "fetcher output goes to stderr: {err}");

    let status = terminal(&mut fw, "bad").await?;
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    assert_eq!(status.reason, Some(Reason::ContainerLaunchFailed), "{status:?}");
    assert!(status.message.contains(&format!("'{missing}'")) && status.message.contains("HTTP 404"), "{status:?}");
    let sandbox = sandbox_of(&cluster, &fw.id, "bad").context("the bad task's sandbox")?;
    assert!(read(&sandbox.join("stderr")).contains(&format!("failed to fetch '{missing}'")));
    assert!(read(&sandbox.join("stdout")).is_empty(), "the task never ran");

    let status = terminal(&mut fw, "nobody").await?;
    let sandbox = sandbox_of(&cluster, &fw.id, "nobody").context("the nobody task's sandbox")?;
    let (out, err) = (read(&sandbox.join("stdout")), read(&sandbox.join("stderr")));
    assert_eq!(status.state, TaskState::Finished, "{status:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(out, "65534\na plain local file\nmore\n");
    fw.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_uris_are_fetched_from_a_trusted_server_and_an_untrusted_one_fails_the_task() -> Result<()> {
    require_container_prerequisites();
    let trusted_dir = tempfile::Builder::new().prefix("agora-https-").tempdir()?;
    std::fs::write(trusted_dir.path().join("greeting.txt"), "hello over https\n")?;
    let trusted = HttpsFiles::start(trusted_dir.path()).await?;
    let untrusted_dir = tempfile::Builder::new().prefix("agora-https-").tempdir()?;
    std::fs::write(untrusted_dir.path().join("greeting.txt"), "never fetched\n")?;
    let untrusted = HttpsFiles::start(untrusted_dir.path()).await?;

    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let ca = trusted.cert.display().to_string();
    let agent = cluster.add_agent_with(AGENT, &["--fetcher-ca-file", &ca]).await?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("https-fetch")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let mut good = TaskInfo::command("good", "good", &agent, res("cpus:0.5;mem:64"), "cat greeting.txt");
    let mut cached = uri(&trusted.url("greeting.txt"));
    cached.cache = true;
    good.command.as_mut().expect("a command").uris = vec![cached];
    let refused = untrusted.url("greeting.txt");
    let mut bad = TaskInfo::command("bad", "bad", &agent, res("cpus:0.5;mem:64"), "echo must not run");
    bad.command.as_mut().expect("a command").uris = vec![uri(&refused)];
    fw.driver.launch(&offer, vec![good, bad]);

    let status = terminal(&mut fw, "good").await?;
    let sandbox = sandbox_of(&cluster, &fw.id, "good").context("the good task's sandbox")?;
    let (out, err) = (read(&sandbox.join("stdout")), read(&sandbox.join("stderr")));
    assert_eq!(status.state, TaskState::Finished, "{status:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(out, "hello over https\n");

    let status = terminal(&mut fw, "bad").await?;
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    assert_eq!(status.reason, Some(Reason::ContainerLaunchFailed), "{status:?}");
    assert!(status.message.contains(&format!("failed to fetch '{refused}'")), "{status:?}");
    assert!(status.message.contains("SSL certificate problem"), "{status:?}");
    fw.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_volumes_are_bound_read_write_and_read_only() -> Result<()> {
    require_container_prerequisites();
    let host = tempfile::Builder::new().prefix("agora-vol-").tempdir()?;
    let rw = host.path().join("rw");
    let ro = host.path().join("ro");
    std::fs::create_dir_all(&rw)?;
    std::fs::create_dir_all(&ro)?;
    std::fs::write(ro.join("given.txt"), "read me\n")?;

    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent = cluster.add_agent(AGENT).await?;
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("volumes")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let container = |volumes: Vec<Volume>| {
        Some(ContainerInfo {
            kind: ContainerType::Mesos,
            rootfs: None,
            volumes,
            hostname: None,
            image: None,
            network_infos: vec![],
        })
    };
    let vol = |container_path: &str, host_path: &Path, read_only| Volume {
        container_path: container_path.into(),
        host_path: host_path.display().to_string(),
        read_only,
    };

    let script = "set -e; echo written by the task > /data/out.txt; cat /given/given.txt; echo cached > scratch/x";
    let mut writer = TaskInfo::command("writer", "writer", &agent, res("cpus:0.3;mem:64"), script);
    writer.container = container(vec![
        vol("/data", &rw, false),
        vol("/given", &ro, true),
        Volume { container_path: "scratch".into(), host_path: "scratch".into(), read_only: false },
    ]);
    let script = "echo nope > /given/new.txt && echo wrote || { echo refused >&2; exit 3; }";
    let mut reader = TaskInfo::command("reader", "reader", &agent, res("cpus:0.3;mem:64"), script);
    reader.container = container(vec![vol("/given", &ro, true)]);
    let gone = host.path().join("not-there");
    let mut missing = TaskInfo::command("missing", "missing", &agent, res("cpus:0.3;mem:64"), "true");
    missing.container = container(vec![vol("/data", &gone, false)]);
    fw.driver.launch(&offer, vec![writer, reader, missing]);

    let status = terminal(&mut fw, "writer").await?;
    let sandbox = sandbox_of(&cluster, &fw.id, "writer").context("the writer's sandbox")?;
    let (out, err) = (read(&sandbox.join("stdout")), read(&sandbox.join("stderr")));
    assert_eq!(status.state, TaskState::Finished, "{status:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(read(&rw.join("out.txt")), "written by the task\n", "the host sees what the task wrote");
    assert_eq!(out, "read me\n");
    assert_eq!(read(&sandbox.join("scratch/x")), "cached\n", "a relative host_path is a sandbox directory");

    let status = terminal(&mut fw, "reader").await?;
    let sandbox = sandbox_of(&cluster, &fw.id, "reader").context("the reader's sandbox")?;
    let err = read(&sandbox.join("stderr"));
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    assert_eq!(status.message, "Command exited with status 3", "{status:?}");
    assert!(err.contains("Read-only file system") && err.contains("refused"), "{err}");
    assert!(!ro.join("new.txt").exists());
    // The volumes' mount points were made in each container's own root, never in the shared host skeleton.
    let skeleton = cluster.dir.path().join("agent0/hostskel");
    assert!(skeleton.join("usr").is_dir(), "the skeleton is at {}", skeleton.display());
    assert!(!skeleton.join("data").exists() && !skeleton.join("given").exists(), "mount points left in the skeleton");

    let status = terminal(&mut fw, "missing").await?;
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    assert_eq!(status.reason, Some(Reason::ContainerLaunchFailed), "{status:?}");
    let named = format!("volume '/data' (host_path '{}')", gone.display());
    assert!(status.message.contains(&named) && status.message.contains("does not exist"), "{status:?}");
    fw.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marathon_app_fetches_its_files_and_writes_a_host_volume() -> Result<()> {
    require_container_prerequisites();
    require_tools();
    let files = tempfile::Builder::new().prefix("agora-mfetch-").tempdir()?;
    let d = files.path();
    std::fs::write(d.join("greeting.txt"), "hello from fetch\n")?;
    std::fs::create_dir_all(d.join("bundle"))?;
    std::fs::write(d.join("bundle/part.txt"), "and from an archive\n")?;
    tar_czf(d, "bundle.tgz", "bundle");
    let base = serve(d.to_path_buf()).await?;
    let out = d.join("volume");
    std::fs::create_dir_all(&out)?;

    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    cluster.add_agent(AGENT).await?;
    let marathon = Marathon::start(&cluster, &cluster.dir.path().join("marathon"), free_port(), "marathon").await?;
    let (url, http) = (marathon.url.clone(), marathon.http.clone());

    // What cannot be honoured is refused with the field's path.
    let refused = json!({"id": "/nope", "cmd": "true", "fetch": [{"uri": "ftp://example.org/a.tgz"}],
        "container": {"type": "DOCKER", "docker": {"image": "nginx:1.19"}}});
    let resp = http.post(format!("{url}/v2/apps")).json(&refused).send().await?;
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await?;
    let paths: Vec<&str> =
        body["details"].as_array().into_iter().flatten().filter_map(|d| d["path"].as_str()).collect();
    for p in ["/fetch(0)/uri", "/container/type"] {
        assert!(paths.contains(&p), "{p} in {body}");
    }

    let app = json!({
        "id": "/fetcher",
        "cmd": "cat greeting.txt bundle/part.txt > /out/$MESOS_TASK_ID.txt && exec sleep 600",
        "cpus": 0.2, "mem": 64, "instances": 1,
        "fetch": [{"uri": format!("{base}/greeting.txt")}, {"uri": format!("{base}/bundle.tgz"), "cache": true}],
        "container": {"type": "MESOS", "volumes": [
            {"containerPath": "/out", "hostPath": out.display().to_string(), "mode": "RW"}
        ]}
    });
    let resp = http.post(format!("{url}/v2/apps")).json(&app).send().await?;
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await?);
    let shown = marathon.app("/fetcher").await.context("GET /v2/apps/fetcher")?;
    assert_eq!(shown["container"]["volumes"][0]["mode"], "RW", "{shown}");
    assert_eq!(shown["fetch"][1]["cache"], true, "{shown}");

    let written = wait_for("the app's task to write into the host volume", WAIT * 2, async || {
        let entry = std::fs::read_dir(&out).ok()?.flatten().next()?;
        let text = std::fs::read_to_string(entry.path()).ok()?;
        text.ends_with("archive\n").then_some((entry.file_name().to_string_lossy().into_owned(), text))
    })
    .await?;
    assert_eq!(written.1, "hello from fetch\nand from an archive\n");
    let tasks: Value = http.get(format!("{url}/v2/apps/fetcher/tasks")).send().await?.json().await?;
    let task_id = tasks["tasks"][0]["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(written.0, format!("{task_id}.txt"), "{tasks}");
    // The task may write before its TASK_RUNNING reaches Marathon.
    wait_for("the fetcher's task to be TASK_RUNNING in Marathon", WAIT, async || {
        let tasks: Value = http.get(format!("{url}/v2/apps/fetcher/tasks")).send().await.ok()?.json().await.ok()?;
        (tasks["tasks"][0]["state"] == "TASK_RUNNING").then_some(())
    })
    .await?;
    let resp = http.delete(format!("{url}/v2/apps/fetcher")).send().await?;
    assert_eq!(resp.status().as_u16(), 200);
    Ok(())
}
