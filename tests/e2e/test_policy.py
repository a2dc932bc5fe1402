"""Policies through the gateway, end to end: real PyPI `mcp==2.3.0` clients, `toolgate serve`
(and `toolgate stdio`), and upstreams from `tests/fixtures/policy_server.py`, which log every
call they receive so that a test can tell whether a call reached the upstream at all.

What a user sees is asserted: the tools listed, the `[POLICY DENIED] ...` text and the
`_meta["toolgate/decision"]` of a denial, the JSON-RPC error of a hidden tool, and the
upstream's call log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
import mcp_types as types

from conftest import (
    FIXTURE,
    OTHER_TOKEN,
    PYTHON,
    ROOT,
    TOKEN,
    TOOLGATE,
    Gateway,
    RawMcp,
    async_poll,
    free_port,
    grant_tables,
    mcp_http_transport,
    require,
    server_stdio,
    toml_list,
    toml_str,
)

pytestmark = pytest.mark.anyio

POLICY_FIXTURE = ROOT / "tests" / "fixtures" / "policy_server.py"
FIXTURE_TOOLS = [
    "ssh_session_start",
    "ssh_exec",
    "ssh_exec_raw",
    "create_charge",
    "delete_account",
    "list_files",
    "fail_soft",
    "fail_protocol",
    "crash_upstream",
]
DECISION = "toolgate/decision"
DENIED = "[POLICY DENIED] "
UTC_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
class CallLog:
    """The calls the fixture upstreams received (one JSON line each, written before they act)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self, tool: str | None = None, server: str | None = None) -> list[dict]:
        if not self.path.exists():
            return []
        out = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [e for e in out if (tool is None or e["tool"] == tool) and (server is None or e["server"] == server)]

    def args(self, tool: str, server: str | None = None) -> list[dict]:
        return [e["args"] for e in self.entries(tool, server)]


def policy_server(name: str, log: CallLog, isolation: str = "shared") -> str:
    """A `[servers.NAME]` table running the policy fixture over stdio, labelled NAME."""
    args = [str(POLICY_FIXTURE), "--log", str(log.path), "--label", name]
    return server_stdio(name, PYTHON, args, isolation=toml_str(isolation))


def policy_version(text: str) -> str:
    """The version a policy's text gets: `sha256:` and 16 hex digits of its hash."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def version_of(gw: Gateway, grant: str = "alice") -> str:
    return policy_version((gw.config.parent / f"policy-{grant}.json").read_text())


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def assert_denied(result, decision: str, rule: str, version: str | None = None) -> str:
    """A visible denial: an `isError` result with `[POLICY DENIED] <message>` and the decision
    in `_meta`. Returns the message."""
    assert result.is_error, f"expected a denial, got {result}"
    text = text_of(result)
    assert text.startswith(DENIED), f"not a policy denial: {text!r}"
    assert len(result.content) == 1, result.content
    meta = (result.meta or {}).get(DECISION)
    assert meta is not None, f"no {DECISION} in _meta: {result.meta}"
    assert meta["decision"] == decision, meta
    assert meta["rule"] == rule, meta
    if version is not None:
        assert meta["policy_version"] == version, meta
    else:
        assert re.fullmatch(r"sha256:[0-9a-f]{16}", meta["policy_version"]), meta
    return text.removeprefix(DENIED)


def assert_passed(result, server: str, tool: str, args: dict) -> None:
    """The upstream's own answer: it echoes what it received."""
    assert not result.is_error, f"{tool} was refused: {text_of(result)} {result.meta}"
    assert DECISION not in (result.meta or {})
    assert result.structured_content == {"server": server, "tool": tool, "received": args}


async def assert_unknown(client: Client, name: str, args: dict | None = None) -> None:
    """A hidden tool is answered exactly as a tool that does not exist (JSON-RPC -32602)."""
    with pytest.raises(MCPError) as hidden:
        await client.call_tool(name, args or {})
    assert hidden.value.error.code == -32602, hidden.value.error
    assert hidden.value.error.message == f"Unknown tool: {name}", hidden.value.error
    with pytest.raises(MCPError) as missing:
        await client.call_tool("no_such_tool_anywhere", args or {})
    assert missing.value.error.code == hidden.value.error.code
    assert missing.value.error.message == "Unknown tool: no_such_tool_anywhere"
    assert missing.value.error.data == hidden.value.error.data


def connect(gw: Gateway, token: str = TOKEN, mode: str = "legacy", path: str = "") -> Client:
    return Client(mcp_http_transport(gw.url + path, token), mode=mode)


async def tool_names(client: Client) -> list[str]:
    return sorted(t.name for t in (await client.list_tools()).tools)


def limit_message_re(counter: str, max_: int, window: str, scope: str) -> re.Pattern:
    return re.compile(
        rf"rate limit `{re.escape(counter)}` reached: at most {max_} per {window} per {scope}; "
        rf"resets in (\d+) s \(at ({UTC_TIME})\)"
    )


def utc_seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


async def sleep_past_boundary(period: float, margin: float) -> None:
    """Sleeps into the next fixed window of `period` seconds if fewer than `margin` remain."""
    left = period - time.time() % period
    if left < margin:
        await anyio.sleep(left + 0.05)


def sliding(counter: str, max_: int, **extra) -> dict:
    """A limit on a sliding hour: no calendar boundary to fall across mid-test."""
    return {"counter": counter, "window": "1h", "sliding": True, "max": max_, **extra}


# ---------------------------------------------------------------------------------------
# 1. A PolicyLayer policy: one tool, ten sessions a minute per grant
# ---------------------------------------------------------------------------------------
POLICYLAYER = {
    "version": "1",
    "default": "deny",
    "tools": {
        "ssh_session_start": {
            "limits": [{"counter": "ssh_session_start_rate", "window": "minute", "max": 10, "scope": "grant"}]
        }
    },
}


