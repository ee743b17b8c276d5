"""The keyed-batch loop: one step per batch, a pause between, waiting while the pool has no room for it."""

from typing import Any

from homeserver.handlers.batches import Batches, BatchPace
from tests.inline import resolve

PACE = BatchPace(size=10, pause_s=0.05, busy_pause_s=0.5)


class FakePool:
    """What Batches reads of the database: connections in use, the pool size, transactions waiting."""

    def __init__(self, max_connections: int = 5) -> None:
        self.max_connections = max_connections
        self.in_use = 0
        self.waiting = 0


class Script:
    """Steps that hand back `results` in turn and a sleep that runs `on_sleep` hooks, recording both."""

    def __init__(self, pool: FakePool, results: list[int]) -> None:
        self.pool = pool
        self.results = list(results)
        self.log: list[Any] = []
        self.on_sleep: list[Any] = []

    async def step(self, size: int) -> int:
        self.log.append(("step", size, self.pool.in_use, self.pool.waiting))
        return self.results.pop(0)

    async def sleep(self, seconds: float) -> None:
        self.log.append(("sleep", seconds))
        if self.on_sleep:
            self.on_sleep.pop(0)()


def test_steps_run_until_one_handles_nothing_with_a_pause_between() -> None:
    pool = FakePool()
    script = Script(pool, [10, 10, 3, 0])
    progress: list[int] = []
    total = resolve(Batches(pool, script.sleep, PACE).run(script.step, progress.append))
    assert total == 23
    assert progress == [10, 20, 23]
    assert script.log == [
        ("step", 10, 0, 0),
        ("sleep", 0.05),
        ("step", 10, 0, 0),
        ("sleep", 0.05),
        ("step", 10, 0, 0),
        ("sleep", 0.05),
        ("step", 10, 0, 0),
    ]


def test_waits_while_transactions_queue_for_a_connection() -> None:
    pool = FakePool()
    pool.waiting = 2
    script = Script(pool, [5, 0])
    script.on_sleep = [lambda: None, lambda: setattr(pool, "waiting", 0)]
    resolve(Batches(pool, script.sleep, PACE).run(script.step))
    # Two busy pauses, and no step until the queue was empty.
    assert script.log[:3] == [("sleep", 0.5), ("sleep", 0.5), ("step", 10, 0, 0)]


def test_leaves_the_last_connection_to_live_requests() -> None:
    pool = FakePool(max_connections=5)
    pool.in_use = 4  # a batch would take the last one
    script = Script(pool, [5, 0])
    script.on_sleep = [lambda: setattr(pool, "in_use", 3)]
    resolve(Batches(pool, script.sleep, PACE).run(script.step))
    assert script.log[:2] == [("sleep", 0.5), ("step", 10, 3, 0)]


def test_busy_again_between_batches_waits_again() -> None:
    pool = FakePool()
    script = Script(pool, [7, 7, 0])

    def busy_then_free() -> None:
        pool.waiting = 1
        script.on_sleep.insert(0, lambda: setattr(pool, "waiting", 0))

    script.on_sleep = [busy_then_free]
    assert resolve(Batches(pool, script.sleep, PACE).run(script.step)) == 14
    assert [entry[0:2] for entry in script.log] == [
        ("step", 10),
        ("sleep", 0.05),
        ("sleep", 0.5),
        ("step", 10),
        ("sleep", 0.05),
        ("step", 10),
    ]


def test_pauses_grow_with_slow_batches() -> None:
    pool = FakePool()
    now = [0.0]
    durations = [0.01, 0.2, 0.03, 0.0]

    async def step(size: int) -> int:
        took = durations.pop(0)
        now[0] += took
        return 0 if not took else 5

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    pace = BatchPace(size=5, pause_s=0.05, duty=0.5)
    assert resolve(Batches(pool, sleep, pace, clock=lambda: now[0]).run(step)) == 15
    # At most half the time in batches: a 200 ms batch is followed by 200 ms of pause.
    assert pauses == [0.05, 0.2, 0.05]
