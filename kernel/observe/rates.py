"""Recent rates for the operator: tokens generated per second and the median time to first token, over a window.

Inputs: sample(tokens_generated), called by the loop every iteration with the kernel's running total (it keeps at
most one sample per SAMPLE_EVERY_S, so the cost per iteration is a clock read and a comparison); ttft(seconds) for
each call that finished with a first token. Outputs: snapshot() → {tokens_per_s, window_s, ttft_p50_s}. Bounded:
at most window_s / SAMPLE_EVERY_S + 2 samples and MAX_TTFTS times are kept. Loop thread only.
"""

from __future__ import annotations

import collections
import statistics
import time
from collections.abc import Callable

SAMPLE_EVERY_S = 0.5
DEFAULT_WINDOW_S = 10.0
MAX_TTFTS = 1024


class Rates:
    def __init__(self, window_s: float = DEFAULT_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window_s, self.clock = window_s, clock
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._ttfts: collections.deque[tuple[float, float]] = collections.deque(maxlen=MAX_TTFTS)

    def sample(self, tokens_generated: int) -> None:
        now = self.clock()
        if self._samples and now - self._samples[-1][0] < SAMPLE_EVERY_S:
            return
        self._samples.append((now, tokens_generated))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()  # keep one sample at or past the window's start

    def ttft(self, seconds: float) -> None:
        self._ttfts.append((self.clock(), seconds))

    def snapshot(self, tokens_generated: int) -> dict:
        now = self.clock()
        rate = 0.0
        if self._samples:
            since, base = self._samples[0]
            if now - since > 0:
                rate = (tokens_generated - base) / (now - since)
        recent = [s for at, s in self._ttfts if now - at <= self.window_s]
        return {
            "tokens_per_s": round(max(0.0, rate), 3),
            "window_s": self.window_s,
            "ttft_p50_s": statistics.median(recent) if recent else None,
        }
