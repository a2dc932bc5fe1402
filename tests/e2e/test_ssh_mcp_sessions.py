"""ssh-mcp's interactive sessions, copies and tunnels against a real OpenSSH sshd (tests/e2e/sshd.py),
driven by the PyPI `mcp` client over stdio.

The sshd runs on this host, so the tests check the remote side directly (files written by vim,
ports bound by the server). Programs the tests drive (vim, top, rsync) must be installed:
`bash scripts/setup-test-deps.sh` installs them, and a missing one fails the test by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import anyio
import pytest

from conftest import TOOLGATE, require, toml_str
from sshd import Sshd
from test_ssh_mcp import ssh_mcp, text_of, write_config

pytestmark = pytest.mark.anyio

HINT = "run `bash scripts/setup-test-deps.sh` (installs vim, procps and rsync)"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd-sessions"))
    yield server
    server.stop()


def need(program: str) -> str:
    found = shutil.which(program)
    if not found:
        pytest.fail(f"missing program {program}: {HINT}", pytrace=False)
    return found


async def start(client, **kwargs):
    result = await client.call_tool("ssh_session_start", {"credentialName": "local", **kwargs})
    assert not result.is_error, text_of(result)
    return result.structured_content["sessionId"], result


async def send(client, session_id: str, **kwargs):
    result = await client.call_tool("ssh_session_send", {"sessionId": session_id, **kwargs})
    assert not result.is_error, text_of(result)
    return result.structured_content


async def screen(client, session_id: str) -> dict:
    result = await client.call_tool("ssh_session_read", {"sessionId": session_id})
    assert not result.is_error, text_of(result)
    return result.structured_content["screen"]


PROMPT = r"[#$] $"


# ---------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------
async def test_session_tools_are_listed_with_honest_annotations(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    expected = {
        "ssh_session_start", "ssh_session_send", "ssh_session_read", "ssh_session_resize", "ssh_session_end",
        "ssh_session_list", "scp_copy", "rsync_copy", "ssh_tunnel_start", "ssh_tunnel_list", "ssh_tunnel_stop",
    }
    assert expected <= set(tools)
    assert len(tools) == 17
    for name in ("ssh_session_list", "ssh_tunnel_list"):
        assert tools[name].annotations.read_only_hint is True, name
    # Reading a screen, resizing and stopping a tunnel change state but destroy nothing.
    harmless = {"ssh_session_read", "ssh_session_resize", "ssh_tunnel_stop"}
    for name in expected - {"ssh_session_list", "ssh_tunnel_list"}:
        assert tools[name].annotations.destructive_hint is (name not in harmless), name
        assert tools[name].annotations.open_world_hint is True, name
    for name in harmless:
        assert tools[name].annotations.read_only_hint is False, name
        assert tools[name].output_schema and tools[name].output_schema["type"] == "object", name
    send_props = tools["ssh_session_send"].input_schema["properties"]
    assert {"sessionId", "input", "keys", "waitForQuietMs", "waitForRegex", "maxWaitMs"} <= set(send_props)
    assert {"sessionId", "mode", "clear"} <= set(tools["ssh_session_read"].input_schema["properties"])
    assert {"credentialName", "type", "localPort", "remoteHost", "remotePort"} <= set(
        tools["ssh_tunnel_start"].input_schema["properties"]
    )


async def test_vim_edits_a_file_through_the_session_tools(tmp_path, sshd):
    need("vim")
    target = tmp_path / f"note-{random.randrange(10**6)}.txt"
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        sid, started = await start(client, cols=100, rows=30)
        assert started.structured_content["screen"]["cols"] == 100
        await send(client, sid, input="", waitForRegex=PROMPT, maxWaitMs=5000)
        opened = await send(client, sid, input=f"vim {target}\n", waitForRegex=r"\[New\]", maxWaitMs=10000)
        assert opened["wait"]["reason"] == "matched", opened
        assert opened["screen"]["alternateScreen"] is True
        # vim's status line shows the new file at the bottom of the screen.
        assert target.name in opened["screen"]["lines"][-1] and "[New]" in opened["screen"]["lines"][-1]
        inserting = await send(client, sid, input="i", waitForRegex="-- INSERT --", maxWaitMs=5000)
        assert inserting["wait"]["reason"] == "matched", inserting
        typed = await send(client, sid, input="hello from ssh-mcp", keys=["esc"], waitForQuietMs=300)
        assert typed["screen"]["lines"][0] == "hello from ssh-mcp"
        assert not any("-- INSERT --" in line for line in typed["screen"]["lines"])
        saved = await send(client, sid, input=":wq", keys=["enter"], waitForRegex=PROMPT, maxWaitMs=10000)
        assert saved["wait"]["reason"] == "matched", saved
        assert saved["screen"]["alternateScreen"] is False
        await client.call_tool("ssh_session_end", {"sessionId": sid})
    assert target.read_text() == "hello from ssh-mcp\n"


async def test_top_and_htop_render_full_screens(tmp_path, sshd):
    need("top")
    need("htop")
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        sid, _ = await start(client, cols=120, rows=40)
        await send(client, sid, input="", waitForRegex=PROMPT, maxWaitMs=5000)
        shown = await send(client, sid, input="top -d 1\n", waitForRegex=r"(?m)^ *PID .*COMMAND\n *\d+ ", maxWaitMs=10000)
        assert shown["wait"]["reason"] == "matched", shown
        s = (await send(client, sid, waitForQuietMs=200, maxWaitMs=2000))["screen"]
        # procps top paints the whole normal screen (it does not switch to the alternate one).
        assert s["lines"][0].startswith("top - "), s["lines"][:3]
        assert s["lines"][1].startswith("Tasks:"), s["lines"][:3]
        assert len(s["lines"]) >= 20, s["lines"]
        done = await send(client, sid, input="q", waitForRegex=PROMPT, maxWaitMs=5000)
        assert done["wait"]["reason"] == "matched"

        # htop holds the alternate screen while it runs, and gives it back on quit.
        shown = await send(client, sid, input="htop -d 10\n", waitForRegex=r"F10 *Quit", maxWaitMs=10000)
        assert shown["wait"]["reason"] == "matched", shown
        s = shown["screen"]
        assert s["alternateScreen"] is True
        assert any("Load average" in line for line in s["lines"][:10]), s["lines"][:10]
        assert any("F10Quit" in line.replace(" ", "") for line in s["lines"][-2:]), s["lines"][-2:]
        listed = await client.call_tool("ssh_session_list", {})
        assert listed.structured_content["sessions"][0]["alternateScreen"] is True
        done = await send(client, sid, keys=["f10"], waitForRegex=PROMPT, maxWaitMs=5000)
        assert done["screen"]["alternateScreen"] is False
        await client.call_tool("ssh_session_end", {"sessionId": sid})


async def test_resize_changes_what_stty_size_reports(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        sid, _ = await start(client, cols=100, rows=30)
        first = await send(client, sid, input="stty size\n", waitForRegex=r"(?m)^\d+ \d+$", maxWaitMs=5000)
        assert first["wait"]["matched"] == "30 100", first
        resized = await client.call_tool("ssh_session_resize", {"sessionId": sid, "cols": 132, "rows": 43})
        assert not resized.is_error, text_of(resized)
        assert (resized.structured_content["screen"]["cols"], resized.structured_content["screen"]["rows"]) == (132, 43)
        await client.call_tool("ssh_session_read", {"sessionId": sid, "clear": True})
        second = await send(client, sid, input="stty size\n", waitForRegex=r"(?m)^43 132$", maxWaitMs=5000)
        assert second["wait"]["reason"] == "matched", second


async def test_reading_new_output_scrollback_and_the_end_of_a_session(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        sid, _ = await start(client, cols=80, rows=10)
        await send(client, sid, input="", waitForRegex=PROMPT, maxWaitMs=5000)
        await client.call_tool("ssh_session_read", {"sessionId": sid, "mode": "new"})
        # Wait for the prompt after the output too: the second read of new output must find none.
        await send(
            client, sid, input="printf '\\033[31mred\\033[0m\\n'; seq 1 50\n", waitForRegex=r"\n50\r?\n[^\n]*[#$] "
        )
        new = await client.call_tool("ssh_session_read", {"sessionId": sid, "mode": "new"})
        text = new.structured_content["text"]
        assert "\x1b" not in text and "\nred\n1\n2\n" in text and "\n50\n" in text, text
        again = await client.call_tool("ssh_session_read", {"sessionId": sid, "mode": "new"})
        assert again.structured_content["text"] == ""
        back = await client.call_tool("ssh_session_read", {"sessionId": sid, "mode": "scrollback"})
        lines = back.structured_content["text"].split("\n")
        assert "1" in lines and "50" in lines and back.structured_content["totalLines"] >= 52
        assert "1" not in (await screen(client, sid))["lines"]

        # The shell exits: the session says so, keeps its last screen, refuses input.
        ended = await client.call_tool(
            "ssh_session_send", {"sessionId": sid, "input": "exit 7\n", "waitForRegex": "never", "maxWaitMs": 5000}
        )
        sc = ended.structured_content
        assert sc["wait"]["reason"] == "closed" and sc["exitStatus"] == 7 and "status 7" in sc["ended"], sc
        refused = await client.call_tool("ssh_session_send", {"sessionId": sid, "input": "ls\n"})
        assert refused.is_error and "has ended" in text_of(refused)
        gone = await client.call_tool("ssh_session_end", {"sessionId": sid})
        assert not gone.is_error
        unknown = await client.call_tool("ssh_session_read", {"sessionId": sid})
        assert unknown.is_error and "unknown session" in text_of(unknown)
        bad_key = await client.call_tool("ssh_session_send", {"sessionId": "s-1", "keys": ["hyper-x"]})
        assert bad_key.is_error


async def test_a_second_client_cannot_use_a_session(tmp_path, sshd):
    config = write_config(tmp_path, sshd)
    async with ssh_mcp(config) as alice, ssh_mcp(config) as bob:
        sid, _ = await start(alice)
        for tool, args in (
            ("ssh_session_read", {}),
            ("ssh_session_send", {"input": "touch /tmp/never\n"}),
            ("ssh_session_end", {}),
        ):
            refused = await bob.call_tool(tool, {"sessionId": sid, **args})
            assert refused.is_error and "unknown session" in text_of(refused), tool
        assert (await bob.call_tool("ssh_session_list", {})).structured_content["sessions"] == []
        assert len((await alice.call_tool("ssh_session_list", {})).structured_content["sessions"]) == 1


# ---------------------------------------------------------------------------------------
# Copies
# ---------------------------------------------------------------------------------------
async def test_scp_copy_round_trips_a_file_over_sftp(tmp_path, sshd):
    data = os.urandom(300_000) + b"\x00end"
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    async with ssh_mcp(write_config(tmp_path, sshd, limits="copy_max_bytes = 1000000")) as client:
        up = await client.call_tool(
            "scp_copy",
            {"credentialName": "local", "localPath": str(local), "remotePath": str(remote_dir), "direction": "toRemote"},
        )
        assert not up.is_error, text_of(up)
        sc = up.structured_content
        assert sc["bytes"] == len(data) and sc["sha256"] == hashlib.sha256(data).hexdigest()
        assert sc["remotePath"] == str(remote_dir / "up.bin")
        assert (remote_dir / "up.bin").read_bytes() == data

        back = tmp_path / "down.bin"
        down = await client.call_tool(
            "scp_copy",
            {"credentialName": "local", "localPath": str(back), "remotePath": str(remote_dir / "up.bin"),
             "direction": "fromRemote"},
        )
        assert not down.is_error, text_of(down)
        assert back.read_bytes() == data
        assert down.structured_content["sha256"] == sc["sha256"]

        big = tmp_path / "big.bin"
        big.write_bytes(b"x" * 1_000_001)
        capped = await client.call_tool(
            "scp_copy",
            {"credentialName": "local", "localPath": str(big), "remotePath": str(remote_dir), "direction": "toRemote"},
        )
        assert capped.is_error and "copy_max_bytes" in text_of(capped)
        assert not (remote_dir / "big.bin").exists()
        missing = await client.call_tool(
            "scp_copy",
            {"credentialName": "local", "localPath": str(tmp_path / "x"), "remotePath": "/nonexistent/file",
             "direction": "fromRemote"},
        )
        assert missing.is_error and "/nonexistent/file" in text_of(missing)


async def test_rsync_copy_round_trips_a_tree_with_hostile_names(tmp_path, sshd):
    need("rsync")
    tree = tmp_path / "tree"
    (tree / "sub dir").mkdir(parents=True)
    files = {
        "a.txt": b"alpha\n",
        "sub dir/b c.txt": b"with spaces\n",
        "-e touch pwned": b"an option-looking name\n",
        "sub dir/$(touch pwned2)": b"substitution-looking name\n",
    }
    for name, content in files.items():
        (tree / name).write_bytes(content)
    remote = tmp_path / "remote side"
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        up = await client.call_tool(
            "rsync_copy",
            {"credentialName": "local", "localPath": f"{tree}/", "remotePath": str(remote), "direction": "toRemote"},
        )
        assert not up.is_error, text_of(up)
        assert up.structured_content["files"] == len(files)
        assert up.structured_content["bytes"] == sum(len(c) for c in files.values())
        for name, content in files.items():
            assert (remote / name).read_bytes() == content, name

        back = tmp_path / "back"
        down = await client.call_tool(
            "rsync_copy",
            {"credentialName": "local", "localPath": str(back), "remotePath": f"{remote}/", "direction": "fromRemote"},
        )
        assert not down.is_error, text_of(down)
        for name, content in files.items():
            assert (back / name).read_bytes() == content, name
    for stray in ("pwned", "pwned2"):
        assert not (Path.home() / stray).exists() and not Path(stray).exists()


async def test_rsync_copy_refuses_what_it_cannot_do_and_trusts_only_the_checked_key(tmp_path, sshd):
    need("rsync")
    extra = (
        '[hosts.pw]\nhost = "127.0.0.1"\n'
        f'port = {sshd.port}\nuser = {toml_str(sshd.user)}\npassword_env = "SSH_MCP_E2E_PW"\n'
    )
    src = tmp_path / "f.txt"
    src.write_text("x")
    async with ssh_mcp(write_config(tmp_path, sshd, extra=extra, known_hosts="")) as client:
        pw = await client.call_tool(
            "rsync_copy",
            {"credentialName": "pw", "localPath": str(src), "remotePath": "/tmp/x", "direction": "toRemote"},
        )
        assert pw.is_error and "password" in text_of(pw) and "scp_copy" in text_of(pw)
        # An unknown host key under strict: refused before rsync runs, with the fingerprint.
        unknown = await client.call_tool(
            "rsync_copy",
            {"credentialName": "local", "localPath": str(src), "remotePath": "/tmp/x", "direction": "toRemote"},
        )
        assert unknown.is_error and sshd.fingerprint() in text_of(unknown)


# ---------------------------------------------------------------------------------------
# Tunnels
# ---------------------------------------------------------------------------------------
async def test_a_local_tunnel_reaches_the_sshd_banner(tmp_path, sshd):
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        started = await client.call_tool(
            "ssh_tunnel_start",
            {"credentialName": "local", "type": "local", "localPort": 0, "remoteHost": "127.0.0.1",
             "remotePort": sshd.port},
        )
        assert not started.is_error, text_of(started)
        t = started.structured_content
        assert t["status"] == "active" and t["localPort"] > 0
        with socket.create_connection(("127.0.0.1", t["localPort"]), timeout=10) as s:
            banner = s.recv(64)
        assert banner.startswith(b"SSH-2.0-OpenSSH"), banner
        listed = await client.call_tool("ssh_tunnel_list", {})
        assert listed.structured_content["tunnels"][0]["connections"] == 1
        stopped = await client.call_tool("ssh_tunnel_stop", {"tunnelId": t["tunnelId"]})
        assert stopped.structured_content["status"] == "ended"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", t["localPort"]), timeout=2).close()


async def test_a_remote_tunnel_binds_loopback_on_the_server_and_reaches_back(tmp_path, sshd):
    # A service here that the server-side port leads to.
    service = socket.socket()
    service.bind(("127.0.0.1", 0))
    service.listen()
    local_port = service.getsockname()[1]

    def serve():
        conn, _ = service.accept()
        with conn:
            conn.sendall(b"hello from the local side\n")

    threading.Thread(target=serve, daemon=True).start()
    async with ssh_mcp(write_config(tmp_path, sshd)) as client:
        refused = await client.call_tool(
            "ssh_tunnel_start",
            {"credentialName": "local", "type": "remote", "localPort": local_port, "remoteHost": "0.0.0.0",
             "remotePort": 0},
        )
        assert refused.is_error and "remote_bind_addresses" in text_of(refused)
        started = await client.call_tool(
            "ssh_tunnel_start",
            {"credentialName": "local", "type": "remote", "localPort": local_port, "remoteHost": "127.0.0.1",
             "remotePort": 0},
        )
        assert not started.is_error, text_of(started)
        remote_port = started.structured_content["remotePort"]
        assert remote_port > 0
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{remote_port}"], capture_output=True, text=True).stdout
        local_addresses = [line.split()[3] for line in listening.splitlines()]
        assert local_addresses == [f"127.0.0.1:{remote_port}"], listening
        # Through the server's port (sshd runs here), back to the service.
        with socket.create_connection(("127.0.0.1", remote_port), timeout=10) as s:
            s.settimeout(10)
            got = s.recv(64)
        assert got == b"hello from the local side\n"
        stopped = await client.call_tool("ssh_tunnel_stop", {"tunnelId": started.structured_content["tunnelId"]})
        assert not stopped.is_error
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not subprocess.run(["ss", "-Hltn", f"sport = :{remote_port}"], capture_output=True, text=True).stdout:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server still listens after ssh_tunnel_stop")
    service.close()


# ---------------------------------------------------------------------------------------
# Through toolgate, with the quick start's policy
# ---------------------------------------------------------------------------------------
QUICKSTART_POLICY = Path(__file__).resolve().parents[2] / "examples" / "policies" / "quickstart-ssh.json"


async def test_toolgate_fronts_ssh_mcp_with_the_quickstart_policy(tmp_path, sshd, gateway_factory):
    from mcp import Client

    from conftest import mcp_http_transport, server_stdio
    from test_ssh_mcp import SSH_MCP

    require(SSH_MCP, "run `cargo build -p toolgate-ssh-mcp` first")
    config = write_config(tmp_path, sshd, name="localhost")
    # A second host the policy does not list, and one that cannot be reached: the gateway (and
    # ssh-mcp, which connects lazily) must start all the same.
    unreachable = tmp_path / "unreachable.toml"
    unreachable.write_text(
        config.read_text()
        + '[hosts.elsewhere]\nhost = "127.0.0.1"\nport = 1\nuser = "nobody"\nkey = "/nonexistent/key"\n'
    )
    gw = gateway_factory(
        server_stdio("ssh", str(SSH_MCP), ["--config", str(unreachable), "--no-runtime-credentials"]),
        policy=QUICKSTART_POLICY.read_text(),
    )
    async with Client(mcp_http_transport(gw.url), mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}

        def tool(suffix: str) -> str:
            found = [n for n in names if n == suffix or n.endswith(f"__{suffix}")]
            assert len(found) == 1, (suffix, names)
            return found[0]

        assert not any(n.endswith("add_credential") for n in names), "hidden by the policy"

        # A read-only command runs unattended.
        ok = await client.call_tool(tool("ssh_exec"), {"credentialName": "localhost", "command": "echo hi; uname -s"})
        assert not ok.is_error, text_of(ok)
        assert ok.structured_content["stdout"] == "hi\nLinux\n"
        # Anything else waits for a human (`toolgate approvals`): denied, it never runs;
        # approved, it runs once.
        marker = tmp_path / "never-created"
        approved_marker = tmp_path / "created-once-approved"

        def pending() -> list[dict]:
            out = subprocess.run(
                [str(TOOLGATE), "approvals", "list", "--json", "--config", str(gw.config)],
                capture_output=True, text=True, timeout=30,
            )
            assert out.returncode == 0, out
            return json.loads(out.stdout)["approvals"]

        def decide(verdict: str, *extra: str) -> None:
            deadline = time.monotonic() + 20
            while not (found := pending()):
                assert time.monotonic() < deadline, "the held call never reached the approvals queue"
                time.sleep(0.1)
            [held_call] = found
            assert held_call["tool"] == "ssh_exec" and held_call["severity"] == "critical", held_call
            out = subprocess.run(
                [str(TOOLGATE), "approvals", verdict, held_call["id"], "--config", str(gw.config), *extra],
                capture_output=True, text=True, timeout=30,
            )
            assert out.returncode == 0, out

        results: list = []
        for command, verdict, extra in [
            (f"touch {marker}", "deny", ("--reason", "not today")),
            (f"touch {approved_marker}", "approve", ()),
        ]:
            async with anyio.create_task_group() as tg:

                async def call(command: str = command) -> None:
                    results.append(
                        await client.call_tool(tool("ssh_exec"), {"credentialName": "localhost", "command": command})
                    )

                tg.start_soon(call)
                await anyio.to_thread.run_sync(decide, verdict, *extra)
        denied, approved = results
        assert denied.is_error and "a human denied this call: not today" in text_of(denied), text_of(denied)
        assert not approved.is_error, text_of(approved)
        assert approved_marker.exists()
        bad = await client.call_tool(tool("ssh_exec"), {"credentialName": "localhost", "command": "shutdown -h now"})
        assert bad.is_error and "shutdown" in text_of(bad)
        other = await client.call_tool(tool("ssh_exec"), {"credentialName": "elsewhere", "command": "ls"})
        assert other.is_error and "Only the hosts listed" in text_of(other)
        tunnel = await client.call_tool(
            tool("ssh_tunnel_start"),
            {"credentialName": "localhost", "type": "local", "localPort": 0, "remoteHost": "127.0.0.1", "remotePort": 22},
        )
        assert tunnel.is_error and "Port forwarding is not allowed" in text_of(tunnel)

        # An interactive session: open, run a command, read the screen.
        started = await client.call_tool(tool("ssh_session_start"), {"credentialName": "localhost", "cols": 90, "rows": 20})
        assert not started.is_error, text_of(started)
        sid = started.structured_content["sessionId"]
        sent = await client.call_tool(
            tool("ssh_session_send"),
            {"sessionId": sid, "input": "echo through-the-gateway-$((6*7))\n", "waitForRegex": r"(?m)^through-the-gateway-42$"},
        )
        assert not sent.is_error and sent.structured_content["wait"]["reason"] == "matched", text_of(sent)
        read = await client.call_tool(tool("ssh_session_read"), {"sessionId": sid})
        assert "through-the-gateway-42" in read.structured_content["screen"]["lines"]
        assert "through-the-gateway-42" in text_of(read)
        ended = await client.call_tool(tool("ssh_session_end"), {"sessionId": sid})
        assert not ended.is_error
    assert not marker.exists()
