"""A sandboxed server the sandbox uid (65534) cannot reach is refused before it runs, naming the first blocking path
and the fix; a reachable one starts. Real files, processes and the real ToolManager; the verdict of the stat walk is
checked against the mode bits (computed independently) and against the kernel itself (a child as uid 65534).
Run as root (here and in CI): as a normal user the sandbox keeps the kernel's uid and nothing is checked. Tests that
run this checkout's interpreter in the sandbox skip, saying why, where it is out of the sandbox uid's reach."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ipc.errors import ErrorCode
from kernel.tools import ServerConfig, ToolManager, ToolsConfig
from kernel.tools.reach import Access, JailView, reach
from kernel.tools.sandbox import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    EXIT_UNREACHABLE,
    SandboxLimits,
    launcher_argv,
    reach_problem,
)
from tests.tools import servers
from tests.tools.helpers import WAIT_S, error_of, result
from tests.tools.reachable import needs_sandbox_reach, skip_unless_sandbox_reaches

NOBODY = 65534
ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not ROOT, reason="as a normal user the sandbox keeps the kernel's uid (no check)")
SERVER_SCRIPT = os.path.join(os.path.dirname(servers.__file__), "misc.py")


def _jail_available() -> bool:
    pid = os.fork()
    if pid == 0:
        os._exit(ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET) != 0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


@contextlib.contextmanager
def _searchable_dir(prefix: str):
    """A fresh directory under /tmp that everyone may search (a pytest tmp_path lies under a 0700 directory); also per
    hypothesis example, where a function-scoped fixture would be shared."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def base():
    with _searchable_dir("aios-reach-") as path:
        yield path


def _server_in(directory: str, mode: int) -> str:
    os.makedirs(directory)
    os.chmod(directory, mode)
    script = os.path.join(directory, "server.py")
    shutil.copy(SERVER_SCRIPT, script)
    os.chmod(script, 0o644)
    return script


@needs_sandbox_reach()
def test_the_check_names_the_0700_directory_and_passes_a_0755_one(base):
    locked = _server_in(os.path.join(base, "locked"), 0o700)
    problem = reach_problem([sys.executable, locked])
    assert problem is not None and problem.blocker == os.path.dirname(locked) and problem.target == locked
    text = str(problem)
    assert f"{os.path.dirname(locked)} (mode 0700, owner 0:0): chmod o+x it" in text and "sandbox = false" in text
    assert reach_problem([sys.executable, _server_in(os.path.join(base, "open"), 0o755)]) is None
    # The project's own interpreter and servers are reachable from here (this checkout is not under a 0700 dir).
    assert reach_problem([sys.executable, "-m", "kernel.tools.servers.calculator"]) is None


def test_an_interpreter_behind_a_0700_directory_is_named(base):
    hidden = os.path.join(base, "venv")
    os.mkdir(hidden, 0o700)
    link = os.path.join(hidden, "python")
    os.symlink(sys.executable, link)
    problem = reach_problem([link, "-c", "pass"])
    assert problem is not None and problem.blocker == hidden and problem.target == link


@needs_sandbox_reach()
def test_a_file_the_uid_cannot_read_is_named_with_its_owner(base):
    script = _server_in(os.path.join(base, "open"), 0o755)
    os.chown(script, 1234, 0)
    os.chmod(script, 0o640)
    problem = reach_problem([sys.executable, script], SandboxLimits())
    assert problem is not None and problem.blocker == script
    assert f"read {script} (mode 0640, owner 1234:0): chmod o+r it" in str(problem)
    assert "limits uid = 1234" in str(problem)
    assert reach_problem([sys.executable, script], SandboxLimits(uid=1234)) is None  # the owner reads it


@needs_sandbox_reach()
def test_a_hidden_path_is_refused_as_hidden(base):
    script = _server_in(os.path.join(base, "open"), 0o755)
    problem = reach_problem([sys.executable, script], hide=(os.path.dirname(script),))
    assert problem is not None and "hidden" in problem.why and problem.blocker == os.path.dirname(script)


@needs_sandbox_reach()
def test_a_module_on_a_0700_import_root_is_named(base):
    """A checkout made by `mktemp -d` (0700) holding the servers' package: `python -m` of it is refused there."""
    root = os.path.join(base, "clone")
    package = os.path.join(root, "toolpkg")
    os.makedirs(package)
    os.chmod(root, 0o700)
    for name in ("__init__.py", "server.py"):
        with open(os.path.join(package, name), "w") as file:
            file.write("")
    problem = reach_problem([sys.executable, "-m", "toolpkg.server"], pythonpath=root)
    assert problem is not None and problem.blocker == root
    assert problem.target == os.path.join(package, "server.py")
    os.chmod(root, 0o755)
    assert reach_problem([sys.executable, "-m", "toolpkg.server"], pythonpath=root) is None


