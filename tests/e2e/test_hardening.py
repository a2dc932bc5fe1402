"""Hardening: every bad input a client can send gets the exact error it deserves, nothing bad
reaches an upstream, and the gateway goes on serving the next good request.

HTTP cases go through raw httpx requests (and raw sockets for slowloris); stdio cases drive
`toolgate stdio` through pipes. A tiny header-recording HTTP upstream (below) proves what is,
and is not, forwarded.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import (
    DEMO_SERVER,
    FIXTURE,
    OTHER_TOKEN,
    PYTHON,
    TOKEN,
    TOOLGATE,
    demo_server,
    grant_tables,
    require,
    server_http,
    server_stdio,
    sha256_hex,
    toml_str,
)
from conftest import parse_sse_or_json as messages_of

PROTOCOL = "2025-11-25"


# ---- JSON-RPC over raw HTTP ------------------------------------------------------------------


def initialize_body(id_: int | str = 0) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": id_,
        "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "e2e-hardening", "version": "0"}},
    }


def echo_call(id_, text: str) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}


def auth_headers(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(extra)
    return h


def session_headers(sid: str, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    return auth_headers(token, **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL}, **extra)


def post(gw, body, headers: dict[str, str], timeout: float = 30) -> httpx.Response:
    """POSTs a dict as JSON or bytes as they are."""
    content = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
    return httpx.post(gw.url, content=content, headers=headers, timeout=timeout)




def response_of(r: httpx.Response) -> dict:
    msgs = [m for m in messages_of(r) if "result" in m or "error" in m]
    assert len(msgs) == 1, f"expected one response, got {msgs}"
    return msgs[0]


def open_session(gw, token: str = TOKEN) -> str:
    r = post(gw, initialize_body(), auth_headers(token))
    assert r.status_code == 200, r.text
    assert response_of(r)["result"]["protocolVersion"] == PROTOCOL
    sid = r.headers["mcp-session-id"]
    r = post(gw, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session_headers(sid, token))
    assert r.status_code == 202, r.text
    return sid


def assert_echo_works(gw, sid: str, token: str = TOKEN, text: str | None = None) -> None:
    """The next good request is served."""
    text = text or f"still-alive-{uuid.uuid4().hex[:8]}"
    r = post(gw, echo_call(4242, text), session_headers(sid, token))
    assert r.status_code == 200, r.text
    msg = response_of(r)
    assert msg["id"] == 4242
    assert not msg["result"].get("isError"), msg
    assert msg["result"]["content"][0]["text"] == text, msg


def assert_rpc_error(r: httpx.Response, status: int, code: int, fragment: str, id_=None) -> dict:
    assert r.status_code == status, f"expected HTTP {status}, got {r.status_code}: {r.text[:500]}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body.get("jsonrpc") == "2.0", body
    assert body["id"] == id_, body
    assert body["error"]["code"] == code, body
    assert fragment.lower() in body["error"]["message"].lower(), body
    return body


# ---- a header-recording HTTP upstream --------------------------------------------------------


class RecordingUpstream:
    """Just enough Streamable HTTP MCP (initialize, notifications, tools/list, tools/call echo) to
    sit behind the gateway, recording every request's method, headers and body. Echoing "slow"
    takes 4 s."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _record(self, body: bytes) -> dict | None:
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                with outer.lock:
                    outer.requests.append(
                        {"verb": self.command, "headers": list(self.headers.items()), "body": body, "json": parsed}
                    )
                return parsed

            def _send(self, status: int, payload: dict | None = None, extra: dict | None = None) -> None:
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._record(b"")
                self._send(405)

            def do_DELETE(self) -> None:
                self._record(b"")
                self._send(200)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                msg = self._record(body)
                if not isinstance(msg, dict) or "id" not in msg or "method" not in msg:
                    return self._send(202)
                method, params, id_ = msg["method"], msg.get("params") or {}, msg["id"]
                if method == "initialize":
                    asked = params.get("protocolVersion")
                    version = asked if asked in ("2025-11-25", "2025-06-18", "2025-03-26") else "2025-06-18"
                    result = {
                        "protocolVersion": version,
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "recording-upstream", "version": "0"},
                    }
                    return self._send(200, {"jsonrpc": "2.0", "id": id_, "result": result}, {"Mcp-Session-Id": "rec-1"})
                if method == "ping":
                    return self._send(200, {"jsonrpc": "2.0", "id": id_, "result": {}})
                if method == "tools/list":
                    tools = [{"name": "echo", "description": "echo", "inputSchema": {"type": "object"}}]
                    return self._send(200, {"jsonrpc": "2.0", "id": id_, "result": {"tools": tools}})
                if method == "tools/call":
                    args = params.get("arguments") or {}
                    if args.get("text") == "slow":
                        time.sleep(4)
                    result = {"content": [{"type": "text", "text": str(args.get("text", ""))}]}
                    return self._send(200, {"jsonrpc": "2.0", "id": id_, "result": result})
                return self._send(
                    200, {"jsonrpc": "2.0", "id": id_, "error": {"code": -32601, "message": f"Method not found: {method}"}}
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def methods(self) -> list[str]:
        with self.lock:
            return [r["json"]["method"] for r in self.requests if isinstance(r["json"], dict) and "method" in r["json"]]

    def calls(self) -> list[dict]:
        with self.lock:
            return [r["json"] for r in self.requests if isinstance(r["json"], dict) and r["json"].get("method") == "tools/call"]

    def all_bodies(self) -> bytes:
        with self.lock:
            return b"\n".join(r["body"] for r in self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    rec = RecordingUpstream()
    yield rec
    rec.stop()


UPSTREAM_KEY_ENV = "TG_E2E_UPSTREAM_KEY"


@pytest.fixture
def recorded_gateway(gateway_factory, recorder, monkeypatch):
    """A gateway whose only upstream is the recording server, with an upstream key from env."""
    key = f"upstream-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv(UPSTREAM_KEY_ENV, key)
    gw = gateway_factory(server_http("rec", recorder.url, headers=f'{{ X-Upstream-Key = "${{{UPSTREAM_KEY_ENV}}}" }}'))
    return gw, recorder, key


# ---- Host and Origin -------------------------------------------------------------------------


def test_bad_origin_is_refused_with_403_and_the_next_request_is_served(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    for origin in ["http://evil.example", "null", f"http://127.0.0.1:{gw.port}.evil.example", "https://localhost:1"]:
        r = post(gw, initialize_body(), auth_headers(Origin=origin))
        assert_rpc_error(r, 403, -32600, "origin")
        assert origin in r.json()["error"]["message"]
        r = post(gw, echo_call(1, "x"), session_headers(sid, Origin=origin))
        assert_rpc_error(r, 403, -32600, "is not allowed")
    # loopback origins of the listener are fine
    r = post(gw, echo_call(2, "from-loopback-origin"), session_headers(sid, Origin=f"http://127.0.0.1:{gw.port}"))
    assert r.status_code == 200 and response_of(r)["result"]["content"][0]["text"] == "from-loopback-origin"
    assert_echo_works(gw, sid)


def test_bad_host_is_refused_with_421_and_the_next_request_is_served(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    for host in ["evil.example", f"evil.example:{gw.port}", f"127.0.0.1:{gw.port + 1}", "127.0.0.1"]:
        r = post(gw, initialize_body(), auth_headers(Host=host))
        body = assert_rpc_error(r, 421, -32600, "host")
        assert host in body["error"]["message"]
        r = post(gw, echo_call(1, "x"), session_headers(sid, Host=host))
        assert_rpc_error(r, 421, -32600, "is not allowed")
        r = httpx.get(gw.url, headers=session_headers(sid, Host=host), timeout=10)
        assert_rpc_error(r, 421, -32600, "host")
        r = httpx.delete(gw.url, headers=session_headers(sid, Host=host), timeout=10)
        assert_rpc_error(r, 421, -32600, "host")
    assert_echo_works(gw, sid)  # the DELETEs with a bad Host did not end the session
    r = post(gw, echo_call(3, "localhost-name"), session_headers(sid, Host=f"localhost:{gw.port}"))
    assert r.status_code == 200, r.text


def test_allowed_hosts_and_origins_let_configured_names_in(gateway_factory):
    gw = gateway_factory(
        demo_server(),
        listen_extra='allowed_hosts = ["gw.example.test"]\nallowed_origins = ["https://app.example.test"]\n',
    )
    r = post(gw, initialize_body(), auth_headers(Host="gw.example.test", Origin="https://app.example.test"))
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    r = post(gw, echo_call(1, "via-configured-host"), session_headers(sid, Host="gw.example.test"))
    assert r.status_code == 200 and response_of(r)["result"]["content"][0]["text"] == "via-configured-host"
    r = post(gw, echo_call(2, "x"), session_headers(sid, Host="other.example.test"))
    assert_rpc_error(r, 421, -32600, "host")
    r = post(gw, echo_call(3, "x"), session_headers(sid, Origin="https://other.example.test"))
    assert_rpc_error(r, 403, -32600, "origin")
    r = post(gw, echo_call(4, "x"), session_headers(sid, Origin="https://app.example.test.evil"))
    assert_rpc_error(r, 403, -32600, "origin")
    assert_echo_works(gw, sid)


# ---- grants ----------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401_with_www_authenticate(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    cases = [
        auth_headers(None),
        auth_headers("tg_wrong_token"),
        auth_headers(None, Authorization=f"Basic {TOKEN}"),
        auth_headers(None, Authorization=f"Bearer {TOKEN}x"),
        auth_headers(None, Authorization="Bearer"),
        auth_headers(None, Authorization=f"Bearer  x{TOKEN}"),
    ]
    for headers in cases:
        for body in (initialize_body(), echo_call(7, "x")):
            h = dict(headers)
            if body["method"] != "initialize":
                h.update({"Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL})
            r = post(gw, body, h)
            assert_rpc_error(r, 401, -32600, "grant token")
            assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers
            assert "mcp-session-id" not in r.headers
    r = httpx.get(gw.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid}, timeout=10)
    assert r.status_code == 401 and "www-authenticate" in r.headers
    r = httpx.delete(gw.url, headers={"Mcp-Session-Id": sid}, timeout=10)
    assert r.status_code == 401 and "www-authenticate" in r.headers
    assert_echo_works(gw, sid)


def test_a_session_cannot_be_used_with_another_grants_token(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw, TOKEN)
    r = post(gw, echo_call(9, "stolen"), session_headers(sid, OTHER_TOKEN))
    assert_rpc_error(r, 404, -32600, "session not found", id_=9)
    r = httpx.get(gw.url, headers=session_headers(sid, OTHER_TOKEN, Accept="text/event-stream"), timeout=10)
    assert_rpc_error(r, 404, -32600, "session not found")
    r = httpx.delete(gw.url, headers=session_headers(sid, OTHER_TOKEN), timeout=10)
    assert_rpc_error(r, 404, -32600, "session not found")
    # bob's attempts neither ended nor disturbed alice's session, and bob can open his own
    assert_echo_works(gw, sid, TOKEN)
    bob = open_session(gw, OTHER_TOKEN)
    assert_echo_works(gw, bob, OTHER_TOKEN)
    r = post(gw, echo_call(10, "x"), session_headers(bob, TOKEN))
    assert_rpc_error(r, 404, -32600, "session not found", id_=10)


def test_the_grant_token_never_reaches_the_upstream_but_configured_headers_do(recorded_gateway):
    gw, rec, key = recorded_gateway
    sid = open_session(gw)
    r = post(gw, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session_headers(sid))
    assert [t["name"] for t in response_of(r)["result"]["tools"]] == ["echo"]
    assert_echo_works(gw, sid, text="header-check")
    # the anonymous path too: a refused request must not leak anything either
    post(gw, echo_call(2, "x"), session_headers(sid, "tg_wrong_token"))
    assert "initialize" in rec.methods() and "tools/call" in rec.methods()
    with rec.lock:
        requests = list(rec.requests)
    assert requests
    for req in requests:
        names = [k.lower() for k, _ in req["headers"]]
        values = " ".join(v for _, v in req["headers"])
        assert "authorization" not in names, req["headers"]
        assert TOKEN not in values and "tg_wrong_token" not in values, req["headers"]
        assert TOKEN.encode() not in req["body"]
        got = [v for k, v in req["headers"] if k.lower() == "x-upstream-key"]
        assert got == [key], f"{req['verb']} {req['json']}: X-Upstream-Key {got!r}, expected the env value"
    # and the one tools/call that arrived is the good one
    assert [c["params"]["arguments"] for c in rec.calls()] == [{"text": "header-check"}]


# ---- body size -------------------------------------------------------------------------------


def test_a_body_over_the_configured_limit_is_413(gateway_factory):
    gw = gateway_factory(demo_server(), limits="max_body_bytes = 2048")
    sid = open_session(gw)
    big = echo_call(1, "x" * 4000)
    r = post(gw, big, session_headers(sid))
    assert_rpc_error(r, 413, -32600, "exceeds 2048 bytes")
    assert_echo_works(gw, sid)

    # without a Content-Length (chunked), the limit holds while reading
    def chunks():
        data = json.dumps(big).encode()
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    r = httpx.post(gw.url, content=chunks(), headers=session_headers(sid), timeout=30)
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_rpc_error(r, 413, -32600, "exceeds 2048 bytes")
    assert_echo_works(gw, sid)
    # just under the limit passes
    ok = echo_call(2, "y" * 1800)
    assert len(json.dumps(ok)) < 2048
    r = post(gw, ok, session_headers(sid))
    assert r.status_code == 200 and response_of(r)["result"]["content"][0]["text"] == "y" * 1800


def test_the_default_body_limit_is_4_mib(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    r = post(gw, echo_call(1, "x" * (5 * 1024 * 1024)), session_headers(sid), timeout=60)
    assert_rpc_error(r, 413, -32600, f"exceeds {4 * 1024 * 1024} bytes")
    assert_echo_works(gw, sid)
    text = "z" * (1024 * 1024)
    r = post(gw, echo_call(2, text), session_headers(sid), timeout=60)
    assert r.status_code == 200 and response_of(r)["result"]["content"][0]["text"] == text


# ---- malformed JSON-RPC ----------------------------------------------------------------------


def test_a_batch_is_refused_and_nothing_is_forwarded(recorded_gateway):
    gw, rec, _ = recorded_gateway
    sid = open_session(gw)
    batch = [echo_call(1, "smuggled-1"), {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    r = post(gw, batch, session_headers(sid))
    assert_rpc_error(r, 400, -32600, "batch")
    r = post(gw, [echo_call(3, "smuggled-alone")], session_headers(sid))
    assert_rpc_error(r, 400, -32600, "batch")
    # a batch without a session (an initialize array) is refused too, and opens no session
    r = post(gw, [initialize_body(), echo_call(4, "smuggled-init")], auth_headers())
    assert_rpc_error(r, 400, -32600, "batch")
    assert "mcp-session-id" not in r.headers
    r = post(gw, b'  \n[' + json.dumps(echo_call(5, "smuggled-ws")).encode() + b']', session_headers(sid))
    assert_rpc_error(r, 400, -32600, "batch")
    time.sleep(0.3)
    assert rec.calls() == [], rec.calls()
    assert b"smuggled" not in rec.all_bodies()
    assert_echo_works(gw, sid, text="after-batch")
    assert [c["params"]["arguments"]["text"] for c in rec.calls()] == ["after-batch"]


DUPLICATES = [
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"add","arguments":{"text":"dup"}}}',
        '"name"',
        id="params.name",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"echo","arguments":{"text":"dup"}}}',
        '"method"',
        id="method",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\\u0061me":"add","arguments":{"text":"dup"}}}',
        '"name"',
        id="escaped-name",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"dup","text":"other"}}}',
        '"text"',
        id="nested-argument",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"dup"}}}',
        '"id"',
        id="id",
    ),
]


