"""Preemption through the real kernel: a high-priority call displaces a running low-priority one, whose KV goes to the
shared-memory arena (or is dropped and recomputed) and whose output is still exactly that of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ipc.address import ADDRESS_ENV
from kernel.launch import KernelProcess
from sdk import connect
from tests.kernel.harness import wait_until

REPO = Path(__file__).resolve().parents[2]

PROMPT = "The history of the printing press begins"
LONG, SHORT = 120, 8


@pytest.mark.parametrize("mode", ["snapshot", "recompute"])
def test_high_priority_call_preempts_and_the_victim_resumes_token_identical(tmp_path, mode):
    address = f"ipc://{tmp_path}/kernel.sock"
    options = {
        "dtype": "float32",
        "scheduler": "priority",
        "max-batch": 1,
        "kv-budget": 2048,
        "arena-mb": 16,
        "preempt-mode": mode,
    }
    with KernelProcess(address, options, tmp_path / "aiosd.log"):
        with connect(address, name="reference") as reference:
            uninterrupted = reference.generate(PROMPT, max_tokens=LONG, ignore_eos=True)
        finished, results = [], {}

        def background():
            with connect(address, name="background", priority=-5) as low:
                results["low"] = low.generate(PROMPT, max_tokens=LONG, ignore_eos=True)
            finished.append("low")

        thread = threading.Thread(target=background)
        with connect(address, name="interactive", priority=0) as high:
            thread.start()
            wait_until(lambda: high.stats()["requests_running"] == 1, timeout_s=300, what="background call running")
            results["high"] = high.generate("The capital of France is", max_tokens=SHORT, ignore_eos=True)
            finished.append("high")
            thread.join(timeout=600)
            stats = high.stats()
    assert finished == ["high", "low"]
    assert results["low"] == uninterrupted
    assert stats["preemptions"] >= 1 and stats["resumes"] >= 1
    if mode == "snapshot":
        assert stats["snapshot_bytes_loaded"] > 0 and stats["recomputed_tokens"] == 0
    else:
        assert stats["recomputed_tokens"] > 0


LOW_AGENT = f"""
import sys
from sdk import connect
with connect(sys.argv[1], name="victim", priority=-5) as k:
    for _ in k.stream(prompt={PROMPT!r}, max_tokens=1000, ignore_eos=True):
        pass
"""


def test_agent_killed_while_its_snapshot_sits_in_the_arena_has_it_freed(tmp_path):
    address = f"ipc://{tmp_path}/kernel.sock"
    options = {
        "dtype": "float32",
        "scheduler": "priority",
        "max-batch": 1,
        "kv-budget": 2048,
        "arena-mb": 16,
        "retention": "off",
    }
    with KernelProcess(address, options, tmp_path / "aiosd.log"), connect(address, name="observer") as observer:
        victim = subprocess.Popen([sys.executable, "-c", LOW_AGENT, address], cwd=REPO)
        wait_until(lambda: observer.stats()["requests_running"] == 1, timeout_s=300, what="victim running")
        served = []
        thread = threading.Thread(target=_generate, args=(address, "Tell me a story.", 400, served))
        thread.start()
        wait_until(lambda: observer.stats()["snapshots"] == 1, timeout_s=300, what="victim preempted into the arena")
        ps = subprocess.run(
            [sys.executable, "-m", "kernel.cli", "ps"],
            env={**os.environ, ADDRESS_ENV: address},
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        victim_line = next(line for line in ps.splitlines() if " victim " in line)
        assert ":preempted prio=-5 tokens=" in victim_line and ":running prio=0 " in ps
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        stats = wait_until(lambda: _freed(observer.stats()), timeout_s=120, what="snapshot freed")
        thread.join(timeout=600)
    assert served == [400]  # the interactive call was served to the end
    assert stats["arena_used"] == 0 and stats["requests_preempted"] == 0


def _generate(address, prompt, max_tokens, served):
    with connect(address, name="interactive", priority=0) as high:
        served.append(high.generate(prompt, max_tokens=max_tokens, ignore_eos=True, full=True).usage.completion_tokens)


def _freed(stats):
    return stats if stats["snapshots"] == 0 and stats["agents"] == 2 else None  # the observer and the interactive
