"""Per-space usage for kernel.top: memory entries and bytes, file bytes and files, counted on the services' own threads.

The loop never walks a directory or queries a database for this: every REFRESH_S it queues one job per service (in
the kernel's own lane, no reply), and the job, on the service's worker thread, reads the service's own counters (the
memory stores' per-space entry and byte counts; the storage manager's per-space usage, kept in step with each write,
for the spaces this kernel has served) and publishes a new dict in one assignment, which kernel.top reads. Bounded:
at most MAX_LISTED spaces of each kind, largest first; at most MAX_KNOWN file space names remembered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ipc.messages import MAX_LISTED

REFRESH_S = 5.0
MAX_KNOWN = 4096


class SpaceCounts:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.memory: tuple[float, list[dict]] | None = None  # (when counted, rows): replaced whole, never mutated
        self.files: tuple[float, list[dict]] | None = None
        self.known_files: dict[str, None] = {}  # file spaces named by fs calls (oldest first)
        self.last_refresh: float | None = None

    def saw_file_space(self, space: str) -> None:
        if space not in self.known_files:
            self.known_files[space] = None
            if len(self.known_files) > MAX_KNOWN:
                del self.known_files[next(iter(self.known_files))]

    def due(self) -> bool:
        now = self.clock()
        if self.last_refresh is not None and now - self.last_refresh < REFRESH_S:
            return False
        self.last_refresh = now
        return True

    def count_memory(self, manager) -> None:
        """On the memory worker."""
        stores = manager._stores() if hasattr(manager, "_stores") else []
        rows = [
            {"space": name, "entries": entries, "bytes": size} for s in stores for name, entries, size in s.spaces()
        ]
        self.memory = (self.clock(), _largest(rows))

    def count_files(self, manager, spaces: Iterable[str]) -> None:
        """On the storage worker: spaces already served this run, whose usage the manager keeps in memory."""
        rows = []
        for space in spaces:
            try:
                usage = manager.usage(space)
            except Exception:  # a space dropped since, or a name the manager refuses: not worth a row
                continue
            if usage.get("files") or usage.get("bytes"):
                rows.append({"space": space, "bytes": usage["bytes"], "files": usage["files"]})
        self.files = (self.clock(), _largest(rows))

    def snapshot(self) -> dict:
        now = self.clock()
        taken = [t for t, _ in (c for c in (self.memory, self.files) if c is not None)]
        return {
            "memory": self.memory[1] if self.memory else [],
            "files": self.files[1] if self.files else [],
            "age_s": round(now - min(taken), 3) if taken else None,
        }


def _largest(rows: list[dict]) -> list[dict]:
    rows.sort(key=lambda r: r["bytes"], reverse=True)
    return rows[:MAX_LISTED]
