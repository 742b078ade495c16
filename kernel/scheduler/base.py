"""The scheduler interface. Policies decide; the kernel loop and the context manager carry the decision out.

A policy sees a read-only view of each LLM request the kernel holds and the engine's capacity, and returns a Plan:
which running requests to preempt (their KV goes to the shared-memory arena), and which waiting requests to start or
resume, in order. The kernel applies preemptions first, then admits in order while capacity lasts. Time is counted in
kernel steps (one engine forward each), not wall-clock seconds, so every policy is deterministic and unit-testable
without a model.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from kernel.engine.interface import Capacity


class ReqState(str, enum.Enum):
    WAITING = "waiting"          # never ran
    RUNNING = "running"          # in the engine's batch
    PREEMPTED = "preempted"      # KV in the arena (or dropped, to recompute), waiting to resume
    DONE = "done"


@dataclass(frozen=True)
class RequestView:
    req_id: str
    agent_id: str
    state: ReqState
    priority: int                # effective priority: agent's + request's hint; higher runs first
    arrival: int                 # kernel step at which the request arrived (ties broken by req order)
    prompt_tokens: int
    max_tokens: int              # requested output budget (sjf's job length when no prediction)
    output_tokens: int           # tokens generated so far
    slice_tokens: int            # tokens generated since it was last admitted or resumed (round robin's quantum)
    waiting_since: int           # kernel step at which it last entered WAITING/PREEMPTED (aging)
    agent_service: int           # tokens (prompt + output) served to this agent's program across all its calls (las)
    predicted_tokens: int | None = None

    @property
    def kv_tokens(self) -> int:
        """KV slots the request needs to run now."""
        return self.prompt_tokens + self.output_tokens


@dataclass
class Plan:
    preempt: list[str] = field(default_factory=list)   # running req ids to pause
    admit: list[str] = field(default_factory=list)     # waiting/preempted req ids to (re)start, in order

    def __bool__(self) -> bool:
        return bool(self.preempt or self.admit)


class Scheduler(Protocol):
    name: str

    def plan(self, running: list[RequestView], waiting: list[RequestView], capacity: Capacity, now: int) -> Plan: ...


def fits_in_order(candidates: list[RequestView], capacity: Capacity, freed_slots: int = 0, freed_batch: int = 0
                  ) -> list[str]:
    """Ids of the longest prefix of candidates that fits the free KV slots and batch size (shared by the policies)."""
    slots = capacity.free_slots + freed_slots
    batch = capacity.max_batch - capacity.running + freed_batch
    chosen: list[str] = []
    for view in candidates:
        if batch <= 0 or view.kv_tokens + 1 > slots:
            break
        chosen.append(view.req_id)
        slots -= view.kv_tokens + 1
        batch -= 1
    return chosen
