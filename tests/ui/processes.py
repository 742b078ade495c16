"""Agent processes for the dashboard tests: tests/ui/agent_program.py started with the kernel's address, its stdout
read line by line on a thread so a test can wait for a line with a deadline."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from ipc.address import ADDRESS_ENV

PROGRAM = Path(__file__).with_name("agent_program.py")
ROOT = Path(__file__).resolve().parents[2]


class AgentProcess:
    def __init__(self, address: str, name: str, *args: str):
        env = {**os.environ, ADDRESS_ENV: address, "PYTHONPATH": str(ROOT)}
        self._proc = subprocess.Popen(
            [sys.executable, str(PROGRAM), name, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.agent_id = self.line("agent ", 120).split()[1]

    def _read(self) -> None:
        for line in self._proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def line(self, prefix: str, timeout_s: float) -> str:
        """The next output line starting with prefix; AssertionError if the process ends or timeout_s passes."""
        while True:
            try:
                line = self._lines.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no line {prefix!r} from the agent within {timeout_s:.0f} s") from None
            if line is None:
                raise AssertionError(f"the agent exited ({self._proc.wait()}) before printing {prefix!r}")
            if line.startswith(prefix):
                return line

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdin.close()  # stdout closes when the reader thread meets its end

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
