// Drives the admin web UI in headless Chromium (Debian's /usr/bin/chromium, npm playwright-core):
// logs in, finds the held call in the approvals queue, approves or denies it, and prints what
// the page showed as one JSON line. Screenshots go to --shots DIR.
//
// node tests/ui/approvals.mjs --base URL (--once CODE | --token TOKEN) --tool NAME
//      (--approve | --deny REASON) --shots DIR
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => {
    if (a.startsWith("--")) pairs.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : true]);
    return pairs;
  }, []),
);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  if (args.once) {
    await page.goto(`${args.base}/login?once=${args.once}`);
  } else {
    await page.goto(`${args.base}/login`);
    await page.screenshot({ path: `${args.shots}/login.png`, fullPage: true });
    await page.getByLabel("Admin token").fill(args.token);
    await page.getByRole("button", { name: "Log in" }).click();
  }
  // A login lands on the overview; the queue is one link away.
  await page.waitForURL(`${args.base}/overview`);
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Approvals" }).click();
  await page.waitForURL(`${args.base}/approvals`);
  result.who = (await page.locator(".who").textContent()).trim();
  const row = page.locator("#queue tr", { hasText: args.tool });
  await row.waitFor({ timeout: 10000 });
  result.row = (await row.textContent()).trim();
  await page.screenshot({ path: `${args.shots}/approvals.png`, fullPage: true });
  if (args.approve) {
    await row.getByRole("button", { name: "Approve" }).click();
  } else {
    await row.getByRole("textbox").fill(args.deny);
    await row.getByRole("button", { name: "Deny" }).click();
  }
  await page.locator("#status", { hasText: args.approve ? "Approved" : "Denied" }).waitFor({ timeout: 10000 });
  result.status = (await page.locator("#status").textContent()).trim();
  await page.locator("#queue tr", { hasText: args.tool }).waitFor({ state: "detached", timeout: 10000 });
  await page.screenshot({ path: `${args.shots}/approvals-decided.png`, fullPage: true });
  // A narrow screen shows the same queue.
  await page.setViewportSize({ width: 420, height: 800 });
  await page.screenshot({ path: `${args.shots}/approvals-narrow.png`, fullPage: true });
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL(`${args.base}/login`);
  result.logged_out = true;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
