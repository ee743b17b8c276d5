"""Admission control: bound connections, requests in flight and long-polls; refuse the rest at once.

Connections: accepted sockets never exceed the descriptor budget. A listening port stops accepting
when the budget is full (the kernel's backlog holds newcomers briefly) and starts again when a
connection closes. Above the softer `max_connections`, each newcomer evicts the connection that has
waited longest without sending a whole request (idle keep-alives, silent sockets, trickled bodies),
so clients that talk get served while those that hold sockets open do not starve them.

Requests: once a request is fully read it needs a slot; short requests and long-polls have separate
pools so long-polls cannot starve short requests. Without a slot the answer is 503 M_LIMIT_EXCEEDED
with Retry-After, at once, and the connection is closed.
"""

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.config.options import AdmissionControlConfig
from homeserver.http.fd_budget import FdBudget

logger = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL_S = 10.0
SHORT, LONG_POLL = "request", "long_poll"


class Evictable(Protocol):
    def evict(self) -> None: ...


class PausablePort(Protocol):
    def startReading(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    connection_budget: int  # accepted sockets, hard
    max_connections: int  # above this, newcomers evict the longest-waiting non-active connection
    max_requests: int
    max_long_polls: int


def derive_limits(config: AdmissionControlConfig, budget: FdBudget) -> Limits:
    hard = budget.connections
    slack = max(4, hard // 16)  # room to accept a newcomer while the connection it evicts closes
    soft = hard - slack
    if config.max_connections:
        soft = min(soft, config.max_connections)
    long_polls = config.max_long_polls or soft // 2
    long_polls = min(long_polls, soft // 2)
    # Active requests must stay below the soft cap so that some connection is always evictable.
    requests = max(1, min(config.max_requests_in_flight, soft - long_polls - slack))
    return Limits(connection_budget=hard, max_connections=soft, max_requests=requests, max_long_polls=long_polls)


class AdmissionController:
    def __init__(self, limits: Limits, retry_after_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.retry_after_ms = retry_after_ms
        self._clock = clock
        self.open_connections = 0
        # Connections not handling a request, oldest first: the candidates for eviction.
        self._waiting: collections.OrderedDict[int, Evictable] = collections.OrderedDict()
        self.in_flight = {SHORT: 0, LONG_POLL: 0}
        self.refused: collections.Counter[str] = collections.Counter()
        self.evicted = 0
        self._paused_ports: set[Any] = set()
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._last_log = float("-inf")

    # -- connections --------------------------------------------------------------------------

    def accept_headroom(self) -> int:
        return self.limits.connection_budget - self.open_connections

    def pause_port(self, port: PausablePort) -> None:
        self._paused_ports.add(port)
        self.record_refusal("fd_budget")

    def connection_opened(self, conn: Evictable) -> None:
        self.open_connections += 1
        self._waiting[id(conn)] = conn
        if self.open_connections > self.limits.max_connections:
            self._evict_one(exclude=conn)

    def connection_closed(self, conn: Evictable) -> None:
        self.open_connections -= 1
        self._waiting.pop(id(conn), None)
        if self._paused_ports and self.accept_headroom() > 0:
            ports, self._paused_ports = self._paused_ports, set()
            for port in ports:
                port.startReading()

    def connection_busy(self, conn: Evictable) -> None:
        """The connection has a whole request being handled: not evictable until it is done."""
        self._waiting.pop(id(conn), None)

    def connection_waiting(self, conn: Evictable) -> None:
        """The connection is idle or reading a request: it joins the back of the eviction queue."""
        self._waiting.pop(id(conn), None)
        self._waiting[id(conn)] = conn

    def _evict_one(self, exclude: Evictable) -> None:
        for key, conn in self._waiting.items():
            if conn is not exclude:
                del self._waiting[key]
                self.evicted += 1
                self.record_refusal("evicted_idle")
                conn.evict()
                return

    # -- requests -----------------------------------------------------------------------------

    def try_start(self, kind: str) -> bool:
        cap = self.limits.max_long_polls if kind == LONG_POLL else self.limits.max_requests
        if self.in_flight[kind] >= cap:
            self.record_refusal(f"{kind}s_in_flight")
            return False
        self.in_flight[kind] += 1
        return True

    def finished(self, kind: str) -> None:
        self.in_flight[kind] -= 1

    # -- accounting ---------------------------------------------------------------------------

    def record_refusal(self, reason: str) -> None:
        """Count a refusal; log a summary at most every REFUSAL_LOG_INTERVAL_S so a flood of refusals
        cannot become a flood of log lines."""
        self.refused[reason] += 1
        self._unlogged[reason] += 1
        now = self._clock()
        if now - self._last_log >= REFUSAL_LOG_INTERVAL_S:
            summary = ", ".join(f"{k}={v}" for k, v in sorted(self._unlogged.items()))
            logger.warning(
                "admission control refused work (%s); %d connections open, %d requests and %d long-polls in flight",
                summary,
                self.open_connections,
                self.in_flight[SHORT],
                self.in_flight[LONG_POLL],
            )
            self._unlogged.clear()
            self._last_log = now

    def snapshot(self) -> dict[str, Any]:
        return {
            "open_connections": self.open_connections,
            "connection_budget": self.limits.connection_budget,
            "max_connections": self.limits.max_connections,
            "requests_in_flight": self.in_flight[SHORT],
            "max_requests_in_flight": self.limits.max_requests,
            "long_polls_in_flight": self.in_flight[LONG_POLL],
            "max_long_polls": self.limits.max_long_polls,
            "refused": dict(self.refused),
        }
