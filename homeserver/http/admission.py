"""Admission control: bound connections, requests in flight and long-polls; refuse the rest at once.

Connections: accepted sockets never exceed the descriptor budget. Below the softer `max_connections`
every newcomer is let in and has read_timeout to send its request. Above it the server is under
pressure, and the door (the listening port) looks at what a newcomer has sent before letting it in:
one that brought a whole request is let in and evicts the connection that has waited longest without
sending a whole request (idle keep-alives, silent sockets, trickled bodies); one that did not is
answered 503 M_LIMIT_EXCEEDED with Retry-After at once and closed, which costs a few syscalls and no
lasting descriptor. So clients that talk get served while those that hold sockets open cannot starve
them, and a flood of them costs little. An evicted connection that was owed an answer gets the same
503 before it is closed. At the hard budget everyone is refused at the door, except while evicted
connections are still closing: then the port waits for their descriptors (the kernel's backlog holds
newcomers meanwhile).

Requests: once a request is fully read it needs a slot; short requests and long-polls have separate
pools so long-polls cannot starve short requests, and a new long-poll is refused while the database's
wait queue is filling (its first steps are database work), so a herd of them cannot take the queue from
short requests either. Without a slot the answer is 503 M_LIMIT_EXCEEDED with Retry-After, at once, and
the connection is closed. Retry-After is spread around the configured value so that clients refused
together do not come back together.

Everything refused is counted (`refused`, by reason, shown by /health) and logged as a summary at most
once every REFUSAL_LOG_INTERVAL_S, so a flood of refusals never becomes a flood of log lines.
"""

import collections
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.config.options import AdmissionControlConfig
from homeserver.http.fd_budget import FdBudget

logger = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL_S = 10.0
# A long-poll starts with database work (authentication, what changed since its token) before it waits. New
# ones are refused while the database's wait queue is this full, so that a herd of them cannot take the queue
# from short requests.
LONG_POLL_MAX_DATABASE_FILL = 0.5
RETRY_AFTER_STEP_MS = 50
SHORT, LONG_POLL = "request", "long_poll"

# Refusal reasons, as counted and logged.
EVICTED = "evicted"  # a newcomer above max_connections took the place of a connection without a whole request
AT_DOOR = "busy_at_door"  # above max_connections, a newcomer without a whole request was turned away
FD_BUDGET = "fd_budget_full"  # every budgeted descriptor is in use: newcomers turned away at the door
ACCEPT_FAILED = "accept_failed"  # accept() itself failed for want of resources (should never happen)
DATABASE_BUSY_FOR_LONG_POLLS = "long_polls_database_busy"  # a long-poll refused to keep the database queue short
READ_TIMEOUT = "read_timeout"  # a request (or a fresh connection's first one) did not arrive within read_timeout


class Evictable(Protocol):
    def evict(self) -> None: ...

    def close_when_idle(self, grace: float) -> None: ...


class PausablePort(Protocol):
    def startReading(self) -> None: ...