@needs_sandbox_reach()
def test_the_suite_helper_skips_with_the_checks_own_reason(base):
    locked = [sys.executable, _server_in(os.path.join(base, "locked"), 0o700)]
    with pytest.raises(pytest.skip.Exception) as skipped:
        skip_unless_sandbox_reaches(locked)
    assert skipped.value.msg == str(reach_problem(locked))
    opened = [sys.executable, _server_in(os.path.join(base, "open"), 0o755)]
    skip_unless_sandbox_reaches(opened)  # returns: nothing to skip


@needs_sandbox_reach()
def test_a_real_start_is_refused_with_the_message_and_the_other_server_works(base):
    locked = _server_in(os.path.join(base, "locked"), 0o700)
    opened = _server_in(os.path.join(base, "open"), 0o755)
    config = ToolsConfig(
        servers=[
            ServerConfig(name="locked", command=["python", locked], sandbox=True),
            ServerConfig(name="opened", command=["python", opened], sandbox=True),
        ]
    )
    with ToolManager(config) as manager:
        errors = manager.start(timeout=WAIT_S)
        assert set(errors) == {"locked"}
        blocker = os.path.dirname(locked)
        assert "'locked'" in errors["locked"] and f"{blocker} (mode 0700, owner 0:0): chmod o+x it" in errors["locked"]
        assert "sandbox = false" in errors["locked"]
        error = error_of(manager.call("locked.strict", {"n": 1}, {}))
        assert error.code == ErrorCode.INTERNAL and f"{blocker} (mode 0700, owner 0:0): chmod o+x it" in error.message
        assert result(manager.call("opened.strict", {"n": 7}, {})).text == "7"


@needs_sandbox_reach()
def test_the_launcher_exits_126_before_running_anything(base):
    locked = _server_in(os.path.join(base, "locked"), 0o700)
    marker = os.path.join(base, "ran")
    workdir = tempfile.mkdtemp(prefix="aios-reach-work-")
    try:
        argv = launcher_argv(SandboxLimits(), workdir, [sys.executable, locked, marker])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert f"refused: uid {NOBODY} cannot search {os.path.dirname(locked)} (mode 0700" in done.stderr
    assert done.stderr.rstrip().endswith(f"needed for {locked}")
    assert not os.path.exists(marker)


@pytest.mark.skipif(not _jail_available(), reason="no mount/PID/network namespaces: nothing is bound back")
def test_trees_bound_back_under_a_0700_directory_start_whatever_the_umask(base):
    """The jail covers a 0700 directory above a tree it needs and recreates the way to it: searchable even when the
    kernel's umask is 077."""
    closed = os.path.join(base, "closed")
    os.mkdir(closed, 0o700)
    tool_dir = os.path.join(closed, "a", "bin")
    os.makedirs(tool_dir, mode=0o755)
    os.chmod(os.path.join(closed, "a"), 0o755)
    tool = os.path.join(tool_dir, "tool")
    with open(tool, "w") as file:
        file.write("#!/bin/sh\necho reached\n")
    os.chmod(tool, 0o755)
    assert reach_problem([tool]) is None  # bound back: the 0700 directory above it does not block it
    workdir = tempfile.mkdtemp(prefix="aios-reach-work-")
    try:
        argv = launcher_argv(SandboxLimits(), workdir, [tool])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S, umask=0o077)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert done.returncode == 0 and done.stdout.strip() == "reached", done.stderr


# ------------------------------------------------------------------------ random trees against the mode bits

OWNERS = (0, NOBODY, 1234)
node = st.tuples(st.integers(0, 0o777), st.sampled_from(OWNERS), st.sampled_from(OWNERS))  # mode, uid, gid


def _bit(mode: int, uid: int, gid: int, bit: int) -> bool:
    """Independently: the class nobody (uid 65534, gid 65534, no groups) falls in, then that class's bit."""
    if uid == NOBODY:
        return bool(mode & (bit << 6))
    if gid == NOBODY:
        return bool(mode & (bit << 3))
    return bool(mode & bit)


def _build(base: str, dirs, leaf, via_link: int | None) -> tuple[str, list[str], str]:
    """dirs nested under base, a file at the bottom; the path to it, optionally through a symlink in base that
    points at the via_link-th directory. Returns (path given, directories searched in order, the file)."""
    paths, current = [], base
    for index in range(len(dirs)):
        current = os.path.join(current, f"d{index}")
        os.mkdir(current)
        paths.append(current)
    target = os.path.join(current, "file")
    with open(target, "w") as file:
        file.write("x")
    for path, (mode, uid, gid) in zip([*paths, target], [*dirs, leaf]):
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    given_path = target
    if via_link is not None and paths:
        link = os.path.join(base, "link")
        os.symlink(paths[via_link], link)
        given_path = os.path.join(link, *[f"d{i}" for i in range(via_link + 1, len(dirs))], "file")
    return given_path, paths, target


