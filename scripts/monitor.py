#!/usr/bin/env python3
"""End-to-end monitor of a homeserver: what a user would notice, measured from outside, every N seconds.

    .venv/bin/python scripts/monitor.py --config monitor.yaml
    .venv/bin/python scripts/monitor.py --base-url https://matrix.example.org --once     # /versions only

Each round runs the configured probes at once (see docs/monitoring.md):
  versions        GET /_matrix/client/versions
  login           a password login on a device of its own, then its logout
  delivery        the sender sends a message to the probe room; the receiver's long-polling /sync must see it
  federation_key  GET /_matrix/key/v2/server on the federation URL

It exports latency and failures (by probe and reason) as Prometheus metrics, and POSTs alerts to a webhook
after `alert_after` bad rounds in a row, and again when the probe recovers. No answer, a wrong answer or no
connection is a counted failure, never the end of the monitor. With --once or --rounds N it stops by itself:
exit status 0 when every probe of the last round passed, 1 otherwise (2: the configuration is wrong).
"""

import argparse
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from monitor_alerts import Alerts, Webhook
from monitor_http import REASONS, Http
from monitor_probes import PROBES, Account, Prober, Result, Target
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    write_to_textfile,
)
from prometheus_client.twisted import MetricsResource
from twisted.internet import task
from twisted.internet.defer import gatherResults
from twisted.internet.error import CannotListenError
from twisted.logger import STDLibLogObserver, globalLogBeginner
from twisted.web.resource import Resource
from twisted.web.server import Site

log = logging.getLogger("monitor")

