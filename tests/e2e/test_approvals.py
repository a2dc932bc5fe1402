"""Approvals bound to the exact call: a held call waits in a queue that `toolgate approvals`
and the admin API answer; an approval lets that call through once, never a retry with other
arguments. Real `mcp` clients, the real `toolgate serve`, the policy fixture upstream."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest

from mcp import Client

from conftest import TOKEN, TOOLGATE, free_port, mcp_http_transport, parse_sse_or_json, sha256_hex, wait_for_port
from test_shared_state import audit_records
from test_policy import CallLog, assert_denied, assert_passed, connect, policy_server, version_of

pytestmark = pytest.mark.anyio

RULE = "/tools/create_charge/action"
HOLD = {
    "version": "1",
    "default": "deny",
    "audit": {"redact": ["args.reason"]},
    "tools": {
        "create_charge": {"action": "approve", "approval": {"timeout": "30s", "approvers": ["finance"]}},
        "list_files": {},
    },
}
ADMIN_TOKEN = "tg_admin_token_approvals"


def approvals(gw, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TOOLGATE), "approvals", *args, "--config", str(gw.config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def pending(gw) -> list[dict]:
    out = approvals(gw, "list", "--json")
    assert out.returncode == 0, out
    return json.loads(out.stdout)["approvals"]


async def wait_pending(gw, count: int = 1) -> list[dict]:
    with anyio.fail_after(10):
        while len(found := pending(gw)) < count:
            await anyio.sleep(0.1)
    return found


async def test_a_held_call_is_let_through_once_by_toolgate_approvals_approve(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=HOLD)
    charge = {"amount": 120, "reason": "team lunch"}
    results: list = []
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with connect(gw) as alice, anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await alice.call_tool("create_charge", charge, progress_callback=on_progress))

        tg.start_soon(call)
        [held] = await wait_pending(gw)
        assert held["status"] == "pending"
        assert (held["grant"], held["server"], held["tool"], held["rule"]) == ("alice", "ssh", "create_charge", RULE)
        assert held["policy_version"] == version_of(gw)
        assert held["approvers"] == ["finance"]
        # The approver sees the arguments, redacted as the policy's audit says.
        assert held["arguments"] == {"amount": 120, "reason": "[REDACTED]"}
        assert len(held["args_sha256"]) == 64
        shown = approvals(gw, "show", held["id"])
        assert shown.returncode == 0 and '"amount": 120' in shown.stdout, shown
        assert "ssh/create_charge by grant alice" in shown.stdout
        assert not log.entries(), "a held call reached the upstream"
        with anyio.fail_after(5):
            while not progress:
                await anyio.sleep(0.05)
        assert progress[0] == f"waiting for a human's approval ({held['id']})"

        out = approvals(gw, "approve", held["id"], "--reason", "fine")
        assert out.returncode == 0, out
        assert out.stdout.startswith(f"approved {held['id']}: ssh/create_charge for grant alice")
    [result] = results
    assert_passed(result, "ssh", "create_charge", charge)
    # Used once: it cannot be approved again, and the list shows how it ended.
    again = approvals(gw, "approve", held["id"])
    assert again.returncode == 1 and "is used, not pending" in again.stderr, again
    everything = json.loads(approvals(gw, "list", "--all", "--json").stdout)["approvals"]
    assert [(a["status"], a["decided_by"].startswith("cli:")) for a in everything] == [("used", True)]
    assert pending(gw) == []


async def test_a_denial_reaches_the_agent_with_the_humans_reason(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=HOLD)
    results: list = []
    async with connect(gw, mode="2026-07-28") as alice, anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await alice.call_tool("create_charge", {"amount": 9000}))

        tg.start_soon(call)
        [held] = await wait_pending(gw)
        bare = approvals(gw, "deny", held["id"])
        assert bare.returncode == 2 and "--reason" in bare.stderr, bare
        out = approvals(gw, "deny", held["id"], "--reason", "over the self-service limit")
        assert out.returncode == 0, out
    message = assert_denied(results[0], "approval_denied", RULE, version_of(gw))
    assert message == "a human denied this call: over the self-service limit"
    assert not log.entries()


async def test_an_approval_binds_the_exact_call_a_retry_with_other_arguments_asks_again(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=HOLD)
    first = {"amount": 50, "reason": "books"}
    async with connect(gw) as alice:
        # The agent gives up waiting (the SDK cancels the call); the approval stays in the queue.
        with anyio.move_on_after(1.0):
            await alice.call_tool("create_charge", first)
        [held] = await wait_pending(gw)
        # Approved only once the gateway has seen the cancellation: a call still held when its
        # approval comes goes through (and uses it up), as it should.
        with anyio.fail_after(10):
            while not [r for r in audit_records(gw, "--tool", "create_charge") if r.get("decision") == "cancelled"]:
                await anyio.sleep(0.1)
        assert approvals(gw, "approve", held["id"]).returncode == 0
        # The same call again (same session, same arguments): it goes through on that approval,
        # without asking anyone.
        started = time.monotonic()
        assert_passed(await alice.call_tool("create_charge", first), "ssh", "create_charge", first)
        assert time.monotonic() - started < 5
        assert pending(gw) == []
        # Once: the same call a third time is held again.
        results: list = []
        async with anyio.create_task_group() as tg:

            async def call(args: dict) -> None:
                results.append(await alice.call_tool("create_charge", args))

            tg.start_soon(call, first)
            [again] = await wait_pending(gw)
            assert again["id"] != held["id"]
            assert approvals(gw, "deny", again["id"], "--reason", "once is enough").returncode == 0
        assert_denied(results[0], "approval_denied", RULE)
        # Other arguments: a new question, not the old answer.
        with anyio.move_on_after(1.0):
            await alice.call_tool("create_charge", {"amount": 5000, "reason": "books"})
        [other] = await wait_pending(gw)
        assert other["arguments"]["amount"] == 5000 and other["id"] not in (held["id"], again["id"])
        assert other["arguments"]["reason"] == "[REDACTED]"
    assert [e["args"] for e in log.entries("create_charge")] == [first]


def test_a_held_call_the_client_cancels_ends_without_an_answer_and_its_approval_stays_queued(gateway_factory, tmp_path):
    """`notifications/cancelled` for a call waiting on a human: the wait ends at once with no
    JSON-RPC answer (the spec's rule for cancelled requests), nothing reaches the upstream, and
    the approval stays in the queue for a retry. Before, the held call went on waiting and
    took the approval when it came, so the client's retry was held again."""
    from conftest import RawMcp

    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=HOLD)
    charge = {"amount": 75, "reason": "cancelled lunch"}
    with RawMcp(gw.url, token=gw.token) as raw, ThreadPoolExecutor(1) as pool:
        body = {"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"name": "create_charge", "arguments": charge}}
        held_post = pool.submit(raw.post, body, raw._headers("tools/call", None))
        [held] = anyio.run(wait_pending, gw)
        started = time.monotonic()
        raw.notify("notifications/cancelled", {"requestId": 41, "reason": "the user gave up"})
        answer = held_post.result(timeout=10)
        assert time.monotonic() - started < 5, "the held call stopped waiting when cancelled"
        assert answer.status_code == 200, answer.text
        assert parse_sse_or_json(answer) == [], answer.text
        [still] = pending(gw)
        assert still["id"] == held["id"] and still["status"] == "pending"
        assert log.entries("create_charge") == []
        # Approved now, the client's retry of the same call goes through on it, once.
        assert approvals(gw, "approve", held["id"]).returncode == 0
        retry = raw.request("tools/call", {"name": "create_charge", "arguments": charge})[-1]
        assert retry["result"].get("isError") is not True, retry
    assert [e["args"] for e in log.entries("create_charge")] == [charge]
    assert pending(gw) == []


async def test_the_admin_api_lists_and_decides_approvals_and_wakes_the_held_call_at_once(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    port = free_port()
    gw = gateway_factory(
        policy_server("ssh", log),
        policy=HOLD,
        listen_extra=f'admin = "127.0.0.1:{port}"',
        extra=f'\n[admin.tokens.ops]\ntoken_sha256 = "{sha256_hex(ADMIN_TOKEN)}"\nrole = "admin"\n',
    )
    wait_for_port(port, gw.proc)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    results: list = []
    async with connect(gw) as alice, anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await alice.call_tool("create_charge", {"amount": 7}))

        tg.start_soon(call)
        with anyio.fail_after(10):
            while not (listed := httpx.get(base + "/api/approvals", headers=auth, timeout=5).json()["approvals"]):
                await anyio.sleep(0.1)
        [held] = listed
        one = httpx.get(f"{base}/api/approvals/{held['id']}", headers=auth, timeout=5)
        assert one.status_code == 200 and one.json()["arguments"] == {"amount": 7}
        assert httpx.post(f"{base}/api/approvals/{held['id']}/deny", headers=auth, json={}, timeout=5).status_code == 400
        started = time.monotonic()
        ok = httpx.post(f"{base}/api/approvals/{held['id']}/approve", headers=auth, json={"reason": "ok"}, timeout=5)
        assert ok.status_code == 200 and ok.json()["status"] == "approved", ok.text
        with anyio.fail_after(5):
            while not results:
                await anyio.sleep(0.01)
        # Woken in-process, not at the next poll.
        assert time.monotonic() - started < 0.25 + 0.5
        conflict = httpx.post(f"{base}/api/approvals/{held['id']}/approve", headers=auth, timeout=5)
        assert conflict.status_code == 409
        assert httpx.get(f"{base}/api/approvals/nope", headers=auth, timeout=5).status_code == 404
    assert_passed(results[0], "ssh", "create_charge", {"amount": 7})


async def test_the_webhook_is_told_of_each_new_pending_approval(gateway_factory, tmp_path):
    import http.server
    import threading

    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            length = int(self.headers["Content-Length"])
            received.append({"path": self.path, "type": self.headers["Content-Type"],
                             "body": json.loads(self.rfile.read(length))})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        log = CallLog(tmp_path / "calls.jsonl")
        url = f"http://127.0.0.1:{server.server_address[1]}/toolgate/approvals"
        gw = gateway_factory(policy_server("ssh", log), policy=HOLD, extra=f'\n[approvals]\nwebhook = "{url}"\n')
        results: list = []
        async with connect(gw) as alice, anyio.create_task_group() as tg:

            async def call() -> None:
                results.append(await alice.call_tool("create_charge", {"amount": 3, "reason": "pens"}))

            tg.start_soon(call)
            [held] = await wait_pending(gw)
            with anyio.fail_after(10):
                while not received:
                    await anyio.sleep(0.05)
            assert approvals(gw, "deny", held["id"], "--reason", "no pens").returncode == 0
        [notice] = received
        assert notice["path"] == "/toolgate/approvals" and notice["type"] == "application/json"
        assert notice["body"]["event"] == "approval_pending"
        told = notice["body"]["approval"]
        assert told["id"] == held["id"] and told["tool"] == "create_charge" and told["grant"] == "alice"
        assert told["arguments"] == {"amount": 3, "reason": "[REDACTED]"}
        assert_denied(results[0], "approval_denied", RULE)
    finally:
        server.shutdown()


CLIENT_HOLD = {
    "version": "1",
    "default": "deny",
    "tools": {"create_charge": {"action": "approve", "approval": {"timeout": "30s", "approvers": ["client"]}}},
}


async def test_approvers_client_asks_the_calling_users_client_by_elicitation(gateway_factory, tmp_path):
    import mcp_types as types

    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=CLIENT_HOLD)
    asked: list[types.ElicitRequestParams] = []
    answers = [
        types.ElicitResult(action="accept", content={"approve": True}),
        types.ElicitResult(action="accept", content={"approve": False, "reason": "too expensive"}),
        types.ElicitResult(action="decline"),
    ]

    async def on_elicit(context, params):
        asked.append(params)
        return answers[len(asked) - 1]

    async with Client(mcp_http_transport(gw.url, TOKEN), mode="legacy", elicitation_callback=on_elicit) as alice:
        assert_passed(await alice.call_tool("create_charge", {"amount": 5}), "ssh", "create_charge", {"amount": 5})
        refused = await alice.call_tool("create_charge", {"amount": 50000})
        assert assert_denied(refused, "approval_denied", RULE) == "a human denied this call: too expensive"
        declined = await alice.call_tool("create_charge", {"amount": 6})
        assert assert_denied(declined, "approval_denied", RULE) == "a human denied this call: the user declined it"
    assert len(asked) == 3
    assert "create_charge" in asked[0].message and '"amount":5' in asked[0].message, asked[0].message
    assert asked[0].requested_schema["required"] == ["approve"]
    decided = json.loads(approvals(gw, "list", "--all", "--json").stdout)["approvals"]
    assert sorted((a["status"], a["decided_by"]) for a in decided) == [
        ("denied", "client"), ("denied", "client"), ("used", "client")
    ]
    assert [e["args"] for e in log.entries("create_charge")] == [{"amount": 5}]


