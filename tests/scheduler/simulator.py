"""A step-by-step simulation of the kernel's request table around a policy: arrivals, plan, apply, one token each.

It stands in for no feature: it is the bookkeeping the kernel loop does (kernel steps, slices, waiting times, agent
service) with the engine reduced to "every running request gains one token per step", enough to test policies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kernel.engine.interface import Capacity
from kernel.scheduler.base import ReqState, RequestView, Scheduler


@dataclass
class SimRequest:
    req_id: str
    agent_id: str
    arrival: int
    max_tokens: int
    prompt_tokens: int = 8
    priority: int = 0
    predicted_tokens: int | None = None
    state: ReqState = ReqState.WAITING
    output_tokens: int = 0
    slice_tokens: int = 0
    waiting_since: int = 0
    finished_at: int | None = None
    first_run_at: int | None = None


@dataclass
class Simulation:
    scheduler: Scheduler
    max_batch: int
    total_slots: int = 1 << 20
    now: int = 0
    requests: dict[str, SimRequest] = field(default_factory=dict)
    agent_service: dict[str, int] = field(default_factory=dict)
    preemptions: int = 0
    trace: list[list[str]] = field(default_factory=list)       # running ids after each plan

    def submit(self, req: SimRequest) -> None:
        req.waiting_since = req.arrival
        self.requests[req.req_id] = req

    def view(self, req: SimRequest) -> RequestView:
        return RequestView(req_id=req.req_id, agent_id=req.agent_id, state=req.state, priority=req.priority,
                           arrival=req.arrival, prompt_tokens=req.prompt_tokens, max_tokens=req.max_tokens,
                           output_tokens=req.output_tokens, slice_tokens=req.slice_tokens,
                           waiting_since=req.waiting_since, agent_service=self.agent_service.get(req.agent_id, 0),
                           predicted_tokens=req.predicted_tokens)

    def _in(self, *states: ReqState) -> list[SimRequest]:
        return [r for r in self.requests.values() if r.state in states and r.arrival <= self.now]

    def capacity(self) -> Capacity:
        running = self._in(ReqState.RUNNING)
        used = sum(r.prompt_tokens + r.output_tokens + 1 for r in running)
        return Capacity(free_slots=max(0, self.total_slots - used), total_slots=self.total_slots,
                        running=len(running), max_batch=self.max_batch, max_context=self.total_slots)

    def step(self) -> None:
        running = self._in(ReqState.RUNNING)
        waiting = self._in(ReqState.WAITING, ReqState.PREEMPTED)
        capacity = self.capacity()
        plan = self.scheduler.plan([self.view(r) for r in running], [self.view(r) for r in waiting], capacity,
                                   self.now)
        running_ids, waiting_ids = {r.req_id for r in running}, {r.req_id for r in waiting}
        assert set(plan.preempt) <= running_ids and set(plan.admit) <= waiting_ids, plan
        freed = 0
        for req_id in plan.preempt:
            req = self.requests[req_id]
            freed += req.prompt_tokens + req.output_tokens + 1
            req.state, req.waiting_since = ReqState.PREEMPTED, self.now
            self.preemptions += 1
        admitted = [self.requests[req_id] for req_id in plan.admit]
        # Capacity respected: what the plan admits fits what was free plus what its preemptions freed.
        assert len(running) - len(plan.preempt) + len(admitted) <= self.max_batch, plan
        assert sum(r.prompt_tokens + r.output_tokens + 1 for r in admitted) <= capacity.free_slots + freed, plan
        for req in admitted:
            if req.first_run_at is None:
                req.first_run_at = self.now
                self.agent_service[req.agent_id] = self.agent_service.get(req.agent_id, 0) + req.prompt_tokens
            req.state, req.slice_tokens = ReqState.RUNNING, 0
        batch = self._in(ReqState.RUNNING)
        self.trace.append(sorted(r.req_id for r in batch))
        for req in batch:
            req.output_tokens += 1
            req.slice_tokens += 1
            self.agent_service[req.agent_id] = self.agent_service.get(req.agent_id, 0) + 1
            if req.output_tokens >= req.max_tokens:
                req.state, req.finished_at = ReqState.DONE, self.now
        self.now += 1

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def run_until_done(self, limit: int = 100_000) -> None:
        while any(r.state is not ReqState.DONE for r in self.requests.values()):
            assert self.now < limit, "simulation did not finish"
            self.step()

    def completion_order(self) -> list[str]:
        done = [r for r in self.requests.values() if r.finished_at is not None]
        return [r.req_id for r in sorted(done, key=lambda r: (r.finished_at, r.req_id))]
