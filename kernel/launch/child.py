"""A program as a child process that says when it is ready: one harness for aiosd, the gateway and their tests.

Contract: start() launches argv with stdout piped and stderr into log_path, a reader thread tees stdout into the log
and start() returns the first stdout line beginning with the ready prefix. If the program exits first, or prints no
such line within ready_timeout_s, start() stops it and raises ChildStartError naming the log. stop() sends SIGTERM,
then SIGKILL after its timeout, and returns the exit code; it is safe to call twice.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from pathlib import Path


class ChildStartError(RuntimeError):
    pass


class ChildProcess:
    def __init__(
        self,
        argv: list[str],
        ready_prefix: str,
        log_path: Path,
        ready_timeout_s: float,
        what: str,
        env: dict[str, str] | None = None,
        error: type[ChildStartError] = ChildStartError,
    ):
        """what names the program in errors ("aiosd", "gateway"); env adds to (not replaces) this environment."""
        self.argv = list(argv)
        self._ready_prefix = ready_prefix
        self._log_path = log_path
        self._ready_timeout_s = ready_timeout_s
        self._what = what
        self._env = None if env is None else {**os.environ, **env}
        self._error = error
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.ready_line = ""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return Path(self._log_path)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        self._log = open(self._log_path, "w")
        self._log.write(" ".join(self.argv) + "\n")
        self._log.flush()
        self._proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1, env=self._env
        )
        self._reader = threading.Thread(target=self._copy_stdout, daemon=True)
        self._reader.start()
        try:
            self.ready_line = self._wait_ready()
        except ChildStartError:
            self.stop()
            raise
        return self.ready_line

    def _wait_ready(self) -> str:
        while True:
            try:
                line = self._lines.get(timeout=self._ready_timeout_s)
            except queue.Empty:
                raise self._error(
                    f"{self._what} not ready after {self._ready_timeout_s:.0f} s; see {self._log_path}"
                ) from None
            if line is None:
                code = self._proc.wait()
                raise self._error(f"{self._what} exited with {code} before it was ready; see {self._log_path}")
            if line.startswith(self._ready_prefix):
                return line.strip()

    def _copy_stdout(self) -> None:
        """I/O thread: tee the child's stdout into the log and hand each line to the waiting start()."""
        for line in self._proc.stdout:
            self._log.write(line)
            self._log.flush()
            self._lines.put(line)
        self._lines.put(None)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code (None if never started)."""
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
