import os
import subprocess
import sys

import pytest

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
    arena.close()                                   # idempotent
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
    assert arena.alloc(ALIGN) == b                  # first fit: the hole left by b
    arena.free(b)
    arena.free(a)                                   # coalesces with the hole after it
    assert arena.alloc(3 * ALIGN) == 0
    assert arena.used_bytes == 4 * ALIGN


def test_exhaustion_returns_none_and_free_restores_room(arena):
    blocks = [arena.alloc(ALIGN) for _ in range(64)]
    assert arena.alloc(1) is None and arena.free_bytes == 0
    for block in blocks[::2]:
        arena.free(block)
    assert arena.alloc(2 * ALIGN) is None           # fragmented: no two adjacent free pages
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
    assert os.path.exists(arena.path)               # the live arena keeps its segment


def test_view_after_close_is_an_error():
    arena = Arena(1 << 16, kernel_id=f"{os.getpid()}.closed")
    block = arena.alloc(8)
    arena.close()
    with pytest.raises(ArenaError, match="closed"):
        arena.view(block, 0, 8)


def test_stale_segment_of_a_killed_kernel_is_removed():
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys; from kernel.context.arena import Arena\n"
                               "a = Arena(1 << 20); print(a.path, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    path = owner.stdout.readline().strip()
    live = Arena(1 << 16, kernel_id=f"{os.getpid()}.live")
    try:
        assert path == f"/dev/shm/aios-{owner.pid}-kv" and os.path.exists(path)
        assert path not in remove_stale_segments()      # its kernel is alive
        owner.kill()                                    # SIGKILL: no chance to unlink
        owner.wait(timeout=60)
        assert os.path.exists(path)
        removed = remove_stale_segments()
        assert path in removed and not os.path.exists(path)
        assert os.path.exists(live.path)                # a live kernel's arena stays
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
