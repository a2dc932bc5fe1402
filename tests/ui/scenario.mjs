// The admin web UI's main scenario in headless Chromium (Debian's /usr/bin/chromium, npm
// playwright-core), one step per run so that the test (tests/e2e/test_web_scenario.py) can act
// between them with a real MCP client. The session cookie is kept in --state between steps.
// Each step prints one JSON line: what the pages showed. Screenshots go to --shots DIR.
//
// node tests/ui/scenario.mjs --step STEP --base URL --shots DIR --state FILE [--token TOKEN] [--grant NAME]
//   login    log in with the admin token on /login (--token), or the one-time link (--once);
//            lands on /overview
//   build    on /policies: ssh_session_start -> Custom with a limit of 2 a minute per grant,
//            create_charge -> Approve (60 s); Save
//   json     the JSON and the rows follow each other; an invalid edit shows `toolgate check`'s
//            diagnostics; "try a call"; labels and narrow-screen layout (nothing is saved)
//   audit    the live feed shows the client's calls (--tool NAME, --allowed N, --limited N);
//            screenshots of the other pages
//   approve  the held call (--tool NAME) is in the queue: approve it
import { readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => {
    if (a.startsWith("--")) pairs.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : true]);
    return pairs;
  }, []),
);
const base = args.base;
const shots = args.shots;
const grant = args.grant || "alice";
const WIDE = { width: 1280, height: 900 };
const NARROW = { width: 420, height: 900 };
const result = { step: args.step };
const problems = [];
let page;
// Failed requests a step provokes on purpose (anything else failing is a problem).
const expected = [];

// ---- helpers ---------------------------------------------------------------------------------

async function shot(name) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

/** Waits until the page shows no horizontal scrollbar (text wraps, panels stack), and says so. */
async function overflow() {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}

function row(name) {
  return page.locator(`li.pb-tool[data-tool="${name}"]`);
}

async function json() {
  return page.locator("#pb-json").inputValue();
}

/** Waits until the JSON in the textarea satisfies `test` (the form writes it synchronously). */
async function jsonWhere(test, what) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const text = await json();
    let doc = null;
    try { doc = JSON.parse(text); } catch { /* not yet */ }
    if (doc && test(doc)) return doc;
    if (Date.now() > deadline) throw new Error(`the JSON never showed ${what}:\n${text}`);
    await page.waitForTimeout(100);
  }
}

/** Waits until the API's check of the current draft is shown (valid, or its problems). */
async function checked(valid) {
  await page.locator("#pb-check", { hasText: valid ? /^Valid/ : /problem/ }).waitFor();
  return (await page.locator("#pb-check").textContent()).trim();
}

async function openPolicies() {
  await page.goto(`${base}/policies?grant=${encodeURIComponent(grant)}`);
  await row("ssh_session_start").waitFor();
  await checked(true);
}

/** Every form control without a name a screen reader can read. */
async function unlabelled() {
  return page.evaluate(() => [...document.querySelectorAll("main input, main select, main textarea, main button")]
    .filter((e) => e.type !== "hidden")
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.getAttribute("aria-labelledby")
      && !(e.tagName === "BUTTON" && e.textContent.trim()))
    .map((e) => e.outerHTML.slice(0, 120)));
}

// ---- the steps -------------------------------------------------------------------------------

