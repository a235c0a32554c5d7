// Drives the agent's dashboard in Debian's chromium with playwright-core:
// loads the page, starts a transfer with the form, sees its progress bar
// move, then its history row reach "done" at 100 %, and takes a
// screenshot. Exits 0 on success; any failure throws (exit 1).
//
//   node dashboard.mjs URL TICKET FILE SCREENSHOT.png
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, ticket, file, screenshot] = process.argv.slice(2);
if (!screenshot) throw new Error("usage: dashboard.mjs URL TICKET FILE SCREENSHOT");

const profile = mkdtempSync(join(tmpdir(), "chunkstream-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
  viewport: { width: 1200, height: 760 },
});
try {
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  await page.goto(url, { timeout: 15000 });
  await page.waitForSelector("#agent:not(:empty)", { timeout: 10000 });

  await page.fill("#inputs", file);
  await page.fill("#ticket", ticket);
  await page.fill("#max_rate", "40mbit");
  await page.click("#start");
  await page.waitForFunction(() => /queued/.test(document.querySelector("#message").textContent), null, { timeout: 10000 });
  const id = (await page.textContent("#message")).match(/transfer (\d+)/)[1];

  // Running: its row's progress bar moves above 0 %.
  await page.waitForFunction(id => {
    const pct = document.querySelector(`#active tr[data-transfer="${id}"] .pct`);
    return pct && parseFloat(pct.textContent) > 0;
  }, id, { timeout: 20000, polling: 50 });

  // Done: its history row says done and 100 %.
  const row = `#history tr[data-transfer="${id}"]`;
  await page.waitForSelector(`${row} td.state-done`, { timeout: 60000 });
  const pct = await page.textContent(`${row} td.pct`);
  if (pct.trim() !== "100 %") throw new Error(`history row shows ${pct}, not 100 %`);
  await page.waitForTimeout(1500); // let the chart draw its last points
  await page.screenshot({ path: screenshot, fullPage: true });
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log(`transfer ${id} done at 100 %; screenshot ${screenshot}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
