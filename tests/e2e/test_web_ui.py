"""The admin web UI on `[listen] admin`: login (admin token, or the one-time link printed at
start) sets an HttpOnly, Secure, SameSite=Strict session cookie; changes need the session's
CSRF token; the approvals page answers a call held for a human. Driven in a real headless
Chromium (Debian `chromium`, npm `playwright-core`) against the real `toolgate serve`, with a
real `mcp` client making the held call. Screenshots go to tests/artifacts/ui/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import NODE_BIN, ROOT, TOKEN, Gateway, free_port, require, sha256_hex, wait_for_port
from test_policy import CallLog, assert_denied, assert_passed, connect, policy_server, running

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "tg_admin_token_web"
VIEWER_TOKEN = "tg_admin_token_web_viewer"
SCRIPT = ROOT / "tests" / "ui" / "approvals.mjs"
SHOTS = ROOT / "tests" / "artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
HOLD = {
    "version": "1",
    "default": "deny",
    "tools": {"create_charge": {"action": "approve", "approval": {"timeout": "60s"}}, "list_files": {},
              "delete_account": {"action": "deny"}},
}


def ui_gateway(gateway_factory, tmp_path):
    port = free_port()
    gw = gateway_factory(
        policy_server("ssh", CallLog(tmp_path / "calls.jsonl")),
        policy=HOLD,
        listen_extra=f'admin = "127.0.0.1:{port}"',
        extra=(
            f'\n[admin.tokens.ops]\ntoken_sha256 = "{sha256_hex(ADMIN_TOKEN)}"\nrole = "admin"\n'
            f'[admin.tokens.watcher]\ntoken_sha256 = "{sha256_hex(VIEWER_TOKEN)}"\nrole = "viewer"\n'
        ),
    )
    wait_for_port(port, gw.proc)
    return gw, f"http://127.0.0.1:{port}"


def one_time_code(gw) -> str:
    [code] = re.findall(r"/login\?once=([0-9a-f]{64})", gw.log())
    return code


def browser(base: str, tool: str, shots: str, *how: str) -> dict:
    require(CHROMIUM, "install the Debian package chromium (bash scripts/setup-test-deps.sh)")
    require(ROOT / "node_modules" / "playwright-core", "run `bash scripts/setup-test-deps.sh` first")
    out_dir = SHOTS / shots
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    node = NODE_BIN / "node" if (NODE_BIN / "node").exists() else "node"
    done = subprocess.run(
        [str(node), str(SCRIPT), "--base", base, "--tool", tool, "--shots", str(out_dir), *how],
        capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, f"browser script failed:\n{done.stdout}\n{done.stderr}"
    for name in ["approvals.png", "approvals-decided.png", "approvals-narrow.png"]:
        assert (out_dir / name).stat().st_size > 1000, f"no screenshot {name}"
    return json.loads(done.stdout.strip().splitlines()[-1])


async def held_call(gw, results: list, args: dict) -> None:
    async with connect(gw) as alice:
        results.append(await alice.call_tool("create_charge", args))


async def wait_pending(base: str) -> None:
    with anyio.fail_after(10):
        while not httpx.get(f"{base}/api/approvals", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["approvals"]:
            await anyio.sleep(0.1)


async def test_the_one_time_link_logs_in_and_the_approvals_page_releases_the_held_call(gateway_factory, tmp_path):
    gw, base = ui_gateway(gateway_factory, tmp_path)
    results: list = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(held_call, gw, results, {"amount": 42})
        await wait_pending(base)
        shown = await anyio.to_thread.run_sync(
            lambda: browser(base, "create_charge", "one-time-link", "--once", one_time_code(gw), "--approve")
        )
    assert shown["who"] == "one-time-link (admin)"
    assert "ssh/create_charge" in shown["row"] and "alice" in shown["row"] and '"amount":42' in shown["row"]
    assert shown["status"].startswith("Approved ")
    assert shown["logged_out"]
    assert_passed(results[0], "ssh", "create_charge", {"amount": 42})
    # The link works once.
    again = httpx.get(f"{base}/login?once={one_time_code(gw)}", follow_redirects=False)
    assert again.status_code == 401 and "used already" in again.text


async def test_a_token_login_denies_with_a_reason_the_agent_reads(gateway_factory, tmp_path):
    gw, base = ui_gateway(gateway_factory, tmp_path)
    results: list = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(held_call, gw, results, {"amount": 7})
        await wait_pending(base)
        shown = await anyio.to_thread.run_sync(
            lambda: browser(base, "create_charge", "token-login", "--token", ADMIN_TOKEN, "--deny", "over budget")
        )
    assert shown["who"] == "ops (admin)"
    assert shown["status"].startswith("Denied ")
    assert assert_denied(results[0], "approval_denied", "/tools/create_charge/action") == "a human denied this call: over budget"
    assert (SHOTS / "token-login" / "login.png").exists()


def test_the_session_cookie_is_strict_and_changes_need_its_csrf_token(gateway_factory, tmp_path):
    gw, base = ui_gateway(gateway_factory, tmp_path)
    with httpx.Client(base_url=base) as web:
        assert web.get("/approvals", follow_redirects=False).headers["location"] == "/login"
        bad = web.post("/login", data={"token": "tg_wrong"})
        assert bad.status_code == 401 and "Unknown admin token" in bad.text
        # Another site's form cannot log a browser in (Origin is checked).
        foreign = web.post("/login", data={"token": ADMIN_TOKEN}, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        ok = web.post("/login", data={"token": VIEWER_TOKEN}, follow_redirects=False)
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"]
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"]:
            assert attribute in cookie, cookie
        value = re.match(r"tg_admin=([0-9a-f]{64});", cookie).group(1)
        jar = {"Cookie": f"tg_admin={value}"}
        page = httpx.get(f"{base}/approvals", headers=jar)
        assert page.status_code == 200 and "watcher (viewer)" in page.text
        assert page.headers["x-frame-options"] == "DENY"
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', page.text).group(1)
        assert httpx.get(f"{base}/api/approvals", headers=jar).status_code == 200
        # A change without the CSRF token is refused before anything else; with it, the role decides.
        no_csrf = httpx.post(f"{base}/api/approvals/abc/approve", headers=jar, json={})
        assert no_csrf.status_code == 403 and "X-CSRF-Token" in no_csrf.json()["error"]
        viewer = httpx.post(f"{base}/api/approvals/abc/approve", headers={**jar, "X-CSRF-Token": csrf}, json={})
        assert viewer.status_code == 403 and "admin role" in viewer.json()["error"]
        # Logging out needs the token too, and ends the session.
        assert httpx.post(f"{base}/logout", headers=jar, data={"csrf": "0" * 64}).status_code == 403
        out = httpx.post(f"{base}/logout", headers=jar, data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        assert httpx.get(f"{base}/api/approvals", headers=jar).status_code == 401


async def test_the_grants_page_creates_a_working_grant_and_the_audit_page_filters_and_explains(gateway_factory, tmp_path):
    gw, base = ui_gateway(gateway_factory, tmp_path)
    async with connect(gw) as alice:
        # Something to find: a denial among allowed calls.
        assert_passed(await alice.call_tool("list_files", {"path": "/"}), "ssh", "list_files", {"path": "/"})
        assert_denied(await alice.call_tool("delete_account", {"id": "7"}), "denied", "/tools/delete_account/action")
    require(CHROMIUM, "install the Debian package chromium (bash scripts/setup-test-deps.sh)")
    out_dir = SHOTS / "pages"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    node = NODE_BIN / "node" if (NODE_BIN / "node").exists() else "node"
    done = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [str(node), str(ROOT / "tests" / "ui" / "pages.mjs"), "--base", base, "--once", one_time_code(gw),
         "--grant", "carol", "--tool", "delete_account", "--shots", str(out_dir)],
        capture_output=True, text=True, timeout=90,
    ))
    assert done.returncode == 0, f"browser script failed:\n{done.stdout}\n{done.stderr}"
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["errors"] == []
    # The token, shown once, works at once; the page never shows it again.
    assert re.fullmatch(r"tg_[0-9a-f]{64}", shown["token"]), shown
    assert shown["status"] == "Created carol." and shown["token_hidden"]
    assert "carol" in shown["row"] and "stored" in shown["row"] and shown["token"] not in shown["row"]
    probe = httpx.post(gw.url, headers={"Authorization": f"Bearer {shown['token']}", "Accept": "application/json, text/event-stream"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                           "protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "probe", "version": "0"}}})
    assert probe.status_code == 200, probe.text
    # The filter shows denials only; the detail view has the rule pointer, argument keys and digest.
    assert set(shown["decisions"]) == {"denied"}, shown["decisions"]
    for field in ["Rule pointer", "/tools/delete_account/action", "Argument keys", "Argument digest (SHA-256)", "Latency", "delete_account"]:
        assert field in shown["detail"], (field, shown["detail"])
    assert '"7"' not in shown["detail"], "argument values are not audited by default"
    for name in ["grants-created.png", "audit-detail.png"]:
        assert (out_dir / name).stat().st_size > 1000


def test_a_web_ui_login_survives_a_restart_of_the_gateway(tmp_path):
    home = tmp_path / "gw"
    home.mkdir()
    jar: dict[str, str] = {}
    for run in range(2):
        port = free_port()
        gw = Gateway(
            home,
            policy_server("ssh", CallLog(tmp_path / "calls.jsonl")),
            policy=HOLD,
            listen_extra=f'admin = "127.0.0.1:{port}"',
            extra=f'\n[admin.tokens.watcher]\ntoken_sha256 = "{sha256_hex(VIEWER_TOKEN)}"\nrole = "viewer"\n',
        )
        with running(gw):
            wait_for_port(port, gw.proc)
            base = f"http://127.0.0.1:{port}"
            if run == 0:
                ok = httpx.post(f"{base}/login", data={"token": VIEWER_TOKEN}, follow_redirects=False)
                assert ok.status_code == 303, ok.text
                value = re.match(r"tg_admin=([0-9a-f]{64});", ok.headers["set-cookie"]).group(1)
                jar = {"Cookie": f"tg_admin={value}"}
            # The session is in state.db: the restarted gateway knows it.
            page = httpx.get(f"{base}/approvals", headers=jar, follow_redirects=False)
            assert page.status_code == 200 and "watcher (viewer)" in page.text, (run, page.status_code)
