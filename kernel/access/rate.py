"""Token buckets by key: how often a principal (or an owner) may do something, e.g. change shares or be audited for a
denial. Pure bookkeeping with an injectable clock; callers decide what refusal means (busy, a suppressed record)."""

from __future__ import annotations

import time

MAX_RATE_KEYS = 4096  # buckets remembered before full (idle) ones are forgotten


class RateLimiter:
    """Token buckets by key (rate per second, burst). A full bucket is the same as none, so when more than max_keys
    are held the full ones are forgotten: memory stays bounded by the keys active within burst / rate seconds."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_RATE_KEYS, clock=time.monotonic):
        self.rate, self.burst, self.max_keys, self._clock = rate, burst, max_keys, clock
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key) -> bool:
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self.max_keys:
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        for key, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._buckets[key]
