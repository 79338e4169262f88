// Drives the login page in headless Chromium: sign up, read the wallet address, activate the
// key, sign out and back in. Prints one JSON line with what it saw; screenshots go to argv[3].
// Usage: node tests/e2e/login_browser.mjs <login-url> <screenshot-dir> <email> <password>
import { chromium } from 'playwright-core';
import path from 'node:path';

const [url, shotDir, email, password] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const out = {};
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // phone width
  page.setDefaultTimeout(60000);
  await page.goto(url + '/');
  await page.fill('#signup-form input[name=email]', email);
  await page.fill('#signup-form input[name=password]', password);
  await Promise.all([page.waitForURL('**/?n=welcome'), page.click('#signup-button')]);
  out.address = (await page.textContent('#wallet-address')).trim();
  out.orgId = (await page.textContent('#org-id')).trim();
  out.statusBefore = (await page.textContent('#key-status')).trim();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  out.horizontalOverflowPx = overflow;
  await page.screenshot({ path: path.join(shotDir, 'login-signed-in-phone.png'), fullPage: true });
  await Promise.all([page.waitForSelector('#api-key'), page.click('#activate-button')]);
  out.apiKey = (await page.textContent('#api-key')).trim();
  out.statusAfter = (await page.textContent('#key-status')).trim();
  await page.setViewportSize({ width: 1200, height: 900 });
  await page.screenshot({ path: path.join(shotDir, 'login-key-activated.png'), fullPage: true });
  const cookies = await page.context().cookies();
  out.cookies = cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure }));
  await page.click('text=Sign out');
  await page.waitForSelector('#signin-form');
  await page.fill('#signin-form input[name=email]', email);
  await page.fill('#signin-form input[name=password]', password);
  await Promise.all([page.waitForURL('**/?n=signed-in'), page.click('#signin-button')]);
  out.addressAfterSignIn = (await page.textContent('#wallet-address')).trim();
  out.peerText = (await page.textContent('#peer-ids')).trim();
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
