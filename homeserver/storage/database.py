"""A bounded pool of database connections with a bounded queue of waiting transactions.

Every unit of work is one named transaction run on a pool thread: it commits when the function
returns and rolls back when it raises, so no request ever leaves a half-written change. When every
connection is busy, at most `max_waiting` transactions queue; beyond that `DatabaseBusy` is raised at
once, because refusing a request is better than letting a queue grow until file handles run out.
"""

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from homeserver.core.work_class import BULK, current_work_class
from homeserver.storage.engines import Engine

logger = logging.getLogger(__name__)
T = TypeVar("T")

SLOW_TRANSACTION_S = 0.5
INSERT_CHUNK = 500  # rows per multi-row INSERT; x columns stays under SQLite's 32766 parameters


class DatabaseBusy(Exception):
    """Every connection is busy and the wait queue is full."""


class Txn:
    """A cursor in one transaction. SQL uses `?` placeholders on every engine."""

    def __init__(self, engine: Engine, cursor: Any) -> None:
        self._engine = engine
        self._cursor = cursor

    def execute(self, sql: str, args: Sequence[Any] = ()) -> "Txn":
        self._cursor.execute(self._engine.convert_sql(sql), tuple(args))
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._cursor.executemany(self._engine.convert_sql(sql), [tuple(r) for r in rows])

    def insert_many(
        self, table: str, columns: tuple[str, ...], rows: Iterable[Sequence[Any]], on_conflict: str = ""
    ) -> None:
        """Multi-row INSERTs in chunks: one round trip per chunk instead of one per row. `on_conflict`
        (an `ON CONFLICT ...` clause) makes each chunk an upsert; rows then must not repeat a key."""
        rows = [tuple(r) for r in rows]
        group = "(" + ",".join("?" * len(columns)) + ")"
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ",".join([group] * len(chunk))
            self.execute(f"{sql} {on_conflict}" if on_conflict else sql, [value for row in chunk for value in row])

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def engine_name(self) -> str:
        return self._engine.name


@dataclass
class TxnStats:
    """Counts and durations per transaction name, for logs and metrics."""

    count: collections.Counter = field(default_factory=collections.Counter)
    seconds: collections.Counter = field(default_factory=collections.Counter)
    longest: dict[str, float] = field(default_factory=dict)

    # Transactions that had to queue for a connection, and the time they waited in all.
    waits: int = 0
    wait_seconds: float = 0.0

    def record(self, name: str, duration: float) -> None:
        self.count[name] += 1
        self.seconds[name] += duration
        self.longest[name] = max(self.longest.get(name, 0.0), duration)


class Database:
    """Runs named transactions. With a reactor, on a pool of `max_connections` threads; without one
    (the admin CLI and storage tests), inline in the caller's thread."""

    def __init__(self, engine: Engine, max_connections: int, max_waiting: int, reactor: Any = None) -> None:
        self.engine = engine
        self.max_connections = max_connections
        self.max_waiting = max_waiting
        self.stats = TxnStats()
        self._reactor = reactor
        self._idle: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: collections.deque[defer.Deferred] = collections.deque()
        self._bulk_waiters: collections.deque[defer.Deferred] = collections.deque()
        self._threadpool: ThreadPool | None = None
        if reactor is not None:
            self._threadpool = ThreadPool(minthreads=1, maxthreads=max_connections, name="db")
            self._threadpool.start()
            reactor.addSystemEventTrigger("during", "shutdown", self.close)

    @property
    def in_use(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiters) + len(self._bulk_waiters)

    async def run(self, name: str, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        """Run `fn(txn, *args)` as one transaction named `name`."""
        if self._reactor is None:
            return self.run_blocking(name, fn, *args, readonly=readonly)
        await self._acquire()
        inner = deferToThreadPool(
            self._reactor, self._threadpool, self.run_blocking, name, fn, *args, readonly=readonly
        )
        inner.addBoth(self._release)
        # The caller may be cancelled (a request deadline); the transaction still runs to its end on
        # its thread and keeps its slot until then, so the pool bound always holds.
        outer: defer.Deferred = defer.Deferred(lambda _: None)
        inner.addBoth(lambda result: None if outer.called else outer.callback(result))
        return await outer

    async def _acquire(self) -> None:
        if self._active < self.max_connections:
            self._active += 1
            return
        if self.waiting >= self.max_waiting:
            raise DatabaseBusy()
        queue = self._bulk_waiters if current_work_class.get() == BULK else self._waiters
        waiter: defer.Deferred = defer.Deferred(lambda d: queue.remove(d))
        queue.append(waiter)
        queued = time.monotonic()
        await waiter  # the releasing transaction hands its slot over
        self.stats.waits += 1
        self.stats.wait_seconds += time.monotonic() - queued

    def _release(self, result: Any) -> Any:
        # Light work (a whoami, a send) goes before bulk work (syncs) waiting for a connection.
        if self._waiters:
            self._waiters.popleft().callback(None)
        elif self._bulk_waiters:
            self._bulk_waiters.popleft().callback(None)
        else:
            self._active -= 1
        return result

    def run_blocking(self, name: str, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        """Run one transaction in this thread, on an idle connection or a new one."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self.engine.connect()
        start = time.monotonic()
        try:
            self.engine.begin(conn, readonly)
            cursor = conn.cursor()
            try:
                result = fn(Txn(self.engine, cursor), *args)
            finally:
                cursor.close()
            conn.commit()
        except BaseException as e:
            with contextlib.suppress(Exception):
                conn.rollback()
            if self.engine.is_connection_error(e):
                _close_quietly(conn)
            else:
                self._return(conn)
            raise
        self._return(conn)
        duration = time.monotonic() - start
        self.stats.record(name, duration)
        if duration > SLOW_TRANSACTION_S:
            logger.warning("slow transaction %s took %.0f ms", name, duration * 1000)
        return result

    def _return(self, conn: Any) -> None:
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        if self._threadpool is not None:
            self._threadpool.stop()
            self._threadpool = None
        with self._lock:
            while self._idle:
                _close_quietly(self._idle.pop())


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()
