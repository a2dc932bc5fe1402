"""The audit log, end to end: real PyPI `mcp` clients call tools through `toolgate serve`
(upstreams from `tests/fixtures/policy_server.py`), and `toolgate audit` reads what was
recorded in the state directory's SQLite file.

What an operator sees is asserted: one record per `tools/call` with its decision, grant,
server, tool, rule, policy version, argument names and digest (never the values unless the
policy asks for them), the filters and both output formats of `toolgate audit`, `--follow`,
strict durability, policy reloads and approvals.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import subprocess
import threading
import time

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from conftest import OTHER_TOKEN, PYTHON, TOKEN, TOOLGATE, Gateway, RawMcp, grant_tables, toml_list, toml_str, wait_until
from test_policy import (
    APPROVE,
    APPROVER,
    CallLog,
    assert_denied,
    assert_passed,
    connect,
    policy_server,
    version_of,
    write_locked,
    write_policy,
)

pytestmark = pytest.mark.anyio

HEX64 = re.compile(r"[0-9a-f]{64}")
VERSION = re.compile(r"sha256:[0-9a-f]{16}")
SECRET = "/secret/value-xyz-4f1c9e"


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def audit(gw: Gateway, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `toolgate audit --config <gw's config> ARGS` (bounded)."""
    proc = subprocess.run(
        [str(TOOLGATE), "audit", "--config", str(gw.config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert proc.returncode == 0, f"toolgate audit {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc


def records(gw: Gateway, *args: str) -> list[dict]:
    """The records `toolgate audit --json ARGS` prints (one JSON object a line)."""
    out = audit(gw, "--json", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_records(gw: Gateway, count: int, *args: str, timeout: float = 10) -> list[dict]:
    """Waits until the batching writer has committed (at least) `count` matching records."""
    return wait_until(
        lambda: (found := records(gw, *args)) and len(found) >= count and found,
        timeout=timeout,
        what=f"{count} audit records ({' '.join(args)})",
    )


async def async_records(gw: Gateway, *args: str) -> list[dict]:
    """`records`, without blocking the client's event loop."""
    return await anyio.to_thread.run_sync(lambda: records(gw, *args))


def state_bytes(gw: Gateway) -> bytes:
    """Everything in the state directory (the database and its WAL/journal files)."""
    state = gw.config.parent / "state"
    return b"".join(p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file())


def check_call_record(r: dict, decision: str, tool: str, server: str | None = "ssh", grant: str = "alice") -> None:
    """What every call record carries."""
    assert r["kind"] == "call", r
    assert r["decision"] == decision, r
    assert r["grant"] == grant, r
    assert r["method"] == "tools/call", r
    assert r["tool"] == tool, r
    if server is None:
        assert "server" not in r, r
    else:
        assert r["server"] == server, r
    assert isinstance(r["id"], int) and r["id"] > 0, r
    assert abs(r["at_ms"] / 1000 - time.time()) < 300, r
    assert r.get("session"), r
    assert "request_id" in r, r
    assert isinstance(r["latency_us"], int) and r["latency_us"] > 0, r
    assert HEX64.fullmatch(r["args_sha256"]), r
    assert "args" not in r, f"argument values recorded without `audit.values`: {r}"
    assert "detail" not in r, r


# ---------------------------------------------------------------------------------------
# 1. Every call gets one record; filters and output formats of `toolgate audit`
# ---------------------------------------------------------------------------------------
MIXED = {
    "version": "1",
    "default": "deny",
    "tools": {
        "list_files": {},
        "delete_account": {"action": "deny", "on_deny": "accounts are deleted by support"},
        "create_charge": {"limits": [{"counter": "charges", "window": "1m", "sliding": True, "max": 1}]},
        "fail_protocol": {},
    },
}


async def test_every_call_gets_one_record_with_its_decision_and_no_argument_values(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=MIXED)
    v = version_of(gw)
    secret_args = {"path": SECRET}
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("list_files", secret_args), "ssh", "list_files", secret_args)
        assert_denied(await alice.call_tool("delete_account", {"id": "acct-7"}), "denied", "/tools/delete_account/action", v)
        with pytest.raises(MCPError) as unknown:
            await alice.call_tool("no_such_tool", {"path": SECRET})
        assert unknown.value.error.message == "Unknown tool: no_such_tool"
        # A tool the upstream has but the policy does not list: hidden as well.
        with pytest.raises(MCPError) as hidden:
            await alice.call_tool("ssh_exec", {"credentialName": "prod", "command": "id"})
        assert hidden.value.error.message == "Unknown tool: ssh_exec"
        charge = {"amount": 5, "reason": "coffee"}
        assert_passed(await alice.call_tool("create_charge", charge), "ssh", "create_charge", charge)
        assert_denied(await alice.call_tool("create_charge", charge), "limited", "/tools/create_charge/limits/0", v)
        with pytest.raises(MCPError) as failed:
            await alice.call_tool("fail_protocol", {"note": "boom"})
        assert failed.value.error.message == "fail_protocol on ssh: protocol error on purpose"
        # The identical list_files call again: the same digest.
        assert_passed(await alice.call_tool("list_files", secret_args), "ssh", "list_files", secret_args)
        assert_passed(await alice.call_tool("list_files", {"path": "/other"}), "ssh", "list_files", {"path": "/other"})

    expected = [
        ("allowed", "list_files", "ssh"),
        ("denied", "delete_account", "ssh"),
        # With one upstream every name routes to it: an unknown tool is recorded on it.
        ("hidden", "no_such_tool", "ssh"),
        ("hidden", "ssh_exec", "ssh"),
        ("allowed", "create_charge", "ssh"),
        ("limited", "create_charge", "ssh"),
        ("upstream_error", "fail_protocol", "ssh"),
        ("allowed", "list_files", "ssh"),
        ("allowed", "list_files", "ssh"),
    ]
    # Batched: the writer commits shortly after; wait for it, then nothing more may come.
    found = wait_records(gw, len(expected))
    time.sleep(0.5)
    found = records(gw)
    assert [(r["decision"], r["tool"], r.get("server")) for r in found] == expected, json.dumps(found, indent=1)
    assert [r["id"] for r in found] == sorted(r["id"] for r in found)
    assert len({r["id"] for r in found}) == len(found)
    for r, (decision, tool, server) in zip(found, expected):
        check_call_record(r, decision, tool, server)
        assert r["policy_version"] == v, r
    allowed, denied, unknown_r, hidden_r, charged, limited, upstream, again, other = found

    assert allowed["rule"] == "/tools/list_files", allowed
    assert allowed["upstream_status"] == "result", allowed
    assert allowed.get("is_error") is False, allowed
    assert allowed["arg_keys"] == ["path"], allowed
    assert "message" not in allowed, allowed

    assert denied["rule"] == "/tools/delete_account/action", denied
    assert denied["message"] == "accounts are deleted by support", denied
    assert denied["arg_keys"] == ["id"], denied
    assert "upstream_status" not in denied, denied
    assert denied["is_error"] is True, denied

    assert unknown_r["arg_keys"] == ["path"] and "rule" not in unknown_r, unknown_r
    assert "upstream_status" not in unknown_r, unknown_r
    assert sorted(hidden_r["arg_keys"]) == ["command", "credentialName"], hidden_r
    assert "upstream_status" not in hidden_r, hidden_r

    assert sorted(charged["arg_keys"]) == ["amount", "reason"], charged
    assert charged["upstream_status"] == "result", charged
    assert limited["rule"] == "/tools/create_charge/limits/0", limited
    assert "rate limit `charges` reached" in limited["message"], limited
    assert "upstream_status" not in limited, limited
    assert charged["args_sha256"] == limited["args_sha256"], (charged, limited)

    assert upstream["upstream_status"] == "error -32603", upstream
    assert upstream["rule"] == "/tools/fail_protocol", upstream
    assert upstream["arg_keys"] == ["note"], upstream

    # Identical arguments, identical digests; different arguments, different digests.
    assert again["args_sha256"] == allowed["args_sha256"]
    assert other["args_sha256"] != allowed["args_sha256"]
    assert len({allowed["args_sha256"], denied["args_sha256"], charged["args_sha256"], upstream["args_sha256"]}) == 4

    # The secret argument value is nowhere: not in the export, not in the text output, not
    # in the state files on disk.
    assert SECRET not in audit(gw, "--json").stdout
    assert SECRET not in audit(gw).stdout
    assert SECRET.encode() not in state_bytes(gw)
    assert b"value-xyz" not in state_bytes(gw)
    assert (gw.config.parent / "state" / "state.db").is_file()

    # Filters.
    only_denied = records(gw, "--decision", "denied")
    assert [(r["decision"], r["tool"]) for r in only_denied] == [("denied", "delete_account")]
    assert records(gw, "--grant", "bob") == []
    assert len(records(gw, "--grant", "alice")) == len(expected)
    files = records(gw, "--tool", "list_files")
    assert [r["id"] for r in files] == [allowed["id"], again["id"], other["id"]]
    assert [r["decision"] for r in records(gw, "--tool", "create_charge")] == ["allowed", "limited"]
    assert [r["decision"] for r in records(gw, "--decision", "hidden")] == ["hidden", "hidden"]
    assert [r["id"] for r in records(gw, "--since", "1h")] == [r["id"] for r in found]
    assert [r["id"] for r in records(gw, "--since", "10m", "--decision", "limited")] == [limited["id"]]
    assert records(gw, "--since", "2099-01-01T00:00:00Z") == []
    assert len(records(gw, "--since", "2000-01-01T00:00:00Z")) == len(expected)
    combined = records(gw, "--grant", "alice", "--tool", "list_files", "--decision", "allowed", "--limit", "2")
    assert [r["id"] for r in combined] == [again["id"], other["id"]], "--limit keeps the newest, oldest first"
    newest = records(gw, "--limit", "3")
    assert [r["id"] for r in newest] == [r["id"] for r in found[-3:]]
    # The JSON export is the same record as stored, whatever filter found it.
    assert only_denied[0] == denied

    # Text output: one line per record, oldest first.
    lines = audit(gw).stdout.splitlines()
    assert len(lines) == len(expected), lines
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    for line, (decision, tool, server) in zip(lines, expected):
        where = f"{server}/{tool}" if server else tool
        assert re.match(rf"{stamp} {re.escape(decision)}\s+grant=alice tool={re.escape(where)} ", line), line
        assert re.search(r" \d+\.\dms( |$)", line), line
    assert "rule=/tools/delete_account/action args=[id]" in lines[1], lines[1]
    assert lines[1].endswith("-- accounts are deleted by support"), lines[1]
    assert "upstream=result" in lines[0] and "args=[path]" in lines[0], lines[0]
    assert "upstream=error -32603" in lines[6], lines[6]
    assert lines[5].split()[1] == "limited" and "rate limit `charges` reached" in lines[5], lines[5]
    text_denied = audit(gw, "--decision", "denied").stdout.splitlines()
    assert len(text_denied) == 1 and " denied " in text_denied[0], text_denied


async def test_the_digest_is_of_the_arguments_exactly_as_sent_and_bad_params_are_recorded(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=MIXED)
    raw = RawMcp(gw.url, TOKEN)
    # RawMcp sends `json.dumps(body)`: the arguments' text is `json.dumps(arguments)`.
    args = {"path": "/tmp/x", "z": [1, 2, {"k": "v"}], "a": None}
    answer = raw.request("tools/call", {"name": "list_files", "arguments": args})[-1]
    assert "result" in answer, answer
    answer = raw.request("tools/call", {"name": "list_files", "arguments": [1, 2]})[-1]
    assert answer["error"]["message"] == "tools/call `arguments` must be an object", answer
    answer = raw.request("tools/call", {"name": "list_files"})[-1]
    assert "result" in answer, answer
    raw.close()

    found = wait_records(gw, 3)
    assert [r["decision"] for r in found] == ["allowed", "invalid", "allowed"], found
    first, invalid, bare = found
    assert first["args_sha256"] == hashlib.sha256(json.dumps(args).encode()).hexdigest(), first
    assert sorted(first["arg_keys"]) == ["a", "path", "z"], first
    assert first["request_id"] == "2", first  # id 1 was `initialize`
    assert invalid["message"] == "tools/call `arguments` must be an object", invalid
    assert invalid["args_sha256"] == hashlib.sha256(b"[1, 2]").hexdigest(), invalid
    assert "arg_keys" not in invalid, invalid
    # No arguments at all: nothing to digest.
    assert "args_sha256" not in bare and "arg_keys" not in bare, bare
    assert bare["upstream_status"] == "result", bare


# ---------------------------------------------------------------------------------------
# 2. `audit.values`: the argument values, with the redacted paths replaced
# ---------------------------------------------------------------------------------------
VALUES = {
    "version": "1",
    "default": "deny",
    "audit": {"values": True, "redact": ["args.password"]},
    "tools": {"ssh_exec": {}, "list_files": {}},
}


async def test_a_policy_with_audit_values_records_the_arguments_with_redacted_paths_replaced(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=VALUES, bob_policy={"version": "1", "default": "deny", "tools": {"list_files": {}}})
    password = "hunter2-do-not-store"
    async with connect(gw) as alice:
        # The fixture's tool does not declare `password`; the gateway still sees and audits it.
        result = await alice.call_tool("ssh_exec", {"credentialName": "prod", "command": "uptime", "password": password})
        assert not result.is_error, result
        assert_passed(await alice.call_tool("list_files", {"path": "/visible"}), "ssh", "list_files", {"path": "/visible"})
    async with connect(gw, token=OTHER_TOKEN) as bob:
        assert_passed(await bob.call_tool("list_files", {"path": "/bob-private"}), "ssh", "list_files", {"path": "/bob-private"})

    found = wait_records(gw, 3)
    exec_r, files_r, bob_r = found
    check = {k: v for k, v in exec_r.items() if k != "args"}
    check_call_record(check, "allowed", "ssh_exec")
    assert exec_r["args"] == {"credentialName": "prod", "command": "uptime", "password": "[REDACTED]"}, exec_r
    assert sorted(exec_r["arg_keys"]) == ["command", "credentialName", "password"], exec_r
    assert files_r["args"] == {"path": "/visible"}, files_r
    # bob's policy does not ask for values: his record has none.
    check_call_record(bob_r, "allowed", "list_files", grant="bob")
    assert password not in audit(gw, "--json").stdout
    assert password.encode() not in state_bytes(gw)
    assert b"/bob-private" not in state_bytes(gw)
    assert b"/visible" in state_bytes(gw) or b"\\/visible" in state_bytes(gw)


# ---------------------------------------------------------------------------------------
# 3. Strict durability: the answer waits for its record
# ---------------------------------------------------------------------------------------
async def test_with_strict_durability_a_calls_record_is_committed_before_its_answer(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=MIXED, extra='\n[audit]\ndurability = "strict"\n')
    v = version_of(gw)
    async with connect(gw) as alice:
        seen_ids: list[int] = []
        calls = [
            ("list_files", {"path": "/a"}, "allowed"),
            ("delete_account", {"id": "1"}, "denied"),
            ("list_files", {"path": "/b"}, "allowed"),
            ("create_charge", {"amount": 1}, "allowed"),
            ("create_charge", {"amount": 2}, "limited"),
            ("list_files", {}, "allowed"),
        ]
        for tool, args, decision in calls:
            result = await alice.call_tool(tool, args)
            # No waiting: the record must already be there.
            last = await async_records(gw, "--limit", "1")
            assert len(last) == 1, last
            r = last[0]
            assert (r["decision"], r["tool"], sorted(r.get("arg_keys", []))) == (decision, tool, sorted(args)), (
                f"after {tool} {args} returned, the newest record is {r}"
            )
            assert r["policy_version"] == v
            assert bool(result.is_error) == (decision != "allowed")
            seen_ids.append(r["id"])
        assert seen_ids == sorted(seen_ids) and len(set(seen_ids)) == len(seen_ids)

        # While another process holds the database's write lock, the record cannot be
        # committed, so the answer waits; it comes once the lock is released.
        db = gw.config.parent / "state" / "state.db"
        done = anyio.Event()
        took: list[float] = []

        async def call_while_locked() -> None:
            started = time.monotonic()
            await alice.call_tool("list_files", {"path": "/locked"})
            took.append(time.monotonic() - started)
            done.set()

        async with anyio.create_task_group() as tg:
            with write_locked(db):
                tg.start_soon(call_while_locked)
                await anyio.sleep(1.5)
                answered_while_locked = done.is_set()
            with anyio.fail_after(30):
                await done.wait()
        assert not answered_while_locked, f"a strict call was answered after {took} s while its record could not be written"
        last = await async_records(gw, "--limit", "1")
        assert last[0]["tool"] == "list_files" and last[0]["decision"] == "allowed", last
    assert log.args("list_files")[-1] == {"path": "/locked"}


async def test_with_batched_durability_a_locked_database_does_not_hold_the_answer(gateway_factory, tmp_path):
    """The contrast: by default the call does not wait for the disk; the record follows."""
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=MIXED)
    db = gw.config.parent / "state" / "state.db"
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("list_files", {}), "ssh", "list_files", {})
        wait_records(gw, 1)
        with write_locked(db):
            started = time.monotonic()
            with anyio.fail_after(10):
                assert_passed(await alice.call_tool("list_files", {"path": "/x"}), "ssh", "list_files", {"path": "/x"})
            assert time.monotonic() - started < 1.0
        found = wait_records(gw, 2)
        assert [r.get("arg_keys") for r in found] == [None, ["path"]], found


# ---------------------------------------------------------------------------------------
# 4. --follow
# ---------------------------------------------------------------------------------------
class Follower:
    """`toolgate audit --follow --json` as a subprocess, its lines read by a thread."""

    def __init__(self, gw: Gateway, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(TOOLGATE), "audit", "--config", str(gw.config), "--follow", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    async def next(self, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return json.loads(self.lines.get_nowait())
            except queue.Empty:
                pass
            assert self.proc.poll() is None, f"--follow exited {self.proc.returncode}: {self.proc.stderr.read()}"
            assert time.monotonic() < deadline, f"--follow printed no record within {timeout} s"
            await anyio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def test_follow_prints_new_records_as_they_are_written(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=MIXED)
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("list_files", {"path": "/before"}), "ssh", "list_files", {"path": "/before"})
        await anyio.to_thread.run_sync(lambda: wait_records(gw, 1))
        follow = Follower(gw)
        denied_only = Follower(gw, "--decision", "denied")
        try:
            # What was there already comes first.
            first = await follow.next()
            assert (first["decision"], first["tool"], first["arg_keys"]) == ("allowed", "list_files", ["path"])
            await anyio.sleep(0.6)
            assert follow.lines.empty() and denied_only.lines.empty()
            # Then each new call, within seconds.
            assert_denied(
                await alice.call_tool("delete_account", {"id": "9"}), "denied", "/tools/delete_account/action", version_of(gw)
            )
            new = await follow.next(timeout=10)
            assert (new["decision"], new["tool"]) == ("denied", "delete_account"), new
            assert new["id"] > first["id"]
            filtered = await denied_only.next(timeout=10)
            assert filtered == new
            assert_passed(await alice.call_tool("list_files", {}), "ssh", "list_files", {})
            third = await follow.next(timeout=10)
            assert (third["decision"], third["tool"]) == ("allowed", "list_files"), third
            await anyio.sleep(0.6)
            assert follow.lines.empty(), "a record was printed twice or an unexpected one appeared"
            assert denied_only.lines.empty(), "the filter of --follow let another decision through"
        finally:
            follow.stop()
            denied_only.stop()


# ---------------------------------------------------------------------------------------
# 5. Policy reloads are admin records
# ---------------------------------------------------------------------------------------
async def test_a_reloaded_policy_is_recorded_as_an_admin_event_with_its_new_version(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    first = {"version": "1", "default": "deny", "tools": {"list_files": {}}}
    gw = gateway_factory(policy_server("ssh", log), policy=first, state='policy_reload_interval = "100ms"')
    v1 = version_of(gw)
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("list_files", {}), "ssh", "list_files", {})
        second = write_policy(gw, {"version": "1", "default": "deny", "tools": {"list_files": {"action": "deny"}}})
        assert second != v1
        reloaded = await anyio.to_thread.run_sync(lambda: wait_records(gw, 1, "--decision", "policy_reloaded"))
        assert len(reloaded) == 1, reloaded
        r = reloaded[0]
        assert r["kind"] == "admin", r
        assert r["policy_version"] == second, r
        assert str(gw.config.parent / "policy-alice.json") in r["message"], r
        for absent in ("tool", "args_sha256", "arg_keys", "latency_us", "method"):
            assert absent not in r, r
        # The next call is decided by (and recorded with) the new version.
        assert_denied(await alice.call_tool("list_files", {}), "denied", "/tools/list_files/action", second)
    found = await anyio.to_thread.run_sync(lambda: wait_records(gw, 3))
    assert [(r["kind"], r["decision"], r["policy_version"]) for r in found] == [
        ("call", "allowed", v1),
        ("admin", "policy_reloaded", second),
        ("call", "denied", second),
    ], found
    # Rewriting the same text is no change: no second record.
    write_policy(gw, {"version": "1", "default": "deny", "tools": {"list_files": {"action": "deny"}}})
    time.sleep(0.6)
    assert len(records(gw, "--decision", "policy_reloaded")) == 1
    lines = audit(gw, "--decision", "policy_reloaded").stdout.splitlines()
    assert len(lines) == 1 and " policy_reloaded " in lines[0], lines


# ---------------------------------------------------------------------------------------
# 6. Approvals: the question and the answer
# ---------------------------------------------------------------------------------------
async def test_approvals_record_the_pending_question_and_the_humans_answer(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    script = tmp_path / "approver.py"
    script.write_text(APPROVER)
    asked = tmp_path / "asked.jsonl"
    gw = gateway_factory(
        policy_server("ssh", log),
        policy=APPROVE,
        bob_policy=None,
        extra=f"\n[approvals]\ncommand = {toml_list([PYTHON, str(script), str(asked)])}\n",
    )
    v = version_of(gw)
    rule = "/tools/create_charge/action"
    lunch = {"amount": 120, "reason": "team lunch"}
    big = {"amount": 9000, "reason": "new laptop"}
    slow = {"amount": 10, "reason": "slow"}
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("create_charge", lunch), "ssh", "create_charge", lunch)
        message = assert_denied(await alice.call_tool("create_charge", big), "approval_denied", rule, v)
        assert message == "a human denied this call: amount too large for self-service: 9000"
        assert_denied(await alice.call_tool("create_charge", slow), "approval_expired", rule, v)
        assert_passed(await alice.call_tool("list_files", {}), "ssh", "list_files", {})

    found = wait_records(gw, 7)
    assert [(r["decision"], r["tool"]) for r in found] == [
        ("approval_pending", "create_charge"),
        ("approval_granted", "create_charge"),
        ("approval_pending", "create_charge"),
        ("approval_denied", "create_charge"),
        ("approval_pending", "create_charge"),
        ("approval_expired", "create_charge"),
        ("allowed", "list_files"),
    ], json.dumps(found, indent=1)
    pending1, granted, pending2, refused, pending3, expired, files = found
    for r in (pending1, granted, pending2, refused, pending3, expired):
        assert r["kind"] == "call" and r["grant"] == "alice" and r["server"] == "ssh", r
        assert r["rule"] == rule, r
        assert r["policy_version"] == v, r
        assert HEX64.fullmatch(r["args_sha256"]), r
        assert sorted(r["arg_keys"]) == ["amount", "reason"], r
        assert "args" not in r, r
    # The question and its answer belong to the same call.
    for q, a in ((pending1, granted), (pending2, refused), (pending3, expired)):
        assert q["args_sha256"] == a["args_sha256"] and q["session"] == a["session"], (q, a)
        assert q["at_ms"] <= a["at_ms"], (q, a)
    assert pending1["args_sha256"] != pending2["args_sha256"]
    assert granted["upstream_status"] == "result", granted
    assert "message" not in granted, granted
    assert refused["message"] == "a human denied this call: amount too large for self-service: 9000", refused
    assert "upstream_status" not in refused, refused
    assert expired["message"] == "the approval request expired without an answer", expired
    assert files["rule"] == "/tools/list_files", files
    # Filters find each step.
    assert [r["id"] for r in records(gw, "--decision", "approval_pending")] == [pending1["id"], pending2["id"], pending3["id"]]
    assert [r["id"] for r in records(gw, "--decision", "approval_denied")] == [refused["id"]]
    text = audit(gw, "--decision", "approval_denied").stdout
    assert "-- a human denied this call: amount too large for self-service: 9000" in text, text
    assert log.args("create_charge") == [lunch]


# ---------------------------------------------------------------------------------------
# 7. Errors of `toolgate audit`
# ---------------------------------------------------------------------------------------
def test_a_bad_since_exits_2_and_a_missing_state_exits_1(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=MIXED)
    for bad in ("yesterday", "10x", "2026-13-01T10:00:00Z", "2026-12-01 10:00:00"):
        proc = audit(gw, "--since", bad, check=False)
        assert proc.returncode == 2, (bad, proc.returncode, proc.stdout, proc.stderr)
        assert "--since" in proc.stderr and proc.stdout == "", (bad, proc.stderr)
    proc = audit(gw, "--since", "bad", "--json", "--follow", check=False)
    assert proc.returncode == 2, proc
    # A gateway that never ran: no state yet.
    other = tmp_path / "never"
    other.mkdir()
    config = other / "toolgate.toml"
    config.write_text(gw.config.read_text().replace(str(gw.config.parent / "state"), str(other / "state")))
    proc = subprocess.run(
        [str(TOOLGATE), "audit", "--config", str(config), "--json"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1, proc
    assert "no state yet" in proc.stderr, proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------------
# 8. More of what the records say: a dead upstream, two upstreams, stdio, the gateway's log
# ---------------------------------------------------------------------------------------
async def test_a_dead_upstream_is_an_upstream_error_with_status_unavailable(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    policy = {"version": "1", "default": "allow"}
    gw = gateway_factory(policy_server("ssh", log) + policy_server("billing", log), policy=policy)
    async with connect(gw) as alice:
        crashed = await alice.call_tool("ssh__crash_upstream", {"note": "bye"})
        assert crashed.is_error, crashed
        with pytest.raises(MCPError):
            await alice.call_tool("nowhere__at_all", {})
        assert_passed(await alice.call_tool("billing__list_files", {}), "billing", "list_files", {})
    found = wait_records(gw, 3)
    assert [(r["decision"], r.get("server"), r["tool"]) for r in found] == [
        ("upstream_error", "ssh", "crash_upstream"),
        ("hidden", None, "nowhere__at_all"),
        ("allowed", "billing", "list_files"),
    ], found
    crash, nowhere, files = found
    assert crash["upstream_status"] in ("unavailable", "no answer"), crash
    assert crash["is_error"] is True, crash
    check_call_record(nowhere, "hidden", "nowhere__at_all", server=None)
    check_call_record(files, "allowed", "list_files", server="billing")
    assert "tool=nowhere__at_all " in audit(gw, "--decision", "hidden").stdout


async def test_toolgate_stdio_records_its_calls_and_argument_values_reach_no_log(tmp_path):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    log = CallLog(tmp_path / "calls.jsonl")
    config = tmp_path / "toolgate.toml"
    config.write_text(
        f"[state]\ndir = {toml_str(str(tmp_path / 'state'))}\n" + policy_server("ssh", log) + grant_tables(tmp_path, MIXED)
    )
    errlog = tmp_path / "stdio-stderr.log"
    params = StdioServerParameters(
        command=str(TOOLGATE),
        args=["stdio", "--config", str(config), "--grant", "alice"],
        env={**os.environ, "TOOLGATE_LOG": "debug"},
    )
    with open(errlog, "w") as err:
        async with Client(stdio_client(params, errlog=err), mode="legacy") as alice:
            assert_passed(await alice.call_tool("list_files", {"path": SECRET}), "ssh", "list_files", {"path": SECRET})
            assert_denied(await alice.call_tool("delete_account", {"id": SECRET}), "denied", "/tools/delete_account/action")
    proc = subprocess.run(
        [str(TOOLGATE), "audit", "--config", str(config), "--json"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc
    found = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["decision"], r["tool"], r["grant"]) for r in found] == [
        ("allowed", "list_files", "alice"),
        ("denied", "delete_account", "alice"),
    ], found
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    text = errlog.read_text(errors="replace")
    assert "DEBUG" in text, "toolgate stdio wrote no debug log to check"
    assert SECRET not in text, [l for l in text.splitlines() if SECRET in l]


async def test_argument_values_reach_neither_the_audit_log_nor_the_gateways_own_log(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=MIXED)
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("list_files", {"path": SECRET}), "ssh", "list_files", {"path": SECRET})
        assert_denied(
            await alice.call_tool("delete_account", {"id": SECRET}), "denied", "/tools/delete_account/action"
        )
        with pytest.raises(MCPError):
            await alice.call_tool("fail_protocol", {"note": SECRET})
    wait_records(gw, 3)
    assert SECRET not in audit(gw, "--json").stdout
    assert SECRET.encode() not in state_bytes(gw)
    assert SECRET not in gw.log(), [l for l in gw.log().splitlines() if SECRET in l]


# ---------------------------------------------------------------------------------------
# 9. Strict durability survives a kill; retention and max_records prune at start
# ---------------------------------------------------------------------------------------
async def test_strict_records_survive_a_sigkill_right_after_the_answer(tmp_path):
    import signal

    log = CallLog(tmp_path / "calls.jsonl")
    home = tmp_path / "gw"
    home.mkdir()
    gw = Gateway(home, policy_server("ssh", log), policy=MIXED, extra='\n[audit]\ndurability = "strict"\n')
    try:
        async with connect(gw) as alice:
            for i in range(5):
                assert_passed(
                    await alice.call_tool("list_files", {"path": str(i)}), "ssh", "list_files", {"path": str(i)}
                )
            gw.proc.send_signal(signal.SIGKILL)
            gw.proc.wait(timeout=10)
    except BaseException:
        # Closing the client after the kill may fail; anything raised before it may not.
        if gw.proc.poll() is None:
            raise
    finally:
        gw.stop()
    found = records(gw)
    assert [r["decision"] for r in found] == ["allowed"] * 5, found


async def test_retention_and_max_records_prune_the_log_at_start(tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    home = tmp_path / "gw"
    home.mkdir()
    servers = policy_server("ssh", log)
    gw = Gateway(home, servers, policy=MIXED)
    try:
        async with connect(gw) as alice:
            for i in range(6):
                await alice.call_tool("list_files", {"path": str(i)})
        first = wait_records(gw, 6)
        assert len(first) == 6
    finally:
        gw.stop()
    assert len(records(gw)) == 6, "stopping lost records"

    # At most 4 kept: the two oldest go when the gateway starts.
    gw = Gateway(home, servers, policy=MIXED, extra="\n[audit]\nmax_records = 4\n")
    try:
        kept = wait_until(
            lambda: (r := records(gw)) and len(r) == 4 and r, timeout=10, what="pruning to max_records = 4"
        )
        assert [r["id"] for r in kept] == [r["id"] for r in first[2:]]
    finally:
        gw.stop()

    # Records older than the retention go as well.
    time.sleep(1.2)
    gw = Gateway(home, servers, policy=MIXED, extra='\n[audit]\nretention = "1s"\n')
    try:
        wait_until(lambda: records(gw) == [], timeout=10, what="pruning by retention")
        async with connect(gw) as alice:
            await alice.call_tool("list_files", {"path": "new"})
        fresh = wait_records(gw, 1)
        assert [r["arg_keys"] for r in fresh] == [["path"]]
        assert fresh[0]["id"] > first[-1]["id"], "ids are reused after pruning"
    finally:
        gw.stop()


# ---------------------------------------------------------------------------------------
# 10. Quarantine and pin approval are recorded
# ---------------------------------------------------------------------------------------
async def test_a_quarantined_tool_and_its_approval_with_toolgate_pins_are_recorded(gateway_factory, tmp_path):
    import test_catalog as cat

    tools = cat.ToolsFile(tmp_path / "tools.json", [cat.ADD, cat.ANNOUNCE])
    gw = gateway_factory(cat.rugpull("fixture", tools, isolation="shared"), state=cat.FAST_RELOAD)
    async with cat.connect(gw) as client:
        assert sorted(await cat.listing(client)) == ["add", "announce"]
        assert cat.text_of(await client.call_tool("add", {"a": 1, "b": 1})) == "2"
        tools.change("add", description=cat.POISONED_DESCRIPTION)
        await client.call_tool("announce", {})
        deadline = time.monotonic() + 5
        while "add" in await cat.listing(client) and time.monotonic() < deadline:
            await anyio.sleep(0.1)
        cat.assert_quarantined(await client.call_tool("add", {"a": 1, "b": 2}), "fixture", "add")

    quarantined = wait_records(gw, 1, "--decision", "tool_quarantined")
    assert len(quarantined) == 1, quarantined
    q = quarantined[0]
    assert q["kind"] == "admin" and q["server"] == "fixture" and q["tool"] == "add", q
    assert re.fullmatch(cat.FINGERPRINT, q["detail"]["seen"]), q
    # The call's own record may still be in the writer's batch window.
    calls = wait_until(
        lambda: len(found := [r for r in records(gw, "--tool", "add") if r["kind"] == "call"]) >= 2 and found,
        timeout=10,
        what="the two call records of add",
    )
    assert [r["decision"] for r in calls] == ["allowed", "quarantined"], calls
    assert calls[1]["is_error"] is True and "quarantined" in calls[1]["message"], calls[1]

    out = cat.toolgate("pins", "approve", "--config", str(gw.config), "fixture/add")
    assert out.returncode == 0, out
    approved = wait_records(gw, 1, "--decision", "pin_approved")
    assert len(approved) == 1, approved
    a = approved[0]
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or f"uid {os.getuid()}"
    assert a["kind"] == "admin" and a["grant"] == f"cli:{user}", a
    assert (a["server"], a["tool"]) == ("fixture", "add"), a
    assert a["detail"]["fingerprint"] == q["detail"]["seen"], (a, q)


# ---------------------------------------------------------------------------------------
# 11. A call whose client gives up while the upstream works on it
# ---------------------------------------------------------------------------------------
SLOW_SERVER = r'''
import json, os, sys, time
from mcp.server.mcpserver import MCPServer

LOG = sys.argv[1]
mcp = MCPServer(name="slow-fixture", version="1.0.0", log_level="WARNING")


@mcp.tool(description="Writes a note, then takes its time to answer", structured_output=False)
def slow_write(note: str, ms: int = 1500) -> str:
    with open(LOG, "a") as f:
        f.write(json.dumps({"tool": "slow_write", "note": note}) + "\n")
    time.sleep(ms / 1000)
    return f"wrote {note}"


mcp.run("stdio")
'''


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_a_forwarded_call_whose_client_went_away_still_gets_its_record(gateway_factory, tmp_path, mode):
    """The upstream received (and acted on) the call; the client stopped waiting for the
    answer. The call was still made: the audit log must say so."""
    import httpx

    from conftest import server_stdio

    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER)
    upstream_log = tmp_path / "slow.jsonl"
    gw = gateway_factory(server_stdio("slow", PYTHON, [str(script), str(upstream_log)]))
    raw = RawMcp(gw.url, TOKEN, mode=mode)
    ok = raw.result("tools/call", {"name": "slow_write", "arguments": {"note": "first", "ms": 0}})
    assert not ok.get("isError"), ok
    # The same request RawMcp would send, but the client gives up after 0.3 s.
    params = raw._params({"name": "slow_write", "arguments": {"note": "given-up", "ms": 1500}})
    body = {"jsonrpc": "2.0", "id": 4242, "method": "tools/call", "params": params}
    headers = {**raw.http.headers, **raw._headers("tools/call", params)}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(gw.url, content=json.dumps(body), headers=headers, timeout=0.3)
    wait_until(
        lambda: upstream_log.exists() and "given-up" in upstream_log.read_text(),
        timeout=10,
        what="the upstream to receive the call",
    )
    time.sleep(2.5)  # the upstream has answered (or been cancelled) by now
    after = raw.result("tools/call", {"name": "slow_write", "arguments": {"note": "after", "ms": 0}})
    assert not after.get("isError"), after
    raw.close()
    found = wait_records(gw, 2)
    time.sleep(0.5)
    found = records(gw)
    assert [r.get("request_id") for r in found] == ["2" if mode == "legacy" else "1", "4242", found[-1].get("request_id")], (
        "the call the upstream received while its client went away has no audit record: "
        + json.dumps([(r["decision"], r.get("request_id"), r.get("upstream_status")) for r in found])
        + f"; upstream received: {upstream_log.read_text()!r}"
    )
    given_up = found[1]
    assert given_up["tool"] == "slow_write" and given_up["server"] == "slow", given_up
    assert given_up["decision"] in ("allowed", "upstream_error"), given_up


# ---------------------------------------------------------------------------------------
# 12. A graceful stop writes what was queued
# ---------------------------------------------------------------------------------------
async def test_a_graceful_stop_writes_the_records_of_calls_already_answered(tmp_path):
    """Batched durability may lose the last moment's records in a crash, but SIGTERM is a
    graceful stop: the records of calls that were answered must reach the disk. Another
    process holds the database's write lock for a moment (as `toolgate pins approve` or a slow
    disk would), so the writer has not committed them yet when SIGTERM arrives."""
    import signal
    import sqlite3

    log = CallLog(tmp_path / "calls.jsonl")
    home = tmp_path / "gw"
    home.mkdir()
    gw = Gateway(home, policy_server("ssh", log), policy=MIXED)
    db = home / "state" / "state.db"
    try:
        async with connect(gw) as alice:
            assert_passed(await alice.call_tool("list_files", {}), "ssh", "list_files", {})
            await anyio.to_thread.run_sync(lambda: wait_records(gw, 1))
            con = sqlite3.connect(str(db), timeout=0, isolation_level=None)
            con.execute("BEGIN IMMEDIATE")
            try:
                for i in range(5):
                    args = {"path": f"/answered-{i}"}
                    assert_passed(await alice.call_tool("list_files", args), "ssh", "list_files", args)
                gw.proc.send_signal(signal.SIGTERM)
                await anyio.sleep(0.3)
            finally:
                con.execute("ROLLBACK")
                con.close()
        gw.proc.wait(timeout=30)
    finally:
        gw.stop()
    assert len(log.args("list_files")) == 6
    found = records(gw)
    assert len(found) == 6, (
        f"5 answered calls, then SIGTERM: {len(found)} records on disk "
        f"(the gateway stopped without writing its queue)\n{gw.log()[-1500:]}"
    )
