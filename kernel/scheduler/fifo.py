"""First come, first served: admit in arrival order while capacity lasts; never preempt."""

from __future__ import annotations

from kernel.engine.core.interface import Capacity
from kernel.scheduler.base import Plan, RequestView, fits_in_order


class FifoScheduler:
    name = "fifo"

    def plan(self, running: list[RequestView], waiting: list[RequestView], capacity: Capacity, now: int) -> Plan:
        queue = sorted(waiting, key=lambda v: (v.arrival, v.req_id))
        return Plan(admit=fits_in_order(queue, capacity))