@pytest.mark.parametrize("body,key", DUPLICATES)
def test_duplicate_keys_are_refused_and_never_forwarded(recorded_gateway, body, key):
    gw, rec, _ = recorded_gateway
    sid = open_session(gw)
    r = post(gw, body, session_headers(sid))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == -32600, err
    assert "duplicate key" in err["message"] and key in err["message"], err
    time.sleep(0.3)
    assert rec.calls() == []
    assert b"dup" not in rec.all_bodies()
    assert_echo_works(gw, sid)


def test_invalid_utf8_is_a_parse_error(recorded_gateway):
    gw, rec, _ = recorded_gateway
    sid = open_session(gw)
    for body in (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bad\xff\xfe"}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ech\xc3","arguments":{}}}',
        b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"ping"}',  # a UTF-8 BOM is not JSON either
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"\xed\xa0\x80"}}}',
    ):
        r = post(gw, body, session_headers(sid))
        assert_rpc_error(r, 400, -32700, "parse error")
    assert rec.calls() == []
    assert_echo_works(gw, sid)


def test_nesting_10000_deep_is_refused_without_harm(recorded_gateway):
    gw, rec, _ = recorded_gateway
    sid = open_session(gw)
    deep = "[" * 10_000 + "]" * 10_000
    bodies = [
        ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x","deep":' + deep + "}}}").encode(),
        ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x","deep":' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}}}").encode(),
        deep.encode(),
        ("[" * 10_000).encode(),  # unterminated too
    ]
    for body in bodies:
        r = post(gw, body, session_headers(sid))
        assert_rpc_error(r, 400, -32600, "nesting deeper than 64 levels")
    assert rec.calls() == []
    assert_echo_works(gw, sid)


