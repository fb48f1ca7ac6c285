// Drives Marathon's web UI (/ui/ of agora-marathon) in a real headless Chromium (Debian's, through playwright-core;
// no browser download). Run by integration-tests/tests/marathon_ui.rs, which starts a master, one agent and
// Marathon. Everything here goes through the page: the JSON editor, the buttons, the dialogs. Every wait is
// bounded; on success it prints "PASS" and the screenshot paths, on failure it exits 1.
//
// MARATHON_URL       Marathon's base URL, e.g. http://127.0.0.1:8080
// MARATHON_SCENARIO  {"app": {app definition with 1 instance, printing `says` to stdout}, "says": "...",
//                     "master_ui": the master's web UI (Marathon's mesos_leader_ui_url), "stuck_instances": 30,
//                     "crash": {app definition that fails at once, with a long backoffSeconds},
//                     "crowd": {app definition with more than one page of instances}}: stuck_instances is more
//                    than the app's agent can hold, so that deployment stays in progress
// AGORA_SHOTS        directory for the screenshots
// CHROMIUM           the browser (see browser.mjs)
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch } from "./browser.mjs";

const base = (process.env.MARATHON_URL || "").replace(/\/+$/, "");
const scenario = JSON.parse(process.env.MARATHON_SCENARIO || "{}");
const shots = process.env.AGORA_SHOTS || tmpdir();
const WAIT = 30000;
const APP = scenario.app && scenario.app.id;
const CROWD = scenario.crowd || {};
const CRASH = scenario.crash || {};
const PAGE = 50;
const GROUP = APP ? APP.slice(0, APP.lastIndexOf("/")) : "";

function fail(message) {
  console.error("FAIL: " + message);
  process.exit(1);
}

if (!base) fail("MARATHON_URL is not set");
if (!APP || !scenario.says || !scenario.master_ui || !scenario.stuck_instances || !CRASH.id || !(CROWD.instances > 2 * PAGE)) {
  fail("MARATHON_SCENARIO lacks app, says, master_ui, stuck_instances, crash or a crowd of over two pages");
}

const { page, close } = await launch(WAIT);
const problems = [];
page.on("pageerror", (e) => problems.push(String(e)));
// The UI needs nothing but Marathon's own origin, and of it only the page and the /v2 API.
page.on("request", (r) => {
  const u = r.url();
  if (!u.startsWith(base + "/")) problems.push("request outside Marathon: " + u);
  else if (!/^\/(ui\/?|v2\/.*)?$/.test(new URL(u).pathname)) problems.push("request outside /ui/ and /v2: " + u);
});

async function step(what, fn) {
  try {
    await fn();
    console.log("ok: " + what);
  } catch (e) {
    await page.screenshot({ path: join(shots, "marathon-failure.png"), fullPage: true }).catch(() => {});
    console.error(await page.content().catch(() => ""));
    fail(`${what}: ${e.message}`);
  }
}
const appRow = () => page.locator(`#apps tbody tr[data-id="${APP}"]`);
async function confirmDialog(input) {
  await page.locator("#dialog:not([hidden])").waitFor();
  if (input != null) await page.fill("#dialog-input", String(input));
  await page.click("#dialog-ok");
  await page.locator("#dialog").waitFor({ state: "hidden" });
}
async function openEditorWith(text) {
  await page.click("#create-app");
  await page.locator("#editor:not([hidden])").waitFor();
  if (await page.locator("#editor-json").isHidden()) await page.click("#editor-mode");
  await page.fill("#editor-json", text);
  await page.click("#editor-submit");
}

