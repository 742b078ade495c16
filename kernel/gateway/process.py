"""The gateway as a child process, for tests and benches: start `aios gateway` on a free port, wait for its ready
line, stop it with SIGTERM. The same shape as bench/kernel_proc.py's KernelProcess."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from kernel.gateway.server import READY_PREFIX


class GatewayStartError(RuntimeError):
    pass


class GatewayProcess:
    """One gateway in front of the kernel at address; `url` (…/v1) once started. Output goes to log_path."""

    def __init__(
        self,
        address: str,
        keys_path: str | None,
        log_path: Path,
        ready_timeout_s: float = 60.0,
        env: dict[str, str] | None = None,
    ):
        self._argv = [sys.executable, "-m", "kernel.cli", "--address", address, "gateway", "--listen", "127.0.0.1:0"]
        if keys_path is not None:
            self._argv += ["--keys", str(keys_path)]
        self._log_path = log_path
        self._env = None if env is None else {**os.environ, **env}  # e.g. AIOS_GATEWAY_LOOP / _HTTP (server.py)
        self._ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.url = ""

    def __enter__(self) -> GatewayProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        self._log = open(self._log_path, "w")
        self._proc = subprocess.Popen(
            self._argv, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1, env=self._env
        )
        self._reader = threading.Thread(target=self._copy_stdout, daemon=True)
        self._reader.start()
        while True:
            try:
                line = self._lines.get(timeout=self._ready_timeout_s)
            except queue.Empty:
                self.stop()
                raise GatewayStartError(
                    f"gateway not ready after {self._ready_timeout_s:.0f} s; see {self._log_path}"
                ) from None
            if line is None:
                code = self._proc.wait()
                self.stop()
                raise GatewayStartError(f"gateway exited with {code} before it was ready; see {self._log_path}")
            if line.startswith(READY_PREFIX):
                self.url = line.split("url=", 1)[1].split()[0]
                return

    def _copy_stdout(self) -> None:
        for line in self._proc.stdout:
            self._log.write(line)
            self._log.flush()
            self._lines.put(line)
        self._lines.put(None)

    def stop(self, timeout_s: float = 30.0) -> int | None:
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
