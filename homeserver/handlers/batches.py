"""Work done in small keyed batches, the way the pruner and every admin purge clear rows: each step is
one short transaction over at most `size` rows picked by key order, then a pause; while the database
pool is busy with live requests the loop waits instead of adding to it, and when batches run slow (a
busy machine stretches every transaction) the pauses grow with them. A step that finds nothing left
ends the run, so an interrupted run simply starts again where the keys say it stopped."""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import task

from homeserver.storage.database import Database

Sleep = Callable[[float], Awaitable[None]]
# A step: given the batch size, do one transaction and say how many rows it handled (0 = finished).
Step = Callable[[int], Awaitable[int]]


@dataclass(frozen=True)
class BatchPace:
    size: int = 500
    pause_s: float = 0.05
    # How long to wait before looking again when the pool has no spare connection.
    busy_pause_s: float = 0.5
    # The share of the time batches may take at most: after a batch that took t seconds the pause is at
    # least t * (1 - duty) / duty, so on a loaded machine the batches back off instead of adding to it.
    duty: float = 0.5


def reactor_sleep(reactor: Any) -> Sleep:
    async def sleep(seconds: float) -> None:
        await task.deferLater(reactor, seconds, lambda: None)

    return sleep


async def blocking_sleep(seconds: float) -> None:
    """For the admin CLI, whose transactions run inline without a reactor."""
    time.sleep(seconds)


class Batches:
    def __init__(
        self, db: Database, sleep: Sleep, pace: BatchPace, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._sleep = sleep
        self.pace = pace
        self._clock = clock

    def busy(self) -> bool:
        """Live requests are waiting for a connection, or would have to if a batch took one."""
        return self._db.waiting > 0 or self._db.in_use >= self._db.max_connections - 1 > 0

    async def wait(self, seconds: float) -> None:
        await self._sleep(seconds)

    async def run(self, step: Step, progress: Callable[[int], None] | None = None) -> int:
        """Run `step` until it handles nothing; returns the total it handled."""
        total = 0
        while True:
            while self.busy():
                await self._sleep(self.pace.busy_pause_s)
            started = self._clock()
            handled = await step(self.pace.size)
            if not handled:
                return total
            total += handled
            if progress is not None:
                progress(total)
            took = self._clock() - started
            await self._sleep(max(self.pace.pause_s, took * (1 - self.pace.duty) / self.pace.duty))
