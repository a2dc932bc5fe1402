// Drives the Grants and Audit pages of the admin web UI in headless Chromium: creates a grant
// through the form (its token is shown once), then filters the live audit feed and opens a
// record's details, with the keyboard. Prints what the pages showed as one JSON line.
//
// node tests/ui/pages.mjs --base URL --once CODE --grant NAME --tool TOOL --shots DIR
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => {
    if (a.startsWith("--")) pairs.push([a.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const result = { errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => result.errors.push(e.message));
  await page.goto(`${args.base}/login?once=${args.once}`);
  await page.waitForURL(`${args.base}/overview`);

  // Grants: create one through the form; the token is shown once.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Grants" }).click();
  await page.waitForURL(`${args.base}/grants`);
  await page.getByLabel("Name").fill(args.grant);
  await page.getByRole("button", { name: "Create grant" }).click();
  await page.locator("#token-box:not([hidden])").waitFor({ timeout: 10000 });
  result.token = (await page.locator("#token").textContent()).trim();
  result.status = (await page.locator("#status").textContent()).trim();
  await page.locator(`#grants tr[data-grant="${args.grant}"]`).waitFor({ timeout: 10000 });
  result.row = (await page.locator(`#grants tr[data-grant="${args.grant}"]`).textContent()).trim();
  await page.screenshot({ path: `${args.shots}/grants-created.png`, fullPage: true });
  await page.getByRole("button", { name: "Done" }).click();
  result.token_hidden = await page.locator("#token-box").isHidden();

  // Audit: filter by decision, then open a record with the keyboard.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Audit" }).click();
  await page.waitForURL(`${args.base}/audit`);
  await page.locator("#status", { hasText: "Live." }).waitFor({ timeout: 10000 });
  await page.getByLabel("Decision").selectOption("denied");
  await page.getByRole("button", { name: "Apply" }).click();
  const denied = page.locator(`#feed tbody tr[data-decision="denied"][data-tool="${args.tool}"]`);
  await denied.first().waitFor({ timeout: 10000 });
  result.decisions = await page.locator("#feed tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.decision));
  await denied.first().focus();
  await page.keyboard.press("Enter");
  await page.locator("#detail:not([hidden])").waitFor({ timeout: 10000 });
  result.detail = (await page.locator("#detail").textContent()).trim();
  await page.screenshot({ path: `${args.shots}/audit-detail.png`, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
