"""What an operator relies on: reusing a Claude Desktop server list, metrics, health, protocol
version negotiation and structured logs."""

import json
import re
import subprocess

import httpx

from conftest import DEMO_SERVER, TOOLGATE, Gateway, RawMcp, demo_server, require


def initialize(gw, version: str) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "ops", "version": "1"}},
    }
    return httpx.post(gw.url, json=body, headers=gw.headers(), timeout=30)


def test_servers_from_a_claude_desktop_file_are_served_beside_the_toml_ones(gateway_factory, tmp_path):
    require(DEMO_SERVER, "run `cargo build` first")
    desktop = tmp_path / "claude_desktop_config.json"
    desktop.write_text(json.dumps({"mcpServers": {"desk": {"command": str(DEMO_SERVER), "args": [], "env": {"X": "1"}}}}))
    gw = gateway_factory(demo_server("local"), top=f'servers_from = "{desktop}"\n')
    client = RawMcp(gw.url, token=gw.token)
    names = sorted(t["name"] for t in client.result("tools/list")["tools"])
    assert names == ["desk__add", "desk__countdown", "desk__echo", "local__add", "local__countdown", "local__echo"]
    result = client.result("tools/call", {"name": "desk__add", "arguments": {"a": 1, "b": 2}})
    assert result["structuredContent"] == {"sum": 3.0}


def test_metrics_count_calls_and_errors_per_server_and_tool(gateway_factory):
    gw = gateway_factory(demo_server())
    client = RawMcp(gw.url, token=gw.token)
    for _ in range(2):
        client.result("tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})
    client.request("tools/call", {"name": "nope", "arguments": {}})
    text = httpx.get(gw.base + "/metrics", timeout=10).text
    assert 'toolgate_tool_calls_total{server="demo",tool="add"} 2' in text, text
    assert 'toolgate_tool_errors_total{server="demo",tool="add"} 0' in text
    assert 'toolgate_tool_errors_total{server="demo",tool="nope"} 1' in text
    assert 'toolgate_tool_call_seconds_count{server="demo",tool="add"} 2' in text
    assert re.search(r'toolgate_http_responses_total\{status="200"\} \d+', text)
    assert "toolgate_sessions 1" in text
    health = httpx.get(gw.base + "/healthz", timeout=10).json()
    assert health == {"status": "ok", "sessions": 1, "servers": ["demo"]}


def test_each_handshake_version_is_negotiated_and_unknown_ones_get_the_latest(gateway_factory):
    gw = gateway_factory(demo_server())
    for version in ("2025-03-26", "2025-06-18", "2025-11-25"):
        assert initialize(gw, version).json()["result"]["protocolVersion"] == version
    assert initialize(gw, "2099-01-01").json()["result"]["protocolVersion"] == "2025-11-25"


def test_an_unsupported_protocol_version_header_is_refused_and_the_session_goes_on(gateway_factory):
    gw = gateway_factory(demo_server())
    response = initialize(gw, "2025-06-18")
    session = response.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    bad = httpx.post(gw.url, json=ping, headers=gw.headers(**{"Mcp-Session-Id": session, "MCP-Protocol-Version": "1999-01-01"}))
    assert bad.status_code == 400
    assert "1999-01-01" in bad.json()["error"]["message"]
    good = httpx.post(gw.url, json=ping, headers=gw.headers(**{"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}))
    assert good.status_code == 200 and good.json()["result"] == {}


def test_json_logs_go_to_stderr_one_object_per_line(tmp_path):
    require(TOOLGATE, "run `cargo build` first")
    config = tmp_path / "toolgate.toml"
    config.write_text('[listen]\nmcp = "127.0.0.1:0"\n')
    proc = subprocess.Popen([str(TOOLGATE), "--log-format", "json", "serve", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    record = json.loads(line)
    assert record["level"] == "INFO" and "serving MCP" in record["fields"]["message"]
    assert out == ""
    assert proc.returncode == 0
