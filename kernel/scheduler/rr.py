"""Round robin: each running request gets a quantum of generated tokens; once it has used it and someone is waiting,
it is preempted (its KV goes to the arena) and rejoins the back of the queue.

The queue is ordered by when each request last started waiting: a preempted request's waiting_since is the step it
was paused, so it lines up behind everyone already waiting. Only requests past their quantum give way, longest slice
first, so a fresh admission always runs a full quantum.
"""

from __future__ import annotations

from kernel.engine.core.interface import Capacity
from kernel.scheduler.base import Plan, RequestView
from kernel.scheduler.preemption import plan_preemptive


class RoundRobinScheduler:
    name = "rr"

    def __init__(self, quantum: int = 32):
        if not isinstance(quantum, int) or quantum <= 0:
            raise ValueError(f"rr quantum must be a positive number of tokens, got {quantum!r}")
        self.quantum = quantum

    def plan(self, running: list[RequestView], waiting: list[RequestView], capacity: Capacity, now: int) -> Plan:
        queue = sorted(waiting, key=lambda v: (v.waiting_since, v.arrival, v.req_id))
        victims = sorted(running, key=lambda v: (-v.slice_tokens, v.arrival, v.req_id))
        return plan_preemptive(queue, victims, capacity, lambda _, victim: victim.slice_tokens >= self.quantum)
