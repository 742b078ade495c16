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
        self, asked_per_minute: int | None, asked_total: int | None, clock: Callable[[], float] = time.monotonic
    ) -> Quota:
        return Quota(_lowest(self.tokens_per_minute, asked_per_minute), _lowest(self.tokens_total, asked_total), clock)


def _lowest(default: int, asked: int | None) -> int | None:
    limits = [v for v in (default, asked) if v]
    return min(limits) if limits else None


class Quota:
    def __init__(
        self, tokens_per_minute: int | None, tokens_total: int | None, clock: Callable[[], float] = time.monotonic
    ):
        self.tokens_per_minute, self.tokens_total, self.clock = tokens_per_minute, tokens_total, clock
        self.level = float(tokens_per_minute or 0)  # the bucket starts full
        self.updated = clock()
        self.used = 0  # tokens charged so far
        self.reserved = 0  # tokens held by calls in flight

    @property
    def limited(self) -> bool:
        return self.tokens_per_minute is not None or self.tokens_total is not None

    def admit(self, reserve: int) -> None:
        if self.tokens_total is not None and self.used + self.reserved + reserve > self.tokens_total:
            left = max(0, self.tokens_total - self.used - self.reserved)
            raise QuotaRefused(
                ErrorCode.QUOTA,
                f"this call may use {reserve} tokens (prompt + max_tokens) and the agent has {left} left of its "
                f"total quota of {self.tokens_total}",
                None,
            )
        if self.tokens_per_minute is not None:
            self._refill()
            need = min(reserve, self.tokens_per_minute)
            if self.level < need:
                wait = (need - self.level) * 60.0 / self.tokens_per_minute
                raise QuotaRefused(
                    ErrorCode.BUSY,
                    f"this call may use {reserve} tokens (prompt + max_tokens) and the agent's bucket holds "
                    f"{max(0, int(self.level))} of its {self.tokens_per_minute} tokens per minute: retry after "
                    f"{wait:.1f} s",
                    wait,
                )
            self.level -= reserve
        self.reserved += reserve

    def settle(self, reserved: int, used: int) -> None:
        used = max(0, min(used, reserved))
        self.reserved = max(0, self.reserved - reserved)
        self.used += used
        if self.tokens_per_minute is not None:
            self._refill()
            self.level = min(float(self.tokens_per_minute), self.level + (reserved - used))

    def left(self) -> dict:
        minute_left = None
        if self.tokens_per_minute is not None:
            self._refill()
            minute_left = max(0, int(self.level))
        total_left = None if self.tokens_total is None else max(0, self.tokens_total - self.used - self.reserved)
        return {
            "tokens_per_minute": self.tokens_per_minute,
            "tokens_total": self.tokens_total,
            "minute_left": minute_left,
            "total_left": total_left,
        }

    def _refill(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        self.level = min(float(self.tokens_per_minute), self.level + elapsed * self.tokens_per_minute / 60.0)
