// The one way the e2e scripts start Chromium: headless, no sandbox (CI runs as root), and
// none of the background traffic a fresh profile would make on a machine with no internet.
import { chromium } from "playwright-core";

export function launchChromium(executablePath = "/usr/bin/chromium") {
  return chromium.launch({
    executablePath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}
