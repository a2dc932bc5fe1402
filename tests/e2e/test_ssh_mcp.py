"""ssh-mcp against a real OpenSSH sshd (Debian's, started by tests/e2e/sshd.py on 127.0.0.1),
driven by the PyPI `mcp` client over stdio, as a user of an MCP client would use it.

The sshd runs on this host, so a test can look for the remote processes with `pgrep`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import BIN, async_poll, require, toml_str
from sshd import Sshd, fingerprint, keygen

pytestmark = pytest.mark.anyio

SSH_MCP = BIN / "ssh-mcp"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def write_config(
    tmp: Path,
    sshd: Sshd,
    *,
    known_hosts: str | None = None,
    host: str = "",
    extra: str = "",
    limits: str = "",
    name: str = "local",
) -> Path:
    """An ssh-mcp config with one credential `name` for the sshd; known_hosts trusts it unless given."""
    kh = tmp / "known_hosts"
    kh.write_text(sshd.known_hosts_line() if known_hosts is None else known_hosts)
    config = tmp / "ssh-mcp.toml"
    config.write_text(
        f"known_hosts = {toml_str(str(kh))}\n"
        f"[limits]\nkill_grace_ms = 1000\nprogress_interval_ms = 300\n{limits}\n"
        f"[hosts.{name}]\nhost = \"127.0.0.1\"\nport = {sshd.port}\nuser = {toml_str(sshd.user)}\n"
        f"key = {toml_str(str(sshd.client_key))}\n{host}\n{extra}"
    )
    return config


@contextlib.asynccontextmanager
async def ssh_mcp(config: Path, *args: str, env: dict[str, str] | None = None):
    require(SSH_MCP, "run `cargo build -p toolgate-ssh-mcp` first")
    params = StdioServerParameters(
        command=str(SSH_MCP), args=["--config", str(config), *args], env={**os.environ, **(env or {})}
    )
    async with Client(params, mode="legacy") as client:
        yield client


async def exec_(client, command: str, **kwargs):
    return await client.call_tool("ssh_exec", {"credentialName": "local", "command": command, **kwargs})


def pgrep(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


# ---------------------------------------------------------------------------------------
# Tools and annotations
# ---------------------------------------------------------------------------------------
async def test_tools_have_reference_names_output_schemas_and_honest_annotations(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "ssh_exec", "ssh_exec_raw", "add_credential", "list_credentials", "remove_credential", "ssh_output_read",
        "ssh_session_start", "ssh_session_send", "ssh_session_read", "ssh_session_resize", "ssh_session_end",
        "ssh_session_list", "scp_copy", "rsync_copy", "ssh_tunnel_start", "ssh_tunnel_list", "ssh_tunnel_stop",
    }
    for name, tool in tools.items():
        assert tool.output_schema and tool.output_schema["type"] == "object", name
    assert tools["list_credentials"].annotations.read_only_hint is True
    assert tools["ssh_output_read"].annotations.read_only_hint is True
    for name in ("ssh_exec", "ssh_exec_raw", "add_credential", "remove_credential"):
        assert tools[name].annotations.destructive_hint is True, name
        assert tools[name].annotations.open_world_hint is True, name
    assert {"credentialName", "command", "timeout", "stdin", "cwd", "env", "sudo"} <= set(
        tools["ssh_exec"].input_schema["properties"]
    )
    assert tools["ssh_exec_raw"].input_schema["properties"]["command"]["type"] == "array"


async def test_no_runtime_credentials_removes_the_credential_changing_tools(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd), "--no-runtime-credentials") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "add_credential" not in names and "remove_credential" not in names
        listing = await client.call_tool("list_credentials", {})
        assert listing.structured_content["runtimeCredentials"] is False


def test_a_bad_config_exits_2_naming_the_key(tmp_path):
    require(SSH_MCP, "run `cargo build -p toolgate-ssh-mcp` first")
    config = tmp_path / "bad.toml"
    config.write_text('[hosts.web]\nhost = "h"\nuser = "u"\nagent = true\nhost_key = "maybe"\n')
    proc = subprocess.run([str(SSH_MCP), "--config", str(config)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "`hosts.web.host_key`" in proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------------
# Exec
# ---------------------------------------------------------------------------------------
async def test_exec_returns_exit_code_stdout_and_stderr(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        result = await exec_(client, "echo out; echo err >&2; exit 3")
        assert not result.is_error
        sc = result.structured_content
        assert (sc["exitCode"], sc["stdout"], sc["stderr"], sc["status"]) == (3, "out\n", "err\n", "exited")
        assert "exit code 3" in text_of(result) and "err" in text_of(result)

        ok = await exec_(client, "printf '%s' \"$GREETING\" && pwd", cwd="/tmp", env={"GREETING": "it's $(not run)"})
        assert ok.structured_content["stdout"] == "it's $(not run)/tmp\n"
        missing = await exec_(client, "pwd", cwd="/nonexistent-dir")
        assert missing.structured_content["exitCode"] == 126


async def test_stdin_is_sent_then_closed_so_readers_never_hang(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        fed = await exec_(client, "cat", stdin="line one\nline two\n")
        assert fed.structured_content["stdout"] == "line one\nline two\n"
        started = time.monotonic()
        bare = await exec_(client, "cat; read x; echo read=$?", timeout=20000)
        assert bare.structured_content["stdout"] == "read=1\n"
        assert time.monotonic() - started < 10, "a command reading stdin waited for the timeout"


async def test_a_timeout_stops_the_remote_process_group(tmp_path, sshd):
    token = f"{random.randrange(10**6):06d}"
    command = f"sleep 300.{token} & sleep 301.{token}; wait"
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        async with anyio.create_task_group() as tg:
            box = {}

            async def call():
                box["result"] = await exec_(client, command, timeout=2500)

            tg.start_soon(call)
            seen = await async_poll(lambda: len(pgrep(f"30[01].{token}")) >= 2, timeout=10)
            assert seen, "the remote sleeps never started"
        result = box["result"]
    sc = result.structured_content
    assert result.is_error
    assert sc["status"] == "timed-out" and sc["stopped"] is True, sc
    assert "timed out after 2500 ms" in text_of(result)
    gone = await async_poll(lambda: not pgrep(f"30[01].{token}"), timeout=5)
    assert gone, f"remote processes still running after the timeout: {pgrep(f'30[01].{token}')}"


async def test_cancelling_the_call_stops_the_remote_process(tmp_path, sshd):
    token = f"{random.randrange(10**6):06d}"
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        with anyio.move_on_after(3) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: exec_(client, f"sleep 302.{token}", timeout=60000))
                assert await async_poll(lambda: bool(pgrep(f"302.{token}")), timeout=10)
                await anyio.sleep(60)
        assert scope.cancelled_caught
        gone = await async_poll(lambda: not pgrep(f"302.{token}"), timeout=8)
        assert gone, "the remote command survived the MCP cancellation"
        # The same client and pooled connection keep working.
        assert (await exec_(client, "echo still")).structured_content["stdout"] == "still\n"


async def test_long_commands_send_progress_notifications(tmp_path, sshd):
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress, total, message):
        seen.append((progress, total, message))

    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        result = await client.call_tool(
            "ssh_exec", {"credentialName": "local", "command": "sleep 1.5; echo done", "timeout": 10000},
            progress_callback=on_progress,
        )
    assert result.structured_content["stdout"] == "done\n"
    assert len(seen) >= 2, seen
    assert all(total == 10000 for _, total, _ in seen)
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)


async def test_exec_raw_passes_every_word_literally(tmp_path, sshd):
    marker = Path(f"/tmp/ssh-mcp-injection-{random.randrange(10**9)}")
    payloads = [
        f"; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"' ; touch {marker} ; '",
        f'" ; touch {marker} ; "',
        f"\ntouch {marker}\n",
        f"&& touch {marker}",
        f"| touch {marker}",
        f"> {marker}",
        "*",
        "$HOME",
        "",
    ]
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        result = await client.call_tool(
            "ssh_exec_raw", {"credentialName": "local", "command": ["printf", "%s\\0", *payloads]}
        )
        assert result.structured_content["exitCode"] == 0, text_of(result)
        assert result.structured_content["stdout"].split("\0")[:-1] == payloads
        # A word is never a command even at the start of the line.
        first = await client.call_tool("ssh_exec_raw", {"credentialName": "local", "command": [f"true; touch {marker}"]})
        assert first.structured_content["exitCode"] == 127
        nul = await client.call_tool("ssh_exec_raw", {"credentialName": "local", "command": ["echo", "a\0b"]})
        assert nul.is_error and "NUL" in text_of(nul)
    assert not marker.exists(), "an argument of ssh_exec_raw reached the remote shell as syntax"


async def test_output_over_the_cap_is_cut_with_a_marker_and_can_be_paged(tmp_path, sshd):
    config = write_config(tmp_path, sshd, limits="output_bytes = 4096\nkeep_output_bytes = 1048576")
    expected = "".join(f"{i}\n" for i in range(1, 30001))
    async with ssh_mcp(config) as client:
        result = await exec_(client, "seq 1 30000; echo tail-of-stderr >&2")
        sc = result.structured_content
        assert sc["stdoutTruncated"] is True and sc["stderrTruncated"] is False
        assert sc["stdoutBytes"] == len(expected)
        assert len(sc["stdout"].encode()) < 4096 + 400
        assert sc["stdout"].startswith("1\n2\n3\n") and sc["stdout"].endswith("29999\n30000\n")
        assert "bytes of stdout omitted" in sc["stdout"] and sc["outputId"] in sc["stdout"]
        assert len(json.dumps(sc)) < 12000

        pages, offset = [], 0
        while True:
            page = await client.call_tool("ssh_output_read", {"outputId": sc["outputId"], "offset": offset})
            pc = page.structured_content
            assert pc["offset"] == offset and len(pc["text"].encode()) <= 4096
            pages.append(pc["text"])
            offset = pc["nextOffset"]
            if pc["eof"]:
                break
        assert "".join(pages) == expected
        err = await client.call_tool("ssh_output_read", {"outputId": sc["outputId"], "stream": "stderr"})
        assert err.structured_content["text"] == "tail-of-stderr\n"
        gone = await client.call_tool("ssh_output_read", {"outputId": "out-999999"})
        assert gone.is_error


# ---------------------------------------------------------------------------------------
# Host keys
# ---------------------------------------------------------------------------------------
async def test_an_unknown_host_under_strict_is_refused_with_its_fingerprint(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd, known_hosts="")) as client:
        result = await exec_(client, "touch /tmp/never")
    text = text_of(result)
    assert result.is_error
    assert "is not known" in text and sshd.fingerprint() in text
    assert sshd.known_hosts_line().strip() in text, "the message gives the line that trusts the host"
    assert (tmp_path / "known_hosts").read_text() == ""


async def test_a_changed_host_key_is_refused_even_under_accept_new(tmp_path, sshd):
    other = keygen(tmp_path / "impostor")
    known = sshd.known_hosts_line(Path(f"{other}.pub"))
    config = write_config(tmp_path, sshd, known_hosts=known, host='host_key = "accept-new"')
    async with ssh_mcp(config) as client:
        result = await exec_(client, "echo never")
    text = text_of(result)
    assert result.is_error and "HOST KEY CHANGED" in text and sshd.fingerprint() in text
    assert (tmp_path / "known_hosts").read_text() == known, "the record must not be replaced"


async def test_accept_new_records_the_key_then_a_pin_and_strict_accept_it(tmp_path, sshd):
    config = write_config(tmp_path, sshd, known_hosts="", host='host_key = "accept-new"')
    async with ssh_mcp(config) as client:
        assert (await exec_(client, "echo first")).structured_content["stdout"] == "first\n"
    assert (tmp_path / "known_hosts").read_text() == sshd.known_hosts_line()
    pinned = tmp_path / "pinned"
    pinned.mkdir()
    config = write_config(pinned, sshd, known_hosts="", host=f'host_key = "{sshd.fingerprint()}"')
    async with ssh_mcp(config) as client:
        assert (await exec_(client, "echo pinned")).structured_content["stdout"] == "pinned\n"


# ---------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------
async def test_list_credentials_shows_no_secret(tmp_path, sshd):
    secret = "hunter2-do-not-show"
    extra = (
        '[hosts.withpw]\nhost = "127.0.0.1"\n'
        f"port = {sshd.port}\nuser = \"nobody\"\npassword_env = \"SSH_MCP_E2E_PASSWORD\"\n"
        'sudo_password_env = "SSH_MCP_E2E_SUDO"\n'
    )
    config = write_config(tmp_path, sshd, extra=extra)
    env = {"SSH_MCP_E2E_PASSWORD": secret, "SSH_MCP_E2E_SUDO": secret}
    async with ssh_mcp(config, env=env) as client:
        result = await client.call_tool("list_credentials", {})
    dumped = text_of(result) + json.dumps(result.structured_content)
    names = {c["name"]: c for c in result.structured_content["credentials"]}
    assert set(names) == {"local", "withpw"}
    assert names["withpw"]["auth"] == ["password"] and names["withpw"]["sudoPassword"] is True
    private_key_body = "".join(sshd.client_key.read_text().splitlines()[1:-1])
    for leaked in (secret, "SSH_MCP_E2E_PASSWORD", "SSH_MCP_E2E_SUDO", private_key_body[:40]):
        assert leaked not in dumped, f"list_credentials revealed {leaked!r}"


async def test_add_use_and_remove_a_runtime_credential_with_an_encrypted_key(tmp_path, sshd):
    # An encrypted key needs passphrase_env, which runtime credentials cannot set: add_credential
    # works with a plain key, and a config host shows encrypted keys with a passphrase work.
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        added = await client.call_tool(
            "add_credential",
            {"name": "again", "host": "127.0.0.1", "port": sshd.port, "username": sshd.user,
             "privateKeyPath": str(sshd.client_key)},
        )
        assert not added.is_error, text_of(added)
        run = await client.call_tool("ssh_exec", {"credentialName": "again", "command": "echo runtime"})
        assert run.structured_content["stdout"] == "runtime\n"
        dup = await client.call_tool(
            "add_credential",
            {"name": "again", "host": "h", "username": "u", "privateKeyPath": "/k"},
        )
        assert dup.is_error and "exists already" in text_of(dup)
        removed = await client.call_tool("remove_credential", {"name": "again"})
        assert removed.structured_content == {"removed": "again"}
        gone = await client.call_tool("ssh_exec", {"credentialName": "again", "command": "true"})
        assert gone.is_error and 'no credential named "again"' in text_of(gone)

    encrypted = keygen(tmp_path / "encrypted", passphrase="open sesame", kind="rsa")
    sshd.authorize(encrypted)
    extra = (
        f'[hosts.enc]\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = {toml_str(sshd.user)}\n'
        f'key = {toml_str(str(encrypted))}\npassphrase_env = "SSH_MCP_E2E_PASSPHRASE"\n'
        f'[hosts.nopass]\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = {toml_str(sshd.user)}\n'
        f'key = {toml_str(str(encrypted))}\n'
    )
    sub = tmp_path / "enc"
    sub.mkdir()
    async with ssh_mcp(write_config(sub, sshd, extra=extra), env={"SSH_MCP_E2E_PASSPHRASE": "open sesame"}) as client:
        ok = await client.call_tool("ssh_exec", {"credentialName": "enc", "command": "echo pem"})
        assert ok.structured_content["stdout"] == "pem\n", text_of(ok)
        bad = await client.call_tool("ssh_exec", {"credentialName": "nopass", "command": "true"})
        assert bad.is_error and "encrypted" in text_of(bad) and "authentication failed" in text_of(bad)


async def test_a_jump_host_carries_the_connection(tmp_path, sshd):
    extra = (
        f'[hosts.inner]\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = {toml_str(sshd.user)}\n'
        f'key = {toml_str(str(sshd.client_key))}\njump = "local"\n'
    )
    async with ssh_mcp(write_config(tmp_path, sshd, extra=extra)) as client:
        result = await client.call_tool("ssh_exec", {"credentialName": "inner", "command": "echo through"})
        assert result.structured_content["stdout"] == "through\n", text_of(result)
    assert "direct-tcpip" in sshd.log() or "Connection from 127.0.0.1" in sshd.log()


async def test_ssh_agent_keys_and_hosts_imported_from_an_openssh_config(tmp_path, sshd):
    agent_bin = Path("/usr/bin/ssh-agent")
    require(agent_bin, "run `bash scripts/setup-test-deps.sh` (installs openssh-client)")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen([str(agent_bin), "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        assert await async_poll(sock.exists, timeout=10), "ssh-agent did not start"
        agent_key = keygen(tmp_path / "agent_key")
        sshd.authorize(agent_key)
        subprocess.run(["ssh-add", "-q", str(agent_key)], check=True, env={**os.environ, "SSH_AUTH_SOCK": str(sock)})
        agent_key.unlink()  # only the agent holds it now

        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(
            f"Host imported\n    HostName 127.0.0.1\n    Port {sshd.port}\n    User {sshd.user}\n"
            f"    IdentityFile {sshd.client_key}\n\nHost *\n    ServerAliveInterval 30\n"
        )
        kh = tmp_path / "known_hosts"
        kh.write_text(sshd.known_hosts_line())
        config = tmp_path / "ssh-mcp.toml"
        config.write_text(
            f"known_hosts = {toml_str(str(kh))}\nimport_ssh_config = true\nssh_config = {toml_str(str(ssh_config))}\n"
            f'[hosts.byagent]\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = {toml_str(sshd.user)}\nagent = true\n'
        )
        async with ssh_mcp(config, env={"SSH_AUTH_SOCK": str(sock)}) as client:
            names = {c["name"] for c in (await client.call_tool("list_credentials", {})).structured_content["credentials"]}
            assert names == {"imported", "byagent"}
            via_agent = await client.call_tool("ssh_exec", {"credentialName": "byagent", "command": "echo agent"})
            assert via_agent.structured_content["stdout"] == "agent\n", text_of(via_agent)
            imported = await client.call_tool("ssh_exec", {"credentialName": "imported", "command": "echo imported"})
            assert imported.structured_content["stdout"] == "imported\n", text_of(imported)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
