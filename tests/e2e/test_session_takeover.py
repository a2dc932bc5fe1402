"""Sessions that any instance can serve: with a shared `[state] session_key`, a session id is
sealed (ChaCha20-Poly1305) with what another instance needs to take the session over,
including the server sessions of its HTTP upstreams. A client moved to another instance (a
load balancer without affinity) keeps its session, and the upstream sees one session."""

from __future__ import annotations

import subprocess
import secrets

import httpx
import pytest

from conftest import OTHER_TOKEN, PYTHON, ROOT, Gateway, RawMcp, free_port, server_http, toml_str, wait_for_port, wait_until

SESSION_SERVER = ROOT / "tests" / "fixtures" / "session_server.py"


@pytest.fixture
def session_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "session-server.log", "wb")
    proc = subprocess.Popen([PYTHON, str(SESSION_SERVER), f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def instances(tmp_path):
    started: list[Gateway] = []

    def start(name: str, servers: str, key: str | None) -> Gateway:
        home = tmp_path / name
        home.mkdir()
        state = f"session_key = {toml_str(key)}\n" if key else ""
        gw = Gateway(home, servers, state=state)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def text(result: dict) -> str:
    assert not result.get("isError"), result
    return result["content"][0]["text"]


def call(client: RawMcp, tool: str, **args) -> str:
    return text(client.result("tools/call", {"name": tool, "arguments": args}))


def test_a_session_moves_between_instances_with_its_upstream_session(instances, session_server):
    key = secrets.token_hex(32)
    servers = server_http("mem", session_server)
    a = instances("a", servers, key)
    b = instances("b", servers, key)
    client = RawMcp(a.url, token=a.token)
    assert client.session_id.startswith("tgs1."), client.session_id
    assert "mem" not in client.session_id and session_server not in client.session_id
    assert call(client, "remember", value="from-a") == "remembered from-a"
    # The load balancer sends the next requests to B: same session, same server session.
    client.url = b.url
    assert call(client, "recall") == "from-a"
    assert call(client, "remember", value="from-b") == "remembered from-b"
    client.url = a.url
    assert call(client, "recall") == "from-a,from-b"
    assert call(client, "sessions") == "1", "the upstream saw one session"
    assert "took over a session opened by another instance" in b.log()


def test_a_session_id_does_not_open_under_another_key_or_for_another_grant(instances, session_server):
    servers = server_http("mem", session_server)
    key = secrets.token_hex(32)
    a = instances("a", servers, key)
    other_key = instances("b", servers, secrets.token_hex(32))
    client = RawMcp(a.url, token=a.token)
    call(client, "remember", value="secret")
    headers = {"Mcp-Session-Id": client.session_id, "MCP-Protocol-Version": "2025-11-25",
               "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "recall", "arguments": {}}}
    wrong_key = httpx.post(other_key.url, json=body, headers={**headers, "Authorization": f"Bearer {a.token}"})
    assert wrong_key.status_code == 404, wrong_key.text
    assert wrong_key.json()["error"]["message"] == "Session not found"
    # Same key, another grant's token: the session is not bob's.
    same_key = instances("c", servers, key)
    bob = httpx.post(same_key.url, json=body, headers={**headers, "Authorization": f"Bearer {OTHER_TOKEN}"})
    assert bob.status_code == 404, bob.text
    # A changed byte anywhere is another (unknown) session.
    forged = client.session_id[:-2] + ("AA" if not client.session_id.endswith("AA") else "BB")
    tampered = httpx.post(same_key.url, json=body, headers={**headers, "Mcp-Session-Id": forged, "Authorization": f"Bearer {a.token}"})
    assert tampered.status_code == 404, tampered.text


def test_without_a_session_key_ids_are_random_and_local(instances, session_server):
    servers = server_http("mem", session_server)
    a = instances("a", servers, None)
    b = instances("b", servers, None)
    client = RawMcp(a.url, token=a.token)
    assert not client.session_id.startswith("tgs1.")
    assert len(client.session_id) == 32
    call(client, "remember", value="x")
    client.url = b.url
    answer = client.request("tools/call", {"name": "recall", "arguments": {}})[-1]
    assert answer["error"]["message"] == "Session not found"


def test_ending_the_session_on_one_instance_ends_the_upstream_session(instances, session_server):
    key = secrets.token_hex(32)
    servers = server_http("mem", session_server)
    a = instances("a", servers, key)
    b = instances("b", servers, key)
    client = RawMcp(a.url, token=a.token)
    call(client, "remember", value="gone")
    client.url = b.url
    assert call(client, "recall") == "gone"
    ended = client.http.delete(client.url, headers=client._headers("", None))  # DELETE at B
    assert ended.status_code == 200, ended.text
    # A still knows the session (instances share no session table), but the server session
    # behind it is gone: the upstream answers 404 and A says so instead of serving it.
    client.url = a.url
    answer = client.request("tools/call", {"name": "recall", "arguments": {}})[-1]
    failed = answer.get("error") or (answer["result"] if answer["result"].get("isError") else None)
    assert failed, answer
    # The upstream's supervisor task logs why the connection ended; the call's answer may
    # leave before it runs (one worker thread runs both in turn).
    wait_until(lambda: "upstream session expired (HTTP 404)" in a.log(), what="the expiry in A's log")


def test_an_instance_letting_go_of_a_session_leaves_its_upstream_session_to_the_others(instances, session_server):
    key = secrets.token_hex(32)
    servers = server_http("mem", session_server)
    a = instances("a", servers, key)
    b = instances("b", servers, key)
    client = RawMcp(a.url, token=a.token)
    call(client, "remember", value="kept")
    client.url = b.url
    assert call(client, "recall") == "kept"
    # B stops (it drops every session it holds): the server session must survive for A.
    assert b.stop() == 0
    client.url = a.url
    assert call(client, "recall") == "kept"
    assert call(client, "sessions") == "1"
