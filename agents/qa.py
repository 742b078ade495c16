"""A question-answering agent: one chat syscall, the answer on stdout.

python agents/qa.py "What is the capital of France?"      (or: aios run agents/qa.py "...")
"""

from __future__ import annotations

import argparse

from sdk import Agent

SYSTEM_PROMPT = "You are a helpful assistant. Answer the question in one or two sentences."


class QuestionAnswerer(Agent):
    name = "qa"

    def run(self, args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="qa", description="Answer a question with the kernel's model.")
        parser.add_argument("question", nargs="+")
        parser.add_argument("--max-tokens", type=int, default=64)
        options = parser.parse_args(args)
        question = " ".join(options.question)
        answer = self.kernel.chat(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
            max_tokens=options.max_tokens,
        )
        print(answer.strip())
        return 0


if __name__ == "__main__":
    QuestionAnswerer.main()
