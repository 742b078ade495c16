"""The suite's speed targets, each a ratio between two configurations measured in the same run.

results[workload][config label] is a config_metrics() dict. A target whose configurations did not run (e.g. in
--smoke) is reported as not measured rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.configs import NO_KERNEL


@dataclass(frozen=True)
class TargetResult:
    name: str
    workload: str
    measured: float | None  # the ratio, higher is better
    target: float
    comparison: str  # ">=" or ">"

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured >= self.target if self.comparison == ">=" else self.measured > self.target


def _ratio(
    results: dict, workload: str, base: str, better: str, metric: Callable[[dict], float | None]
) -> float | None:
    """metric(base) / metric(better), or None when either is missing."""
    runs = results.get(workload, {})
    if base not in runs or better not in runs:
        return None
    numerator, denominator = metric(runs[base]), metric(runs[better])
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _interactive_p50(m: dict) -> float | None:
    return m["latency_by_kind"].get("interactive", {}).get("p50")


def _mean_completion(m: dict) -> float | None:
    return m["agent_completion"]["mean"]


def evaluate(results: dict) -> list[TargetResult]:
    ib, ms, mc = "interactive_background", "many_short_few_long", "multi_call_history"
    rows = [
        TargetResult(
            "priority: interactive p50 latency, fifo / priority",
            ib,
            _ratio(results, ib, "fifo", "priority", _interactive_p50),
            3.0,
            ">=",
        ),
        TargetResult(
            "priority: throughput, priority / fifo",
            ib,
            _ratio(results, ib, "priority", "fifo", lambda m: m["tokens_per_s"]),
            0.9,
            ">=",
        ),
        TargetResult(
            "las: mean agent completion, fifo / las",
            ms,
            _ratio(results, ms, "fifo", "las", _mean_completion),
            1.5,
            ">=",
        ),
        TargetResult(
            "retention: mean agent completion, fifo-drop / fifo",
            mc,
            _ratio(results, mc, "fifo-drop", "fifo", _mean_completion),
            2.0,
            ">=",
        ),
    ]
    for workload, runs in results.items():
        if NO_KERNEL in runs:
            rows.append(
                TargetResult(
                    "kernel: mean agent completion, no-kernel / fifo",
                    workload,
                    _ratio(results, workload, NO_KERNEL, "fifo", _mean_completion),
                    1.0,
                    ">",
                )
            )
    return rows
