"""The end-to-end monitor (scripts/monitor.py), run as the operator runs it: a process, for a bounded number of
rounds. Against tests/fault_server.py, which answers with 500s, hangs, resets and garbage on demand, it must
count every fault by probe and reason, alert and resolve, and never die; against the real server, a message
sent by one account must show up in the other's /sync."""

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.client import PASSWORD, RoomClient, ok, quote
from tests.fault_server import SERVER_NAME, FaultServer, closed_port_url
from tests.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
MONITOR = ROOT / "scripts" / "monitor.py"
SECRET = "pw-" + uuid.uuid4().hex  # the probe accounts' password: it must show up nowhere
VERSIONS = "/_matrix/client/versions"
SEND = "/_matrix/client/v3/rooms/"
SYNC = "/_matrix/client/v3/sync"


@dataclass
class Run:
    returncode: int
    log: str
    metrics: dict[tuple[str, frozenset], float]

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.get((name, frozenset(labels.items())), 0.0)

    def failures(self, probe: str) -> dict[str, float]:
        """{reason: count} of the probe's failures, the zeros left out."""
        return {
            dict(labels)["reason"]: value
            for (name, labels), value in self.metrics.items()
            if name == "monitor_probe_failures_total" and dict(labels)["probe"] == probe and value
        }


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def monitor_command(tmp_path: Path, config: dict[str, Any], *args: str) -> list[str]:
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps(config))
    return [sys.executable, str(MONITOR), "--config", str(path), "--metrics-file", str(tmp_path / "m.prom"), *args]


def run_monitor(tmp_path: Path, config: dict[str, Any], *args: str) -> Run:
    done = subprocess.run(monitor_command(tmp_path, config, *args), capture_output=True, text=True, timeout=120)
    return finished(tmp_path, done.returncode, done.stdout + done.stderr)


def finished(tmp_path: Path, returncode: int, log: str, secrets: tuple[str, ...] = ()) -> Run:
    """Checks what every run must hold: no traceback, no credential in the log or the metrics."""
    metrics_text = (tmp_path / "m.prom").read_text() if (tmp_path / "m.prom").exists() else ""
    assert "Traceback" not in log, log
    for secret in (SECRET, *secrets):
        assert secret not in log and secret not in metrics_text, f"a credential leaked into the output:\n{log}"
    return Run(returncode, log, parse_metrics(metrics_text))


@pytest.fixture
def fake() -> Iterator[FaultServer]:
    server = FaultServer().start()
    yield server
    server.stop()


def fake_config(fake: FaultServer, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": fake.url,
        "federation_url": fake.url,
        "sender": {"user": "probe-a", "password": SECRET},
        "receiver": {"user": "probe-b", "password": SECRET},
        "interval": 0,
        "timeout": 2,  # what a hang costs; enough for a healthy answer on a busy machine
        "delivery_timeout": 2,
        **extra,
    }


ALL_PROBES = ("versions", "login", "delivery", "federation_key")


# -- against the fault-injecting fake ---------------------------------------------------------------------------


def test_a_healthy_server_passes_every_probe(fake: FaultServer, tmp_path: Path) -> None:
    run = run_monitor(tmp_path, fake_config(fake), "--rounds", "2")

    assert run.returncode == 0, run.log
    for probe in ALL_PROBES:
        assert run.value("monitor_probe_attempts_total", probe=probe) == 2
        assert run.value("monitor_probe_latency_seconds_count", probe=probe) == 2
        assert run.value("monitor_probe_up", probe=probe) == 1
        assert run.failures(probe) == {}
    assert run.value("monitor_rounds_total") == 2
    # the sender created the probe room under its alias, inviting the receiver, and both joined
    [create] = fake.seen("POST", "/_matrix/client/v3/createRoom")
    assert create.json()["room_alias_name"] == "monitor-probe"
    assert create.json()["invite"] == [f"@probe-b:{SERVER_NAME}"]
    assert len(fake.seen("POST", "/_matrix/client/v3/join/")) == 2
    assert [m["sender"] for m in fake.messages()] == [f"@probe-a:{SERVER_NAME}"] * 2
    # the login probe logs out what it logged in: one probe login and one logout per round
    probe_logins = [r for r in fake.seen("POST", "/_matrix/client/v3/login") if r.json()["device_id"] != "MONITOR"]
    assert len(probe_logins) == len(fake.seen("POST", "/_matrix/client/v3/logout")) == 2


