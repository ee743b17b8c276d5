"""The background pruner of push actions: the one place rows leave event_push_actions (DESIGN.md, "the long
DELETE"). A read receipt only moves the read position; this deletes, in keyed batches (handlers/batches.py),

- read actions: at or below their (user, room)'s read position, and
- expired actions: received more than `retention_days` ago, read or not.

An expired action that was never read leaves its summary's counts as they are: the user was notified and
has not read it, so it still counts, until a receipt recomputes the counts from the rows that remain (then
without it). Only /notifications forgets it.

One run at a time per process (`running`); on PostgreSQL every batch also takes an advisory lock for its
transaction, so a second process on the same database finds it taken and rests instead of pruning the same
rows. After a run the pruner rests `prune_interval` seconds.
"""

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task

from homeserver.config.options import PushConfig
from homeserver.core.work_class import BULK, current_work_class
from homeserver.handlers.batches import Batches
from homeserver.storage.database import DatabaseBusy
from homeserver.storage.push import ActionKey, PruneBacklog, PruneBatch, PushStore

logger = logging.getLogger(__name__)

# Marks of the stream position are this far apart at most: retention is kept to within 1% (or an hour).
MAX_MARK_SPACING_S = 3600.0


@dataclass
class RunTotals:
    read_rows: int = 0
    expired_rows: int = 0
    batches: int = 0
    locked_out: bool = False  # another process held the pruner lock
    seconds: float = 0.0


class PushPruner:
    def __init__(
        self, store: PushStore, batches: Batches, config: PushConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._batches = batches
        self._config = config
        self._clock = clock
        self.running = False
        self.runs = 0
        # Counted as batches commit, so /health shows a long run's progress.
        self.batches = 0
        self.read_rows_deleted = 0
        self.expired_rows_deleted = 0
        self.locked_out = 0  # runs cut short by another process's pruner
        self.errors = 0
        self.last_run: RunTotals | None = None
        self.last_run_ended: float | None = None  # clock()
        self.backlog: PruneBacklog | None = None  # counted as the last run started
        self._stopping = False
        self._rest: defer.Deferred | None = None
        self._loop: defer.Deferred | None = None

    async def run_once(self) -> RunTotals | None:
        """Delete what is read, then what has expired, until neither has rows left. None, doing nothing,
        while a run is in progress."""
        if self.running:
            return None
        self.running = True
        started = time.monotonic()
        totals = RunTotals()
        try:
            now_ms = int(self._clock() * 1000)
            retention_ms = int(self._config.retention_days * 86_400_000)
            await self._store.record_stream_mark(now_ms, int(min(MAX_MARK_SPACING_S * 1000, retention_ms / 100)))
            mark = await self._store.expiry_mark(now_ms - retention_ms)
            # What this run faces: a backlog that grows from run to run means the pruner is not keeping up.
            self.backlog = await self._store.prune_backlog(None if mark is None else mark.stream_ordering)
            await self._batches.run(lambda size: self._read_batch(totals, size))
            if mark is not None and self._carry_on(totals):
                after: list[ActionKey | None] = [None]  # where the next batch starts: after the last one's key
                await self._batches.run(lambda size: self._expired_batch(totals, after, mark.stream_ordering, size))
                await self._store.delete_marks_before(mark.ts)
        finally:
            self.running = False
            totals.seconds = time.monotonic() - started
            self._account(totals)
        return totals

    async def _read_batch(self, totals: RunTotals, size: int) -> int:
        batch = await self._store.prune_read_actions(size)
        totals.read_rows += batch.rows
        self.read_rows_deleted += batch.rows
        # A summary with nothing left to delete is work done too: the run goes on to the next one.
        return self._counted(totals, batch, batch.rows + batch.summaries_done)

    async def _expired_batch(self, totals: RunTotals, after: list[ActionKey | None], upto: int, size: int) -> int:
        batch = await self._store.prune_expired_actions(after[0], upto, size)
        after[0] = batch.last_key or after[0]
        totals.expired_rows += batch.rows
        self.expired_rows_deleted += batch.rows
        return self._counted(totals, batch, batch.rows)

    def _counted(self, totals: RunTotals, batch: PruneBatch, work: int) -> int:
        """The batch's work for Batches.run: 0 ends the run (nothing left, the lock taken, or stopping)."""
        totals.locked_out = totals.locked_out or batch.locked
        if work:
            totals.batches += 1
            self.batches += 1
        return work if self._carry_on(totals) else 0

    def _carry_on(self, totals: RunTotals) -> bool:
        return not totals.locked_out and not self._stopping

    def _account(self, totals: RunTotals) -> None:
        self.runs += 1
        self.locked_out += totals.locked_out
        self.last_run, self.last_run_ended = totals, self._clock()
        # Every run that did something is one line; an idle server's runs every prune_interval are DEBUG.
        logger.log(
            logging.INFO if totals.read_rows or totals.expired_rows or totals.locked_out else logging.DEBUG,
            "push pruner: deleted %d read and %d expired push actions in %d batches, %.2f s%s",
            totals.read_rows,
            totals.expired_rows,
            totals.batches,
            totals.seconds,
            "; stopped early: another process holds the pruner lock" if totals.locked_out else "",
        )

    # -- running in the server ------------------------------------------------------------------------

    def start(self, reactor: Any) -> None:
        """Run now, then every `prune_interval` seconds after the last run ended, until reactor shutdown."""
        self._loop = defer.ensureDeferred(self._forever(reactor))
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    async def _forever(self, reactor: Any) -> None:
        current_work_class.set(BULK)  # live requests waiting for a connection go first
        interval = self._config.prune_interval
        while not self._stopping:
            try:
                await self.run_once()
            except DatabaseBusy:  # live requests fill the pool and its queue: theirs it is
                self.errors += 1
                logger.warning("push pruner: the database is saturated; trying again in %.0f s", interval)
            except Exception:
                self.errors += 1
                logger.exception("push pruner run failed; trying again in %.0f s", interval)
            if self._stopping:
                break
            self._rest = task.deferLater(reactor, interval, lambda: None)
            try:
                await self._rest
            except defer.CancelledError:
                break
            finally:
                self._rest = None

    def stop(self) -> defer.Deferred | None:
        """Let the batch in flight finish, then end; the Deferred fires once the loop has."""
        self._stopping = True
        if self._rest is not None:
            self._rest.cancel()
        if self._loop is None or self._loop.called:
            return None
        done: defer.Deferred = defer.Deferred()
        self._loop.addBoth(lambda _: done.callback(None))
        return done

    def status(self) -> dict[str, Any]:
        """For /health: what the pruner has done since the server started."""
        last, ended = self.last_run, self.last_run_ended
        return {
            "running": self.running,
            "runs": self.runs,
            "batches": self.batches,
            "rows_deleted": self.read_rows_deleted + self.expired_rows_deleted,
            "read_rows_deleted": self.read_rows_deleted,
            "expired_rows_deleted": self.expired_rows_deleted,
            "last_run_s": None if last is None else round(last.seconds, 3),
            "last_run_ended_ago_s": None if ended is None else round(self._clock() - ended, 1),
            "longest_batch_ms": round(self._store.longest_prune_transaction_s() * 1000, 1),
            "backlog": None if self.backlog is None else dataclasses.asdict(self.backlog),
            "locked_out_runs": self.locked_out,
            "errors": self.errors,
        }
