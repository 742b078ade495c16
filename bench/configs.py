"""The experiment matrix: which kernel configurations (and baselines) run on which workload.

Every kernel configuration of a run shares the same engine options (batch size, KV budget, arena); they differ only in
the policy under test. Baselines: "no-kernel" (each agent loads the model itself), "fifo-drop" (FIFO with the KV
dropped between an agent's calls, as a plain serving engine does), and "...-recompute" (preempted work is re-prefilled
from its text on resume instead of restored from a snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass

NO_KERNEL = "no-kernel"


@dataclass(frozen=True)
class RunConfig:
    label: str
    scheduler: str = "fifo"
    retention: str = "on"
    preempt_mode: str = "snapshot"
    prefix_cache: str = "on"

    @property
    def uses_kernel(self) -> bool:
        return self.label != NO_KERNEL

    def kernel_options(self) -> dict[str, str]:
        return {
            "scheduler": self.scheduler,
            "retention": self.retention,
            "preempt-mode": self.preempt_mode,
            "prefix-cache": self.prefix_cache,
        }


FIFO = RunConfig("fifo")
# Neither the kernel's retention nor the engine's own prefix cache keeps a finished call's KV: every call prefills its
# whole prompt, as an engine without prefix caching does.
FIFO_DROP = RunConfig("fifo-drop", retention="off", prefix_cache="off")
PRIORITY = RunConfig("priority", scheduler="priority")
PRIORITY_RECOMPUTE = RunConfig("priority-recompute", scheduler="priority", preempt_mode="recompute")
ROUND_ROBIN = RunConfig("rr", scheduler="rr")
SJF = RunConfig("sjf", scheduler="sjf")
LAS = RunConfig("las", scheduler="las")
LAS_RECOMPUTE = RunConfig("las-recompute", scheduler="las", preempt_mode="recompute")
PLAS = RunConfig("plas", scheduler="plas")
NO_KERNEL_BASELINE = RunConfig(NO_KERNEL)


@dataclass(frozen=True)
class Experiment:
    workload: str
    configs: tuple[RunConfig, ...]


# The no-kernel baseline runs on the multi-call workload only: on the 24-agent mixes, loading the model once per agent
# (two at a time on 2 cores) would take longer than the rest of the suite together.
FULL = (
    Experiment("interactive_background", (FIFO, PRIORITY, PRIORITY_RECOMPUTE, ROUND_ROBIN)),
    Experiment("many_short_few_long", (FIFO, LAS, LAS_RECOMPUTE, SJF)),
    Experiment("shared_system_prompt", (FIFO, FIFO_DROP)),
    Experiment("multi_call_history", (FIFO, FIFO_DROP, NO_KERNEL_BASELINE)),
)
SMOKE = (Experiment("smoke", (FIFO, PRIORITY, NO_KERNEL_BASELINE)),)
# The agentic mixes (bench/agent_traces.py), run when named with --workload: program-level scheduling against FIFO and
# LAS, and retention against dropping the KV, with the agents running their tools themselves. bench/agentic_live.py
# runs these mixes with the tools run by the kernel, every retention policy, and llama.cpp's server beside.
AGENTIC = (
    Experiment("agentic", (FIFO, LAS, PLAS, FIFO_DROP)),
    Experiment("agentic_heavy_tailed", (FIFO, LAS, PLAS, FIFO_DROP)),
    Experiment("agentic_interactive", (FIFO, PRIORITY, PLAS)),
)

# Engine options every kernel configuration shares. The batch cap is a latency bound: on 2 CPU cores a decode step of
# 8 sequences costs 1.34x a lone sequence's, of 32 about 2.65x (python -m bench.batch_scaling; RESULTS.md), so 8 keeps
# every agent's per-token latency near its solo speed while throughput grows 5x. The workloads ask for more than 8
# sequences at their peaks, so the policies have something to decide. The KV budget holds 8 of the longest contexts,
# the arena the snapshots and retained contexts of every agent (about 23 KB per token in bfloat16).
DEFAULT_ENGINE_OPTIONS = {"max-batch": "8", "kv-budget": "16384", "arena-mb": "1024"}


def experiments(smoke: bool, workloads: list[str] | None = None) -> tuple[Experiment, ...]:
    chosen = SMOKE if smoke else FULL
    if workloads:
        chosen = chosen if smoke else FULL + AGENTIC
        unknown = set(workloads) - {e.workload for e in chosen}
        if unknown:
            raise ValueError(f"unknown workload(s) {sorted(unknown)}; choose from {[e.workload for e in chosen]}")
        chosen = tuple(e for e in chosen if e.workload in workloads)
    return chosen
