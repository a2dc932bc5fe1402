"""Real clients through the gateway: the PyPI `mcp==2.3.0` SDK over Streamable HTTP, in the
handshake era (`legacy`), the stateless 2026-07-28 revision and `auto`, against real upstreams:
npm `server-everything` over stdio and the Python conformance fixture over HTTP (and stdio).

Each test asserts on what a user of the client sees.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import time
from pathlib import Path

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import (
    FIXTURE,
    HANDSHAKE_VERSION,
    PYTHON,
    ROOT,
    TOKEN,
    RawMcp,
    child_pids,
    everything_stdio,
    fixture_stdio,
    mcp_http_transport,
    server_http,
    server_stdio,
    async_poll,
    async_wait_until,
    parse_sse_or_json,
)

pytestmark = pytest.mark.anyio

RUGPULL = ROOT / "tests" / "fixtures" / "rugpull_server.py"

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MODES = ["legacy", "2026-07-28", "auto"]
EVERYTHING_TOOLS = {"echo", "get-sum", "get-tiny-image", "trigger-long-running-operation"}
FIXTURE_TOOLS = {"echo", "add", "sleep", "test_simple_text", "test_tool_with_progress", "test_elicitation"}


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


@pytest.fixture
def two_servers(gateway_factory, fixture_http):
    """One gateway in front of server-everything (stdio) and the fixture (Streamable HTTP)."""
    fx = fixture_http()
    return gateway_factory(everything_stdio() + server_http("fixture", fx.url))


# ---------------------------------------------------------------------------------------
# Aggregation and routing
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_tools_of_both_servers_appear_as_server__tool_names_and_calls_reach_the_right_server(two_servers, mode):
    async with Client(mcp_http_transport(two_servers.url), mode=mode) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert len(names) == len(set(names)), f"duplicate names: {names}"
        bad = [n for n in names if not NAME_RE.match(n)]
        assert not bad, f"names clients refuse: {bad}"
        assert {f"everything__{t}" for t in EVERYTHING_TOOLS} <= set(names)
        assert {f"fixture__{t}" for t in FIXTURE_TOOLS} <= set(names)
        assert all(n.startswith(("everything__", "fixture__")) for n in names)

        # Both servers have a tool named `echo`: each call must reach its own server.
        everything_echo = await client.call_tool("everything__echo", {"message": "hello"})
        assert not everything_echo.is_error
        assert text_of(everything_echo) == "Echo: hello"
        fixture_echo = await client.call_tool("fixture__echo", {"message": "hello"})
        assert not fixture_echo.is_error
        assert fixture_echo.structured_content == {"message": "hello"}

        total = await client.call_tool("everything__get-sum", {"a": 19, "b": 23})
        assert "42" in text_of(total)
        added = await client.call_tool("fixture__add", {"a": 19, "b": 23})
        assert added.structured_content == {"result": 42.0}


@pytest.mark.parametrize("mode", MODES)
async def test_server_endpoint_exposes_one_server_with_its_original_tool_names(two_servers, mode):
    async with Client(mcp_http_transport(two_servers.url), mode=mode) as client:
        aggregated = {t.name for t in (await client.list_tools()).tools}
    expected = {n.removeprefix("everything__") for n in aggregated if n.startswith("everything__")}
    async with Client(mcp_http_transport(two_servers.url + "/everything"), mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == expected
        assert EVERYTHING_TOOLS <= names
        result = await client.call_tool("get-sum", {"a": 2, "b": 3})
        assert not result.is_error
        assert "5" in text_of(result)
        # The fixture's tools are not reachable from the everything endpoint.
        missing = await client.call_tool("add", {"a": 1, "b": 1})
        assert missing.is_error


# ---------------------------------------------------------------------------------------
# Faithful relay: raw JSON-RPC through the gateway equals the fixture's own answer
# ---------------------------------------------------------------------------------------
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"


def without_server_stamp(result: dict) -> dict:
    """A 2026-07-28 server stamps its own serverInfo into `_meta`; that stamp names the peer, not the data."""
    result = json.loads(json.dumps(result))
    meta = result.get("_meta")
    if isinstance(meta, dict):
        meta.pop(SERVER_INFO_META, None)
        if not meta:
            del result["_meta"]
    return result


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_echo_tool_definition_and_result_are_relayed_unchanged(gateway_factory, fixture_http, mode):
    fx = fixture_http()
    gw = gateway_factory(everything_stdio() + server_http("fixture", fx.url))
    args = {"message": "héllo \u2603", "n": 3, "nested": {"list": [1, 2.5, None, True], "s": "x"}}
    with RawMcp(fx.url, mode=mode) as direct, RawMcp(gw.url, token=TOKEN, mode=mode) as through:
        direct_tool = next(t for t in direct.result("tools/list")["tools"] if t["name"] == "echo")
        gateway_tool = next(t for t in through.result("tools/list")["tools"] if t["name"] == "fixture__echo")
        assert gateway_tool == {**direct_tool, "name": "fixture__echo"}
        assert gateway_tool["outputSchema"] == direct_tool["outputSchema"]
        assert gateway_tool["annotations"] == {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False}
        assert gateway_tool["_meta"] == {"toolgate.test/fixture": "echo"}

        direct_result = direct.result("tools/call", {"name": "echo", "arguments": args})
        gateway_result = through.result("tools/call", {"name": "fixture__echo", "arguments": args})
        assert without_server_stamp(gateway_result) == without_server_stamp(direct_result)
        assert gateway_result["structuredContent"] == args
        assert gateway_result["_meta"]["toolgate.test/echoed-keys"] == ["message", "n", "nested"]
        if mode == "2026-07-28":
            assert gateway_result["resultType"] == "complete"


# ---------------------------------------------------------------------------------------
# Notifications about a request: progress and logging
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications_reach_the_clients_progress_callback(two_servers, mode):
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress, total, message):
        seen.append((progress, total, message))

    async with Client(mcp_http_transport(two_servers.url), mode=mode) as client:
        result = await client.call_tool("fixture__test_tool_with_progress", {}, progress_callback=on_progress)
        assert text_of(result) == "Tool with progress executed successfully"
    assert seen == [
        (0, 100, "Completed step 0 of 100"),
        (50, 100, "Completed step 50 of 100"),
        (100, 100, "Completed step 100 of 100"),
    ]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_progress_notifications_carry_the_clients_own_progress_token(two_servers, mode):
    token = "client-chosen-token-\u00e9-7"
    with RawMcp(two_servers.url, token=TOKEN, mode=mode) as raw:
        messages = raw.request(
            "tools/call",
            {"name": "fixture__test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": token}},
        )
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert [p["params"]["progress"] for p in progress] == [0, 50, 100]
    assert {p["params"]["progressToken"] for p in progress} == {token}
    assert "result" in messages[-1]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_log_notifications_of_a_tool_reach_the_clients_logging_callback(two_servers, mode):
    logs: list[tuple[str, object]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append((params.level, params.data))

    async with Client(mcp_http_transport(two_servers.url), mode=mode, logging_callback=on_log, log_level="info") as client:
        result = await client.call_tool("fixture__test_tool_with_logging", {})
        assert text_of(result) == "Tool with logging executed successfully"
    assert logs == [
        ("info", "Tool execution started"),
        ("info", "Tool processing data"),
        ("info", "Tool execution completed"),
    ]


def test_stateless_client_that_did_not_opt_into_logs_gets_none_like_from_the_server_itself(two_servers, fixture_http):
    """At 2026-07-28 logs are opt-in per request (`_meta` logLevel): the gateway must not add any."""
    fx = fixture_http()
    with RawMcp(fx.url, mode="2026-07-28") as direct:
        direct_messages = direct.request("tools/call", {"name": "test_tool_with_logging", "arguments": {}})
    assert [m for m in direct_messages if "method" in m] == []
    with RawMcp(two_servers.url, token=TOKEN, mode="2026-07-28") as raw:
        messages = raw.request("tools/call", {"name": "fixture__test_tool_with_logging", "arguments": {}})
    assert [m.get("method") for m in messages if "method" in m] == []
    assert "result" in messages[-1]


# ---------------------------------------------------------------------------------------
# Prompts and resources
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_prompts_and_resources_work_through_the_gateway(two_servers, mode):
    async with Client(mcp_http_transport(two_servers.url), mode=mode) as client:
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert {"fixture__test_simple_prompt", "fixture__test_prompt_with_arguments"} <= prompts
        assert all(NAME_RE.match(p) for p in prompts)
        assert any(p.startswith("everything__") for p in prompts)

        simple = await client.get_prompt("fixture__test_simple_prompt")
        assert simple.messages[0].content.text == "This is a simple prompt for testing."
        with_args = await client.get_prompt("fixture__test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        assert with_args.messages[0].content.text == "Prompt with arguments: arg1='a', arg2='b'"

        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"test://static-text", "test://static-binary", "test://watched-resource"} <= uris
        text = await client.read_resource("test://static-text")
        assert text.contents[0].text == "This is the content of the static text resource."
        binary = await client.read_resource("test://static-binary")
        assert binary.contents[0].mime_type == "image/png" and binary.contents[0].blob

        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert "test://template/{id}/data" in templates
        item = await client.read_resource("test://template/42/data")
        assert json.loads(item.contents[0].text) == {"id": "42", "templateTest": True, "data": "Data for ID: 42"}


# ---------------------------------------------------------------------------------------
# Server-to-client requests
# ---------------------------------------------------------------------------------------
async def test_elicitation_from_the_server_reaches_the_client_and_the_answer_gets_back(two_servers):
    asked: list[str] = []

    async def on_elicit(context, params: types.ElicitRequestParams):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"username": "ann", "email": "ann@example.com"})

    async with Client(mcp_http_transport(two_servers.url), mode="legacy", elicitation_callback=on_elicit) as client:
        result = await client.call_tool("fixture__test_elicitation", {"message": "Who are you?"})
    assert asked == ["Who are you?"]
    assert not result.is_error
    assert text_of(result) == 'User response: action=accept, content={"username": "ann", "email": "ann@example.com"}'


def sampling_reply(calls: list):
    async def on_sample(context, params: types.CreateMessageRequestParams):
        calls.append(params.messages[0].content.text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled by the client"), model="test-model"
        )

    return on_sample


async def test_sampling_is_refused_unless_the_operator_allows_it_for_the_server(gateway_factory, fixture_http):
    fx = fixture_http()
    gw = gateway_factory(server_http("fixture", fx.url))
    calls: list[str] = []
    async with Client(mcp_http_transport(gw.url), mode="legacy", sampling_callback=sampling_reply(calls)) as client:
        try:
            result = await client.call_tool("test_sampling", {"prompt": "What is 2+2?"})
        except MCPError as e:  # the fixture turns the refused sampling request into a JSON-RPC error
            assert "sampling" in e.error.message, e.error
        else:
            assert result.is_error and "sampling" in text_of(result), result
        assert calls == [], "the client was asked to sample although allow_sampling is off"
        # The session keeps working after the refusal.
        assert (await client.call_tool("add", {"a": 1, "b": 2})).structured_content == {"result": 3.0}


async def test_sampling_reaches_the_clients_sampling_callback_when_allowed(gateway_factory, fixture_http):
    fx = fixture_http()
    gw = gateway_factory(everything_stdio() + server_http("fixture", fx.url, allow_sampling="true"))
    calls: list[str] = []
    async with Client(mcp_http_transport(gw.url), mode="legacy", sampling_callback=sampling_reply(calls)) as client:
        result = await client.call_tool("fixture__test_sampling", {"prompt": "What is 2+2?"})
    assert calls == ["What is 2+2?"]
    assert not result.is_error
    assert text_of(result) == "LLM response: sampled by the client"


# ---------------------------------------------------------------------------------------
# list_changed
# ---------------------------------------------------------------------------------------
async def test_tool_list_changed_notification_reaches_the_client_and_the_new_tool_is_listed(two_servers):
    changed = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with Client(mcp_http_transport(two_servers.url), mode="legacy", message_handler=on_message) as client:
        before = {t.name for t in (await client.list_tools()).tools}
        assert "fixture__test_dynamic_tool" not in before
        result = await client.call_tool("fixture__test_trigger_tool_change", {})
        assert "added" in text_of(result)
        with anyio.fail_after(10):
            await changed.wait()
        after = {t.name for t in (await client.list_tools()).tools}
        assert "fixture__test_dynamic_tool" in after
        dynamic = await client.call_tool("fixture__test_dynamic_tool", {})
        assert text_of(dynamic) == "dynamic"


# ---------------------------------------------------------------------------------------
# Dead and crashing upstreams
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_dead_upstream_does_not_take_the_session_down(gateway_factory, fixture_http, mode):
    fx = fixture_http()
    gw = gateway_factory(
        server_stdio("ghost", "/nonexistent/toolgate-e2e-no-such-command")
        + server_stdio("quitter", "/bin/sh", ["-c", "exit 3"])
        + server_http("fixture", fx.url)
    )
    async with Client(mcp_http_transport(gw.url), mode=mode) as client:
        with anyio.fail_after(20):
            names = {t.name for t in (await client.list_tools()).tools}
        assert {f"fixture__{t}" for t in FIXTURE_TOOLS} <= names
        assert not any(n.startswith(("ghost__", "quitter__")) for n in names)
        added = await client.call_tool("fixture__add", {"a": 20, "b": 22})
        assert added.structured_content == {"result": 42.0}
        for server in ("ghost", "quitter"):
            with anyio.fail_after(20):
                dead = await client.call_tool(f"{server}__anything", {})
            assert dead.is_error
            assert server in text_of(dead), f"the error does not name the server: {text_of(dead)!r}"


async def test_a_crashed_stdio_upstream_is_restarted_and_calls_work_again(gateway_factory):
    gw = gateway_factory(fixture_stdio() + everything_stdio())
    async with Client(mcp_http_transport(gw.url), mode="legacy") as client:
        assert (await client.call_tool("fixture__add", {"a": 1, "b": 2})).structured_content == {"result": 3.0}
        children = child_pids(gw.proc.pid, str(FIXTURE))
        assert len(children) == 1, f"expected one fixture child of the gateway, found {children}"
        os.kill(children[0], signal.SIGKILL)
        await async_wait_until(lambda: children[0] not in child_pids(gw.proc.pid), what="the killed child to be reaped")

        # While it is down the other server still serves.
        assert "5" in text_of(await client.call_tool("everything__get-sum", {"a": 2, "b": 3}))

        deadline = time.monotonic() + 10
        while True:
            result = await client.call_tool("fixture__add", {"a": 2, "b": 2})
            if not result.is_error:
                break
            assert time.monotonic() < deadline, f"the fixture was not restarted within 10 s: {text_of(result)}"
            await anyio.sleep(0.25)
        assert result.structured_content == {"result": 4.0}
        restarted = child_pids(gw.proc.pid, str(FIXTURE))
        assert len(restarted) == 1 and restarted != children


# ---------------------------------------------------------------------------------------
# Cancellation
# ---------------------------------------------------------------------------------------
def recorded_messages(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_cancelled_call_is_cancelled_upstream_and_the_gateway_keeps_serving(gateway_factory, tmp_path, mode):
    # The fixture runs behind `tee`, so every line the gateway writes to it is recorded.
    record = tmp_path / "upstream-stdin.jsonl"
    command = f"tee -a {record} | exec {PYTHON} {FIXTURE} --stdio"
    gw = gateway_factory(server_stdio("fixture", "/bin/sh", ["-c", command]))

    def cancel_relayed():
        sent = recorded_messages(record)
        calls = [m for m in sent if m.get("method") == "tools/call" and m["params"]["name"] == "sleep"]
        cancels = [m for m in sent if m.get("method") == "notifications/cancelled"]
        return bool(calls) and any(c["params"]["requestId"] == calls[-1]["id"] for c in cancels)

    async with Client(mcp_http_transport(gw.url), mode=mode) as client:
        assert (await client.call_tool("add", {"a": 1, "b": 2})).structured_content == {"result": 3.0}
        started = time.monotonic()
        with anyio.move_on_after(1.5) as scope:
            await client.call_tool("sleep", {"ms": 20000})
        cancelled_in_time = scope.cancelled_caught
        # The client keeps running while we watch what reached the upstream.
        relayed = await async_poll(cancel_relayed, timeout=5)
        # The gateway (and the same client) keep working, well before the 20 s sleep would end.
        result = await client.call_tool("add", {"a": 40, "b": 2})
        elapsed = time.monotonic() - started
    assert cancelled_in_time, "the sleep call returned before it was cancelled"
    assert relayed, (
        "the upstream never received notifications/cancelled for the abandoned sleep call; it got:\n"
        + "\n".join(json.dumps(m) for m in recorded_messages(record))
    )
    assert result.structured_content == {"result": 42.0}
    assert elapsed < 15


def test_a_call_cancelled_before_it_is_forwarded_never_reaches_the_upstream(gateway_factory, tmp_path):
    """The cancellation comes while the gateway still routes the call (the server is slow to list
    its tools): the call never reaches the upstream and gets no answer (MCP: a cancelled request
    is not answered), and the session goes on."""
    record = tmp_path / "upstream-stdin.jsonl"
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"name": "add", "description": "Adds a and b", "inputSchema": {"type": "object"}}]))
    command = f"tee -a {record} | exec {PYTHON} {RUGPULL} --tools {tools} --list-delay 2"
    gw = gateway_factory(server_stdio("slow", "/bin/sh", ["-c", command]))
    with RawMcp(gw.url, TOKEN) as raw:
        headers = {
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Mcp-Session-Id": raw.session_id,
            "MCP-Protocol-Version": HANDSHAKE_VERSION,
        }
        call = {"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, gw.url, content=json.dumps(call), headers=headers, timeout=30)
            time.sleep(0.5)
            assert not pending.done(), f"the call was answered before the server listed its tools: {pending.result().text}"
            raw.notify("notifications/cancelled", {"requestId": 77, "reason": "changed my mind"})
            answer = pending.result(timeout=20)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream"), answer.text
        assert parse_sse_or_json(answer) == [], answer.text
        sent = [m for m in recorded_messages(record) if m.get("method") == "tools/call"]
        assert sent == [], f"the cancelled call reached the upstream: {sent}"
        # The session goes on: the same call, not cancelled, goes through.
        assert raw.result("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})["content"][0]["text"] == "3"


# ---------------------------------------------------------------------------------------
# SSE resumability (SEP-1699)
# ---------------------------------------------------------------------------------------
async def test_a_tool_that_closes_its_sse_stream_mid_call_still_completes_with_its_logs(gateway_factory, fixture_http):
    """The fixture's `test_reconnection` closes the POST's SSE stream mid-call (it keeps an event
    store), so a 2025-11-25 client must resume with GET + Last-Event-ID. The gateway is that client
    towards its HTTP upstream; its own client must see what a direct client sees."""
    fx = fixture_http()
    gw = gateway_factory(server_http("fixture", fx.url))

    async def run(url: str, token: str | None) -> tuple[str, bool, list]:
        logs: list = []

        async def on_log(params) -> None:
            logs.append(params.data)

        async with Client(mcp_http_transport(url, token), mode="legacy", logging_callback=on_log) as client:
            with anyio.fail_after(30):
                result = await client.call_tool("test_reconnection", {})
        return text_of(result), bool(result.is_error), logs

    direct = await run(fx.url, None)
    assert direct == ("Reconnection test completed", False, ["Before disconnect", "After reconnect"])
    through = await run(gw.url, TOKEN)
    assert through == direct


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_client_idle_past_the_header_deadline_goes_on_calling(gateway_factory, fixture_http, mode):
    # The gateway closes keep-alive connections idle for `header_timeout`: the SDK's HTTP
    # client must notice and carry on over a new one, and its open streams stay open.
    fx = fixture_http()
    gw = gateway_factory(server_http("fixture", fx.url), limits='header_timeout = "1s"')
    async with Client(mcp_http_transport(gw.url), mode=mode) as client:
        for i in range(3):
            with anyio.fail_after(20):
                added = await client.call_tool("add", {"a": i, "b": 40})
            assert added.structured_content == {"result": 40.0 + i}
            await anyio.sleep(1.6)
        progress: list[float] = []

        async def on_progress(done, total, message):
            progress.append(done)

        with anyio.fail_after(20):
            result = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
        assert text_of(result) == "Tool with progress executed successfully"
        assert progress == [0, 50, 100]