def test_trailing_garbage_is_a_parse_error(recorded_gateway):
    gw, rec, _ = recorded_gateway
    sid = open_session(gw)
    good = json.dumps(echo_call(1, "trailing")).encode()
    for tail in (b" garbage", b"{}", b'\n{"jsonrpc":"2.0","id":2,"method":"tools/list"}', b"]", b"\x00"):
        r = post(gw, good + tail, session_headers(sid))
        assert_rpc_error(r, 400, -32700, "trailing")
    for body in (b"", b"   ", b"not json", b'{"jsonrpc":"2.0","id":1,"method":"tools/call"'):
        r = post(gw, body, session_headers(sid))
        assert_rpc_error(r, 400, -32700, "parse error")
    assert rec.calls() == []
    assert_echo_works(gw, sid)


ODD_IDS = [
    pytest.param("null", "must not be null", id="null"),
    pytest.param('{"a":1}', "must be a string or an integer", id="object"),
    pytest.param("[1]", "must be a string or an integer", id="array"),
    pytest.param("1.5", "must be a string or an integer", id="float"),
    pytest.param("1.0", "must be a string or an integer", id="float-integral"),
    pytest.param("1e3", "must be a string or an integer", id="exponent"),
    pytest.param("true", "must be a string or an integer", id="bool"),
]


