//! Container images end to end, as root: an agent with `--docker-registry` (a local image registry holding a busybox
//! root filesystem as a tarball and as a prepared directory) runs `agora-marathon` apps whose `container.docker.image`
//! names them, inside that root filesystem; an unknown image fails its task naming the image and the registry; apps
//! without `cmd` run an image archive's Entrypoint/Cmd, and their `args` follow its Entrypoint; a COMMAND health check
//! of an app in an image sees the image's Env and PATH. A `docker save` archive built here (two layers, the second with
//! whiteouts, named as Mesos names it) runs with its config's Entrypoint, Cmd, Env, WorkingDir and User, and its stored
//! root filesystem is the same before and after tasks with volumes ran in it; a corrupt archive and one missing a layer
//! fail their tasks naming the image and the problem. Build the binaries first: `cargo build --workspace --bins`.
//! Missing prerequisites (root, cgroups, libseccomp-dev, busybox-static, tar) fail the test with how to install them.

use std::path::Path;

use agora_framework_sdk::{FrameworkInfo, Reason, Resources, TaskInfo, TaskInfoExt, TaskState, TaskStatus};
use agora_integration_tests::marathon::{Marathon, follow_events};
use agora_integration_tests::{
    Cluster, Event, TestFramework, WAIT, busybox_rootfs, free_port, mounts_containing, require_container_prerequisites,
    spawn_agent, wait_for,
};
use agora_proto::model::{ContainerInfo, ContainerType, Volume};
use anyhow::Result;
use serde_json::{Value, json};
use sha2::Digest;

const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";

