"""Program-aware least attained service, after Autellix's PLAS.

An agent's program makes many LLM calls; what counts is the service the whole program has had (agent_service: prompt
and output tokens over all its calls), not the current call's. Programs that have had little run first, so short
programs finish fast and a long one cannot hog the engine. Service is discretised into queues whose thresholds grow
geometrically (first_level, first_level x growth, ...): requests of the same level run first come first served and never
preempt each other, so small differences in service do not cause swaps. A waiting request preempts a running one of a
strictly higher level (once it has had min_slice tokens). A request waiting for more than starvation_steps is promoted
to
the top level, as Autellix does, so old programs are not starved by a stream of fresh ones.
"""

from __future__ import annotations

from kernel.engine.core.interface import Capacity
from kernel.scheduler.base import Plan, RequestView
from kernel.scheduler.levels import service_level
from kernel.scheduler.preemption import plan_preemptive


class LeastAttainedServiceScheduler:
    name = "las"

    def __init__(
        self, first_level: int = 256, growth: int = 4, levels: int = 8, starvation_steps: int = 2048, min_slice: int = 8
    ):
        for option, value, least in (
            ("first_level", first_level, 1),
            ("growth", growth, 2),
            ("levels", levels, 1),
            ("starvation_steps", starvation_steps, 1),
            ("min_slice", min_slice, 0),
        ):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"las {option} must be an integer >= {least}, got {value!r}")
        self.first_level, self.growth, self.levels = first_level, growth, levels
        self.starvation_steps, self.min_slice = starvation_steps, min_slice

    def level(self, service: int) -> int:
        """The queue level of a program's service (kernel/scheduler/levels.py)."""
        return service_level(service, self.first_level, self.growth, self.levels)

    def _waiting_level(self, view: RequestView, now: int) -> int:
        return 0 if now - view.waiting_since >= self.starvation_steps else self.level(view.agent_service)

    def plan(self, running: list[RequestView], waiting: list[RequestView], capacity: Capacity, now: int) -> Plan:
        queue = sorted(waiting, key=lambda v: (self._waiting_level(v, now), v.arrival, v.req_id))
        victims = sorted(running, key=lambda v: (-self.level(v.agent_service), -v.arrival, v.req_id))

        def may_preempt(candidate: RequestView, victim: RequestView) -> bool:
            return victim.slice_tokens >= self.min_slice and self._waiting_level(candidate, now) < self.level(
                victim.agent_service
            )

        return plan_preemptive(queue, victims, capacity, may_preempt)
