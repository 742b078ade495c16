"""The kernel as a real process, agents as real processes, the real model."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from agents.qa import SYSTEM_PROMPT
from ipc.address import ADDRESS_ENV
from kernel.engine.core.interface import EngineRequest, SamplingParams
from kernel.engine.factory import load_engine
from kernel.launch import KernelProcess
from sdk import connect
from tests.e2e.conftest import KERNEL_OPTIONS
from tests.kernel.harness import wait_until
from tests.tools.reachable import needs_sandbox_reach

REPO = Path(__file__).resolve().parents[2]
QUESTIONS = [
    "What is the capital of France?",
    "Name a primary color.",
    "What is 2 + 2?",
    "Who wrote Hamlet?",
    "What do bees make?",
    "What is water made of?",
    "How many days are in a week?",
    "What is the Sun?",
]
MAX_TOKENS = 12
LONG_STREAM = """
import sys
from sdk import connect
k = connect(name="doomed")
for i, _ in enumerate(k.stream(prompt="Count forever: 1, 2, 3,", max_tokens=3000, ignore_eos=True)):
    if i == 0:
        print("streaming", flush=True)
"""


def _messages(question):
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def _solo_answers(questions):
    """Each question run alone on an engine of our own: what every agent must get back from the shared kernel."""
    engine = load_engine("cpu", dtype="float32", kv_budget_tokens=1024, max_batch=1)
    answers = []
    for i, question in enumerate(questions):
        engine.add(
            EngineRequest(
                f"solo{i}", engine.apply_chat_template(_messages(question)), SamplingParams(max_tokens=MAX_TOKENS)
            )
        )
        parts, finished = [], False
        while not finished:
            for event in engine.step():
                parts.append(event.text)
                finished = finished or event.finished
        answers.append("".join(parts).strip())
    return answers


def _agent(address, *argv, **popen):
    return subprocess.Popen(
        [sys.executable, *argv],
        env={**os.environ, ADDRESS_ENV: address},
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def test_eight_agent_processes_at_once_each_get_the_engines_answer(aiosd):
    procs = [_agent(aiosd.address, "agents/qa.py", "--max-tokens", str(MAX_TOKENS), q) for q in QUESTIONS]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == _solo_answers(QUESTIONS)


def test_kill_9_of_an_agent_mid_generation_frees_its_kv_and_spares_the_others(aiosd):
    doomed = _agent(aiosd.address, "-c", LONG_STREAM)
    assert doomed.stdout.readline().strip() == "streaming"
    others = [_agent(aiosd.address, "agents/qa.py", "--max-tokens", "8", q) for q in QUESTIONS[:2]]
    with connect(aiosd.address, name="observer") as kernel:
        assert kernel.stats()["requests_running"] >= 1
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(60)
        assert [p.communicate(timeout=600)[0].strip() != "" for p in others] == [True, True]
        assert [p.returncode for p in others] == [0, 0]
        stats = wait_until(lambda: (s := kernel.stats())["requests_running"] == 0 and s, what="no request running")
        assert stats["free_slots"] == stats["total_slots"]
        assert "doomed" not in {agent.name for agent in kernel.ps()}


def test_aios_cli_against_the_running_kernel(aiosd):
    env = {**os.environ, ADDRESS_ENV: aiosd.address}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "kernel.cli",
            "run",
            "agents/qa.py",
            "--max-tokens",
            "8",
            "What is the capital of France?",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    stats = subprocess.run(
        [sys.executable, "-m", "kernel.cli", "stats"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "free_slots" in stats.stdout and "scheduler" in stats.stdout
    ps = subprocess.run(
        [sys.executable, "-m", "kernel.cli", "ps"], env=env, capture_output=True, text=True, timeout=120
    )
    assert ps.stdout.startswith("AGENT") and "aios ps" in ps.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "kernel.cli", "kill", "a9999"], env=env, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 1 and "not_found" in missing.stderr


@needs_sandbox_reach()
def test_react_agent_answers_from_its_tool_call(tmp_path):
    """The demo's question: the model's constrained call runs the kernel's calculator; the answer is the tool's."""
    address = f"ipc://{tmp_path}/kernel.sock"
    with KernelProcess(address, {**KERNEL_OPTIONS, "tools": "default"}, tmp_path / "aiosd.log"):
        out, err = _agent(address, "agents/react.py", "What is 17 * 23 + 4?").communicate(timeout=600)
    lines = out.splitlines()
    assert "Observation: 395" in lines, out + err
    assert lines[-1].startswith("=> ") and "395" in lines[-1], out + err
