"""The holding table of tool calls started early: which agent's call of which tool, with which arguments, is running
or done before the agent asked for it, until the agent claims it, it expires, or the agent ends.

A pure unit: no threads, no clock of its own (every operation takes `now`), no knowledge of what a handle is (the
caller's: a Future). The caller (kernel/services/early_start.py) runs every operation on one thread, the kernel loop,
with a `now` that never decreases (a monotonic clock).

    table = EarlyTable(ttl_s=30, per_agent=8, total=256)
    entry = table.hold(agent_id, tool, key, handle, now)   # None: refused (a bound, or the same call already held)
    entry = table.claim(agent_id, tool, key)               # the held entry, removed; None: nothing matches
    gone = table.expire(now)                               # entries held longer than ttl_s, removed
    gone = table.drop_agent(agent_id)                      # the agent ended: all its entries, removed
    table.oldest(limit); table.held_by()                   # for the operator's view (kernel.top): read, not removed

Keys are the canonical JSON of the arguments (canonical_key): a claim matches an entry of the same agent, same tool,
same key. Invariants: at most `per_agent` entries per agent and `total` in all; one entry per (agent, tool, key); an
entry is returned by exactly one of claim / expire / drop_agent, once, and only ever to its own agent's claim;
after expire(now) no entry is older than ttl_s; an agent with no entries has no bookkeeping left.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

DEFAULT_TTL_S = 30.0  # an agent claims within a round trip of its LLM call's reply; this is far past it
DEFAULT_PER_AGENT = 8
DEFAULT_TOTAL = 256


def canonical_key(arguments: Any) -> str:
    """The arguments as one string, equal for equal JSON values whatever their key order or spacing."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass
class EarlyEntry:
    early_id: str
    agent_id: str
    tool: str
    key: str
    handle: Any
    since: float


class EarlyTable:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S, per_agent: int = DEFAULT_PER_AGENT, total: int = DEFAULT_TOTAL):
        if ttl_s <= 0 or per_agent < 1 or total < 1:
            raise ValueError("ttl_s, per_agent and total must be positive")
        self.ttl_s, self.per_agent, self.total = ttl_s, per_agent, total
        self._entries: dict[tuple[str, str, str], EarlyEntry] = {}  # in the order held: the oldest first
        self._per_agent: dict[str, int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def held(self, agent_id: str) -> int:
        return self._per_agent.get(agent_id, 0)

    def held_by(self) -> dict[str, int]:
        """Entries per agent (a copy: agents holding none are absent)."""
        return dict(self._per_agent)

    def oldest(self, limit: int) -> list[EarlyEntry]:
        """At most `limit` entries, the oldest first; O(limit)."""
        return list(itertools.islice(self._entries.values(), max(0, limit)))

    def has_room(self, agent_id: str) -> bool:
        return len(self._entries) < self.total and self.held(agent_id) < self.per_agent

    def holds(self, agent_id: str, tool: str, key: str) -> bool:
        return (agent_id, tool, key) in self._entries

    def hold(self, agent_id: str, tool: str, key: str, handle: Any, now: float) -> EarlyEntry | None:
        if not self.has_room(agent_id) or self.holds(agent_id, tool, key):
            return None
        self._next += 1
        entry = EarlyEntry(f"e{self._next}", agent_id, tool, key, handle, now)
        self._entries[(agent_id, tool, key)] = entry
        self._per_agent[agent_id] = self.held(agent_id) + 1
        return entry

    def claim(self, agent_id: str, tool: str, key: str) -> EarlyEntry | None:
        entry = self._entries.get((agent_id, tool, key))
        if entry is not None:
            self._remove(entry)
        return entry

    def expire(self, now: float) -> list[EarlyEntry]:
        gone = []
        for entry in self._entries.values():  # oldest first: stop at the first one still young
            if now - entry.since < self.ttl_s:
                break
            gone.append(entry)
        for entry in gone:
            self._remove(entry)
        return gone

    def drop_agent(self, agent_id: str) -> list[EarlyEntry]:
        if agent_id not in self._per_agent:
            return []
        gone = [e for e in self._entries.values() if e.agent_id == agent_id]
        for entry in gone:
            self._remove(entry)
        return gone

    def _remove(self, entry: EarlyEntry) -> None:
        del self._entries[(entry.agent_id, entry.tool, entry.key)]
        left = self._per_agent[entry.agent_id] - 1
        if left:
            self._per_agent[entry.agent_id] = left
        else:
            del self._per_agent[entry.agent_id]
