"""What the sandbox user can reach: a stat walk, as root, of what a sandboxed server must execute and read.

kernel/tools/sandbox.py runs a server as uid/gid 65534 (no groups) when the kernel is root. That uid must be able to
search every directory on the way to the interpreter, the command and the script, and to execute / read those files;
otherwise the server dies at exec with a bare EACCES. This module says so beforehand, without running as that uid:

    view = jail_view(argv, hide, trees_from, path_env)        # the jail's view (trees_from: prefixes, project, path)
    problem = first_problem(argv, uid, view, path_env, roots)  # Unreachable | None; roots: where -m modules are found

`JailView` models what `_build_view` in sandbox.py mounts (the same function computes both, so they cannot drift):
paths under a cover (a hidden path, or a directory others cannot search on the way to a tree the jail needs) are out
of view, except the trees bound back, whose own modes hold, and the directories leading to them, which the jail
recreates searchable (0755). Without namespaces there are no covers and no binds: the host's modes hold everywhere.

`reach(path, access, uid, gid, view)` walks `path` one component at a time as path resolution does: every directory
looked up in needs search permission for the uid's class (owner if it owns it, else group if the gid matches, else
other: only that class counts, as in the kernel); a symlink is read and its target walked from where it points
(absolute from /, relative from its directory), at most 40 of them; the final file needs `access`. It returns the
first obstacle (an `Unreachable` naming the blocking path, its mode and owner, and what to do) or None. A path that
does not exist is not this module's verdict (None): the exec reports it. Not modelled: POSIX ACLs, LSMs, mount
options such as noexec — those can still refuse what the mode bits allow, never the other way round.

Stdlib only: sandbox.py loads this file by path in the launcher (run with -I, the package is not importable there).
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import stat
from dataclasses import dataclass

MAX_SYMLINKS = 40  # Linux's limit on symlinks followed in one resolution
_PYTHON = re.compile(r"python[0-9.]*$")
_VALUED_OPTIONS = ("-W", "-X", "--check-hash-based-pycs")  # python options that take the next argument


class Access(enum.Enum):
    READ = 4
    EXECUTE = 1  # a file to exec; on a directory: search

    @property
    def letter(self) -> str:
        return "r" if self is Access.READ else "x"


@dataclass(frozen=True)
class JailView:
    hidden: tuple[str, ...] = ()  # real paths covered on purpose (the kernel's directories, `sandbox.hide`)
    covers: tuple[str, ...] = ()  # every covered path (hidden ones and untraversable ancestors), none inside another
    bound: tuple[str, ...] = ()  # trees bound back under a cover, their own modes intact


@dataclass(frozen=True)
class Unreachable:
    """Printed most important first (error replies are cut at 300 characters): blocker, fix, then the target."""

    target: str  # what the server needs, as given
    blocker: str  # the first path on the way (or the target itself) that stops the uid
    why: str  # e.g. "cannot search /a/b (mode 0700, owner 0:0)"
    fix: str
    uid: int

    def __str__(self) -> str:
        needed = f"; needed for {self.target}" if self.target != self.blocker else ""
        return f"uid {self.uid} {self.why}: {self.fix}{needed}"


def inside(path: str, tops) -> bool:
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in tops)


def _strictly_above(path: str, trees) -> bool:
    return any(tree.startswith(path.rstrip("/") + "/") for tree in trees)


def resolve_command(argv: list[str], path_env: str | None) -> str | None:
    """The file execvp would run: a name with a slash as it is (even if nobody may execute it), else a PATH lookup."""
    if not argv:
        return None
    if "/" in argv[0]:
        return os.path.abspath(argv[0]) if os.path.lexists(argv[0]) else None
    return shutil.which(argv[0], path=path_env)


def kept_trees(argv: list[str], trees_from, path_env: str | None) -> list[str]:
    """The directories the jail needs (the interpreter, its import path, the project, the command), real, topmost."""
    command = resolve_command(argv, path_env)
    paths = [*trees_from, *([os.path.dirname(os.path.realpath(command))] if command else [])]
    trees = sorted({os.path.realpath(path) for path in paths if path and os.path.isdir(path)})
    return [tree for tree in trees if not inside(tree, [other for other in trees if other != tree])]


def untraversable(trees: list[str]) -> list[str]:
    """The topmost directory on each tree's way (the tree itself excluded) that others cannot search."""
    blocked = []
    for tree in trees:
        parts = tree.strip("/").split("/")
        for depth in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:depth])
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                blocked.append(ancestor)
                break
    return blocked


def jail_view(argv: list[str], hide, trees_from, path_env: str | None, namespaces: bool = True) -> JailView:
    """What the launcher mounts for argv: `hide` covered; unless trees_from is None (not root), the trees made of
    trees_from and the command's directory that lie under untraversable directories are bound back."""
    if not namespaces:
        return JailView()
    hidden = [os.path.realpath(path) for path in hide if os.path.lexists(path)]
    kept = kept_trees(argv, trees_from, path_env) if trees_from is not None else []
    trees = [tree for tree in kept if not inside(tree, hidden)]
    covers = sorted(set(hidden + untraversable(trees)))
    covers = [cover for cover in covers if not inside(cover, [other for other in covers if other != cover])]
    return JailView(tuple(dict.fromkeys(hidden)), tuple(covers), tuple(tree for tree in trees if inside(tree, covers)))


def allowed(st: os.stat_result, uid: int, gid: int, access: Access) -> bool:
    """Whether uid (in gid, no other groups, no capabilities) has `access` by the mode bits: one class counts."""
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    return bool(st.st_mode & (access.value << shift))


