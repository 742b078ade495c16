"""The KV arena: the allocator on a real shm segment, and the startup sweep of stale segments against hostile files."""

import fcntl
import logging
import os
import stat
import subprocess
import sys
import threading

import pytest

from kernel.context import arena as arena_module
from kernel.context.arena import ALIGN, Arena, ArenaError, remove_stale_segments, segment_path


@pytest.fixture
def arena():
    with Arena(64 * ALIGN, kernel_id=f"{os.getpid()}.arena") as a:
        yield a


def test_segment_is_real_shm_file_and_close_unlinks():
    arena = Arena(1 << 20, kernel_id=f"{os.getpid()}.unlink")
    assert arena.path == f"/dev/shm/aios-{os.getpid()}.unlink-kv"
    assert os.path.getsize(arena.path) == 1 << 20
    arena.view(arena.alloc(4), 0, 4)[:] = b"abcd"
    arena.close()
    arena.close()  # idempotent
    assert not os.path.exists(arena.path)


def test_data_is_visible_through_the_segment_file(arena):
    block = arena.alloc(10)
    arena.view(block, 2, 5)[:] = b"hello"
    with open(arena.path, "rb") as f:
        f.seek(block + 2)
        assert f.read(5) == b"hello"


def test_first_fit_reuses_the_lowest_hole_and_coalesces(arena):
    a, b, c = arena.alloc(ALIGN), arena.alloc(2 * ALIGN), arena.alloc(ALIGN)
    assert (a, b, c) == (0, ALIGN, 3 * ALIGN)
    arena.free(b)
    assert arena.alloc(ALIGN) == b  # first fit: the hole left by b
    arena.free(b)
    arena.free(a)  # coalesces with the hole after it
    assert arena.alloc(3 * ALIGN) == 0
    assert arena.used_bytes == 4 * ALIGN


def test_exhaustion_returns_none_and_free_restores_room(arena):
    blocks = [arena.alloc(ALIGN) for _ in range(64)]
    assert arena.alloc(1) is None and arena.free_bytes == 0
    for block in blocks[::2]:
        arena.free(block)
    assert arena.alloc(2 * ALIGN) is None  # fragmented: no two adjacent free pages
    for block in blocks[1::2]:
        arena.free(block)
    assert arena.largest_free_block() == arena.size


def test_bad_calls_get_clear_errors(arena):
    with pytest.raises(ValueError, match="no allocated block"):
        arena.free(ALIGN)
    block = arena.alloc(ALIGN)
    with pytest.raises(ValueError, match="not inside an allocated block"):
        arena.view(block, 0, ALIGN + 1)
    with pytest.raises(ValueError, match="positive"):
        arena.alloc(0)
    with pytest.raises(ArenaError, match="kernel id"):
        segment_path("../etc")
    with pytest.raises(ArenaError, match="at least"):
        Arena(0, kernel_id=f"{os.getpid()}.zero")
    with pytest.raises(ArenaError, match="already exists"):
        Arena(1 << 16, kernel_id=f"{os.getpid()}.arena")
    assert os.path.exists(arena.path)  # the live arena keeps its segment


def test_view_after_close_is_an_error():
    arena = Arena(1 << 16, kernel_id=f"{os.getpid()}.closed")
    block = arena.alloc(8)
    arena.close()
    with pytest.raises(ArenaError, match="closed"):
        arena.view(block, 0, 8)


def test_stale_segment_of_a_killed_kernel_is_removed():
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from kernel.context.arena import Arena\n"
            "a = Arena(1 << 20); print(a.path, flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    path = owner.stdout.readline().strip()
    live = Arena(1 << 16, kernel_id=f"{os.getpid()}.live")
    try:
        assert path == f"/dev/shm/aios-{owner.pid}-kv" and os.path.exists(path)
        assert path not in remove_stale_segments()  # its kernel is alive
        owner.kill()  # SIGKILL: no chance to unlink
        owner.wait(timeout=60)
        assert os.path.exists(path)
        removed = remove_stale_segments()
        assert path in removed and not os.path.exists(path)
        assert os.path.exists(live.path)  # a live kernel's arena stays
    finally:
        live.close()
        owner.stdin.close()


def test_a_stale_segment_under_a_reused_pid_is_replaced():
    """A dead kernel's segment whose name carries a pid now in use (ours): nobody holds its lock, so it is stale."""
    path = segment_path(f"{os.getpid()}.reused")
    with open(path, "wb") as f:
        f.write(b"left by a dead kernel")
    assert path in remove_stale_segments()
    with open(path, "wb") as f:
        f.write(b"left by a dead kernel")
    with Arena(1 << 16, kernel_id=f"{os.getpid()}.reused") as arena:
        assert os.path.getsize(arena.path) == 1 << 16
        assert path not in remove_stale_segments()  # locked by its live owner
    assert not os.path.exists(path)


# The startup sweep against hostile /dev/shm contents. These run in a private directory (shm_dir=tmp_path), so they can
# never remove a real segment of another kernel running on this machine.


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid  # reaped: no process has this pid now (reuse: too unlikely)


