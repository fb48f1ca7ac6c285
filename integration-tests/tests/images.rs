//! Container images end to end, as root: an agent with `--docker-registry` (a local image registry holding a busybox
//! root filesystem as a tarball and as a prepared directory) runs `agora-marathon` apps whose
//! `container.docker.image` names them, inside that root filesystem; an unknown image fails its task naming the
//! image and the registry. Build the binaries first: `cargo build --workspace --bins`. Missing prerequisites (root,
//! cgroups, libseccomp-dev, busybox-static, tar) fail the test with how to install them.

use std::path::Path;

use agora_integration_tests::marathon::{Marathon, follow_events};
use agora_integration_tests::{
    Cluster, WAIT, busybox_rootfs, free_port, require_container_prerequisites, spawn_agent, wait_for,
};
use anyhow::Result;
use serde_json::{Value, json};

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
    let store = agent_dir.join("store/docker/busybox/latest");
    assert_eq!(std::fs::read_to_string(store.join("etc/agora-image-marker"))?, "from the tarball\n");
    assert!(!agent_dir.join("store/docker/busybox/prepared").exists(), "a prepared directory is used in place");
    // The task may write before its TASK_RUNNING reaches Marathon.
    wait_for("/packed's task to be TASK_RUNNING in Marathon", WAIT, async || {
        let tasks: Value = http.get(format!("{url}/v2/apps/packed/tasks")).send().await.ok()?.json().await.ok()?;
        (tasks["tasks"][0]["state"] == "TASK_RUNNING").then_some(())
    })
    .await?;

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