async def test_policylayer_policy_allows_ten_session_starts_a_minute_per_grant_and_hides_every_other_tool(
    gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=POLICYLAYER, bob_policy=POLICYLAYER)
    version = version_of(gw)
    # Every call below up to the last limited one must fall into one UTC minute.
    await sleep_past_boundary(60, 10)
    async with connect(gw) as alice:
        assert await tool_names(alice) == ["ssh_session_start"]
        for i in range(10):
            result = await alice.call_tool("ssh_session_start", {"credentialName": f"alice-{i}"})
            assert_passed(result, "ssh", "ssh_session_start", {"credentialName": f"alice-{i}"})
        before = time.time()
        eleventh = await alice.call_tool("ssh_session_start", {"credentialName": "alice-10"})
        after = time.time()
        message = assert_denied(eleventh, "limited", "/tools/ssh_session_start/limits/0", version)
        match = limit_message_re("ssh_session_start_rate", 10, "minute", "grant").fullmatch(message)
        assert match, message
        reset_at = utc_seconds(match[2])
        assert reset_at == math.floor(before / 60) * 60 + 60, f"{message} (called at {before})"
        assert math.floor(reset_at - after) <= int(match[1]) <= math.ceil(reset_at - before), message

    # bob has his own ten.
    async with connect(gw, token=OTHER_TOKEN) as bob:
        assert await tool_names(bob) == ["ssh_session_start"]
        for i in range(10):
            result = await bob.call_tool("ssh_session_start", {"credentialName": f"bob-{i}"})
            assert_passed(result, "ssh", "ssh_session_start", {"credentialName": f"bob-{i}"})
        eleventh = await bob.call_tool("ssh_session_start", {"credentialName": "bob-10"})
        message = assert_denied(eleventh, "limited", "/tools/ssh_session_start/limits/0", version_of(gw, "bob"))
        assert limit_message_re("ssh_session_start_rate", 10, "minute", "grant").fullmatch(message), message

    # A new session of alice's shares the grant's count; every other tool of the upstream is
    # hidden: absent, and answered as unknown.
    async with connect(gw) as alice_again:
        again = await alice_again.call_tool("ssh_session_start", {"credentialName": "alice-11"})
        assert_denied(again, "limited", "/tools/ssh_session_start/limits/0", version)
        for name in FIXTURE_TOOLS:
            if name != "ssh_session_start":
                await assert_unknown(
                    alice_again, name, {"credentialName": "x", "command": "id", "id": "1", "amount": 1}
                )

    # Exactly the allowed calls reached the upstream; nothing else did.
    assert [e["tool"] for e in log.entries()] == ["ssh_session_start"] * 20
    assert [a["credentialName"] for a in log.args("ssh_session_start")] == [f"alice-{i}" for i in range(10)] + [
        f"bob-{i}" for i in range(10)
    ]


# ---------------------------------------------------------------------------------------
# 2. Selecting tools: hide, globs, server/tool keys, require / deny_if, action deny
# ---------------------------------------------------------------------------------------
SELECTORS = {
    "version": "1",
    "default": "deny",
    "hide": ["delete_account", "billing/list_files"],
    "tools": {
        "ssh/*": {},
        "ssh/ssh_exec": {
            "deny_if": [{"path": "args.command", "op": "contains", "value": "sudo"}],
            "on_deny": "no sudo on shared hosts",
        },
        "*_exec*": {
            "require": [{"path": "args.credentialName", "op": "in", "value": ["prod-ro", "staging"]}],
            "reason": "only the read-only credentials may run commands",
        },
        "create_charge": {
            "require": [{"path": "args.amount", "op": "lte", "value": 100}],
            "deny_if": [{"path": "args.reason", "op": "regex", "value": "(?i)refund"}],
        },
        "ssh/list_files": {"action": "deny", "on_deny": "browse files in the file manager instead"},
        "billing__fail_soft": {"action": "deny"},
        "delete_account": {},
    },
    "resources": {"allow": ["fixture://*/readme"]},
    "prompts": {"allow": ["ssh/greeting"]},
}
HIDE_EVERYTHING = {"version": "1", "default": "allow", "hide": ["*"]}


