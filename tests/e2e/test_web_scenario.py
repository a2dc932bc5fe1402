"""The admin web UI end to end, in a real headless Chromium (Debian `chromium`, npm
`playwright-core`) against the real `toolgate serve`, with a real MCP client (PyPI `mcp`):

1. log in with an admin token; the browser lands on the overview;
2. on the Policies page, build with the form controls a policy that limits `ssh_session_start`
   to 2 calls a minute per grant and holds every `create_charge` for a human; save it: the file
   on disk holds exactly that (and everything the form does not model), a backup is kept next
   to it, and the gateway uses it at once;
3. the JSON and the rows follow each other both ways, an invalid edit shows exactly what
   `toolgate check` prints, "try a call" shows the decision; every control is labelled and the
   page reads at 1280 px and at 420 px;
4. the client makes 3 calls: the live feed shows 2 allowed and 1 limited;
5. the client's `create_charge` waits in the approvals queue; the browser approves it and the
   call completes with the upstream's answer.

The browser side is tests/ui/scenario.mjs, one step per run (the session cookie is kept in
between). Screenshots of every page go to tests/artifacts/ui/scenario/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import NODE_BIN, ROOT, TOOLGATE, free_port, require, sha256_hex, wait_for_port
from test_policy import (
    CallLog,
    assert_denied,
    assert_passed,
    connect,
    limit_message_re,
    policy_server,
    policy_version,
    sleep_past_boundary,
)

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "tg_admin_token_scenario"
SCRIPT = ROOT / "tests" / "ui" / "scenario.mjs"
SHOTS = ROOT / "tests" / "artifacts" / "ui" / "scenario"
CHROMIUM = Path("/usr/bin/chromium")
# The policy alice starts with: the fixture's tools allowed without limits, plus what the form
# does not model (a description, `all_tools`, a pattern entry), which must survive the builder.
START = {
    "version": "1",
    "default": "deny",
    "description": "Scenario: the fixture's tools, no limits yet",
    "all_tools": {"limits": [{"counter": "all-calls-minute", "window": "minute", "max": 1000, "scope": "grant"}]},
    "tools": {
        "ssh_session_start": {},
        "create_charge": {},
        "list_files": {},
        "delete_*": {"action": "deny", "on_deny": "Nothing is deleted through this gateway."},
    },
}
LIMIT = {"counter": "ssh_session_start_rate", "window": "minute", "max": 2, "scope": "grant"}
SESSION_ARGS = {"credentialName": "web-1"}
# Every page, at 1280 px unless named narrow.
PAGES = ["login", "overview", "tools", "policies", "policies-narrow", "grants", "audit", "approvals"]


def scenario_gateway(gateway_factory, tmp_path):
    port = free_port()
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(
        policy_server("ssh", log),
        policy=START,
        listen_extra=f'admin = "127.0.0.1:{port}"',
        extra=f'\n[admin.tokens.ops]\ntoken_sha256 = "{sha256_hex(ADMIN_TOKEN)}"\nrole = "admin"\n',
    )
    wait_for_port(port, gw.proc)
    return gw, f"http://127.0.0.1:{port}", log


class Browser:
    """Runs the steps of tests/ui/scenario.mjs against one gateway, sharing the login."""

    def __init__(self, base: str, state: Path) -> None:
        require(CHROMIUM, "install the Debian package chromium (bash scripts/setup-test-deps.sh)")
        require(ROOT / "node_modules" / "playwright-core", "run `bash scripts/setup-test-deps.sh` first")
        self.base = base
        self.state = state
        self.node = str(NODE_BIN / "node") if (NODE_BIN / "node").exists() else "node"

    def step(self, step: str, **options: str) -> dict:
        how = [x for k, v in options.items() for x in (f"--{k}", str(v))]
        done = subprocess.run(
            [self.node, str(SCRIPT), "--step", step, "--base", self.base, "--shots", str(SHOTS),
             "--state", str(self.state), *how],
            capture_output=True, text=True, timeout=120,
        )
        lines = done.stdout.strip().splitlines()
        shown = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        (SHOTS / f"step-{step}.json").write_text(json.dumps(shown, indent=2))
        assert done.returncode == 0 and "error" not in shown, (
            f"browser step {step} failed:\n{shown.get('error') or done.stdout}\n{done.stderr[-3000:]}"
            f"\nproblems: {shown.get('problems')}"
        )
        assert shown["problems"] == [], f"the page logged errors in step {step}: {shown['problems']}"
        return shown

    async def run(self, step: str, **options: str) -> dict:
        return await anyio.to_thread.run_sync(lambda: self.step(step, **options))


def check_cli(path: Path, text: str) -> list[str]:
    """What `toolgate check FILE` prints about `text`, without the file name before each line."""
    path.write_text(text)
    done = subprocess.run([str(TOOLGATE), "check", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0, done.stdout
    prefix = f"{path}:"
    lines = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert lines[-1].endswith("the policy was not accepted"), done.stderr
    return [line[len(prefix):] for line in lines[:-1]]


@pytest.mark.timeout(400)
async def test_a_policy_built_in_the_browser_limits_live_calls_and_holds_one_for_approval(gateway_factory, tmp_path):
    gw, base, log = scenario_gateway(gateway_factory, tmp_path)
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    browser = Browser(base, tmp_path / "browser-state.json")
    policy_file = gw.config.parent / "policy-alice.json"
    bob_file = gw.config.parent / "policy-bob.json"
    original, bob_original = policy_file.read_text(), bob_file.read_text()

    # 1. Log in with the admin token: the overview.
    login = await browser.run("login", token=ADMIN_TOKEN)
    assert login["landed"] == "/overview"
    assert login["who"] == "ops (admin)", login["who"]

    # 2. Build the policy with the form, and save it.
    built = await browser.run("build", grant="alice")
    assert built["modes_before"]["ssh_session_start"] == "allow"
    assert built["modes_before"]["create_charge"] == "allow"
    assert built["modes_before"]["ssh_exec"] == "hide"  # not listed under `default: deny`
    assert built["modes_before"]["delete_account"] == "deny"  # set by the pattern `delete_*`
    assert built["modes_after"]["ssh_session_start"] == "custom"
    assert built["modes_after"]["create_charge"] == "approve"
    assert built["check"].startswith("Valid"), built["check"]
    assert built["status"].startswith(f"Saved {policy_file}"), built["status"]
    assert built["dirty"] == ""
    saved_text = policy_file.read_text()
    assert saved_text == built["saved_text"]
    saved = json.loads(saved_text)
    assert saved["tools"]["ssh_session_start"] == {"limits": [LIMIT]}
    assert saved["tools"]["create_charge"] == {"action": "approve", "approval": {"timeout": "60s"}}
    # What the form does not model is kept as it was.
    for key in ["version", "default", "description", "all_tools"]:
        assert saved[key] == START[key], key
    assert saved["tools"]["delete_*"] == START["tools"]["delete_*"]
    assert saved["tools"]["list_files"] == {}
    # A backup of the previous file sits next to it; bob's file is untouched.
    backup = policy_file.with_name(policy_file.name + ".bak")
    assert backup.read_text() == original
    assert bob_file.read_text() == bob_original
    assert f"the previous file is kept as {backup}" in built["status"]
    # The gateway uses it at once (the calls below prove it; the API says so too).
    listing = httpx.get(f"{base}/api/policies", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    [entry] = [f for f in listing["files"] if f["path"] == str(policy_file)]
    assert entry["version"] == policy_version(saved_text) and entry["grants"] == ["alice"]
    check = subprocess.run([str(TOOLGATE), "check", str(policy_file)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr

    # 3. The JSON and the rows, validation, "try a call", labels and layout; nothing saved.
    shown = await browser.run("json", grant="alice", other="bob", file=str(policy_file))
    assert shown["saved_text"] == saved_text
    assert shown["json_to_row"] == {"mode": "deny", "checked": True, "message": "No shell for this agent."}
    rows = shown["row_to_json"]
    assert "list_files" in rows["hide"] and rows["list_files_entry"] is None
    assert rows["crash_upstream"] == {"action": "deny"}
    assert rows["focused"] == "crash_upstream:deny"  # the arrow key moved within the row
    assert rows["kept"] == {
        "description": START["description"],
        "all_tools": START["all_tools"],
        "pattern": START["tools"]["delete_*"],
        "ssh_exec": {"action": "deny", "on_deny": "No shell for this agent."},
    }
    assert shown["check_after_edits"].startswith("Valid")
    assert shown["other_grant_url"] == "?grant=bob"
    assert shown["draft_back"] == {"equal": True, "status": "Your unsaved draft for alice is back."}, shown["draft_back"]
    # The command rule, built with the form, written as `toolgate check` wants it.
    assert shown["command_rule"] == {
        "on_deny": "No shell for this agent.",
        "approve_unless": [{"path": "args.command", "op": "command",
                            "value": {"allow_programs": ["ls", "cat", "grep"], "deny_programs": ["rm"], "deny": ["substitution"]}}],
        "approval": {"timeout": "5m"},
        "deny_if": [{"path": "args.timeout", "op": "gt", "value": 120000}],
    }, shown["command_rule"]
    assert shown["check_command"].startswith("Valid")
    draft = shown["draft_tries"]
    assert draft["ls"]["decision"] == "allowed", draft
    assert draft["rm"]["decision"] == "approval_required", draft
    assert draft["sub"]["decision"] == "approval_required", draft
    assert "/tools/ssh_exec/approve_unless/0" in draft["rm"]["text"], draft["rm"]["text"]
    # An invalid edit shows exactly what `toolgate check` prints, and marks the row and control.
    invalid = shown["invalid"]
    expected = check_cli(tmp_path / "draft.json", invalid["text"])
    assert invalid["shown"] == expected, (invalid["shown"], expected)
    assert any("/tools/ssh_session_start/limits/0/max: `max` must be a non-negative integer" in t for t in expected), expected
    assert any("unknown field `limts`" in t and "did you mean `limits`?" in t for t in expected), expected
    assert any("`max` must be a non-negative integer" in e for e in invalid["row_errors"]), invalid["row_errors"]
    assert invalid["max_invalid"] == "true" and invalid["row_marked"]
    broken = shown["broken"]
    assert broken["shown"] == check_cli(tmp_path / "broken.json", broken["text"])
    assert broken["shown"][0].split(": ", 2)[1] == "(document)" and "not valid JSON" in broken["shown"][0]
    assert "does not parse" in broken["error"]
    assert broken["rows_kept"] == broken["rows_before"] > 0 and broken["form_disabled"]
    assert shown["reloaded_equal"] and shown["form_enabled_again"]
    # A file changed since it was loaded is not overwritten: the page says to reload.
    conflict = shown["conflict"]
    assert conflict["status"].startswith("Not saved: ") and "Reload from disk" in conflict["status"], conflict
    assert conflict["file_untouched"] and conflict["dirty"] == "Unsaved changes"
    assert shown["after_conflict_equal"]
    # Try a call: the saved policy's decisions, with the counter about to be used.
    tries = shown["tries"]
    assert tries["ssh_session_start"]["decision"] == "allowed", tries
    assert "ssh_session_start_rate" in tries["ssh_session_start"]["text"]
    assert "0 of 2 used this minute (per grant)" in tries["ssh_session_start"]["text"], tries["ssh_session_start"]["text"]
    assert tries["create_charge"]["decision"] == "approval_required", tries
    assert "/tools/create_charge/action" in tries["create_charge"]["text"]
    assert tries["delete_account"]["decision"] == "denied", tries
    assert "Nothing is deleted through this gateway." in tries["delete_account"]["text"]
    # Usable: labels, and no sideways scrolling; on a narrow screen the JSON is under the rows.
    assert shown["unlabelled"] == []
    assert shown["overflow_wide"] <= 0 and shown["overflow_narrow"] <= 0, shown
    assert shown["stacked"]
    assert policy_file.read_text() == saved_text  # the edits above were never saved
    assert not log.entries()  # nor did trying a call reach the upstream

    # 4. A real MCP client: 2 session starts pass, the third is limited, all in one minute.
    await sleep_past_boundary(60, 20)
    async with connect(gw) as alice:
        results = [await alice.call_tool("ssh_session_start", SESSION_ARGS) for _ in range(3)]
    assert_passed(results[0], "ssh", "ssh_session_start", SESSION_ARGS)
    assert_passed(results[1], "ssh", "ssh_session_start", SESSION_ARGS)
    message = assert_denied(results[2], "limited", "/tools/ssh_session_start/limits/0", policy_version(saved_text))
    assert limit_message_re("ssh_session_start_rate", 2, "minute", "grant").fullmatch(message), message
    assert len(log.entries("ssh_session_start")) == 2
    feed = await browser.run("audit", tool="ssh_session_start", allowed="2", limited="1")
    assert feed["feed"] == {"allowed": 2, "limited": 1}, feed
    assert all("ssh_session_start" in r for r in feed["rows_text"])

    # 5. create_charge waits for a human; the browser approves it; the call completes.
    results: list = []

    async def charge() -> None:
        async with connect(gw) as client:
            results.append(await client.call_tool("create_charge", {"amount": 42}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(charge)
        with anyio.fail_after(15):
            while not httpx.get(f"{base}/api/approvals", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["approvals"]:
                await anyio.sleep(0.1)
        assert not log.entries("create_charge")  # held: the upstream has not seen it
        approved = await browser.run("approve", tool="create_charge")
    assert "create_charge" in approved["row"] and "alice" in approved["row"], approved["row"]
    assert approved["status"].startswith("Approved "), approved["status"]
    assert_passed(results[0], "ssh", "create_charge", {"amount": 42})

    # Screenshots of every page were kept.
    for name in PAGES:
        shot = SHOTS / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 5000, f"no screenshot {shot}"
