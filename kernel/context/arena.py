"""The KV arena: the kernel's shared-memory segment (segment.py) carved into snapshot records.

Allocator: first fit over a free list kept sorted by offset, coalescing neighbours on free. Records are variable-sized
(a snapshot is header + tokens x bytes-per-token) and save_kv writes one contiguous buffer, so fixed-size pages would
need scatter/gather in the engine; first fit keeps records contiguous, and fragmentation is bounded because records are
freed as soon as their request resumes or ends, and the context manager evicts retained contexts when a fit fails.

The startup sweep (`remove_stale_segments`, which the daemon imports from here) removes only what stale.py judges a
dead kernel's own segment; it never blocks or raises for what it finds in the world-writable /dev/shm.
"""

from __future__ import annotations

import bisect
import logging
import os

from kernel.context.segment import _SEGMENT_NAME, SHM_DIR, ArenaError, Segment, segment_path
from kernel.context.stale import foreign_reason, remove_if_stale

__all__ = ["ALIGN", "Arena", "ArenaError", "remove_stale_segments", "segment_path"]

ALIGN = 64  # record alignment: a cache line, so payload copies start aligned

log = logging.getLogger("aiosd.arena")


def remove_stale_segments(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink the segments of kernels that are gone (e.g. after kill -9). Returns the removed paths.

    Only names that match a segment name are considered; of those, only our own unlocked regular files are removed.
    """
    try:
        names = sorted(os.listdir(shm_dir))
    except OSError as error:
        log.warning("cannot list %s to sweep stale KV arenas: %s", shm_dir, error)
        return []
    paths = [os.path.join(shm_dir, name) for name in names if _SEGMENT_NAME.match(name)]
    return [path for path in paths if remove_if_stale(path)]


class Arena:
    def __init__(self, size_bytes: int, kernel_id: str | None = None, shm_dir: str = SHM_DIR):
        if not isinstance(size_bytes, int) or size_bytes < ALIGN:
            raise ArenaError(f"arena size must be an integer of at least {ALIGN} bytes, got {size_bytes!r}")
        self.size = size_bytes - size_bytes % ALIGN
        self.path = segment_path(kernel_id if kernel_id is not None else str(os.getpid()), shm_dir)
        self._refuse_foreign_name()
        self._segment = Segment(self.path, self.size)
        self._free: list[tuple[int, int]] = [(0, self.size)]  # (offset, size), sorted by offset
        self._used: dict[int, int] = {}  # offset -> size of each live block

    def _refuse_foreign_name(self) -> None:
        """ArenaError if our segment's name is taken by something not ours (a FIFO, symlink, another user's file).

        Segment replaces a stale segment of ours under the name by opening it; checked here first so that a FIFO planted
        under a predictable name (our pid) gives a clear error instead of blocking the kernel's start.
        """
        try:
            reason = foreign_reason(os.lstat(self.path))
        except FileNotFoundError:
            return
        if reason is not None:
            raise ArenaError(f"{self.path} exists and is {reason}: remove it or choose another kernel id")

    @property
    def used_bytes(self) -> int:
        return sum(self._used.values())

    @property
    def free_bytes(self) -> int:
        return self.size - self.used_bytes

    def largest_free_block(self) -> int:
        return max((size for _, size in self._free), default=0)

    def alloc(self, nbytes: int) -> int | None:
        """Offset of a new block of at least nbytes, or None when no free block is large enough."""
        if nbytes <= 0:
            raise ValueError(f"allocation size must be positive, got {nbytes}")
        need = -(-nbytes // ALIGN) * ALIGN
        for index, (offset, size) in enumerate(self._free):
            if size < need:
                continue
            if size == need:
                del self._free[index]
            else:
                self._free[index] = (offset + need, size - need)
            self._used[offset] = need
            return offset
        return None

    def free(self, offset: int) -> None:
        size = self._used.pop(offset, None)
        if size is None:
            raise ValueError(f"no allocated block at offset {offset}")
        index = bisect.bisect_left(self._free, (offset, 0))
        # Coalesce with the following block, then with the preceding one.
        if index < len(self._free) and self._free[index][0] == offset + size:
            size += self._free.pop(index)[1]
        if index > 0 and sum(self._free[index - 1]) == offset:
            index -= 1
            offset, size = self._free[index][0], self._free[index][1] + size
            del self._free[index]
        self._free.insert(index, (offset, size))

    def view(self, block: int, begin: int, nbytes: int) -> memoryview:
        """A writable window on bytes [begin, begin + nbytes) of the allocated block at offset `block`."""
        if self._segment.buf is None:
            raise ArenaError("the arena is closed")
        size = self._used.get(block)
        if size is None or begin < 0 or nbytes < 0 or begin + nbytes > size:
            raise ValueError(f"bytes [{begin}, {begin + nbytes}) are not inside an allocated block at {block}")
        return self._segment.buf[block + begin : block + begin + nbytes]

    def close(self) -> None:
        """Unlink the segment. Idempotent."""
        self._segment.close()

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