try {
  await step("/ redirects to the UI at /ui/, which polls the API", async () => {
    await page.goto(base + "/");
    if (new URL(page.url()).pathname !== "/ui/") throw new Error("landed on " + page.url());
    await page.locator("#status", { hasText: "updated" }).waitFor();
    await page.locator("#apps tbody tr.empty").waitFor();
  });

  await step("the Create form makes an app with its resources, environment, labels, constraint and health check", async () => {
    await page.click("#create-app");
    await page.locator("#app-form:not([hidden])").waitFor();
    const id = GROUP + "/formed";
    const fields = { "#f-id": id, "#f-cmd": "sleep 3600", "#f-cpus": "0.1", "#f-mem": "32", "#f-instances": "1",
      "#f-ports": "2", "#f-labels": "made-by=form", "#f-constraints": "hostname:LIKE:agent0\nrack:UNLIKE:r:9", "#f-health-path": "/health" };
    for (const [sel, value] of Object.entries(fields)) await page.fill(sel, value);
    await page.check("#f-health");
    // A line that is not KEY=VALUE is refused before anything is sent, naming it.
    await page.fill("#f-env", "GREETING=hello\nbroken");
    await page.click("#editor-submit");
    await page.locator("#editor-error", { hasText: "Environment, line 2" }).waitFor();
    await page.fill("#f-env", "GREETING=hello\nMODE=form");
    // JSON Mode shows what the form sends; back in the form, nothing is lost.
    await page.click("#editor-mode");
    const shown = JSON.parse(await page.inputValue("#editor-json"));
    if (shown.env.MODE !== "form" || shown.portDefinitions.length !== 2) throw new Error("JSON Mode shows " + JSON.stringify(shown));
    await page.click("#editor-mode");
    await page.click("#editor-submit");
    await page.waitForFunction((app) => location.hash === "#/app" + app, id, { timeout: WAIT });
    // Deploying until healthy, which `sleep` never is: what counts here is what was created.
    await page.locator("#app-id", { hasText: id }).waitFor();
    const app = await page.evaluate(async (id) => (await (await fetch(`/v2/apps${id}`)).json()).app, id);
    const got = JSON.stringify([app.cmd, app.cpus, app.mem, app.instances, app.env, app.labels, app.constraints,
      app.portDefinitions.length, app.healthChecks.map((c) => [c.protocol, c.path, c.portIndex])]);
    const want = JSON.stringify(["sleep 3600", 0.1, 32, 1, { GREETING: "hello", MODE: "form" }, { "made-by": "form" },
      [["hostname", "LIKE", "agent0"], ["rack", "UNLIKE", "r:9"]], 2, [["HTTP", "/health", 0]]]);
    if (got !== want) throw new Error(`created ${got}, expected ${want}`);
    await page.click("#app-destroy");
    await confirmDialog();
    await page.waitForFunction(() => location.hash.startsWith("#/apps"), null, { timeout: WAIT });
  });

  await step("the JSON editor refuses malformed JSON before sending it", async () => {
    await openEditorWith('{"id": "/ui-test/bad", ');
    await page.locator("#editor-error", { hasText: "Invalid JSON" }).waitFor();
  });

  await step("an invalid app shows Marathon's 422 with each path and error beside the editor", async () => {
    await page.fill("#editor-json", JSON.stringify({ id: GROUP + "/bad", cmd: "sleep 1", cpus: -1, mem: 32, instances: -2 }));
    await page.click("#editor-submit");
    const err = page.locator("#editor-error");
    await err.locator("text=422").waitFor();
    await err.locator("text=Object is not valid").waitFor();
    await err.locator('li[data-path="/cpus"]').waitFor();
    await err.locator('li[data-path="/instances"]').waitFor();
    await page.locator("#editor:not([hidden])").waitFor();
  });
  await page.screenshot({ path: join(shots, "marathon-create-error.png") });

  await step(`${APP} is created through the JSON editor and reaches Running with its instance listed`, async () => {
    await page.fill("#editor-json", JSON.stringify(scenario.app, null, 2));
    await page.click("#editor-submit");
    await page.locator("#editor").waitFor({ state: "hidden" });
    await page.waitForFunction((app) => location.hash === "#/app" + app, APP, { timeout: WAIT });
    await page.locator('#app-status[data-status="Running"]').waitFor();
    await page.locator('#instances tbody tr[data-state="TASK_RUNNING"]').first().waitFor();
    const rows = await page.locator("#instances tbody tr[data-id]").count();
    if (rows !== 1) throw new Error(`${rows} instances listed, expected 1`);
  });
  await page.screenshot({ path: join(shots, "marathon-app.png") });

  // The master's page opens in a tab of its own (the one page stays on Marathon's origin).
  await step(`the instance's Logs link opens the master's page for it, showing its stdout`, async () => {
    const row = page.locator('#instances tbody tr[data-state="TASK_RUNNING"]').first();
    const task = await row.getAttribute("data-id");
    const link = row.locator("a[data-logs]");
    const href = await link.getAttribute("href");
    const want = `${scenario.master_ui.replace(/\/+$/, "")}/#/task/`;
    if (!href.startsWith(want) || !href.endsWith("/" + encodeURIComponent(task))) throw new Error(`Logs link ${href}, expected ${want}FRAMEWORK/${task}`);
    const [tab] = await Promise.all([page.waitForEvent("popup"), link.click()]);
    try {
      await tab.locator("#task-id", { hasText: task }).waitFor({ timeout: WAIT });
      await tab.locator("#log", { hasText: scenario.says }).waitFor({ timeout: WAIT });
    } finally {
      await tab.close();
    }
  });

  await step("on the master's page the marathon framework's name links back to this UI (its webui_url)", async () => {
    const tab = await page.context().newPage();
    try {
      await tab.goto(scenario.master_ui);
      const link = tab.locator("#frameworks tbody td.fw-name a", { hasText: "marathon" });
      const href = await link.getAttribute("href");
      if (href.replace(/\/+$/, "") !== base) throw new Error(`the framework links to ${href}, not ${base}`);
      const [ui] = await Promise.all([tab.waitForEvent("popup"), link.click()]);
      await ui.locator("#status", { hasText: "updated" }).waitFor({ timeout: WAIT });
      if (!ui.url().startsWith(base + "/ui/")) throw new Error(`the link led to ${ui.url()}`);
      await ui.close();
    } finally {
      await tab.close();
    }
  });

  await step(`the group ${GROUP} leads to ${APP}, Running with 1 of 1`, async () => {
    await page.click('header a[data-nav="apps"]');
    await page.locator(`#apps tbody tr[data-group="${GROUP}"] a`).click();
    await page.locator("#apps-breadcrumb", { hasText: GROUP.slice(1) }).waitFor();
    await appRow().and(page.locator('[data-status="Running"]')).waitFor();
    await appRow().locator("td.running", { hasText: "1 of 1" }).waitFor();
  });

  await step(`${APP} is scaled to 2 from its row`, async () => {
    await appRow().locator('button[data-action="Scale"]').click();
    await confirmDialog(2);
    await appRow().locator("td.running", { hasText: "2 of 2" }).waitFor();
    await appRow().and(page.locator('[data-status="Running"]')).waitFor();
  });
  await page.screenshot({ path: join(shots, "marathon-apps.png") });

  await step("the search box filters the applications", async () => {
    await page.fill("#search", "no-such-app");
    await page.locator("#apps tbody tr.empty", { hasText: "No application passes the filters" }).waitFor();
    await page.fill("#search", APP.slice(APP.lastIndexOf("/") + 1));
    await appRow().waitFor();
    await page.fill("#search", "");
  });

  await step("Kill & Scale of one selected instance leaves 1", async () => {
    await appRow().locator("a.app-name").click();
    await page.locator('#instances tbody tr[data-state="TASK_RUNNING"]').nth(1).waitFor();
    await page.locator("#instances tbody tr[data-id] input[type=checkbox]").first().check();
    await page.click("#kill-scale");
    await confirmDialog();
    await page.locator(".card .value.running", { hasText: "1 of 1" }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll("#instances tbody tr[data-id]").length === 1, null, { timeout: WAIT });
  });

  await step(`scaled past the agent to ${scenario.stuck_instances}, ${APP} is Waiting and Debug says why`, async () => {
    await page.click("#app-scale");
    await confirmDialog(scenario.stuck_instances);
    await page.locator('#app-status[data-status="Waiting"]').waitFor();
    await page.click('.tabs button[data-tab="debug"]');
    await page.locator('#queue-info tr[data-reason="InsufficientCpus"]').first().waitFor();
  });
  await page.screenshot({ path: join(shots, "marathon-debug.png"), fullPage: true });

  await step("an edit while that deployment runs shows Marathon's 409 with the deployment and a force button", async () => {
    await page.click('.tabs button[data-tab="configuration"]');
    await page.click("#app-edit");
    await page.locator("#editor:not([hidden])").waitFor();
    await page.click("#editor-submit");
    const err = page.locator("#editor-error");
    await err.locator("text=409").waitFor();
    await err.locator("text=locked").waitFor();
    await err.locator('a[href="#/deployments"]').waitFor();
    await err.locator("#force").waitFor();
    await page.click("#editor-cancel");
    await page.locator("#editor").waitFor({ state: "hidden" });
  });

  await step("the Deployments page shows the stuck deployment, and Rollback undoes it", async () => {
    await page.click('header a[data-nav="deployments"]');
    const row = page.locator("#deployments tbody tr[data-id]", { has: page.locator(`a[href="#/app${APP}"]`) });
    await row.locator("td.action", { hasText: "ScaleApplication" }).waitFor();
    await row.locator("td.progress-cell", { hasText: "/" }).waitFor();
    await page.screenshot({ path: join(shots, "marathon-deployments.png") });
    await row.locator('button[data-action="rollback"]').click();
    await confirmDialog();
    await page.locator("#deployments tbody tr.empty", { hasText: "No deployments in progress" }).waitFor();
    await page.goto(`${base}/ui/#/app${APP}`);
    await page.locator('#app-status[data-status="Running"]').waitFor();
    await page.locator(".card .value.running", { hasText: "1 of 1" }).waitFor();
  });

  await step("Configuration shows the definition and its versions; Edit deploys a change", async () => {
    await page.click('.tabs button[data-tab="configuration"]');
    await page.locator("#app-config", { hasText: `"id": "${APP}"` }).waitFor();
    await page.locator("#versions tbody tr[data-version]").nth(1).waitFor();
    await page.click("#app-edit");
    const text = await page.inputValue("#editor-json");
    const app = JSON.parse(text);
    app.cmd = scenario.app.cmd + " # edited in the UI";
    await page.fill("#editor-json", JSON.stringify(app, null, 2));
    await page.click("#editor-submit");
    await page.locator("#editor").waitFor({ state: "hidden" });
    await page.locator("#app-config", { hasText: "# edited in the UI" }).waitFor();
    await page.locator('#app-status[data-status="Running"]').waitFor();
  });

  await step("About shows /v2/info", async () => {
    await page.click('header a[data-nav="about"]');
    await page.locator("#about-info dd", { hasText: "marathon" }).first().waitFor();
    await page.locator("#about-http dt", { hasText: "http_port" }).waitFor();
  });

  await step(`${APP} is destroyed from its page and leaves the list`, async () => {
    await page.goto(`${base}/ui/#/app${APP}`);
    await page.locator('#app-status[data-status="Running"]').waitFor();
    await page.click("#app-destroy");
    await confirmDialog();
    await page.waitForFunction(() => location.hash.startsWith("#/apps"), null, { timeout: WAIT });
    await page.goto(`${base}/ui/#/apps`);
    await page.locator("#status", { hasText: "updated" }).waitFor();
    await page.waitForFunction((app) => !document.querySelector(`#apps tbody tr[data-id="${app}"]`), APP, { timeout: WAIT });
  });

  await step(`${CRASH.id} fails, is Delayed, Debug shows its last failure, and Reset Delay relaunches it`, async () => {
    await openEditorWith(JSON.stringify(CRASH, null, 2));
    await page.waitForFunction((app) => location.hash === "#/app" + app, CRASH.id, { timeout: WAIT });
    await page.locator('#app-status[data-status="Delayed"]').waitFor();
    await page.click('.tabs button[data-tab="debug"]');
    const failed = page.locator("#failure-details dd").first();
    await page.locator("#failure-details dd", { hasText: "TASK_FAILED" }).waitFor();
    const first = await failed.textContent();
    await page.locator("#queue-info dd", { hasText: "backed off" }).waitFor();
    await page.screenshot({ path: join(shots, "marathon-delayed.png"), fullPage: true });
    await page.click("#app-reset-delay");
    // Within the backoff the app could not have been launched again: a new failure means the reset worked.
    await page.waitForFunction((before) => {
      const dd = document.querySelector("#failure-details dd");
      return dd && dd.textContent !== before;
    }, first, { timeout: WAIT });
  });

  await step(`the status filter lists ${CRASH.id} under Delayed and not under Running; Unhealthy lists nothing; its label finds it`, async () => {
    await page.click('header a[data-nav="apps"]');
    const listed = () => page.$$eval("#apps tbody tr[data-id]", (rows) => rows.map((r) => r.dataset.id));
    await page.selectOption("#status-filter", "Delayed");
    await page.locator(`#apps tbody tr[data-id="${CRASH.id}"][data-status="Delayed"]`).waitFor();
    const delayed = await listed();
    if (delayed.join() !== CRASH.id) throw new Error(`Delayed lists ${delayed}`);
    await page.selectOption("#status-filter", "Running");
    await page.locator("#apps tbody tr.empty", { hasText: "No application passes the filters" }).waitFor();
    await page.selectOption("#status-filter", "");
    await page.selectOption("#health-filter", "unhealthy");
    await page.locator("#apps tbody tr.empty", { hasText: "No application passes the filters" }).waitFor();
    await page.selectOption("#health-filter", "");
    for (const [label, hit] of [["tier:crash-test", true], ["tier", true], ["tier:nope", false], ["nope", false]]) {
      await page.fill("#label-filter", label);
      if (hit) await page.locator(`#apps tbody tr[data-id="${CRASH.id}"]`).waitFor();
      else await page.locator("#apps tbody tr.empty", { hasText: "No application passes the filters" }).waitFor();
    }
    const suggested = await page.$$eval("#label-options option", (os) => os.map((o) => o.value));
    if (!suggested.includes("tier:crash-test")) throw new Error(`label suggestions: ${suggested}`);
    await page.fill("#label-filter", "");
    await page.locator(`#apps tbody tr[data-group="${GROUP}"]`).waitFor();
  });

  await step("Create Group makes an empty group under the one shown, where new apps are proposed", async () => {
    await page.locator(`#apps tbody tr[data-group="${GROUP}"] a`).click();
    await page.locator("#apps-breadcrumb", { hasText: GROUP.slice(1) }).waitFor();
    await page.click("#create-group");
    await confirmDialog("made-in-ui");
    const made = `${GROUP}/made-in-ui`;
    await page.waitForFunction((g) => location.hash === "#/apps" + g, made, { timeout: WAIT });
    await page.locator("#apps tbody tr.empty", { hasText: `Group ${made} holds no application` }).waitFor();
    await page.click("#create-app");
    const proposed = JSON.parse(await page.inputValue("#editor-json"));
    if (proposed.id !== `${made}/my-app`) throw new Error(`Create Application in ${made} proposes ${proposed.id}`);
    await page.click("#editor-cancel");
    await page.locator("#editor").waitFor({ state: "hidden" });
    await page.locator("#apps-breadcrumb a").nth(1).click();
    await page.locator(`#apps tbody tr[data-group="${made}"]`).waitFor();
  });

  await step(`${CRASH.id} is destroyed from its row in the list`, async () => {
    await page.click('header a[data-nav="apps"]');
    await page.fill("#search", CRASH.id.slice(1));
    const row = page.locator(`#apps tbody tr[data-id="${CRASH.id}"]`);
    await row.locator('button[data-action="Destroy"]').click();
    await confirmDialog();
    await page.waitForFunction((app) => !document.querySelector(`#apps tbody tr[data-id="${app}"]`), CRASH.id, { timeout: WAIT });
    await page.fill("#search", "");
  });

  const crowdRow = () => page.locator(`#apps tbody tr[data-id="${CROWD.id}"]`);
  await step(`${CROWD.id} with ${CROWD.instances} instances lists them ${PAGE} to a page`, async () => {
    await openEditorWith(JSON.stringify(CROWD, null, 2));
    await page.waitForFunction((app) => location.hash === "#/app" + app, CROWD.id, { timeout: WAIT });
    const all = `${CROWD.instances} of ${CROWD.instances}`;
    await page.locator(".card .value.running", { hasText: all }).waitFor();
    await page.locator("#page-info", { hasText: `1–${PAGE} of ${CROWD.instances}` }).waitFor();
    const rows = await page.locator("#instances tbody tr[data-id]").count();
    if (rows !== PAGE) throw new Error(`${rows} rows on the first page, expected ${PAGE}`);
    const last = Math.floor((CROWD.instances - 1) / PAGE);
    for (let i = 0; i < last; i++) await page.click("#page-next");
    const from = last * PAGE + 1;
    await page.locator("#page-info", { hasText: `${from}–${CROWD.instances} of ${CROWD.instances}` }).waitFor();
    await page.waitForFunction((n) => document.querySelectorAll("#instances tbody tr[data-id]").length === n,
      CROWD.instances - last * PAGE, { timeout: WAIT });
    if (!(await page.isDisabled("#page-next"))) throw new Error("a page after the last");
  });
  await page.screenshot({ path: join(shots, "marathon-paged.png") });

  const crowdGroup = CROWD.id.slice(0, CROWD.id.lastIndexOf("/"));
  const groupRow = () => page.locator(`#apps tbody tr[data-group="${crowdGroup}"]`);
  const half = Math.ceil(CROWD.instances / 2);
  await step(`the group ${crowdGroup} is scaled by 0.5 to ${half} instances from its row`, async () => {
    await page.goto(`${base}/ui/#/apps`);
    await groupRow().locator('button[data-action="ScaleBy"]').click();
    await confirmDialog("0.5");
    await groupRow().locator("td.running", { hasText: `${half} of ${half}` }).waitFor();
    await groupRow().locator("a").click();
    await crowdRow().locator("td.running", { hasText: `${half} of ${half}` }).waitFor();
  });

  await step(`the headers sort: ${GROUP} (no CPU) and ${crowdGroup} by CPU both ways, then by name`, async () => {
    await page.goto(`${base}/ui/#/apps`);
    const order = async (n) => {
      await page.waitForFunction((n) => document.querySelectorAll("#apps tbody tr[data-group]").length === n, n, { timeout: WAIT });
      return (await page.$$eval("#apps tbody tr[data-group]", (rows) => rows.map((r) => r.dataset.group))).join();
    };
    const expect = async (column, dir, groups) => {
      await page.click(`#apps th[data-sort="${column}"]`);
      await page.locator(`#apps th[data-sort="${column}"][aria-sort="${dir}"]`).waitFor();
      const got = await order(2);
      if (got !== groups.join()) throw new Error(`by ${column} ${dir}: ${got}, expected ${groups}`);
    };
    await expect("cpu", "ascending", [GROUP, crowdGroup]);
    await expect("cpu", "descending", [crowdGroup, GROUP]);
    await expect("name", "ascending", [crowdGroup, GROUP].sort());
  });

  await step(`the groups ${crowdGroup} (with its app) and ${GROUP} are destroyed from their rows`, async () => {
    await page.goto(`${base}/ui/#/apps`);
    for (const g of [crowdGroup, GROUP]) {
      await page.locator(`#apps tbody tr[data-group="${g}"] button[data-action="Destroy"]`).click();
      await confirmDialog();
      await page.waitForFunction((g) => !document.querySelector(`#apps tbody tr[data-group="${g}"]`), g, { timeout: WAIT });
    }
    await page.locator("#apps tbody tr.empty", { hasText: "No applications yet" }).waitFor();
  });

  if (problems.length) fail("problems in the page: " + problems.join("; "));
  console.log("PASS " + ["app", "apps", "create-error", "debug", "delayed", "deployments", "paged"].map((n) => join(shots, `marathon-${n}.png`)).join(" "));
} finally {
  await close();
}
