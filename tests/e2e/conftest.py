"""Shared fixtures for toolgate's end-to-end tests.

They drive the real binaries (``target/debug/toolgate`` and ``demo-mcp-server``, or the
directory in ``TOOLGATE_BIN_DIR``) with real MCP peers: the PyPI ``mcp`` SDK as client and
fixture server, and npm ``@modelcontextprotocol/server-everything``. Everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("TOOLGATE_BIN_DIR", ROOT / "target" / "debug"))
TOOLGATE = BIN / "toolgate"
DEMO_SERVER = BIN / "demo-mcp-server"
FIXTURE = ROOT / "tests" / "fixtures" / "conformance_server.py"
NODE_BIN = ROOT / "node_modules" / ".bin"
PYTHON = sys.executable
TOKEN = "tg_test_token_alice"
OTHER_TOKEN = "tg_test_token_bob"


def require(path: Path, hint: str) -> None:
    """A missing prerequisite fails loudly: nothing here is skipped silently."""
    if not path.exists():
        pytest.fail(f"missing {path}: {hint}", pytrace=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(toml_str(v) for v in values) + "]"


def server_stdio(name: str, command: str, args: list[str] | None = None, **extra: str) -> str:
    """A `[servers.NAME]` table for a stdio upstream; extra keys are raw TOML values."""
    lines = [f"[servers.{name}]", f"command = {toml_str(command)}", f"args = {toml_list(args or [])}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def server_http(name: str, url: str, **extra: str) -> str:
    lines = [f"[servers.{name}]", f"url = {toml_str(url)}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def demo_server(name: str = "demo", **extra: str) -> str:
    require(DEMO_SERVER, "run `cargo build` first")
    return server_stdio(name, str(DEMO_SERVER), [], **extra)


def fixture_stdio(name: str = "fixture", **extra: str) -> str:
    return server_stdio(name, PYTHON, [str(FIXTURE), "--stdio"], **extra)


def everything_stdio(name: str = "everything", **extra: str) -> str:
    require(NODE_BIN / "mcp-server-everything", "run `bash scripts/setup-test-deps.sh` first")
    return server_stdio(name, str(NODE_BIN / "mcp-server-everything"), ["stdio"], **extra)


ALLOW_ALL = {"version": "1", "default": "allow"}


def grant_tables(tmp: Path, alice_policy: dict | str | None = ALLOW_ALL, bob_policy: dict | str | None = ALLOW_ALL) -> str:
    """`[grants.alice]` and `[grants.bob]` with their tokens; each policy (a dict, or raw text)
    is written next to the config. `None` leaves the grant without a policy (it is denied
    everything)."""
    out = ""
    for name, token, policy in (("alice", TOKEN, alice_policy), ("bob", OTHER_TOKEN, bob_policy)):
        out += f"\n[grants.{name}]\ntoken_sha256 = \"{sha256_hex(token)}\"\n"
        if policy is not None:
            path = tmp / f"policy-{name}.json"
            path.write_text(policy if isinstance(policy, str) else json.dumps(policy, indent=2))
            out += f"policy = {toml_str(str(path))}\n"
    return out


class Gateway:
    """A running `toolgate serve` with a config written for one test."""

    def __init__(
        self,
        tmp: Path,
        servers: str,
        extra: str = "",
        listen_extra: str = "",
        limits: str = "",
        top: str = "",
        policy: dict | str | None = ALLOW_ALL,
        bob_policy: dict | str | None = ALLOW_ALL,
        state: str = "",
        threads: int | None = None,
    ) -> None:
        """`top` holds top-level keys (before any table), `extra` tables after the grants;
        `policy`/`bob_policy` are the grants' policies (allow-all by default), `state` extra
        `[state]` keys; `threads` the worker threads (`--threads`; one by default)."""
        require(TOOLGATE, "run `cargo build` first")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.config = tmp / "toolgate.toml"
        self.config.write_text(
            top
            + f"[listen]\nmcp = \"127.0.0.1:{self.port}\"\n{listen_extra}\n"
            f"[state]\ndir = {toml_str(str(tmp / 'state'))}\n{state}\n"
            + (f"[limits]\n{limits}\n" if limits else "")
            + servers
            + grant_tables(tmp, policy, bob_policy)
            + extra
        )
        self.log_path = tmp / "toolgate.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(TOOLGATE), "serve", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "TOOLGATE_LOG": os.environ.get("TOOLGATE_LOG", "info"),
                **({"TOOLGATE_THREADS": str(threads)} if threads is not None else {}),
            },
        )
        try:
            wait_for_port(self.port, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"toolgate did not start:\n{self.log()}") from None

    def headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        h = {
            "Authorization": f"Bearer {token or self.token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        h.update(extra)
        return h

    def http(self, token: str | None = None, **kwargs) -> httpx.Client:
        return httpx.Client(headers=self.headers(token), timeout=30, **kwargs)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def gateway_factory(tmp_path):
    """Starts gateways for a test and stops them afterwards (their logs are printed on failure)."""
    started: list[Gateway] = []

    def start(servers: str, **kwargs) -> Gateway:
        sub = tmp_path / f"gw{len(started)}"
        sub.mkdir()
        gw = Gateway(sub, servers, **kwargs)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
        sys.stderr.write(f"--- toolgate log ({gw.config}) ---\n{gw.log()[-5000:]}\n")


class FixtureHttp:
    """tests/fixtures/conformance_server.py serving Streamable HTTP on a free port."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log_path = tmp / f"fixture-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, str(FIXTURE), "--http", f"127.0.0.1:{self.port}", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@pytest.fixture