def reach(path: str, access: Access, uid: int, gid: int, view: JailView = JailView()) -> Unreachable | None:
    """The first obstacle between uid and `access` to the absolute `path` in `view`, or None."""
    try:
        return _walk(path, access, uid, gid, view)
    except OSError:  # changed under us (removed, replaced): no verdict; the exec meets whatever is there
        return None


def _walk(path: str, access: Access, uid: int, gid: int, view: JailView) -> Unreachable | None:
    pending = [part for part in path.split("/") if part]
    current, hops = "/", 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        blocked = _search_problem(path, current, uid, gid, view)
        if blocked:
            return blocked
        candidate = os.path.dirname(current) if name == ".." else os.path.join(current, name)
        if inside(candidate, view.hidden):
            why = f"cannot see {candidate}: it is hidden from sandboxed servers"
            return Unreachable(path, candidate, why, "move it out of the hidden paths, or set sandbox = false", uid)
        if _out_of_view(candidate, view):
            return _cover_problem(path, candidate, uid, gid, view)
        try:
            st = os.lstat(candidate)
        except OSError:
            return None  # missing (or not a directory): the exec reports that itself
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                return None  # ELOOP: the exec reports it
            target = os.readlink(candidate)
            pending[:0] = [part for part in target.split("/") if part]
            current = "/" if target.startswith("/") else current
            continue
        current = candidate
    st = os.stat(current)
    if (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)) and not allowed(st, uid, gid, access):
        return _mode_problem(path, current, st, access, uid, gid)
    return None


def _synthesized(directory: str, view: JailView) -> bool:
    """Recreated by the jail (0755, root's): a cover, or a directory under one on the way to a bound tree."""
    in_cover = inside(directory, view.covers) and not inside(directory, view.bound)
    return in_cover and (directory in view.covers or _strictly_above(directory, view.bound))


def _out_of_view(path: str, view: JailView) -> bool:
    return inside(path, view.covers) and not inside(path, view.bound) and not _synthesized(path, view)


def _search_problem(target: str, directory: str, uid: int, gid: int, view: JailView) -> Unreachable | None:
    if _synthesized(directory, view):
        return None
    st = os.stat(directory)
    return None if allowed(st, uid, gid, Access.EXECUTE) else _mode_problem(target, directory, st, None, uid, gid)


def _cover_problem(target: str, path: str, uid: int, gid: int, view: JailView) -> Unreachable:
    """A path under a directory the jail covers: name that directory (the one the uid cannot search)."""
    cover = next(cover for cover in view.covers if inside(path, [cover]))
    st = os.stat(cover)
    return _mode_problem(target, cover, st, None, uid, gid)


def _mode_problem(target, blocker, st, access: Access | None, uid: int, gid: int) -> Unreachable:
    """access None: a directory that needs search."""
    who = "u" if st.st_uid == uid else "g" if st.st_gid == gid else "o"
    letter = "x" if access is None else access.letter
    what = "search" if access is None else "execute" if access is Access.EXECUTE else "read"
    why = f"cannot {what} {blocker} (mode {stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid}:{st.st_gid})"
    # Running as the owner works too, unless that is root (never a sandbox's uid) or already this uid.
    owner = f", set limits uid = {st.st_uid}" if st.st_uid not in (0, uid) else ""
    fix = f"chmod {who}+{letter} it{owner}, move it where uid {uid} can, or set sandbox = false"
    return Unreachable(target, blocker, why, fix, uid)


# ------------------------------------------------------------------------------------------- what a command needs


def needs(argv: list[str], path_env: str | None, module_roots) -> list[tuple[str, Access]]:
    """What exec'ing argv opens: the command (and a #! line's interpreter), a python script or -m module, and any
    absolute path in the arguments that exists (a file to read, a directory to search)."""
    command = resolve_command(argv, path_env)
    if command is None:
        return []
    wanted = [(os.path.abspath(command), Access.EXECUTE)]
    interpreter = _shebang(command)
    if interpreter:
        wanted += [(os.path.abspath(command), Access.READ), (interpreter, Access.EXECUTE)]
    if _PYTHON.match(os.path.basename(argv[0])) or _PYTHON.match(os.path.basename(os.path.realpath(command))):
        module = _python_module(argv)
        found = _module_file(module, module_roots) if module else None
        if found:
            wanted.append((found, Access.READ))
    for arg in argv[1:]:
        value = arg.split("=", 1)[-1] if arg.startswith("-") else arg
        if os.path.isabs(value) and os.path.exists(value):
            wanted.append((value, Access.EXECUTE if os.path.isdir(value) else Access.READ))
    return list(dict.fromkeys(wanted))


def _shebang(command: str) -> str | None:
    try:
        with open(command, "rb") as file:
            head = file.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return words[0].decode(errors="replace") if words and words[0].startswith(b"/") else None


def _python_module(argv: list[str]) -> str | None:
    """The -m module of a python command line (a script is an absolute argument, checked as such)."""
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg in _VALUED_OPTIONS:
            index += 2
            continue
        if arg.startswith("-m") and not arg.startswith("--"):
            return arg[2:] or (argv[index + 1] if index + 1 < len(argv) else None)
        if not arg.startswith("-") or arg == "-" or arg.startswith("-c"):
            return None
        index += 1
    return None


def _module_file(module: str, roots) -> str | None:
    for root in roots:
        if not root:
            continue
        base = os.path.join(root, *module.split("."))
        for candidate in (base + ".py", os.path.join(base, "__main__.py")):
            if os.path.isfile(candidate):
                return candidate
    return None


def first_problem(argv: list[str], uid: int, view: JailView, path_env: str | None, module_roots) -> Unreachable | None:
    """The first thing argv needs that uid (gid = uid, no groups: the sandbox's drop) cannot reach in view."""
    for path, access in needs(argv, path_env, module_roots):
        problem = reach(path, access, uid, uid, view)
        if problem:
            return problem
    return None
