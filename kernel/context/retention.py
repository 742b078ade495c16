"""Keep-or-drop policy for the arena under pressure (after InferCept's and Continuum's reasoning).

Two kinds of records live in the arena. A request snapshot is paused live work: dropping it makes a recompute certain.
A retained context is a bet that the agent comes back, after its tool call, with a prompt extending its last call:
dropping it costs a recompute only if the bet would have paid. So room is made by evicting retained contexts, least
recently used first (the agent idle longest is the least likely to return soon), and never request snapshots. A context
too large for its share of the arena is not retained at all, so that one long conversation cannot flush every other
agent's context.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(str, enum.Enum):
    REQUEST = "request"  # a preempted request's KV
    RETAINED = "retained"  # an agent's last finished call, kept for its next call


@dataclass(frozen=True)
class Resident:
    key: str  # request id (REQUEST) or agent id (RETAINED)
    kind: Kind
    nbytes: int
    last_used: int  # the context manager's operation counter: LRU without a wall clock


class RetentionPolicy:
    def __init__(self, max_share: float = 0.5):
        if not 0.0 < max_share <= 1.0:
            raise ValueError(f"max_share must be in (0, 1], got {max_share!r}")
        self.max_share = max_share

    def should_retain(self, nbytes: int, arena_bytes: int) -> bool:
        return nbytes <= self.max_share * arena_bytes

    # An agent's program going in and out of tool calls: LRU ignores it (kernel/context/tool_retention.py does not).
    def tool_started(self, agent_id: str, tool: str) -> None:
        pass

    def tool_finished(self, agent_id: str, tool: str) -> None:
        pass

    def call_started(self, agent_id: str) -> None:
        pass

    def agent_gone(self, agent_id: str) -> None:
        pass

    def victims(self, residents: list[Resident]) -> list[Resident]:
        """Residents to evict, in order, until an incoming record fits (the caller stops as soon as it does)."""
        retained = [r for r in residents if r.kind is Kind.RETAINED]
        return sorted(retained, key=lambda r: (r.last_used, r.key))