def _sweep_in_a_thread(shm_dir) -> list[str]:
    """The sweep's result; fails instead of hanging the suite if the sweep blocks (e.g. opening a FIFO)."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(remove_stale_segments(str(shm_dir))), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the sweep blocked"
    return result[0]


def _stale_file(path) -> None:
    with open(path, "wb") as f:
        f.write(b"left by a dead kernel")


def test_sweep_removes_our_dead_kernels_regular_file(tmp_path):
    path = tmp_path / f"aios-{_dead_pid()}-kv"
    _stale_file(path)
    (tmp_path / "aios-notapid-kv").write_bytes(b"")  # not a segment name: never touched
    assert _sweep_in_a_thread(tmp_path) == [str(path)]
    assert not path.exists() and (tmp_path / "aios-notapid-kv").exists()


def test_sweep_skips_a_fifo_without_blocking(tmp_path, caplog):
    fifo = tmp_path / f"aios-{_dead_pid()}-kv"
    os.mkfifo(fifo)
    with caplog.at_level(logging.WARNING):
        assert _sweep_in_a_thread(tmp_path) == []
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert "not a regular file" in caplog.text


def test_sweep_never_follows_or_removes_a_symlink(tmp_path, caplog):
    target = tmp_path / "precious"
    _stale_file(target)  # looks exactly like a stale segment of ours, but is not one by name
    link = tmp_path / f"aios-{_dead_pid()}-kv"
    link.symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link_to_fifo = tmp_path / f"aios-{_dead_pid()}.f-kv"
    link_to_fifo.symlink_to(fifo)
    with caplog.at_level(logging.WARNING):
        assert _sweep_in_a_thread(tmp_path) == []
    assert os.path.islink(link) and os.path.islink(link_to_fifo) and target.read_bytes() == b"left by a dead kernel"
    assert "a symlink" in caplog.text


def test_sweep_skips_a_file_of_another_uid(tmp_path, monkeypatch, caplog):
    path = tmp_path / f"aios-{_dead_pid()}-kv"
    _stale_file(path)
    if os.getuid() == 0:
        os.chown(path, 4242, 4242)  # a real foreign owner
    else:
        monkeypatch.setattr(arena_module.os, "getuid", lambda: os.getpid() + 100000)  # we are "someone else"
    with caplog.at_level(logging.WARNING):
        assert _sweep_in_a_thread(tmp_path) == []
    assert path.exists() and "owned by uid" in caplog.text


def test_sweep_skips_a_file_that_the_uid_check_calls_foreign(tmp_path, monkeypatch):
    """The same through the uid check alone, so it is exercised whoever runs the tests (root can open anything)."""
    path = tmp_path / f"aios-{_dead_pid()}-kv"
    _stale_file(path)
    real_uid = os.getuid()
    monkeypatch.setattr(arena_module.os, "getuid", lambda: real_uid + 1)
    assert _sweep_in_a_thread(tmp_path) == []
    assert path.exists()


def test_sweep_leaves_a_live_kernels_segment(tmp_path):
    path = tmp_path / f"aios-{os.getpid()}.held-kv"
    _stale_file(path)
    holder = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # what a live kernel holds for its segment's whole life
        assert _sweep_in_a_thread(tmp_path) == []
        assert path.exists()
    finally:
        os.close(holder)
    assert _sweep_in_a_thread(tmp_path) == [str(path)]  # its kernel gone: the lock is free


def test_sweep_of_a_mixed_directory_removes_only_the_stale_regular_file(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f"aios-{dead}-kv"
    _stale_file(stale)
    os.mkfifo(tmp_path / f"aios-{dead}.fifo-kv")
    (tmp_path / f"aios-{dead}.link-kv").symlink_to(stale)
    os.mkdir(tmp_path / f"aios-{dead}.dir-kv")
    assert _sweep_in_a_thread(tmp_path) == [str(stale)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"aios-{dead}.fifo-kv", f"aios-{dead}.link-kv", f"aios-{dead}.dir-kv"]
    )


def test_sweep_of_a_missing_directory_is_empty(tmp_path):
    assert remove_stale_segments(str(tmp_path / "absent")) == []


def test_an_arena_whose_name_is_taken_by_a_fifo_fails_clearly_instead_of_blocking(tmp_path):
    os.mkfifo(segment_path(f"{os.getpid()}.planted", str(tmp_path)))
    with pytest.raises(ArenaError, match="not a regular file"):
        Arena(1 << 16, kernel_id=f"{os.getpid()}.planted", shm_dir=str(tmp_path))
    link = segment_path(f"{os.getpid()}.linked", str(tmp_path))
    os.symlink(tmp_path / "elsewhere", link)
    with pytest.raises(ArenaError, match="symlink"):
        Arena(1 << 16, kernel_id=f"{os.getpid()}.linked", shm_dir=str(tmp_path))
    assert not (tmp_path / "elsewhere").exists()
