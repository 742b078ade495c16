"""Accounting: what each agent and each principal used, updated where the events happen, kept on the loop's thread.

Inputs (one call per event, each O(1) apart from a bisect over a histogram's fixed buckets):
- agent_started / agent_ended: an agent's own usage lives while it is connected; its principal's totals (and the
  kernel's) keep everything it used after it ended.
- admitted (prompt tokens, charged when the call first enters the batch), finished (the tokens it generated, its
  time to first token and its mean time per generated token: one observation per call, no per-token work), failed (an
  LLM call ended or refused with an ErrorCode; tokens it generated before that still count), preempted (with the
  snapshot bytes written for it, 0 for a recompute), tool_done (a tool call's tool, seconds and outcome).
- Unknown agent ids (an event racing the agent's end) are charged to nobody's live usage but still to the kernel.

Outputs: Usage records (counters, errors by ErrorCode, three fixed-bucket histograms) for a live agent, a principal
and the whole kernel, read by kernel.top and kernel.metrics.

Invariants: every counter is the sum of the events that reached it, never negative; the kernel's totals equal the sum
over principals. Principals are bounded (MAX_PRINCIPALS): past it new ones are folded into OTHER_PRINCIPAL, so an
attacker cycling network addresses cannot grow this without bound. Not thread-safe: tool outcomes arriving on the tool
manager's thread are handed over through a deque (ToolEvents) and drained on the loop.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field

from ipc.errors import ErrorCode

# upper bounds in seconds (Prometheus `le`); +Inf is implicit
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
TOOL_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0)
MAX_PRINCIPALS = 4096
OTHER_PRINCIPAL = "(other)"


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; the last is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self):
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out

    def as_dict(self) -> dict:
        return {"buckets": list(self.bounds), "cumulative": self.cumulative(), "sum": self.total, "count": self.count}


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0  # LLM calls finished with a completion
    errors: collections.Counter = field(default_factory=collections.Counter)  # ErrorCode value -> calls
    preemptions: int = 0
    snapshot_bytes: int = 0  # KV written to the arena when its calls were preempted
    tool_calls: collections.Counter = field(default_factory=collections.Counter)  # tool -> calls finished
    tool_errors: int = 0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    token_latency: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    tool_seconds: Histogram = field(default_factory=lambda: Histogram(TOOL_BUCKETS))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def counters(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls": self.calls,
            "errors": dict(self.errors),
            "preemptions": self.preemptions,
            "snapshot_bytes": self.snapshot_bytes,
            "tool_calls": dict(self.tool_calls),
            "tool_errors": self.tool_errors,
        }

    def histograms(self) -> dict:
        return {
            "ttft_seconds": self.ttft.as_dict(),
            "token_seconds": self.token_latency.as_dict(),
            "tool_call_seconds": self.tool_seconds.as_dict(),
        }


@dataclass
class AgentAccount:
    agent_id: str
    name: str
    principal: str
    usage: Usage = field(default_factory=Usage)


class Accounting:
    def __init__(self, max_principals: int = MAX_PRINCIPALS):
        self.max_principals = max_principals
        self.kernel = Usage()
        self.agents: dict[str, AgentAccount] = {}
        self.principals: dict[str, Usage] = {}

    # -- agents ----------------------------------------------------------------------------------------------------

    def agent_started(self, agent_id: str, name: str, principal: str) -> None:
        self.agents[agent_id] = AgentAccount(agent_id, name, self._principal_key(principal))

    def agent_ended(self, agent_id: str) -> None:
        self.agents.pop(agent_id, None)  # its principal's totals already hold what it used

    def principal_of(self, principal: str) -> Usage:
        return self.principals.get(principal) or self.principals.get(OTHER_PRINCIPAL) or Usage()

    # -- events ----------------------------------------------------------------------------------------------------

    def admitted(self, agent_id: str, prompt_tokens: int) -> None:
        for usage in self._targets(agent_id):
            usage.prompt_tokens += prompt_tokens

    def finished(self, agent_id: str, completion_tokens: int, ttft_s: float | None, token_s: float | None) -> None:
        for usage in self._targets(agent_id):
            usage.completion_tokens += completion_tokens
            usage.calls += 1
            if ttft_s is not None:
                usage.ttft.observe(ttft_s)
            if token_s is not None:
                usage.token_latency.observe(token_s)

    def failed(self, agent_id: str, code: ErrorCode, completion_tokens: int = 0) -> None:
        for usage in self._targets(agent_id):
            usage.errors[code.value] += 1
            usage.completion_tokens += completion_tokens

    def preempted(self, agent_id: str, snapshot_bytes: int) -> None:
        for usage in self._targets(agent_id):
            usage.preemptions += 1
            usage.snapshot_bytes += snapshot_bytes

    def tool_done(self, agent_id: str, tool: str, seconds: float, error: bool) -> None:
        for usage in self._targets(agent_id):
            usage.tool_calls[tool] += 1
            usage.tool_errors += error
            usage.tool_seconds.observe(seconds)

    # -- mechanism -------------------------------------------------------------------------------------------------

    def _principal_key(self, principal: str) -> str:
        if principal in self.principals or len(self.principals) < self.max_principals:
            self.principals.setdefault(principal, Usage())
            return principal
        self.principals.setdefault(OTHER_PRINCIPAL, Usage())
        return OTHER_PRINCIPAL

    def _targets(self, agent_id: str) -> tuple[Usage, ...]:
        account = self.agents.get(agent_id)
        if account is None:
            return (self.kernel,)
        return account.usage, self.principals[account.principal], self.kernel


class ToolEvents:
    """Tool calls' starts (on the loop) and ends (on the tool manager's thread), handed over without a lock: the
    manager's thread only appends to a deque; the loop drains it (drain()) into the accounting and the in-flight
    table kernel.top lists."""

    def __init__(self, clock):
        self.clock = clock
        self.in_flight: dict[int, tuple[str, str, float]] = {}  # ticket -> (agent id, tool, started)
        self._ended: collections.deque[tuple[int, bool, float]] = collections.deque()
        self._next = 0

    def started(self, agent_id: str, tool: str) -> int:
        self._next += 1
        self.in_flight[self._next] = (agent_id, tool, self.clock())
        return self._next

    def ended(self, ticket: int, error: bool) -> None:
        """Any thread."""
        self._ended.append((ticket, error, self.clock()))

    def drain(self, accounting: Accounting) -> None:
        while self._ended:
            ticket, error, at = self._ended.popleft()
            started = self.in_flight.pop(ticket, None)
            if started is not None:
                agent_id, tool, since = started
                accounting.tool_done(agent_id, tool, max(0.0, at - since), error)
