"""Metrics of one configuration's run, as pure functions of the runners' records.

Slowdown (for fairness) compares an agent's completion time with what it would take alone: its measured tool time
plus, for each call, the solo service time predicted by a CostModel calibrated on the same machine in the same run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from bench.records import AgentRecord, RequestRecord


@dataclass(frozen=True)
class CostModel:
    """Solo service time of one call: a fixed overhead, plus a cost per prompt token and per generated token."""

    overhead_s: float
    prefill_s_per_token: float
    decode_s_per_token: float

    def solo_seconds(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.overhead_s + self.prefill_s_per_token * prompt_tokens + self.decode_s_per_token * completion_tokens


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Iterable[float]) -> dict:
    values = list(values)
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p99": None}
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
    }


def jain_index(values: Iterable[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one takes everything."""
    values = list(values)
    if not values or any(v < 0 for v in values):
        raise ValueError("Jain's index needs at least one non-negative value")
    squares = sum(v * v for v in values)
    return 1.0 if squares == 0 else sum(values) ** 2 / (len(values) * squares)


def slowdowns(agents: list[AgentRecord], requests: list[RequestRecord], cost: CostModel) -> dict[str, float]:
    """Per agent: completion time / (tool time + solo service time of its calls)."""
    service: dict[str, float] = {}
    for req in requests:
        service[req.agent_id] = service.get(req.agent_id, 0.0) + cost.solo_seconds(
            req.prompt_tokens, req.completion_tokens
        )
    return {
        a.agent_id: a.completion / (a.tool_seconds + service.get(a.agent_id, 0.0))
        for a in agents
        if a.tool_seconds + service.get(a.agent_id, 0.0) > 0
    }


def throughput(agents: list[AgentRecord], requests: list[RequestRecord]) -> dict:
    """Generated tokens per second and agents per minute over the makespan (first arrival to last finish)."""
    if not agents:
        return {"makespan_s": 0.0, "tokens_per_s": 0.0, "agents_per_min": 0.0}
    makespan = max(a.finished for a in agents) - min(a.arrival for a in agents)
    tokens = sum(r.completion_tokens for r in requests)
    return {
        "makespan_s": makespan,
        "tokens_per_s": tokens / makespan if makespan > 0 else 0.0,
        "agents_per_min": 60 * len(agents) / makespan if makespan > 0 else 0.0,
    }


def context_counters(kernel_stats: dict | None) -> dict:
    """The context-switching counters of a kernel's stats (zeros for the no-kernel baseline). Snapshot bytes moved
    count both directions: saved into the arena and loaded back."""
    stats = kernel_stats or {}

    def count(key: str) -> int:
        return int(stats.get(key, 0))

    return {
        "preemptions": count("preemptions"),
        "snapshot_bytes": count("snapshot_bytes_saved") + count("snapshot_bytes_loaded"),
        "recomputed_tokens": count("recomputed_tokens"),
        "retained_hits": count("retained_hits"),
        "retained_tokens_reused": count("retained_tokens_reused"),
    }


def config_metrics(
    agents: list[AgentRecord], requests: list[RequestRecord], cost: CostModel, kernel_stats: dict | None = None
) -> dict:
    """Everything the report shows for one configuration on one workload."""
    ok = [r for r in requests if r.error is None]
    per_agent_slowdown = slowdowns(agents, ok, cost)
    kinds = sorted({a.kind for a in agents})
    return {
        "agents": len(agents),
        "requests": len(requests),
        "errors": len(requests) - len(ok),  # an agent stops at its first failed call: one error each
        "completion_tokens": sum(r.completion_tokens for r in ok),
        "agent_completion": summary(a.completion for a in agents),
        "latency": summary(r.latency for r in ok),
        "ttft": summary(r.ttft for r in ok if r.ttft is not None),
        "queue_wait": summary(r.queue_wait for r in ok),
        "latency_by_kind": {k: summary(r.latency for r in ok if r.kind == k) for k in kinds},
        "completion_by_kind": {k: summary(a.completion for a in agents if a.kind == k) for k in kinds},
        "model_load_s": summary(a.load_seconds for a in agents),
        "slowdown": summary(per_agent_slowdown.values()),
        "fairness_jain": jain_index(per_agent_slowdown.values()) if per_agent_slowdown else None,
        **throughput(agents, ok),
        **context_counters(kernel_stats),
    }
