"""The KV arena: one POSIX shared-memory segment, /dev/shm/aios-<kernel id>-kv, carved into snapshot records.

Why a file under /dev/shm mapped with mmap rather than multiprocessing.shared_memory: the latter registers the segment
with a resource-tracker process that unlinks (and warns about) it on its own schedule; the kernel wants to own the
segment's lifetime, and to find segments left by a killed kernel by name (remove_stale_segments).

Allocator: first fit over a free list kept sorted by offset, coalescing neighbours on free. Records are variable-sized
(a snapshot is header + tokens x bytes-per-token) and save_kv writes one contiguous buffer, so fixed-size pages would
need scatter/gather in the engine; first fit keeps records contiguous, and fragmentation is bounded because records are
freed as soon as their request resumes or ends, and the context manager evicts retained contexts when a fit fails.

The segment is pre-faulted at start: the first touch of a fresh tmpfs page costs far more than a warm copy, and that
cost would otherwise land on the first preemptions.
"""
from __future__ import annotations

import bisect
import mmap
import os
import re

SHM_DIR = "/dev/shm"
ALIGN = 64                          # record alignment: a cache line, so payload copies start aligned
_PREFAULT_CHUNK = 64 << 20
_SEGMENT_NAME = re.compile(r"^aios-(\d+)(?:\.[A-Za-z0-9_]+)?-kv$")


class ArenaError(RuntimeError):
    """The arena cannot be created (bad size, name taken, /dev/shm too small) or was used after close."""


def segment_path(kernel_id: str, shm_dir: str = SHM_DIR) -> str:
    """Kernel ids are '<pid>' or '<pid>.<tag>' (several arenas in one process): the pid tells stale from live."""
    name = f"aios-{kernel_id}-kv"
    if not _SEGMENT_NAME.match(name):
        raise ArenaError(f"kernel id must be '<pid>' or '<pid>.<tag>' (letters, digits, _), got {kernel_id!r}")
    return os.path.join(shm_dir, name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # alive, owned by someone else
        return True
    return True


def remove_stale_segments(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink arenas whose owning kernel process is gone (e.g. after kill -9). Returns the removed paths."""
    removed = []
    for name in sorted(os.listdir(shm_dir)):
        match = _SEGMENT_NAME.match(name)
        if not match or _pid_alive(int(match.group(1))):
            continue
        path = os.path.join(shm_dir, name)
        try:
            os.unlink(path)
        except FileNotFoundError:   # another kernel starting at the same time removed it first
            continue
        except PermissionError:     # another user's segment: not ours to remove
            continue
        removed.append(path)
    return removed


class Arena:
    def __init__(self, size_bytes: int, kernel_id: str | None = None, shm_dir: str = SHM_DIR):
        if not isinstance(size_bytes, int) or size_bytes < ALIGN:
            raise ArenaError(f"arena size must be an integer of at least {ALIGN} bytes, got {size_bytes!r}")
        self.size = size_bytes - size_bytes % ALIGN
        self.path = segment_path(kernel_id if kernel_id is not None else str(os.getpid()), shm_dir)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ArenaError(f"{self.path} already exists: another kernel with this id is running") from None
        try:
            os.posix_fallocate(fd, 0, self.size)        # ENOSPC now rather than SIGBUS on a later page touch
            self._map = mmap.mmap(fd, self.size)
        except OSError as exc:
            os.close(fd)
            os.unlink(self.path)
            raise ArenaError(f"cannot create a {self.size}-byte arena at {self.path}: {exc}") from exc
        os.close(fd)
        self._view = memoryview(self._map)
        self._prefault()
        self._free: list[tuple[int, int]] = [(0, self.size)]     # (offset, size), sorted by offset
        self._used: dict[int, int] = {}                           # offset -> size of each live block

    def _prefault(self) -> None:
        zeros = bytes(_PREFAULT_CHUNK)
        for start in range(0, self.size, _PREFAULT_CHUNK):
            end = min(start + _PREFAULT_CHUNK, self.size)
            self._view[start:end] = zeros[:end - start]

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
        if self._view is None:
            raise ArenaError("the arena is closed")
        size = self._used.get(block)
        if size is None or begin < 0 or nbytes < 0 or begin + nbytes > size:
            raise ValueError(f"bytes [{begin}, {begin + nbytes}) are not inside an allocated block at {block}")
        return self._view[block + begin:block + begin + nbytes]

    def close(self) -> None:
        """Unmap and unlink. Idempotent. The segment is unlinked even if a caller still holds a view."""
        if self._view is None:
            return
        self._view.release()
        self._view = None
        try:
            self._map.close()
        except BufferError:         # an outstanding view keeps the mapping alive until it is collected
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
