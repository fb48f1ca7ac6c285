// Drives Agora's status page in a real headless Chromium (Debian's, through playwright-core; no browser download).
// Run by integration-tests/tests/operators.rs, which starts the cluster and passes what to expect as JSON in
// AGORA_EXPECT. Every wait is bounded; on success it prints "PASS" and the screenshot paths, on failure it exits 1.
//
// AGORA_URL       the master's page, e.g. http://127.0.0.1:5050/
// AGORA_EXPECT    {"agent_id", "agent_hostname", "frameworks": [names], "running": [task ids],
//                  "finished": [task ids], "failed": [task ids], "stdout_task": id, "stdout_text": text,
//                  "follow_task": id}
// AGORA_SHOTS     directory for the screenshots
// CHROMIUM        the browser (see browser.mjs)
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch } from "./browser.mjs";

const url = process.env.AGORA_URL;
const expect = JSON.parse(process.env.AGORA_EXPECT || "{}");
const shots = process.env.AGORA_SHOTS || tmpdir();
const WAIT = 30000;

function fail(message) {
  console.error("FAIL: " + message);
  process.exit(1);
}

if (!url) fail("AGORA_URL is not set");

const { page, close } = await launch(WAIT);
const consoleErrors = [];
page.on("pageerror", (e) => consoleErrors.push(String(e)));
// The page must need nothing but the master: no CDN, no agent addressed directly.
page.on("request", (r) => {
  if (!r.url().startsWith(url) && !r.url().startsWith("data:")) consoleErrors.push("request outside the master: " + r.url());
});

async function step(what, fn) {
  try {
    await fn();
    console.log("ok: " + what);
  } catch (e) {
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
    console.error(await page.content().catch(() => ""));
    fail(`${what}: ${e.message}`);
  }
}

try {
  await step("page loads", async () => {
    await page.goto(url);
    await page.waitForSelector("#leader:not(:text('–'))");
  });
  await step(`agent ${expect.agent_id} is listed as active`, async () => {
    const row = page.locator(`#agents tbody tr[data-id="${expect.agent_id}"]`);
    await row.locator(".agent-state", { hasText: "active" }).waitFor();
    await row.locator(".hostname", { hasText: expect.agent_hostname }).waitFor();
  });
  for (const name of expect.frameworks || []) {
    await step(`framework ${name} is listed`, async () => {
      await page.locator("#frameworks tbody td.fw-name", { hasText: name }).first().waitFor();
    });
  }
  for (const id of expect.running || []) {
    await step(`task ${id} is RUNNING among the active tasks`, async () => {
      await page.locator(`#tasks tbody tr[data-id="${id}"][data-state="TASK_RUNNING"]`).waitFor();
    });
  }
  for (const id of expect.finished || []) {
    await step(`task ${id} is FINISHED among the completed tasks`, async () => {
      await page.locator(`#completed tbody tr[data-id="${id}"][data-state="TASK_FINISHED"]`).waitFor();
    });
  }
  for (const id of expect.failed || []) {
    await step(`task ${id} is FAILED among the completed tasks, with its message`, async () => {
      const row = page.locator(`#completed tbody tr[data-id="${id}"][data-state="TASK_FAILED"]`);
      await row.getByText("exited with status").waitFor();
    });
  }
  await step("resources show the agent's cpus", async () => {
    await page.locator('#resources tr[data-resource="cpus"] td.num').first().waitFor();
  });
  await page.screenshot({ path: join(shots, "cluster.png"), fullPage: true });

  await step("search narrows the tasks to one", async () => {
    const id = expect.running[0];
    await page.fill("#task-search", id);
    await page.waitForFunction(
      (id) => {
        const rows = [...document.querySelectorAll("#tasks tbody tr[data-id]")];
        return rows.length === 1 && rows[0].dataset.id === id;
      },
      id,
      { timeout: WAIT },
    );
    await page.fill("#task-search", "");
  });

  await step(`task ${expect.stdout_task} shows its history and stdout`, async () => {
    await page.locator(`#completed tbody tr[data-id="${expect.stdout_task}"] a`).click();
    await page.locator("#task-view").waitFor();
    await page.locator("#history tbody").getByText("FINISHED").waitFor();
    await page.locator("#files tbody").getByText("stdout").first().waitFor();
    await page.locator("#log", { hasText: expect.stdout_text }).waitFor();
  });

  await step(`task ${expect.follow_task}'s stdout is followed live`, async () => {
    await page.goto(url);
    await page.locator(`#tasks tbody tr[data-id="${expect.follow_task}"] a`).click();
    await page.locator("#log", { hasText: "tick" }).waitFor();
    const first = (await page.textContent("#log")).trim().split("\n").length;
    // New lines arrive without reloading the page.
    await page.waitForFunction(
      (n) => document.querySelector("#log").textContent.trim().split("\n").length > n + 1,
      first,
      { timeout: WAIT },
    );
  });
  await page.screenshot({ path: join(shots, "task.png"), fullPage: true });

  if (consoleErrors.length) fail("errors in the page: " + consoleErrors.join("; "));
  console.log("PASS " + join(shots, "cluster.png") + " " + join(shots, "task.png"));
} finally {
  await close();
}
