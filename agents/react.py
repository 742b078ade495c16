"""A ReAct agent (reason + act) on tool calls: the model calls the kernel's tools through constrained decoding (its
calls always parse and fit the tool's schema), the agent runs each call with the tool.call syscall and feeds the result
back as a tool message, until the model answers in text. Observations come only from tools. The trace is printed as it
unfolds.

    python agents/react.py "What is 17 * 23 + 4?"          (or: aios run agents/react.py "...")
    python agents/react.py --memory "Where is the spare key?"   (may also search this user's notes agent's memory)
"""

from __future__ import annotations

import argparse
import json

from sdk import Agent

INSTRUCTIONS = (
    "You answer questions. Use the calculate tool for any arithmetic, with the whole expression at once; "
    "when a tool has given you the result, answer in one short sentence that states it."
)
MEMORY_NOTE = " Use the search_memory tool to look up what the user told you before."
TOOLS = ("calculate",)
# A worked exchange as earlier turns: small models follow a format they have seen far better than one they were told.
EXAMPLE = [
    {"role": "user", "content": "What is 3 * (4 + 5)?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_example",
                "type": "function",
                "function": {"name": "calculate", "arguments": '{"expression": "3 * (4 + 5)"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_example", "content": "27"},
    {"role": "assistant", "content": "3 * (4 + 5) = 27."},
]


class ReActAgent(Agent):
    name = "react"

    def run(self, args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="react", description="Answer with the kernel's tools, ReAct style.")
        parser.add_argument("question", nargs="+")
        parser.add_argument("--max-steps", type=int, default=4)
        parser.add_argument("--memory", action="store_true", help="also offer the search_memory tool")
        options = parser.parse_args(args)
        wanted = TOOLS + (("search_memory",) if options.memory else ())
        tools = [t for t in self.kernel.tools.as_openai() if t["function"]["name"] in wanted]
        answer = solve(self.kernel, " ".join(options.question), tools, options.max_steps, memory_note=options.memory)
        print(f"=> {answer}" if answer is not None else f"=> (no final answer after {options.max_steps} steps)")
        return 0


def solve(
    kernel,
    question: str,
    tools: list[dict],
    max_steps: int = 4,
    chat=None,
    memory_note: bool = False,
    log=lambda line: print(line, flush=True),
) -> str | None:
    """The ReAct loop; the final answer, or None. chat(messages, tool_choice) → a Completion with tool_calls
    (default: the kernel's constrained tool calling; bench/react_bench.py passes an unconstrained one to compare)."""
    chat = chat or (
        lambda messages, choice: kernel.chat(messages, tools=tools, tool_choice=choice, max_tokens=96, full=True)
    )
    messages = [
        {"role": "system", "content": INSTRUCTIONS + (MEMORY_NOTE if memory_note else "")},
        *EXAMPLE,
        {"role": "user", "content": question},
    ]
    seen = set()
    for step in range(max_steps):
        # the first turn must act (a small model otherwise guesses the arithmetic); later turns may answer
        choice = "required" if step == 0 else "auto" if step < max_steps - 1 else "none"
        reply = chat(messages, choice)
        if not reply.tool_calls:
            return reply.text.strip()
        messages.append(
            {
                "role": "assistant",
                "content": reply.text,
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in reply.tool_calls
                ],
            }
        )
        for call in reply.tool_calls:
            log(f"Action: {call.name} {call.arguments}")
            if (call.name, call.arguments) in seen:  # the same call again: the answer is already known
                observation = "You already have this result; answer now."
            else:
                seen.add((call.name, call.arguments))
                output = kernel.tools.call(call.name, json.loads(call.arguments))
                observation = output.text if not output.is_error else f"error: {output.text}"
            log(f"Observation: {observation}")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": observation})
    return None


if __name__ == "__main__":
    ReActAgent.main()
