"""The request state transitions around a plan, shared by the kernel's request table (kernel/daemon/llm.py) and the
scheduler simulator (tests/scheduler/simulator.py): a policy is tested against the bookkeeping the kernel really does.

    WAITING --start--> RUNNING --preempt--> PREEMPTED --start--> RUNNING ...   (DONE when the engine finishes it)

preempt covers both a planned preemption and one the engine made on its own (out of KV blocks for a decode): either
way the request queues again from that step and the scheduler decides when it resumes. An admission the engine refuses
for capacity (NoCapacity) is no transition: the request stays WAITING or PREEMPTED with its place in line unchanged.
"""

from __future__ import annotations

from typing import Protocol

from kernel.scheduler.base import ReqState


class Tracked(Protocol):
    state: ReqState
    waiting_since: int  # step it last entered WAITING/PREEMPTED: round robin's queue order, priority's aging
    slice_tokens: int  # tokens since it last started: round robin's quantum, the policies' min_slice


def start(request: Tracked) -> None:
    """The request was admitted or resumed into the engine's batch."""
    if request.state not in (ReqState.WAITING, ReqState.PREEMPTED):
        raise ValueError(f"cannot start a {request.state.value} request")
    request.state, request.slice_tokens = ReqState.RUNNING, 0


def preempt(request: Tracked, now: int) -> None:
    """The request left the batch at step now (its KV went to the arena, or is gone and will be recomputed)."""
    if request.state is not ReqState.RUNNING:
        raise ValueError(f"cannot preempt a {request.state.value} request")
    request.state, request.waiting_since = ReqState.PREEMPTED, now
