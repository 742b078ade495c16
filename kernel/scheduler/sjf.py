"""Shortest job first, preemptive (shortest remaining processing time).

A job's length is its predicted output length when the kernel has one, else its requested max_tokens; its remaining
work is that minus the tokens it has generated. The shortest remaining job waiting goes first, and displaces a running
job when capacity is short and its remaining work is at most `ratio` times the running job's (default: half), and the
running one has had `min_slice` tokens since admission: two jobs of similar length do not swap back and forth.
Long jobs can wait as long as shorter ones keep arriving: that is SJF's trade, use priority or las to bound it.
"""

from __future__ import annotations

from kernel.engine.core.interface import Capacity
from kernel.scheduler.base import Plan, RequestView
from kernel.scheduler.preemption import plan_preemptive


def remaining_tokens(view: RequestView) -> int:
    length = view.predicted_tokens if view.predicted_tokens is not None else view.max_tokens
    return max(0, length - view.output_tokens)


class ShortestJobScheduler:
    name = "sjf"

    def __init__(self, ratio: float = 0.5, min_slice: int = 8):
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"sjf ratio must be in (0, 1), got {ratio!r}")
        if not isinstance(min_slice, int) or min_slice < 0:
            raise ValueError(f"sjf min_slice must be a non-negative number of tokens, got {min_slice!r}")
        self.ratio, self.min_slice = ratio, min_slice

    def plan(self, running: list[RequestView], waiting: list[RequestView], capacity: Capacity, now: int) -> Plan:
        queue = sorted(waiting, key=lambda v: (remaining_tokens(v), v.arrival, v.req_id))
        victims = sorted(running, key=lambda v: (-remaining_tokens(v), v.arrival, v.req_id))

        def may_preempt(candidate: RequestView, victim: RequestView) -> bool:
            return victim.slice_tokens >= self.min_slice and remaining_tokens(
                candidate
            ) <= self.ratio * remaining_tokens(victim)

        return plan_preemptive(queue, victims, capacity, may_preempt)
