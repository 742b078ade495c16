"""SIGTERM with full service queues: aiosd finishes the calls in flight, answers every queued call `shutdown` (none is
left unanswered, none is run after the signal), and exits by itself instead of draining the queues."""

from __future__ import annotations

from kernel.launch import KernelProcess
from tests.e2e.conftest import KERNEL_OPTIONS
from tests.kernel.raw_agent import RawAgent

AGENTS = 6
CALLS = 64  # one agent's lane on the memory service, full
TEXT = "The spare key is under the blue pot near the door. " * 600  # ~31k chars: a slow embedding each


def test_sigterm_with_full_memory_queues_answers_each_queued_call_shutdown_and_exits(tmp_path):
    address = f"ipc://{tmp_path}/kernel.sock"
    options = KERNEL_OPTIONS | {"memory": "on"}
    agents = [RawAgent(address) for _ in range(AGENTS)]
    kernel = KernelProcess(address, options, tmp_path / "aiosd.log")
    kernel.start()
    try:
        for n, agent in enumerate(agents):
            agent.hello(f"flooder{n}")
            for call in range(CALLS):
                agent.send("mem.add", call, {"text": f"{call} {TEXT}"})
            # the loop takes a connection's calls in order: once the ping is answered, its adds are all queued
            agent.send("kernel.ping", "sync", {})
        for agent in agents:
            replies = [agent.recv()]
            while replies[-1]["id"] != "sync":
                replies.append(agent.recv())
            agent.early = replies[:-1]
        assert kernel.stop() == 0  # exits by itself (SIGKILL after 60 s would not be 0)
        outcomes = []
        for agent in agents:
            replies = agent.early + [agent.recv() for _ in range(CALLS - len(agent.early))]
            assert sorted(reply["id"] for reply in replies) == list(range(CALLS))  # one answer each
            outcomes += ["ok" if reply["type"] == "result" else reply["body"]["code"] for reply in replies]
        assert set(outcomes) <= {"ok", "shutdown", "busy"}
        assert outcomes.count("shutdown") > 0, outcomes  # queued calls were answered, not run
    finally:
        kernel.stop()
        for agent in agents:
            agent.close()
