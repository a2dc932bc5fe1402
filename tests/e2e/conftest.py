"""Shared fixtures for toolgate's end-to-end tests.

They drive the real binaries (``target/debug/toolgate`` and ``demo-mcp-server``, or the
directory in ``TOOLGATE_BIN_DIR``) with real MCP peers: the PyPI ``mcp`` SDK as client and
fixture server, and npm ``@modelcontextprotocol/server-everything``. Everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import hashlib
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


class Gateway:
    """A running `toolgate serve` with a config written for one test."""

    def __init__(self, tmp: Path, servers: str, extra: str = "", listen_extra: str = "", limits: str = "") -> None:
        require(TOOLGATE, "run `cargo build` first")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.config = tmp / "toolgate.toml"
        self.config.write_text(
            f"[listen]\nmcp = \"127.0.0.1:{self.port}\"\n{listen_extra}\n"
            f"[state]\ndir = {toml_str(str(tmp / 'state'))}\n"
            + (f"[limits]\n{limits}\n" if limits else "")
            + servers
            + f"\n[grants.alice]\ntoken_sha256 = \"{sha256_hex(TOKEN)}\"\n"
            + f"\n[grants.bob]\ntoken_sha256 = \"{sha256_hex(OTHER_TOKEN)}\"\n"
            + extra
        )
        self.log_path = tmp / "toolgate.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(TOOLGATE), "serve", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TOOLGATE_LOG": os.environ.get("TOOLGATE_LOG", "info")},
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