def test_every_fault_is_a_failure_counted_by_reason_and_the_monitor_goes_on(
    fake: FaultServer, tmp_path: Path
) -> None:
    faults = {
        "500": "http_5xx",
        "404": "http_4xx",
        "hang": "timeout",
        "stall": "timeout",
        "reset": "reset",
        "close": "reset",
        "garbage": "protocol",
        "bad_json": "bad_json",
        "empty_json": "bad_json",
    }
    fake.set(VERSIONS, *faults, "ok")
    rounds = len(faults) + 1

    run = run_monitor(tmp_path, fake_config(fake), "--rounds", str(rounds))

    expected: dict[str, float] = {}
    for reason in faults.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert run.failures("versions") == expected
    assert run.value("monitor_probe_latency_seconds_count", probe="versions") == 1
    assert run.returncode == 0, run.log  # the last round passed
    for probe in ("login", "delivery", "federation_key"):  # the other probes were not disturbed
        assert run.value("monitor_probe_latency_seconds_count", probe=probe) == rounds, run.log


def test_delivery_fails_when_sending_fails_or_the_message_never_arrives(fake: FaultServer, tmp_path: Path) -> None:
    fake.set(SEND, "500", "lose", "ok")

    run = run_monitor(tmp_path, fake_config(fake), "--rounds", "3")

    assert run.failures("delivery") == {"http_5xx": 1, "not_delivered": 1}
    assert run.value("monitor_probe_latency_seconds_count", probe="delivery") == 1
    assert "sent, but not in the receiver's /sync" in run.log
    assert run.returncode == 0, run.log


def test_a_sync_that_hangs_or_answers_garbage_fails_delivery(fake: FaultServer, tmp_path: Path) -> None:
    fake.set(SYNC, "ok", "hang", "garbage", "ok")  # the first is the receiver's initial sync

    run = run_monitor(tmp_path, fake_config(fake), "--rounds", "3")

    assert run.failures("delivery") == {"timeout": 1, "protocol": 1}
    assert run.value("monitor_probe_latency_seconds_count", probe="delivery") == 1
    assert run.returncode == 0, run.log


def test_refused_connections_and_unknown_hosts_are_counted(tmp_path: Path) -> None:
    config = {
        "base_url": closed_port_url(),
        "federation_url": "http://monitor-probe.invalid:8448",
        "sender": {"user": "probe-a", "password": SECRET},
        "receiver": {"user": "probe-b", "access_token": "token-" + SECRET},
        "interval": 0,
        "timeout": 5,
    }

    run = run_monitor(tmp_path, config, "--rounds", "2")

    assert run.returncode == 1
    for probe in ("versions", "login", "delivery"):
        assert run.failures(probe) == {"refused": 2}, run.log
    assert run.failures("federation_key") in ({"dns": 2}, {"timeout": 2}), run.log  # timeout: a resolver that hangs


def test_a_failed_tls_handshake_is_counted(fake: FaultServer, tmp_path: Path) -> None:
    """An https:// URL to a server that speaks plain HTTP: the handshake fails."""
    run = run_monitor(tmp_path, {"base_url": f"https://127.0.0.1:{fake.port}"}, "--once")

    assert run.returncode == 1
    assert run.failures("versions") == {"tls": 1}, run.log


def test_an_alert_fires_after_k_bad_rounds_and_resolves(fake: FaultServer, tmp_path: Path) -> None:
    fake.set(VERSIONS, "500", "500", "500", "ok")
    hook = f"{fake.url}/webhook/{SECRET}"  # chat webhooks carry their secret in the path

    run = run_monitor(tmp_path, fake_config(fake, webhook_url=hook, alert_after=2, instance="canary"), "--rounds", "5")

    firing, resolved = fake.webhooks
    assert firing["status"] == "firing" and resolved["status"] == "resolved"
    for payload in (firing, resolved):
        assert payload["probe"] == "versions"
        assert payload["condition"] == "failing" and payload["reason"] == "http_5xx"
        assert payload["bad_rounds"] == 2
        assert payload["monitor"] == "canary" and payload["server"] == fake.url
    assert "500" in firing["detail"] and "FIRING" in firing["text"]
    assert resolved["latency_seconds"] > 0 and "RESOLVED" in resolved["text"]
    assert run.value("monitor_webhook_sent_total", status="firing") == 1
    assert run.value("monitor_webhook_sent_total", status="resolved") == 1
    assert run.value("monitor_alert_firing", probe="versions") == 0
    assert run.returncode == 0, run.log