async def test_a_client_without_elicitation_leaves_the_decision_to_the_queue(gateway_factory, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=CLIENT_HOLD)
    results: list = []
    async with connect(gw) as alice, anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await alice.call_tool("create_charge", {"amount": 1}))

        tg.start_soon(call)
        [held] = await wait_pending(gw)
        assert approvals(gw, "approve", held["id"]).returncode == 0
    assert_passed(results[0], "ssh", "create_charge", {"amount": 1})


async def test_approvers_client_asks_a_2026_07_28_client_by_input_required(gateway_factory, tmp_path):
    """A stateless client cannot be sent a request: the held call is answered
    `input_required` with the approval question and a MAC'd `requestState`; the client's retry
    carries the user's answer, which decides the approval and lets the call through once."""
    import mcp_types as types

    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=CLIENT_HOLD)
    asked: list[types.ElicitRequestParams] = []
    answers = [
        types.ElicitResult(action="accept", content={"approve": True}),
        types.ElicitResult(action="accept", content={"approve": False, "reason": "not today"}),
    ]

    async def on_elicit(context, params):
        asked.append(params)
        return answers[len(asked) - 1]

    async with Client(mcp_http_transport(gw.url, TOKEN), mode="2026-07-28", elicitation_callback=on_elicit) as alice:
        assert_passed(await alice.call_tool("create_charge", {"amount": 7}), "ssh", "create_charge", {"amount": 7})
        refused = await alice.call_tool("create_charge", {"amount": 70000})
        assert assert_denied(refused, "approval_denied", RULE) == "a human denied this call: not today"
    assert len(asked) == 2
    assert "create_charge" in asked[0].message and '"amount":7' in asked[0].message, asked[0].message
    decided = json.loads(approvals(gw, "list", "--all", "--json").stdout)["approvals"]
    assert sorted((a["status"], a["decided_by"]) for a in decided) == [("denied", "client"), ("used", "client")]
    assert [e["args"] for e in log.entries("create_charge")] == [{"amount": 7}]


