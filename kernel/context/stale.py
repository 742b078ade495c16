"""Removing a KV segment left by a dead kernel, treating /dev/shm as hostile input.

/dev/shm is world-writable, so anyone can put a FIFO, a symlink or their own file under a name like ours. Contract of
remove_if_stale: it never blocks, never raises for what it finds, never follows a symlink, and removes only a regular
file owned by our uid whose kernel is dead, skipping (and logging) anything else. "Dead" is the segment's flock being
free (see segment.py): a live kernel holds it from before the name exists until after it is unlinked, so the lock is
right even when the pid in the name was reused or belongs to another pid namespace, where a pid check would be wrong in
both directions. Used by the startup sweep (arena.py) and when a new segment finds its name taken (segment.py).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat

log = logging.getLogger("aiosd.arena")
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, i.e. forever, at kernel start.
_SAFE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def foreign_reason(st: os.stat_result) -> str | None:
    """Why a file under a segment name is not ours to judge, or None when it is our regular file."""
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not {os.getuid()}"
    return None


def remove_if_stale(path: str) -> bool:
    try:
        before = os.lstat(path)
    except FileNotFoundError:  # removed since the listing
        return False
    except OSError as error:
        log.warning("skipping %s at the KV arena sweep: %s", path, error)
        return False
    reason = foreign_reason(before)
    if reason is not None:
        log.warning("skipping %s at the KV arena sweep: %s", path, reason)
        return False
    try:
        fd = os.open(path, _SAFE_OPEN)
    except OSError as error:  # gone, or swapped for a symlink (ELOOP) since the lstat
        if error.errno != errno.ENOENT:
            log.warning("skipping %s at the KV arena sweep: %s", path, error)
        return False
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino) or foreign_reason(opened) is not None:
            log.warning("skipping %s at the KV arena sweep: replaced while being checked", path)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its kernel is alive
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
        except FileNotFoundError:  # another kernel starting now removed it first
            return False
        except OSError as error:
            log.warning("cannot remove stale KV arena %s: %s", path, error)
            return False
        return True
    finally:
        os.close(fd)
