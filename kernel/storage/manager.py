"""The storage manager: per-space versioned files on local disk, written atomically, bounded by quotas.

Contract (the kernel's storage worker calls this from one thread; it is not thread-safe and takes no locks inside):
- `StorageManager(root, *, keep_versions=10, quota_bytes, max_file_bytes, max_files, dir_bytes=4096,
  max_depth=16, max_spaces=64)` owns `root` (made 0700 if missing) for as long as it is open: it holds an exclusive
  flock on `root/.aios-lock`, and a second manager on the same root (this process or another) fails with
  RuntimeError instead of racing the first on versions and quotas.
- Every method takes `space`, an opaque namespace id ("uid:0/notes"); its files live in `root/spaces/s-<sha256 of
  the id>` (paths.space_dirname), so no id can name another directory. Paths are validated by paths.split_path.
- `write(space, path, data) -> version`: a new version (previous latest + 1; 1 for a new file or one that was deleted)
  published atomically (fsops.write_new); the versions beyond the newest `keep_versions` are then removed. Refused
  before anything is written: BAD_REQUEST deeper than max_depth, TOO_LARGE over max_file_bytes, the quota error over
  quota_bytes or max_files, directories counted (quota.py: each costs dir_bytes and an inode), or, for the first
  write of a space that is not on disk yet, when its principal already holds max_spaces file spaces (owners.py:
  counted from disk at open, ephemeral spaces included while they exist).
- `read(space, path, version=None) -> (data, version)`: the latest version, or the given one while it is kept.
- `list(space, prefix="", match=PrefixMatch.TEXT) -> [FileInfo]`: files whose path starts with `prefix`, sorted by
  path: by string prefix ("no" matches "notes/a"), or with PrefixMatch.COMPONENTS by whole components ("notes" is
  "notes" and "notes/...", never "notes-private/..."; the kernel lists a shared space this way). `versions(space, path)
  -> [VersionInfo]`, oldest first.
- `delete(space, path)`: removes every version (the room is freed; a later write starts again at version 1).
- `rollback(space, path, version) -> version`: writes the kept `version`'s content as a new version (quota applies).
- `usage(space) -> dict`: bytes, files, versions in use and the limits. `drop_space(space) -> bool`: removes the
  space and everything in it (False when there was none); the directory is first renamed to a `.aios-drop-*` name,
  so a crash mid-removal leaves nothing half-visible, and the leftover is removed when the next manager opens.
- Ephemeral spaces (ids starting with "eph:", paths.EPHEMERAL_PREFIX) never outlive the manager that made them:
  `drop_ephemeral() -> int` drops every one on disk (how many), and the manager calls it when it opens (what a crash
  left) and when it closes (a clean shutdown).
- `close()`: drops the ephemeral spaces, releases the root; later calls raise ProtocolError(SHUTDOWN). Also a context
  manager.
Refusals are ipc.errors.ProtocolError (kernel.storage.errors); "no such file" or "version not kept" is NOT_FOUND.

Layout (versions are derived from these names alone, no index: see versions.py for why):
    root/.aios-lock                                        flock held while a manager is open
    root/spaces/s-<sha256(space)>/.aios-space              the space id: whose it is (owners.py)
    root/spaces/s-<sha256(space)>/notes/today.txt/.aios-v000000000007   version 7 of "notes/today.txt"
    root/spaces/s-<sha256(space)>/notes/today.txt/.aios-tmp-<random>    a write in progress (or a crash's leftover)
    root/spaces/e-<sha256(space)>/...                      an ephemeral space ("eph:..."), same layout
    root/spaces/.aios-drop-<random>/                       a space being dropped
    root/spaces/.aios-new-<random>/                        a space being made (renamed once its marker is written)

Crash safety: a version becomes visible only by the rename of a fully written, fsync'd temporary, and the directory
is fsync'd before write() returns, so every write that returned survives SIGKILL (and power loss, on a disk that
honours fsync) intact and no torn content is ever visible. Temporaries left by a crash are ignored by every read and
removed (with versions beyond `keep_versions` that a crash kept) the first time a space is touched in the next run;
that scan also computes the space's usage, so quotas are right after any crash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat

from kernel.storage import fsops
from kernel.storage.errors import bad_request, closed, not_found, over_quota
from kernel.storage.owners import NEW_PREFIX, SpaceOwners
from kernel.storage.paths import (
    EPHEMERAL_DIR_PREFIX,
    RESERVED_PREFIX,
    PrefixMatch,
    space_dirname,
    split_path,
    split_prefix,
    split_whole_prefix,
)
from kernel.storage.quota import (
    DIR_BYTES,
    MAX_DEPTH,
    MAX_SPACES,
    Limits,
    Usage,
    check_depth,
    check_size,
    check_version,
    check_write,
)
from kernel.storage.tree import charged, probe, walk_nodes
from kernel.storage.versions import FileInfo, Node, VersionInfo, remove_names, scan_node, to_prune, version_name

_LOCK_NAME = RESERVED_PREFIX + "-lock"
_SPACES = "spaces"
_DROP_PREFIX = RESERVED_PREFIX + "-drop-"


class StorageManager:
    def __init__(
        self,
        root: str,
        *,
        keep_versions: int = 10,
        quota_bytes: int,
        max_file_bytes: int,
        max_files: int,
        dir_bytes: int = DIR_BYTES,
        max_depth: int = MAX_DEPTH,
        max_spaces: int = MAX_SPACES,
    ):
        self.limits = Limits(
            keep_versions=keep_versions,
            quota_bytes=quota_bytes,
            max_files=max_files,
            max_file_bytes=max_file_bytes,
            dir_bytes=dir_bytes,
            max_depth=max_depth,
            max_spaces=max_spaces,
        )
        self._owners = SpaceOwners(max_spaces)
        self.root = os.fspath(root)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._usage: dict[str, Usage] = {}  # per space directory, filled the first time a space is touched
        self._root_fd: int | None = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._lock_fd = os.open(
                _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._root_fd
            )
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                raise RuntimeError(f"{self.root} is in use by another StorageManager") from None
            self._spaces_fd = fsops.walk(self._root_fd, [_SPACES], create=True)
        except BaseException:
            os.close(self._root_fd)
            raise
        self._remove_dropped()
        self.drop_ephemeral()
        self._owners.scan(self._spaces_fd)  # after the sweeps: what is left is what each principal holds

    # -- the syscalls -------------------------------------------------------------------------------------------

    def write(self, space: str, path: str, data: bytes) -> int:
        name = self._space(space)
        parts = split_path(path)
        check_depth(parts, path, self.limits)
        view = self._bytes(data)
        check_size(view.nbytes, self.limits)
        usage = self._usage_of(name)
        with contextlib.ExitStack() as stack:
            node_fd = self._node(stack, name, parts, create=False)
            node = scan_node(node_fd) if node_fd is not None else Node()
            new_dirs = (
                self._new_dirs(name, parts) if node_fd is None else -1 if charged(node) and not node.children else 0
            )  # an empty plain directory becoming a file: it is the file now
            pruned = to_prune(node, self.limits.keep_versions - 1)
            freed = sum(info.size for info in pruned)
            check_write(
                usage, self.limits, size=view.nbytes, freed=freed, new_file=not node.versions, new_dirs=new_dirs
            )
            number = node.highest + 1
            try:
                if not self._owners.known(name):  # a new space (or one not marked yet): bounded per principal
                    self._make_space(space, name)
                if node_fd is None:
                    node_fd = self._node(stack, name, parts, create=True)
                fsops.write_new(node_fd, version_name(number), view)
            except BaseException as error:
                self._usage.pop(name, None)  # directories may have been made: the next touch rescans
                if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise over_quota("the disk holding the store is full") from None
                raise
            remove_names(node_fd, [version_name(info.version) for info in pruned])
        usage.bytes += view.nbytes - freed
        usage.versions += 1 - len(pruned)
        usage.files += 0 if node.versions else 1
        usage.dirs += new_dirs
        self._usage[name] = usage  # the space exists now, so its usage is kept from here on
        return number

    def read(self, space: str, path: str, version: int | None = None) -> tuple[bytes, int]:
        parts = split_path(path)
        if version is not None:
            check_version(version)
        with contextlib.ExitStack() as stack:
            node_fd, node = self._existing(stack, space, path, parts)
            number = max(node.versions) if version is None else version
            if number not in node.versions:
                kept = node.ordered()
                raise not_found(
                    f"version {number} of {path!r} is not kept (kept: {kept[0].version}..{kept[-1].version})"
                )
            return fsops.read_regular(node_fd, version_name(number), self.limits.max_file_bytes), number

    def list(self, space: str, prefix: str = "", match: PrefixMatch = PrefixMatch.TEXT) -> list[FileInfo]:
        if match is PrefixMatch.COMPONENTS:
            dirs, partial = split_whole_prefix(prefix), None  # the base node and everything below it
        else:
            dirs, partial = split_prefix(prefix)
        found: list[FileInfo] = []

        def visit(fd: int, parts: list[str], node: Node) -> None:
            latest = node.latest()
            if latest is None:
                return
            if partial is None or (len(parts) > len(dirs) and parts[len(dirs)].startswith(partial)):
                found.append(FileInfo("/".join(parts), latest.size, latest.version, latest.time))

        with contextlib.ExitStack() as stack:
            base_fd = self._node(stack, self._space(space), dirs, create=False)
            if base_fd is not None:
                walk_nodes(base_fd, list(dirs), visit)
        return sorted(found, key=lambda info: info.path)

    def delete(self, space: str, path: str) -> None:
        name = self._space(space)
        parts = split_path(path)
        usage = self._usage_of(name)
        with contextlib.ExitStack() as stack:
            node_fd, node = self._existing(stack, space, path, parts)
            remove_names(node_fd, [version_name(number) for number in node.versions] + node.temps)
            fsops.fsync_dir(node_fd)
        usage.bytes -= node.stored_bytes()
        usage.versions -= len(node.versions)
        usage.files -= 1
        if not node.children:  # a leaf file: its node and emptied parents go
            usage.dirs -= self._remove_empty_dirs(name, parts)
        # a node with subdirectories stays, charged as a directory as it already was

    def versions(self, space: str, path: str) -> list[VersionInfo]:
        parts = split_path(path)
        with contextlib.ExitStack() as stack:
            return self._existing(stack, space, path, parts)[1].ordered()

    def rollback(self, space: str, path: str, version: int) -> int:
        data, _ = self.read(space, path, check_version(version))
        return self.write(space, path, data)

    def usage(self, space: str) -> dict:
        return self._usage_of(self._space(space)).as_dict(self.limits)

    def drop_space(self, space: str) -> bool:
        return self._drop_dir(self._space(space))

    def drop_ephemeral(self) -> int:
        """Drop every ephemeral space on disk; how many there were."""
        if self._root_fd is None:
            raise closed()
        with os.scandir(self._spaces_fd) as entries:
            names = [entry.name for entry in entries if entry.name.startswith(EPHEMERAL_DIR_PREFIX)]
        return sum(self._drop_dir(name) for name in names)

    def _drop_dir(self, name: str) -> bool:
        self._usage.pop(name, None)
        doomed = _DROP_PREFIX + secrets.token_hex(8)
        try:
            os.rename(name, doomed, src_dir_fd=self._spaces_fd, dst_dir_fd=self._spaces_fd)
        except FileNotFoundError:
            return False
        self._owners.forget(name)
        fsops.fsync_dir(self._spaces_fd)
        self._remove_tree(doomed)
        return True

    def close(self) -> None:
        if self._root_fd is None:
            return
        try:
            self.drop_ephemeral()
        except OSError:  # a failing disk: the next open sweeps them
            pass
        for fd in (self._spaces_fd, self._lock_fd, self._root_fd):
            os.close(fd)  # closing the lock descriptor releases the flock
        self._root_fd = None
        self._usage.clear()

    def __enter__(self) -> StorageManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------------------------

    @staticmethod
    def _bytes(data: object) -> memoryview:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise bad_request(f"data must be bytes, not {type(data).__name__}")
        try:
            return memoryview(data).cast("B")
        except (TypeError, ValueError):  # a non-contiguous or released memoryview
            raise bad_request("data must be a contiguous bytes-like object") from None

    def _space(self, space: str) -> str:
        if self._root_fd is None:
            raise closed()
        return space_dirname(space)

    def _node(self, stack: contextlib.ExitStack, name: str, parts: list[str], *, create: bool) -> int | None:
        """The node (or directory) `parts` of space directory `name`, opened into `stack`; None when missing."""
        fd = fsops.walk(self._spaces_fd, [name] + parts, create=create)
        if fd is not None:
            stack.callback(os.close, fd)
        return fd

    def _existing(self, stack: contextlib.ExitStack, space: str, path: str, parts: list[str]) -> tuple[int, Node]:
        """The node of a file that has at least one version, and what it holds; NOT_FOUND otherwise."""
        node_fd = self._node(stack, self._space(space), parts, create=False)
        node = scan_node(node_fd) if node_fd is not None else Node()
        if node_fd is None or not node.versions:
            raise not_found(f"no file {path!r} in this space")
        return node_fd, node

    def _usage_of(self, name: str) -> Usage:
        """The space's usage; the first time in this run, by a scan that also clears what a crash left behind.
        Only spaces that exist are remembered, so asking about arbitrary ids does not grow the table."""
        usage = self._usage.get(name)
        if usage is not None:
            return usage
        usage = Usage()

        def visit(fd: int, parts: list[str], node: Node) -> None:
            extra = to_prune(node, self.limits.keep_versions)
            remove_names(fd, node.temps + [version_name(info.version) for info in extra])
            for info in extra:
                del node.versions[info.version]
            usage.bytes += node.stored_bytes()
            usage.versions += len(node.versions)
            usage.files += 1 if node.versions else 0
            usage.dirs += 1 if parts and charged(node) else 0

        with contextlib.ExitStack() as stack:
            space_fd = self._node(stack, name, [], create=False)
            if space_fd is not None:
                walk_nodes(space_fd, [], visit)
                self._usage[name] = usage
        return usage

    def _new_dirs(self, name: str, parts: list[str]) -> int:
        """The charged directories a write of a new node `parts` adds (quota.py): the missing ones but its own node,
        plus the deepest existing one when it is a file that gains its first subdirectory."""
        with contextlib.ExitStack() as stack:
            space_fd = self._node(stack, name, [], create=False)
            depth, deepest = probe(space_fd, parts) if space_fd is not None else (0, None)
        gains_child = deepest is not None and not charged(deepest)
        return len(parts) - depth - 1 + (1 if gains_child else 0)

    def _remove_empty_dirs(self, name: str, parts: list[str]) -> int:
        """rmdir the (leaf) node of a deleted file and then its parents, up to the first one that still holds
        something; how many charged directories that uncharged (quota.py): every parent removed, and the one it
        stops at when that is a file left without subdirectories. The deleted node itself was its file, uncharged,
        unless it cannot be removed (something of ours still in it): then it is a plain directory, charged."""
        uncharged = 0
        for depth in range(len(parts), 0, -1):
            with contextlib.ExitStack() as stack:
                parent = self._node(stack, name, parts[: depth - 1], create=False)
                if parent is None:
                    return uncharged
                try:
                    os.rmdir(parts[depth - 1], dir_fd=parent)
                except OSError:  # not empty (other files or versions below), or already gone
                    if depth == len(parts):
                        return -1  # the emptied node stays: a plain directory now
                    child = fsops.open_dir(parent, parts[depth - 1])
                    if child is not None:
                        stack.callback(os.close, child)
                        if not charged(scan_node(child)):
                            uncharged += 1  # a file that lost its last subdirectory
                    return uncharged
                fsops.fsync_dir(parent)
                uncharged += 1 if depth < len(parts) else 0
        return uncharged

    def _make_space(self, space: str, name: str) -> None:
        """Make (or mark, when it exists unmarked) the directory of `space`; the quota error over max_spaces."""
        existing = fsops.open_dir(self._spaces_fd, name)
        if existing is None:
            self._owners.create(self._spaces_fd, space, name)
            return
        os.close(existing)
        self._owners.adopt(self._spaces_fd, space, name)

    def _remove_dropped(self) -> None:
        """Finish removing spaces whose drop (or creation: owners.py) a crash interrupted."""
        with os.scandir(self._spaces_fd) as entries:
            doomed = [entry.name for entry in entries if entry.name.startswith((_DROP_PREFIX, NEW_PREFIX))]
        for name in doomed:
            self._remove_tree(name)

    def _remove_tree(self, name: str) -> None:
        """Remove `name` under the spaces directory: rmtree for a real directory (it never follows symlinks inside);
        a space directory someone replaced by a symlink is unlinked, never followed."""
        if stat.S_ISDIR(os.stat(name, dir_fd=self._spaces_fd, follow_symlinks=False).st_mode):
            shutil.rmtree(name, dir_fd=self._spaces_fd)
        else:
            os.unlink(name, dir_fd=self._spaces_fd)