def test_an_approval_request_state_cannot_be_forged_or_moved_to_other_arguments(gateway_factory, tmp_path):
    from conftest import RawMcp

    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=CLIENT_HOLD)
    raw = RawMcp(gw.url, token=gw.token, mode="2026-07-28", capabilities={"elicitation": {}})
    first = raw.request("tools/call", {"name": "create_charge", "arguments": {"amount": 1}})[-1]["result"]
    assert first["resultType"] == "input_required", first
    state = first["requestState"]
    assert set(first["inputRequests"]) == {"approval"}
    yes = {"approval": {"action": "accept", "content": {"approve": True}}}
    # A changed MAC is refused before anything is decided.
    forged = state[:-4] + ("0000" if not state.endswith("0000") else "1111")
    answer = raw.request("tools/call", {"name": "create_charge", "arguments": {"amount": 1}, "requestState": forged, "inputResponses": yes})
    assert answer[-1]["error"]["message"] == "unknown or expired requestState"
    # The approval is for amount 1: answering it with other arguments approves nothing.
    moved = raw.request("tools/call", {"name": "create_charge", "arguments": {"amount": 999}, "requestState": state, "inputResponses": yes})[-1]["result"]
    assert moved["isError"] is True
    assert "another call" in moved["content"][0]["text"]
    assert log.entries("create_charge") == []
    [still] = pending(gw)
    assert still["status"] == "pending"


