"""Tool-aware retention: which retained contexts to keep in the arena, knowing which agents are in a tool call.

The kernel runs the agents' tool calls itself, so it knows when an agent's call ended because it is now waiting on a
tool, which tool, and (from that tool's past calls) about when it will be back with a prompt extending its last
context. LRU (kernel/context/retention.py) only knows how long ago a context was used; this policy ranks a retained
context by when it is expected to be needed again:

- An agent waiting on a tool is expected back at tool start + the tool's expected latency (an EWMA of its observed
  latencies, ToolLatency). Its context has a time-to-live of ttl_factor x that latency from the tool's start: within
  it the context is kept in preference to any idle agent's; past it the agent is treated as idle (the tool hung, or the
  agent went elsewhere).
- An agent whose tool answered is due now (0 seconds to reuse) until its next call is admitted: it may wait in the
  queue, and its context is then the surest to be needed; after due_ttl_s without an admission it counts as idle.
- An agent not in a tool call (its last call ended with an answer, or its TTL passed) has no expected return: its
  context goes first, least recently used first, as under LRU.
- Among agents in tools, eviction weighs reuse time and size: the context holding the most byte-seconds until its
  expected reuse (nbytes x seconds left) goes first, so a small context due back soon outlasts a large one due late.

Request snapshots (paused live work) are never victims, as under LRU. Times are the policy's clock (monotonic seconds,
injectable so tests and simulations drive it); the context manager's operation counter still orders idle contexts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kernel.context.retention import Kind, Resident, RetentionPolicy


class ToolLatency:
    """Expected latency of each tool: an exponentially weighted mean of its observed latencies (prior until seen)."""

    def __init__(self, alpha: float = 0.3, prior_s: float = 1.0):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if not prior_s >= 0.0:
            raise ValueError(f"prior_s must be >= 0, got {prior_s!r}")
        self.alpha, self.prior_s = alpha, prior_s
        self._mean: dict[str, float] = {}

    def observe(self, tool: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        old = self._mean.get(tool)
        self._mean[tool] = seconds if old is None else old + self.alpha * (seconds - old)

    def expected(self, tool: str) -> float:
        return self._mean.get(tool, self.prior_s)


@dataclass(frozen=True)
class _InTool:
    tool: str | None  # None: the tool answered, the agent's next call is due (queued, not yet admitted)
    started: float


class ToolAwareRetention(RetentionPolicy):
    def __init__(
        self,
        max_share: float = 0.5,
        ttl_factor: float = 3.0,
        min_ttl_s: float = 1.0,
        due_ttl_s: float = 30.0,
        latency: ToolLatency | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(max_share)
        if not ttl_factor >= 1.0:
            raise ValueError(f"ttl_factor must be >= 1, got {ttl_factor!r}")
        self.ttl_factor, self.min_ttl_s, self.due_ttl_s = ttl_factor, min_ttl_s, due_ttl_s
        self.latency = latency or ToolLatency()
        self.clock = clock
        self._in_tool: dict[str, _InTool] = {}  # agent id -> the tool call it waits on
        # The tool manager's thread reports tool ends while the loop ranks victims: one lock over the table and EWMA.
        self._lock = threading.Lock()

    # -- what the kernel tells it (named transitions of an agent's program) ------------------------------------------

    def tool_started(self, agent_id: str, tool: str) -> None:
        """The kernel started a tool call for agent_id: its next LLM call is expected after the tool's latency."""
        with self._lock:
            self._in_tool[agent_id] = _InTool(tool, self.clock())

    def tool_finished(self, agent_id: str, tool: str) -> None:
        """The tool call answered: its latency feeds the tool's EWMA, and the agent's next call is due now (it may
        queue behind others before it is admitted: its context is then the one most surely needed next)."""
        with self._lock:
            call = self._in_tool.get(agent_id)
            if call is not None and call.tool == tool:
                self.latency.observe(tool, self.clock() - call.started)
            self._in_tool[agent_id] = _InTool(None, self.clock())

    def call_started(self, agent_id: str) -> None:
        """The agent's call was admitted (its retained context, if any, was consumed): no reuse is expected until
        its next tool call."""
        with self._lock:
            self._in_tool.pop(agent_id, None)

    def agent_gone(self, agent_id: str) -> None:
        with self._lock:
            self._in_tool.pop(agent_id, None)

    # -- the ranking --------------------------------------------------------------------------------------------------

    def seconds_to_reuse(self, agent_id: str) -> float | None:
        """Expected seconds until agent_id's next call (0 when overdue but within its TTL); None: not expected."""
        with self._lock:
            call = self._in_tool.get(agent_id)
            expected = None if call is None or call.tool is None else self.latency.expected(call.tool)
        if call is None:
            return None
        waited = self.clock() - call.started
        if call.tool is None:
            return 0.0 if waited <= self.due_ttl_s else None
        if waited > max(self.min_ttl_s, self.ttl_factor * expected):
            return None
        return max(0.0, expected - waited)

    def victims(self, residents: list[Resident]) -> list[Resident]:
        idle, waiting = [], []
        for resident in residents:
            if resident.kind is not Kind.RETAINED:
                continue
            left = self.seconds_to_reuse(resident.key)
            if left is None:
                idle.append(resident)
            else:
                waiting.append((resident.nbytes * left, -resident.last_used, resident.key, resident))
        idle.sort(key=lambda r: (r.last_used, r.key))
        waiting.sort(key=lambda entry: entry[:3], reverse=True)
        return idle + [entry[3] for entry in waiting]
