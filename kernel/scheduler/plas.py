"""Program-level least attained service (Autellix's PLAS) with gradual aging: a bounded wait for every program.

An agent's program is all its LLM calls, tool gaps included. Its attained service (RequestView.agent_service: prompt and
output tokens served over every call it made, never reset by a tool gap) picks a queue: level 0 below first_level
tokens, one level up each time the service is multiplied by growth, up to levels - 1. Lower levels run first, so a
short program finishes before a long one has its next call served, and a long program cannot hold the engine.

Differences from `las` (kernel/scheduler/las.py), which ranks by the same service:
- Within a level, programs run in the order they started (RequestView.program_arrival), not calls: a program back
  from a tool does not go behind programs that began after it. Without the program's start, the call's arrival is used.
- Aging is gradual: a waiting call's level drops by one for every aging_steps it has waited, so after at most
  (levels - 1) x aging_steps it is at level 0, where only calls of programs that started before it precede it; every
  running call above level 0 gives way to it. That bounds its wait by the work ahead of it, not by the arrivals after
  it (a stream of fresh programs cannot starve an old one), while a long program in a short wait keeps its rank.
- A running call is ranked by its program's plain level (its aging ended when it was admitted); it gives way only to a
  waiting call of a strictly lower effective level, once it has had min_slice tokens: no swaps inside a level.
  min_slice defaults to 256 tokens: an agent's tool-call step (tens of tokens) is never preempted, a long decode (a
  patch, a report) still is. Preempting short calls to favour fresh programs cost 6-19% of mean agent completion in
  the agentic replay (bench/agentic.py, batch 2-4: 0.81-0.94x FIFO with min_slice 64, 1.00-1.02x with no preemption):
  a preempted call's program waits again while the newcomer's, of about the same size, gains what it loses.
"""

from __future__ import annotations

from kernel.engine.core.interface import Capacity
from kernel.scheduler.base import Plan, RequestView
from kernel.scheduler.levels import service_level
from kernel.scheduler.preemption import plan_preemptive


class ProgramLASScheduler:
    name = "plas"

    def __init__(
        self, first_level: int = 256, growth: int = 4, levels: int = 6, aging_steps: int = 256, min_slice: int = 256
    ):
        for option, value, least in (
            ("first_level", first_level, 1),
            ("growth", growth, 2),
            ("levels", levels, 1),
            ("aging_steps", aging_steps, 1),
            ("min_slice", min_slice, 0),
        ):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"plas {option} must be an integer >= {least}, got {value!r}")
        self.first_level, self.growth, self.levels = first_level, growth, levels
        self.aging_steps, self.min_slice = aging_steps, min_slice

    def level(self, service: int) -> int:
        """The queue level of a program's service (kernel/scheduler/levels.py)."""
        return service_level(service, self.first_level, self.growth, self.levels)

    def effective_level(self, view: RequestView, now: int) -> int:
        """A waiting call's level less one per aging_steps waited (never below 0)."""
        waited = max(0, now - view.waiting_since)
        return max(0, self.level(view.agent_service) - waited // self.aging_steps)

    def max_aging_wait(self) -> int:
        """Steps after which any waiting call is at level 0 (the starvation bound's first term)."""
        return (self.levels - 1) * self.aging_steps

    @staticmethod
    def _started(view: RequestView) -> int:
        return view.arrival if view.program_arrival is None else view.program_arrival

    def plan(self, running: list[RequestView], waiting: list[RequestView], capacity: Capacity, now: int) -> Plan:
        queue = sorted(waiting, key=lambda v: (self.effective_level(v, now), self._started(v), v.arrival, v.req_id))
        victims = sorted(running, key=lambda v: (-self.level(v.agent_service), -self._started(v), -v.arrival, v.req_id))

        def may_preempt(candidate: RequestView, victim: RequestView) -> bool:
            return victim.slice_tokens >= self.min_slice and self.effective_level(candidate, now) < self.level(
                victim.agent_service
            )

        return plan_preemptive(queue, victims, capacity, may_preempt)
