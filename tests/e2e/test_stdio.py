"""`toolgate stdio`: the gateway as a command a client spawns, one session on stdin/stdout.

The PyPI `mcp==2.3.0` SDK spawns it like any stdio server; a hand-driven process checks that
stdout carries nothing but JSON-RPC, even when the client sends garbage.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import TOOLGATE, demo_server, fixture_stdio, require, write_config

pytestmark = pytest.mark.anyio

MAX_LINE = 64 * 1024


def stdio_params(config, grant: str = "alice") -> StdioServerParameters:
    require(TOOLGATE, "run `cargo build` first")
    return StdioServerParameters(
        command=str(TOOLGATE),
        args=["stdio", "--config", str(config), "--grant", grant],
        env={**os.environ, "TOOLGATE_LOG": "debug"},
    )


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
async def test_sdk_spawns_toolgate_stdio_and_lists_and_calls_tools_of_both_servers(tmp_path, mode):
    config = write_config(tmp_path, demo_server() + fixture_stdio())
    progress: list[float] = []

    async def on_progress(p, total, message):
        progress.append(p)

    async with Client(stdio_params(config), mode=mode) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert {"demo__echo", "demo__add", "demo__countdown"} <= set(names)
        assert {"fixture__echo", "fixture__add", "fixture__sleep", "fixture__test_simple_text"} <= set(names)
        assert all(n.startswith(("demo__", "fixture__")) for n in names)

        demo = await client.call_tool("demo__add", {"a": 2, "b": 40})
        assert not demo.is_error
        assert demo.structured_content == {"sum": 42.0}
        fixture = await client.call_tool("fixture__add", {"a": 2, "b": 40})
        assert fixture.structured_content == {"result": 42.0}
        echo = await client.call_tool("fixture__echo", {"message": "over stdio"})
        assert echo.structured_content == {"message": "over stdio"}

        with_progress = await client.call_tool("fixture__test_tool_with_progress", {}, progress_callback=on_progress)
        assert text_of(with_progress) == "Tool with progress executed successfully"
        assert progress == [0, 50, 100]


class StdioProcess:
    """`toolgate stdio` driven by hand: lines in, every stdout line collected."""

    def __init__(self, config) -> None:
        require(TOOLGATE, "run `cargo build` first")
        self.proc = subprocess.Popen(
            [str(TOOLGATE), "stdio", "--config", str(config), "--grant", "alice"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "TOOLGATE_LOG": "debug"},
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.stdout_raw: list[bytes] = []
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.stdout_raw.append(line)
            self.lines.put(line)

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_json(self, message: dict) -> None:
        self.send(json.dumps(message).encode() + b"\n")

    def next_message(self, timeout: float = 30) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(
                f"no stdout line within {timeout}s; stderr:\n{b''.join(self.stderr).decode(errors='replace')[-3000:]}"
            )
        message = json.loads(line)  # anything that is not JSON fails here
        return message

    def next_answer(self, timeout: float = 30) -> dict:
        """The next response or error, skipping notifications (e.g. list_changed) in between."""
        while True:
            m = self.next_message(timeout)
            if "method" not in m:
                return m

    def until_id(self, request_id, timeout: float = 30) -> dict:
        while True:
            m = self.next_message(timeout)
            if m.get("id") == request_id and ("result" in m or "error" in m):
                return m

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def assert_json_rpc(message: dict) -> None:
    assert message.get("jsonrpc") == "2.0", message
    if "error" in message:
        assert isinstance(message["error"].get("code"), int), message
        assert isinstance(message["error"].get("message"), str) and message["error"]["message"], message
        assert "id" in message, message
    else:
        assert "result" in message or "method" in message, message


def test_stdout_carries_only_json_rpc_even_after_malformed_and_oversized_lines(tmp_path):
    config = write_config(tmp_path, demo_server() + fixture_stdio(), limits=f"max_line_bytes = {MAX_LINE}\n")
    p = StdioProcess(config)
    try:
        p.send_json({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "hand", "version": "1"}}})
        init = p.until_id(1)
        assert "result" in init, init
        assert init["result"]["protocolVersion"] == "2025-11-25"
        p.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})

        p.send(b'{"jsonrpc": "2.0", "id": 2, "method": "tools/list", \n')  # malformed JSON
        parse_error = p.next_answer()
        assert parse_error["error"]["code"] == -32700, parse_error
        assert parse_error.get("id") is None

        big = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                          "params": {"name": "demo__echo", "arguments": {"text": "x" * (2 * MAX_LINE)}}})
        p.send(big.encode() + b"\n")  # over max_line_bytes
        too_long = p.next_answer()
        assert "error" in too_long, too_long
        assert too_long["error"]["code"] in (-32600, -32700), too_long

        p.send(b"\n")  # an empty line is not a message and must not break anything
        p.send_json({"jsonrpc": "2.0", "id": 4, "method": "tools/list"})
        listed = p.until_id(4)
        names = {t["name"] for t in listed["result"]["tools"]}
        assert {"demo__add", "fixture__add"} <= names

        p.send_json({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                     "params": {"name": "demo__add", "arguments": {"a": 1, "b": 2}}})
        called = p.until_id(5)
        assert called["result"]["structuredContent"] == {"sum": 3.0}
    finally:
        p.close()

    # Every line that ever reached stdout is one JSON-RPC message (logs go to stderr).
    assert p.stdout_raw, "nothing on stdout"
    for raw in p.stdout_raw:
        assert raw.endswith(b"\n")
        assert_json_rpc(json.loads(raw))
    assert b"".join(p.stderr), "expected the debug log on stderr"
