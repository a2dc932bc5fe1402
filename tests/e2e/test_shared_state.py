"""State shared by several gateway instances: rate-limit counters in Redis, pins, the audit log
and approvals in PostgreSQL (`[state] redis`, `postgres`).

Real parts only: `toolgate serve` processes (two at a time, each with its own state directory
and config, both on the same Redis and PostgreSQL), PyPI `mcp` clients as agents, the policy
fixture upstream (it logs every call it receives), the `toolgate` CLI, and real `redis-server`
and PostgreSQL servers started by `scripts/services.sh`.

The servers named by `TOOLGATE_TEST_REDIS` / `TOOLGATE_TEST_POSTGRES` (the test command starts
them) are shared by the tests here, each test with a database and a Redis key prefix of its
own. Tests that stop a server start a private pair, so that they never break another test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import OTHER_TOKEN, ROOT, TOOLGATE, Gateway, free_port, sha256_hex, toml_str, wait_for_port
from test_policy import (
    STORE_DENIAL,
    UTC_TIME,
    CallLog,
    assert_denied,
    assert_passed,
    connect,
    policy_server,
    sleep_past_boundary,
    sliding,
    text_of,
    version_of,
)

pytestmark = pytest.mark.anyio

SERVICES_SH = ROOT / "scripts" / "services.sh"


# ---------------------------------------------------------------------------------------
# Redis and PostgreSQL
# ---------------------------------------------------------------------------------------
def services_sh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SERVICES_SH), *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class Services:
    """A Redis and a PostgreSQL server: their URLs, and (for a pair started here) the directory
    `scripts/services.sh` keeps them in, to stop and start them again."""

    redis: str
    postgres: str
    dir: Path | None = None

    @classmethod
    def start(cls, directory: Path) -> "Services":
        out = services_sh("start", str(directory), str(os.getpid()))
        if out.returncode != 0:
            pytest.fail(
                f"cannot start Redis and PostgreSQL with scripts/services.sh (exit {out.returncode}):\n"
                f"{out.stderr}{out.stdout}",
                pytrace=False,
            )
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", out.stdout, re.M))
        try:
            return cls(exports["TOOLGATE_TEST_REDIS"], exports["TOOLGATE_TEST_POSTGRES"], directory)
        except KeyError:
            pytest.fail(f"scripts/services.sh printed no URLs:\n{out.stdout}\n{out.stderr}", pytrace=False)

    def _run(self, command: str) -> None:
        assert self.dir is not None, "only a pair started by this test can be stopped"
        out = services_sh(command, str(self.dir), timeout=60)
        assert out.returncode == 0, f"services.sh {command} failed: {out.stderr}"

    def stop_redis(self) -> None:
        self._run("redis-stop")

    def start_redis(self) -> None:
        self._run("redis-start")

    def stop_postgres(self) -> None:
        self._run("pg-stop")

    def start_postgres(self) -> None:
        self._run("pg-start")

    def stop(self) -> None:
        if self.dir is not None:
            services_sh("stop", str(self.dir), timeout=60)
            shutil.rmtree(self.dir, ignore_errors=True)

    def fresh_state(self, extra: str = "") -> str:
        """`[state]` keys for one test: a new database on the PostgreSQL server, a Redis key
        prefix of its own (so that tests never see each other's data)."""
        name = "tg_" + uuid.uuid4().hex[:16]
        out = subprocess.run(
            ["psql", self.postgres, "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE DATABASE {name}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, f"CREATE DATABASE failed: {out.stderr}"
        url = self.postgres.rsplit("/", 1)[0] + "/" + name
        return (
            f"postgres = {toml_str(url)}\nredis = {toml_str(self.redis)}\n"
            f"redis_prefix = {toml_str(f'toolgate-e2e-{name}:')}\n{extra}"
        )


def private_dir() -> Path:
    """A directory for a private pair: under /tmp (PostgreSQL runs as `postgres` when we are
    root, and pytest's own temporary directories are closed to other users)."""
    return Path(tempfile.mkdtemp(prefix="toolgate-e2e-services-"))


@pytest.fixture(scope="session")
def shared_services():
    """The Redis and PostgreSQL of the test command, else a pair started for this session."""
    redis, postgres = os.environ.get("TOOLGATE_TEST_REDIS"), os.environ.get("TOOLGATE_TEST_POSTGRES")
    if redis and postgres:
        yield Services(redis, postgres)
        return
    services = Services.start(private_dir())
    yield services
    services.stop()


@pytest.fixture
def private_services():
    """A Redis and PostgreSQL of this test's own, which it may stop and start again."""
    services = Services.start(private_dir())
    yield services
    services.stop()


# ---------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------
def toolgate(gw: Gateway, *args: str) -> subprocess.CompletedProcess:
    """`toolgate ARGS --config <gw's config>`, bounded."""
    return subprocess.run(
        [str(TOOLGATE), *args, "--config", str(gw.config)], capture_output=True, text=True, timeout=30
    )


def pending(gw: Gateway) -> list[dict]:
    out = toolgate(gw, "approvals", "list", "--json")
    assert out.returncode == 0, out
    return json.loads(out.stdout)["approvals"]


def audit_records(gw: Gateway, *args: str) -> list[dict]:
    """What `toolgate audit --json ARGS` prints (one JSON record a line)."""
    out = toolgate(gw, "audit", "--json", "--limit", "10000", *args)
    assert out.returncode == 0, out
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def call_records(gw: Gateway, tool: str) -> list[dict]:
    return [r for r in audit_records(gw, "--tool", tool) if r.get("method") == "tools/call"]


def counter_used(gw: Gateway, tool: str, grant: str = "alice") -> int:
    """How much of the tool's first counter is used, as `toolgate explain` reports it."""
    out = toolgate(gw, "explain", "--grant", grant, "--tool", tool, "--json")
    assert out.returncode == 0, out
    return json.loads(out.stdout)["counters"][0]["used"]


async def in_thread(fn, *args):
    """Runs a blocking helper (a CLI command) without stopping the clients' event loop."""
    return await anyio.to_thread.run_sync(lambda: fn(*args))


async def poll(predicate, timeout: float, interval: float = 0.1):
    """Polls a blocking `predicate` in a thread until it is truthy (its value) or `timeout`
    passes (its last, falsy, value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await in_thread(predicate)
        if value or time.monotonic() > deadline:
            return value
        await anyio.sleep(interval)


def paths(records: list[dict]) -> list[str]:
    return sorted(r["args"]["path"] for r in records)


# ---------------------------------------------------------------------------------------
# 1. Rate limits are exact across instances (one Lua script in Redis per call)
# ---------------------------------------------------------------------------------------
THREE_A_MINUTE = {
    "version": "1",
    "default": "deny",
    "tools": {"list_files": {"limits": [{"counter": "files", "window": "minute", "max": 3, "scope": "global"}]}},
}


async def test_a_limit_of_three_a_minute_lets_exactly_three_of_ten_calls_through_two_instances(
    gateway_factory, shared_services, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    state = shared_services.fresh_state()
    a = gateway_factory(policy_server("ssh", log), policy=THREE_A_MINUTE, bob_policy=THREE_A_MINUTE, state=state)
    # The second instance runs two worker threads (the first the default one): the Redis
    # client's callers then race on its connection in parallel, not only in turn.
    b = gateway_factory(
        policy_server("ssh", log), policy=THREE_A_MINUTE, bob_policy=THREE_A_MINUTE, state=state, threads=2
    )
    v = version_of(a)
    results: dict[int, object] = {}
    async with connect(a) as alice_on_a, connect(b, token=OTHER_TOKEN) as bob_on_b:
        assert [t.name for t in (await alice_on_a.list_tools()).tools] == ["list_files"]
        assert [t.name for t in (await bob_on_b.list_tools()).tools] == ["list_files"]
        # The ten calls (and the counts read after them) must fall into one UTC minute.
        await sleep_past_boundary(60, 8)

        async def call(i: int) -> None:
            client = alice_on_a if i % 2 == 0 else bob_on_b
            results[i] = await client.call_tool("list_files", {"path": f"/call/{i}"})

        # All at once, alternating between the instances: they race for the same counter.
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(call, i)
        # Either instance's CLI sees the same count.
        used = [
            await in_thread(counter_used, a, "ssh/list_files"),
            await in_thread(counter_used, b, "ssh/list_files", "bob"),
        ]

    assert used == [3, 3]
    passed = sorted(i for i, r in results.items() if not r.is_error)
    refused = sorted(i for i, r in results.items() if r.is_error)
    assert len(passed) == 3, f"{len(passed)} calls passed a limit of 3: {passed}"
    for i in passed:
        assert_passed(results[i], "ssh", "list_files", {"path": f"/call/{i}"})
    message = re.compile(
        rf"rate limit `files` reached: at most 3 per minute for everyone; resets in (\d+) s \(at ({UTC_TIME})\)"
    )
    for i in refused:
        text = assert_denied(results[i], "limited", "/tools/list_files/limits/0", v)
        assert message.fullmatch(text), text
    # Both instances refused calls (five each, three allowed in all).
    assert {i % 2 for i in refused} == {0, 1}
    # Only the three reached the upstreams.
    assert sorted(log.args("list_files"), key=lambda a: a["path"]) == [{"path": f"/call/{i}"} for i in passed]


# ---------------------------------------------------------------------------------------
# 2. An approval given anywhere releases the call at once (announced on Redis)
# ---------------------------------------------------------------------------------------
HOLD = {
    "version": "1",
    "default": "deny",
    "tools": {"create_charge": {"action": "approve", "approval": {"timeout": "60s", "approvers": ["finance"]}}},
}


async def test_an_approval_given_through_instance_b_releases_the_call_held_on_instance_a_at_once(
    gateway_factory, shared_services, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    state = shared_services.fresh_state()
    a = gateway_factory(policy_server("ssh", log), policy=HOLD, state=state)
    b = gateway_factory(policy_server("ssh", log), policy=HOLD, state=state)
    charge = {"amount": 42, "reason": "conference"}
    released: list[tuple[object, float]] = []
    async with connect(a) as alice, anyio.create_task_group() as tg:

        async def call() -> None:
            result = await alice.call_tool("create_charge", charge)
            released.append((result, time.monotonic()))

        tg.start_soon(call)
        # The call is held on A; B's operator sees it in the shared queue.
        listed = await poll(lambda: pending(b), timeout=10)
        assert listed, "the call held on A never appeared in B's approvals list"
        [held] = listed
        assert (held["grant"], held["server"], held["tool"]) == ("alice", "ssh", "create_charge")
        assert held["status"] == "pending"
        assert held["arguments"] == charge
        assert not log.entries(), "a held call reached the upstream"
        # A looked at the approval when it was created and polls again only every 3 s: a
        # release within 1.5 s of the approval is the decision announced on Redis.
        approving = time.monotonic()
        out = await in_thread(toolgate, b, "approvals", "approve", held["id"], "--reason", "budgeted")
        assert out.returncode == 0, out
        assert out.stdout.startswith(f"approved {held['id']}: ssh/create_charge for grant alice"), out.stdout
        with anyio.fail_after(10):
            while not released:
                await anyio.sleep(0.01)
    [(result, at)] = released
    assert_passed(result, "ssh", "create_charge", charge)
    assert at - approving < 1.5, f"released {at - approving:.2f} s after the approval on the other instance"
    sys.stderr.write(f"released {at - approving:.2f} s after `toolgate approvals approve` started on B\n")
    assert log.args("create_charge") == [charge]
    # Used once, as every instance sees it.
    decided = json.loads(toolgate(a, "approvals", "list", "--all", "--json").stdout)["approvals"]
    assert [(d["id"], d["status"], d["decided_by"].startswith("cli:")) for d in decided] == [(held["id"], "used", True)]


# ---------------------------------------------------------------------------------------
# 3. One audit log for every instance: each call recorded once
# ---------------------------------------------------------------------------------------
AUDITED = {"version": "1", "default": "deny", "audit": {"values": True}, "tools": {"list_files": {}}}


async def test_the_audit_log_holds_every_call_made_through_either_instance_exactly_once(
    gateway_factory, shared_services, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    state = shared_services.fresh_state()
    a = gateway_factory(policy_server("ssh", log), policy=AUDITED, bob_policy=AUDITED, state=state)
    b = gateway_factory(policy_server("ssh", log), policy=AUDITED, bob_policy=AUDITED, state=state)
    per_instance = 8
    sent = {"alice": [f"/a/{i}" for i in range(per_instance)], "bob": [f"/b/{i}" for i in range(per_instance)]}
    async with connect(a) as alice_on_a, connect(b, token=OTHER_TOKEN) as bob_on_b:

        async def calls(client, grant: str) -> None:
            for path in sent[grant]:
                assert_passed(await client.call_tool("list_files", {"path": path}), "ssh", "list_files", {"path": path})

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(calls, alice_on_a, "alice")
                tg.start_soon(calls, bob_on_b, "bob")

    expected = sorted(sent["alice"] + sent["bob"])
    total = len(expected)
    found = await poll(lambda: len(r := call_records(a, "list_files")) >= total and r, timeout=10)
    assert found, f"fewer than {total} call records after 10 s: {call_records(a, 'list_files')}"
    # Give a late duplicate (a retried batch) the time to show up.
    await anyio.sleep(0.5)
    from_a, from_b = call_records(a, "list_files"), call_records(b, "list_files")
    assert paths(from_a) == expected, "records missing or duplicated"
    assert [r["id"] for r in from_a] == [r["id"] for r in from_b], "the instances' CLIs disagree"
    assert len({r["id"] for r in from_a}) == total
    for r in from_a:
        assert (r["kind"], r["decision"], r["server"], r["tool"]) == ("call", "allowed", "ssh", "list_files"), r
        assert r["upstream_status"] == "result", r
    # Both instances' sessions: alice's calls in one session (on A), bob's in another (on B).
    sessions = {grant: {r["session"] for r in from_a if r["grant"] == grant} for grant in ("alice", "bob")}
    assert all(len(s) == 1 for s in sessions.values()), sessions
    assert sessions["alice"] != sessions["bob"], sessions
    assert paths([r for r in from_a if r["grant"] == "alice"]) == sorted(sent["alice"])
    assert paths([r for r in from_a if r["grant"] == "bob"]) == sorted(sent["bob"])


# ---------------------------------------------------------------------------------------
# 4. Redis down: limited calls fail closed, the rest go on; recovery without a restart
# ---------------------------------------------------------------------------------------
LIMITED_AND_FREE = {
    "version": "1",
    "default": "deny",
    "tools": {"list_files": {"limits": [sliding("files", 3)]}, "ssh_session_start": {}},
}


async def test_with_redis_down_limited_calls_fail_closed_and_work_again_once_it_is_back(
    private_services, gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=LIMITED_AND_FREE, state=private_services.fresh_state())
    v = version_of(gw)
    start = {"credentialName": "prod"}
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("list_files", {"path": "up"}), "ssh", "list_files", {"path": "up"})

        private_services.stop_redis()
        # Refused, every time, within the store timeout (500 ms by default) and a margin.
        for i in range(3):
            started = time.monotonic()
            refused = await alice.call_tool("list_files", {"path": f"down-{i}"})
            took = time.monotonic() - started
            assert assert_denied(refused, "error", "/tools/list_files/limits/0", v) == STORE_DENIAL
            assert took < 2, f"refusal {i} took {took:.2f} s"
        # A tool without limits does not need Redis.
        assert_passed(await alice.call_tool("ssh_session_start", start), "ssh", "ssh_session_start", start)
        assert "rate-limit store failed; denying the call (fail closed)" in gw.log()

        private_services.start_redis()
        # The same gateway, no restart: within a bounded time a limited call passes again.
        recovered_in = None
        tries = 0
        deadline = time.monotonic() + 20
        back = time.monotonic()
        while time.monotonic() < deadline:
            tries += 1
            result = await alice.call_tool("list_files", {"path": f"retry-{tries}"})
            if not result.is_error:
                assert_passed(result, "ssh", "list_files", {"path": f"retry-{tries}"})
                recovered_in = time.monotonic() - back
                break
            assert assert_denied(result, "error", "/tools/list_files/limits/0", v) == STORE_DENIAL
            await anyio.sleep(0.25)
        assert recovered_in is not None, f"limited calls still refused 20 s after Redis came back\n{gw.log()[-3000:]}"
        # Counted again (the new Redis started empty): two more, then the limit.
        for extra in ("again-1", "again-2"):
            assert_passed(await alice.call_tool("list_files", {"path": extra}), "ssh", "list_files", {"path": extra})
        over = await alice.call_tool("list_files", {"path": "over"})
        over = assert_denied(over, "limited", "/tools/list_files/limits/0", v)
        assert over.startswith("rate limit `files` reached: at most 3 per sliding hour per grant"), over
    assert [a["path"] for a in log.args("list_files")] == ["up", f"retry-{tries}", "again-1", "again-2"]
    sys.stderr.write(f"limited calls passed again {recovered_in:.2f} s after Redis came back ({tries} tries)\n")


# ---------------------------------------------------------------------------------------
# 5. PostgreSQL down: calls go on, their audit records wait on disk, none is lost
# ---------------------------------------------------------------------------------------
def spooled(gw: Gateway) -> list[dict]:
    """The records waiting in the gateway's audit spool."""
    spool = gw.config.parent / "state" / "audit-spool"
    out = []
    for f in sorted(spool.glob("audit-*.jsonl")):
        with contextlib.suppress(FileNotFoundError):
            out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


async def test_with_postgresql_down_calls_go_on_and_their_audit_records_wait_on_disk_until_it_is_back(
    private_services, gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=AUDITED, state=private_services.fresh_state())
    spool = gw.config.parent / "state" / "audit-spool"
    during = [f"/down/{i}" for i in range(5)]
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("list_files", {"path": "/up"}), "ssh", "list_files", {"path": "/up"})
        assert await poll(lambda: call_records(gw, "list_files"), timeout=10), "the first record never arrived"

        private_services.stop_postgres()
        started = time.monotonic()
        for path in during:
            assert_passed(await alice.call_tool("list_files", {"path": path}), "ssh", "list_files", {"path": path})
        assert time.monotonic() - started < 10, "calls waited for the unreachable database"

    # The records wait on disk (once the writer gave up on the database).
    waiting = await poll(
        lambda: len(s := [r for r in spooled(gw) if r.get("tool") == "list_files"]) >= len(during) and s, timeout=20
    )
    assert waiting, f"the spool in {spool} holds {spooled(gw)}\n{gw.log()[-3000:]}"
    assert paths(waiting) == sorted(during)
    assert list(spool.glob("audit-*.jsonl"))

    private_services.start_postgres()
    expected = sorted(["/up"] + during)
    arrived = await poll(
        lambda: not list(spool.glob("audit-*.jsonl")) and paths(call_records(gw, "list_files")) == expected,
        timeout=20,
        interval=0.25,
    )
    assert arrived, (
        f"after 20 s: spool {sorted(p.name for p in spool.iterdir())}, "
        f"audit {paths(call_records(gw, 'list_files'))}\n{gw.log()[-3000:]}"
    )
    await anyio.sleep(0.5)
    records = call_records(gw, "list_files")
    assert paths(records) == expected and len({r["id"] for r in records}) == len(expected)
    assert all(r["decision"] == "allowed" and r["upstream_status"] == "result" for r in records), records
    assert "spooling to disk" in gw.log()


# ---------------------------------------------------------------------------------------
# 6. kill -9 under load: counters, the pending approval and every answered call's record stay
# ---------------------------------------------------------------------------------------
BUDGET = 40
CRASH = {
    "version": "1",
    "default": "deny",
    "audit": {"values": True},
    "tools": {
        "list_files": {"limits": [sliding("files", BUDGET)]},
        "create_charge": {"action": "approve", "approval": {"timeout": "10m", "approvers": ["finance"]}},
    },
}
STRICT = '\n[audit]\ndurability = "strict"\n'


@contextlib.contextmanager
def logged(gw: Gateway, name: str):
    """Stops the gateway at the end and prints its log (kept under `name`)."""
    try:
        yield gw
    finally:
        gw.stop()
        kept = gw.log_path.with_name(name)
        shutil.copy(gw.log_path, kept)
        sys.stderr.write(f"--- toolgate log ({kept}) ---\n{kept.read_text(errors='replace')[-5000:]}\n")


async def test_after_kill_9_under_load_the_counts_the_pending_approval_and_every_answered_calls_record_remain(
    shared_services, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    home = tmp_path / "gw"
    home.mkdir()
    servers = policy_server("ssh", log)
    state = shared_services.fresh_state()
    answered: list[str] = []  # calls whose success the client saw
    attempted: list[str] = []  # every call sent
    killed = False
    finished: list[str] = []  # the clients' tasks that ended

    with logged(Gateway(home, servers, policy=CRASH, state=state, extra=STRICT), "toolgate-killed.log") as gw:

        async def hold() -> None:
            try:
                async with connect(gw) as client:
                    result = await client.call_tool("create_charge", {"amount": 99})
                pytest.fail(f"the held call was answered before anyone approved it: {text_of(result)}")
            except Exception:
                if not killed:
                    raise
            finally:
                finished.append("hold")

        async def load(k: int) -> None:
            try:
                async with connect(gw) as client:
                    n = 0
                    while not killed:
                        path = f"/load/{k}/{n}"
                        n += 1
                        attempted.append(path)
                        try:
                            result = await client.call_tool("list_files", {"path": path})
                        except Exception:
                            if killed:
                                return
                            raise
                        # An answer, even one read after the kill, was sent by the gateway.
                        assert_passed(result, "ssh", "list_files", {"path": path})
                        answered.append(path)
            except Exception:
                # The client's own ending fails too once the gateway is gone.
                if not killed:
                    raise
            finally:
                finished.append(f"load {k}")

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold)
                listed = await poll(lambda: pending(gw), timeout=10)
                assert listed, "the create_charge call was never held"
                [held] = listed
                for k in range(6):
                    tg.start_soon(load, k)
                with anyio.fail_after(20):
                    while len(answered) < 12 or len(attempted) - len(answered) < 4:
                        await anyio.sleep(0.005)
                # Mid-burst: calls in flight on several sessions, one call held.
                killed = True
                gw.proc.send_signal(signal.SIGKILL)
                assert gw.proc.wait(timeout=10) == -signal.SIGKILL
                # The clients notice (their connections are gone); then nothing is left running.
                with anyio.move_on_after(10):
                    while len(finished) < 7:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
    seen = list(answered)
    in_flight = len(attempted) - len(seen)
    assert len(seen) >= 12 and len(attempted) < BUDGET, (len(seen), len(attempted))

    # Restarted on the same state (same config file, state directory, database and prefix).
    with logged(Gateway(home, servers, policy=CRASH, state=state, extra=STRICT), "toolgate-restarted.log") as gw:
        # The count survived: every answered call is counted (calls in flight may be too).
        used = counter_used(gw, "ssh/list_files")
        assert len(seen) <= used <= len(attempted), (len(seen), used, len(attempted))
        # The held call is still in the queue, as it was.
        [still] = pending(gw)
        assert (still["id"], still["status"], still["tool"], still["arguments"]) == (
            held["id"], "pending", "create_charge", {"amount": 99},
        )
        # Strict durability: each call the client saw answered had its record committed first.
        records = call_records(gw, "list_files")
        recorded = paths(records)
        assert len(recorded) == len(set(recorded)), "a record was stored twice"
        missing = sorted(set(seen) - set(recorded))
        assert not missing, f"answered calls without an audit record: {missing}"
        assert set(recorded) <= set(attempted)
        assert all(r["decision"] == "allowed" for r in records), records
        # The remaining budget is what the counter says: the earlier calls still count.
        async with connect(gw) as alice:
            for i in range(BUDGET - used):
                path = f"/after/{i}"
                assert_passed(await alice.call_tool("list_files", {"path": path}), "ssh", "list_files", {"path": path})
            over = assert_denied(
                await alice.call_tool("list_files", {"path": "/after/over"}), "limited", "/tools/list_files/limits/0"
            )
            assert over.startswith(f"rate limit `files` reached: at most {BUDGET} per sliding hour per grant"), over
        assert counter_used(gw, "ssh/list_files") == BUDGET
    sys.stderr.write(f"killed with {len(seen)} calls answered, {in_flight} in flight; {used} counted\n")


# ---------------------------------------------------------------------------------------
# 7. Strict durability with PostgreSQL down: a call waits for its record on disk only
# ---------------------------------------------------------------------------------------
async def test_with_strict_durability_and_postgresql_down_a_call_waits_for_its_record_on_disk_not_for_the_database(
    private_services, gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=AUDITED, state=private_services.fresh_state(), extra=STRICT)
    spool = gw.config.parent / "state" / "audit-spool"
    sent = ["/up"]
    async with connect(gw) as alice:
        assert_passed(await alice.call_tool("list_files", {"path": "/up"}), "ssh", "list_files", {"path": "/up"})
        private_services.stop_postgres()
        # The first record finds the database gone (after the pool's 5 s timeout) and goes to disk.
        started = time.monotonic()
        sent.append("/down/first")
        assert_passed(await alice.call_tool("list_files", {"path": sent[-1]}), "ssh", "list_files", {"path": sent[-1]})
        assert time.monotonic() - started < 10
        assert "/down/first" in paths(spooled(gw)), "answered before its record was on disk"
        # From then on the spool takes the records: each call waits for a local file only.
        slow = None
        for i in range(6):
            await anyio.sleep(0.3)
            path = f"/down/{i}"
            sent.append(path)
            started = time.monotonic()
            assert_passed(await alice.call_tool("list_files", {"path": path}), "ssh", "list_files", {"path": path})
            took = time.monotonic() - started
            assert path in paths(spooled(gw)), "answered before its record was on disk"
            if took > 1:
                slow = (i, took)
                break
    assert slow is None, (
        f"call {slow[0]} with PostgreSQL down took {slow[1]:.2f} s, though the spool already held records "
        "(the spool's replay keeps its lock while it waits for the database)"
    )

    private_services.start_postgres()
    arrived = await poll(
        lambda: not list(spool.glob("audit-*.jsonl")) and paths(call_records(gw, "list_files")) == sorted(sent),
        timeout=20,
        interval=0.25,
    )
    assert arrived, f"audit after 20 s: {paths(call_records(gw, 'list_files'))}, expected {sorted(sent)}"


# ---------------------------------------------------------------------------------------
# 8. Redis down: approvals live in PostgreSQL, so operators can still see and decide them
# ---------------------------------------------------------------------------------------
async def test_with_redis_down_an_operator_still_lists_and_approves_held_calls_with_the_cli(
    private_services, gateway_factory, tmp_path
):
    log = CallLog(tmp_path / "calls.jsonl")
    gw = gateway_factory(policy_server("ssh", log), policy=HOLD, state=private_services.fresh_state())
    charge = {"amount": 5, "reason": "pens"}
    results: list = []
    cli: dict[str, subprocess.CompletedProcess] = {}
    async with connect(gw) as alice:
        await alice.list_tools()
        private_services.stop_redis()
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                results.append(await alice.call_tool("create_charge", charge))

            tg.start_soon(call)
            held = await poll(lambda: "call held for a human's approval" in gw.log(), timeout=10)
            assert held, "the call was not held with Redis down"
            cli["list"] = await in_thread(toolgate, gw, "approvals", "list", "--json")
            if cli["list"].returncode == 0:
                [approval] = json.loads(cli["list"].stdout)["approvals"]
                approving = time.monotonic()
                cli["approve"] = await in_thread(toolgate, gw, "approvals", "approve", approval["id"])
                # Nothing is announced: the held call sees the decision at its next poll (3 s).
                with anyio.move_on_after(10):
                    while not results:
                        await anyio.sleep(0.05)
                cli["released_in"] = time.monotonic() - approving
            cli["audit"] = await in_thread(toolgate, gw, "audit", "--json")
            tg.cancel_scope.cancel()
    assert cli["list"].returncode == 0, f"toolgate approvals list with Redis down: {cli['list'].stderr.strip()}"
    assert cli["approve"].returncode == 0, cli["approve"].stderr
    assert results, "the approved call was not released within 10 s"
    assert_passed(results[0], "ssh", "create_charge", charge)
    assert cli["released_in"] < 3.0 + 1.5
    assert cli["audit"].returncode == 0, f"toolgate audit with Redis down: {cli['audit'].stderr.strip()}"


def test_a_web_ui_login_on_one_instance_holds_on_the_other_until_it_logs_out(gateway_factory, shared_services):
    state = shared_services.fresh_state()
    admin_token = "tg_admin_token_shared_web"
    bases = []
    gateways = []
    for _ in range(2):
        port = free_port()
        gw = gateway_factory(
            policy_server("ssh", CallLog(Path(tempfile.mkdtemp()) / "calls.jsonl")),
            state=state,
            listen_extra=f'admin = "127.0.0.1:{port}"',
            extra=f'\n[admin.tokens.ops]\ntoken_sha256 = "{sha256_hex(admin_token)}"\nrole = "admin"\n',
        )
        wait_for_port(port, gw.proc)
        gateways.append(gw)
        bases.append(f"http://127.0.0.1:{port}")
    a, b = bases
    # The one-time link printed by A logs in on A (it is A's own).
    [code] = re.findall(r"/login\?once=([0-9a-f]{64})", gateways[0].log())
    login = httpx.get(f"{a}/login?once={code}", follow_redirects=False)
    assert login.status_code == 303, login.text
    value = re.match(r"tg_admin=([0-9a-f]{64});", login.headers["set-cookie"]).group(1)
    jar = {"Cookie": f"tg_admin={value}"}
    # B knows the session and its CSRF token.
    page = httpx.get(f"{b}/approvals", headers=jar, follow_redirects=False)
    assert page.status_code == 200 and "one-time-link (admin)" in page.text, page.text[:300]
    csrf = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', page.text).group(1)
    assert httpx.get(f"{a}/approvals", headers=jar).text.count(csrf) >= 1, "A and B derive the same token"
    assert httpx.get(f"{b}/api/approvals", headers=jar).status_code == 200
    change = httpx.post(f"{b}/api/approvals/none/approve", headers={**jar, "X-CSRF-Token": csrf}, json={})
    assert change.status_code == 409 and "no pending approval" in change.text, change.text
    # Logging out on B ends it on A too.
    out = httpx.post(f"{b}/logout", headers=jar, data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert httpx.get(f"{a}/api/approvals", headers=jar).status_code == 401
    assert httpx.get(f"{a}/approvals", headers=jar, follow_redirects=False).headers["location"] == "/login"
