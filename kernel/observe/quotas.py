"""Token quotas per agent: a token bucket (tokens per minute) and a total, checked before an LLM call is queued.

Inputs: the limits in force for an agent (QuotaPolicy.for_agent: the kernel's defaults from `aiosd
--quota-tokens-per-minute` / `--quota-tokens-total`, 0 = off, lowered by what the agent asked for at hello, never
raised), the clock (injected: tests drive it), and per call the tokens it may cost: its prompt plus max_tokens.

admit(reserve) takes the reservation or raises QuotaRefused:
- total: used + reserved in flight + reserve > tokens_total → QUOTA, no retry-after (waiting does not help);
- per minute: the bucket (capacity tokens_per_minute, refilled at tokens_per_minute / 60 per second) must hold the
  reservation, or, for a call larger than the whole bucket, be full (it then goes into debt, paid back by the refill:
  such a call is slow to come back, never impossible) → BUSY with retry_after_s, the seconds until it does.
settle(reserved, used) charges what the call used (prompt tokens if it was admitted, plus the tokens it generated:
never more than reserved) and gives the rest back; the bucket never refills past its capacity and nothing goes below
zero in the totals.

What a quota has spent (tokens used, reserved in flight, the bucket's level) is a Spend, apart from its limits, so that
it can outlive a connection: kernel/observe/quota_book.py keeps the Spend of a quota an agent asked for under its
principal and name, and a later connection's Quota continues it under that connection's own limits (a level carried
over from a larger bucket is cut to this one's capacity at its next refill).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ipc.errors import ErrorCode


class QuotaRefused(Exception):
    def __init__(self, code: ErrorCode, message: str, retry_after_s: float | None):
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


@dataclass(frozen=True)
class QuotaPolicy:
    """The kernel's defaults (0 or None: no limit)."""

    tokens_per_minute: int = 0
    tokens_total: int = 0

    def for_agent(
        self,
        asked_per_minute: int | None,
        asked_total: int | None,
        clock: Callable[[], float] = time.monotonic,
        spend: Spend | None = None,
    ) -> Quota:
        per_minute, total = _lowest(self.tokens_per_minute, asked_per_minute), _lowest(self.tokens_total, asked_total)
        return Quota(per_minute, total, clock, spend)


def _lowest(default: int, asked: int | None) -> int | None:
    limits = [v for v in (default, asked) if v]
    return min(limits) if limits else None


@dataclass
class Spend:
    """What a quota has spent; shared by the Quotas of one holder's connections (kernel/observe/quota_book.py)."""

    updated: float  # clock seconds of the bucket's last refill
    level: float | None = None  # tokens the bucket holds; None: never filled yet (a bucket starts full)
    used: int = 0  # tokens charged so far
    reserved: int = 0  # tokens held by calls in flight
    kept: bool = False  # kept by the quota book: it outlives the connection


class Quota:
    def __init__(
        self,
        tokens_per_minute: int | None,
        tokens_total: int | None,
        clock: Callable[[], float] = time.monotonic,
        spend: Spend | None = None,
    ):
        self.tokens_per_minute, self.tokens_total, self.clock = tokens_per_minute, tokens_total, clock
        self.spend = spend if spend is not None else Spend(updated=clock())

    @property
    def used(self) -> int:
        return self.spend.used

    @property
    def reserved(self) -> int:
        return self.spend.reserved

    @property
    def limited(self) -> bool:
        return self.tokens_per_minute is not None or self.tokens_total is not None

    def admit(self, reserve: int) -> None:
        spend = self.spend
        if self.tokens_total is not None and spend.used + spend.reserved + reserve > self.tokens_total:
            left = max(0, self.tokens_total - spend.used - spend.reserved)
            raise QuotaRefused(
                ErrorCode.QUOTA,
                f"this call may use {reserve} tokens (prompt + max_tokens) and the agent has {left} left of its "
                f"total quota of {self.tokens_total}",
                None,
            )
        if self.tokens_per_minute is not None:
            self._refill()
            need = min(reserve, self.tokens_per_minute)
            if spend.level < need:
                wait = (need - spend.level) * 60.0 / self.tokens_per_minute
                raise QuotaRefused(
                    ErrorCode.BUSY,
                    f"this call may use {reserve} tokens (prompt + max_tokens) and the agent's bucket holds "
                    f"{max(0, int(spend.level))} of its {self.tokens_per_minute} tokens per minute: retry after "
                    f"{wait:.1f} s",
                    wait,
                )
            spend.level -= reserve
        spend.reserved += reserve

    def settle(self, reserved: int, used: int) -> None:
        spend = self.spend
        used = max(0, min(used, reserved))
        spend.reserved = max(0, spend.reserved - reserved)
        spend.used += used
        if self.tokens_per_minute is not None:
            self._refill()
            spend.level = min(float(self.tokens_per_minute), spend.level + (reserved - used))

    def left(self) -> dict:
        minute_left = None
        if self.tokens_per_minute is not None:
            self._refill()
            minute_left = max(0, int(self.spend.level))
        used = self.spend.used + self.spend.reserved
        total_left = None if self.tokens_total is None else max(0, self.tokens_total - used)
        return {
            "tokens_per_minute": self.tokens_per_minute,
            "tokens_total": self.tokens_total,
            "minute_left": minute_left,
            "total_left": total_left,
            "used": self.spend.used,
            "kept": self.spend.kept,
        }

    def _refill(self) -> None:
        spend, now = self.spend, self.clock()
        capacity = float(self.tokens_per_minute)
        if spend.level is None:  # a new bucket, or one only a total quota used so far: full
            spend.level = capacity
        elapsed = max(0.0, now - spend.updated)
        spend.updated = now
        spend.level = min(capacity, spend.level + elapsed * self.tokens_per_minute / 60.0)
