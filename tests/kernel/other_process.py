"""An agent in a process of its own (a child of the test), for checks that one agent cannot touch another's."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, sys
if sys.argv[3] == "detached" and os.fork():     # the agent runs in a grandchild, reparented away from the test
    os._exit(0)
from sdk import connect
with connect(sys.argv[1], name=sys.argv[2]) as k:
    print(k.agent_id, flush=True)
    sys.stdin.read()          # lives until the test closes our stdin
"""


class OtherProcessAgent:
    """detached: not a descendant of the test's process (so not an agent the test's agents own)."""

    def __init__(self, address: str, name: str = "other", detached: bool = True):
        self.process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, address, name, "detached" if detached else "child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.agent_id = self.process.stdout.readline().strip()
        assert self.agent_id, "the other agent did not connect"

    def close(self) -> None:
        self.process.stdin.close()
        self.process.stdout.read()  # EOF once the agent's process (child or grandchild) has exited
        self.process.wait(60)

    def __enter__(self) -> OtherProcessAgent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
