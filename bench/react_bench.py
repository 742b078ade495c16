"""Tool-call success of the ReAct agent (agents/react.py) on a fixed set of arithmetic and lookup tasks, with the
kernel's constrained decoding and without it (the same prompt, the model's free text parsed for calls), same run:
parse rate (tool-call blocks that parse into a call of a real tool with schema-valid arguments) and correct-answer
rate (the final answer contains the expected value).

    python -m bench.react_bench [--tasks 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agents.react import solve
from kernel.engine.structured.tool_calls import CALL_OPEN, parse_tool_calls
from kernel.engine.structured.tool_prompt import render_tool_prompt
from kernel.launch import KernelProcess
from sdk import connect

FACTS = [
    ("Ada's flight number", "AF{}"),
    ("the locker code", "{}"),
    ("the room of the budget meeting", "B{}"),
    ("Tom's phone extension", "{}"),
    ("the parking spot", "P{}"),
]


@dataclass
class Counts:
    blocks: int = 0  # tool-call blocks the model wrote
    parsed: int = 0  # ... that parsed into a valid call
    correct: int = 0
    tasks: int = 0


def tasks(count: int, seed: int) -> list[tuple[str, str, bool]]:
    """(question, expected answer text, needs memory), 4 in 5 arithmetic, 1 in 5 lookups."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if i % 5 == 4:
            what, pattern = FACTS[(i // 5) % len(FACTS)]
            out.append((f"What is {what}?", pattern.format(100 + i), True))
        else:
            a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 999)
            out.append((f"What is {a} * {b} + {c}?", str(a * b + c), False))
    return out


class Unconstrained:
    """The same rendered prompt as the kernel's, sent as a plain chat: calls are whatever the model writes."""

    def __init__(self, kernel, tools, counts: Counts):
        self.kernel, self.tools, self.counts = kernel, tools, counts

    def __call__(self, messages, choice):
        rendered = render_tool_prompt(messages, self.tools if choice != "none" else None, choice)
        reply = self.kernel.chat(rendered, max_tokens=96, full=True)
        content, calls = parse_tool_calls(reply.text)
        names = {t["function"]["name"] for t in self.tools}
        self.counts.blocks += reply.text.count(CALL_OPEN)
        good = [c for c in calls if c.name in names and _valid(c, self.tools)]
        self.counts.parsed += len(good)
        return _Reply(content, [_Call(c.id, c.name, c.arguments_json) for c in good])


@dataclass
class _Call:
    id: str
    name: str
    arguments: str


@dataclass
class _Reply:
    text: str
    tool_calls: list


def _valid(call, tools) -> bool:
    import jsonschema

    schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == call.name)
    try:
        jsonschema.validate(json.loads(call.arguments_json), schema)
        return True
    except (jsonschema.ValidationError, ValueError):
        return False


def run(kernel, tools, items, constrained: bool) -> Counts:
    counts = Counts()
    for question, expected, needs_memory in items:
        offered = [
            t
            for t in tools
            if t["function"]["name"] in (("calculate", "search_memory") if needs_memory else ("calculate",))
        ]
        chat = None
        if not constrained:
            chat = Unconstrained(kernel, offered, counts)
        else:

            def chat(messages, choice, offered=offered):
                reply = kernel.chat(messages, tools=offered, tool_choice=choice, max_tokens=96, full=True)
                counts.blocks += len(reply.tool_calls)
                counts.parsed += len(reply.tool_calls)  # constrained: every call parses and validates
                return reply

        answer = solve(kernel, question, offered, chat=chat, memory_note=needs_memory, log=lambda line: None)
        counts.tasks += 1
        counts.correct += answer is not None and expected in answer
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.react_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    items = tasks(args.tasks, args.seed)
    with tempfile.TemporaryDirectory(prefix="aios-react-bench-") as workdir:
        options = {
            "dtype": "float32",
            "tools": "default",
            "memory": "on",
            "storage": "on",
            "data-dir": f"{workdir}/data",
        }
        with (
            KernelProcess(f"ipc://{workdir}/kernel.sock", options, Path(workdir) / "aiosd.log") as kernel,
            connect(kernel.address, name="react") as k,
        ):
            for question, expected, needs_memory in items:  # the lookups' facts, in the agent's memory
                if needs_memory:
                    k.memory.add(f"{question[8:-1].capitalize()} is {expected}.")
            tools = k.tools.as_openai()
            results = {"constrained": run(k, tools, items, True), "unconstrained": run(k, tools, items, False)}
    print(f"ReAct agent, {args.tasks} tasks (seed {args.seed}), SmolLM2-135M float32")
    print(f"{'decoding':<16}{'call blocks':>12}{'parsed+valid':>14}{'parse rate':>12}{'correct':>9}{'rate':>7}")
    for name, c in results.items():
        rate = c.parsed / c.blocks if c.blocks else float("nan")
        print(f"{name:<16}{c.blocks:>12}{c.parsed:>14}{rate:>12.2f}{c.correct:>9}{c.correct / c.tasks:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