@pytest.mark.parametrize("raw_id,fragment", ODD_IDS)
def test_odd_request_ids_are_refused_and_never_forwarded(recorded_gateway, raw_id, fragment):
    gw, rec, _ = recorded_gateway
    sid = open_session(gw)
    body = ('{"jsonrpc":"2.0","id":' + raw_id + ',"method":"tools/call","params":{"name":"echo","arguments":{"text":"odd"}}}').encode()
    r = post(gw, body, session_headers(sid))
    assert_rpc_error(r, 400, -32600, fragment, id_=None)
    time.sleep(0.2)
    assert rec.calls() == []
    assert_echo_works(gw, sid)


def test_legal_but_unusual_ids_are_echoed_exactly(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    for raw_id, expected in [('"abc"', "abc"), ('""', ""), ("-5", -5), ("0", 0), ("9007199254740993", 9007199254740993), ('"1"', "1")]:
        body = ('{"jsonrpc":"2.0","id":' + raw_id + ',"method":"tools/call","params":{"name":"echo","arguments":{"text":"id"}}}').encode()
        r = post(gw, body, session_headers(sid))
        assert r.status_code == 200, r.text
        assert raw_id in r.text  # exactly as written, no float rounding
        assert response_of(r)["id"] == expected


def test_unknown_method_is_method_not_found(gateway_factory):
    # one upstream: the gateway relays it and the upstream's -32601 comes back
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    r = post(gw, {"jsonrpc": "2.0", "id": 5, "method": "no/such/method", "params": {}}, session_headers(sid))
    assert r.status_code == 200, r.text
    msg = response_of(r)
    assert msg["id"] == 5 and msg["error"]["code"] == -32601 and "no/such/method" in msg["error"]["message"]
    assert_echo_works(gw, sid)
    # several upstreams: the gateway answers itself
    gw2 = gateway_factory(demo_server("one") + demo_server("two"))
    sid2 = open_session(gw2)
    r = post(gw2, {"jsonrpc": "2.0", "id": 6, "method": "no/such/method"}, session_headers(sid2))
    assert r.status_code == 200, r.text
    msg = response_of(r)
    assert msg["id"] == 6 and msg["error"]["code"] == -32601 and "Method not found" in msg["error"]["message"]
    # initialize inside a session is refused, not a second handshake
    r = post(gw2, initialize_body(7), session_headers(sid2))
    msg = response_of(r)
    assert msg["id"] == 7 and msg["error"]["code"] == -32600 and "already initialized" in msg["error"]["message"]
    r = post(gw2, {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "one__echo", "arguments": {"text": "two-servers"}}}, session_headers(sid2))
    assert response_of(r)["result"]["content"][0]["text"] == "two-servers"


def test_unknown_missing_and_deleted_session_ids(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    for bogus in [uuid.uuid4().hex, "0" * 32, "not-hex-at-all", sid + "0", sid[:-1]]:
        r = post(gw, echo_call(11, "x"), session_headers(bogus))
        assert_rpc_error(r, 404, -32600, "session not found", id_=11)
        r = httpx.get(gw.url, headers=session_headers(bogus, Accept="text/event-stream"), timeout=10)
        assert_rpc_error(r, 404, -32600, "session not found")
    # missing session id on a non-initialize request
    r = post(gw, echo_call(12, "x"), auth_headers())
    assert_rpc_error(r, 400, -32600, "missing mcp-session-id", id_=12)
    r = post(gw, {"jsonrpc": "2.0", "method": "notifications/initialized"}, auth_headers())
    assert_rpc_error(r, 400, -32600, "missing mcp-session-id")
    r = httpx.get(gw.url, headers=auth_headers(Accept="text/event-stream"), timeout=10)
    assert_rpc_error(r, 400, -32600, "missing mcp-session-id")
    r = httpx.delete(gw.url, headers=auth_headers(), timeout=10)
    assert_rpc_error(r, 400, -32600, "missing mcp-session-id")
    assert_echo_works(gw, sid)
    # DELETE ends it; afterwards it is unknown everywhere
    r = httpx.delete(gw.url, headers=session_headers(sid), timeout=10)
    assert r.status_code in (200, 204), r.text
    r = post(gw, echo_call(13, "x"), session_headers(sid))
    assert_rpc_error(r, 404, -32600, "session not found", id_=13)
    r = httpx.get(gw.url, headers=session_headers(sid, Accept="text/event-stream"), timeout=10)
    assert_rpc_error(r, 404, -32600, "session not found")
    r = httpx.delete(gw.url, headers=session_headers(sid), timeout=10)
    assert_rpc_error(r, 404, -32600, "session not found")
    assert httpx.get(f"{gw.base}/healthz", timeout=10).json()["sessions"] == 0
    # and a new session works
    assert_echo_works(gw, open_session(gw))


# ---- stdio -----------------------------------------------------------------------------------


class StdioGateway:
    """`toolgate stdio --grant alice` on pipes; every stdout line is kept for the final check."""

    def __init__(self, tmp, servers: str, limits: str = "") -> None:
        require(TOOLGATE, "run `cargo build` first")
        self.config = tmp / "stdio.toml"
        self.config.write_text(
            f"[state]\ndir = {toml_str(str(tmp / 'state'))}\n"
            + (f"[limits]\n{limits}\n" if limits else "")
            + servers
            + grant_tables(tmp)
        )
        self.log_path = tmp / "stdio.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(TOOLGATE), "stdio", "--config", str(self.config), "--grant", "alice"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "TOOLGATE_LOG": os.environ.get("TOOLGATE_LOG", "info")},
        )
        self.raw: list[bytes] = []
        self.q: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.raw.append(line)
            self.q.put(line)
        self.q.put(None)

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_json(self, obj) -> None:
        self.send(json.dumps(obj).encode() + b"\n")

    def recv(self, timeout: float = 20) -> dict:
        line = self.q.get(timeout=timeout)
        assert line is not None, f"stdout closed; log:\n{self.log()}"
        return json.loads(line)

    def recv_response(self, timeout: float = 20) -> dict:
        """The next response, skipping notifications (which the final check still sees)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.1, deadline - time.monotonic()))
            if "result" in msg or "error" in msg:
                return msg

    def initialize(self) -> None:
        self.send_json(initialize_body(0))
        msg = self.recv_response(60)
        assert msg["id"] == 0 and msg["result"]["protocolVersion"] == PROTOCOL, msg
        self.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def assert_echo_works(self, text: str) -> None:
        self.send_json(echo_call(77, text))
        msg = self.recv_response()
        assert msg["id"] == 77 and msg["result"]["content"][0]["text"] == text, msg

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self, timeout: float = 5) -> int | None:
        """Closes stdin and waits for the exit: the exit code, or None when it had to be killed."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self.reader.join(5)
        if not self._log.closed:
            self._log.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.reader.join(5)

    def responses(self) -> list[dict]:
        return [m for m in map(json.loads, self.raw) if "result" in m or "error" in m]

    def assert_stdout_is_only_json_rpc(self) -> None:
        for line in self.raw:
            assert line.endswith(b"\n"), line[:200]
            obj = json.loads(line)
            assert isinstance(obj, dict) and obj.get("jsonrpc") == "2.0", line[:200]


