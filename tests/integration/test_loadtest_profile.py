"""scripts/loadtest.py profile, the pre-upgrade traffic mix: a few seconds of it against the real server (both
databases), against tests/fault_server.py answering 500s, and against a port where nothing listens."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_server import FaultServer, closed_port_url
from tests.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["--rate", "15", "--duration", "3", "--users", "6", "--rooms", "3", "--syncers", "3", "--drain", "5"]


def profile(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "loadtest.py"), "profile", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def whoami_only(fake: FaultServer, tmp_path: Path) -> list[str]:
    """Options for a profile of whoami alone against the fake, which logs anyone in with any password."""
    password = tmp_path / "password"
    password.write_text("anything\n")
    accounts = ["--accounts", "login", "--user-prefix", "load", "--secret-file", str(password)]
    # no long-polls: the fake cannot end them cleanly when it stops
    return ["--base-url", fake.url, *SHORT, *accounts, "--mix", "whoami=1", "--syncers", "0"]


@pytest.fixture
def fake() -> Iterator[FaultServer]:
    server = FaultServer().start()
    yield server
    server.stop()


def test_profile_passes_with_every_operation_and_delivery_measured(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = profile("--base-url", server.url, *SHORT, "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["verdict"] == "PASS" and report["failures"] == []
    assert report["load"]["issued"] == 45 and report["load"]["achieved_rate_per_s"] >= 14
    for op in ("sync", "send", "receipt", "typing", "whoami"):
        assert rows[op]["count"] > 0 and rows[op]["errors"] == 0, (op, rows[op])
        assert 0 < rows[op]["p50_ms"] <= rows[op]["p95_ms"] <= rows[op]["p99_ms"] <= rows[op]["max_ms"]
    assert rows["join"]["count"] + rows.get("leave", {"count": 0})["count"] > 0
    assert rows["all"]["count"] == 45 and rows["all"]["errors"] == 0
    # every message sent reached the other long-pollers of its room, and was timed
    assert rows["delivery"]["count"] > 0 and rows["delivery"]["errors"] == 0 and rows["delivery"]["p50_ms"] > 0
    assert rows["long-poll"]["count"] > 0 and rows["long-poll"]["errors"] == 0
    lines = done.stdout.splitlines()
    assert lines[-1] == "PASS"
    header = next(line for line in lines if line.startswith("operation"))
    assert header.split()[:4] == ["operation", "count", "errors", "refused"] and header.endswith("rate/s")
    send = next(line for line in lines if line.startswith("send "))
    assert send.split()[1] == str(rows["send"]["count"])


def test_an_impossible_latency_threshold_fails_and_is_named(server: ServerProcess) -> None:
    done = profile("--base-url", server.url, *SHORT, "--p99-ms", "0.001")
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stdout.splitlines()[-1]
    assert last.startswith("FAIL: ") and "p99 of whoami" in last and "> 0.001 ms" in last


def test_an_unreachable_target_exits_2() -> None:
    done = profile("--base-url", closed_port_url(), *SHORT, timeout=30)
    assert done.returncode == 2
    assert "unreachable" in done.stderr


def test_bad_options_exit_2() -> None:
    assert profile("--base-url", closed_port_url(), "--mix", "sync=1,dance=2").returncode == 2
    assert profile("--base-url", "http://192.0.2.1:8008").returncode == 2


@pytest.mark.parametrize(("behaviour", "reason"), [("500", "HTTP 500"), ("hang", "timeout")])
def test_server_errors_and_timeouts_are_counted_and_fail_the_run(
    fake: FaultServer, tmp_path: Path, behaviour: str, reason: str
) -> None:
    fake.set("/_matrix/client/v3/account/whoami", behaviour)
    out = tmp_path / "report.json"
    done = profile(*whoami_only(fake, tmp_path), "--timeout", "0.5", "--json", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    whoami = json.loads(out.read_text())["rows"]["whoami"]
    assert whoami["count"] == 45 == len(fake.seen("GET", "/_matrix/client/v3/account/whoami"))
    assert whoami["errors"] == 45 and whoami["reasons"] == {reason: 45} and whoami["p50_ms"] is None
    assert f"error rate of whoami 100.00% (45 of 45: 45 x {reason}) > 0.10%" in done.stdout.splitlines()[-1]


def test_refusals_are_shown_apart_and_fail_unless_allowed(fake: FaultServer, tmp_path: Path) -> None:
    fake.set("/_matrix/client/v3/account/whoami", "ok", "429")
    args = whoami_only(fake, tmp_path)
    strict = profile(*args, "--json", str(tmp_path / "strict.json"))
    assert strict.returncode == 1, strict.stdout + strict.stderr
    whoami = json.loads((tmp_path / "strict.json").read_text())["rows"]["whoami"]
    assert whoami["refusals"] == 44 and whoami["errors"] == 0 and "error rate of whoami" in strict.stdout
    relaxed = profile(*args, "--allow-refusals")
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