const steps = {
  async login(page, context) {
    await page.goto(`${base}/login`);
    await shot("login");
    if (args.once) {
      await page.goto(`${base}/login?once=${args.once}`);
    } else {
      await page.getByLabel("Admin token").fill(args.token);
      await page.getByRole("button", { name: "Log in" }).click();
    }
    await page.waitForURL(`${base}/overview`);
    result.landed = new URL(page.url()).pathname;
    result.who = (await page.locator(".who").textContent()).trim();
    await page.locator("#calls").filter({ hasNotText: /^-$/ }).waitFor().catch(() => {});
    await shot("overview");
    await context.storageState({ path: args.state });
  },

  async build(page) {
    // From the overview, through the navigation.
    await page.goto(`${base}/overview`);
    await page.getByRole("navigation").getByRole("link", { name: "Policies" }).click();
    await page.waitForURL(/\/policies/);
    await page.getByLabel("Grant", { exact: true }).selectOption(grant);
    await row("ssh_session_start").waitFor();
    await checked(true);
    result.before = await json();
    result.modes_before = await page.$$eval("li.pb-tool", (ls) => Object.fromEntries(ls.map((l) => [l.dataset.tool, l.dataset.mode])));

    // ssh_session_start: Custom, with a limit of 2 a minute per grant.
    const ssh = row("ssh_session_start");
    await ssh.getByRole("radio", { name: "Custom" }).check();
    await ssh.getByRole("button", { name: "Add a rate limit to ssh_session_start" }).click();
    await ssh.getByLabel("Counter", { exact: true }).fill("ssh_session_start_rate");
    await ssh.getByLabel("Window", { exact: true }).selectOption("minute");
    await ssh.getByLabel("Max calls", { exact: true }).fill("2");
    await ssh.getByLabel("Scope", { exact: true }).selectOption("grant");
    // create_charge: every call waits for a human, for up to a minute.
    const charge = row("create_charge");
    await charge.getByRole("radio", { name: "Approve" }).check();
    await charge.getByLabel("Approval timeout for create_charge").fill("60s");
    const doc = await jsonWhere((d) => d.tools?.ssh_session_start?.limits?.[0]?.max === 2
      && d.tools?.create_charge?.approval?.timeout === "60s", "the limit and the approval");
    result.modes_after = await page.$$eval("li.pb-tool", (ls) => Object.fromEntries(ls.map((l) => [l.dataset.tool, l.dataset.mode])));
    result.check = await checked(true);
    result.built = doc;
    await shot("policies");

    await page.getByRole("button", { name: "Save" }).click();
    await page.locator("#pb-status", { hasText: /^Saved|^Not saved/ }).waitFor();
    result.status = (await page.locator("#pb-status").textContent()).trim();
    result.saved_text = await json();
    result.dirty = (await page.locator("#pb-dirty").textContent()).trim();
  },

  async json(page) {
    await openPolicies();
    const saved = await json();
    result.saved_text = saved;
    const rows = await page.locator("li.pb-tool").count();

    // JSON -> rows: an entry typed into the JSON turns its row.
    const edited = JSON.parse(saved);
    edited.tools.ssh_exec = { action: "deny", on_deny: "No shell for this agent." };
    await page.locator("#pb-json").fill(JSON.stringify(edited, null, 2));
    await page.locator('li.pb-tool[data-tool="ssh_exec"][data-mode="deny"]').waitFor();
    result.json_to_row = {
      mode: await row("ssh_exec").getAttribute("data-mode"),
      checked: await row("ssh_exec").getByRole("radio", { name: "Deny" }).isChecked(),
      message: await row("ssh_exec").getByLabel("Message to the agent when ssh_exec is refused").inputValue(),
    };

    // Rows -> JSON: a click, and the keyboard (arrows move within a row's treatments).
    await row("list_files").getByRole("radio", { name: "Hide" }).check();
    await row("crash_upstream").getByRole("radio", { name: "Hide" }).focus();
    await page.keyboard.press("ArrowLeft"); // Hide -> Deny
    const doc = await jsonWhere((d) => d.hide?.includes("list_files") && d.tools?.crash_upstream?.action === "deny",
      "list_files hidden and crash_upstream denied");
    result.row_to_json = {
      hide: doc.hide,
      list_files_entry: doc.tools.list_files ?? null,
      crash_upstream: doc.tools.crash_upstream,
      focused: await page.evaluate(() => document.activeElement?.closest("li.pb-tool")?.dataset.tool + ":" + document.activeElement?.value),
      kept: { description: doc.description, all_tools: doc.all_tools, pattern: doc.tools["delete_*"], ssh_exec: doc.tools.ssh_exec },
    };
    result.check_after_edits = await checked(true);

    // Another grant's policy, and back: the unsaved draft is still there.
    const draftText = await json();
    await page.getByLabel("Grant", { exact: true }).selectOption(args.other);
    await page.locator("#pb-file", { hasText: `policy-${args.other}.json` }).waitFor();
    result.other_grant_url = new URL(page.url()).search;
    await page.getByLabel("Grant", { exact: true }).selectOption(grant);
    await page.locator("#pb-status", { hasText: "draft" }).waitFor();
    result.draft_back = { equal: (await json()) === draftText, status: (await page.locator("#pb-status").textContent()).trim() };
    await checked(true);

    // Argument rules with the form: the shell-aware command rule, with its program lists.
    const exec = row("ssh_exec");
    await exec.getByRole("radio", { name: "Custom" }).check();
    // A new rule starts as `require`; rules show grouped by what they do.
    const fresh = exec.locator('[data-pointer="/tools/ssh_exec/require/0"]');
    await exec.getByRole("button", { name: "Add an argument rule to ssh_exec" }).click();
    await fresh.getByLabel("Argument path", { exact: true }).fill("args.command");
    await fresh.getByLabel("Operator", { exact: true }).selectOption("command");
    await fresh.getByLabel("Programs allowed (space-separated; empty: any)").fill("ls cat grep");
    await fresh.getByLabel("Programs refused (space-separated)").fill("rm");
    await fresh.getByLabel("command substitution $( )").check();
    await fresh.getByLabel("When", { exact: true }).selectOption("approve_unless");
    await exec.getByLabel("Approval timeout for ssh_exec").fill("5m");
    await exec.getByRole("button", { name: "Add an argument rule to ssh_exec" }).click();
    await fresh.getByLabel("Argument path", { exact: true }).fill("args.timeout");
    await fresh.getByLabel("Operator", { exact: true }).selectOption("gt");
    await fresh.getByLabel("Value (JSON, or text)").fill("120000");
    await fresh.getByLabel("When", { exact: true }).selectOption("deny_if");
    const withRules = await jsonWhere((d) => d.tools?.ssh_exec?.deny_if?.[0]?.value === 120000
      && d.tools?.ssh_exec?.approval?.timeout === "5m", "the rules of ssh_exec");
    result.command_rule = withRules.tools.ssh_exec;
    result.check_command = await checked(true);
    // Try a call against this draft (not saved): a listed program runs, another waits for a human.
    result.draft_tries = {};
    for (const [label, command] of [["ls", "ls -l /tmp"], ["rm", "rm -rf /tmp/x"], ["sub", "cat $(ls)"]]) {
      await page.getByLabel("Tool", { exact: true }).selectOption("ssh_exec");
      await page.getByLabel("Arguments (JSON object)").fill(JSON.stringify({ credentialName: "web-1", command }));
      await page.locator("#pb-try-result").evaluate((e) => e.replaceChildren());
      await page.getByRole("button", { name: "Try the call" }).click();
      const verdict = page.locator("#pb-try-result .pb-verdict");
      await verdict.waitFor();
      result.draft_tries[label] = { decision: await verdict.getAttribute("data-decision"), text: (await page.locator("#pb-try-result").innerText()).trim() };
    }
    await exec.scrollIntoViewIfNeeded();
    await page.screenshot({ path: `${shots}/policies-command-rule.png` });

    // An invalid edit: the API's diagnostics, inline on the row too.
    const bad = JSON.parse(await json());
    bad.tools.ssh_session_start.limits[0].max = "two";
    bad.tools.ssh_session_start.limits[0].window = "fortnight";
    bad.tools.list_files = { limts: [] };
    const badText = JSON.stringify(bad, null, 2);
    await page.locator("#pb-json").fill(badText);
    await checked(false);
    await page.locator("#pb-diagnostics[role=alert] .pb-diag-text").first().waitFor();
    result.invalid = {
      text: badText,
      shown: await page.locator("#pb-diagnostics .pb-diag-text").allTextContents(),
      row_errors: await row("ssh_session_start").locator(".pb-row-errors li").allTextContents(),
      max_invalid: await row("ssh_session_start").getByLabel("Max calls", { exact: true }).getAttribute("aria-invalid"),
      row_marked: await row("ssh_session_start").evaluate((l) => l.classList.contains("invalid")),
    };
    await shot("policies-invalid");

    // JSON that does not parse: the error is shown, the rows stay (and wait for the JSON).
    const broken = badText.replace(/\}\s*$/, "");
    await page.locator("#pb-json").fill(broken);
    await page.locator("#pb-json-error", { hasText: "does not parse" }).waitFor();
    await checked(false);
    result.broken = {
      text: broken,
      error: (await page.locator("#pb-json-error").textContent()).trim(),
      shown: await page.locator("#pb-diagnostics .pb-diag-text").allTextContents(),
      rows_before: rows,
      rows_kept: await page.locator("li.pb-tool").count(),
      form_disabled: await row("ssh_session_start").getByRole("radio", { name: "Custom" }).isDisabled(),
    };

    // Back to the file on disk.
    await page.getByRole("button", { name: "Reload from disk" }).click();
    await page.locator("#pb-json-error", { hasText: "does not parse" }).waitFor({ state: "hidden" }).catch(() => {});
    await checked(true);
    result.reloaded_equal = (await json()) === saved;
    result.form_enabled_again = await row("ssh_session_start").getByRole("radio", { name: "Custom" }).isEnabled();

    // Someone else changes the file after it was loaded: saving refuses to overwrite it.
    const onDisk = readFileSync(args.file, "utf8");
    await page.getByLabel("Description of this policy").fill("A draft made while the file changed");
    writeFileSync(args.file, `${onDisk}\n`);
    expected.push(/^HTTP 409 POST .*\/api\/policy\/save$/);
    await page.getByRole("button", { name: "Save" }).click();
    await page.locator("#pb-status", { hasText: /^Not saved/ }).waitFor();
    result.conflict = {
      status: (await page.locator("#pb-status").textContent()).trim(),
      file_untouched: readFileSync(args.file, "utf8") === `${onDisk}\n`,
      dirty: (await page.locator("#pb-dirty").textContent()).trim(),
    };
    writeFileSync(args.file, onDisk);
    await page.getByRole("button", { name: "Reload from disk" }).click();
    await page.waitForFunction(() => document.getElementById("pb-dirty").textContent === "");
    await checked(true);
    result.after_conflict_equal = (await json()) === saved;

    // Try a call: what the saved policy decides, with the counters.
    result.tries = {};
    for (const [tool, callArgs] of [["ssh_session_start", { credentialName: "web-1" }], ["create_charge", { amount: 5 }], ["delete_account", { id: "x" }]]) {
      await page.getByLabel("Tool", { exact: true }).selectOption(tool);
      await page.getByLabel("Arguments (JSON object)").fill(JSON.stringify(callArgs));
      await page.locator("#pb-try-result").evaluate((e) => e.replaceChildren());
      await page.getByRole("button", { name: "Try the call" }).click();
      const verdict = page.locator("#pb-try-result .pb-verdict");
      await verdict.waitFor();
      result.tries[tool] = { decision: await verdict.getAttribute("data-decision"), text: (await page.locator("#pb-try-result").innerText()).trim() };
    }
    await page.getByRole("heading", { name: "Try a call" }).scrollIntoViewIfNeeded();
    await shot("policies-try");

    // Usable: every control is labelled; nothing overflows at 1280 px or at 420 px, where the
    // JSON stacks under the rows.
    result.unlabelled = await unlabelled();
    result.overflow_wide = await overflow();
    await page.setViewportSize(NARROW);
    await page.waitForTimeout(300);
    result.overflow_narrow = await overflow();
    result.stacked = await page.evaluate(() => {
      const rows = document.querySelector(".pb-rows").getBoundingClientRect();
      const json = document.querySelector("#pb-json").getBoundingClientRect();
      return json.top >= rows.bottom - 1 && json.width > 300;
    });
    await shot("policies-narrow");
    await row("ssh_session_start").scrollIntoViewIfNeeded();
    await page.screenshot({ path: `${shots}/policies-narrow-row.png` });
    await page.setViewportSize(WIDE);
  },

  async audit(page) {
    const tool = args.tool;
    await page.goto(`${base}/audit`);
    const want = { allowed: Number(args.allowed), limited: Number(args.limited) };
    const count = () => page.$$eval("#feed tbody tr", (trs, tool) => {
      const out = {};
      for (const tr of trs) {
        const t = tr.dataset.tool || "";
        if (t === tool || t.endsWith(`/${tool}`) || t.endsWith(`__${tool}`)) out[tr.dataset.decision] = (out[tr.dataset.decision] || 0) + 1;
      }
      return out;
    }, tool);
    const deadline = Date.now() + 15000;
    let seen = {};
    while (Date.now() < deadline) {
      seen = await count();
      if ((seen.allowed || 0) >= want.allowed && (seen.limited || 0) >= want.limited) break;
      await page.waitForTimeout(250);
    }
    result.feed = seen;
    result.rows_text = await page.locator("#feed tbody tr", { hasText: tool }).allInnerTexts();
    await shot("audit");
    for (const [path, name, ready] of [["/tools", "tools", "#servers *"], ["/grants", "grants", "#grants tr"], ["/overview", "overview-after", "#calls"]]) {
      await page.goto(`${base}${path}`);
      await page.locator(ready).first().waitFor().catch(() => {});
      await page.waitForTimeout(500);
      await shot(name);
    }
    await page.setViewportSize(NARROW);
    await page.goto(`${base}/audit`);
    await page.locator("#feed tbody tr").first().waitFor();
    await shot("audit-narrow");
  },

  async approve(page) {
    const tool = args.tool;
    await page.goto(`${base}/overview`);
    await page.getByRole("navigation").getByRole("link", { name: "Approvals" }).click();
    await page.waitForURL(`${base}/approvals`);
    const queued = page.locator("#queue tr", { hasText: tool });
    await queued.waitFor();
    result.row = (await queued.innerText()).trim();
    await shot("approvals");
    await queued.getByRole("button", { name: "Approve" }).click();
    await page.locator("#status", { hasText: "Approved" }).waitFor();
    result.status = (await page.locator("#status").textContent()).trim();
    await page.locator("#queue tr", { hasText: tool }).waitFor({ state: "detached" });
    await shot("approvals-decided");
  },
};

// ---- run one step ----------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({
    viewport: WIDE,
    storageState: args.step === "login" ? undefined : args.state,
  });
  context.setDefaultTimeout(15000);
  page = await context.newPage();
  // Leaving a page with an unsaved draft asks first; the scenario always means to leave.
  page.on("dialog", (d) => d.accept());
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // Failed loads are reported by URL below (a browser asks for /favicon.ico by itself).
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`); });
  page.on("response", (r) => {
    const what = `HTTP ${r.status()} ${r.request().method()} ${r.url()}`;
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico") && !expected.some((e) => e.test(what))) problems.push(what);
  });
  await steps[args.step](page, context);
  result.problems = problems;
} catch (e) {
  result.error = `${e.stack || e}`;
  result.problems = problems;
  if (page) await page.screenshot({ path: `${shots}/failed-${args.step}.png`, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
