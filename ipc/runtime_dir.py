"""The kernel's private runtime directory (socket, admin token, keys) and small secrets kept in it.

Contract:
- `private_dir(path)` returns `path` once it is a real directory (not a symlink), owned by our uid, with no group or
  other access. It creates it with mode 0700 when missing (the parent must exist; it is not created, so no directory of
  someone else's making ends up in the path). It raises RuntimeDirError when the path exists but is a symlink, not a
  directory, or owned by another uid: such a directory may be someone else's trap (e.g. a pre-created /tmp/aios-<uid>
  whose owner can read our admin token or swap our socket), and we cannot make it safe.
  Choice for a directory we own whose mode lets group or other in: by default we fix it (chmod 0700) and log a
  warning, because only we could have made it so and refusing would leave the user stuck on a mistake of their own;
  `fix_mode=False` refuses instead. A directory of another uid is never chmod-ed.
- `write_secret(path, data)` replaces `path` atomically with a file of mode 0600 holding `data` (at most
  MAX_SECRET_BYTES): the content goes to a fresh temporary name opened O_CREAT|O_EXCL|O_NOFOLLOW, then is renamed over
  `path`, so a reader sees the old secret or the new one, never a part, and a symlink planted at `path` is replaced,
  never written through.
- `read_secret(path)` returns the content of `path` only if it is a regular file (not a symlink: O_NOFOLLOW), owned by
  our uid, with no group or other access, and at most MAX_SECRET_BYTES; RuntimeDirError otherwise. A secret that others
  could read may have leaked, so it is refused rather than fixed: remove it and make a new one. A missing file is a
  plain FileNotFoundError, so a caller can tell "no secret yet" from "unsafe secret".

The parent of the runtime directory is trusted to keep others from renaming our entries: /tmp is sticky and
$XDG_RUNTIME_DIR is the user's own. Checks are made on the opened file (fstat), not only on the name, so swapping the
name between check and use gains nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat

MAX_SECRET_BYTES = 64 << 10  # admin tokens and keys are tiny; bounded so a planted file cannot be huge
_PRIVATE_DIR_MODE = 0o700
_SECRET_MODE = 0o600
_GROUP_OTHER = 0o077

log = logging.getLogger("aios.runtime_dir")


class RuntimeDirError(OSError):
    """The runtime directory or a secret in it is not safe to use; the message says why and what to do.

    `.path` is the offending path. (Not OSError's `filename`: setting it would turn the message into "[Errno None]".)
    """

    def __init__(self, path: str, why: str):
        super().__init__(f"{path} {why}")
        self.path = path


def default_path() -> str:
    """Where the kernel keeps its runtime files: $XDG_RUNTIME_DIR/aios, else /tmp/aios-<uid> (as ipc/address.py)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime_dir, "aios") if runtime_dir else f"/tmp/aios-{os.getuid()}"


def _ownership_problem(st: os.stat_result) -> str | None:
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by us (uid {os.getuid()})"
    return None


def private_dir(path: str | os.PathLike, *, fix_mode: bool = True) -> str:
    """`path` as a str, once it is our private directory (see the module contract); RuntimeDirError otherwise."""
    path = os.fspath(path)
    try:
        os.mkdir(path, _PRIVATE_DIR_MODE)
        created = True
    except FileExistsError:
        created = False
    except OSError as error:
        raise RuntimeDirError(path, f"cannot be created as the runtime directory: {error.strerror}") from error
    try:
        named = os.lstat(path)
    except OSError as error:
        raise RuntimeDirError(path, f"cannot be checked: {error.strerror}") from error
    if stat.S_ISLNK(named.st_mode):
        raise RuntimeDirError(path, "is a symlink; refusing to use it as the runtime directory (remove it)")
    if not stat.S_ISDIR(named.st_mode):
        raise RuntimeDirError(
            path, "exists and is not a directory; refusing to use it as the runtime directory (remove it)"
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:  # replaced by a symlink or a file since the lstat
        raise RuntimeDirError(path, f"changed while being checked: {error.strerror}") from error
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            raise RuntimeDirError(path, "changed while being checked")
        problem = _ownership_problem(opened)
        if problem:
            raise RuntimeDirError(
                path, f"{problem}; refusing to use it as the runtime directory (someone else made it)"
            )
        mode = stat.S_IMODE(opened.st_mode)
        if created and mode != _PRIVATE_DIR_MODE:
            os.fchmod(fd, _PRIVATE_DIR_MODE)  # the umask may have taken owner bits away; ours, just made: no log
        elif mode & _GROUP_OTHER:
            if not fix_mode:
                raise RuntimeDirError(path, f"is accessible to group or other (mode {mode:04o}); run: chmod 700 {path}")
            os.fchmod(fd, _PRIVATE_DIR_MODE)
            log.warning(
                "runtime directory %s was accessible to group or other (mode %04o); changed it to 0700", path, mode
            )
    finally:
        os.close(fd)
    return path


def write_secret(path: str | os.PathLike, data: bytes | str) -> None:
    """Atomically replace `path` with a 0600 file holding `data` (str is written as UTF-8)."""
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode()
    data = bytes(data)
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"a secret is at most {MAX_SECRET_BYTES} bytes, got {len(data)}")
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _SECRET_MODE)
    except OSError as error:
        raise RuntimeDirError(path, f"cannot be written: {error.strerror}") from error
    try:
        try:
            os.fchmod(fd, _SECRET_MODE)  # exactly 0600 whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)  # rename(2) replaces a symlink at `path` itself, never its target
    except OSError as error:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise RuntimeDirError(path, f"cannot be written: {error.strerror}") from error


def read_secret(path: str | os.PathLike) -> bytes:
    """The content of the secret at `path`, if it is safe to trust (see the module contract)."""
    path = os.fspath(path)
    try:
        # O_NONBLOCK: a FIFO planted here must be refused, not waited on.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RuntimeDirError(path, "is a symlink; refusing to read a secret through it (remove it)") from error
        raise RuntimeDirError(path, f"cannot be read: {error.strerror}") from error
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RuntimeDirError(path, "is not a regular file; refusing to read a secret from it (remove it)")
        problem = _ownership_problem(st)
        if problem:
            raise RuntimeDirError(path, f"{problem}; refusing to trust a secret someone else wrote (remove it)")
        mode = stat.S_IMODE(st.st_mode)
        if mode & _GROUP_OTHER:
            raise RuntimeDirError(
                path,
                f"is accessible to group or other (mode {mode:04o}), so it may have "
                f"leaked; remove it and make a new one",
            )
        if st.st_size > MAX_SECRET_BYTES:
            raise RuntimeDirError(path, f"is larger than a secret can be ({st.st_size} > {MAX_SECRET_BYTES} bytes)")
        chunks, total = [], 0
        while total <= MAX_SECRET_BYTES:  # reads to the real end: the size in fstat may be stale
            chunk = os.read(fd, MAX_SECRET_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_SECRET_BYTES:
            raise RuntimeDirError(path, f"is larger than a secret can be (> {MAX_SECRET_BYTES} bytes)")
        return b"".join(chunks)
    finally:
        os.close(fd)