@pytest.fixture
def stdio_gateway(tmp_path):
    started: list[StdioGateway] = []

    def start(servers: str, limits: str = "") -> StdioGateway:
        sub = tmp_path / f"stdio{len(started)}"
        sub.mkdir()
        g = StdioGateway(sub, servers, limits)
        started.append(g)
        return g

    yield start
    for g in started:
        if g.proc.poll() is None:
            g.kill()
        if not g._log.closed:
            g._log.close()
        sys.stderr.write(f"--- toolgate stdio log ({g.config}) ---\n{g.log_path.read_text(errors='replace')[-5000:]}\n")


LINE_LIMIT = 4096

STDIO_BAD = [
    pytest.param([b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"' + b"x" * 10_000 + b'"}}}\n'], -32600, f"exceeds the limit of {LINE_LIMIT} bytes", id="overlong-line"),
    pytest.param([b"y" * 3000, b"y" * 3000, b"y" * 3000 + b"\n"], -32600, f"exceeds the limit of {LINE_LIMIT} bytes", id="overlong-line-in-pieces"),
    pytest.param([b"z" * (1024 * 1024) + b"\n"], -32600, f"exceeds the limit of {LINE_LIMIT} bytes", id="one-mib-line"),
    pytest.param([b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"\xff\xfe"}}}\n'], -32700, "parse error", id="invalid-utf8"),
    pytest.param([json.dumps([echo_call(1, "smuggled")]).encode() + b"\n"], -32600, "batch", id="batch"),
    pytest.param([b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"add","arguments":{"text":"dup"}}}\n'], -32600, "duplicate key", id="duplicate-keys"),
    pytest.param([b"[" * 2000 + b"]" * 2000 + b"\n"], -32600, "nesting deeper than", id="deep-nesting"),
    pytest.param([b'{"jsonrpc":"2.0","id":1,"method":"ping"} trailing\n'], -32700, "trailing", id="trailing-garbage"),
    pytest.param([b'{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"echo","arguments":{"text":"n"}}}\n'], -32600, "must not be null", id="null-id"),
    pytest.param([b'{"jsonrpc":"2.0","id":{"x":1},"method":"tools/call","params":{"name":"echo","arguments":{"text":"o"}}}\n'], -32600, "string or an integer", id="object-id"),
]


@pytest.mark.parametrize("chunks,code,fragment", STDIO_BAD)
def test_stdio_bad_input_gets_a_json_rpc_error_and_the_next_request_is_served(stdio_gateway, chunks, code, fragment):
    g = stdio_gateway(demo_server(), limits=f"max_line_bytes = {LINE_LIMIT}")
    g.initialize()
    g.assert_echo_works("before")
    for chunk in chunks:
        g.send(chunk)
        time.sleep(0.05)
    msg = g.recv_response()
    assert msg.get("id") is None, msg
    assert msg["error"]["code"] == code, msg
    assert fragment in msg["error"]["message"], msg
    g.assert_echo_works("after")
    time.sleep(0.2)
    g.kill()  # exiting on EOF is test_stdio_exits_when_its_input_ends
    g.assert_stdout_is_only_json_rpc()
    # the bad input produced exactly one answer: initialize, before, the error, after
    assert [r.get("id") for r in g.responses()] == [0, 77, None, 77], g.raw


def test_stdio_exits_when_its_input_ends(stdio_gateway):
    """A client closing stdin (MCP's stdio shutdown) makes `toolgate stdio` exit, with its
    upstream children."""
    marker = f"tg-stdio-eof-{uuid.uuid4().hex}"
    g = stdio_gateway(server_stdio("demo", str(DEMO_SERVER), [marker]))
    g.initialize()
    g.assert_echo_works("then-eof")
    assert len(pgrep(marker)) == 1
    code = g.close(timeout=10)
    assert code == 0, f"toolgate stdio did not exit within 10 s of EOF (exit code {code}); log:\n{g.log()}"
    assert wait_until(lambda: not pgrep(marker), 5), pgrep(marker)
    g.assert_stdout_is_only_json_rpc()


def test_stdio_bad_input_before_initialize_and_a_final_line_without_newline(stdio_gateway):
    g = stdio_gateway(demo_server(), limits=f"max_line_bytes = {LINE_LIMIT}")
    g.send(b"\xff\xfe not json\n")
    msg = g.recv_response()
    assert msg["error"]["code"] == -32700, msg
    g.send_json([initialize_body(0)])
    msg = g.recv_response()
    assert msg["error"]["code"] == -32600 and "batch" in msg["error"]["message"], msg
    g.send_json(echo_call(1, "too early"))
    msg = g.recv_response()
    assert msg["id"] == 1 and msg["error"]["code"] == -32600 and "initialize" in msg["error"]["message"], msg
    g.initialize()
    g.assert_echo_works("served")
    # a last request without a newline before EOF is still a message
    g.send(json.dumps(echo_call(2, "no-newline")).encode())
    g.proc.stdin.close()
    msg = g.recv_response()
    assert msg["id"] == 2 and msg["result"]["content"][0]["text"] == "no-newline", msg
    g.close()  # exiting on EOF is test_stdio_exits_when_its_input_ends
    g.assert_stdout_is_only_json_rpc()


