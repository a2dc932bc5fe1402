"""`isolation = "shared"`: one upstream child multiplexed for several downstream sessions.

Two clients (two grants) use the same JSON-RPC request ids and the same progress tokens on
purpose, with many interleaved calls in flight at once: each must see exactly its own responses
and its own progress notifications. And the child count proves what "shared" means.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import httpx
import pytest

from conftest import DEMO_SERVER, FIXTURE, OTHER_TOKEN, PYTHON, TOKEN, server_stdio
from conftest import parse_sse_or_json as messages_of

PROTOCOL = "2025-11-25"
CALLS = 50


def headers(token: str, sid: str | None = None) -> dict[str, str]:
    h = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    if sid:
        h["Mcp-Session-Id"] = sid
        h["MCP-Protocol-Version"] = PROTOCOL
    return h


def open_session(gw, token: str) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,  # the same id in every client too
        "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "e2e-shared", "version": "0"}},
    }
    r = httpx.post(gw.url, json=body, headers=headers(token), timeout=60)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    r = httpx.post(gw.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers(token, sid), timeout=30)
    assert r.status_code == 202, r.text
    return sid




def split(msgs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(progress notifications, responses); anything else fails the test."""
    progress = [m for m in msgs if m.get("method") == "notifications/progress"]
    responses = [m for m in msgs if "result" in m or "error" in m]
    assert len(progress) + len(responses) == len(msgs), f"unexpected messages: {msgs}"
    return progress, responses


def token_for(i: int):
    # the same tokens in both clients; integers and strings both
    return i if i % 4 == 1 else f"tok-{i}"


async def run_client(gw, token: str, sid: str, label: str, plan) -> list[str]:
    """Sends CALLS interleaved requests with ids 1..CALLS; returns a list of problems."""
    problems: list[str] = []
    limits = httpx.Limits(max_connections=CALLS, max_keepalive_connections=CALLS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> None:
            body, check = plan(label, i)
            await asyncio.sleep((i % 7) * 0.003)
            r = await client.post(gw.url, content=json.dumps(body), headers=headers(token, sid))
            if r.status_code != 200:
                problems.append(f"{label} #{i}: HTTP {r.status_code} {r.text[:200]}")
                return
            progress, responses = split(messages_of(r))
            if len(responses) != 1:
                problems.append(f"{label} #{i}: {len(responses)} responses: {responses}")
                return
            if responses[0].get("id") != i:
                problems.append(f"{label} #{i}: response id {responses[0].get('id')!r}")
            problems.extend(f"{label} #{i}: {p}" for p in check(responses[0], progress))

        await asyncio.gather(*(one(i) for i in range(1, CALLS + 1)))
    return problems


def run_two_clients(gw, plan) -> None:
    a = open_session(gw, TOKEN)
    b = open_session(gw, OTHER_TOKEN)

    async def both():
        return await asyncio.gather(run_client(gw, TOKEN, a, "A", plan), run_client(gw, OTHER_TOKEN, b, "B", plan))

    problems_a, problems_b = asyncio.run(both())
    problems = problems_a + problems_b
    assert not problems, f"{len(problems)} problems, first 20:\n" + "\n".join(problems[:20])


# ---- the demo server's countdown and echo ----------------------------------------------------

COUNTDOWN_N = {"A": 3, "B": 5}


def demo_plan(label: str, i: int):
    if i % 2:
        n = COUNTDOWN_N[label]
        tok = token_for(i)
        body = {
            "jsonrpc": "2.0",
            "id": i,
            "method": "tools/call",
            "params": {"name": "countdown", "arguments": {"n": n}, "_meta": {"progressToken": tok}},
        }

        def check(resp, progress):
            out = []
            if resp.get("result", {}).get("content") != [{"type": "text", "text": "liftoff"}]:
                out.append(f"countdown result {resp}")
            got = [(p["params"].get("progressToken"), p["params"].get("progress"), p["params"].get("total")) for p in progress]
            want = [(tok, k, n) for k in range(1, n + 1)]
            if got != want:
                out.append(f"progress {got} != {want}")
            return out

        return body, check
    text = f"{label}-{i}-{uuid.uuid4().hex[:6]}"
    body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}

    def check(resp, progress):
        out = []
        if progress:
            out.append(f"echo got progress {progress}")
        if resp.get("result", {}).get("content") != [{"type": "text", "text": text}]:
            out.append(f"echo result {resp} != {text}")
        return out

    return body, check


# One worker thread is the default; two run the relay's tasks in parallel, where a race
# between the sessions would show.
@pytest.mark.parametrize("threads", [1, 2])
def test_two_clients_on_a_shared_demo_server_see_only_their_own_responses_and_progress(gateway_factory, threads):
    gw = gateway_factory(server_stdio("demo", str(DEMO_SERVER), [], isolation='"shared"'), threads=threads)
    run_two_clients(gw, demo_plan)
    # and again, now that both sessions have history on the same child
    run_two_clients(gw, demo_plan)


# ---- the Python fixture's sleep (with progress) and echo -------------------------------------

SLEEP_MS = {"A": 30, "B": 70}


