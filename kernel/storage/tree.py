"""Walking every node of a space (or of a directory in it), one real directory at a time.

Contract: `walk_nodes(fd, parts, visit)` calls `visit(node_fd, parts, node)` for the directory open at `fd` (named by
`parts` below the space) and then for every real subdirectory below it, depth first, children in name order. Only
directories opened with O_NOFOLLOW are entered (fsops.open_dir), so a symlink in the tree is never followed, and only
one descriptor per level is open at a time. Depth is bounded by the path limit (a path of MAX_PATH_BYTES has at most
MAX_PATH_BYTES / 2 components), so the recursion is bounded too. A child that vanished or turned into something
else between the listing and the open is skipped, not an error: a walk reports the tree as it finds it.
"""
from __future__ import annotations

import os
from typing import Callable

from ipc.errors import ProtocolError
from kernel.storage.fsops import open_dir
from kernel.storage.versions import Node, scan_node

Visit = Callable[[int, list[str], Node], None]


def walk_nodes(fd: int, parts: list[str], visit: Visit) -> None:
    node = scan_node(fd)
    visit(fd, parts, node)
    for name in sorted(node.children):
        try:
            child = open_dir(fd, name)
        except ProtocolError:
            continue                              # replaced by a symlink or a file since the listing
        if child is None:
            continue
        try:
            walk_nodes(child, parts + [name], visit)
        finally:
            os.close(child)
