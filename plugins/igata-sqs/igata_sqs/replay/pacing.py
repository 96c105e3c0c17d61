"""Pacing for ``--rate``: a token bucket."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """At most ``rate`` tokens a second, in bursts of at most ``capacity``.

    The bucket starts with one token, so moving n messages takes at least
    ``(n - 1) / rate`` seconds, from the first message on.
    """

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.capacity = max(1, capacity)
        self._clock = clock
        self._tokens = 1.0
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, count: int, pause: Callable[[float], bool]) -> bool:
        """Take ``count`` tokens, waiting through ``pause(seconds)`` (False: give up)."""
        count = min(count, self.capacity)
        while True:
            self._refill()
            if self._tokens >= count:
                self._tokens -= count
                return True
            if not pause((count - self._tokens) / self.rate):
                return False
