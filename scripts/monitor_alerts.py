"""Alerts of the end-to-end monitor (scripts/monitor.py). A probe that fails, or succeeds slower than its
threshold, `alert_after` rounds in a row starts firing; its next good round resolves it. Each change is POSTed
to the webhook (payload in docs/monitoring.md). A webhook that fails is logged, counted and tried again next
round; it never holds up the probes."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor_http import Http, ProbeFailure
from monitor_probes import Result

log = logging.getLogger("monitor")


@dataclass
class _Track:
    """One probe's run of bad rounds, and what the webhook has been told about it."""

    bad_rounds: int = 0
    since: datetime | None = None  # the first bad round of the current run
    last: Result | None = None
    firing: bool = False
    fired: dict[str, Any] | None = None  # the latest firing payload: the resolved one repeats it
    announced: bool = False  # the state the webhook last accepted: firing or not


class Alerts:
    def __init__(
        self,
        alert_after: int,
        thresholds: dict[str, float],
        webhook: "Webhook | None",
        metrics: Any,
        monitor: str,
        server: str,
    ) -> None:
        self._alert_after = alert_after
        self._thresholds = thresholds
        self._webhook = webhook
        self._metrics = metrics
        self._monitor = monitor
        self._server = server
        self._tracks: dict[str, _Track] = {}

    def condition(self, result: Result) -> str:
        """ok, failing or slow."""
        if not result.ok:
            return "failing"
        threshold = self._thresholds.get(result.probe)
        return "slow" if threshold is not None and (result.latency or 0) > threshold else "ok"

    def observe(self, result: Result) -> str:
        """Takes one round's result of a probe; returns its condition."""
        track = self._tracks.setdefault(result.probe, _Track())
        condition = self.condition(result)
        track.last = result
        if condition == "ok":
            track.bad_rounds, track.since = 0, None
            if track.firing:
                track.firing = False
                log.info("alert resolved: %s is ok again (%.3fs)", result.probe, result.latency or 0)
        else:
            track.bad_rounds += 1
            track.since = track.since or _now()
            if not track.firing and track.bad_rounds >= self._alert_after:
                track.firing = True
                track.fired = self._firing(result.probe, track)
                log.warning("alert %s", track.fired["text"])
        self._metrics.bad_rounds.labels(result.probe).set(track.bad_rounds)
        self._metrics.firing.labels(result.probe).set(1 if track.firing else 0)
        return condition

    async def announce(self) -> None:
        """POSTs every change the webhook has not accepted yet, one probe after the other. A probe that resolves
        before its firing was accepted is not announced at all."""
        if self._webhook is None:
            return
        for probe, track in self._tracks.items():
            if track.firing == track.announced:
                continue
            if track.firing:
                track.fired = payload = self._firing(probe, track)  # fresh: more bad rounds since it fired
            else:
                payload = self._resolved(track)
            if await self._webhook.post(payload):
                track.announced = track.firing

    def _firing(self, probe: str, track: _Track) -> dict[str, Any]:
        last = track.last
        assert last is not None and track.since is not None
        condition = self.condition(last)
        threshold = self._thresholds.get(probe)
        said = f"{last.reason}: {last.detail}" if condition == "failing" else f"{last.latency:.3f}s > {threshold:g}s"
        return {
            "status": "firing",
            "probe": probe,
            "condition": condition,
            "reason": last.reason,
            "detail": last.detail,
            "bad_rounds": track.bad_rounds,
            "latency_seconds": last.latency,
            "threshold_seconds": threshold,
            "since": track.since.isoformat(),
            "timestamp": _now().isoformat(),
            "monitor": self._monitor,
            "server": self._server,
            "text": f"[{self._monitor}] FIRING: {probe} {condition} for {track.bad_rounds} rounds ({said})",
        }

    def _resolved(self, track: _Track) -> dict[str, Any]:
        """The firing payload it ends, with the good round's latency and time."""
        assert track.fired is not None and track.last is not None
        latency = track.last.latency or 0
        return {
            **track.fired,
            "status": "resolved",
            "latency_seconds": track.last.latency,
            "timestamp": _now().isoformat(),
            "text": f"[{self._monitor}] RESOLVED: {track.fired['probe']} ok again ({latency:.3f}s)",
        }


class Webhook:
    """POSTs alerts as JSON. Its URL often holds a secret (chat webhooks do), so it never reaches the log."""

    def __init__(self, http: Http, url: str, timeout: float, metrics: Any) -> None:
        self._http = http
        self._url = url
        self._timeout = timeout
        self._metrics = metrics

    async def post(self, payload: dict[str, Any]) -> bool:
        try:
            answer = await self._http.request("POST", self._url, self._timeout, body=payload, shown="webhook POST")
            if not 200 <= answer.status < 300:
                raise ProbeFailure(f"http_{answer.status // 100}xx", f"webhook POST: {answer.status}")
        except ProbeFailure as f:
            self._metrics.webhook_failures.labels(f.reason).inc()
            log.warning("webhook failed (%s: %s); will try again next round", f.reason, f.detail)
            return False
        except Exception as e:  # whatever it is, the probes go on
            self._metrics.webhook_failures.labels("error").inc()
            log.exception("webhook failed: %s", type(e).__name__)
            return False
        self._metrics.webhook_sent.labels(payload["status"]).inc()
        log.info("webhook accepted the %s alert for %s", payload["status"], payload["probe"])
        return True


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
