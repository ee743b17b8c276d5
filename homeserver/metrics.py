"""Prometheus metrics for the `metrics` listener: requests recorded by the HTTP layer, and collectors that
read, at scrape time, the counters the server keeps anyway (database, admission, sync, caches, pruner).

The registry is the server's own, never prometheus_client's global one. Each collector runs guarded: one
that raises is skipped, logged and counted, and the scrape still answers 200 with everything else."""

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from homeserver.http.admission import (
    ACCEPT_FAILED,
    AT_DOOR,
    DATABASE_BUSY_FOR_LONG_POLLS,
    EVICTED,
    FD_BUDGET,
    LONG_POLL,
    READ_TIMEOUT,
    SHORT,
)
from homeserver.http.request import ApiRequest
from homeserver.http.responses import Response
from homeserver.http.routing import Endpoint
from homeserver.storage.push import BACKLOG_CAP

if TYPE_CHECKING:
    from homeserver.app import HomeServer

logger = logging.getLogger(__name__)

Collect = Callable[[], Iterable[Metric]]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))
FAILURE_LOG_INTERVAL_S = 60.0
# Every reason AdmissionController counts, shown at 0 before the first refusal so that increase() sees it.
REFUSAL_REASONS = (
    EVICTED, AT_DOOR, FD_BUDGET, ACCEPT_FAILED, DATABASE_BUSY_FOR_LONG_POLLS, READ_TIMEOUT,
    f"{SHORT}s_in_flight", f"{LONG_POLL}s_in_flight",
)  # fmt: skip
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
_VERSION = re.compile(r"^(r0|v\d+|unstable)$")


def endpoint_family(template: str) -> str:
    """`/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}` -> `client/rooms/send`: the API and
    the first two fixed segments after its version. Built from route templates only, so the label set is
    bounded by the routes whatever paths clients send."""
    if not template.startswith("/"):
        return "unmatched" if template == "-" else template.lower()  # "-" no route, "OPTIONS" preflight
    segments = [s for s in template.split("/") if s and not s.startswith("{")]
    if segments[:1] != ["_matrix"]:
        return "/".join(segments) or "root"
    api, rest = segments[1:2], segments[2:]
    if rest and _VERSION.match(rest[0]):
        rest = rest[1:]
    return "/".join(api + rest[:2])


class Guarded(Collector):
    """Runs one collector, catching what it raises: a scrape loses that collector's series, not all of them."""

    def __init__(self, name: str, collect: Collect, failures: Counter, clock: Callable[[], float]) -> None:
        self.name = name
        self._collect = collect
        self._failures = failures
        self._clock = clock
        self._last_logged: float | None = None
        self._unlogged = 0

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self._collect())
        except Exception:
            self._failures.labels(self.name).inc()
            now = self._clock()
            # A scrape every few seconds must not fill the log with the same traceback.
            if self._last_logged is None or now - self._last_logged >= FAILURE_LOG_INTERVAL_S:
                logger.exception("metrics collector %s failed (%d more failures not logged)", self.name, self._unlogged)
                self._last_logged, self._unlogged = now, 0
            else:
                self._unlogged += 1
            return []