# ---- per-grant limits ------------------------------------------------------------------------


def test_sessions_per_grant_limit_is_429(gateway_factory):
    gw = gateway_factory(demo_server(), limits="sessions_per_grant = 2")
    a1, a2 = open_session(gw), open_session(gw)
    r = post(gw, initialize_body(3), auth_headers())
    assert_rpc_error(r, 429, -32600, 'grant "alice" has reached its limit of 2 sessions', id_=3)
    assert "mcp-session-id" not in r.headers
    # the refused initialize did not disturb the others, nor another grant
    assert_echo_works(gw, a1)
    assert_echo_works(gw, a2)
    b1 = open_session(gw, OTHER_TOKEN)
    assert_echo_works(gw, b1, OTHER_TOKEN)
    assert httpx.get(f"{gw.base}/healthz", timeout=10).json()["sessions"] == 3
    # closing one frees a slot
    assert httpx.delete(gw.url, headers=session_headers(a1), timeout=10).status_code in (200, 204)
    a3 = open_session(gw)
    assert_echo_works(gw, a3)
    r = post(gw, initialize_body(4), auth_headers())
    assert_rpc_error(r, 429, -32600, "limit of 2 sessions", id_=4)


def open_get_stream(client: httpx.Client, gw, sid: str, token: str = TOKEN):
    cm = client.stream("GET", gw.url, headers=session_headers(sid, token, Accept="text/event-stream"))
    r = cm.__enter__()
    return cm, r


def test_streams_per_grant_limit_is_429(gateway_factory):
    gw = gateway_factory(demo_server(), limits="streams_per_grant = 2")
    a1, a2, a3 = open_session(gw), open_session(gw), open_session(gw)
    b1 = open_session(gw, OTHER_TOKEN)
    with httpx.Client(timeout=30) as client:
        s1, r1 = open_get_stream(client, gw, a1)
        s2, r2 = open_get_stream(client, gw, a2)
        try:
            assert r1.status_code == 200 and r2.status_code == 200
            assert r1.headers["content-type"].startswith("text/event-stream")
            r = httpx.get(gw.url, headers=session_headers(a3, Accept="text/event-stream"), timeout=10)
            assert_rpc_error(r, 429, -32600, "too many open streams")
            # another grant is not affected
            sb, rb = open_get_stream(client, gw, b1, OTHER_TOKEN)
            assert rb.status_code == 200
            sb.__exit__(None, None, None)
        finally:
            s1.__exit__(None, None, None)
        # closing a stream frees its slot (allow the gateway to notice the disconnect)
        deadline = time.monotonic() + 5
        while True:
            r = client.send(client.build_request("GET", gw.url, headers=session_headers(a3, Accept="text/event-stream")), stream=True)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            r.read()
            r.close()
            time.sleep(0.1)
        try:
            assert r.status_code == 200, r.read()
        finally:
            r.close()
            s2.__exit__(None, None, None)
    assert_echo_works(gw, a1)


def test_a_plain_json_call_is_not_counted_as_an_open_stream(gateway_factory):
    """`streams_per_grant` bounds SSE streams (GET streams and streamed POST responses); a
    client whose sessions each hold their GET stream (as SDK clients do) can still call tools."""
    gw = gateway_factory(demo_server(), limits="streams_per_grant = 1")
    sid = open_session(gw)
    with httpx.Client(timeout=30) as client:
        cm, r = open_get_stream(client, gw, sid)
        try:
            assert r.status_code == 200
            r = post(gw, echo_call(1, "json-answer"), session_headers(sid))
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("application/json")
            assert response_of(r)["result"]["content"][0]["text"] == "json-answer"
        finally:
            cm.__exit__(None, None, None)


def test_idle_sessions_expire(gateway_factory):
    marker = f"tg-idle-{uuid.uuid4().hex}"
    gw = gateway_factory(server_stdio("demo", str(DEMO_SERVER), [marker]), limits='session_idle_timeout = "1s"')
    sid = open_session(gw)
    keep = open_session(gw)
    assert_echo_works(gw, sid)
    assert len(pgrep(marker)) == 2
    # keep one session busy-ish by using it regularly: it must survive; the other expires
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        health = httpx.get(f"{gw.base}/healthz", timeout=10).json()
        if health["sessions"] < 2:
            break
        assert_echo_works(gw, keep)
        time.sleep(0.5)
    assert health["sessions"] == 1, "the idle session was not closed within 25 s"
    r = post(gw, echo_call(1, "x"), session_headers(sid))
    assert_rpc_error(r, 404, -32600, "session not found", id_=1)
    assert_echo_works(gw, keep)
    # its upstream child went with it
    assert wait_until(lambda: len(pgrep(marker)) == 1, 10), pgrep(marker)


# ---- graceful shutdown -----------------------------------------------------------------------


