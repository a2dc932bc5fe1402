"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance` 0.1.16), run in
the same test session against the fixture directly and through the gateway.

The gateway fronts the fixture as a Streamable HTTP upstream (per-session isolation) with an
anonymous grant, because the suite sends no `Authorization` header, and with `allow_sampling`
on, since sampling is relayed only when the operator allows it. Every scenario that passes
directly must pass through the gateway, and `dns-rebinding-protection` must
pass against the gateway's own listener. Reports land in `tests/artifacts/`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import NODE_BIN, PYTHON, ROOT, FixtureHttp, Gateway, require, server_http

RUN_SUITE = ROOT / "tests" / "conformance" / "run_suite.py"
EXPECTED = ROOT / "tests" / "conformance" / "expected-pass.txt"
ARTIFACTS = ROOT / "tests" / "artifacts"
# Both suite runs happen in the module fixture, inside the first test: give it room.
pytestmark = pytest.mark.timeout(2 * 900 + 60)

SCENARIO_TIMEOUT = 30  # seconds per scenario; each normally takes about 1 s
SUITE_TIMEOUT = 900  # seconds for one whole run (32 scenarios)


def expected_scenarios() -> list[str]:
    return [line.split("#", 1)[0].strip() for line in EXPECTED.read_text().splitlines() if line.split("#", 1)[0].strip()]


def run_suite(url: str, report_name: str) -> dict:
    report = ARTIFACTS / report_name
    report.unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.run(
        [PYTHON, str(RUN_SUITE), "--url", url, "--report", str(report),
         "--expect", str(EXPECTED), "--timeout", str(SCENARIO_TIMEOUT)],
        capture_output=True, text=True, timeout=SUITE_TIMEOUT, cwd=ROOT,
    )
    (ARTIFACTS / report_name.replace(".json", ".log")).write_text(proc.stderr + proc.stdout)
    if proc.returncode == 2 or not report.exists():
        pytest.fail(f"run_suite.py could not run against {url} (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    data = json.loads(report.read_text())
    data["_wall_s"] = round(time.monotonic() - started, 1)
    return data


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory):
    """Both runs, once per test session: {'direct': report, 'gateway': report}."""
    require(NODE_BIN / "conformance", "run `bash scripts/setup-test-deps.sh` first")
    require(RUN_SUITE, "tests/conformance/run_suite.py is part of the repository")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("conformance")
    fixture = FixtureHttp(tmp)
    gw = None
    try:
        direct = run_suite(fixture.url, "conformance-direct.json")
        gw = Gateway(
            tmp,
            # allow_sampling: the operator's opt-in that `tools-call-sampling` needs (off by default).
            server_http("fixture", fixture.url, isolation='"per-session"', allow_sampling="true"),
            listen_extra='anonymous_grant = "alice"\n',
        )
        through = run_suite(gw.url, "conformance-gateway.json")
        yield {"direct": direct, "gateway": through, "gateway_url": gw.url}
    finally:
        if gw is not None:
            gw.stop()
            log = gw.log()
            (ARTIFACTS / "conformance-gateway-toolgate.log").write_text(log)
            sys.stderr.write(f"--- toolgate log (conformance) ---\n{log[-5000:]}\n")
        fixture.stop()


def describe(report: dict, names: list[str]) -> str:
    lines = []
    for n in names:
        s = report["scenarios"].get(n, {"status": "not run"})
        lines.append(f"  {n}: {s['status']}")
        for f in s.get("failures", []):
            lines.append(f"      - {f['id']}: {f['errorMessage']}")
        if s.get("status") in ("timeout", "error"):
            lines.append("      " + s.get("output_tail", "")[-600:].replace("\n", "\n      "))
    return "\n".join(lines)


def test_the_fixture_passes_every_expected_scenario_directly(suite_runs):
    direct = suite_runs["direct"]
    expected = expected_scenarios()
    assert len(expected) == 32
    failed = [n for n in expected if direct["scenarios"].get(n, {}).get("status") != "pass"]
    assert not failed, "the fixture itself fails (the comparison below means nothing):\n" + describe(direct, failed)


def test_every_scenario_that_passes_directly_also_passes_through_the_gateway(suite_runs):
    direct, through = suite_runs["direct"], suite_runs["gateway"]
    passed_directly = [n for n in expected_scenarios() if direct["scenarios"].get(n, {}).get("status") == "pass"]
    lost = [n for n in passed_directly if through["scenarios"].get(n, {}).get("status") != "pass"]
    assert not lost, (
        f"{len(lost)} of {len(passed_directly)} scenarios pass directly but not through the gateway "
        f"(reports in {ARTIFACTS}):\n" + describe(through, lost)
    )


def test_dns_rebinding_protection_passes_against_the_gateway_itself(suite_runs):
    through = suite_runs["gateway"]
    scenario = through["scenarios"]["dns-rebinding-protection"]
    assert through["url"] == suite_runs["gateway_url"]
    assert scenario["status"] == "pass", describe(through, ["dns-rebinding-protection"])
    assert {c["id"]: c["status"] for c in scenario["checks"]} == {
        "localhost-host-rebinding-rejected": "SUCCESS",
        "localhost-host-valid-accepted": "SUCCESS",
    }