/// A busybox root filesystem with `/etc/agora-image-marker` holding `marker`.
fn rootfs_with_marker(dir: &Path, marker: &str) -> std::path::PathBuf {
    let root = busybox_rootfs(dir);
    std::fs::write(root.join("etc/agora-image-marker"), marker).expect("write the marker");
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_apps_run_in_images_from_the_agents_local_registry_and_an_unknown_image_fails() -> Result<()> {
    require_container_prerequisites();
    let scratch = tempfile::Builder::new().prefix("agora-images-").tempdir()?;
    let registry = scratch.path().join("registry");
    std::fs::create_dir_all(registry.join("busybox"))?;
    // busybox:latest is a tarball (unpacked into the agent's store), busybox:prepared a directory used in place.
    let packed = rootfs_with_marker(&scratch.path().join("packed"), "from the tarball\n");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&packed)
        .arg("-cf")
        .arg(registry.join("busybox/latest.tar"))
        .arg(".")
        .status();
    assert!(tar.expect("tar is missing: apt-get install tar").success(), "tar failed");
    let prepared = rootfs_with_marker(&scratch.path().join("prepared"), "from the directory\n");
    std::fs::rename(&prepared, registry.join("busybox/prepared"))?;
    let out = scratch.path().join("out");
    std::fs::create_dir_all(&out)?;

    let cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    let agent_dir = cluster.dir.path().join("agent-images");
    let registry_flag = registry.display().to_string();
    let _agent =
        spawn_agent(&cluster, "agent-images", free_port(), &agent_dir, AGENT, &["--docker_registry", &registry_flag])?;
    wait_for("the agent to register", WAIT, async || cluster.agent_ids().await.ok().filter(|ids| !ids.is_empty()))
        .await?;
    let marathon = Marathon::start(&cluster, &cluster.dir.path().join("marathon"), free_port(), "marathon").await?;
    let (url, http) = (marathon.url.clone(), marathon.http.clone());
    let events = follow_events(format!("{url}/v2/events"));

    // Pulling is refused by name; DOCKER stays refused.
    let refused = json!({"id": "/pull", "cmd": "true", "container": {"type": "MESOS",
        "docker": {"image": "busybox", "forcePullImage": true, "pullConfig": {"secret": "s"}}}});
    let resp = http.post(format!("{url}/v2/apps")).json(&refused).send().await?;
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await?;
    let paths: Vec<&str> =
        body["details"].as_array().into_iter().flatten().filter_map(|d| d["path"].as_str()).collect();
    assert_eq!(paths, vec!["/container/docker/forcePullImage", "/container/docker/pullConfig"], "{body}");
    let docker =
        json!({"id": "/docker", "cmd": "true", "container": {"type": "DOCKER", "docker": {"image": "busybox"}}});
    let resp = http.post(format!("{url}/v2/apps")).json(&docker).send().await?;
    assert_eq!(resp.status().as_u16(), 422);

    // Each app writes its image's marker and its root's listing into a host volume.
    let cmd = "cat /etc/agora-image-marker > /out/$MARATHON_APP_ID.txt && ls / >> /out/$MARATHON_APP_ID.txt && \
               exec sleep 600";
    for (id, image) in [("/packed", "busybox"), ("/prepared", "busybox:prepared")] {
        let app = json!({
            "id": id, "cmd": cmd, "cpus": 0.1, "mem": 32, "instances": 1,
            "container": {"type": "MESOS", "docker": {"image": image, "forcePullImage": false},
                "volumes": [{"containerPath": "/out", "hostPath": out.display().to_string(), "mode": "RW"}]}
        });
        let resp = http.post(format!("{url}/v2/apps")).json(&app).send().await?;
        assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await?);
        let shown = marathon.app(id).await.expect("the app is shown");
        assert_eq!(shown["container"]["docker"]["image"], image, "{shown}");
    }
    for (name, marker) in [("packed", "from the tarball"), ("prepared", "from the directory")] {
        let text = wait_for(&format!("/{name} to write its marker"), WAIT * 2, async || {
            let text = std::fs::read_to_string(out.join(format!("{name}.txt"))).ok()?;
            text.lines().any(|l| l == "tmp").then_some(text)
        })
        .await?;
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.remove(0), marker, "{text}");
        lines.sort();
        // Only the image's tree (and the mount points made for the task), nothing of the host's root.
        assert_eq!(lines, vec!["bin", "dev", "etc", "mnt", "out", "proc", "sys", "tmp"], "{name}: {text}");
    }
    let store = agent_dir.join("store/docker/busybox/latest/rootfs");
    assert_eq!(std::fs::read_to_string(store.join("etc/agora-image-marker"))?, "from the tarball\n");
    assert!(!agent_dir.join("store/docker/busybox/prepared").exists(), "a prepared directory is used in place");
    // The task may write before its TASK_RUNNING reaches Marathon.
    wait_for("/packed's task to be TASK_RUNNING in Marathon", WAIT, async || {
        let tasks: Value = http.get(format!("{url}/v2/apps/packed/tasks")).send().await.ok()?.json().await.ok()?;
        (tasks["tasks"][0]["state"] == "TASK_RUNNING").then_some(())
    })
    .await?;

    // An app in an image archive with neither cmd nor args runs the image's Entrypoint and Cmd; `args` replace Cmd.
    let base = layer(Some(&busybox_rootfs(&scratch.path().join("entry"))), &[]);
    let config = json!({"config": {"Env": ["WHO=the-image"], "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo \"cmd of $WHO\" > /out/entry.txt; exec sleep 600"]}});
    std::fs::write(registry.join("entry:1.tar"), docker_save("entry:1", &[base], config, &[]))?;
    for (id, args) in
        [("/entry", None), ("/args", Some(json!(["echo \"args to $WHO\" > /out/args.txt; exec sleep 600"])))]
    {
        let mut app = json!({"id": id, "cpus": 0.1, "mem": 32, "instances": 1,
            "container": {"type": "MESOS", "docker": {"image": "entry:1"},
                "volumes": [{"containerPath": "/out", "hostPath": out.display().to_string(), "mode": "RW"}]}});
        if let Some(args) = args {
            app["args"] = args;
        }
        let resp = http.post(format!("{url}/v2/apps")).json(&app).send().await?;
        assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await?);
    }
    for (file, text) in [("entry.txt", "cmd of the-image\n"), ("args.txt", "args to the-image\n")] {
        wait_for(&format!("{file} from the image's Entrypoint"), WAIT * 2, async || {
            (std::fs::read_to_string(out.join(file)).ok()? == text).then_some(())
        })
        .await?;
    }

    // A COMMAND health check of an app in an image sees the image's Env, its PATH included, as the task does. The
    // image's PATH holds no host directory, so the check's host side must not look its programs up on it.
    let base = layer(Some(&busybox_rootfs(&scratch.path().join("checked"))), &[]);
    let config = json!({"config": {"Env": ["PATH=/opt/tool/bin", "WHO=the-image"],
        "Entrypoint": ["/bin/sleep", "600"]}});
    std::fs::write(registry.join("checked:1.tar"), docker_save("checked:1", &[base], config, &[]))?;
    let check = "[ \"$WHO\" = the-image ] && [ \"$PATH\" = /opt/tool/bin ]";
    let app = json!({"id": "/checked", "cpus": 0.1, "mem": 32, "instances": 1,
        "container": {"type": "MESOS", "docker": {"image": "checked:1"}},
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": check}, "gracePeriodSeconds": 0,
                          "intervalSeconds": 1, "timeoutSeconds": 5, "delaySeconds": 0}]});
    let resp = http.post(format!("{url}/v2/apps")).json(&app).send().await?;
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await?);
    let checked = wait_for("/checked to be healthy by its COMMAND check", WAIT * 2, async || {
        let app = marathon.app("/checked").await?;
        (app["tasksHealthy"] == 1).then_some(app)
    })
    .await?;
    assert_eq!(checked["tasks"][0]["healthCheckResults"][0]["alive"], true, "{checked:#}");

    // An image the registry does not hold fails the task with Mesos's reason, naming the image and the registry.
    let app = json!({"id": "/unknown", "cmd": "true", "cpus": 0.1, "mem": 32, "instances": 1,
        "container": {"type": "MESOS", "docker": {"image": "nosuch:1.0"}}});
    let resp = http.post(format!("{url}/v2/apps")).json(&app).send().await?;
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await?);
    let failed = wait_for("the unknown image's TASK_FAILED on /v2/events", WAIT * 2, async || {
        let seen = events.lock().unwrap();
        seen.iter()
            .find(|e| {
                e["eventType"] == "status_update_event" && e["appId"] == "/unknown" && e["taskStatus"] == "TASK_FAILED"
            })
            .cloned()
    })
    .await?;
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("image 'nosuch:1.0'"), "{failed}");
    assert!(message.contains(&format!("not in the registry {registry_flag}")), "{failed}");
    assert!(message.contains(&registry.join("nosuch/1.0.tar").display().to_string()), "{failed}");
    let resp = http.delete(format!("{url}/v2/apps/unknown")).send().await?;
    assert_eq!(resp.status().as_u16(), 200);
    Ok(())
}

