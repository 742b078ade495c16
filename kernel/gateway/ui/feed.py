"""SnapshotFeed: the kernel's `kernel.top` snapshot, fetched at most once per interval however many watch it.

Inputs: fetch, a coroutine function returning the snapshot (a JSON-able dict), and interval_s. Outputs: Frame, the
snapshot (or the error that stood in its place) with a version number that grows by one per fetch and the wall time
it was taken.

Invariants: fetches never overlap (one lock) and a new one starts only when the latest frame is interval_s old, so
every page, event stream and poller of one gateway together cost the kernel one call per interval; invalidate()
(after an approval, say) lets the next reader fetch at once. A failed fetch is a frame too, carrying the error's
text, so watchers learn the kernel is gone and the kernel is not hammered while it is. updates() yields each new
frame once, waking when the latest one is due to be replaced; it runs on the caller's task (no background tasks to
leak). Runs on one event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sdk.errors import KernelError


@dataclass(frozen=True)
class Frame:
    version: int
    at: float  # wall-clock time of the fetch (seconds since the epoch)
    top: dict | None  # the kernel's snapshot, None when the fetch failed
    error: str | None = None
    taken: float = 0.0  # the monotonic time of the fetch, for the interval

    def as_json(self) -> dict:
        return {"version": self.version, "at": self.at, "error": self.error, "top": self.top}


class SnapshotFeed:
    def __init__(
        self,
        fetch: Callable[[], Awaitable[dict]],
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not interval_s > 0:
            raise ValueError(f"the dashboard's refresh interval must be positive, got {interval_s!r}")
        self.interval_s = interval_s
        self._fetch, self._clock = fetch, clock
        self._lock = asyncio.Lock()
        self._latest: Frame | None = None
        self.fetches = 0  # kernel calls made: what the one-call-per-interval promise is measured by

    async def current(self) -> Frame:
        """The latest frame, fetched first if it is interval_s old (or there is none, or it was invalidated)."""
        async with self._lock:
            latest = self._latest
            if latest is None or self._clock() - latest.taken >= self.interval_s:
                latest = self._latest = await self._take(0 if latest is None else latest.version)
            return latest

    def invalidate(self) -> None:
        """The kernel's state changed because of us: the next reader fetches at once."""
        if self._latest is not None:
            latest = self._latest
            self._latest = Frame(latest.version, latest.at, latest.top, latest.error, taken=-float("inf"))

    async def updates(self) -> AsyncIterator[Frame]:
        """Each new frame once, as it is fetched (the first one at once)."""
        seen = None
        while True:
            frame = await self.current()
            if frame.version != seen:
                seen = frame.version
                yield frame
            due = frame.taken + self.interval_s - self._clock()
            await asyncio.sleep(min(max(due, 0.0), self.interval_s))

    async def _take(self, previous: int) -> Frame:
        self.fetches += 1
        at, taken = time.time(), self._clock()
        try:
            top = await self._fetch()
        except KernelError as error:
            return Frame(previous + 1, at, None, f"{error.code}: {error.message}", taken)
        except OSError as error:  # the admin token unreadable, the socket gone
            return Frame(previous + 1, at, None, f"unavailable: {error}", taken)
        return Frame(previous + 1, at, top, None, taken)
