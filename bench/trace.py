"""A workload trace: agents, each a program of LLM calls separated by tool gaps. Saved as JSON, loaded with validation.

The trace fixes everything random (texts, lengths, gaps, arrivals), so a run replays it exactly; only the model's
output text is produced at run time (it becomes part of the next prompt for agents with a growing history).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

TOOL_KINDS = ("calculator", "api", "slow")


class TraceError(ValueError):
    """A trace file that is not a valid workload."""


@dataclass(frozen=True)
class ToolGap:
    kind: str  # "calculator": real arithmetic, instant; "api": lognormal sleep; "slow": heavy-tailed sleep
    seconds: float  # sleep length (0 for the calculator)
    expression: str = ""  # the calculator's arithmetic


@dataclass(frozen=True)
class Call:
    text: str  # new text this call adds to the prompt
    text_tokens: int  # its length in tokens
    max_tokens: int  # exact output length (the call sets ignore_eos)
    tool_after: ToolGap | None = None


@dataclass(frozen=True)
class AgentProgram:
    agent_id: str
    kind: str  # workload class, e.g. "interactive" or "background": metrics group by it
    priority: int  # higher runs first under the priority scheduler
    arrival_s: float  # seconds after the run starts
    history: bool  # True: each prompt = previous prompt + previous output + this call's text
    prefix: str | None  # key into Trace.prefixes: a shared text put before the first call's text
    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Trace:
    name: str
    seed: int
    description: str
    prefixes: dict[str, str] = field(default_factory=dict)
    agents: tuple[AgentProgram, ...] = ()

    def agent(self, agent_id: str) -> AgentProgram:
        for program in self.agents:
            if program.agent_id == agent_id:
                return program
        raise TraceError(f"trace {self.name!r} has no agent {agent_id!r}")

    def requested_output_tokens(self) -> int:
        return sum(call.max_tokens for agent in self.agents for call in agent.calls)

    def n_calls(self) -> int:
        return sum(len(agent.calls) for agent in self.agents)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())


def load_trace(path: Path) -> Trace:
    try:
        return trace_from_dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise TraceError(f"cannot read trace {path}: {err}") from err


def trace_from_dict(data: dict) -> Trace:
    try:
        prefixes = {str(k): str(v) for k, v in data.get("prefixes", {}).items()}
        agents = tuple(_agent_from_dict(a, prefixes) for a in data["agents"])
        trace = Trace(
            name=str(data["name"]),
            seed=int(data["seed"]),
            description=str(data.get("description", "")),
            prefixes=prefixes,
            agents=agents,
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise TraceError(f"malformed trace: {err!r}") from err
    ids = [a.agent_id for a in trace.agents]
    if not ids or len(set(ids)) != len(ids):
        raise TraceError(f"trace {trace.name!r} needs at least one agent and unique agent ids")
    return trace


def _agent_from_dict(data: dict, prefixes: dict[str, str]) -> AgentProgram:
    calls = tuple(_call_from_dict(c) for c in data["calls"])
    if not calls:
        raise TraceError(f"agent {data['agent_id']!r} has no calls")
    prefix = data.get("prefix")
    if prefix is not None and prefix not in prefixes:
        raise TraceError(f"agent {data['agent_id']!r} names unknown prefix {prefix!r}")
    arrival = float(data["arrival_s"])
    if arrival < 0:
        raise TraceError(f"agent {data['agent_id']!r} arrives before the start ({arrival})")
    return AgentProgram(
        agent_id=str(data["agent_id"]),
        kind=str(data["kind"]),
        priority=int(data["priority"]),
        arrival_s=arrival,
        history=bool(data["history"]),
        prefix=prefix,
        calls=calls,
    )


def _call_from_dict(data: dict) -> Call:
    tool = data.get("tool_after")
    gap = None
    if tool is not None:
        if tool["kind"] not in TOOL_KINDS or float(tool["seconds"]) < 0:
            raise TraceError(f"bad tool gap {tool!r}: kind must be one of {TOOL_KINDS}, seconds non-negative")
        gap = ToolGap(kind=tool["kind"], seconds=float(tool["seconds"]), expression=str(tool.get("expression", "")))
    call = Call(
        text=str(data["text"]), text_tokens=int(data["text_tokens"]), max_tokens=int(data["max_tokens"]), tool_after=gap
    )
    if call.max_tokens <= 0 or call.text_tokens < 0:
        raise TraceError(f"bad call lengths: text_tokens={call.text_tokens}, max_tokens={call.max_tokens}")
    return call