PROBE_ONLY = {"not_delivered": "delivery", "keys_expired": "federation_key"}  # reasons only one probe can fail for
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Secrets may come from the environment (systemd's EnvironmentFile=) rather than the command line, which `ps` shows.
SECRET_ENV = {
    ("sender", "password"): "MONITOR_SENDER_PASSWORD",
    ("sender", "access_token"): "MONITOR_SENDER_TOKEN",
    ("receiver", "password"): "MONITOR_RECEIVER_PASSWORD",
    ("receiver", "access_token"): "MONITOR_RECEIVER_TOKEN",
}


@dataclass
class Settings:
    """Everything configurable. A YAML or JSON file uses these names; command-line flags override it."""

    base_url: str = ""
    federation_url: str | None = None
    sender: Account | None = None
    receiver: Account | None = None
    room: str | None = None
    device_id: str = "MONITOR"
    interval: float = 30.0
    timeout: float = 10.0
    delivery_timeout: float = 30.0
    alert_after: int = 3
    latency_threshold: dict[str, float] = field(default_factory=dict)
    webhook_url: str | None = field(default=None, repr=False)
    webhook_timeout: float = 10.0
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    metrics_file: str | None = None
    instance: str = field(default_factory=socket.gethostname)
    rounds: int | None = None  # None: forever


class ConfigError(Exception):
    pass


class Metrics:
    """Prometheus series, in a registry of their own."""

    def __init__(self, probes: list[str]) -> None:
        self.registry = registry = CollectorRegistry()
        self.rounds = Counter("monitor_rounds", "Probe rounds run", registry=registry)
        self.last_round = Gauge(
            "monitor_last_round_timestamp_seconds", "When the last round finished (staleness: a stuck monitor)",
            registry=registry,
        )
        self.attempts = Counter("monitor_probe_attempts", "Probes run", ["probe"], registry=registry)
        self.failures = Counter(
            "monitor_probe_failures", "Probes that failed, by reason", ["probe", "reason"], registry=registry
        )
        self.latency = Histogram(
            "monitor_probe_latency_seconds", "Latency of probes that succeeded", ["probe"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.last_latency = Gauge(
            "monitor_probe_last_latency_seconds", "Latency of the probe's last success", ["probe"], registry=registry
        )
        self.up = Gauge("monitor_probe_up", "1 when the probe's last attempt succeeded", ["probe"], registry=registry)
        self.bad_rounds = Gauge(
            "monitor_probe_bad_rounds", "Consecutive rounds the probe failed or was slow", ["probe"], registry=registry
        )
        self.firing = Gauge("monitor_alert_firing", "1 while the probe's alert fires", ["probe"], registry=registry)
        self.webhook_sent = Counter(
            "monitor_webhook_sent", "Alerts the webhook accepted, by status", ["status"], registry=registry
        )
        self.webhook_failures = Counter(
            "monitor_webhook_failures", "Webhook POSTs that failed, by reason", ["reason"], registry=registry
        )
        # Every series exists from the start at zero, so that rate() and alerting rules see the first failure.
        for probe in probes:
            self.attempts.labels(probe)
            self.latency.labels(probe)
            self.bad_rounds.labels(probe)
            self.firing.labels(probe)
            for reason in REASONS:
                if reason not in PROBE_ONLY or PROBE_ONLY[reason] == probe:
                    self.failures.labels(probe, reason)
        for status in ("firing", "resolved"):
            self.webhook_sent.labels(status)
        for reason in REASONS:
            if reason not in PROBE_ONLY and reason != "bad_json":  # a webhook's answer is not read
                self.webhook_failures.labels(reason)

    def record(self, result: Result) -> None:
        self.attempts.labels(result.probe).inc()
        self.up.labels(result.probe).set(1 if result.ok else 0)
        if result.ok:
            assert result.latency is not None
            self.latency.labels(result.probe).observe(result.latency)
            self.last_latency.labels(result.probe).set(result.latency)
        else:
            self.failures.labels(result.probe, result.reason or "error").inc()


class Monitor:
    def __init__(self, reactor: Any, settings: Settings) -> None:
        self._settings = settings
        http = Http(reactor)
        self._prober = Prober(http, _target(settings))
        self.probes = self._prober.probes()
        self.metrics = Metrics(self.probes)
        webhook = None
        if settings.webhook_url:
            webhook = Webhook(http, settings.webhook_url, settings.webhook_timeout, self.metrics)
        self._alerts = Alerts(
            settings.alert_after,
            settings.latency_threshold,
            webhook,
            self.metrics,
            monitor=settings.instance,
            server=settings.base_url,
        )

    async def round(self, number: int) -> bool:
        """Runs every probe at once, then records, alerts and announces. True when every probe passed."""
        results: list[Result] = await gatherResults(
            [task.ensureDeferred(self._prober.run(probe)) for probe in self.probes]
        )
        lines = []
        for result in results:
            self.metrics.record(result)
            condition = self._alerts.observe(result)
            if result.ok:
                lines.append(f"{result.probe} {condition} {result.latency:.3f}s")
            else:
                lines.append(f"{result.probe} FAILED {result.reason}")
                log.warning("round %d: %s failed: %s: %s", number, result.probe, result.reason, result.detail)
        log.info("round %d: %s", number, ", ".join(lines))
        self.metrics.rounds.inc()
        self.metrics.last_round.set(time.time())
        await self._alerts.announce()
        self._write_textfile()
        return all(r.ok for r in results)

    def _write_textfile(self) -> None:
        if not self._settings.metrics_file:
            return
        try:
            write_to_textfile(self._settings.metrics_file, self.metrics.registry)  # atomic: a rename
        except OSError as e:
            log.warning("could not write %s: %s", self._settings.metrics_file, e)


async def run(reactor: Any, settings: Settings) -> int:
    monitor = Monitor(reactor, settings)
    if settings.metrics_port is not None:
        root = Resource()
        root.putChild(b"metrics", MetricsResource(monitor.metrics.registry))
        try:
            port = reactor.listenTCP(settings.metrics_port, Site(root), interface=settings.metrics_address)
        except CannotListenError as e:
            log.error("cannot serve metrics: %s", e)
            return 2
        address = port.getHost()
        log.info("metrics on http://%s:%d/metrics", address.host, address.port)
    log.info("probing %s every %gs: %s", settings.base_url, settings.interval, ", ".join(monitor.probes))
    number, passed = 0, False
    while settings.rounds is None or number < settings.rounds:
        number += 1
        started = time.monotonic()
        try:
            passed = await monitor.round(number)
        except Exception:  # a bug of the monitor's own: logged, and the next round goes on
            log.exception("round %d failed inside the monitor", number)
            passed = False
        if settings.rounds is not None and number >= settings.rounds:
            break
        await task.deferLater(reactor, max(0.0, started + settings.interval - time.monotonic()))
    return 0 if passed else 1


# -- configuration -------------------------------------------------------------------------------------------


INTS = ("alert_after", "metrics_port", "rounds")
FLOATS = ("interval", "timeout", "delivery_timeout", "webhook_timeout")
ACCOUNT_KEYS = ("user", "password", "access_token")


def load_settings(args: argparse.Namespace) -> Settings:
    """The file's settings, then the flags over them, then secrets from the environment where still missing."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(Path(args.config).read_text())  # JSON is YAML too
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read {args.config}: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config} must hold a mapping of settings")
        values.update(loaded)
    for f in fields(Settings):
        if f.name not in ("sender", "receiver", "latency_threshold") and getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    if args.once:
        values["rounds"] = 1
    for role in ("sender", "receiver"):
        account = values.get(role) or {}
        if not isinstance(account, dict):
            raise ConfigError(f"{role} must be a mapping of {', '.join(ACCOUNT_KEYS)}")
        account = dict(account)
        for key in ACCOUNT_KEYS:
            flag = getattr(args, f"{role}_{key}")
            account[key] = flag or account.get(key) or os.environ.get(SECRET_ENV.get((role, key), "")) or None
        values[role] = account if any(account.values()) else None
    for flag in args.latency_threshold or []:
        probe, _, seconds = flag.rpartition("=")
        configured = values.get("latency_threshold")
        values["latency_threshold"] = {**_as_mapping(configured), probe or "*": seconds}
    return _validate(values)


def _validate(values: dict[str, Any]) -> Settings:
    known = [f.name for f in fields(Settings)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)} (known: {', '.join(known)})")
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in ("sender", "receiver"):
            checked[name] = _account(name, value)
        elif name == "latency_threshold":
            checked[name] = _thresholds(value)
        elif name in INTS or name in FLOATS:
            checked[name] = _number(name, value, int if name in INTS else float)
        elif isinstance(value, str):
            checked[name] = value
        else:
            raise ConfigError(f"{name} must be a string, not {value!r}")
    settings = Settings(**checked)
    for name in ("base_url", "federation_url", "webhook_url"):
        url = getattr(settings, name)
        if (url or name == "base_url") and not (url or "").startswith(("http://", "https://")):
            raise ConfigError(f"{name} must start with http:// or https://" + (" (--base-url)" if not url else ""))
    if min(settings.timeout, settings.delivery_timeout, settings.webhook_timeout) <= 0 or settings.interval < 0:
        raise ConfigError("timeouts must be positive and the interval not negative")
    if settings.alert_after < 1 or (settings.rounds is not None and settings.rounds < 1):
        raise ConfigError("alert_after and rounds must be at least 1")
    return settings


def _account(role: str, value: Any) -> Account:
    if not isinstance(value, dict) or set(value) - set(ACCOUNT_KEYS):
        raise ConfigError(f"{role} is a mapping of {', '.join(ACCOUNT_KEYS)}")
    if not all(isinstance(v, str) for v in value.values() if v is not None):
        raise ConfigError(f"{role}: {', '.join(ACCOUNT_KEYS)} are strings")
    if not value.get("access_token") and not (value.get("user") and value.get("password")):
        raise ConfigError(f"{role} needs an access_token, or a user and a password")
    return Account(value.get("user"), value.get("password"), value.get("access_token"))


def _as_mapping(threshold: Any) -> dict[str, Any]:
    return threshold if isinstance(threshold, dict) else {} if threshold is None else {"*": threshold}


def _thresholds(value: Any) -> dict[str, float]:
    """Seconds per probe, from a number (every probe) or a mapping in which "*" stands for the probes not named."""
    given = {str(k): _number(f"latency_threshold {k}", v, float) for k, v in _as_mapping(value).items()}
    unknown = set(given) - set(PROBES) - {"*"}
    if unknown:
        raise ConfigError(f"latency_threshold: unknown probes {sorted(unknown)} (known: {', '.join(PROBES)})")
    default = given.get("*")
    return {p: given.get(p, default) for p in PROBES if given.get(p, default) is not None}


def _number(name: str, value: Any, kind: type) -> Any:
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}") from None


def _target(settings: Settings) -> Target:
    return Target(
        settings.base_url,
        settings.federation_url,
        settings.sender,
        settings.receiver,
        settings.room,
        settings.timeout,
        settings.delivery_timeout,
        settings.device_id,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", "-c", help="a YAML or JSON file of settings (docs/monitoring.md)")
    parser.add_argument("--base-url", help="the client API, e.g. https://matrix.example.org")
    parser.add_argument("--federation-url", help="probe GET /_matrix/key/v2/server here, e.g. https://example.org:8448")
    for role in ("sender", "receiver"):
        parser.add_argument(f"--{role}-user", help=f"the {role} probe account (@user:server or localpart)")
        parser.add_argument(
            f"--{role}-password", help=f"its password (better: ${SECRET_ENV[(role, 'password')]}, not shown by ps)"
        )
        parser.add_argument(
            f"--{role}-access-token", dest=f"{role}_access_token",
            help=f"or its access token (better: ${SECRET_ENV[(role, 'access_token')]})",
        )
    parser.add_argument("--room", help="probe room id or alias (default #monitor-probe:<sender's server>, created)")
    parser.add_argument("--device-id", help="device id of the monitor's logins (default MONITOR)")
    parser.add_argument("--interval", type=float, help="seconds from one round's start to the next (default 30)")
    parser.add_argument("--timeout", type=float, help="seconds one request may take (default 10)")
    parser.add_argument(
        "--delivery-timeout", type=float, help="seconds until the receiver must have the message (default 30)"
    )
    parser.add_argument("--alert-after", type=int, help="bad rounds in a row before an alert fires (default 3)")
    parser.add_argument(
        "--latency-threshold", action="append", metavar="[PROBE=]SECONDS",
        help="a success slower than this is a bad round too (repeatable; no threshold by default)",
    )
    parser.add_argument("--webhook-url", help="POST alerts here (JSON, see docs/monitoring.md)")
    parser.add_argument("--webhook-timeout", type=float, help="seconds a webhook POST may take (default 10)")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (/metrics)")
    parser.add_argument("--metrics-address", help="address to serve metrics on (default 127.0.0.1)")
    parser.add_argument("--metrics-file", help="also write the metrics here after each round (node_exporter textfile)")
    parser.add_argument("--instance", help="name of this monitor in alerts (default: the host name)")
    parser.add_argument("--rounds", type=int, help="stop after this many rounds (default: run forever)")
    parser.add_argument("--once", action="store_true", help="one round, then exit (status 0 when all passed)")
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="default INFO: one line per round",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Twisted's own messages (an unhandled error, say) into the same log; its chatter about each connection out.
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    logging.getLogger("twisted").setLevel(logging.WARNING)
    disable_created_metrics()  # the *_created series: noise for a monitor
    try:
        settings = load_settings(args)
    except ConfigError as e:
        print(f"monitor: {e}", file=sys.stderr)
        sys.exit(2)

    async def start(reactor: Any) -> None:
        raise SystemExit(await run(reactor, settings))

    task.react(start)


if __name__ == "__main__":
    main()