def fixture_http(tmp_path):
    """A factory for HTTP fixture servers, stopped after the test."""
    started: list[FixtureHttp] = []

    def start(*args: str) -> FixtureHttp:
        f = FixtureHttp(tmp_path, *args)
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


def mcp_http_transport(url: str, token: str | None = TOKEN):
    """A Streamable HTTP transport of the PyPI `mcp` SDK carrying our grant token."""
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))


@pytest.fixture
def anyio_backend():
    return "asyncio"


# ---------------------------------------------------------------------------------------
# Raw JSON-RPC over Streamable HTTP (for byte-level comparisons the SDK would normalise away)
# ---------------------------------------------------------------------------------------
MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSION = "2025-11-25"


def parse_sse_or_json(response: httpx.Response) -> list[dict]:
    """Every JSON-RPC message in an HTTP answer: one JSON body, or the `data:` of each SSE event."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        return [response.json()]
    if not ctype.startswith("text/event-stream"):
        raise AssertionError(f"unexpected content type {ctype!r} (status {response.status_code}): {response.text[:500]}")
    messages, data = [], []
    for line in response.text.replace("\r\n", "\n").split("\n"):
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line == "":
            if data and "".join(data).strip():
                messages.append(json.loads("\n".join(data)))
            data = []
    if data and "".join(data).strip():
        messages.append(json.loads("\n".join(data)))
    return messages


class RawMcp:
    """A minimal hand-written MCP client over Streamable HTTP (httpx, synchronous).

    ``mode="legacy"`` performs the initialize handshake and sends the session id;
    ``mode="2026-07-28"`` sends the stateless envelope (`_meta`, `Mcp-Method`/`Mcp-Name`).
    ``request`` returns every message of the answer (notifications first, the response last).
    """

    NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

    def __init__(self, url: str, token: str | None = None, mode: str = "legacy", capabilities: dict | None = None) -> None:
        self.url = url
        self.mode = mode
        self.capabilities = capabilities or {}
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(headers=headers, timeout=30)
        self.session_id: str | None = None
        self.next_id = 1
        self.init_result: dict | None = None
        if mode == "legacy":
            answer = self.request(
                "initialize",
                {"protocolVersion": HANDSHAKE_VERSION, "capabilities": self.capabilities,
                 "clientInfo": {"name": "toolgate-e2e-raw", "version": "1.0"}},
            )
            self.init_result = answer[-1]["result"]
            self.notify("notifications/initialized")

    def _headers(self, method: str, params: dict | None) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.mode == "legacy":
            if self.session_id:
                h["Mcp-Session-Id"] = self.session_id
            if method != "initialize":
                h["MCP-Protocol-Version"] = HANDSHAKE_VERSION
        else:
            h["MCP-Protocol-Version"] = MODERN_VERSION
            h["Mcp-Method"] = method
            key = self.NAME_PARAM.get(method)
            if key and params and key in params:
                h["Mcp-Name"] = str(params[key])
        return h

    def _params(self, params: dict | None) -> dict | None:
        if self.mode == "legacy":
            return params
        params = dict(params or {})
        meta = dict(params.get("_meta") or {})
        meta.setdefault("io.modelcontextprotocol/protocolVersion", MODERN_VERSION)
        meta.setdefault("io.modelcontextprotocol/clientCapabilities", self.capabilities)
        meta.setdefault("io.modelcontextprotocol/clientInfo", {"name": "toolgate-e2e-raw", "version": "1.0"})
        params["_meta"] = meta
        return params

    def post(self, body: dict, headers: dict[str, str]) -> httpx.Response:
        return self.http.post(self.url, content=json.dumps(body), headers=headers)

    def request(self, method: str, params: dict | None = None) -> list[dict]:
        params = self._params(params)
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            body["params"] = params
        r = self.post(body, self._headers(method, params))
        if r.status_code >= 400 and not r.headers.get("content-type", "").startswith("application/json"):
            raise AssertionError(f"{method}: HTTP {r.status_code}: {r.text[:500]}")
        if method == "initialize" and "mcp-session-id" in r.headers:
            self.session_id = r.headers["mcp-session-id"]
        messages = parse_sse_or_json(r)
        assert messages and messages[-1].get("id") == body["id"], f"{method}: no response in {messages}"
        return messages

    def result(self, method: str, params: dict | None = None) -> dict:
        """The `result` of a request (fails the test on a JSON-RPC error)."""
        response = self.request(method, params)[-1]
        assert "result" in response, f"{method} failed: {response}"
        return response["result"]

    def notify(self, method: str, params: dict | None = None) -> httpx.Response:
        body: dict = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        r = self.post(body, self._headers(method, params))
        assert r.status_code in (200, 202), f"{method}: HTTP {r.status_code}: {r.text[:300]}"
        return r

    def close(self) -> None:
        if self.mode == "legacy" and self.session_id:
            with contextlib.suppress(httpx.HTTPError):
                self.http.delete(self.url, headers=self._headers("", None))
        self.http.close()

    def __enter__(self) -> "RawMcp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def child_pids(parent: int, pattern: str | None = None) -> list[int]:
    """Direct children of `parent` (via `pgrep -P`), optionally whose command line matches `pattern`."""
    cmd = ["pgrep", "-P", str(parent)] + (["-f", pattern] if pattern else [])
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value (returned) or fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    """`wait_until` for async tests: sleeps without blocking the event loop (the client keeps running)."""
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(interval)


def write_config(tmp: Path, servers: str, extra: str = "", limits: str = "", listen: str = "") -> Path:
    """A config file for commands that do not listen (e.g. `toolgate stdio`): state dir, servers, grants."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "toolgate.toml"
    config.write_text(
        (f"[listen]\n{listen}\n" if listen else "")
        + f"[state]\ndir = {toml_str(str(tmp / 'state'))}\n"
        + (f"[limits]\n{limits}\n" if limits else "")
        + servers
        + grant_tables(tmp)
        + extra
    )
    return config


async def async_poll(predicate, timeout: float = 10.0, interval: float = 0.1):
    """Polls `predicate` without blocking the event loop; its last value (falsy on timeout).

    Unlike `async_wait_until` it never fails inside the caller's task groups, so the test can
    assert afterwards and get a plain assertion message instead of an exception group."""
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        await anyio.sleep(interval)
