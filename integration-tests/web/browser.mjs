// The headless Chromium both browser tests drive (Debian's, through playwright-core; no browser download): the
// flags that keep it off the (closed) network, and a fresh profile each run, removed by `close`.
//
// CHROMIUM   the browser (default /usr/bin/chromium)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

/** Launches Chromium and returns its first page (default timeout `wait` ms) and `close()`. */
export async function launch(wait) {
  const profile = mkdtempSync(join(tmpdir(), "agora-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(wait);
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { page, close };
}
