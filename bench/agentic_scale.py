"""The agentic mixes at the size a run can afford: the full mixes of bench/agent_traces.py, or a quick cut of them.

    trace_for(mix, seed, scale, traces_dir) -> (Trace, path)

full: the mix as generated (bench/workloads.generate; 10-16 agents, up to 24 calls, histories to ~5k tokens).
quick: the same trace cut by a fixed rule, chosen before any result was seen: the first QUICK_AGENTS agents in arrival
order, each keeping its first QUICK_CALLS calls (the last kept call loses its tool gap: the program ends there). Texts,
lengths, latencies and arrivals are the full trace's, so a quick run is a prefix of the full one, not another workload;
on 2 busy cores one configuration's run of it takes about a minute. The heavy tail of agentic_heavy_tailed is mostly
cut by the call cap: quick runs check the pipeline end to end, the full scale measures the policies.

The cut trace is saved beside the run's results (its name says the scale), so the agent processes replay exactly it.
"""

from __future__ import annotations

import enum
from dataclasses import replace
from pathlib import Path

from bench.trace import Trace, load_trace
from bench.workloads import generate

QUICK_AGENTS, QUICK_CALLS = 6, 4


class Scale(str, enum.Enum):
    QUICK = "quick"
    FULL = "full"


def cut(trace: Trace, agents: int, calls: int) -> Trace:
    """The first `agents` programs by arrival, each cut to its first `calls` calls (the last without a tool after)."""
    if agents < 1 or calls < 1:
        raise ValueError(f"a cut keeps at least one agent and one call, got agents={agents} calls={calls}")
    kept = sorted(trace.agents, key=lambda a: (a.arrival_s, a.agent_id))[:agents]
    programs = []
    for program in kept:
        head = program.calls[:calls]
        head = (*head[:-1], replace(head[-1], tool_after=None))
        programs.append(replace(program, calls=head))
    return replace(trace, agents=tuple(programs))


def trace_for(mix: str, seed: int, scale: Scale, traces_dir: Path) -> tuple[Trace, Path]:
    """The trace of (mix, seed) at this scale, saved under traces_dir and loaded back (as the agents will load it)."""
    trace = generate(mix, seed)
    if scale is Scale.QUICK:
        trace = cut(trace, QUICK_AGENTS, QUICK_CALLS)
    path = traces_dir / f"{mix}-{scale.value}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    trace.save(path)
    return load_trace(path), path


def longest_sequence(trace: Trace) -> int:
    """Tokens (one per word, as bench.text writes them) of the longest history any program builds."""
    longest = 0
    for program in trace.agents:
        prefix = len(trace.prefixes[program.prefix].split()) if program.prefix else 0
        longest = max(longest, prefix + sum(call.text_tokens + call.max_tokens for call in program.calls))
    return longest