URL_HOLD = {
    "version": "1",
    "default": "deny",
    "tools": {
        "create_charge": {"action": "approve",
                          "approval": {"timeout": "30s", "approvers": ["client"], "ask_client": "url"}},
        "delete_account": {"action": "approve", "approval": {"timeout": "30s", "approvers": ["finance"]}},
    },
}


SESSION_KEY = "5e" * 32


def link_key(approval: str) -> str:
    """The key of approval's link under SESSION_KEY: HMAC-SHA256 of the length-prefixed parts."""
    import hashlib
    import hmac

    message = b"".join(len(p).to_bytes(8, "big") + p for p in [b"approval-link", approval.encode()])
    return hmac.new(bytes.fromhex(SESSION_KEY), message, hashlib.sha256).hexdigest()


def url_gateway(gateway_factory, tmp_path):
    port = free_port()
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=URL_HOLD, listen_extra=f'admin = "127.0.0.1:{port}"',
                         state=f'session_key = "{SESSION_KEY}"')
    wait_for_port(port, gw.proc)
    return gw, f"http://127.0.0.1:{port}", log


def form_of(page: str) -> dict:
    """The hidden key and the form's action on an approval page."""
    import re

    [action] = re.findall(r'<form method="post" action="([^"]+)"', page)
    [key] = re.findall(r'<input type="hidden" name="key" value="([0-9a-f]+)">', page)
    return {"action": action, "key": key}