def _expected(paths, dirs, target, leaf) -> str | None:
    for path, (mode, uid, gid) in zip(paths, dirs):
        if not _bit(mode, uid, gid, 1):
            return path
    return None if _bit(*leaf, 4) else target


def _kernel_says(path: str) -> bool:
    """Whether uid/gid 65534 with no groups can open path for reading: the kernel's own answer."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            os.close(os.open(path, os.O_RDONLY))
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


tree = st.lists(node, min_size=1, max_size=4).flatmap(
    lambda dirs: st.tuples(st.just(dirs), node, st.none() | st.integers(0, len(dirs) - 1))
)


@settings(max_examples=150, deadline=None)
@given(tree)
def test_random_trees_verdict_matches_the_mode_bits(spec):
    dirs, leaf, via_link = spec
    with _searchable_dir("aios-reach-tree-") as base:
        path, paths, target = _build(base, dirs, leaf, via_link)
        problem = reach(path, Access.READ, NOBODY, NOBODY, JailView())
        assert (problem.blocker if problem else None) == _expected(paths, dirs, target, leaf)


@settings(max_examples=40, deadline=None)
@given(tree)
def test_random_trees_verdict_matches_the_kernel(spec):
    dirs, leaf, via_link = spec
    with _searchable_dir("aios-reach-tree-") as base:
        path, _, _ = _build(base, dirs, leaf, via_link)
        assert (reach(path, Access.READ, NOBODY, NOBODY, JailView()) is None) == _kernel_says(path)


def test_modes_mean_what_the_class_says():
    """The independent computation above, on one case per class, so a mistake in it cannot hide a mistake in reach."""
    assert _bit(0o700, NOBODY, 0, 1) and not _bit(0o077, NOBODY, 0, 1)  # owner: only the owner bits count
    assert _bit(0o070, 0, NOBODY, 1) and not _bit(0o707, 0, NOBODY, 1)  # group: only the group bits count
    assert _bit(0o001, 0, 0, 1) and not _bit(0o770, 0, 0, 1)
    assert stat.S_IXOTH == 1


def _jail_expects(dirs, leaf) -> bool:
    """Independently: the jail binds the command's directory (the last) back when a directory above it lacks
    other-search (that one is covered and the way down recreated 0755): then only the last directory's and the
    file's modes count; otherwise every directory's does. A #! script needs read and execute."""
    covered = any(not mode & stat.S_IXOTH for mode, _, _ in dirs[:-1])
    searched = dirs[-1:] if covered else dirs
    return all(_bit(*node, 1) for node in searched) and _bit(*leaf, 4) and _bit(*leaf, 1)


@pytest.mark.skipif(not _jail_available(), reason="no mount/PID/network namespaces: nothing is bound back")
@settings(max_examples=25, deadline=None)
@given(st.lists(node, min_size=1, max_size=3), node)
@example([(0o700, 0, 0), (0o755, 0, 0)], (0o755, 0, 0))  # covered, the way down recreated: runs
@example([(0o700, 0, 0), (0o700, 0, 0)], (0o755, 0, 0))  # covered, but the bound directory itself is 0700
@example([(0o755, 0, 0), (0o750, 0, 0)], (0o755, 0, 0))  # nothing covered: the host's 0750 blocks
@example([(0o100, NOBODY, 0)], (0o500, NOBODY, 0))  # the owner's bits
def test_random_trees_in_the_real_jail(dirs, leaf):
    """The check's verdict for a command at the bottom of a random tree matches the mode bits as the jail rearranges
    them, and the real launcher agrees: the command runs when the check passes it, exits 126 when it does not."""
    workdir = tempfile.mkdtemp(prefix="aios-reach-work-")
    try:
        with _searchable_dir("aios-reach-jail-") as base:
            _, _, command = _build(base, dirs, leaf, None)
            with open(command, "w") as file:
                file.write("#!/bin/sh\necho reached\n")
            expected = _jail_expects(dirs, leaf)
            assert (reach_problem([command]) is None) == expected
            argv = launcher_argv(SandboxLimits(), workdir, [command])
            done = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S, stdin=subprocess.DEVNULL)
            if expected:
                assert done.returncode == 0 and done.stdout.strip() == "reached", done.stderr
            else:
                assert done.returncode == EXIT_UNREACHABLE and "refused: " in done.stderr, done.stderr
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