async def test_hide_globs_server_keys_predicates_and_action_deny_across_two_servers(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(
        policy_server("ssh", log) + policy_server("billing", log), policy=SELECTORS, bob_policy=HIDE_EVERYTHING
    )
    v = version_of(gw)
    async with connect(gw) as alice:
        # `ssh/*` shows every ssh tool but the hidden one; on billing only the exact key, the
        # `*_exec*` glob and the exposed-name key select tools, and `billing/list_files` is hidden.
        assert await tool_names(alice) == sorted(
            [f"ssh__{t}" for t in FIXTURE_TOOLS if t != "delete_account"]
            + ["billing__create_charge", "billing__ssh_exec", "billing__ssh_exec_raw", "billing__fail_soft"]
        )

        ok = {"credentialName": "prod-ro", "command": "uptime"}
        assert_passed(await alice.call_tool("ssh__ssh_exec", ok), "ssh", "ssh_exec", ok)
        # Three entries select ssh__ssh_exec; any one denying denies (`ssh/*` and `*_exec*` allow).
        sudo = {"credentialName": "prod-ro", "command": "sudo reboot"}
        message = assert_denied(
            await alice.call_tool("ssh__ssh_exec", sudo), "denied", "/tools/ssh~1ssh_exec/deny_if/0", v
        )
        assert message == "no sudo on shared hosts"
        root = {"credentialName": "root", "command": "uptime"}
        message = assert_denied(await alice.call_tool("ssh__ssh_exec", root), "denied", "/tools/*_exec*/require/0", v)
        assert message == "only the read-only credentials may run commands"
        # Both deny: the first rule in canonical (sorted key) order is named.
        both = {"credentialName": "root", "command": "sudo reboot"}
        assert_denied(await alice.call_tool("ssh__ssh_exec", both), "denied", "/tools/*_exec*/require/0", v)
        # `ssh/ssh_exec` names the ssh server only: billing's ssh_exec is not bound by it.
        assert_passed(await alice.call_tool("billing__ssh_exec", sudo), "billing", "ssh_exec", sudo)
        message = assert_denied(
            await alice.call_tool("billing__ssh_exec_raw", {"credentialName": "root", "command": ["id"]}),
            "denied",
            "/tools/*_exec*/require/0",
            v,
        )
        assert message == "only the read-only credentials may run commands"

        # require / deny_if without on_deny: the message says which predicate.
        assert_passed(
            await alice.call_tool("billing__create_charge", {"amount": 50}), "billing", "create_charge", {"amount": 50}
        )
        message = assert_denied(
            await alice.call_tool("billing__create_charge", {"amount": 500}),
            "denied",
            "/tools/create_charge/require/0",
            v,
        )
        assert message == "requirement not met: args.amount lte 100"
        refund = {"amount": 5, "reason": "Refund of order 7"}
        message = assert_denied(
            await alice.call_tool("billing__create_charge", refund), "denied", "/tools/create_charge/deny_if/0", v
        )
        assert message == 'denied because args.reason regex "(?i)refund"'
        # A string the upstream would read as a number is compared as that number...
        assert_passed(
            await alice.call_tool("billing__create_charge", {"amount": "60"}),
            "billing",
            "create_charge",
            {"amount": "60"},
        )
        message = assert_denied(
            await alice.call_tool("billing__create_charge", {"amount": "600"}),
            "denied",
            "/tools/create_charge/require/0",
            v,
        )
        assert message == "requirement not met: args.amount lte 100"
        # ... and a type the operator cannot judge is denied, not waved through.
        message = assert_denied(
            await alice.call_tool("billing__create_charge", {"amount": {"value": 1}}),
            "denied",
            "/tools/create_charge/require/0",
            v,
        )
        assert message == "args.amount is an object, not a number as `lte` needs"
        message = assert_denied(
            await alice.call_tool("billing__create_charge", {}), "denied", "/tools/create_charge/require/0", v
        )
        assert message == "requirement not met: args.amount lte 100"

        # action: deny keeps the tool visible but refuses every call.
        message = assert_denied(
            await alice.call_tool("ssh__list_files", {"path": "/"}), "denied", "/tools/ssh~1list_files/action", v
        )
        assert message == "browse files in the file manager instead"
        message = assert_denied(
            await alice.call_tool("billing__fail_soft", {}), "denied", "/tools/billing__fail_soft/action", v
        )
        assert message == "this tool is denied by policy"

        # Hidden (by name on every server, or by server/tool) and unselected tools are unknown.
        for name in [
            "ssh__delete_account",
            "billing__delete_account",
            "billing__list_files",
            "billing__ssh_session_start",
        ]:
            await assert_unknown(alice, name, {"id": "42", "path": "/"})

        # resources and prompts follow their own sections (default: the policy's `default`).
        uris = sorted(str(r.uri) for r in (await alice.list_resources()).resources)
        assert uris == ["fixture://billing/readme", "fixture://ssh/readme"]
        readme = await alice.read_resource("fixture://ssh/readme")
        assert [c.text for c in readme.contents] == ["readme of ssh"]
        with pytest.raises(MCPError) as secret:
            await alice.read_resource("fixture://ssh/secret")
        assert "Resource not found: fixture://ssh/secret" in secret.value.error.message, secret.value.error
        assert [p.name for p in (await alice.list_prompts()).prompts] == ["ssh__greeting"]
        greeting = await alice.get_prompt("ssh__greeting", {"name": "alice"})
        assert "Hello, alice!" in json.dumps(greeting.model_dump(mode="json"))
        with pytest.raises(MCPError) as prompt:
            await alice.get_prompt("billing__greeting", {"name": "alice"})
        assert prompt.value.error.message == "Unknown prompt: billing__greeting", prompt.value.error

    async with connect(gw, token=OTHER_TOKEN) as bob:
        assert await tool_names(bob) == []
        await assert_unknown(bob, "ssh__ssh_exec", ok)
        await assert_unknown(bob, "billing__create_charge", {"amount": 1})

    assert [(e["server"], e["tool"], e["args"]) for e in log.entries()] == [
        ("ssh", "ssh_exec", ok),
        ("billing", "ssh_exec", sudo),
        ("billing", "create_charge", {"amount": 50}),
        ("billing", "create_charge", {"amount": "60"}),
    ]


EXPOSED_KEYS = {
    "version": "1",
    "default": "allow",
    "hide": ["ssh__delete_account"],
    "tools": {"ssh__ssh_exec": {"action": "deny", "on_deny": "no shell"}},
}


async def test_a_rule_keyed_by_the_aggregated_name_also_binds_the_servers_own_endpoint(gateway_factory, tmp_path):
    """`ssh__ssh_exec` is the name the operator sees in the aggregated listing. An agent must not
    escape a rule (or a `hide`) written with it by calling `/mcp/ssh`, where the same tool of
    the same server is exposed as `ssh_exec`."""
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log) + policy_server("billing", log), policy=EXPOSED_KEYS)
    v = version_of(gw)
    shell = {"credentialName": "prod", "command": "id"}
    async with connect(gw) as aggregated:
        assert "ssh__delete_account" not in await tool_names(aggregated)
        message = assert_denied(
            await aggregated.call_tool("ssh__ssh_exec", shell), "denied", "/tools/ssh__ssh_exec/action", v
        )
        assert message == "no shell"
    outcome: list[str] = []
    async with connect(gw, path="/ssh") as direct:
        if "delete_account" in await tool_names(direct):
            outcome.append("/mcp/ssh lists the hidden delete_account")
        result = await direct.call_tool("ssh_exec", shell)
        if not result.is_error:
            outcome.append(f"/mcp/ssh ran ssh_exec: {result.structured_content}")
    assert not outcome, "; ".join(outcome)
    assert not log.args("ssh_exec")


# ---------------------------------------------------------------------------------------
# 3. Shell commands: the `command` operator
# ---------------------------------------------------------------------------------------
def command_rule(**rule) -> list[dict]:
    return [{"path": "args.command", "op": "command", "value": rule}]


ALLOW_PROGRAMS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "ssh_exec": {"require": command_rule(allow_programs=["ls", "cat", "df"])},
        "ssh_exec_raw": {"require": command_rule(allow_programs=["ls", "cat", "df"])},
    },
}
DENY_PROGRAMS = {
    "version": "1",
    "default": "deny",
    "tools": {"ssh_exec": {"require": command_rule(deny_programs=["rm", "shutdown"])}},
}


