"""Grants kept in the state store (`toolgate grant create|rotate|attach|revoke|list`): a
running gateway accepts, rotates and drops them within its `policy_reload_interval`, without
a restart, and the audit log records every change. Real `toolgate serve`, the real CLI, PyPI
`mcp` clients, the policy fixture upstream."""

from __future__ import annotations

import json
import re
import subprocess
import time

import httpx
import pytest

from conftest import TOOLGATE
from test_policy import CallLog, assert_passed, connect, policy_server, tool_names

pytestmark = pytest.mark.anyio

FAST_RELOAD = 'policy_reload_interval = "100ms"'
FILES_ONLY = {"version": "1", "default": "deny", "tools": {"list_files": {}}}
NOTHING = {"version": "1", "default": "deny"}


def grant(gw, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TOOLGATE), "grant", *args, "--config", str(gw.config)], capture_output=True, text=True, timeout=30
    )


def token_of(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out
    [token] = re.findall(r"^\s+(tg_[0-9a-f]{64})$", out.stdout, re.M)
    return token


def status_with(gw, token: str) -> int:
    """The HTTP status of an `initialize` with this token."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    r = httpx.post(gw.url, json=body, headers={**gw.headers(token)})
    return r.status_code


def wait_status(gw, token: str, want: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (got := status_with(gw, token)) != want:
        assert time.monotonic() < deadline, f"token still answered {got}, not {want}, after {timeout} s"
        time.sleep(0.05)


async def test_a_stored_grant_is_created_rotated_reattached_and_revoked_while_the_gateway_runs(
    gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), state=FAST_RELOAD)
    files_only = tmp_path / "files-only.json"
    files_only.write_text(json.dumps(FILES_ONLY))
    nothing = tmp_path / "nothing.json"
    nothing.write_text(json.dumps(NOTHING))

    token = token_of(grant(gw, "create", "carol", "--policy", str(files_only)))
    wait_status(gw, token, 200)
    async with connect(gw, token) as carol:
        assert await tool_names(carol) == ["list_files"]
        assert_passed(await carol.call_tool("list_files", {"path": "/c"}), "ssh", "list_files", {"path": "/c"})

    # Rotation: the old token stops working, the new one works.
    new = token_of(grant(gw, "rotate", "carol"))
    assert new != token
    wait_status(gw, token, 401)
    wait_status(gw, new, 200)

    # Another policy: the grant may now do nothing.
    out = grant(gw, "attach", "carol", "--policy", str(nothing))
    assert out.returncode == 0, out
    deadline = time.monotonic() + 5
    while True:
        # A session opened just before the gateway applied the change is ended by it (a
        # re-attached grant's sessions end): the client sees 404 and opens another.
        try:
            async with connect(gw, new) as carol:
                if await tool_names(carol) == []:
                    break
        except Exception as e:  # the SDK raises an ExceptionGroup around MCPError
            if "Session not found" not in repr(e):
                raise
        assert time.monotonic() < deadline, "the new policy was not applied"

    # Revocation: the token is refused.
    out = grant(gw, "revoke", "carol")
    assert out.returncode == 0 and "revoked" in out.stdout, out
    wait_status(gw, new, 401)
    assert [e["args"] for e in log.entries("list_files")] == [{"path": "/c"}]

    # Every change is in the audit log, by the operator, never with a token.
    audit = subprocess.run([str(TOOLGATE), "audit", "--json", "--config", str(gw.config)],
                           capture_output=True, text=True, timeout=30)
    records = [json.loads(line) for line in audit.stdout.splitlines()]
    changes = [(r["decision"], r["detail"]["grant"]) for r in records if r["kind"] == "admin" and r["decision"].startswith("grant_")]
    assert changes == [("grant_created", "carol"), ("grant_rotated", "carol"),
                       ("grant_policy_attached", "carol"), ("grant_revoked", "carol")]
    assert token not in audit.stdout and new not in audit.stdout
    assert all(r["grant"].startswith("cli:") for r in records if r["decision"].startswith("grant_"))


async def test_an_open_session_ends_when_its_grant_is_revoked(gateway_factory, tmp_path):
    gw = gateway_factory(policy_server("ssh", CallLog(tmp_path / "calls.jsonl")), state=FAST_RELOAD)
    files_only = tmp_path / "files-only.json"
    files_only.write_text(json.dumps(FILES_ONLY))
    token = token_of(grant(gw, "create", "dave", "--policy", str(files_only)))
    wait_status(gw, token, 200)
    headers = gw.headers(token)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    r = httpx.post(gw.url, json=init, headers=headers)
    session = r.headers["mcp-session-id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    in_session = {**headers, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    assert httpx.post(gw.url, json=call, headers=in_session).status_code == 200
    assert grant(gw, "revoke", "dave").returncode == 0
    wait_status(gw, token, 401)
    assert httpx.post(gw.url, json=call, headers=in_session).status_code == 401


def test_grant_commands_refuse_what_they_cannot_do_and_list_never_shows_tokens(gateway_factory, tmp_path):
    gw = gateway_factory(policy_server("ssh", CallLog(tmp_path / "calls.jsonl")))
    taken = grant(gw, "create", "alice")
    assert taken.returncode == 1 and "is a grant of the configuration file" in taken.stderr, taken
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": "1", "default": "sometimes"}')
    bad = grant(gw, "create", "erin", "--policy", str(broken))
    assert bad.returncode == 2 and "invalid policy" in bad.stderr and "/default" in bad.stderr, bad
    assert grant(gw, "rotate", "nobody").returncode == 1
    assert grant(gw, "revoke", "nobody").returncode == 1
    token = token_of(grant(gw, "create", "erin"))
    assert grant(gw, "create", "erin").returncode == 1
    listed = grant(gw, "list", "--json")
    assert listed.returncode == 0, listed
    rows = {g["name"]: g for g in json.loads(listed.stdout)["grants"]}
    assert rows["alice"]["source"] == "config" and rows["erin"]["source"] == "store"
    assert rows["erin"]["policy"] is None
    assert token not in listed.stdout and "sha256" not in listed.stdout