class ServerMetrics:
    """The registry behind GET /metrics, and the request counters the HTTP layer feeds."""

    def __init__(self, collectors: dict[str, Collect], clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "homeserver_http_requests",
            "HTTP requests answered, by endpoint family, method and status",
            ["family", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "homeserver_http_request_duration_seconds",
            "Time from the request being read to the response being written, by endpoint family and method",
            ["family", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        failures = Counter(
            "homeserver_metrics_collector_failures",
            "Scrapes in which a collector raised and its series were left out",
            ["collector"],
            registry=None,
        )
        for name, collect in collectors.items():
            failures.labels(name)  # present from the start at 0, so increase() sees the first failure
            self.registry.register(Guarded(name, collect, failures, clock))
        self.registry.register(failures)  # after the collectors, so a scrape shows its own failures

    def observe_request(self, method: str, template: str, status: int, seconds: float) -> None:
        family = endpoint_family(template)
        method = method if method in KNOWN_METHODS else "other"  # clients can send any word as a method
        self.requests.labels(family, method, str(status)).inc()
        self.latency.labels(family, method).observe(seconds)

    def scrape(self) -> bytes:
        return generate_latest(self.registry)


class MetricsEndpoint(Endpoint):
    method, path = "GET", "/metrics"

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def handle(self, request: ApiRequest) -> Response:
        return Response(200, self._metrics.scrape(), content_type=CONTENT_TYPE_LATEST)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


# FederationSender.status()'s per-destination figures -> (series name, help, scale)
_FEDERATION_PER_DESTINATION = {
    "pending_pdus_stream_distance": (
        "homeserver_federation_pending_pdus_stream_distance",
        "Events stream positions between the newest event for a destination and its last acknowledged one",
        1,
    ),
    "pending_edus": ("homeserver_federation_pending_edus", "EDUs waiting for a destination (stored and in memory)", 1),
    "in_flight": ("homeserver_federation_in_flight", "1 while a transaction to the destination is unanswered", 1),
    "failure_count": ("homeserver_federation_failures", "Consecutive failed transactions to the destination", 1),
    "backoff_ms": ("homeserver_federation_backoff_seconds", "Time left before the destination is tried again", 0.001),
}


def federation_series(status: dict[str, Any]) -> Iterable[Metric]:
    """The outgoing federation queues, from one FederationSender.status() (memory only)."""
    for key, (name, doc, scale) in _FEDERATION_PER_DESTINATION.items():
        family = GaugeMetricFamily(name, doc, labels=["destination"])
        for destination, figures in status["destinations"].items():
            family.add_metric([destination], float(figures[key]) * scale)
        yield family
    yield _gauge("homeserver_federation_destinations_backing_off", "Destinations waiting out a backoff",
                 status["backing_off"])  # fmt: skip
    yield _counter("homeserver_federation_transactions_sent", "Transactions accepted by other servers",
                   status["transactions_sent"])  # fmt: skip
    yield _counter("homeserver_federation_transactions_failed", "Transactions that got no answer or an error status",
                   status["transactions_failed"])  # fmt: skip


def server_collectors(hs: "HomeServer", fd_limit: int) -> dict[str, Collect]:
    """The collectors reading `hs`: all from memory, none touches the database."""

    def database() -> Iterable[Metric]:
        db = hs.db
        yield _gauge("homeserver_db_connections_in_use", "Database connections running a transaction", db.in_use)
        yield _gauge("homeserver_db_connections_max", "Size of the database connection pool", db.max_connections)
        yield _gauge("homeserver_db_waiting_transactions", "Transactions queued for a connection", db.waiting)
        yield _gauge("homeserver_db_max_waiting_transactions", "Queue length at which requests are refused",
                     db.max_waiting)  # fmt: skip
        yield _counter("homeserver_db_queued_transactions", "Transactions that waited for a connection",
                       db.stats.waits)  # fmt: skip
        yield _counter("homeserver_db_queue_wait_seconds", "Time transactions spent waiting for a connection",
                       db.stats.wait_seconds)  # fmt: skip
        yield _counter("homeserver_events_persisted", "Events stored by this process", hs.events.persisted_count)

    def transactions() -> Iterable[Metric]:
        stats = hs.db.stats
        count = CounterMetricFamily("homeserver_db_transactions", "Transactions run, by name", labels=["name"])
        seconds = CounterMetricFamily(
            "homeserver_db_transaction_seconds", "Time spent in transactions, by name", labels=["name"]
        )
        longest = GaugeMetricFamily(
            "homeserver_db_transaction_longest_seconds", "Longest transaction since start, by name", labels=["name"]
        )
        for name in sorted(stats.count):
            count.add_metric([name], stats.count[name])
            seconds.add_metric([name], stats.seconds[name])
            longest.add_metric([name], stats.longest.get(name, 0.0))
        yield from (count, seconds, longest)

    def admission() -> Iterable[Metric]:
        snapshot = hs.admission.snapshot() if hs.admission else {}
        if not snapshot:
            return
        yield _gauge("homeserver_connections_open", "Open client connections", snapshot["open_connections"])
        yield _gauge("homeserver_connections_closing", "Connections being closed", snapshot["closing_connections"])
        yield _gauge("homeserver_connections_budget", "Connections the descriptor budget allows",
                     snapshot["connection_budget"])  # fmt: skip
        yield _gauge("homeserver_connections_max", "Connections above which idle ones are evicted",
                     snapshot["max_connections"])  # fmt: skip
        yield _gauge("homeserver_fds_limit", "The process's descriptor limit the budget is computed from", fd_limit)
        in_flight = GaugeMetricFamily("homeserver_requests_in_flight", "Requests being handled", labels=["kind"])
        in_flight.add_metric([SHORT], snapshot["requests_in_flight"])
        in_flight.add_metric([LONG_POLL], snapshot["long_polls_in_flight"])
        limit = GaugeMetricFamily("homeserver_requests_in_flight_max", "Requests admitted at once", labels=["kind"])
        limit.add_metric([SHORT], snapshot["max_requests_in_flight"])
        limit.add_metric([LONG_POLL], snapshot["max_long_polls"])
        refused = CounterMetricFamily(
            "homeserver_admission_refusals", "Requests and connections refused, by reason", labels=["reason"]
        )
        counted = snapshot["refused"]
        for reason in sorted(set(REFUSAL_REASONS) | set(counted)):
            refused.add_metric([reason], counted.get(reason, 0))
        yield from (in_flight, limit, refused)
        yield _counter("homeserver_connections_closed_idle", "Idle connections closed to make room",
                       snapshot["closed_idle"])  # fmt: skip

    def sync() -> Iterable[Metric]:
        sync = hs.sync
        yield _gauge("homeserver_sync_waiting", "Long-polling /sync requests waiting for news", hs.notifier.waiting)
        yield _counter("homeserver_sync_computed", "Sync responses computed", sync.flights.computed)
        yield _counter("homeserver_sync_coalesced", "Sync requests answered by a response computed for an identical "
                       "concurrent or repeated request", sync.flights.shared)  # fmt: skip
        yield _counter("homeserver_sync_room_states_built", "Room state sections built (not served from the state "
                       "cache)", sync.state_computations)  # fmt: skip
        yield _counter("homeserver_sync_room_sections_built", "Shared room sections built (not served from cache)",
                       sync.shared.section_computations)  # fmt: skip

    def caches() -> Iterable[Metric]:
        lrus = {"sync_room_state": hs.sync.state_fragments, "sync_room_sections": hs.sync.shared.sections}
        size = GaugeMetricFamily("homeserver_cache_bytes", "Estimated bytes held, by cache", labels=["cache"])
        limit = GaugeMetricFamily("homeserver_cache_max_bytes", "Bytes a cache may hold", labels=["cache"])
        entries = GaugeMetricFamily("homeserver_cache_entries", "Entries held, by cache", labels=["cache"])
        hits = CounterMetricFamily("homeserver_cache_hits", "Lookups answered from the cache", labels=["cache"])
        misses = CounterMetricFamily("homeserver_cache_misses", "Lookups the cache could not answer", labels=["cache"])
        for name, lru in lrus.items():
            size.add_metric([name], lru.bytes)
            limit.add_metric([name], lru.max_bytes)
            entries.add_metric([name], len(lru))
            hits.add_metric([name], lru.hits)
            misses.add_metric([name], lru.misses)
        entries.add_metric(["access_tokens"], len(hs.accounts.tokens))
        yield from (size, limit, entries, hits, misses)
        yield _counter("homeserver_access_token_lookups", "Access token lookups that went to the database",
                       hs.accounts.token_reads)  # fmt: skip

    def push_pruner() -> Iterable[Metric]:
        status = hs.push_pruner.status()
        yield _gauge("homeserver_push_pruner_running", "1 while a pruning run is going on", int(status["running"]))
        yield _counter("homeserver_push_pruner_runs", "Pruning runs finished", status["runs"])
        yield _counter("homeserver_push_pruner_batches", "Pruning transactions run", status["batches"])
        deleted = CounterMetricFamily(
            "homeserver_push_pruner_rows_deleted", "Push actions deleted, read or past retention", labels=["kind"]
        )
        deleted.add_metric(["read"], status["read_rows_deleted"])
        deleted.add_metric(["expired"], status["expired_rows_deleted"])
        yield deleted
        yield _counter("homeserver_push_pruner_locked_out_runs", "Runs skipped: another process held the lock",
                       status["locked_out_runs"])  # fmt: skip
        yield _counter("homeserver_push_pruner_errors", "Runs that failed", status["errors"])
        yield _gauge("homeserver_push_pruner_longest_batch_seconds", "Longest pruning transaction",
                     status["longest_batch_ms"] / 1000)  # fmt: skip
        if status["backlog"] is not None:
            backlog = GaugeMetricFamily(
                "homeserver_push_pruner_backlog",
                f"Work the last pruning run started with, counted up to {BACKLOG_CAP}: (user, room)s with read "
                "push actions to delete, and push actions past retention",
                labels=["kind"],
            )
            backlog.add_metric(["read_summaries"], status["backlog"]["read_summaries"])
            backlog.add_metric(["expired_rows"], status["backlog"]["expired_rows"])
            yield backlog
        if status["last_run_s"] is not None:
            yield _gauge("homeserver_push_pruner_last_run_seconds", "Duration of the last run", status["last_run_s"])
        if status["last_run_ended_ago_s"] is not None:
            yield _gauge("homeserver_push_pruner_last_run_ended_ago_seconds", "Seconds since the last run ended",
                         status["last_run_ended_ago_s"])  # fmt: skip

    def federation() -> Iterable[Metric]:
        if hs.federation_sender is not None:
            yield from federation_series(hs.federation_sender.status())

    return {
        "database": database,
        "transactions": transactions,
        "admission": admission,
        "sync": sync,
        "caches": caches,
        "push_pruner": push_pruner,
        "federation": federation,
        "process": ProcessCollector(registry=None).collect,  # memory (RSS), CPU, open and max descriptors
    }