async def test_command_rule_allows_listed_programs_and_stops_everything_else_before_the_upstream(
    gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=ALLOW_PROGRAMS, bob_policy=DENY_PROGRAMS)
    rule = "/tools/ssh_exec/require/0"
    raw_rule = "/tools/ssh_exec_raw/require/0"
    wrong: list[str] = []
    cases: list[dict] = []

    async def expect(who: str, client, tool: str, command, allowed: bool, rule: str, names: str | None = None) -> None:
        """Records (rather than stops at) each case that goes the wrong way."""
        # A credential name of its own, so the call log tells this call from any other.
        args = {"credentialName": f"case-{len(cases)}", "command": command}
        cases.append(args)
        result = await client.call_tool(tool, args)
        reached = args in log.args(tool)
        if allowed:
            if result.is_error or not reached:
                wrong.append(
                    f"{who}: {tool} {command!r}: should pass, got {text_of(result)!r} (reached the upstream: {reached})"
                )
            return
        meta = (result.meta or {}).get(DECISION) or {}
        text = text_of(result)
        if not (
            result.is_error
            and text.startswith(DENIED)
            and meta.get("decision") == "denied"
            and meta.get("rule") == rule
        ):
            got = "the upstream's answer" if reached else repr(text)
            wrong.append(f"{who}: {tool} {command!r}: should be denied by {rule}, got {got} {meta or ''}")
        elif names is not None and not re.search(rf"\b{re.escape(names)}\b", text.removeprefix(DENIED)):
            wrong.append(f"{who}: {tool} {command!r}: the denial does not name `{names}`: {text!r}")
        if reached:
            wrong.append(f"{who}: {tool} {command!r}: reached the upstream")

    async with connect(gw) as alice:
        assert await tool_names(alice) == ["ssh_exec", "ssh_exec_raw"]
        await expect("alice", alice, "ssh_exec", "ls -la", True, rule)
        await expect("alice", alice, "ssh_exec", "cat /etc/hostname", True, rule)
        await expect("alice", alice, "ssh_exec", "df -h /", True, rule)
        await expect("alice", alice, "ssh_exec", "ls; rm -rf /", False, rule, "rm")
        await expect("alice", alice, "ssh_exec", "r''m x", False, rule, "rm")
        # `bash -c` is seen through: the denial names the program the inner command runs.
        await expect("alice", alice, "ssh_exec", "bash -c 'rm x'", False, rule, "rm")
        await expect("alice", alice, "ssh_exec", "ls && shutdown -h now", False, rule, "shutdown")
        await expect("alice", alice, "ssh_exec", "ls\nrm x", False, rule, "rm")
        await expect("alice", alice, "ssh_exec", "cat $(rm x)", False, rule)
        await expect("alice", alice, "ssh_exec", "ls | sh", False, rule)
        # An argv array: the program is its first word; later words are arguments, never shell.
        await expect("alice", alice, "ssh_exec_raw", ["ls", "-la"], True, raw_rule)
        await expect("alice", alice, "ssh_exec_raw", ["ls", "; rm -rf /"], True, raw_rule)
        await expect("alice", alice, "ssh_exec_raw", ["rm", "-rf", "/"], False, raw_rule, "rm")
        await expect("alice", alice, "ssh_exec_raw", ["bash", "-c", "rm x"], False, raw_rule, "rm")
        await expect("alice", alice, "ssh_exec_raw", ["env", "X=1", "/bin/rm", "x"], False, raw_rule, "rm")
        # Not a command at all: denied as undecidable.
        bad = await alice.call_tool("ssh_exec_raw", {"credentialName": "prod", "command": [1, 2]})
        message = assert_denied(bad, "denied", raw_rule, version_of(gw))
        assert message == "args.command is an array, not a string or an array of strings as `command` needs"

    async with connect(gw, token=OTHER_TOKEN) as bob:
        # deny_programs: everything but the named programs, wherever they appear in the line.
        await expect("bob", bob, "ssh_exec", "ls -la", True, rule)
        await expect("bob", bob, "ssh_exec", "cat /home/farm/notes", True, rule)
        await expect("bob", bob, "ssh_exec", "ls; rm -rf /", False, rule, "rm")
        await expect("bob", bob, "ssh_exec", "r''m x", False, rule, "rm")
        await expect("bob", bob, "ssh_exec", "ls && shutdown -h now", False, rule, "shutdown")
        await expect("bob", bob, "ssh_exec", "echo $(\\rm -rf /tmp/x)", False, rule, "rm")
        await expect("bob", bob, "ssh_exec", "timeout 5 /usr/bin/rm x", False, rule, "rm")
        await expect("bob", bob, "ssh_exec", "grep -r 'rm -rf' /etc", True, rule)
        await expect("bob", bob, "ssh_exec", "ls 'unterminated", False, rule)

    assert not wrong, "command rule cases that went the wrong way:\n" + "\n".join(wrong)


def test_a_command_rule_under_deny_if_is_refused_at_start_with_its_pointer(tmp_path):
    """`command` says what may run, so it belongs under `require`; under `deny_if` the policy is
    invalid, and `toolgate serve` refuses to start, naming the pointer and the fix."""
    require(TOOLGATE, "run `cargo build` first")
    log = CallLog(tmp_path / "calls.jsonl")
    policy = {"version": "1", "default": "deny", "tools": {"ssh_exec": {"deny_if": command_rule(deny_programs=["rm"])}}}
    config = tmp_path / "toolgate.toml"
    config.write_text(
        f"[listen]\nmcp = \"127.0.0.1:{free_port()}\"\n[state]\ndir = {toml_str(str(tmp_path / 'state'))}\n"
        + policy_server("ssh", log)
        + grant_tables(tmp_path, policy)
    )
    done = subprocess.run([str(TOOLGATE), "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "/tools/ssh_exec/deny_if/0/op" in done.stderr, done.stderr
    assert "put it under `require`" in done.stderr, done.stderr
    assert str(tmp_path / "policy-alice.json") in done.stderr, done.stderr
    assert not log.entries()


# ---------------------------------------------------------------------------------------
# 4. Rate limits: windows, scopes, amounts, all_tools, what counts
# ---------------------------------------------------------------------------------------
WINDOWS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "ssh_session_start": {"limits": [{"counter": "burst", "window": "2s", "max": 2}]},
        "ssh_exec": {
            "limits": [sliding("shell", 2, scope="session")],
            "on_deny": "two commands per session",
        },
        "create_charge": {"limits": [sliding("spend", 100, increment_from="args.amount")]},
    },
}
ALL_TOOLS = {"version": "1", "default": "allow", "all_tools": {"limits": [sliding("anything", 3)]}}


async def test_limits_reset_after_their_window_and_count_per_session_per_amount_and_across_all_tools(
    gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=WINDOWS, bob_policy=ALL_TOOLS)
    v = version_of(gw)
    shell = {"credentialName": "prod", "command": "uptime"}
    async with connect(gw) as one, connect(gw) as two:
        # A fixed 2 s window: two calls, the third refused until the window turns.
        await sleep_past_boundary(2, 1.2)
        start = {"credentialName": "prod"}
        for _ in range(2):
            assert_passed(await one.call_tool("ssh_session_start", start), "ssh", "ssh_session_start", start)
        before = time.time()
        third = await one.call_tool("ssh_session_start", start)
        message = assert_denied(third, "limited", "/tools/ssh_session_start/limits/0", v)
        match = limit_message_re("burst", 2, "2s", "grant").fullmatch(message)
        assert match, message
        reset_at = utc_seconds(match[2])
        assert reset_at == math.floor(before / 2) * 2 + 2, message
        assert int(match[1]) in (1, 2), message
        await anyio.sleep(max(0.0, reset_at - time.time()) + 0.1)
        assert_passed(await one.call_tool("ssh_session_start", start), "ssh", "ssh_session_start", start)
        assert len(log.args("ssh_session_start")) == 3

        # scope: session: each session of the grant has its own two; on_deny comes first.
        for client in (one, two):
            for _ in range(2):
                assert_passed(await client.call_tool("ssh_exec", shell), "ssh", "ssh_exec", shell)
            message = assert_denied(await client.call_tool("ssh_exec", shell), "limited", "/tools/ssh_exec/limits/0", v)
            assert message.startswith(
                "two commands per session (rate limit `shell` reached: at most 2 per sliding hour per session; "
            ), message
        assert len(log.args("ssh_exec")) == 4

        # increment_from: the amount counts, across the grant's sessions (scope grant).
        assert_passed(await one.call_tool("create_charge", {"amount": 60}), "ssh", "create_charge", {"amount": 60})
        assert_passed(await two.call_tool("create_charge", {"amount": 30}), "ssh", "create_charge", {"amount": 30})
        message = assert_denied(
            await one.call_tool("create_charge", {"amount": 20}), "limited", "/tools/create_charge/limits/0", v
        )
        assert limit_message_re("spend", 100, "sliding hour", "grant").fullmatch(message), message
        assert_passed(await two.call_tool("create_charge", {"amount": 10}), "ssh", "create_charge", {"amount": 10})
        # A fraction is rounded up: 0.5 takes 1, and 100 are used.
        assert_denied(
            await one.call_tool("create_charge", {"amount": 0.5}), "limited", "/tools/create_charge/limits/0", v
        )
        # An amount that cannot be counted is refused, naming the argument.
        for bad in ({"amount": -5}, {"amount": "lots"}, {}):
            message = assert_denied(
                await one.call_tool("create_charge", bad), "denied", "/tools/create_charge/limits/0/increment_from", v
            )
            assert message == "args.amount must be a non-negative number: limit `spend` counts it"
        assert log.args("create_charge") == [{"amount": 60}, {"amount": 30}, {"amount": 10}]

    # all_tools limits take from one counter whatever the tool (bob's policy).
    async with connect(gw, token=OTHER_TOKEN) as bob:
        assert await tool_names(bob) == sorted(FIXTURE_TOOLS)
        assert not (await bob.call_tool("list_files", {})).is_error
        assert not (await bob.call_tool("ssh_exec", shell)).is_error
        assert not (await bob.call_tool("delete_account", {"id": "7"})).is_error
        message = assert_denied(
            await bob.call_tool("list_files", {"path": "/"}), "limited", "/all_tools/limits/0", version_of(gw, "bob")
        )
        assert limit_message_re("anything", 3, "sliding hour", "grant").fullmatch(message), message
    assert log.args("delete_account") == [{"id": "7"}]
    assert log.args("list_files") == [{}]


