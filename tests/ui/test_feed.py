"""SnapshotFeed: however many readers, one fetch per interval; a failed fetch is a frame that says so; invalidate()
lets the next reader fetch at once; updates() yields each frame once. The clock is injected, so nothing here
depends on the machine's speed."""

import asyncio

import pytest

from kernel.gateway.ui.feed import SnapshotFeed
from sdk.errors import KernelError


class Source:
    """What the feed fetches: counts its calls, and fails while told to."""

    def __init__(self):
        self.calls, self.failing = 0, False

    async def __call__(self) -> dict:
        self.calls += 1
        await asyncio.sleep(0)  # let other readers pile up behind the lock
        if self.failing:
            raise KernelError("disconnected", "the kernel went away")
        return {"steps": self.calls}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(coroutine):
    return asyncio.run(coroutine)


def test_many_readers_in_one_interval_cost_one_fetch():
    async def scenario():
        source, clock = Source(), Clock()
        feed = SnapshotFeed(source, interval_s=1.0, clock=clock)
        frames = await asyncio.gather(*(feed.current() for _ in range(200)))
        assert source.calls == 1 and {f.version for f in frames} == {1}
        clock.now += 0.999
        await asyncio.gather(*(feed.current() for _ in range(50)))
        assert source.calls == 1
        clock.now += 0.001
        frames = await asyncio.gather(*(feed.current() for _ in range(50)))
        assert source.calls == 2 and {f.top["steps"] for f in frames} == {2}

    run(scenario())


def test_a_failed_fetch_is_a_frame_and_is_not_retried_within_the_interval():
    async def scenario():
        source, clock = Source(), Clock()
        feed = SnapshotFeed(source, interval_s=1.0, clock=clock)
        source.failing = True
        frame = await feed.current()
        assert frame.top is None and frame.error.startswith("disconnected")
        await feed.current()
        assert source.calls == 1
        source.failing, clock.now = False, clock.now + 1.0
        frame = await feed.current()
        assert frame.error is None and frame.version == 2

    run(scenario())


def test_invalidate_lets_the_next_reader_fetch_at_once():
    async def scenario():
        source = Source()
        feed = SnapshotFeed(source, interval_s=3600.0, clock=Clock())
        first = await feed.current()
        feed.invalidate()
        second = await feed.current()
        assert source.calls == 2 and second.version == first.version + 1

    run(scenario())


def test_updates_yield_each_frame_once_in_order():
    async def scenario():
        feed = SnapshotFeed(Source(), interval_s=0.01)
        seen = []
        async for frame in feed.updates():
            seen.append(frame.version)
            if len(seen) == 5:
                break
        assert seen == sorted(set(seen)) and len(seen) == 5

    run(scenario())


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError):
        SnapshotFeed(Source(), interval_s=0)
