"""The demo: start aiosd on the default model, run several example agents as concurrent OS processes, print each
one's answer and latency, stop the kernel. The notes agent is told two facts in the first round (each a process of its
own) and asked about them in a second round: its memory outlives its processes.

    python -m agents.demo [--dtype float32] [--scheduler rr]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ipc.address import ADDRESS_ENV
from kernel.launch import KernelProcess

AGENTS_DIR = Path(__file__).parent
JOBS = [
    ("qa.py", "What is the capital of France?"),
    ("qa.py", "Name three primary colors."),
    ("qa.py", "Why is the sky blue?"),
    ("qa.py", "What does a CPU do?"),
    ("react.py", "What is 17 * 23 + 4?"),
    ("notes.py", "remember My sister Ada lives in Lyon and works as a pharmacist."),
    ("notes.py", "remember The spare house key is under the blue flower pot."),
]
LATER_JOBS = [("notes.py", "ask Where is the spare key?")]


@dataclass
class Finished:
    program: str
    question: str
    output: str
    status: int
    latency_s: float


def run_agents(address: str, jobs: list[tuple[str, str]], timeout_s: float = 600.0) -> list[Finished]:
    """Start every agent at once, each its own process; wait for all."""
    env = {**os.environ, ADDRESS_ENV: address}
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, str(AGENTS_DIR / program), *_split(program, question)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for program, question in jobs
    ]
    finished: list[Finished | None] = [None] * len(jobs)

    def wait(index: int) -> None:  # one waiting thread per agent, so each is timed at its own exit
        (program, question), proc = jobs[index], procs[index]
        output, _ = proc.communicate(timeout=timeout_s)
        finished[index] = Finished(program, question, output.strip(), proc.returncode, time.monotonic() - started)

    waiters = [threading.Thread(target=wait, args=(i,)) for i in range(len(jobs))]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    return finished


def _split(program: str, question: str) -> list[str]:
    """The notes agent takes a command word first; the others take the question as one argument."""
    return question.split(" ", 1) if program == "notes.py" else [question]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--scheduler", default="fifo")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aios-demo-") as workdir:
        address = f"ipc://{workdir}/kernel.sock"
        print(f"starting aiosd ({args.dtype}, {args.scheduler}) ...", flush=True)
        # the demo's agents call no irreversible tool: nobody would be there to approve one
        options = {
            "dtype": args.dtype,
            "scheduler": args.scheduler,
            "memory": "on",
            "storage": "on",
            "tools": "default",
            "tool-approval": "deny",
        }
        with KernelProcess(address, options, Path(workdir) / "aiosd.log") as kernel:
            print(kernel.ready_line, flush=True)
            print(f"running {len(JOBS)} agents as concurrent processes ...\n", flush=True)
            results = run_agents(address, JOBS)
            print(f"then {len(LATER_JOBS)} more, which use what the first round stored ...\n", flush=True)
            results += run_agents(address, LATER_JOBS)
        print("kernel stopped\n")
    for result in results:
        print(f"--- {result.program} [{result.latency_s:.1f} s, exit {result.status}] {result.question}")
        print(result.output + "\n")
    print(f"{'agent':<10}{'latency (s)':>12}  question")
    for result in results:
        print(f"{result.program:<10}{result.latency_s:>12.1f}  {result.question}")
    return 0 if all(r.status == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
