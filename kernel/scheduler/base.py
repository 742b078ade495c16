"""The scheduler interface. Policies decide; the kernel loop and the context manager carry the decision out.

A policy sees a read-only view of each LLM request the kernel holds and the engine's capacity, and returns a Plan:
which running requests to preempt (their KV goes to the shared-memory arena), and which waiting requests to start or
resume, in order. The kernel applies preemptions first, then admits in order while capacity lasts. Time is counted in
kernel steps (one engine forward each), not wall-clock seconds, so every policy is deterministic and unit-testable
without a model.

Capacity is counted in the engine's unit, KV blocks, and only from numbers the engine gave: Capacity.free_blocks, and
each view's kv_blocks (what admitting it takes, what preempting it frees). A policy never converts tokens to blocks
itself, so a plan never admits what the engine would refuse for want of blocks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from kernel.engine.core.interface import Capacity


class ReqState(str, enum.Enum):
    WAITING = "waiting"  # never ran
    RUNNING = "running"  # in the engine's batch
    PREEMPTED = "preempted"  # KV in the arena (or dropped, to recompute), waiting to resume
    DONE = "done"


@dataclass(frozen=True)
class RequestView:
    req_id: str
    agent_id: str
    state: ReqState
    priority: int  # effective priority: agent's + request's hint; higher runs first
    arrival: int  # kernel step at which the request arrived (ties broken by req order)
    prompt_tokens: int
    max_tokens: int  # requested output budget (sjf's job length when no prediction)
    output_tokens: int  # tokens generated so far
    slice_tokens: int  # tokens generated since it was last admitted or resumed (round robin's quantum)
    waiting_since: int  # kernel step at which it last entered WAITING/PREEMPTED (aging)
    agent_service: int  # tokens (prompt + output) served to this agent's program across all its calls (las)
    predicted_tokens: int | None = None
    # KV blocks the request moves, as the engine counts them: for a waiting or preempted request, the free blocks its
    # admission takes (Engine.blocks_needed: prompt + output + the next token, less shared prefix blocks); for a
    # running one, the blocks preempting it frees (Engine.blocks_held). Required by the capacity arithmetic below.
    kv_blocks: int | None = None
    # Kernel step at which the agent's program made its first call (plas orders a level by program start); None when
    # the kernel does not track it, and policies fall back to the call's arrival.
    program_arrival: int | None = None

    @property
    def blocks(self) -> int:
        if self.kv_blocks is None:
            raise ValueError(f"request {self.req_id} has no kv_blocks: the kernel sets it from the engine")
        return self.kv_blocks


@dataclass
class Plan:
    preempt: list[str] = field(default_factory=list)  # running req ids to pause
    admit: list[str] = field(default_factory=list)  # waiting/preempted req ids to (re)start, in order

    def __bool__(self) -> bool:
        return bool(self.preempt or self.admit)


class Scheduler(Protocol):
    name: str

    def plan(self, running: list[RequestView], waiting: list[RequestView], capacity: Capacity, now: int) -> Plan: ...


def fits_in_order(
    candidates: list[RequestView], capacity: Capacity, freed_blocks: int = 0, freed_batch: int = 0
) -> list[str]:
    """Ids of the longest prefix of candidates that fits the free KV blocks and batch size (shared by the policies)."""
    blocks = capacity.free_blocks + freed_blocks
    batch = capacity.max_batch - capacity.running + freed_batch
    chosen: list[str] = []
    for view in candidates:
        if batch <= 0 or view.blocks > blocks:
            break
        chosen.append(view.req_id)
        blocks -= view.blocks
        batch -= 1
    return chosen