COUNTING = {
    "version": "1",
    "default": "deny",
    "tools": {
        "list_files": {"limits": [sliding("flaky", 2)]},
        "fail_protocol": {"limits": [sliding("flaky", 2)]},
        "crash_upstream": {"limits": [sliding("flaky", 2)]},
        "fail_soft": {"limits": [sliding("soft", 2)]},
    },
}


async def test_an_iserror_result_counts_but_a_protocol_error_or_a_dead_upstream_gives_the_count_back(
    gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=COUNTING)
    v = version_of(gw)
    async with connect(gw) as alice:
        # Three protocol errors from the upstream: none of them keeps its count.
        for i in range(3):
            with pytest.raises(MCPError) as failed:
                await alice.call_tool("fail_protocol", {"note": str(i)})
            assert failed.value.error.message == "fail_protocol on ssh: protocol error on purpose"
        assert_passed(await alice.call_tool("list_files", {}), "ssh", "list_files", {})
        # The upstream dies mid-call: the client reads an error result, the count is given back.
        crashed = await alice.call_tool("crash_upstream", {})
        assert crashed.is_error
        assert DECISION not in (crashed.meta or {})
        assert not text_of(crashed).startswith(DENIED), text_of(crashed)

        async def upstream_back() -> bool:
            return "list_files" in await tool_names(alice)

        deadline = time.monotonic() + 20
        while not await upstream_back():
            assert time.monotonic() < deadline, "the crashed upstream did not come back"
            await anyio.sleep(0.1)
        assert_passed(await alice.call_tool("list_files", {"path": "/"}), "ssh", "list_files", {"path": "/"})
        message = assert_denied(
            await alice.call_tool("list_files", {"path": "/tmp"}), "limited", "/tools/list_files/limits/0", v
        )
        assert limit_message_re("flaky", 2, "sliding hour", "grant").fullmatch(message), message

        # An isError result is an answer: it counts.
        for _ in range(2):
            soft = await alice.call_tool("fail_soft", {})
            assert soft.is_error
            assert text_of(soft) == "Error executing tool fail_soft: fail_soft on ssh: failed on purpose"
        assert_denied(await alice.call_tool("fail_soft", {}), "limited", "/tools/fail_soft/limits/0", v)
    assert len(log.args("fail_protocol")) == 3
    assert len(log.args("crash_upstream")) == 1
    assert log.args("list_files") == [{}, {"path": "/"}]
    assert len(log.args("fail_soft")) == 2


async def test_a_call_the_client_cancels_once_forwarded_keeps_its_count(gateway_factory):
    """The upstream has the call and may act on it: were a cancellation to give the count back,
    an agent could run a limited tool past its limit by cancelling every call it makes."""
    gw = gateway_factory(
        server_stdio("fixture", PYTHON, [str(FIXTURE), "--stdio"]),
        policy={"version": "1", "default": "allow", "tools": {"sleep": {"limits": [sliding("slow", 1)]}}},
    )
    v = version_of(gw)
    async with connect(gw) as alice:
        with anyio.move_on_after(1.0) as scope:
            await alice.call_tool("sleep", {"ms": 20000})
        assert scope.cancelled_caught, "the sleep call returned before it was cancelled"

        def cancelled_call_recorded() -> bool:
            out = subprocess.run(
                [str(TOOLGATE), "audit", "--config", str(gw.config), "--json", "--tool", "sleep"],
                capture_output=True, text=True, timeout=30,
            ).stdout
            return any(line.strip() for line in out.splitlines())

        # The cancelled call has ended in the gateway (its record is written after its counters
        # are settled): only now can a second call tell whether the count was given back.
        assert await async_poll(cancelled_call_recorded, timeout=15), "no audit record of the cancelled call"
        message = assert_denied(await alice.call_tool("sleep", {"ms": 1}), "limited", "/tools/sleep/limits/0", v)
        assert limit_message_re("slow", 1, "sliding hour", "grant").fullmatch(message), message


# ---------------------------------------------------------------------------------------
# 4 (continued) and 6. SQLite counters survive a restart; a store that fails, fails closed
# ---------------------------------------------------------------------------------------
STORE = {
    "version": "1",
    "default": "deny",
    "tools": {"list_files": {"limits": [sliding("files", 3)]}, "ssh_session_start": {}},
}
STORE_DENIAL = "rate limits cannot be checked right now (counter store unavailable); try again later"


@contextlib.contextmanager
def running(gw: Gateway):
    try:
        yield gw
    finally:
        gw.stop()
        sys.stderr.write(f"--- toolgate log ({gw.config}) ---\n{gw.log()[-5000:]}\n")


