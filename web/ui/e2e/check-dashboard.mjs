// End-to-end check of the served dashboard in headless Chromium (driven by
// tests/e2e/test_dashboard_browser.py). playwright-core comes from the repository root's
// node_modules; the browser is the system's Chromium.
//
//   node web/ui/e2e/check-dashboard.mjs --url http://127.0.0.1:8080 --peers 3 \
//        --search quick-amber-otter --round 3 --out test-output
//
// Prints one JSON line with what it saw; exits 1 (with the reason) when a check fails.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { launchChromium } from "./browser.mjs";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    peers: { type: "string", default: "1" },
    search: { type: "string" },
    round: { type: "string" },
    out: { type: "string", default: "test-output" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    timeout: { type: "string", default: "30000" },
  },
});
if (!opt.url || !opt.search) {
  console.error("usage: check-dashboard.mjs --url URL --search NAME [--peers N] [--round R] [--out DIR]");
  process.exit(2);
}
const timeout = Number(opt.timeout);
const wantPeers = Number(opt.peers);
mkdirSync(opt.out, { recursive: true });

const browser = await launchChromium(opt.chromium);
const result = { ok: false };
const consoleErrors = [];
try {
  // --- desktop
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  await page.goto(opt.url, { waitUntil: "domcontentloaded" });

  const round = page.getByTestId("round-number");
  await round.waitFor();
  result.round = (await round.textContent())?.trim();
  if (opt.round && result.round !== opt.round) throw new Error(`round shows ${result.round}, expected ${opt.round}`);
  result.stage = (await page.locator('.step[aria-current="step"] .label').textContent())?.trim();

  await page.locator("#rewards circle.point").first().waitFor();
  result.chartPoints = await page.locator("#rewards circle.point").count();

  const rows = page.locator("#leaderboard table.board tbody tr");
  await page.waitForFunction(
    (n) => document.querySelectorAll("#leaderboard table.board tbody tr").length >= n,
    wantPeers,
  );
  result.leaderboardRows = await rows.count();
  result.leaderboardNames = await page.locator("#leaderboard tbody .name").allTextContents();

  await page.locator("#gossip ul.gossip li").first().waitFor();
  result.gossipEntries = await page.locator("#gossip ul.gossip li").count();
  result.firstGossip = (await page.locator("#gossip ul.gossip li").first().innerText()).replace(/\s+/g, " ");
  result.nodeCount = (await page.getByTestId("node-count").innerText()).trim();
  result.meCard = (await page.locator("#me").innerText()).replace(/\s+/g, " ");
  result.live = (await page.locator(".live").innerText()).trim();
  await page.screenshot({ path: join(opt.out, "dashboard-desktop.png"), fullPage: true });

  // --- search by name
  await page.getByRole("searchbox").fill(opt.search);
  await page.waitForFunction(
    (name) => {
      const names = [...document.querySelectorAll("#leaderboard tbody .name")].map((n) => n.textContent);
      return names.length === 1 && names[0] === name;
    },
    opt.search,
  );
  result.searchResult = await page.locator("#leaderboard tbody .name").allTextContents();
  await page.screenshot({ path: join(opt.out, "dashboard-search.png"), fullPage: false });

  // --- phone width: nothing wider than the screen
  const phone = await browser.newPage({ viewport: { width: 375, height: 812 }, deviceScaleFactor: 2 });
  phone.setDefaultTimeout(timeout);
  await phone.goto(opt.url, { waitUntil: "domcontentloaded" });
  await phone.locator("#rewards circle.point").first().waitFor();
  await phone.locator("#gossip ul.gossip li").first().waitFor();
  result.phoneScrollWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
  if (result.phoneScrollWidth > 375) throw new Error(`page is ${result.phoneScrollWidth}px wide at 375px`);
  await phone.screenshot({ path: join(opt.out, "dashboard-phone.png"), fullPage: true });

  if (consoleErrors.length) throw new Error(`console errors: ${consoleErrors.join(" | ")}`);
  result.ok = true;
} catch (err) {
  result.error = String(err?.message ?? err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
