"""Agentic workload mixes drawn from distributions of real agent behaviour (bench/traces/agentic_distributions.json).

Sources (each distribution in the JSON names the statistic it was fitted to; only the derived parameters are
committed, no trace data):
- SWE-style agent sessions, calls per program: xor.tech execution metrics, 973 sessions of 8 agents fixing CVEs,
  median 8 turns and 15 tool calls, some over 60 turns (https://www.xor.tech/resources/benchmarks/sessions).
- SWE-agent (Yang et al. 2024, arXiv 2405.15793): the agent-computer interface's observations (100-line file windows,
  truncated command output) that each turn appends to the history; SWE-Effi (arXiv 2509.09853): the "token snowball"
  of that growing history.
- Tool schemas in the system prompt, 400-800 tokens for 10 functions
  (https://lyceum.technology/magazine/tool-calling-latency-llm-inference/); a tool call's JSON, 30-50 tokens
  (https://www.generalcompute.com/blog/tool-calling-latency-the-bottleneck-no-one-talks-about).
- InferCept (Abhyankar et al. 2024, arXiv 2402.01869; lecture summary at
  https://aaronwu.dev/Infra-LLMs-+-AI-Agents/Lec-13-InferCept): an LLM call is intercepted by tools, other models
  or humans, and serving engines discard its KV at each interception (37-40% of end-to-end latency then goes to
  recomputation); the tool latencies themselves are the bench's existing shapes or our choice, not fitted (the
  JSON says which).
- Autellix (Luo et al. 2025, arXiv 2502.13965): programs wait on head-of-line blocking at the call and the program
  level, which program-level scheduling is for; the Pareto tail of the heavy-tailed mix (alpha 1.1) is our choice,
  in line with the 5-to-60+ turn spread of the sessions above.

Mixes (sizes scaled for a 135M model on 2 CPU cores, fixed before any result was seen):
- agentic: 16 tool-using agents sharing one tool-schema system prompt, lognormal calls per program.
- agentic_heavy_tailed: 16 agents whose number of calls is Pareto (most make 1-3 calls, a few make 20+).
- agentic_interactive: 4 short interactive agents (priority 10) beside 6 long background agents.
"""

from __future__ import annotations

import json
import math
import random
from functools import lru_cache
from pathlib import Path

from bench.text import words_text
from bench.trace import AgentProgram, Call, ToolGap

DISTRIBUTIONS = Path(__file__).parent / "traces" / "agentic_distributions.json"


@lru_cache(maxsize=1)
def distributions() -> dict:
    return json.loads(DISTRIBUTIONS.read_text())


def draw(rng: random.Random, name: str) -> int:
    """One integer draw of a named distribution, with its scale and bounds."""
    spec = distributions()[name]
    if spec["dist"] == "uniform":
        return rng.randint(spec["low"], spec["high"])
    value = math.exp(rng.gauss(math.log(spec["median"]), spec["sigma"])) * spec.get("scale", 1.0)
    low = max(1, round(spec["min"] * spec.get("scale", 1.0)))
    return max(low, min(round(spec["max"] * spec.get("scale", 1.0)), round(value)))


def draw_tool(rng: random.Random) -> ToolGap:
    tools = distributions()["tools"]
    kind = rng.choices(list(tools), weights=[t["weight"] for t in tools.values()])[0]
    spec = tools[kind]
    if spec["dist"] == "zero":
        a, b, c = rng.randint(2, 999), rng.randint(2, 999), rng.randint(2, 99)
        return ToolGap(kind=kind, seconds=0.0, expression=f"({a} * {b}) % {c} + {a} - {b}")
    seconds = min(spec["max_s"], math.exp(rng.gauss(math.log(spec["median_s"]), spec["sigma"])))
    return ToolGap(kind=kind, seconds=round(seconds, 3))


def agent(
    rng: random.Random,
    agent_id: str,
    kind: str,
    n_calls: int,
    arrival: tuple[float, float],
    priority: int = 0,
    prefix: str | None = "tools",
) -> AgentProgram:
    """A tool-using agent: a task, then per step a tool call's JSON, the tool, its observation; a final answer."""
    calls = []
    for index in range(n_calls):
        last = index == n_calls - 1
        n_text = draw(rng, "task_tokens") if index == 0 else draw(rng, "observation_tokens")
        out = draw(rng, "final_output_tokens") if last else draw(rng, "step_output_tokens")
        calls.append(
            Call(
                text=words_text(rng, n_text),
                text_tokens=n_text,
                max_tokens=out,
                tool_after=None if last else draw_tool(rng),
            )
        )
    return AgentProgram(
        agent_id=agent_id,
        kind=kind,
        priority=priority,
        arrival_s=round(rng.uniform(*arrival), 3),
        history=True,
        prefix=prefix,
        calls=tuple(calls),
    )


def system_prompt(rng: random.Random) -> dict[str, str]:
    return {"tools": words_text(rng, draw(rng, "system_prompt_tokens"))}


def agentic(rng: random.Random) -> tuple[str, dict, list[AgentProgram]]:
    prefixes = system_prompt(rng)
    agents = [
        agent(rng, f"agent-{i:02d}", "agent", draw(rng, "calls_per_program"), arrival=(0.0, 10.0)) for i in range(16)
    ]
    return (
        (
            "16 tool-using agents sharing a tool-schema system prompt; calls, observations, outputs and tool latencies "
            "from agent-trace distributions"
        ),
        prefixes,
        agents,
    )


def agentic_heavy_tailed(rng: random.Random) -> tuple[str, dict, list[AgentProgram]]:
    prefixes = system_prompt(rng)
    alpha = distributions()["program_length_pareto_alpha"]["value"]
    agents = []
    for i in range(16):
        n_calls = min(24, int(rng.paretovariate(alpha)))
        agents.append(agent(rng, f"agent-{i:02d}", "long" if n_calls >= 4 else "short", n_calls, arrival=(0.0, 10.0)))
    return "16 tool-using agents with Pareto(1.1) program lengths (1 to 24 calls)", prefixes, agents


def agentic_interactive(rng: random.Random) -> tuple[str, dict, list[AgentProgram]]:
    prefixes = system_prompt(rng)
    agents = [
        agent(rng, f"background-{i}", "background", 2 * draw(rng, "calls_per_program"), arrival=(0.0, 1.0))
        for i in range(6)
    ]
    agents += [
        agent(rng, f"interactive-{i}", "interactive", rng.randint(2, 3), arrival=(2.0, 8.0), priority=10)
        for i in range(4)
    ]
    return "4 interactive tool-using agents (priority 10) beside 6 long background agents", prefixes, agents


AGENTIC_MIXES = {
    "agentic": agentic,
    "agentic_heavy_tailed": agentic_heavy_tailed,
    "agentic_interactive": agentic_interactive,
}
