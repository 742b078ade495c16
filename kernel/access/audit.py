"""The audit log: one JSON line per privileged call and per denial, with who, what, on what, and when.

Contract:
- record() runs on the caller's thread (the kernel loop) and only enqueues; one writer thread writes the lines. A disk
  error is logged once and auditing goes on trying; it never fails the syscall being audited. flush() waits until
  what was recorded is written; close() writes the rest and stops the writer.
- Two files. The main log (`path`) holds every record in order; the privileged log (`<path stem>.privileged.jsonl`)
  holds again the privileged ones: allow decisions (a capability used, a grant, a share) and approval decisions. Each
  is rotated once by size (file -> file.1): the main log at max_bytes, the privileged log at the larger
  privileged_max_bytes. A flood of denials rotates only the main log, so privileged records survive it.
- Denials are rate-limited per principal (a token bucket, DENIALS_PER_S, burst DENIAL_BURST): over it they are
  counted, not written, and each principal's count becomes one summary line ("audit.suppressed") per
  SUMMARY_INTERVAL_S. Another principal's denials are unaffected.
- The queue is bounded (MAX_QUEUED_DENIALS, and MAX_QUEUED in all, the rest reserved for privileged records): a record
  that does not fit is counted, and the count written as one "audit.dropped" line when there is room.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
from collections import deque

from kernel.access.rate import RateLimiter

log = logging.getLogger("aiosd.audit")

DEFAULT_MAX_BYTES = 8 << 20
DEFAULT_PRIVILEGED_MAX_BYTES = 64 << 20
DENIALS_PER_S = 10.0
DENIAL_BURST = 100
SUMMARY_INTERVAL_S = 10.0
MAX_QUEUED_DENIALS = 8192
MAX_QUEUED = 16_384


class Decision(str, enum.Enum):
    ALLOW = "allow"  # a capability was used, or an irreversible call approved
    DENY = "deny"


class AuditLog:
    def __init__(
        self,
        path: str | None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        privileged_max_bytes: int = DEFAULT_PRIVILEGED_MAX_BYTES,
        denials_per_s: float = DENIALS_PER_S,
        denial_burst: int = DENIAL_BURST,
        summary_interval_s: float = SUMMARY_INTERVAL_S,
        max_queued_denials: int = MAX_QUEUED_DENIALS,
        max_queued: int = MAX_QUEUED,
    ):
        self.path = path
        self.privileged_path = f"{os.path.splitext(path)[0]}.privileged.jsonl" if path else None
        self._denials = RateLimiter(denials_per_s, denial_burst)
        self._summary_interval_s = summary_interval_s
        self._max_queued_denials, self._max_queued = max_queued_denials, max_queued
        self._cond = threading.Condition()
        self._queue: deque[tuple[dict, bool]] = deque()  # (entry, privileged)
        self._queued_denials = 0
        self._suppressed: dict[str, int] = {}  # principal -> denials not written since last summary
        self._dropped = 0
        self._recorded = self._written = 0
        self._closing = False
        self._thread = None
        if path is not None:
            self._files = (_RotatingFile(path, max_bytes), _RotatingFile(self.privileged_path, privileged_max_bytes))
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    def record(
        self,
        *,
        agent,
        syscall: str,
        decision: str,
        target: str | None = None,
        reason: str = "",
        privileged: bool | None = None,
    ) -> None:
        """decision: "allow" (a capability was used) or "deny". privileged (default: decision is allow): also kept in
        the privileged log and never rate-limited (an approval decision is privileged whatever it decided)."""
        if self._thread is None:
            return
        decision = Decision(decision)
        privileged = decision == Decision.ALLOW if privileged is None else privileged
        with self._cond:
            if not privileged and not self._denials.take(agent.principal):
                self._suppressed[agent.principal] = self._suppressed.get(agent.principal, 0) + 1
                return
            entry = {
                "time": round(time.time(), 6),
                "agent": agent.agent_id,
                "name": agent.name,
                "principal": agent.principal,
                "pid": agent.pid,
                "syscall": syscall,
                "target": target,
                "decision": decision.value,
                "reason": reason,
            }
            if len(self._queue) >= self._max_queued or (
                not privileged and self._queued_denials >= self._max_queued_denials
            ):
                self._dropped += 1
                return
            self._queue.append((entry, privileged))
            self._queued_denials += not privileged
            self._recorded += 1
            self._cond.notify()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every record made so far is written; False if that took longer than timeout_s."""
        if self._thread is None:
            return True
        with self._cond:
            target = self._recorded
            self._cond.notify()
            return (
                self._cond.wait_for(lambda: self._written >= target or not self._thread.is_alive(), timeout_s)
                and self._written >= target
            )

    def close(self) -> None:
        """Write what is queued and the pending summaries, stop the writer, close the files (idempotent)."""
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(60)
        self._thread = None

    # -- the writer thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_summary = time.monotonic() + self._summary_interval_s
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._queue or self._closing or self._dropped, max(0.0, next_summary - time.monotonic())
                )
                batch, self._queue = list(self._queue), deque()
                self._queued_denials = 0
                dropped, self._dropped = self._dropped, 0
                closing = self._closing
                summarize = closing or time.monotonic() >= next_summary
                suppressed = {}
                if summarize:
                    suppressed, self._suppressed = self._suppressed, {}
                    next_summary = time.monotonic() + self._summary_interval_s
                recorded = self._recorded
            if dropped:
                batch.append(
                    (
                        _summary(
                            "audit.dropped", None, f"{dropped} records dropped: the audit queue was full", dropped
                        ),
                        True,
                    )
                )
            batch += [
                (
                    _summary("audit.suppressed", principal, f"{count} denials not written: over the rate limit", count),
                    False,
                )
                for principal, count in suppressed.items()
            ]
            self._write(batch)
            with self._cond:
                self._written = recorded
                self._cond.notify_all()
            if closing:
                for file in self._files:
                    file.close()
                return

    def _write(self, batch: list[tuple[dict, bool]]) -> None:
        if not batch:
            return
        lines = [(json.dumps(entry, default=str) + "\n", privileged) for entry, privileged in batch]
        main, privileged_file = self._files
        main.write([line for line, _ in lines])
        privileged_file.write([line for line, privileged in lines if privileged])


def _summary(syscall: str, principal: str | None, reason: str, count: int) -> dict:
    return {
        "time": round(time.time(), 6),
        "agent": None,
        "name": None,
        "principal": principal,
        "pid": None,
        "syscall": syscall,
        "target": None,
        "decision": Decision.DENY.value,
        "reason": reason,
        "count": count,
    }


class _RotatingFile:
    """An append-only file rotated once (file -> file.1) before it would pass max_bytes. Written by one thread."""

    def __init__(self, path: str, max_bytes: int):
        self.path, self._max_bytes = path, max_bytes
        self._file = None
        self._size = 0
        self._failed = False

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            for line in lines:
                self._write(line)
            self._file.flush()
            self._failed = False
        except OSError as error:
            if not self._failed:
                log.error("cannot write the audit log %s: %s", self.path, error)
            self._failed = True
            self.close()

    def _write(self, line: str) -> None:
        if self._file is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
            self._size = os.fstat(fd).st_size
        size = len(line.encode())
        if self._size and self._size + size > self._max_bytes:
            self._file.close()
            self._file = None
            os.replace(self.path, self.path + ".1")
            return self._write(line)
        self._file.write(line)
        self._size += size

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