class DelayedCall(Protocol):
    def cancel(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    connection_budget: int  # accepted sockets, hard: the listening port stops accepting here
    max_connections: int  # above this, newcomers evict the longest-waiting connection without a whole request
    max_requests: int
    max_long_polls: int


def derive_limits(config: AdmissionControlConfig, budget: FdBudget) -> Limits:
    """Share the connection budget out.

    - Between max_connections and the hard budget is slack: a newcomer is accepted there while the
      connection it evicts finishes closing (an evicted socket holds its descriptor until then).
    - Long-polls get at most half of max_connections, so they can never hold every connection.
    - Short requests plus long-polls stay below max_connections by a margin, so that when every request
      slot is taken some connections are still evictable and newcomers still get in.
    """
    hard = budget.connections
    slack = max(4, hard // 16)
    soft = max(1, hard - slack)
    if config.max_connections:
        soft = min(soft, config.max_connections)
    long_polls = max(1, min(config.max_long_polls or soft // 2, soft // 2))
    keep_evictable = max(1, soft // 16)
    requests = max(1, min(config.max_requests_in_flight, soft - long_polls - keep_evictable))
    return Limits(connection_budget=hard, max_connections=soft, max_requests=requests, max_long_polls=long_polls)


class AdmissionController:
    """The books of one server: connections open, which of them may be evicted (oldest first), requests and
    long-polls in flight, and what was refused. `clock` gives monotonic seconds; with `call_later` (the
    reactor's) a summary of refusals still unlogged is written when the log interval ends."""

    def __init__(
        self,
        limits: Limits,
        retry_after_ms: int,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[..., DelayedCall] | None = None,
    ) -> None:
        self.limits = limits
        self._retry_after_ms = retry_after_ms
        self._clock = clock
        self._call_later = call_later
        self.open_connections = 0
        # Connections not handling a request, oldest first: the candidates for eviction.
        self._waiting: collections.OrderedDict[int, Evictable] = collections.OrderedDict()
        self._closing: set[int] = set()  # answered or evicted, descriptor not yet released
        self.in_flight = {SHORT: 0, LONG_POLL: 0}
        self.refused: collections.Counter[str] = collections.Counter()
        self.closed_idle = 0  # keep-alive connections closed after idle_timeout: normal, not a refusal
        self._paused_ports: set[Any] = set()
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._last_log = float("-inf")
        self._flush_call: DelayedCall | None = None
        self._reactor: Any = None
        self._database_fill: Callable[[], float] | None = None
        self.draining = False  # every answer closes its connection (channel.py)

    @property
    def retry_after_ms(self) -> int:
        """The wait advised to a refused client: the configured one, give or take half, in steps of
        RETRY_AFTER_STEP_MS, so that clients refused together do not all come back together."""
        base = self._retry_after_ms
        steps = base // RETRY_AFTER_STEP_MS
        if steps < 2:
            return base
        return base - (steps // 2) * RETRY_AFTER_STEP_MS + random.randrange(steps) * RETRY_AFTER_STEP_MS

    def watch_database(self, fill: Callable[[], float]) -> None:
        """`fill()` tells how full the database pool's wait queue is, 0 to 1; long-polls wait for it."""
        self._database_fill = fill

    def use_reactor(self, reactor: Any) -> None:
        """Take time and timers from `reactor` (done when a port starts listening), and write the last
        summary of refusals when it shuts down."""
        if self._reactor is reactor:
            return
        self._reactor = reactor
        self._clock = reactor.seconds
        self._call_later = reactor.callLater
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    # -- connections --------------------------------------------------------------------------

    def accept_headroom(self) -> int:
        return self.limits.connection_budget - self.open_connections

    @property
    def closing(self) -> int:
        return len(self._closing)

    def door(self, whole_request: Callable[[], bool]) -> str | None:
        """Whether a newcomer just accepted may come in: None, or the reason it is turned away.
        `whole_request` (it peeks at the socket) is asked only under pressure."""
        if self.open_connections >= self.limits.connection_budget:
            reason = FD_BUDGET
        elif self.open_connections >= self.limits.max_connections and not whole_request():
            reason = AT_DOOR
        else:
            return None
        self.record_refusal(reason)
        return reason

    def pause_port(self, port: PausablePort) -> None:
        """`port` stopped accepting while descriptors are being released; it resumes when a connection closes."""
        self._paused_ports.add(port)

    def connection_opened(self, conn: Evictable, evictable: bool = True) -> None:
        """A connection was let in. One let in because it brought a whole request is not `evictable`: it is
        about to be handled, and evicting it would only turn away what the door let in."""
        self.open_connections += 1
        if evictable:
            self._waiting[id(conn)] = conn
        if self.open_connections > self.limits.max_connections:
            self._evict_one(exclude=conn)

    def connection_closed(self, conn: Evictable) -> None:
        self.open_connections -= 1
        self._waiting.pop(id(conn), None)
        self._closing.discard(id(conn))
        self.resume_ports()

    def resume_ports(self) -> None:
        if self._paused_ports:
            ports, self._paused_ports = self._paused_ports, set()
            for port in ports:
                if getattr(port, "connected", True):  # not closed meanwhile (at shutdown)
                    port.startReading()

    def connection_busy(self, conn: Evictable) -> None:
        """The connection has a whole request being handled: it cannot be evicted."""
        self._waiting.pop(id(conn), None)

    def connection_closing(self, conn: Evictable) -> None:
        """The connection was answered or evicted and is closing: its descriptor is about to be released."""
        self._waiting.pop(id(conn), None)
        self._closing.add(id(conn))

    def connection_waiting(self, conn: Evictable) -> None:
        """The connection is idle again after a request: it joins the back of the eviction queue."""
        self._waiting.pop(id(conn), None)
        self._waiting[id(conn)] = conn

    def start_draining(self, idle_grace: float) -> None:
        """From now on every answer closes its connection; idle keep-alive connections close after `idle_grace`."""
        self.draining = True
        for conn in list(self._waiting.values()):
            conn.close_when_idle(idle_grace)

    def evictable(self) -> int:
        return len(self._waiting)

    def _evict_one(self, exclude: Evictable) -> None:
        for key, conn in self._waiting.items():
            if conn is not exclude:
                del self._waiting[key]
                self.record_refusal(EVICTED)
                conn.evict()
                return

    # -- requests -----------------------------------------------------------------------------

    def try_start(self, kind: str) -> bool:
        cap = self.limits.max_long_polls if kind == LONG_POLL else self.limits.max_requests
        if self.in_flight[kind] >= cap:
            self.record_refusal(f"{kind}s_in_flight")
            return False
        if kind == LONG_POLL and self._database_fill and self._database_fill() >= LONG_POLL_MAX_DATABASE_FILL:
            self.record_refusal(DATABASE_BUSY_FOR_LONG_POLLS)
            return False
        self.in_flight[kind] += 1
        return True

    def finished(self, kind: str) -> None:
        self.in_flight[kind] -= 1

    # -- accounting ---------------------------------------------------------------------------

    def timed_out(self, owed_answer: bool) -> None:
        """A connection was cut off by its timer: a request that did not arrive in time, or an idle keep-alive."""
        if owed_answer:
            self.record_refusal(READ_TIMEOUT)
        else:
            self.closed_idle += 1

    def record_refusal(self, reason: str) -> None:
        """Count a refusal. The first one after a quiet spell is logged at once; later ones are summed up
        and logged when REFUSAL_LOG_INTERVAL_S has passed since the last line."""
        self.refused[reason] += 1
        self._unlogged[reason] += 1
        now = self._clock()
        if now - self._last_log >= REFUSAL_LOG_INTERVAL_S:
            self._log_refusals(now)
        elif self._flush_call is None and self._call_later is not None:
            self._flush_call = self._call_later(self._last_log + REFUSAL_LOG_INTERVAL_S - now, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._unlogged:
            self._log_refusals(self._clock())

    def _log_refusals(self, now: float) -> None:
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        summary = ", ".join(f"{k}={v}" for k, v in sorted(self._unlogged.items()))
        logger.warning(
            "admission control refused %d (%s) since the last report; %d connections open, "
            "%d requests and %d long-polls in flight",
            sum(self._unlogged.values()),
            summary,
            self.open_connections,
            self.in_flight[SHORT],
            self.in_flight[LONG_POLL],
        )
        self._unlogged.clear()
        self._last_log = now

    def stop(self) -> None:
        """Write what is still unlogged (at shutdown)."""
        if self._unlogged:
            self._log_refusals(self._clock())

    def snapshot(self) -> dict[str, Any]:
        return {
            "open_connections": self.open_connections,
            "closing_connections": len(self._closing),
            "connection_budget": self.limits.connection_budget,
            "max_connections": self.limits.max_connections,
            "requests_in_flight": self.in_flight[SHORT],
            "max_requests_in_flight": self.limits.max_requests,
            "long_polls_in_flight": self.in_flight[LONG_POLL],
            "max_long_polls": self.limits.max_long_polls,
            "refused": dict(self.refused),
            "closed_idle": self.closed_idle,
        }
