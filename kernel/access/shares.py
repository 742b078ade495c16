"""Shares: an owner lets another owner read (or read and write) its memory space or a path prefix of its file space.

Owners are space names ("<principal>/<agent name>"), so a share outlives both agents' runs, like the data it opens.
The table persists as one JSON file in the kernel's data directory, replaced atomically (temp file, fsync, rename,
directory fsync) on every change, and is bounded per owner. Checks are pure lookups on the kernel loop's thread.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

log = logging.getLogger("aiosd.access")

MAX_SHARES_PER_OWNER = 256


@dataclass(frozen=True)
class ShareEntry:
    kind: str            # "mem" | "fs"
    owner: str
    grantee: str
    mode: str            # "r" | "rw"
    prefix: str = ""     # fs only: the paths under it ("" = all)


class ShareTable:
    def __init__(self, path: str | None):
        self._path = path
        self._entries: list[ShareEntry] = self._load() if path else []

    def set(self, kind: str, owner: str, grantee: str, mode: str, prefix: str = "") -> None:
        """Grant mode ("r", "rw") or revoke ("none") grantee's access to owner's space (or prefix of it)."""
        kept = [e for e in self._entries if (e.kind, e.owner, e.grantee, e.prefix) != (kind, owner, grantee, prefix)]
        if mode != "none":
            if sum(1 for e in kept if e.owner == owner) >= MAX_SHARES_PER_OWNER:
                raise ValueError(f"an owner may hold at most {MAX_SHARES_PER_OWNER} shares")
            kept.append(ShareEntry(kind, owner, grantee, mode, prefix))
        self._entries = kept
        self._save()

    def allows(self, kind: str, owner: str, grantee: str, write: bool, path: str = "") -> bool:
        return any(e.kind == kind and e.owner == owner and e.grantee == grantee and (e.mode == "rw" or not write)
                   and _under(path, e.prefix) for e in self._entries)

    def _load(self) -> list[ShareEntry]:
        try:
            with open(self._path, encoding="utf-8") as file:
                return [ShareEntry(**entry) for entry in json.load(file)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as error:     # unreadable: start empty (deny), keep the file
            log.error("cannot read the share table %s (%s): no shares are in force", self._path, error)
            return []

    def _save(self) -> None:
        if not self._path:
            return
        directory = os.path.dirname(self._path) or "."
        temp = f"{self._path}.tmp"
        with open(temp, "w", encoding="utf-8") as file:
            json.dump([asdict(e) for e in self._entries], file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, self._path)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _under(path: str, prefix: str) -> bool:
    """path is prefix itself or lies below it, by whole components ("a/b" is under "a", "ab" is not)."""
    prefix = prefix.strip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")
