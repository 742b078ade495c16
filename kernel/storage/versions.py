"""The versions of one stored file, derived from the names in its node directory.

Contract: a stored path "a/b/c" is the directory a/b/c (its *node*) under the space's directory; version N of it is
the regular file `.aios-v<N, 12 digits>` in that node. Nothing else records versions: the version list, the latest
version, sizes and times are whatever regular files with that name pattern the node holds. That is the robustness
choice: there is no index to keep in step, and a version exists exactly when its rename (the last step of an atomic
write) happened, so a crash can leave at worst an unpublished temporary (`.aios-tmp-*`, ignored and removed) and
never a version whose index entry and content disagree. Subdirectories of a node are the nodes of longer paths, so
"a" and "a/b" can both be files, as keys in an object store.

`scan_node(fd)` reads one node: its kept versions (version -> size, mtime), the highest version number any entry
claims (so a new version never reuses a name, even one held by a non-file someone planted), its leftover
temporaries and its child nodes (real directories with non-reserved names; symlinks and other types are skipped).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat

from kernel.storage.fsops import TEMP_PREFIX
from kernel.storage.paths import RESERVED_PREFIX

VERSION_PREFIX = RESERVED_PREFIX + "-v"
# 12 digits; more only past 10^12 - 1, so no two names (one zero-padded further) can claim the same version
_VERSION_RE = re.compile(re.escape(VERSION_PREFIX) + r"([0-9]{12}|[1-9][0-9]{12,})\Z")


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    version: int
    size: int
    time: float  # when it was written (mtime of its file), seconds since the epoch


@dataclasses.dataclass(frozen=True)
class FileInfo:
    path: str
    size: int  # of the latest version
    version: int  # the latest version
    modified: float  # when the latest version was written, seconds since the epoch


@dataclasses.dataclass
class Node:
    versions: dict[int, VersionInfo] = dataclasses.field(default_factory=dict)
    highest: int = 0
    temps: list[str] = dataclasses.field(default_factory=list)
    children: list[str] = dataclasses.field(default_factory=list)

    def ordered(self) -> list[VersionInfo]:
        return [self.versions[number] for number in sorted(self.versions)]

    def latest(self) -> VersionInfo | None:
        return self.versions[max(self.versions)] if self.versions else None

    def stored_bytes(self) -> int:
        return sum(info.size for info in self.versions.values())


def version_name(number: int) -> str:
    return f"{VERSION_PREFIX}{number:012d}"


def scan_node(fd: int) -> Node:
    """The versions, temporaries and child nodes of the node directory open at `fd`."""
    node = Node()
    with os.scandir(fd) as entries:
        for entry in entries:
            name = entry.name
            match = _VERSION_RE.match(name)
            if match:
                number = int(match.group(1))
                node.highest = max(node.highest, number)
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    node.versions[number] = VersionInfo(number, info.st_size, info.st_mtime)
            elif name.startswith(TEMP_PREFIX):
                node.temps.append(name)
            elif not name.startswith(RESERVED_PREFIX) and entry.is_dir(follow_symlinks=False):
                node.children.append(name)
    return node


def to_prune(node: Node, keep: int) -> list[VersionInfo]:
    """The versions beyond the newest `keep`, oldest first."""
    ordered = node.ordered()
    return ordered[: max(0, len(ordered) - keep)]


def remove_names(fd: int, names: list[str]) -> None:
    """Unlink names in `fd`, ignoring ones already gone. Not fsync'd: one that comes back after a crash is an extra
    old version or temporary, which the next scan of the space removes again."""
    for name in names:
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
