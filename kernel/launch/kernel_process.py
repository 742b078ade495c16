"""aiosd as a child process: start it with a configuration, wait for its ready line, stop it with SIGTERM.

The memory, file and tool services are off unless the options turn them on: their embedding model and server
processes load beside (and slow) what a bench measures, and most tests do not need them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kernel.launch.child import ChildProcess, ChildStartError

READY_PREFIX = "aiosd ready"


class KernelStartError(ChildStartError):
    pass


class KernelProcess(ChildProcess):
    """One aiosd at address. Its stdout and stderr go to log_path; a data directory of its own sits beside the log."""

    def __init__(
        self, address: str, options: dict[str, str | list[str]], log_path: Path, ready_timeout_s: float = 180.0
    ):
        """options: flag → value; a list value repeats the flag (--engine-url A --engine-url B)."""
        self.address = address
        argv = [sys.executable, "-m", "kernel.daemon", "--address", address]
        options = {
            "data-dir": str(Path(log_path).parent / "data"),
            "memory": "off",
            "storage": "off",
            "tools": "off",
            **options,
        }
        for flag, value in options.items():
            for one in value if isinstance(value, list) else [value]:
                argv += [f"--{flag}", str(one)]
        super().__init__(argv, READY_PREFIX, log_path, ready_timeout_s, "aiosd", error=KernelStartError)
