//! Marathon's web UI (`/ui/`) in a real headless Chromium driven by playwright-core
//! (`integration-tests/web/marathon-ui.test.mjs`), against the real `agora-master`, two `agora-agent`s (one
//! `--isolation=simulated`) and `agora-marathon` on loopback. Through the page only: an app created with the form
//! carries its fields (a bad form line is refused first); an app created in the JSON editor reaches Running with
//! its instance listed, whose Logs link opens the master's page with its stdout; a 422 is shown beside the editor
//! by path; the app is scaled from its row, killed & scaled, scaled past its agent so the deployment stays
//! (Waiting, the reject reasons on Debug) and rolled back from the Deployments page, edited, and destroyed; a
//! failing app is Delayed with its failure on Debug and relaunched by Reset Delay, found by the Delayed status
//! filter and by its label (and by no other filter), then destroyed from its row; an empty group is created under
//! the app's group; an app of 120 instances is listed 50 to a page and its group scaled by 0.5; the two groups sort
//! by CPU both ways and by name, and are destroyed from their rows. Build the binaries first:
//! `cargo build --workspace --bins`.

use agora_integration_tests::marathon::Marathon;
use agora_integration_tests::{Cluster, browser_prerequisites, free_port, run_browser_script};
use anyhow::Result;
use serde_json::json;

/// Room for 10 instances of 0.1 CPU: 30 can never all run.
const AGENT: &str = "cpus:1;mem:2048;disk:1024;ports:[33200-33299]";
/// A simulated agent (no processes) for an app with three pages of instances.
const CROWD_AGENT: &str = "cpus:4;mem:4096;disk:1024;ports:[33300-33499]";
const APP: &str = "/ui-test/web";
const CROWD: &str = "/ui-crowd/many";
const CRASH: &str = "/ui-test/crash";
/// What the app prints to its stdout, for the page's Logs link to find on the master's page.
const SAYS: &str = "ui-test-says-hello";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_ui_creates_scales_rolls_back_and_destroys_an_app_in_headless_chromium() -> Result<()> {
    browser_prerequisites();
    let mut cluster = Cluster::start(&["--allocation-interval", "100ms"]).await?;
    cluster.add_agent(AGENT).await?;
    cluster.add_agent_with(CROWD_AGENT, &["--isolation=simulated"]).await?;
    let marathon = Marathon::start(&cluster, &cluster.dir.path().join("marathon"), free_port(), "marathon").await?;

    // `/` is Marathon's redirect to the UI, before any browser comes.
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let root = plain.get(format!("{}/", marathon.url)).send().await?;
    assert_eq!((root.status().as_u16(), root.headers()["location"].to_str()?), (302, "/ui/"));

    // The agents' hostnames are agent0 (real) and agent1 (simulated).
    let scenario = json!({
        "app": {"id": APP, "cmd": format!("echo {SAYS} && exec sleep 3600"), "cpus": 0.1, "mem": 32, "instances": 1,
                "constraints": [["hostname", "LIKE", "agent0"]]},
        "says": SAYS,
        "master_ui": format!("http://{}/", cluster.master_addr),
        "stuck_instances": 30,
        "crash": {"id": CRASH, "cmd": "exit 3", "cpus": 0.1, "mem": 32, "instances": 1, "backoffSeconds": 300,
                  "labels": {"tier": "crash-test"},
                  "constraints": [["hostname", "LIKE", "agent0"]]},
        "crowd": {"id": CROWD, "cmd": "sleep 3600", "cpus": 0.01, "mem": 1, "instances": 120,
                  "constraints": [["hostname", "LIKE", "agent1"]]},
    });
    let env = [("MARATHON_URL", marathon.url.clone()), ("MARATHON_SCENARIO", scenario.to_string())];
    let shots = cluster.dir.path().join("screenshots");
    let keep = [
        "marathon-app.png",
        "marathon-apps.png",
        "marathon-create-error.png",
        "marathon-debug.png",
        "marathon-delayed.png",
        "marathon-deployments.png",
        "marathon-paged.png",
    ];
    run_browser_script("marathon-ui.test.mjs", &env, &shots, &[&keep[..], &["marathon-failure.png"]].concat()).await?;

    // What the page did, seen through the API: the app is gone, and nothing is left deploying.
    for id in [APP, CRASH, CROWD] {
        let (status, _, body) = marathon.call(reqwest::Method::GET, &format!("/v2/apps{id}"), None).await?;
        assert_eq!(status, 404, "{id}: {body}");
    }
    assert_eq!(marathon.get("/v2/deployments").await?, json!([]));
    for name in keep {
        assert!(shots.join(name).exists(), "the browser test took no {name}");
    }
    Ok(())
}