def pgrep(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.mark.parametrize("progress", [False, True], ids=["json-answer", "sse-with-progress"])
def test_sigterm_lets_an_in_flight_call_finish_and_stops_the_upstream(gateway_factory, progress):
    marker = f"tg_shutdown_{uuid.uuid4().hex}"
    # `-X anything` is accepted by Python and shows in the command line: a unique marker
    gw = gateway_factory(server_stdio("fixture", PYTHON, ["-X", marker, str(FIXTURE), "--stdio"]))
    sid = open_session(gw)
    idle = open_session(gw)
    assert len(pgrep(marker)) == 2
    result: dict = {}

    def slow_call() -> None:
        params = {"name": "sleep", "arguments": {"ms": 1500}}
        if progress:
            params["_meta"] = {"progressToken": "shutdown-progress"}
        body = {"jsonrpc": "2.0", "id": 31, "method": "tools/call", "params": params}
        started = time.monotonic()
        try:
            result["response"] = post(gw, body, session_headers(sid), timeout=30)
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e
        result["elapsed"] = time.monotonic() - started

    with httpx.Client(timeout=30) as streams:
        # an idle GET stream must not hold the shutdown for the whole grace period
        cm, get_stream = open_get_stream(streams, gw, idle)
        assert get_stream.status_code == 200
        t = threading.Thread(target=slow_call)
        t.start()
        time.sleep(0.4)
        signalled = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        try:
            code = gw.proc.wait(timeout=20)
        finally:
            cm.__exit__(None, None, None)
        took = time.monotonic() - signalled
    t.join(20)
    assert "error" not in result, f"the in-flight call failed: {result.get('error')!r}"
    r = result["response"]
    assert r.status_code == 200, r.text
    msgs = messages_of(r)
    msg = response_of(r)
    assert msg["id"] == 31 and not msg["result"].get("isError"), msg
    assert msg["result"]["content"][0]["text"] == "slept 1500 ms"
    if progress:
        got = [(m["params"]["progressToken"], m["params"]["progress"]) for m in msgs if m.get("method") == "notifications/progress"]
        assert got == [("shutdown-progress", k) for k in range(11)], got
    assert result["elapsed"] >= 1.4
    assert code == 0, gw.log()
    assert took < 6, f"exit took {took:.1f}s after SIGTERM (the call needed ~1.1s more)"
    assert wait_until(lambda: not pgrep(marker), 5), f"upstream children still running: {pgrep(marker)}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{gw.base}/healthz", timeout=2)


# ---- slowloris -------------------------------------------------------------------------------


