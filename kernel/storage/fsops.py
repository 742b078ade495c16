"""File operations relative to an open directory that never follow a symlink and never leave a torn file visible.

Contract:
- Every name is opened relative to a directory file descriptor (`dir_fd`) with O_NOFOLLOW, one component at a time,
  so a symlink planted anywhere inside the tree is refused (BAD_REQUEST), never followed out of it; there is no
  moment where a whole path string is resolved by the kernel.
- `open_dir(parent_fd, name)` opens an existing real directory, `None` when the name is missing; a symlink or a
  non-directory there is a BAD_REQUEST. `walk(base_fd, parts, create)` opens a chain of them, making the missing ones
  (mode 0700, the parent fsync'd so the new entry survives a crash) when `create`, and returns `None` when one is
  missing otherwise. The caller owns (closes) the returned descriptor.
- `write_new(dir_fd, name, data)` publishes `data` under `name` atomically and durably: a fresh temporary (O_EXCL, in
  the same directory so the rename cannot cross file systems) is written whole, fsync'd, renamed to `name`, and the
  directory is fsync'd. Until the rename `name` does not exist; after it, `name` holds all of `data`. When
  `write_new` returns the data and the name survive a crash; when it raises, the temporary is gone.
- `read_regular(dir_fd, name, limit)` returns the content of a regular file, refusing (TOO_LARGE) one over `limit`
  bytes before reading it, so a read never buffers more than the limit. O_NONBLOCK keeps a planted FIFO from blocking.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat

from kernel.storage.errors import bad_request, not_found, too_large
from kernel.storage.paths import RESERVED_PREFIX

TEMP_PREFIX = RESERVED_PREFIX + "-tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def _not_a_directory(parent_fd: int, name: str) -> Exception:
    try:
        kind = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
    except OSError:
        kind = 0
    if stat.S_ISLNK(kind):
        return bad_request(f"{name!r} in the store is a symlink; symlinks are never followed")
    return bad_request(f"{name!r} in the store is not a directory")


def open_dir(parent_fd: int, name: str) -> int | None:
    """A descriptor of the real directory `name` under `parent_fd`; None if missing; BAD_REQUEST if not a directory."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return None
    except OSError as error:
        # Linux answers O_DIRECTORY|O_NOFOLLOW on a symlink with ENOTDIR (ELOOP without O_DIRECTORY)
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _not_a_directory(parent_fd, name) from None
        raise


def fsync_dir(fd: int) -> None:
    os.fsync(fd)


def walk(base_fd: int, parts: list[str], *, create: bool) -> int | None:
    """Open base/parts[0]/parts[1]/... one real directory at a time (see the module contract)."""
    fd = os.dup(base_fd)
    try:
        for name in parts:
            child = open_dir(fd, name)
            if child is None:
                if not create:
                    os.close(fd)
                    return None
                try:
                    os.mkdir(name, _DIR_MODE, dir_fd=fd)
                except FileExistsError:
                    pass  # made between our open and mkdir: open whatever is there now
                else:
                    fsync_dir(fd)  # the new entry must outlive a crash like the file inside it
                child = open_dir(fd, name)
                if child is None:
                    raise not_found(f"directory {name!r} vanished while it was being made")
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def write_new(dir_fd: int, name: str, data: memoryview) -> None:
    """Publish `data` as `name` in `dir_fd`: temp, write, fsync, rename, fsync the directory."""
    temp = TEMP_PREFIX + secrets.token_hex(8)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE, dir_fd=dir_fd)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    fsync_dir(dir_fd)


def read_regular(dir_fd: int, name: str, limit: int) -> bytes:
    """The whole content of the regular file `name`; NOT_FOUND if missing or not a regular file, TOO_LARGE if over."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        raise not_found(f"{name!r} is missing from the store") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise bad_request(f"{name!r} in the store is a symlink; symlinks are never followed") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise not_found(f"{name!r} in the store is not a regular file")
        if info.st_size > limit:
            raise too_large(info.st_size, limit)
        chunks = []
        remaining = info.st_size
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break  # shrunk under us (it never is: versions are written once)
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
