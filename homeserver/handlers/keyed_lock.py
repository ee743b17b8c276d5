"""One lock per key (a room, a user), created on first use and dropped once nobody holds or awaits it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from twisted.internet.defer import DeferredLock


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[str, DeferredLock] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, DeferredLock())
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(key, None)
