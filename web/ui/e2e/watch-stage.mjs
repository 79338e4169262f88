// What the dashboard shows for the round and stage, read on demand in headless Chromium
// (driven by tests/integration/test_stage_consistency.py, which samples the chain and the DHT
// at the same moments).
//
//   node web/ui/e2e/watch-stage.mjs --url http://127.0.0.1:8080
//
// Prints {"ready": true} once the round card has rendered, then one JSON line per line read
// on stdin: the round card (round number, stage name, the progress step marked current) and
// every gossip entry's kind and stage label. EOF on stdin closes the browser and exits.
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { launchChromium } from "./browser.mjs";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    timeout: { type: "string", default: "30000" },
  },
});
if (!opt.url) {
  console.error("usage: watch-stage.mjs --url URL");
  process.exit(2);
}

const browser = await launchChromium(opt.chromium);
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.setDefaultTimeout(Number(opt.timeout));
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(opt.url, { waitUntil: "domcontentloaded" });
  await page.getByTestId("round-number").waitFor();
  console.log(JSON.stringify({ ready: true }));

  const lines = createInterface({ input: process.stdin });
  for await (const _ of lines) {
    // One evaluate: every field comes from the same rendered frame.
    const seen = await page.evaluate(() => {
      const text = (sel) => document.querySelector(sel)?.textContent?.trim() ?? null;
      const gossip = [...document.querySelectorAll("#gossip ul.gossip li")].map((li) => {
        const meta = li.querySelector(".gossip-head .muted")?.textContent ?? "";
        const parts = meta.split("·").map((p) => p.trim());
        return { kind: li.querySelector(".kind")?.textContent?.trim() ?? null,
          round: parts[0]?.replace(/^r/, "") ?? null, label: parts[1] ?? null };
      });
      return {
        round: text('[data-testid="round-number"]'),
        stageName: text('[data-testid="stage-name"]'),
        step: text('.step[aria-current="step"] .label'),
        gossip,
      };
    });
    console.log(JSON.stringify({ ...seen, errors }));
  }
} finally {
  await browser.close();
}
