"""The audit log: one JSON line per privileged call and per denial, with who, what, on what, and when.

Written by the kernel loop's thread. Bounded on disk: past max_bytes the file is rotated once (file → file.1), so a
caller that provokes denials in a loop costs at most twice max_bytes. A disk error is logged once and auditing goes
on trying; it never fails the syscall being audited.
"""
from __future__ import annotations

import json
import logging
import os
import time

log = logging.getLogger("aiosd.audit")

DEFAULT_MAX_BYTES = 8 << 20


class AuditLog:
    def __init__(self, path: str | None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = path
        self._max_bytes = max_bytes
        self._file = None
        self._failed = False

    def record(self, *, agent, syscall: str, decision: str, target: str | None = None, reason: str = "") -> None:
        """decision: "allow" (a capability was used) or "deny"."""
        if self.path is None:
            return
        entry = {"time": round(time.time(), 6), "agent": agent.agent_id, "name": agent.name,
                 "principal": agent.principal, "pid": agent.pid, "syscall": syscall, "target": target,
                 "decision": decision, "reason": reason}
        try:
            self._write(json.dumps(entry) + "\n")
            self._failed = False
        except OSError as error:
            if not self._failed:
                log.error("cannot write the audit log %s: %s", self.path, error)
            self._failed = True

    def _write(self, line: str) -> None:
        if self._file is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            self._file = os.fdopen(fd, "a", buffering=1)
        if self._file.tell() + len(line) > self._max_bytes:
            self._file.close()
            self._file = None
            os.replace(self.path, self.path + ".1")
            return self._write(line)
        self._file.write(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