def test_a_slow_success_alerts_when_over_its_threshold(fake: FaultServer, tmp_path: Path) -> None:
    fake.set(VERSIONS, "delay:0.6", "delay:0.6", "ok")
    config = fake_config(fake, webhook_url=fake.url + "/webhook", alert_after=2)

    run = run_monitor(tmp_path, config, "--rounds", "3", "--latency-threshold", "versions=0.3")

    firing, resolved = fake.webhooks
    assert firing["status"] == "firing" and firing["condition"] == "slow" and firing["reason"] is None
    assert firing["latency_seconds"] >= 0.6 and firing["threshold_seconds"] == 0.3
    assert resolved["status"] == "resolved" and resolved["latency_seconds"] < 0.3
    assert run.failures("versions") == {}  # slow is not failed: it answered
    assert run.returncode == 0, run.log


def test_a_failing_webhook_is_counted_and_tried_again(fake: FaultServer, tmp_path: Path) -> None:
    fake.set(VERSIONS, "500")
    fake.set("/webhook", "500", "hang", "ok")
    config = fake_config(fake, webhook_url=fake.url + "/webhook", webhook_timeout=1, alert_after=1)

    run = run_monitor(tmp_path, config, "--rounds", "3")

    assert run.value("monitor_webhook_failures_total", reason="http_5xx") == 1
    assert run.value("monitor_webhook_failures_total", reason="timeout") == 1
    assert run.value("monitor_webhook_sent_total", status="firing") == 1
    [payload] = fake.webhooks
    assert payload["status"] == "firing" and payload["bad_rounds"] == 3
    assert run.value("monitor_probe_attempts_total", probe="versions") == 3
    assert run.returncode == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"base_url": "http://127.0.0.1:1", "intervall": 5}, "unknown settings: intervall"),
        ({"federation_url": "http://127.0.0.1:1"}, "base_url"),
        ({"base_url": "http://127.0.0.1:1", "sender": {"user": "probe-a"}}, "sender needs an access_token"),
        ({"base_url": "http://127.0.0.1:1", "timeout": "soon"}, "timeout must be a number"),
    ],
)
def test_a_wrong_configuration_is_refused_before_any_probe(tmp_path: Path, config: dict, message: str) -> None:
    run = run_monitor(tmp_path, config, "--once")

    assert run.returncode == 2
    assert message in run.log


# -- against the real server ------------------------------------------------------------------------------------


def test_a_message_sent_by_one_account_is_seen_in_the_others_sync(
    server: ServerProcess, alice: RoomClient, bob: RoomClient, tmp_path: Path
) -> None:
    """Alice logs in with her password, Bob's session is an access token; metrics are scraped while it runs."""
    port = free_port()
    config = {
        "base_url": server.url,
        "sender": {"user": alice.user_id, "password": PASSWORD},
        "receiver": {"access_token": bob.access_token},
        "interval": 1.5,
        "timeout": 10,
        "delivery_timeout": 10,
        "metrics_port": port,
    }
    process = subprocess.Popen(
        monitor_command(tmp_path, config, "--rounds", "2"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        scraped = scrape_until(port, "monitor_probe_latency_seconds_count", {"probe": "delivery"}, process)
        log, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    run = finished(tmp_path, process.returncode, log, (PASSWORD, bob.access_token or ""))

    assert run.returncode == 0, run.log
    assert scraped >= 1
    assert run.value("monitor_probe_latency_seconds_count", probe="delivery") == 2
    assert 0 < run.value("monitor_probe_last_latency_seconds", probe="delivery") < 10
    for probe in ("versions", "login", "delivery"):
        assert run.failures(probe) == {}, run.log
    # the probe room exists under its alias, Bob is in it, and Alice's two probe messages are in its timeline
    alias = f"#monitor-probe:{alice.user_id.partition(':')[2]}"
    room_id = ok(bob.get(f"/_matrix/client/v3/directory/room/{quote(alias)}"))["room_id"]
    members = ok(bob.room_get(room_id, "joined_members"))["joined"]
    assert {alice.user_id, bob.user_id} <= set(members)
    chunk = ok(bob.room_get(room_id, "messages", dir="b", limit=50))["chunk"]
    probes = [e for e in chunk if e["type"] == "m.room.message" and e["sender"] == alice.user_id]
    assert len(probes) == 2 and all(e["content"]["body"].startswith("monitor probe") for e in probes)


def scrape_until(port: int, name: str, labels: dict[str, str], process: subprocess.Popen) -> float:
    """Scrapes /metrics until the sample is at least 1 (the first round is done), while the monitor runs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.RequestException:
            text = ""
        value = parse_metrics(text).get((name, frozenset(labels.items())), 0.0)
        if value >= 1:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{name}{labels} never reached 1 on the metrics port")
