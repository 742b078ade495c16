"""The gateway as a child process, for tests and benches: start `aios gateway` on a free port, wait for its ready
line, stop it with SIGTERM (kernel/launch/child.py's harness, as aiosd's KernelProcess is)."""

from __future__ import annotations

import sys
from pathlib import Path

from kernel.gateway.server import READY_PREFIX
from kernel.launch.child import ChildProcess, ChildStartError


class GatewayStartError(ChildStartError):
    pass


class GatewayProcess(ChildProcess):
    """One gateway in front of the kernel at address; `url` (…/v1) once started. Output goes to log_path."""

    def __init__(
        self,
        address: str,
        keys_path: str | None,
        log_path: Path,
        ready_timeout_s: float = 60.0,
        env: dict[str, str] | None = None,
    ):
        """env: added to this environment, e.g. AIOS_GATEWAY_LOOP / _HTTP (server.py)."""
        argv = [sys.executable, "-m", "kernel.cli", "--address", address, "gateway", "--listen", "127.0.0.1:0"]
        if keys_path is not None:
            argv += ["--keys", str(keys_path)]
        super().__init__(argv, READY_PREFIX, log_path, ready_timeout_s, "gateway", env=env, error=GatewayStartError)
        self.url = ""

    def start(self) -> str:
        line = super().start()
        self.url = line.split("url=", 1)[1].split()[0]
        return line

    def stop(self, timeout_s: float = 30.0) -> int | None:
        return super().stop(timeout_s)
