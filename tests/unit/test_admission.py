"""Admission control without a network: the limits derived from a descriptor budget, the controller's
books (eviction order, caps per kind, the door, refusal counts and rate-limited logging), and the
connection state machine driven in-process on a fake clock."""

import json
import logging
import re
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport

from homeserver.config.options import AdmissionControlConfig, DatabaseConfig
from homeserver.http import admission as admission_module
from homeserver.http.admission import (
    AT_DOOR,
    EVICTED,
    FD_BUDGET,
    LONG_POLL,
    LONG_POLL_MAX_DATABASE_FILL,
    READ_TIMEOUT,
    REFUSAL_LOG_INTERVAL_S,
    SHORT,
    AdmissionController,
    Limits,
    derive_limits,
)
from homeserver.http.channel import busy_response, is_whole_request
from homeserver.http.fd_budget import FdBudget, database_fds
from homeserver.http.routing import Endpoint, Router
from homeserver.http.server import MatrixSite

# -- limits ------------------------------------------------------------------------------------------


def budget(limit: int, baseline: int = 12, reserve: int = 64, database: int = 9) -> FdBudget:
    return FdBudget(limit=limit, baseline=baseline, reserve=reserve, database=database)


def test_connection_budget_is_what_the_limit_leaves_after_everything_else() -> None:
    assert budget(1024).connections == 1024 - 12 - 64 - 9
    assert budget(64).connections == 8  # never below a usable minimum


def test_database_descriptors_depend_on_the_engine() -> None:
    sqlite = DatabaseConfig(name="sqlite3", args={"database": "x.db", "cp_max": 4})
    postgres = DatabaseConfig(name="psycopg2", args={"dsn": "postgresql://u@h/db", "cp_max": 10})
    assert database_fds(sqlite) == 9  # database file and WAL per connection, one shared-memory index
    assert database_fds(postgres) == 10


def test_default_limits_for_ulimit_1024() -> None:
    limits = derive_limits(AdmissionControlConfig(), budget(1024))
    hard = 1024 - 12 - 64 - 9
    assert limits.connection_budget == hard
    assert hard - limits.max_connections == hard // 16  # slack for newcomers while evicted sockets close
    assert limits.max_long_polls == limits.max_connections // 2
    assert limits.max_requests == 256  # the configured default fits