def test_slowloris_clients_do_not_stop_others_from_being_served(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    stop = threading.Event()
    socks: list[socket.socket] = []
    # many connections that never finish their headers, plus a few that trickle bytes
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(s)

    def trickle() -> None:
        s = socket.create_connection(("127.0.0.1", gw.port))
        socks.append(s)
        head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nAuthorization: Bearer {TOKEN}\r\nX-Slow: " + "a" * 1000
        for b in head.encode():
            if stop.is_set():
                return
            try:
                s.send(bytes([b]))
            except OSError:
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(5)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        for i in range(20):
            t0 = time.monotonic()
            assert_echo_works(gw, sid, text=f"served-{i}")
            assert time.monotonic() - t0 < 2, "a good request waited behind slow clients"
            time.sleep(0.1)
        # new sessions open too, on fresh connections
        assert_echo_works(gw, open_session(gw))
        assert time.monotonic() - started < 10
        # a body that trickles does not block others either
        s = socket.create_connection(("127.0.0.1", gw.port))
        socks.append(s)
        s.sendall(
            (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nMcp-Session-Id: {sid}\r\nContent-Length: 100000\r\n\r\n{{"
            ).encode()
        )
        assert_echo_works(gw, sid, text="body-trickle")
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for s in socks:
            s.close()
    assert_echo_works(gw, sid)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """What the server sends before it closes the connection; fails if it is still open."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the gateway kept the connection open for {within} s; it sent {data[:200]!r}")
    except ConnectionResetError:
        pass
    return data


def test_connections_that_do_not_send_a_head_in_time_are_closed(gateway_factory):
    gw = gateway_factory(demo_server(), limits='header_timeout = "1s"')
    sid = open_session(gw)
    silent = socket.create_connection(("127.0.0.1", gw.port))
    partial = socket.create_connection(("127.0.0.1", gw.port))
    partial.sendall(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nAuthorization: Bearer {TOKEN}\r\n".encode())
    started = time.monotonic()
    try:
        for sock in (silent, partial):
            assert b"200 OK" not in read_until_closed(sock, 10)
        assert time.monotonic() - started < 5
    finally:
        silent.close()
        partial.close()
    # a client that keeps its connection and idles past the deadline goes on, on a new one
    with httpx.Client(timeout=30) as client:
        for i in range(3):
            r = client.post(gw.url, json=echo_call(i, f"after-idle-{i}"), headers=session_headers(sid))
            assert r.status_code == 200, r.text
            assert response_of(r)["result"]["content"][0]["text"] == f"after-idle-{i}"
            time.sleep(1.5)


def post_raw(gw, sid, rest, within=10):
    """Sends a `POST /mcp` of the session whose head ends with `rest` (more headers, the blank
    line, a body as raw as wanted); returns the answer's head and body once the gateway closes
    the connection, and how long that took."""
    sock = socket.create_connection(("127.0.0.1", gw.port))
    try:
        sock.sendall(
            (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n"
                + rest
            ).encode()
        )
        started = time.monotonic()
        answer = read_until_closed(sock, within)
        took = time.monotonic() - started
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body, took


def test_a_body_that_does_not_arrive_in_time_is_408_and_the_next_request_is_served(gateway_factory):
    gw = gateway_factory(demo_server(), limits='body_timeout = "1s"')
    sid = open_session(gw)
    head, body, took = post_raw(gw, sid, 'Content-Length: 1000\r\n\r\n{"jsonrpc": ')
    assert took < 5
    assert head.startswith(b"HTTP/1.1 408"), head + body
    assert json.loads(body)["error"]["message"] == "the request body did not arrive within 1 s", body
    assert_echo_works(gw, sid)


def test_a_body_with_broken_framing_is_400_not_413(gateway_factory):
    """A chunked body whose chunk size is not hex is a broken request, not an oversized one."""
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    head, body, _ = post_raw(gw, sid, "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head + body
    assert json.loads(body)["error"]["message"].startswith("the request body could not be read"), body
    assert_echo_works(gw, sid)


# ---- HTTP/1.1 on the message endpoint ---------------------------------------------------------
# The gateway reads message POSTs off the socket itself and hands anything else to hyper: these
# pin what a client sees at that seam.


class Conn:
    """A raw client connection to the gateway, reading answers one at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.rest = b""

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *_) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.send(data)


def read_response(conn: Conn, within: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Reads one HTTP/1.1 response (Content-Length or chunked); keeps what follows."""
    sock = conn.sock
    sock.settimeout(within)
    data = conn.rest
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, data = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    assert lines[0].startswith("HTTP/1.1 "), lines[0]
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}

    def need(n: int) -> None:
        nonlocal data
        while len(data) < n:
            chunk = sock.recv(65536)
            assert chunk, f"closed mid-body: {data!r}"
            data += chunk

    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in data:
                need(len(data) + 1)
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line, 16)
            need(size + 2)
            body, data = body + data[:size], data[size + 2 :]
            if size == 0:
                break
    else:
        length = int(headers.get("content-length", "0"))
        need(length)
        body, data = data[:length], data[length:]
    conn.rest = data
    return status, headers, body


def raw_post(port: int, sid: str | None, body: bytes, extra: str = "", token: str = TOKEN) -> bytes:
    """The bytes of a message POST."""
    session = f"Mcp-Session-Id: {sid}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n" if sid else ""
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{session}{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def echo_bytes(id_, text: str) -> bytes:
    return json.dumps(echo_call(id_, text)).encode()


def assert_echo_answer(answer: tuple[int, dict[str, str], bytes], id_, text: str) -> None:
    status, headers, body = answer
    assert status == 200, body
    assert headers["content-type"] == "application/json", headers
    assert "date" in headers, headers
    msg = json.loads(body)
    assert msg["id"] == id_ and msg["result"]["content"][0]["text"] == text, msg


def test_pipelined_calls_on_one_connection_are_answered_in_order(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    with Conn(gw.port) as conn:
        conn.send(b"".join(raw_post(gw.port, sid, echo_bytes(i, f"piped-{i}")) for i in range(5)))
        for i in range(5):
            assert_echo_answer(read_response(conn), i, f"piped-{i}")
        # and the connection goes on
        conn.send(raw_post(gw.port, sid, echo_bytes(9, "after")))
        assert_echo_answer(read_response(conn), 9, "after")


def test_a_request_in_pieces_is_served_and_the_connection_kept(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    request = raw_post(gw.port, sid, echo_bytes(1, "pieces"))
    head_end = request.index(b"\r\n\r\n") + 4
    with Conn(gw.port) as conn:
        # mid-name, mid-value, the blank line alone, then the body in two writes
        sent = 0
        for cut in (10, 60, head_end - 2, head_end, head_end + 7, len(request)):
            conn.send(request[sent:cut])
            sent = cut
            time.sleep(0.15)
        assert_echo_answer(read_response(conn), 1, "pieces")
        conn.send(raw_post(gw.port, sid, echo_bytes(2, "whole")))
        assert_echo_answer(read_response(conn), 2, "whole")


def test_one_connection_serves_messages_then_other_requests_then_messages(gateway_factory):
    """A GET after message POSTs (hyper's part), then POSTs again, all on one connection."""
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    with Conn(gw.port) as conn:
        conn.send(raw_post(gw.port, sid, echo_bytes(1, "before")))
        assert_echo_answer(read_response(conn), 1, "before")
        conn.send(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n\r\n".encode())
        status, _, body = read_response(conn)
        assert status == 200 and json.loads(body)["status"] == "ok", body
        conn.send(raw_post(gw.port, sid, echo_bytes(2, "after")))
        assert_echo_answer(read_response(conn), 2, "after")


def test_chunked_and_expect_continue_posts_are_served(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    body = echo_bytes(1, "chunked")
    # httpx sends a generator's content chunked
    r = httpx.post(gw.url, content=iter([body[:10], body[10:]]), headers=session_headers(sid), timeout=30)
    assert r.status_code == 200, r.text
    assert response_of(r)["result"]["content"][0]["text"] == "chunked"
    with Conn(gw.port) as conn:
        body = echo_bytes(2, "continued")
        request = raw_post(gw.port, sid, body, extra="Expect: 100-continue\r\n")
        conn.send(request[: -len(body)])
        conn.sock.settimeout(10)
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = conn.sock.recv(65536)
            assert chunk, f"closed before 100 Continue: {interim!r}"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        conn.rest = interim.partition(b"\r\n\r\n")[2]
        conn.send(body)
        assert_echo_answer(read_response(conn), 2, "continued")


def test_connection_close_ends_the_connection_after_the_answer(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    with Conn(gw.port) as conn:
        conn.send(raw_post(gw.port, sid, echo_bytes(1, "last"), extra="Connection: close\r\n"))
        answer = read_response(conn)
        assert_echo_answer(answer, 1, "last")
        assert answer[1]["connection"] == "close", answer[1]
        assert conn.rest + read_until_closed(conn.sock, 5) == b""


def test_a_refused_post_keeps_its_connection_only_if_its_body_came(gateway_factory):
    gw = gateway_factory(demo_server())
    sid = open_session(gw)
    with Conn(gw.port) as conn:
        conn.send(raw_post(gw.port, sid, echo_bytes(1, "refused"), token="tg_wrong"))
        status, headers, body = read_response(conn)
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="toolgate"', (status, headers)
        assert "grant token" in json.loads(body)["error"]["message"]
        conn.send(raw_post(gw.port, sid, echo_bytes(2, "next")))
        assert_echo_answer(read_response(conn), 2, "next")
    with Conn(gw.port) as conn:
        # the head alone: the body was never read, so the connection ends after the answer
        conn.send(raw_post(gw.port, sid, echo_bytes(1, "refused"), token="tg_wrong")[:-10])
        status, headers, _ = read_response(conn)
        assert status == 401 and headers["connection"] == "close", (status, headers)
        read_until_closed(conn.sock, 5)
    assert_echo_works(gw, sid)


def test_a_client_that_goes_away_mid_call_cancels_it_upstream(recorded_gateway):
    gw, recorder, _ = recorded_gateway
    sid = open_session(gw)
    conn = Conn(gw.port)
    conn.send(raw_post(gw.port, sid, echo_bytes(7, "slow")))
    assert wait_until(lambda: any(c["params"]["arguments"]["text"] == "slow" for c in recorder.calls()), 5)
    conn.sock.close()
    # the upstream hears of it well before its 4 s answer
    assert wait_until(lambda: "notifications/cancelled" in recorder.methods(), 3), recorder.methods()
    with recorder.lock:
        cancel = next(r["json"] for r in recorder.requests if isinstance(r["json"], dict) and r["json"].get("method") == "notifications/cancelled")
    assert cancel["params"]["reason"] == "the client went away", cancel
    assert_echo_works(gw, sid)