@contextlib.contextmanager
def write_locked(db: Path):
    """Another process holding SQLite's write lock on the state file (as a second toolgate
    stuck mid-transaction would)."""
    # A short wait: the gateway itself writes (audit records) in brief transactions.
    con = sqlite3.connect(str(db), timeout=5, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


async def test_sqlite_counters_survive_a_restart_and_a_store_that_cannot_answer_fails_closed(tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    home = tmp_path / "gw"
    home.mkdir()
    db = home / "state" / "state.db"
    servers = policy_server("ssh", log)
    start = {"credentialName": "prod"}
    with running(Gateway(home, servers, policy=STORE, state='counters = "sqlite"\nstore_timeout = "300ms"')) as gw:
        v = version_of(gw)
        assert db.is_file()
        async with connect(gw) as alice:
            for i in range(2):
                assert_passed(
                    await alice.call_tool("list_files", {"path": str(i)}), "ssh", "list_files", {"path": str(i)}
                )
            with write_locked(db):
                started = time.monotonic()
                refused = await alice.call_tool("list_files", {"path": "locked"})
                assert time.monotonic() - started < 5
                message = assert_denied(refused, "error", "/tools/list_files/limits/0", v)
                assert message == STORE_DENIAL
                # A call that takes no counter does not need the store.
                assert_passed(await alice.call_tool("ssh_session_start", start), "ssh", "ssh_session_start", start)
            assert "rate-limit store failed; denying the call (fail closed)" in gw.log()
            # The store answers again, and the refused call took nothing: one left.
            assert_passed(await alice.call_tool("list_files", {"path": "2"}), "ssh", "list_files", {"path": "2"})
            assert_denied(
                await alice.call_tool("list_files", {"path": "3"}), "limited", "/tools/list_files/limits/0", v
            )
    assert [a["path"] for a in log.args("list_files")] == ["0", "1", "2"]

    # Restarted on the same state directory: the count is still there. This time the store
    # failing lets calls through uncounted (`on_store_error = "allow"`).
    state = 'counters = "sqlite"\nstore_timeout = "300ms"\non_store_error = "allow"'
    with running(Gateway(home, servers, policy=STORE, state=state)) as gw:
        async with connect(gw) as alice:
            message = assert_denied(
                await alice.call_tool("list_files", {"path": "4"}), "limited", "/tools/list_files/limits/0", v
            )
            assert limit_message_re("files", 3, "sliding hour", "grant").fullmatch(message), message
            with write_locked(db):
                assert_passed(
                    await alice.call_tool("list_files", {"path": "open"}), "ssh", "list_files", {"path": "open"}
                )
            assert "letting the call through uncounted" in gw.log()
            assert_denied(
                await alice.call_tool("list_files", {"path": "5"}), "limited", "/tools/list_files/limits/0", v
            )
    assert [a["path"] for a in log.args("list_files")] == ["0", "1", "2", "open"]


async def test_memory_counters_start_from_zero_after_a_restart(tmp_path):
    """The contrast to the SQLite test: with the default store a restart forgets the counts."""
    log = CallLog(tmp_path / "calls.jsonl")
    home = tmp_path / "gw"
    home.mkdir()
    policy = {"version": "1", "default": "deny", "tools": {"list_files": {"limits": [sliding("files", 1)]}}}
    for run in range(2):
        with running(Gateway(home, policy_server("ssh", log), policy=policy)) as gw:
            async with connect(gw) as alice:
                assert_passed(
                    await alice.call_tool("list_files", {"path": str(run)}), "ssh", "list_files", {"path": str(run)}
                )
                assert_denied(
                    await alice.call_tool("list_files", {}), "limited", "/tools/list_files/limits/0", version_of(gw)
                )
    assert log.args("list_files") == [{"path": "0"}, {"path": "1"}]


# ---------------------------------------------------------------------------------------
# 5. Hot reload
# ---------------------------------------------------------------------------------------
def write_policy(gw: Gateway, policy: dict | str, grant: str = "alice") -> str:
    """Replaces a grant's policy file (atomically, as an editor or deploy tool would); returns its version."""
    text = policy if isinstance(policy, str) else json.dumps(policy, indent=2)
    path = gw.config.parent / f"policy-{grant}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return policy_version(text)


async def decision_of(client: Client, tool: str, args: dict) -> tuple[str, str | None]:
    """`(decision, policy_version)` of a call: `allowed` for an upstream answer, `unknown` for a
    hidden tool, else the denial's decision."""
    try:
        result = await client.call_tool(tool, args)
    except MCPError as e:
        assert e.error.message == f"Unknown tool: {tool}", e.error
        return "unknown", None
    meta = (result.meta or {}).get(DECISION)
    if meta is None:
        assert not result.is_error, text_of(result)
        return "allowed", None
    return meta["decision"], meta["policy_version"]


async def test_a_changed_policy_file_governs_the_next_call_of_an_open_session(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    first = {"version": "1", "default": "deny", "tools": {"list_files": {}, "ssh_exec": {}}}
    gw = gateway_factory(policy_server("ssh", log), policy=first, state='policy_reload_interval = "200ms"')
    async with connect(gw) as alice:
        assert await tool_names(alice) == ["list_files", "ssh_exec"]
        assert await decision_of(alice, "list_files", {}) == ("allowed", None)
        second = write_policy(
            gw,
            {
                "version": "1",
                "default": "deny",
                "tools": {"list_files": {"action": "deny", "on_deny": "files are off today"}, "delete_account": {}},
            },
        )
        changed_after = time.monotonic()
        while (seen := await decision_of(alice, "list_files", {"path": "/poll"})) == ("allowed", None):
            assert time.monotonic() - changed_after < 5, "the changed policy was not picked up within 5 s"
            await anyio.sleep(0.05)
        assert seen == ("denied", second)
        message = assert_denied(await alice.call_tool("list_files", {}), "denied", "/tools/list_files/action", second)
        assert message == "files are off today"
        assert await tool_names(alice) == ["delete_account", "list_files"]
        await assert_unknown(alice, "ssh_exec", {"credentialName": "prod", "command": "id"})
        assert_passed(await alice.call_tool("delete_account", {"id": "9"}), "ssh", "delete_account", {"id": "9"})
    assert "policy reloaded" in gw.log()
    assert not log.args("ssh_exec")


async def test_a_reloaded_policy_tells_open_sessions_that_their_tool_list_changed(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(
        policy_server("ssh", log),
        policy={"version": "1", "default": "deny", "tools": {"list_files": {}}},
        bob_policy={"version": "1", "default": "deny", "tools": {"list_files": {}}},
        state='policy_reload_interval = "100ms"',
    )
    # One upstream: its capabilities are passed on, but the gateway says it announces list changes.
    init = RawMcp(gw.url, TOKEN).init_result
    assert init["capabilities"]["tools"]["listChanged"] is True, init
    changed = {"alice": anyio.Event(), "bob": anyio.Event()}

    def handler(name: str):
        async def on_message(message) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                changed[name].set()

        return on_message

    async with (
        Client(mcp_http_transport(gw.url, TOKEN), mode="legacy", message_handler=handler("alice")) as alice,
        Client(mcp_http_transport(gw.url, OTHER_TOKEN), mode="legacy", message_handler=handler("bob")) as bob,
    ):
        assert await tool_names(alice) == ["list_files"]
        assert await tool_names(bob) == ["list_files"]
        write_policy(gw, {"version": "1", "default": "deny", "tools": {"list_files": {}, "ssh_exec": {}}})
        with anyio.fail_after(10):
            await changed["alice"].wait()
        assert await tool_names(alice) == ["list_files", "ssh_exec"]
        # Only the sessions of the grant whose policy changed are told.
        await anyio.sleep(0.5)
        assert not changed["bob"].is_set()
        assert await tool_names(bob) == ["list_files"]


BROKEN_FIELD = """{
  "version": "1",
  "default": "deny",
  "tools": {
    "list_files": {"acton": "deny"}
  }
}
"""
BROKEN_JSON = '{"version": "1", "default": "deny", "tools": {"list_files": {},}}\n'


async def test_sighup_reloads_at_once_and_a_broken_policy_keeps_the_one_in_force(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    first = {"version": "1", "default": "deny", "tools": {"list_files": {}}}
    # The periodic check is an hour away: only SIGHUP can make these reloads happen.
    gw = gateway_factory(policy_server("ssh", log), policy=first, state='policy_reload_interval = "1h"')
    v1 = version_of(gw)
    async with connect(gw) as alice:
        assert await decision_of(alice, "list_files", {}) == ("allowed", None)

        # A policy with an unknown field: the log names the pointer, line and fix; nothing changes.
        write_policy(gw, BROKEN_FIELD)
        gw.proc.send_signal(signal.SIGHUP)
        error = (
            "5:20: /tools/list_files/acton: unknown field `acton` in tool `list_files` (hint: did you mean `action`?)"
        )
        await async_poll(lambda: error in gw.log(), timeout=5)
        assert error in gw.log(), gw.log()[-3000:]
        assert "invalid policy; keeping the one in force" in gw.log()
        assert await decision_of(alice, "list_files", {"path": "after-broken"}) == ("allowed", None)
        assert await tool_names(alice) == ["list_files"]

        # Not JSON at all: the same, with the parser's position.
        write_policy(gw, BROKEN_JSON)
        gw.proc.send_signal(signal.SIGHUP)
        await async_poll(lambda: "1:64: (document): not valid JSON: trailing comma" in gw.log(), timeout=5)
        assert "1:64: (document): not valid JSON: trailing comma" in gw.log(), gw.log()[-3000:]
        assert await decision_of(alice, "list_files", {"path": "after-json"}) == ("allowed", None)

        # A valid policy again: SIGHUP applies it to the open session's next call.
        fixed = write_policy(gw, {"version": "1", "default": "deny", "tools": {"list_files": {"action": "deny"}}})
        gw.proc.send_signal(signal.SIGHUP)
        signalled = time.monotonic()
        while (seen := await decision_of(alice, "list_files", {"path": "/poll"})) == ("allowed", None):
            assert time.monotonic() - signalled < 3, "SIGHUP did not reload the policy"
            await anyio.sleep(0.02)
        assert seen == ("denied", fixed)
    assert gw.proc.poll() is None, "SIGHUP stopped the gateway"
    assert v1 != fixed
    assert {"path": "after-broken"} in log.args("list_files") and {"path": "after-json"} in log.args("list_files")


# ---------------------------------------------------------------------------------------
# 7. Approvals
# ---------------------------------------------------------------------------------------
APPROVER = r"""
import json, sys, time
request = json.loads(sys.stdin.readline())
with open(sys.argv[1], "a") as log:
    log.write(json.dumps(request) + "\n")
args = request["arguments"]
if args.get("reason") == "slow":
    time.sleep(30)
if isinstance(args.get("amount"), (int, float)) and args["amount"] <= 500:
    sys.exit(0)
print(f"amount too large for self-service: {args.get('amount')}")
print("this second line is not part of the reason")
sys.exit(1)
"""
APPROVE = {
    "version": "1",
    "default": "deny",
    "tools": {
        "create_charge": {"action": "approve", "approval": {"timeout": "2s", "approvers": ["finance"]}},
        "list_files": {},
    },
}


async def test_held_calls_run_when_the_approver_says_yes_and_are_denied_with_its_reason_otherwise(
    gateway_factory, tmp_path
):
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
    async with connect(gw) as alice:
        assert await tool_names(alice) == ["create_charge", "list_files"]
        # Approved: the held call goes through and the client gets the upstream's answer.
        lunch = {"amount": 120, "reason": "team lunch"}
        assert_passed(await alice.call_tool("create_charge", lunch), "ssh", "create_charge", lunch)
        # Refused: the approver's first line of output is the reason.
        big = {"amount": 9000, "reason": "new laptop"}
        message = assert_denied(await alice.call_tool("create_charge", big), "approval_denied", rule, v)
        assert message == "a human denied this call: amount too large for self-service: 9000"
        # No answer within the approval's timeout: expired.
        started = time.monotonic()
        slow = await alice.call_tool("create_charge", {"amount": 10, "reason": "slow"})
        waited = time.monotonic() - started
        message = assert_denied(slow, "approval_expired", rule, v)
        assert message == "the approval request expired without an answer"
        assert 1.8 <= waited < 10, waited
        # Calls that need no approval do not ask.
        assert_passed(await alice.call_tool("list_files", {}), "ssh", "list_files", {})

    # A grant without a policy sees no tools and can call none.
    async with connect(gw, token=OTHER_TOKEN) as bob:
        assert await tool_names(bob) == []
        await assert_unknown(bob, "create_charge", {"amount": 1})
        await assert_unknown(bob, "list_files", {})

    assert log.args("create_charge") == [lunch]
    assert log.args("list_files") == [{}]
    seen = [json.loads(line) for line in asked.read_text().splitlines()]
    assert [r["arguments"] for r in seen] == [lunch, big, {"amount": 10, "reason": "slow"}]
    assert {(r["grant"], r["server"], r["tool"], r["rule"], r["policy_version"], r["timeout_ms"]) for r in seen} == {
        ("alice", "ssh", "create_charge", rule, v, 2000)
    }


CONDITIONAL = {
    "version": "1",
    "default": "deny",
    "tools": {
        "create_charge": {
            "approve_if": [{"path": "args.amount", "op": "gt", "value": 100}],
            "approval": {"timeout": "5s", "approvers": ["finance"]},
            "limits": [{"counter": "charges", "window": "minute", "max": 2}],
        },
    },
}


async def test_conditional_approval_asks_only_for_big_charges_and_never_for_calls_over_their_limit(
    gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    script = tmp_path / "approver.py"
    script.write_text(APPROVER)
    asked = tmp_path / "asked.jsonl"
    gw = gateway_factory(
        policy_server("ssh", log),
        policy=CONDITIONAL,
        extra=f"\n[approvals]\ncommand = {toml_list([PYTHON, str(script), str(asked)])}\n",
    )
    v = version_of(gw)
    await sleep_past_boundary(60, 15)
    async with connect(gw) as alice:
        small = {"amount": 20}
        assert_passed(await alice.call_tool("create_charge", small), "ssh", "create_charge", small)
        # Over 100: a human is asked; a refusal gives the call's count back.
        big = {"amount": 9000}
        message = assert_denied(
            await alice.call_tool("create_charge", big), "approval_denied", "/tools/create_charge/approve_if/0", v
        )
        assert message == "a human denied this call: amount too large for self-service: 9000"
        medium = {"amount": 300}
        assert_passed(await alice.call_tool("create_charge", medium), "ssh", "create_charge", medium)
        # The limit (2 a minute) is full: refused without asking anyone, big or small.
        for args in ({"amount": 400}, {"amount": 5}):
            message = assert_denied(
                await alice.call_tool("create_charge", args), "limited", "/tools/create_charge/limits/0", v
            )
            assert "rate limit `charges` reached: at most 2 per minute per grant" in message, message
    assert log.args("create_charge") == [small, medium]
    seen = [json.loads(line) for line in asked.read_text().splitlines()]
    assert [(r["arguments"], r["approvers"], r["rule"]) for r in seen] == [
        (big, ["finance"], "/tools/create_charge/approve_if/0"),
        (medium, ["finance"], "/tools/create_charge/approve_if/0"),
    ]


async def test_without_an_approval_command_a_held_call_waits_in_the_queue_and_expires_unanswered(
    gateway_factory, tmp_path
):
    """Without a command the call waits for `toolgate approvals` (tests/e2e/test_approvals.py);
    nobody answering within the approval's timeout denies it as expired."""
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=APPROVE)
    async with connect(gw, mode="2026-07-28") as alice:
        started = time.monotonic()
        message = assert_denied(
            await alice.call_tool("create_charge", {"amount": 1}),
            "approval_expired",
            "/tools/create_charge/action",
            version_of(gw),
        )
        assert 1.8 <= time.monotonic() - started < 10
        assert message == "the approval request expired without an answer"
    assert not log.entries()
    assert "call held for a human's approval: toolgate approvals approve" in gw.log()


async def test_an_approval_command_that_cannot_be_started_leaves_the_call_to_other_approvers(
    gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(
        policy_server("ssh", log),
        policy=APPROVE,
        extra='\n[approvals]\ncommand = ["./no-such-approver", "--ask"]\n',
    )
    async with connect(gw) as alice:
        message = assert_denied(
            await alice.call_tool("create_charge", {"amount": 1}),
            "approval_expired",
            "/tools/create_charge/action",
            version_of(gw),
        )
        assert message == "the approval request expired without an answer"
    assert not log.entries()
    # The operator's log says why, with the path resolved against the config file's directory.
    assert "cannot start the approval command" in gw.log()
    assert f"program={gw.config.parent}/./no-such-approver " in gw.log()


def test_arguments_that_are_not_an_object_are_refused_and_never_forwarded(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(
        policy_server("ssh", log),
        policy={"version": "1", "default": "deny", "hide": ["delete_account"], "tools": {"list_files": {}}},
    )
    raw = RawMcp(gw.url, TOKEN)
    for arguments in ([1, 2], "ls", None, 7):
        answer = raw.request("tools/call", {"name": "list_files", "arguments": arguments})[-1]
        assert answer["error"]["code"] == -32602, answer
        assert answer["error"]["message"] == "tools/call `arguments` must be an object", answer
        # A hidden tool stays indistinguishable from a missing one, whatever the arguments.
        hidden = raw.request("tools/call", {"name": "delete_account", "arguments": arguments})[-1]
        assert hidden["error"] == {"code": -32602, "message": "Unknown tool: delete_account"}, hidden
    # Absent arguments are an empty object, which is fine.
    ok = raw.request("tools/call", {"name": "list_files"})[-1]
    assert "result" in ok and not ok["result"].get("isError"), ok
    assert log.args("list_files") == [{}]


# ---------------------------------------------------------------------------------------
# 8. The same denials for 2026-07-28 clients and over `toolgate stdio`
# ---------------------------------------------------------------------------------------
MODERN = {
    "version": "1",
    "default": "deny",
    "hide": ["delete_account"],
    "tools": {
        "ssh_exec": {"deny_if": [{"path": "args.command", "op": "starts_with", "value": "sudo"}]},
        "create_charge": {"limits": [sliding("spend", 100, increment_from="args.amount")]},
        "delete_account": {},
    },
}
SUDO = {"credentialName": "prod", "command": "sudo reboot"}
SUDO_DENIAL = 'denied because args.command starts_with "sudo"'


async def check_modern_policy(client: Client, version: str, log: CallLog, server: str = "ssh") -> None:
    """The MODERN policy as any client sees it, whatever the transport or protocol revision."""
    assert await tool_names(client) == ["create_charge", "ssh_exec"]
    uptime = {"credentialName": "prod", "command": "uptime"}
    assert_passed(await client.call_tool("ssh_exec", uptime), server, "ssh_exec", uptime)
    message = assert_denied(await client.call_tool("ssh_exec", SUDO), "denied", "/tools/ssh_exec/deny_if/0", version)
    assert message == SUDO_DENIAL
    assert_passed(await client.call_tool("create_charge", {"amount": 80}), server, "create_charge", {"amount": 80})
    message = assert_denied(
        await client.call_tool("create_charge", {"amount": 30}), "limited", "/tools/create_charge/limits/0", version
    )
    assert limit_message_re("spend", 100, "sliding hour", "grant").fullmatch(message), message
    await assert_unknown(client, "delete_account", {"id": "1"})
    assert log.args("ssh_exec") == [uptime]
    assert log.args("create_charge") == [{"amount": 80}]
    assert not log.args("delete_account")


async def test_a_2026_07_28_client_gets_the_same_denials(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=MODERN)
    v = version_of(gw)
    async with connect(gw, mode="2026-07-28") as alice:
        assert alice.protocol_version == "2026-07-28"
        await check_modern_policy(alice, v, log)

    # On the wire, the denial is the same result in both protocol generations.
    expected = {
        "content": [{"type": "text", "text": DENIED + SUDO_DENIAL}],
        "isError": True,
        "_meta": {DECISION: {"decision": "denied", "rule": "/tools/ssh_exec/deny_if/0", "policy_version": v}},
    }
    with RawMcp(gw.url, token=TOKEN, mode="legacy") as legacy, RawMcp(gw.url, token=TOKEN, mode="2026-07-28") as modern:
        assert legacy.result("tools/call", {"name": "ssh_exec", "arguments": SUDO}) == expected
        modern_result = modern.result("tools/call", {"name": "ssh_exec", "arguments": SUDO})
        assert modern_result.pop("resultType", "complete") == "complete"
        assert modern_result == expected
    assert not [a for a in log.args("ssh_exec") if a == SUDO]


async def test_toolgate_stdio_applies_the_grants_policy(tmp_path):
    require(TOOLGATE, "run `cargo build` first")
    log = CallLog(tmp_path / "calls.jsonl")
    config = tmp_path / "toolgate.toml"
    config.write_text(
        f"[state]\ndir = {toml_str(str(tmp_path / 'state'))}\n"
        + policy_server("ssh", log)
        + grant_tables(tmp_path, MODERN)
    )
    params = StdioServerParameters(
        command=str(TOOLGATE), args=["stdio", "--config", str(config), "--grant", "alice"], env={**os.environ}
    )
    async with Client(params, mode="legacy") as alice:
        await check_modern_policy(alice, policy_version((tmp_path / "policy-alice.json").read_text()), log)