def fixture_plan(label: str, i: int):
    if i % 2:
        ms = SLEEP_MS[label]
        tok = token_for(i)
        body = {
            "jsonrpc": "2.0",
            "id": i,
            "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"ms": ms}, "_meta": {"progressToken": tok}},
        }

        def check(resp, progress):
            out = []
            result = resp.get("result", {})
            if result.get("isError") or result.get("content", [{}])[0].get("text") != f"slept {ms} ms":
                out.append(f"sleep result {resp}")
            got = [(p["params"].get("progressToken"), p["params"].get("progress"), p["params"].get("total")) for p in progress]
            want = [(tok, k, 10) for k in range(0, 11)]
            if got != want:
                out.append(f"progress {got} != {want}")
            return out

        return body, check
    message = f"{label}-{i}-{uuid.uuid4().hex[:6]}"
    body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": message}}}

    def check(resp, progress):
        out = []
        if progress:
            out.append(f"echo got progress {progress}")
        if resp.get("result", {}).get("structuredContent") != {"message": message}:
            out.append(f"echo result {resp} != {message}")
        return out

    return body, check


def test_two_clients_on_a_shared_python_fixture_see_only_their_own_responses_and_progress(gateway_factory):
    gw = gateway_factory(server_stdio("fixture", PYTHON, [str(FIXTURE), "--stdio"], isolation='"shared"'))
    run_two_clients(gw, fixture_plan)


def test_a_cancellation_in_one_shared_client_does_not_cancel_the_other(gateway_factory):
    """Both clients have request id 7 in flight; A cancels its 7; B's 7 must still complete."""
    gw = gateway_factory(server_stdio("fixture", PYTHON, [str(FIXTURE), "--stdio"], isolation='"shared"'))
    a = open_session(gw, TOKEN)
    b = open_session(gw, OTHER_TOKEN)
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 1200}}}

    async def go():
        async with httpx.AsyncClient(timeout=30) as client:
            ta = asyncio.create_task(client.post(gw.url, content=json.dumps(body), headers=headers(TOKEN, a)))
            tb = asyncio.create_task(client.post(gw.url, content=json.dumps(body), headers=headers(OTHER_TOKEN, b)))
            await asyncio.sleep(0.4)
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "test"}}
            rc = await client.post(gw.url, content=json.dumps(cancel), headers=headers(TOKEN, a))
            assert rc.status_code == 202, rc.text
            ra = await ta
            # A ended at the cancellation, not when its sleep would have (B's, 1.2 s in).
            assert not tb.done(), "the cancelled request was held until the other one ended"
            return ra, await tb

    ra, rb = asyncio.run(go())
    assert rb.status_code == 200, rb.text
    msg_b = [m for m in messages_of(rb) if "result" in m or "error" in m]
    assert len(msg_b) == 1 and msg_b[0]["id"] == 7, msg_b
    assert msg_b[0].get("result", {}).get("content", [{}])[0].get("text") == "slept 1200 ms", msg_b
    # A's request ended without an answer (MCP: a cancelled request is not answered): an
    # event stream with no events.
    assert ra.status_code == 200 and ra.headers["content-type"].startswith("text/event-stream"), ra.text
    assert [m for m in messages_of(ra) if "result" in m or "error" in m] == [], ra.text


# ---- one child for shared, one per session otherwise -----------------------------------------


def pgrep(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_for_count(marker: str, n: int, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = pgrep(marker)
        if len(pids) == n:
            return pids
        time.sleep(0.1)
    return pgrep(marker)


def call_echo_demo(gw, token: str, sid: str, text: str) -> None:
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}
    r = httpx.post(gw.url, json=body, headers=headers(token, sid), timeout=30)
    assert r.status_code == 200, r.text
    assert messages_of(r)[-1]["result"]["content"][0]["text"] == text


def call_echo_fixture(gw, token: str, sid: str, text: str) -> None:
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": text}}}
    r = httpx.post(gw.url, json=body, headers=headers(token, sid), timeout=30)
    assert r.status_code == 200, r.text
    assert messages_of(r)[-1]["result"]["structuredContent"] == {"message": text}


UPSTREAMS = {
    # the demo server ignores extra arguments; Python accepts any `-X name` option
    "demo": (lambda marker, **kw: server_stdio("demo", str(DEMO_SERVER), [marker], **kw), call_echo_demo),
    "fixture": (lambda marker, **kw: server_stdio("fixture", PYTHON, ["-X", marker, str(FIXTURE), "--stdio"], **kw), call_echo_fixture),
}


@pytest.mark.parametrize("upstream", ["demo", "fixture"])
@pytest.mark.parametrize("isolation,children", [("shared", 1), ("per-session", 2)])
def test_shared_means_one_child_and_per_session_means_one_each(gateway_factory, upstream, isolation, children):
    marker = f"tg_iso_{uuid.uuid4().hex}"
    make, call = UPSTREAMS[upstream]
    gw = gateway_factory(make(marker, isolation=f'"{isolation}"'))
    a = open_session(gw, TOKEN)
    b = open_session(gw, OTHER_TOKEN)
    call(gw, TOKEN, a, "a")
    call(gw, OTHER_TOKEN, b, "b")
    pids = wait_for_count(marker, children, timeout=3)
    assert len(pids) == children, f"{isolation}: expected {children} upstream children, found {pids}"
    # ending one session: a shared child stays for the other; a per-session child goes
    r = httpx.delete(gw.url, headers=headers(TOKEN, a), timeout=10)
    assert r.status_code in (200, 204), r.text
    left = wait_for_count(marker, 1, timeout=10)
    assert len(left) == 1, f"{isolation}: after one session ended, children {left}"
    if isolation == "shared":
        assert left == pids
    call(gw, OTHER_TOKEN, b, "b-again")
    # a third session on a shared upstream reuses the child
    c = open_session(gw, TOKEN)
    call(gw, TOKEN, c, "c")
    assert len(wait_for_count(marker, 1 if isolation == "shared" else 2, timeout=3)) == (1 if isolation == "shared" else 2)
