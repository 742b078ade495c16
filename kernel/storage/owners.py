"""Who owns each space on disk, so that file spaces can be bounded per principal, across restarts too.

Contract:
- `owner_of(space)` is the principal a space id is charged to, as a key: for the kernel's ephemeral names
  "eph:<boot>/<principal digest>/<agent id>" (kernel/services/syscalls.py) that digest; for any other id the same
  digest (sha256 hex, 16 digits) of the part before its last "/" ("uid:1000/notes" -> digest of "uid:1000"), so a
  principal's ephemeral and lasting spaces count together. An id without "/" (only the kernel itself or an fs.any
  operator names one: an agent's own space is always "<principal>/<name>") is its own owner.
- Every space directory holds MARKER (".aios-space": the space id in UTF-8), written and fsync'd before the directory
  gets its final name (`create` makes it under a NEW_PREFIX name and renames it), so no space directory is ever
  visible without its marker and a new manager recounts each principal's spaces from disk (`scan`) instead of
  trusting anything kept in memory. A leftover NEW_PREFIX directory (a crash mid-create) is the manager's to sweep.
- A space directory without a valid marker (made by a build before markers, or damaged) is not counted until a write
  names its id: `adopt` writes its marker then and counts it, whatever the bound (its files are already there).
- `SpaceOwners(limit)` keeps directory name -> owner and owner -> count in step with `create`, `adopt` and `forget`
  (a drop); `create` raises the quota error, before anything is made, when the owner already holds `limit` spaces.
The manager is single-threaded (manager.py), so a count and the create that follows it cannot interleave.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import secrets
import shutil

from ipc.errors import ProtocolError
from kernel.storage import fsops
from kernel.storage.errors import over_quota
from kernel.storage.paths import (
    EPHEMERAL_DIR_PREFIX,
    EPHEMERAL_PREFIX,
    MAX_SPACE_BYTES,
    RESERVED_PREFIX,
    SPACE_DIR_PREFIX,
    space_dirname,
)

MARKER = RESERVED_PREFIX + "-space"
NEW_PREFIX = RESERVED_PREFIX + "-new-"
_DIGEST = re.compile(r"[0-9a-f]{16}\Z")


def principal_digest(principal: str) -> str:
    """The key of a principal; kernel/services/syscalls.py puts the same digest in ephemeral space names."""
    return hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def owner_of(space: str) -> str:
    if space.startswith(EPHEMERAL_PREFIX):
        parts = space[len(EPHEMERAL_PREFIX) :].split("/")
        if len(parts) == 3 and _DIGEST.match(parts[1]):
            return parts[1]
    head, slash, _ = space.rpartition("/")
    return principal_digest(head) if slash else "space:" + space


class SpaceOwners:
    def __init__(self, limit: int):
        self.limit = limit
        self._owner: dict[str, str] = {}  # space directory name -> owner key
        self._held: collections.Counter[str] = collections.Counter()

    def known(self, name: str) -> bool:
        return name in self._owner

    def held(self, space: str) -> int:
        """How many spaces on disk are charged to the owner of `space`."""
        return self._held[owner_of(space)]

    def scan(self, spaces_fd: int) -> None:
        """Count every marked space directory under `spaces_fd` (replacing what was counted)."""
        self._owner.clear()
        self._held.clear()
        with os.scandir(spaces_fd) as entries:
            names = [e.name for e in entries if e.name.startswith((SPACE_DIR_PREFIX, EPHEMERAL_DIR_PREFIX))]
        for name in names:
            space = _read_marker(spaces_fd, name)
            if space is not None:
                self._count(name, space)

    def create(self, spaces_fd: int, space: str, name: str) -> None:
        """Make the space directory `name` for `space` with its marker; the quota error over the bound."""
        held = self.held(space)
        if held >= self.limit:
            raise over_quota(
                f"this space's principal already holds {held} file spaces; the limit is {self.limit} "
                f"(drop one of them to make another)"
            )
        temp = NEW_PREFIX + secrets.token_hex(8)
        os.mkdir(temp, 0o700, dir_fd=spaces_fd)
        try:
            _write_marker(spaces_fd, temp, space)
            os.rename(temp, name, src_dir_fd=spaces_fd, dst_dir_fd=spaces_fd)
        except BaseException:
            shutil.rmtree(temp, dir_fd=spaces_fd, ignore_errors=True)
            raise
        fsops.fsync_dir(spaces_fd)
        self._count(name, space)

    def adopt(self, spaces_fd: int, space: str, name: str) -> None:
        """Mark and count an existing space directory that had no valid marker."""
        _write_marker(spaces_fd, name, space)
        self._count(name, space)

    def forget(self, name: str) -> None:
        owner = self._owner.pop(name, None)
        if owner is not None:
            self._held[owner] -= 1
            if not self._held[owner]:
                del self._held[owner]

    def _count(self, name: str, space: str) -> None:
        self.forget(name)
        owner = owner_of(space)
        self._owner[name] = owner
        self._held[owner] += 1


def _write_marker(spaces_fd: int, name: str, space: str) -> None:
    fd = fsops.open_dir(spaces_fd, name)
    if fd is None:
        raise FileNotFoundError(f"space directory {name!r} vanished")
    try:
        fsops.write_new(fd, MARKER, memoryview(space.encode("utf-8")))
    finally:
        os.close(fd)


def _read_marker(spaces_fd: int, name: str) -> str | None:
    """The space id a directory's marker names, or None when it has no marker that names this very directory."""
    try:
        fd = fsops.open_dir(spaces_fd, name)
    except ProtocolError:
        return None  # not a real directory (a planted symlink)
    if fd is None:
        return None
    try:
        raw = fsops.read_regular(fd, MARKER, MAX_SPACE_BYTES)
        space = raw.decode("utf-8")
        return space if space_dirname(space) == name else None
    except (ProtocolError, UnicodeDecodeError):
        return None  # missing, not a regular file, oversized, or not this id
    finally:
        os.close(fd)
