"""A ReAct agent (reason + act): the model writes Thought/Action lines, the agent runs the calculator tool for each
Action and feeds back an Observation, until the model gives a Final Answer. The trace is printed as it unfolds.

    python agents/react.py "What is 17 * 23 + 4?"      (or: aios run agents/react.py "...")
"""
from __future__ import annotations

import argparse
import re

from agents.calculator import CalculatorError, calculate
from sdk import Agent

INSTRUCTIONS = """You answer questions step by step. You have one tool, a calculator for arithmetic.
Write "Thought: ..." then "Action: calculator[expression]" and wait for the Observation; when you know the answer,
write "Thought: ..." then "Final Answer: ..."."""

# A worked example as earlier turns of the conversation: small models follow a format they have seen far better than
# one they have only been told about.
EXAMPLE = [
    {"role": "user", "content": "Question: What is 3 * (4 + 5)?"},
    {"role": "assistant", "content": "Thought: I need to compute 3 * (4 + 5).\nAction: calculator[3 * (4 + 5)]"},
    {"role": "user", "content": "Observation: 27"},
    {"role": "assistant", "content": "Thought: I know the answer.\nFinal Answer: 27"},
]

# calculator[expr] is the asked-for form; a bare "Action: 2 + 2 = 5" is how a small model often writes it anyway: take
# the expression, drop its guessed result.
ACTION = re.compile(r"Action:\s*(?:calculator\s*\[(?P<bracketed>.+?)\]|(?P<bare>[^=\n]+))")
FINAL = re.compile(r"Final Answer:\s*(.+)")


class ReActAgent(Agent):
    name = "react"

    def run(self, args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="react", description="Answer with a calculator, ReAct style.")
        parser.add_argument("question", nargs="+")
        parser.add_argument("--max-steps", type=int, default=4)
        options = parser.parse_args(args)
        question = " ".join(options.question)
        messages = [{"role": "system", "content": INSTRUCTIONS}, *EXAMPLE,
                    {"role": "user", "content": f"Question: {question}"}]
        for _ in range(options.max_steps):
            step = self.kernel.chat(messages, max_tokens=80, stop=["Observation:"]).strip()
            print(step, flush=True)
            final = FINAL.search(step)
            action = ACTION.search(step)
            if final and not (action and action.start() < final.start()):
                print(f"=> {final.group(1).strip()}")
                return 0
            if action is None:
                print("=> (the model gave no action and no final answer)")
                return 0
            observation = _use_calculator(action.group("bracketed") or action.group("bare"))
            print(f"Observation: {observation}", flush=True)
            messages += [{"role": "assistant", "content": step[:action.end()]},
                         {"role": "user", "content": f"Observation: {observation}"}]
        print(f"=> (no final answer after {options.max_steps} steps)")
        return 0


def _use_calculator(expression: str) -> str:
    try:
        return str(calculate(expression))
    except CalculatorError as error:
        return f"error: {error}"


if __name__ == "__main__":
    ReActAgent.main()
