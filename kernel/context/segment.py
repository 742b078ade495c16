"""The kernel's shared-memory segment: a file /dev/shm/aios-<kernel id>-kv, mapped, pre-faulted, and locked while alive.

Why a file under /dev/shm mapped with mmap rather than multiprocessing.shared_memory: the latter registers the segment
with a resource-tracker process that unlinks (and warns about) it on its own schedule; the kernel owns the segment's
lifetime, and finds segments left by a killed kernel by name.

Liveness: the owner holds an exclusive flock on the segment for its whole life; the lock dies with the process, kill -9
included. A segment whose lock can be taken is stale, whatever its name says (a new kernel may reuse a dead one's pid).
The segment is built unnamed (O_TMPFILE), locked, sized and pre-faulted, and only then linked under its name, so no
other process can ever see it half made or unlocked.

Pre-faulting: the first touch of a fresh tmpfs page costs far more than a warm copy; paying it at start keeps it off
the first preemptions.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re

from kernel.context.stale import remove_if_stale

SHM_DIR = "/dev/shm"
_PREFAULT_CHUNK = 64 << 20
_SEGMENT_NAME = re.compile(r"^aios-\d+(?:\.[A-Za-z0-9_]+)?-kv$")


class ArenaError(RuntimeError):
    """The arena cannot be created (bad size or id, name taken, /dev/shm too small) or was used after close."""


def segment_path(kernel_id: str, shm_dir: str = SHM_DIR) -> str:
    """Kernel ids are '<pid>' or '<pid>.<tag>' (several arenas in one process)."""
    name = f"aios-{kernel_id}-kv"
    if not _SEGMENT_NAME.match(name):
        raise ArenaError(f"kernel id must be '<pid>' or '<pid>.<tag>' (letters, digits, _), got {kernel_id!r}")
    return os.path.join(shm_dir, name)


class Segment:
    def __init__(self, path: str, size: int):
        self.path, self.size = path, size
        self._published = False
        self._fd = os.open(os.path.dirname(path), os.O_TMPFILE | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.posix_fallocate(self._fd, 0, size)  # ENOSPC now rather than SIGBUS on a later page touch
            self._map = mmap.mmap(self._fd, size)
        except OSError as exc:
            os.close(self._fd)
            raise ArenaError(f"cannot create a {size}-byte segment in {os.path.dirname(path)}: {exc}") from exc
        self.buf: memoryview | None = memoryview(self._map)
        self._prefault()
        self._publish()

    def _prefault(self) -> None:
        zeros = bytes(_PREFAULT_CHUNK)
        for start in range(0, self.size, _PREFAULT_CHUNK):
            end = min(start + _PREFAULT_CHUNK, self.size)
            self.buf[start:end] = zeros[: end - start]

    def _publish(self) -> None:
        """Give the segment its name; a stale segment holding the name (a dead kernel's, same pid) is replaced."""
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd names the unnamed file; a dir fd makes Python call linkat.
        directory = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(2):
                try:
                    os.link(
                        f"/proc/self/fd/{self._fd}",
                        os.path.basename(self.path),
                        dst_dir_fd=directory,
                        follow_symlinks=True,
                    )
                    self._published = True
                    return
                except FileExistsError:
                    if not remove_if_stale(self.path):
                        break
        finally:
            os.close(directory)
        self.close()
        raise ArenaError(f"{self.path} already exists: another kernel with this id is running")

    def close(self) -> None:
        """Unlink, unmap and unlock. Idempotent. Unlinked even if a caller still holds a view of the memory."""
        if self.buf is None:
            return
        self.buf.release()
        self.buf = None
        if self._published:
            os.unlink(self.path)
        try:
            self._map.close()
        except BufferError:  # an outstanding view keeps the mapping until it is collected
            pass
        os.close(self._fd)
