"""The KV arena: the kernel's shared-memory segment (segment.py) carved into snapshot records.

Allocator: first fit over a free list kept sorted by offset, coalescing neighbours on free. Records are variable-sized
(a snapshot is header + tokens x bytes-per-token) and save_kv writes one contiguous buffer, so fixed-size pages would
need scatter/gather in the engine; first fit keeps records contiguous, and fragmentation is bounded because records are
freed as soon as their request resumes or ends, and the context manager evicts retained contexts when a fit fails.

The startup sweep (`remove_stale_segments`, which the daemon imports from here) treats /dev/shm as hostile input: it is
world-writable, so anyone can put a FIFO, a symlink or their own file under a name like ours. Contract: the sweep never
blocks, never raises for what it finds, never follows a symlink, and removes only a regular file owned by our uid whose
kernel is dead. It skips (and logs) anything else. "Dead" is the segment's flock being free (see segment.py): a live
kernel holds it from before the name exists until after it is unlinked, so the lock is right even when the pid in the
name was reused or belongs to another pid namespace, where a pid check would be wrong in both directions.
"""
from __future__ import annotations

import bisect
import errno
import fcntl
import logging
import os
import stat

from kernel.context.segment import _SEGMENT_NAME, SHM_DIR, ArenaError, Segment, segment_path

__all__ = ["ALIGN", "Arena", "ArenaError", "remove_stale_segments", "segment_path"]

ALIGN = 64                          # record alignment: a cache line, so payload copies start aligned

log = logging.getLogger("aiosd.arena")
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, i.e. forever, at kernel start.
_SAFE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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
    return [path for path in paths if _remove_if_stale(path)]


def _foreign_reason(st: os.stat_result) -> str | None:
    """Why a file under a segment name is not ours to judge, or None when it is our regular file."""
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not {os.getuid()}"
    return None


def _remove_if_stale(path: str) -> bool:
    try:
        before = os.lstat(path)
    except FileNotFoundError:                       # removed since the listing
        return False
    except OSError as error:
        log.warning("skipping %s at the KV arena sweep: %s", path, error)
        return False
    reason = _foreign_reason(before)
    if reason is not None:
        log.warning("skipping %s at the KV arena sweep: %s", path, reason)
        return False
    try:
        fd = os.open(path, _SAFE_OPEN)
    except OSError as error:                        # gone, or swapped for a symlink (ELOOP) since the lstat
        if error.errno != errno.ENOENT:
            log.warning("skipping %s at the KV arena sweep: %s", path, error)
        return False
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino) or _foreign_reason(opened) is not None:
            log.warning("skipping %s at the KV arena sweep: replaced while being checked", path)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:                     # its kernel is alive
            return False
        except OSError as error:
            log.warning("skipping %s at the KV arena sweep: cannot lock it: %s", path, error)
            return False
        # The name must still be the file we locked: only our uid can rename or unlink our file in the sticky
        # /dev/shm, but another of our kernels may have removed it and published its own segment under the name.
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            return False
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:                   # another kernel starting now removed it first
            return False
        except OSError as error:
            log.warning("cannot remove stale KV arena %s: %s", path, error)
            return False
        return True
    finally:
        os.close(fd)


class Arena:
    def __init__(self, size_bytes: int, kernel_id: str | None = None, shm_dir: str = SHM_DIR):
        if not isinstance(size_bytes, int) or size_bytes < ALIGN:
            raise ArenaError(f"arena size must be an integer of at least {ALIGN} bytes, got {size_bytes!r}")
        self.size = size_bytes - size_bytes % ALIGN
        self.path = segment_path(kernel_id if kernel_id is not None else str(os.getpid()), shm_dir)
        self._refuse_foreign_name()
        self._segment = Segment(self.path, self.size)
        self._free: list[tuple[int, int]] = [(0, self.size)]     # (offset, size), sorted by offset
        self._used: dict[int, int] = {}                           # offset -> size of each live block

    def _refuse_foreign_name(self) -> None:
        """ArenaError if our segment's name is taken by something not ours (a FIFO, symlink, another user's file).

        Segment replaces a stale segment of ours under the name by opening it; checked here first so that a FIFO planted
        under a predictable name (our pid) gives a clear error instead of blocking the kernel's start.
        """
        try:
            reason = _foreign_reason(os.lstat(self.path))
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
        return self._segment.buf[block + begin:block + begin + nbytes]

    def close(self) -> None:
        """Unlink the segment. Idempotent."""
        self._segment.close()

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
