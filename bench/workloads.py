"""Seeded workload mixes. The same (mix, seed) always yields the same trace; traces are saved under bench/traces/.

Each mix is a function of a random.Random: it draws arrivals, prompt/output lengths, texts and tool gaps. Sizes are
chosen for a 135M-parameter model on a 2-core CPU (a full run of every configuration fits in about 15-20 minutes), and
are the same for every scheduler: a mix describes agents, not a policy's best case.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from bench.agent_traces import AGENTIC_MIXES
from bench.text import words_text
from bench.trace import AgentProgram, Call, ToolGap, Trace, load_trace

TRACES_DIR = Path(__file__).parent / "traces"

# Tool gap shapes: an instant calculator, an API call whose latency is lognormal around 0.5 s, and a slow tool whose
# Pareto tail (alpha 1.5, from 1 s, capped) stands for a web search or a compiler run.
API_MEDIAN_S, API_SIGMA = 0.5, 0.4
SLOW_SCALE_S, SLOW_ALPHA, SLOW_CAP_S = 1.0, 1.5, 6.0
Range = tuple[int, int]


def tool_gap(rng: random.Random, weights: tuple[float, float, float]) -> ToolGap:
    """Draw one gap; weights are the odds of calculator, api, slow."""
    kind = rng.choices(("calculator", "api", "slow"), weights=weights)[0]
    if kind == "calculator":
        a, b, c = rng.randint(2, 999), rng.randint(2, 999), rng.randint(2, 99)
        return ToolGap(kind="calculator", seconds=0.0, expression=f"({a} * {b}) % {c} + {a} - {b}")
    if kind == "api":
        return ToolGap(kind="api", seconds=round(math.exp(rng.gauss(math.log(API_MEDIAN_S), API_SIGMA)), 3))
    return ToolGap(kind="slow", seconds=round(min(SLOW_CAP_S, SLOW_SCALE_S * rng.paretovariate(SLOW_ALPHA)), 3))


def program(
    rng: random.Random,
    agent_id: str,
    kind: str,
    *,
    priority: int = 0,
    arrival: tuple[float, float],
    history: bool,
    n_calls: int,
    first_tokens: Range,
    next_tokens: Range,
    out_tokens: Range,
    tools: tuple[float, float, float] = (0.3, 0.6, 0.1),
    prefix: str | None = None,
) -> AgentProgram:
    calls = []
    for index in range(n_calls):
        n_text = rng.randint(*(first_tokens if index == 0 else next_tokens))
        gap = tool_gap(rng, tools) if index < n_calls - 1 else None
        calls.append(
            Call(text=words_text(rng, n_text), text_tokens=n_text, max_tokens=rng.randint(*out_tokens), tool_after=gap)
        )
    return AgentProgram(
        agent_id=agent_id,
        kind=kind,
        priority=priority,
        arrival_s=round(rng.uniform(*arrival), 3),
        history=history,
        prefix=prefix,
        calls=tuple(calls),
    )


def interactive_background(rng: random.Random) -> tuple[str, dict, list[AgentProgram]]:
    agents = [
        program(
            rng,
            f"background-{i}",
            "background",
            arrival=(0.0, 0.5),
            history=True,
            n_calls=2,
            first_tokens=(150, 250),
            next_tokens=(20, 40),
            out_tokens=(128, 192),
        )
        for i in range(8)
    ]
    agents += [
        program(
            rng,
            f"interactive-{i}",
            "interactive",
            priority=10,
            arrival=(1.0, 4.0),
            history=True,
            n_calls=3,
            first_tokens=(30, 60),
            next_tokens=(10, 20),
            out_tokens=(8, 16),
            tools=(0.5, 0.5, 0.0),
        )
        for i in range(4)
    ]
    return "4 interactive high-priority chat agents arrive while 8 background agents generate long outputs", {}, agents


def many_short_few_long(rng: random.Random) -> tuple[str, dict, list[AgentProgram]]:
    agents = [
        program(
            rng,
            f"long-{i}",
            "long",
            arrival=(0.0, 0.5),
            history=True,
            n_calls=3,
            first_tokens=(80, 120),
            next_tokens=(20, 40),
            out_tokens=(96, 128),
        )
        for i in range(6)
    ]
    agents += [
        program(
            rng,
            f"short-{i}",
            "short",
            arrival=(0.5, 8.0),
            history=True,
            n_calls=1,
            first_tokens=(40, 80),
            next_tokens=(0, 0),
            out_tokens=(12, 24),
        )
        for i in range(18)
    ]
    return "18 short single-call agents arrive while 6 long multi-call agents run", {}, agents


def shared_system_prompt(rng: random.Random) -> tuple[str, dict, list[AgentProgram]]:
    prefixes = {"system": words_text(rng, 512)}
    agents = [
        program(
            rng,
            f"assistant-{i}",
            "assistant",
            arrival=(0.0, 3.0),
            history=True,
            n_calls=2,
            first_tokens=(24, 40),
            next_tokens=(16, 24),
            out_tokens=(24, 32),
            prefix="system",
        )
        for i in range(8)
    ]
    return "8 two-call agents whose prompts start with the same 512-token system prompt", prefixes, agents


def multi_call_history(rng: random.Random) -> tuple[str, dict, list[AgentProgram]]:
    # A ReAct prompt opens with tool descriptions and few-shot examples (about a thousand tokens); each step adds an
    # observation and a short thought + action.
    agents = [
        program(
            rng,
            f"react-{i}",
            "react",
            arrival=(0.0, 1.0),
            history=True,
            n_calls=6,
            first_tokens=(768, 1024),
            next_tokens=(32, 64),
            out_tokens=(24, 48),
        )
        for i in range(4)
    ]
    return "4 ReAct-style agents, 6 calls each, every prompt re-sends the whole history so far", {}, agents


def smoke(rng: random.Random) -> tuple[str, dict, list[AgentProgram]]:
    agents = [
        program(
            rng,
            f"background-{i}",
            "background",
            arrival=(0.0, 0.2),
            history=False,
            n_calls=1,
            first_tokens=(24, 32),
            next_tokens=(0, 0),
            out_tokens=(24, 32),
        )
        for i in range(2)
    ]
    agents.append(
        program(
            rng,
            "interactive-0",
            "interactive",
            priority=10,
            arrival=(0.3, 0.6),
            history=True,
            n_calls=2,
            first_tokens=(16, 24),
            next_tokens=(8, 12),
            out_tokens=(4, 8),
            tools=(0.5, 0.5, 0.0),
        )
    )
    return "tiny mix for a quick consistency check", {}, agents


MIXES: dict[str, Callable[[random.Random], tuple[str, dict, list[AgentProgram]]]] = {
    "interactive_background": interactive_background,
    "many_short_few_long": many_short_few_long,
    "shared_system_prompt": shared_system_prompt,
    "multi_call_history": multi_call_history,
    "smoke": smoke,
    **AGENTIC_MIXES,  # drawn from agent-trace distributions (bench/agent_traces.py)
}


def generate(mix: str, seed: int) -> Trace:
    if mix not in MIXES:
        raise ValueError(f"unknown workload mix {mix!r}; choose from {sorted(MIXES)}")
    description, prefixes, agents = MIXES[mix](random.Random(f"{mix}:{seed}"))
    return Trace(name=mix, seed=seed, description=description, prefixes=prefixes, agents=tuple(agents))


def trace_path(mix: str, seed: int, traces_dir: Path = TRACES_DIR) -> Path:
    return traces_dir / f"{mix}-seed{seed}.json"


def load_or_generate(mix: str, seed: int, traces_dir: Path = TRACES_DIR) -> tuple[Trace, Path]:
    """The saved trace for (mix, seed), written first if it does not exist yet."""
    path = trace_path(mix, seed, traces_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(mix, seed).save(path)
    return load_trace(path), path
