"""Token-bucket rate limits keyed by client address or account, held in memory."""

import time
from collections.abc import Callable

from homeserver.core.errors import LimitExceeded

MAX_KEYS = 100_000  # beyond this, full buckets are forgotten: they carry no information


class RateLimiter:
    def __init__(self, per_second: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.per_second)

    def check(self, key: str) -> None:
        """Raise 429 M_LIMIT_EXCEEDED if `key` has no budget left; otherwise leave it untouched."""
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1:
            wait = (1 - tokens) / self.per_second if self.per_second > 0 else 3600.0
            raise LimitExceeded(int(wait * 1000) + 1)

    def record(self, key: str) -> None:
        """Spend one token for `key`."""
        now = self._clock()
        self._buckets[key] = (self._tokens(key, now) - 1, now)
        if len(self._buckets) > MAX_KEYS:
            self._forget_full(now)

    def hit(self, key: str) -> None:
        self.check(key)
        self.record(key)

    def _forget_full(self, now: float) -> None:
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.burst]:
            del self._buckets[key]