fn sha256(bytes: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn header(size: usize, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// A layer tarball: the directory `root` (symlinks kept as symlinks), then `files` (`path/` is a directory).
fn layer(root: Option<&Path>, files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    if let Some(root) = root {
        b.append_dir_all(".", root).expect("tar the root filesystem");
    }
    for (path, text) in files {
        if path.ends_with('/') {
            b.append_data(&mut header(0, 0o755, tar::EntryType::Directory), path, std::io::empty()).unwrap();
        } else {
            b.append_data(&mut header(text.len(), 0o644, tar::EntryType::Regular), path, text.as_bytes()).unwrap();
        }
    }
    b.into_inner().expect("finish the layer")
}

/// `docker save` output: `manifest.json`, the config named by its digest, `<n>/layer.tar` per layer. `missing`
/// layers are listed in the manifest but left out of the archive.
fn docker_save(tag: &str, layers: &[Vec<u8>], config: Value, missing: &[usize]) -> Vec<u8> {
    let mut config = config;
    config["rootfs"] = json!({"type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>()});
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    let names: Vec<String> = (0..layers.len()).map(|i| format!("layer{i}/layer.tar")).collect();
    let manifest = serde_json::to_vec(&json!([{"Config": config_name, "RepoTags": [tag], "Layers": names}])).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        b.append_data(&mut header(bytes.len(), 0o644, tar::EntryType::Regular), path, bytes).unwrap();
    };
    add("manifest.json", &manifest);
    add(&config_name, &config);
    for (i, (name, bytes)) in names.iter().zip(layers).enumerate() {
        if !missing.contains(&i) {
            add(name, bytes);
        }
    }
    b.into_inner().unwrap()
}

/// Every path under `root` with its kind, sorted: what a task may not change.
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read the image").flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.push(format!("{} {:?} {:o}", p.strip_prefix(root).unwrap().display(), m.file_type(), m.mode_bits()));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = vec![];
    walk(root, root, &mut out);
    out.sort();
    out
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for std::fs::Metadata {
    fn mode_bits(&self) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(&self.permissions())
    }
}

/// The terminal update of `task_id`, already seen or still to come.
async fn terminal(fw: &mut TestFramework, task_id: &str) -> Result<TaskStatus> {
    let seen = fw.seen.iter().find_map(|e| match e {
        Event::Update(s) if s.task_id == task_id && s.state.is_terminal() => Some(s.clone()),
        _ => None,
    });
    match seen {
        Some(s) => Ok(s),
        None => fw.update_of(task_id, |s| s.state.is_terminal()).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_archive_runs_with_its_layers_whiteouts_and_config_and_its_image_stays_unchanged() -> Result<()> {
    require_container_prerequisites();
    let scratch = tempfile::Builder::new().prefix("agora-archive-").tempdir()?;
    let registry = scratch.path().join("registry");
    std::fs::create_dir_all(&registry)?;
    // Layer 1: busybox without /mnt (so the sandbox's mount point is not in the image), /etc/old and /data/{a,b}.
    let base_root = busybox_rootfs(&scratch.path().join("base"));
    std::fs::remove_dir_all(base_root.join("mnt"))?;
    let base = layer(Some(&base_root), &[("etc/old", "old\n"), ("data/", ""), ("data/a", "a"), ("data/b", "b")]);
    // Layer 2: deletes /etc/old, makes /data opaque with only /data/c, adds /etc/new.
    let top = layer(
        None,
        &[
            ("etc/", ""),
            ("etc/.wh.old", ""),
            ("etc/new", "new\n"),
            ("data/", ""),
            ("data/.wh..wh..opq", ""),
            ("data/c", "c"),
        ],
    );
    let script = "echo \"$GREETING $(pwd) $(id -u) $PATH\"; ls /data; ls /etc; cat /etc/old 2>&1; exit 0";
    let config = json!({"architecture": "amd64", "os": "linux", "config": {
        "Env": ["PATH=/bin", "GREETING=from-the-image"], "Entrypoint": ["/bin/sh", "-c"], "Cmd": [script],
        "WorkingDir": "/srv/app", "User": "nobody"}});
    // Mesos's naming: DIR/NAME:TAG.tar.
    std::fs::write(
        registry.join("tool:1.0.tar"),
        docker_save("tool:1.0", &[base.clone(), top.clone()], config.clone(), &[]),
    )?;
    // A layer missing from the archive, and an archive cut in half.
    std::fs::create_dir_all(registry.join("broken"))?;
    std::fs::write(
        registry.join("broken/gap.tar"),
        docker_save("broken:gap", &[base.clone(), top.clone()], config.clone(), &[1]),
    )?;
    let whole = docker_save("broken:cut", &[base, top], config, &[]);
    std::fs::write(registry.join("broken/cut.tar"), &whole[..whole.len() / 2])?;
    let out = scratch.path().join("out");
    std::fs::create_dir_all(&out)?;
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;

    // Offers this test reads past (while it waits for a task's end) are never answered; the offer timeout hands their
    // resources back, so a later `next_offers` does not depend on which came first, an offer or a task's end.
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms", "--offer-timeout", "5secs"]).await?;
    let registry_flag = registry.display().to_string();
    let agent = cluster.add_agent_with(AGENT, &["--docker_registry", &registry_flag]).await?;
    let agent_dir = cluster.dir.path().join("agent0");
    let mut fw = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("images")).await?;
    let offer = fw.next_offers().await?.remove(0);
    let res = |s: &str| s.parse::<Resources>().expect("resources");
    let in_image = |id: &str, image: &str, arguments: &[&str]| {
        let mut t = TaskInfo::command(id, id, &agent, res("cpus:0.2;mem:64"), "unused");
        let command = t.command.as_mut().expect("a command");
        command.shell = false;
        command.value = String::new();
        command.arguments = arguments.iter().map(|a| a.to_string()).collect();
        t.container = Some(ContainerInfo {
            kind: ContainerType::Mesos,
            rootfs: None,
            volumes: vec![Volume {
                container_path: "/out".into(),
                host_path: out.display().to_string(),
                read_only: false,
            }],
            hostname: None,
            image: Some(image.into()),
            network_infos: vec![],
        });
        t
    };
    // "entrypoint": the image's Entrypoint and Cmd; "args": the task's arguments replace Cmd.
    let entrypoint = in_image("entrypoint", "tool:1.0", &[]);
    let args = in_image("args", "tool:1.0", &["echo \"args as $(id -un) in $(pwd)\" > /out/args.txt"]);
    fw.driver.launch(&offer, vec![entrypoint, args]);

    let status = terminal(&mut fw, "entrypoint").await?;
    assert_eq!(status.state, TaskState::Finished, "{status:?}");
    let status = terminal(&mut fw, "args").await?;
    assert_eq!(status.state, TaskState::Finished, "{status:?}");
    assert_eq!(std::fs::read_to_string(out.join("args.txt"))?, "args as nobody in /srv/app\n");
    let slaves = agent_dir.join("slaves");
    let stdout = wait_for("the entrypoint task's stdout", WAIT, async || {
        let agent_dir = std::fs::read_dir(&slaves).ok()?.flatten().next()?.path();
        let runs = agent_dir.join("frameworks").join(&fw.id).join("executors/entrypoint/runs");
        let run = std::fs::read_dir(runs).ok()?.flatten().next()?.path();
        std::fs::read_to_string(run.join("stdout")).ok().filter(|t| !t.is_empty())
    })
    .await?;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "from-the-image /srv/app 65534 /bin", "Env, WorkingDir and User apply: {stdout}");
    assert_eq!(lines[1], "c", "/data is opaque in layer 2: {stdout}");
    assert!(lines.contains(&"new") && !lines.contains(&"old"), "layer 2 whites out /etc/old: {stdout}");
    assert!(lines.last().is_some_and(|l| l.contains("No such file")), "{stdout}");

    // The stored image is as the archive made it: nothing of the tasks' mount points or working directory.
    let stored = agent_dir.join("store/docker/tool/1.0/rootfs");
    let image_listing = listing(&stored);
    for created in ["mnt", "out", "srv"] {
        assert!(!stored.join(created).exists(), "{created} was created in the shared image: {image_listing:?}");
    }
    assert!(!agent_dir.join("hostskel/out").exists(), "nothing is created in the host skeleton either");
    // A second task with the volume sees the same; after it, the image is unchanged and nothing stays mounted.
    let offer = fw.next_offers().await?.remove(0);
    fw.driver.launch(&offer, vec![in_image("again", "tool:1.0", &["ls / > /out/root.txt"])]);
    let status = terminal(&mut fw, "again").await?;
    assert_eq!(status.state, TaskState::Finished, "{status:?}");
    let root = std::fs::read_to_string(out.join("root.txt"))?;
    let root: Vec<&str> = root.lines().collect();
    assert_eq!(root, vec!["bin", "data", "dev", "etc", "mnt", "out", "proc", "srv", "sys", "tmp"]);
    assert_eq!(listing(&stored), image_listing, "the image is unchanged");
    let containers = agent_dir.join("containers");
    wait_for("the containers' roots to be unmounted and removed", WAIT, async || {
        let left = std::fs::read_dir(&containers).map(|d| d.count()).unwrap_or(0);
        (mounts_containing(&containers.display().to_string()).is_empty() && left == 0).then_some(())
    })
    .await?;

    // A missing layer and a corrupt archive fail their tasks before launch, naming the image and the problem.
    for (id, image) in [("gap", "broken:gap"), ("cut", "broken:cut")] {
        let offer = fw.next_offers().await?.remove(0);
        fw.driver.launch(&offer, vec![in_image(id, image, &[])]);
    }
    let status = terminal(&mut fw, "gap").await?;
    assert_eq!((status.state, status.reason), (TaskState::Failed, Some(Reason::ContainerLaunchFailed)), "{status:?}");
    assert!(status.message.starts_with("cannot unpack image 'broken:gap' from "), "{status:?}");
    assert!(status.message.contains("layer 'layer1/layer.tar' listed in manifest.json is missing"), "{status:?}");
    let status = terminal(&mut fw, "cut").await?;
    assert_eq!((status.state, status.reason), (TaskState::Failed, Some(Reason::ContainerLaunchFailed)), "{status:?}");
    assert!(status.message.starts_with("cannot unpack image 'broken:cut' from "), "{status:?}");
    assert!(status.message.contains(&registry.join("broken/cut.tar").display().to_string()), "{status:?}");
    assert!(
        !agent_dir.join("store/docker/broken").join("gap").exists()
            && !agent_dir.join("store/docker/broken/cut").exists()
    );
    fw.teardown().await;
    Ok(())
}