async def test_ask_client_url_sends_a_link_to_the_web_uis_page_where_the_user_decides(gateway_factory, tmp_path):
    import mcp_types as types

    gw, base, log = url_gateway(gateway_factory, tmp_path)
    asked: list = []
    pages: list[str] = []
    verdicts = iter([("approve", ""), ("deny", "not this account")])

    async def open_and_decide(url: str, verdict: str, reason: str) -> None:
        # What the user does in a browser: open the link, read the call, press a button.
        async with httpx.AsyncClient(timeout=10) as web:
            page = (await web.get(url)).text
            pages.append(page)
            form = form_of(page)
            done = await web.post(base + form["action"], headers={"Origin": base},
                                  data={"key": form["key"], "verdict": verdict, "reason": reason})
            pages.append(done.text)

    async with anyio.create_task_group() as tg:

        async def on_elicit(context, params):
            asked.append(params)
            verdict, reason = next(verdicts)
            tg.start_soon(open_and_decide, params.url, verdict, reason)
            return types.ElicitResult(action="accept")

        async with Client(mcp_http_transport(gw.url, TOKEN), mode="legacy", elicitation_callback=on_elicit) as alice:
            assert_passed(await alice.call_tool("create_charge", {"amount": 7}), "ssh", "create_charge", {"amount": 7})
            refused = await alice.call_tool("create_charge", {"amount": 8000})
            assert assert_denied(refused, "approval_denied", "/tools/create_charge/action") == \
                "a human denied this call: not this account"
    assert [a.mode for a in asked] == ["url", "url"]
    assert asked[0].url.startswith(f"{base}/approve/") and "key=" in asked[0].url, asked[0].url
    assert asked[0].url.endswith(f"/approve/{asked[0].elicitation_id}?key={link_key(asked[0].elicitation_id)}")
    assert "create_charge" in asked[0].message
    # The page showed the call (arguments, tool) and how it ended.
    assert "ssh/create_charge" in pages[0] and "&quot;amount&quot;: 7" in pages[0], pages[0]
    assert "Approved" in pages[1] and "Denied" in pages[3] and "not this account" in pages[3]
    assert [e["args"] for e in log.entries("create_charge")] == [{"amount": 7}]
    decided = json.loads(approvals(gw, "list", "--all", "--json").stdout)["approvals"]
    assert sorted((a["status"], a["decided_by"]) for a in decided) == [("denied", "client"), ("used", "client")]


async def test_an_approval_link_decides_only_its_own_approval_of_a_client_approver(gateway_factory, tmp_path):
    gw, base, log = url_gateway(gateway_factory, tmp_path)
    results: list = []
    async with connect(gw) as alice, anyio.create_task_group() as tg:
        # A client without elicitation: both calls wait in the queue.
        async def call(tool: str) -> None:
            results.append(await alice.call_tool(tool, {"amount": 1} if tool == "create_charge" else {"id": "a"}))

        tg.start_soon(call, "create_charge")
        tg.start_soon(call, "delete_account")
        held = {a["tool"]: a for a in await wait_pending(gw, 2)}
        charge, delete = held["create_charge"]["id"], held["delete_account"]["id"]
        async with httpx.AsyncClient(timeout=10) as web:
            # A made-up key, or another approval's key, opens nothing and decides nothing.
            assert (await web.get(f"{base}/approve/{charge}?key={'0' * 64}")).status_code == 404
            forged = await web.post(f"{base}/approve/{charge}", headers={"Origin": base},
                                    data={"key": "ab" * 32, "verdict": "approve"})
            assert forged.status_code == 404
            # The gateway never sends a link for an approval without `client` among its
            # approvers; the right key for it (if one leaked) still cannot decide it.
            assert (await web.get(f"{base}/approve/{delete}?key={link_key(delete)}")).status_code == 404
            denied_link = await web.post(f"{base}/approve/{delete}", headers={"Origin": base},
                                         data={"key": link_key(delete), "verdict": "approve"})
            assert denied_link.status_code == 404
            # Its own key opens the charge's page.
            assert "ssh/create_charge" in (await web.get(f"{base}/approve/{charge}?key={link_key(charge)}")).text
            # Another site cannot post the form for the user.
            cross = await web.post(f"{base}/approve/{charge}", headers={"Origin": "http://evil.example"},
                                   data={"key": "ab" * 32, "verdict": "approve"})
            assert cross.status_code == 403
        assert {a["id"] for a in pending(gw)} == {charge, delete}
        assert approvals(gw, "approve", charge).returncode == 0
        assert approvals(gw, "deny", delete, "--reason", "no").returncode == 0
    assert len(results) == 2
    assert [e["args"] for e in log.entries("create_charge")] == [{"amount": 1}]
    assert log.entries("delete_account") == []