@pytest.mark.parametrize("limit", [64, 256, 1024, 4096, 65536])
def test_requests_and_long_polls_always_leave_connections_to_evict(limit: int) -> None:
    limits = derive_limits(AdmissionControlConfig(max_requests_in_flight=100_000), budget(limit))
    assert limits.max_connections < limits.connection_budget
    assert 1 <= limits.max_long_polls <= max(1, limits.max_connections // 2)
    assert limits.max_requests >= 1
    assert limits.max_requests + limits.max_long_polls < limits.max_connections


def test_configured_caps_only_lower_what_the_budget_allows() -> None:
    config = AdmissionControlConfig(max_connections=100_000, max_long_polls=100_000)
    limits = derive_limits(config, budget(1024))
    assert limits.max_connections == derive_limits(AdmissionControlConfig(), budget(1024)).max_connections
    assert limits.max_long_polls == limits.max_connections // 2


def test_a_small_max_connections_keeps_room_for_requests() -> None:
    limits = derive_limits(AdmissionControlConfig(max_connections=100, max_long_polls=10), budget(1024))
    assert limits.max_connections == 100
    assert limits.max_long_polls == 10
    # the margin kept evictable is relative to max_connections, not to the whole descriptor budget
    assert limits.max_requests == 100 - 10 - 100 // 16


# -- the controller's books ----------------------------------------------------------------------------


class Conn:
    def __init__(self, name: str, controller: AdmissionController) -> None:
        self.name = name
        self.controller = controller
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True
        self.controller.connection_closing(self)

    def __repr__(self) -> str:
        return self.name


class Port:
    def __init__(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


def controller(connections: int = 10, max_connections: int = 8, requests: int = 3, long_polls: int = 2) -> Any:
    return AdmissionController(Limits(connections, max_connections, requests, long_polls), retry_after_ms=1500)


def open_conns(ctl: AdmissionController, n: int, prefix: str = "c") -> list[Conn]:
    conns = [Conn(f"{prefix}{i}", ctl) for i in range(n)]
    for conn in conns:
        ctl.connection_opened(conn)
    return conns


def test_no_eviction_up_to_max_connections() -> None:
    ctl = controller(max_connections=8)
    conns = open_conns(ctl, 8)
    assert not any(c.evicted for c in conns)
    assert ctl.open_connections == 8 and ctl.evictable() == 8


def test_newcomers_above_max_connections_evict_the_longest_waiting() -> None:
    ctl = controller(max_connections=4)
    c0, c1, c2, c3 = open_conns(ctl, 4)
    ctl.connection_busy(c0)  # handling a request: not evictable
    ctl.connection_busy(c2)
    ctl.connection_waiting(c2)  # done, idle again: back of the queue
    newcomer = Conn("new", ctl)
    ctl.connection_opened(newcomer)
    assert [c.evicted for c in (c0, c1, c2, c3, newcomer)] == [False, True, False, False, False]
    second = Conn("second", ctl)
    ctl.connection_opened(second)
    assert c3.evicted and not c2.evicted and not newcomer.evicted
    assert ctl.refused[EVICTED] == 2
    assert ctl.closing == 2  # evicted, descriptors not yet released
    ctl.connection_closed(c1)
    ctl.connection_closed(c3)
    assert ctl.closing == 0 and ctl.open_connections == 4


def test_connections_let_in_for_a_whole_request_are_not_evicted_before_it_is_handled() -> None:
    ctl = controller(max_connections=2)
    waiting = Conn("waiting", ctl)
    ctl.connection_opened(waiting)
    whole = [Conn(f"whole{i}", ctl) for i in range(3)]
    for conn in whole:
        ctl.connection_opened(conn, evictable=False)
    assert waiting.evicted and not any(c.evicted for c in whole)
    assert ctl.evictable() == 0


def test_retry_after_is_spread_around_the_configured_wait() -> None:
    ctl = controller()  # 1500 ms configured
    values = {ctl.retry_after_ms for _ in range(2000)}
    assert min(values) >= 750 and max(values) < 2250
    assert len(values) > 10  # clients refused together do not all come back together
    assert all(v % 50 == 0 for v in values)
    assert AdmissionController(Limits(10, 8, 3, 2), retry_after_ms=0).retry_after_ms == 0


def test_a_newcomer_never_evicts_itself_and_busy_connections_are_safe() -> None:
    ctl = controller(max_connections=2)
    conns = open_conns(ctl, 2)
    for conn in conns:
        ctl.connection_busy(conn)
    newcomer = Conn("new", ctl)
    ctl.connection_opened(newcomer)
    assert not any(c.evicted for c in [*conns, newcomer])
    assert ctl.open_connections == 3  # above max_connections, below the hard budget


def test_the_door_lets_everyone_in_below_max_connections_without_peeking() -> None:
    ctl = controller(max_connections=4)
    open_conns(ctl, 3)

    def peek() -> bool:
        raise AssertionError("no need to look at the request below max_connections")

    assert ctl.door(peek) is None


def test_under_pressure_the_door_admits_only_whole_requests() -> None:
    ctl = controller(connections=10, max_connections=4)
    open_conns(ctl, 4)
    assert ctl.door(lambda: True) is None
    assert ctl.door(lambda: False) == AT_DOOR
    open_conns(ctl, 6, "more")
    assert ctl.open_connections == 10
    assert ctl.door(lambda: True) == FD_BUDGET  # at the hard budget nobody gets in
    assert ctl.refused == {AT_DOOR: 1, FD_BUDGET: 1, EVICTED: 6}


def test_paused_ports_resume_when_a_connection_closes() -> None:
    ctl = controller()
    (conn,) = open_conns(ctl, 1)
    port = Port()
    ctl.pause_port(port)
    assert not port.reading
    ctl.connection_closed(conn)
    assert port.reading


def test_requests_and_long_polls_have_separate_caps() -> None:
    ctl = controller(requests=3, long_polls=2)
    assert all(ctl.try_start(SHORT) for _ in range(3))
    assert not ctl.try_start(SHORT)
    assert ctl.try_start(LONG_POLL) and ctl.try_start(LONG_POLL)  # long-polls unaffected by full short slots
    assert not ctl.try_start(LONG_POLL)
    ctl.finished(SHORT)
    assert ctl.try_start(SHORT)
    assert ctl.refused == {"requests_in_flight": 1, "long_polls_in_flight": 1}
    assert ctl.snapshot()["requests_in_flight"] == 3 and ctl.snapshot()["long_polls_in_flight"] == 2


def test_new_long_polls_wait_while_the_database_queue_fills() -> None:
    ctl = controller(requests=3, long_polls=2)
    fill = [0.0]
    ctl.watch_database(lambda: fill[0])
    assert ctl.try_start(LONG_POLL)
    fill[0] = LONG_POLL_MAX_DATABASE_FILL
    assert not ctl.try_start(LONG_POLL)
    assert ctl.try_start(SHORT)  # short requests are left to the database's own bound
    fill[0] = LONG_POLL_MAX_DATABASE_FILL / 2
    assert ctl.try_start(LONG_POLL)
    assert ctl.refused == {"long_polls_database_busy": 1}


def test_timeouts_are_counted_apart_from_idle_closes() -> None:
    ctl = controller()
    ctl.timed_out(owed_answer=True)
    ctl.timed_out(owed_answer=False)
    assert ctl.refused == {READ_TIMEOUT: 1}
    assert ctl.closed_idle == 1


def test_refusals_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    ctl = AdmissionController(Limits(10, 8, 3, 2), 1000, clock.seconds, clock.callLater)
    with caplog.at_level(logging.WARNING, logger=admission_module.__name__):
        ctl.record_refusal(AT_DOOR)  # the first one after a quiet spell is logged at once
        for _ in range(999):
            ctl.record_refusal(AT_DOOR)
        ctl.record_refusal(EVICTED)
        assert len(caplog.records) == 1
        clock.advance(REFUSAL_LOG_INTERVAL_S)  # the rest, summed up, when the interval ends
        assert len(caplog.records) == 2
        assert "refused 1000 (busy_at_door=999, evicted=1)" in caplog.records[1].getMessage()
        clock.advance(REFUSAL_LOG_INTERVAL_S * 3)  # nothing new, nothing logged
        assert len(caplog.records) == 2
        ctl.record_refusal(FD_BUDGET)
        assert len(caplog.records) == 3
        ctl.record_refusal(FD_BUDGET)
        ctl.stop()  # at shutdown what is left is written
        assert len(caplog.records) == 4
    assert ctl.refused == {AT_DOOR: 1000, EVICTED: 1, FD_BUDGET: 2}


# -- the door's look at a request ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"", False),
        (b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n", False),
        (b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b'POST /login HTTP/1.1\r\nContent-Length: 10\r\n\r\n{"a": ', False),
        (b'POST /login HTTP/1.1\r\ncontent-length: 10\r\n\r\n{"a": 123}', True),
        (b"POST /login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", False),
        (b"POST /login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", True),
    ],
)
def test_whole_request(data: bytes, whole: bool) -> None:
    assert is_whole_request(data) is whole


def test_busy_response_is_a_matrix_limit_exceeded_with_retry_after() -> None:
    head, _, body = busy_response(1500).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert "Retry-After: 2" in lines and "Connection: close" in lines
    assert json.loads(body) == {
        "errcode": "M_LIMIT_EXCEEDED",
        "error": "Server is busy; try again shortly",
        "retry_after_ms": 1500,
    }


# -- connections in-process, on a fake clock -------------------------------------------------------------


class Slow(Endpoint):
    """Answers when the test says so."""

    method, path = "GET", "/slow"

    def __init__(self) -> None:
        self.pending: list[defer.Deferred] = []

    async def handle(self, request: Any) -> tuple[int, dict]:
        waiter: defer.Deferred = defer.Deferred()
        self.pending.append(waiter)
        await waiter
        return 200, {}


class Quick(Endpoint):
    method, path = "GET", "/quick"

    async def handle(self, request: Any) -> tuple[int, dict]:
        return 200, {"ok": True}


class Echo(Endpoint):
    method, path = "POST", "/echo"

    async def handle(self, request: Any) -> tuple[int, dict]:
        return 200, request.json_object()


READ_TIMEOUT_S, IDLE_TIMEOUT_S = 10.0, 30.0


def make_site(limits: Limits) -> Any:
    reactor = MemoryReactorClock()
    router = Router()
    slow = Slow()
    for endpoint in (slow, Quick(), Echo()):
        router.add(endpoint)
    ctl = AdmissionController(limits, 1000, reactor.seconds, reactor.callLater)

    async def authenticate(token: str) -> None:
        return None

    site = MatrixSite(
        router,
        ctl,
        authenticate,
        reactor,
        max_body_size=1024,
        request_timeout=60,
        read_timeout=READ_TIMEOUT_S,
        idle_timeout=IDLE_TIMEOUT_S,
        compress=False,
        x_forwarded=False,
    )
    return SimpleNamespace(reactor=reactor, site=site, admission=ctl, slow=slow)


def connect(env: Any) -> Any:
    channel = env.site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return SimpleNamespace(channel=channel, transport=transport)


def close(conn: Any) -> None:
    conn.channel.connectionLost(SimpleNamespace(value=ConnectionError(), check=lambda *a: None))


def status_lines(conn: Any) -> list[str]:
    return re.findall(r"HTTP/1\.1 \d+ [^\r]*", conn.transport.value().decode())


GET_QUICK = b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_silent_connection_is_cut_off_after_read_timeout() -> None:
    env = make_site(Limits(10, 8, 3, 2))
    conn = connect(env)
    env.reactor.advance(READ_TIMEOUT_S - 0.1)
    assert not conn.transport.disconnecting
    env.reactor.advance(0.2)
    assert conn.transport.disconnecting
    assert env.admission.refused == {READ_TIMEOUT: 1}


def test_trickling_a_request_does_not_extend_read_timeout() -> None:
    env = make_site(Limits(10, 8, 3, 2))
    conn = connect(env)
    conn.channel.dataReceived(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
    for _ in range(9):
        env.reactor.advance(1.0)
        conn.channel.dataReceived(b" ")
    assert not conn.transport.disconnecting
    env.reactor.advance(1.1)
    assert conn.transport.disconnecting
    assert env.admission.refused == {READ_TIMEOUT: 1}


def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    env = make_site(Limits(10, 8, 3, 2))
    conn = connect(env)
    env.reactor.advance(READ_TIMEOUT_S - 1)
    conn.channel.dataReceived(GET_QUICK)
    assert status_lines(conn) == ["HTTP/1.1 200 OK"]
    env.reactor.advance(IDLE_TIMEOUT_S - 0.1)  # idle_timeout, not what was left of read_timeout
    assert not conn.transport.disconnecting
    env.reactor.advance(0.2)
    assert conn.transport.disconnecting
    assert env.admission.closed_idle == 1 and not env.admission.refused


def test_evicted_connections_owed_an_answer_get_503_idle_ones_are_just_closed() -> None:
    env = make_site(Limits(10, 2, 3, 2))
    silent, keep_alive = connect(env), connect(env)
    keep_alive.channel.dataReceived(GET_QUICK)
    keep_alive.transport.clear()
    newcomer = connect(env)  # above max_connections: evicts the longest-waiting one, the silent connection
    assert status_lines(silent) == ["HTTP/1.1 503 Service Unavailable"]
    assert re.search(rb"\r\nRetry-After: [12]\r\n", silent.transport.value())
    assert b"M_LIMIT_EXCEEDED" in silent.transport.value()
    assert silent.transport.disconnecting
    close(silent)
    connect(env)  # next in line: the idle keep-alive, closed without an unasked-for answer
    assert keep_alive.transport.value() == b"" and keep_alive.transport.disconnecting
    assert not newcomer.transport.disconnecting
    assert env.admission.refused == {EVICTED: 2}


def test_a_connection_handling_a_request_is_never_evicted() -> None:
    env = make_site(Limits(10, 1, 3, 2))
    busy = connect(env)
    busy.channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    connect(env)
    assert not busy.transport.disconnecting
    env.slow.pending[0].callback(None)
    assert status_lines(busy) == ["HTTP/1.1 200 OK"]


def test_a_pipelined_request_is_handled_as_active() -> None:
    env = make_site(Limits(10, 1, 3, 2))
    conn = connect(env)
    conn.channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    env.slow.pending[0].callback(None)  # the second request starts from the bytes buffered meanwhile
    assert len(env.slow.pending) == 2
    connect(env)  # above max_connections: the connection with the second request must not be the victim
    env.reactor.advance(IDLE_TIMEOUT_S + 1)  # nor cut off by a timer while the request is handled
    assert not conn.transport.disconnecting
    env.slow.pending[1].callback(None)
    assert status_lines(conn) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]


def test_requests_beyond_the_cap_get_503_with_retry_after_and_close() -> None:
    env = make_site(Limits(10, 8, 1, 1))
    first, second = connect(env), connect(env)
    first.channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    second.channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_lines(second) == ["HTTP/1.1 503 Service Unavailable"]
    head, _, body = second.transport.value().partition(b"\r\n\r\n")
    assert re.search(rb"\r\nRetry-After: [12]\b", head) and b"Connection: close" in head
    assert json.loads(body)["errcode"] == "M_LIMIT_EXCEEDED"
    assert second.transport.disconnecting
    env.slow.pending[0].callback(None)
    assert status_lines(first) == ["HTTP/1.1 200 OK"]
    assert env.admission.in_flight[SHORT] == 0
    assert env.admission.refused == {"requests_in_flight": 1}


def test_a_closing_connection_that_does_not_read_its_answer_is_aborted() -> None:
    env = make_site(Limits(10, 8, 3, 2))
    conn = connect(env)
    conn.channel.dataReceived(b"GET /quick HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_lines(conn) == ["HTTP/1.1 200 OK"]
    assert env.admission.closing == 1
    aborted = []
    conn.transport.abortConnection = lambda: aborted.append(True)
    env.reactor.advance(5.1)
    assert aborted
