"""aiosd as a child process: start it with a configuration, wait for its ready line, stop it with SIGTERM."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

READY_PREFIX = "aiosd ready"


class KernelStartError(RuntimeError):
    pass


class KernelProcess:
    """One aiosd. Its stdout and stderr go to log_path; a reader thread watches stdout for the ready line."""

    def __init__(
        self, address: str, options: dict[str, str | list[str]], log_path: Path, ready_timeout_s: float = 180.0
    ):
        """options: flag → value; a list value repeats the flag (--engine-url A --engine-url B)."""
        self.address = address
        self._argv = [sys.executable, "-m", "kernel.daemon", "--address", address]
        # a data directory of its own beside the log, and the memory, file and tool services only when asked for:
        # their embedding model and server processes would load beside (and slow) the workloads measured here
        options = {
            "data-dir": str(Path(log_path).parent / "data"),
            "memory": "off",
            "storage": "off",
            "tools": "off",
            **options,
        }
        for flag, value in options.items():
            for one in value if isinstance(value, list) else [value]:
                self._argv += [f"--{flag}", str(one)]
        self._log_path = log_path
        self._ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.ready_line = ""

    def __enter__(self) -> KernelProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._log = open(self._log_path, "w")
        self._log.write(" ".join(self._argv) + "\n")
        self._log.flush()
        self._proc = subprocess.Popen(self._argv, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._copy_stdout, daemon=True)
        self._reader.start()
        try:
            self.ready_line = self._wait_ready()
        except KernelStartError:
            self.stop()
            raise

    def _wait_ready(self) -> str:
        while True:
            try:
                line = self._lines.get(timeout=self._ready_timeout_s)
            except queue.Empty:
                raise KernelStartError(
                    f"aiosd not ready after {self._ready_timeout_s:.0f} s; see {self._log_path}"
                ) from None
            if line is None:
                raise KernelStartError(
                    f"aiosd exited with {self._proc.wait()} before it was ready; see {self._log_path}"
                )
            if line.startswith(READY_PREFIX):
                return line.strip()

    def _copy_stdout(self) -> None:
        """I/O thread: tee aiosd's stdout into the log and hand each line to the waiting start()."""
        for line in self._proc.stdout:
            self._log.write(line)
            self._log.flush()
            self._lines.put(line)
        self._lines.put(None)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        code = self._proc.returncode
        self._reader.join(timeout=timeout_s)
        self._log.close()
        self._proc = None
        return code
