"""Walking every node of a space (or of a directory in it), one real directory at a time.

Contract: `walk_nodes(fd, parts, visit)` calls `visit(node_fd, parts, node)` for the directory open at `fd` (named by
`parts` below the space) and then for every real subdirectory below it, depth first, children in name order. Only
directories opened with O_NOFOLLOW are entered (fsops.open_dir), so a symlink in the tree is never followed, and only
one descriptor per level is open at a time. Depth is bounded by the path limit (a path of MAX_PATH_BYTES has at most
MAX_PATH_BYTES / 2 components), so the recursion is bounded too. A child that vanished or turned into something
else between the listing and the open is skipped, not an error: a walk reports the tree as it finds it.

`probe(fd, parts)` is how much of a path exists: (how many leading components are real directories, the scanned
node of the deepest of them or None when not even the first does), what a write needs to know to charge the
directories it will make (quota.py) before making any.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ipc.errors import ProtocolError
from kernel.storage.fsops import open_dir
from kernel.storage.versions import Node, scan_node

Visit = Callable[[int, list[str], Node], None]


def probe(fd: int, parts: list[str]) -> tuple[int, Node | None]:
    current, depth = os.dup(fd), 0
    try:
        for name in parts:
            child = open_dir(current, name)
            if child is None:
                break
            os.close(current)
            current, depth = child, depth + 1
        return depth, (scan_node(current) if depth else None)
    finally:
        os.close(current)


def charged(node: Node) -> bool:
    """Whether a directory below a space is charged as one (quota.py): all but a file's node without subdirectories."""
    return not (node.versions and not node.children)


def walk_nodes(fd: int, parts: list[str], visit: Visit) -> None:
    node = scan_node(fd)
    visit(fd, parts, node)
    for name in sorted(node.children):
        try:
            child = open_dir(fd, name)
        except ProtocolError:
            continue  # replaced by a symlink or a file since the listing
        if child is None:
            continue
        try:
            walk_nodes(child, parts + [name], visit)
        finally:
            os.close(child)
