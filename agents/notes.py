"""A notes agent with a memory: it remembers what it is told, across runs, and answers from what it remembers.

    python agents/notes.py remember "My sister's name is Ada and she lives in Lyon."
    python agents/notes.py ask "Where does my sister live?"
    python agents/notes.py list            python agents/notes.py forget ID

Each run is a new process; the memories live in the kernel's memory service under this agent's name, so a later run
(even after aiosd restarts) finds them. Answers are grounded in the closest notes (mem.search), which are put into the
prompt and printed with their similarity.
"""

from __future__ import annotations

import argparse

from sdk import Agent

SYSTEM_PROMPT = (
    "You answer questions using only the user's notes below. If the notes do not contain the answer, say "
    "you do not know. Answer in one sentence."
)
MIN_SCORE = 0.2  # cosine similarity under which a note is not about the question at all


class NotesAgent(Agent):
    name = "notes"

    def run(self, args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="notes", description="Remember notes; answer from them.")
        commands = parser.add_subparsers(dest="command", required=True)
        commands.add_parser("remember").add_argument("text", nargs="+")
        ask = commands.add_parser("ask")
        ask.add_argument("question", nargs="+")
        ask.add_argument("-k", type=int, default=3, help="notes to retrieve")
        commands.add_parser("list")
        commands.add_parser("forget").add_argument("id")
        options = parser.parse_args(args)
        memory = self.kernel.memory
        if options.command == "remember":
            print(f"remembered {memory.add(' '.join(options.text), {'kind': 'note'})}")
        elif options.command == "list":
            for record in memory.list():
                print(f"{record.id}  {record.text}")
        elif options.command == "forget":
            memory.delete(options.id)
            print(f"forgot {options.id}")
        else:
            return self.answer(" ".join(options.question), options.k)
        return 0

    def answer(self, question: str, k: int) -> int:
        notes = [hit for hit in self.kernel.memory.search(question, k=k) if hit.score >= MIN_SCORE]
        for hit in notes:
            print(f"[note {hit.score:.2f}] {hit.text}")
        context = "\n".join(f"- {hit.text}" for hit in notes) or "(no notes)"
        reply = self.kernel.chat(
            [
                {"role": "system", "content": f"{SYSTEM_PROMPT}\n\nNotes:\n{context}"},
                {"role": "user", "content": question},
            ],
            max_tokens=64,
        )
        print(reply.strip())
        return 0


if __name__ == "__main__":
    NotesAgent.main()
