"""Preemptive priority with aging.

A request's priority (RequestView.priority: its agent's plus its own hint) is raised while it waits by
(now - waiting_since) / aging_steps, so a low-priority request under a steady high-priority load eventually outranks it
and runs: nothing starves. A waiting request displaces a running one only when capacity is short and it outranks it by
at least `margin`, and only once the running one has had `min_slice` tokens since it was admitted: without these two a
pair of requests of close priority would swap on every step. A running request is ranked by its plain priority (its
aging ended when it was admitted), so an aged request that won its place keeps it for at least min_slice tokens, then
may lose it again: it advances by at least min_slice tokens per aging period.
"""

from __future__ import annotations

from kernel.engine.core.interface import Capacity
from kernel.scheduler.base import Plan, RequestView
from kernel.scheduler.preemption import plan_preemptive


class PriorityScheduler:
    name = "priority"

    def __init__(self, aging_steps: int = 64, margin: float = 1.0, min_slice: int = 8):
        if not isinstance(aging_steps, int) or aging_steps <= 0:
            raise ValueError(f"priority aging_steps must be a positive number of steps, got {aging_steps!r}")
        if not margin > 0:
            raise ValueError(f"priority margin must be positive, got {margin!r}")
        if not isinstance(min_slice, int) or min_slice < 0:
            raise ValueError(f"priority min_slice must be a non-negative number of tokens, got {min_slice!r}")
        self.aging_steps, self.margin, self.min_slice = aging_steps, margin, min_slice

    def effective(self, view: RequestView, now: int) -> float:
        return view.priority + max(0, now - view.waiting_since) / self.aging_steps

    def plan(self, running: list[RequestView], waiting: list[RequestView], capacity: Capacity, now: int) -> Plan:
        queue = sorted(waiting, key=lambda v: (-self.effective(v, now), v.arrival, v.req_id))
        victims = sorted(running, key=lambda v: (v.priority, -v.arrival, v.req_id))

        def may_preempt(candidate: RequestView, victim: RequestView) -> bool:
            return (
                victim.slice_tokens >= self.min_slice
                and self.effective(candidate, now) >= victim.priority + self.margin
            )

        return plan_preemptive(queue, victims, capacity, may_preempt)
