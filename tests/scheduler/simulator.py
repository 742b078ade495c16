"""A step-by-step simulation of the kernel's request table around a policy: arrivals, plan, apply, one token each.

It stands in for no feature: it is the bookkeeping the kernel loop does (kernel steps, slices, waiting times, agent
service, the state transitions of kernel/scheduler/transitions.py) with the engine reduced to "every running request
gains one token per step", allocating KV the way the engine does: blocks of block_size tokens, enough at admission for
the tokens so far, one more when a decode crosses a block boundary, the youngest sequence preempted when a decode finds
none free. Like the kernel, it learns of those engine-side preemptions at the start of the next step and the policy
re-admits them. There is no prefix cache: a request's blocks are its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from kernel.engine.core.interface import Capacity
from kernel.scheduler import transitions
from kernel.scheduler.base import ReqState, RequestView, Scheduler


def blocks_for(n_tokens: int, block_size: int) -> int:
    return -(-n_tokens // block_size)


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
    blocks: int = 0  # KV blocks it holds in the engine
    admission: int = 0  # engine admission order: the youngest is preempted first

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


@dataclass
class Simulation:
    scheduler: Scheduler
    max_batch: int
    total_slots: int = 1 << 20
    block_size: int = 16
    now: int = 0
    requests: dict[str, SimRequest] = field(default_factory=dict)
    agent_service: dict[str, int] = field(default_factory=dict)
    program_start: dict[str, int] = field(default_factory=dict)  # agent -> arrival of its first call (plas)
    preemptions: int = 0  # planned by the policy
    engine_preemptions: int = 0  # made by the engine, out of blocks for a decode
    trace: list[list[str]] = field(default_factory=list)  # running ids after each plan
    _admissions: itertools.count = field(default_factory=itertools.count)
    _engine_preempted: list[str] = field(default_factory=list)  # not yet taken over by the kernel

    @property
    def total_blocks(self) -> int:
        return self.total_slots // self.block_size

    def submit(self, req: SimRequest) -> None:
        req.waiting_since = req.arrival
        self.requests[req.req_id] = req
        self.program_start[req.agent_id] = min(req.arrival, self.program_start.get(req.agent_id, req.arrival))

    def view(self, req: SimRequest) -> RequestView:
        # What the kernel asks the engine: blocks held if running, else blocks its admission and first decode take.
        kv_blocks = req.blocks if req.state is ReqState.RUNNING else blocks_for(req.tokens + 1, self.block_size)
        return RequestView(
            req_id=req.req_id,
            agent_id=req.agent_id,
            state=req.state,
            priority=req.priority,
            arrival=req.arrival,
            prompt_tokens=req.prompt_tokens,
            max_tokens=req.max_tokens,
            output_tokens=req.output_tokens,
            slice_tokens=req.slice_tokens,
            waiting_since=req.waiting_since,
            agent_service=self.agent_service.get(req.agent_id, 0),
            predicted_tokens=req.predicted_tokens,
            kv_blocks=kv_blocks,
            program_arrival=self.program_start.get(req.agent_id),
        )

    def _in(self, *states: ReqState) -> list[SimRequest]:
        return [r for r in self.requests.values() if r.state in states and r.arrival <= self.now]

    def _free_blocks(self) -> int:
        return self.total_blocks - sum(r.blocks for r in self.requests.values())

    def capacity(self) -> Capacity:
        return Capacity(
            free_blocks=self._free_blocks(),
            total_blocks=self.total_blocks,
            block_size=self.block_size,
            running=len(self._in(ReqState.RUNNING)),
            max_batch=self.max_batch,
            max_context=self.total_slots,
        )

    def step(self) -> None:
        for req_id in self._engine_preempted:  # what the kernel's schedule() does first
            transitions.preempt(self.requests[req_id], self.now)
        self._engine_preempted.clear()
        running = self._in(ReqState.RUNNING)
        waiting = self._in(ReqState.WAITING, ReqState.PREEMPTED)
        capacity = self.capacity()
        plan = self.scheduler.plan([self.view(r) for r in running], [self.view(r) for r in waiting], capacity, self.now)
        running_ids, waiting_ids = {r.req_id for r in running}, {r.req_id for r in waiting}
        assert set(plan.preempt) <= running_ids and set(plan.admit) <= waiting_ids, plan
        for req_id in plan.preempt:
            req = self.requests[req_id]
            req.blocks = 0
            transitions.preempt(req, self.now)
            self.preemptions += 1
        admitted = [self.requests[req_id] for req_id in plan.admit]
        # Capacity respected: what the plan admits fits the batch, and the blocks that are free once its preemptions
        # are done, next tokens included, so no admission the plan makes is refused by the engine.
        assert len(running) - len(plan.preempt) + len(admitted) <= self.max_batch, plan
        assert sum(blocks_for(r.tokens + 1, self.block_size) for r in admitted) <= self._free_blocks(), plan
        for req in admitted:
            if req.first_run_at is None:
                req.first_run_at = self.now
                self.agent_service[req.agent_id] = self.agent_service.get(req.agent_id, 0) + req.prompt_tokens
            req.blocks, req.admission = blocks_for(req.tokens, self.block_size), next(self._admissions)
            transitions.start(req)
        batch = sorted(self._in(ReqState.RUNNING), key=lambda r: r.admission)
        self.trace.append(sorted(r.req_id for r in batch))
        for req in batch:
            if req.blocks == 0 or not self._decode_block(req, batch):
                continue  # the engine preempted it this step
            req.output_tokens += 1
            req.slice_tokens += 1
            self.agent_service[req.agent_id] = self.agent_service.get(req.agent_id, 0) + 1
            if req.output_tokens >= req.max_tokens:
                req.state, req.finished_at, req.blocks = ReqState.DONE, self.now, 0
        self.now += 1

    def _decode_block(self, req: SimRequest, batch: list[SimRequest]) -> bool:
        """The engine's rule: a block for the token req computes now, preempting the youngest while none is free."""
        while req.blocks * self.block_size < req.tokens:
            if self._free_blocks() > 0:
                req.blocks += 1
                continue
            victim = max((r for r in batch if r.blocks > 0), key=lambda r: r.admission)
            victim.blocks = 0
            self._engine_preempted.append(victim.req_id)
            self.engine_preemptions += 1
            if victim is req:
                return False
        return True

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
