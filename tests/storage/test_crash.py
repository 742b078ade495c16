"""Crash safety with real processes: a child writes versions in a loop and prints each one after write() returns;
the parent SIGKILLs it after a given number of acknowledged writes, over many kill points on the same root. A fresh
StorageManager then finds every acknowledged version that is still within the kept window intact (its sha256 as
printed), every visible version complete (content is a pure function of path and version), no temporaries left, and
the usage equal to what is on disk. The child then carries on from there in the next round.

An outside kill right after an ack mostly lands early in the next write (the parent reacts in microseconds, the write
takes milliseconds), so a second test has the child kill itself at exact steps inside write() (crash_writer CALL:N):
half-written data, before the file fsync, before the rename, before the directory fsync, in the middle of pruning."""

import hashlib
import os
import signal
import subprocess
import sys

from kernel.storage import StorageManager
from tests.storage.conftest import tree
from tests.storage.crash_writer import KEEP, LIMITS, PATHS, SPACE, content

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILL_AFTER = [0, 1, 2, 3, 5, 8, 13, 21, 34]  # acknowledged writes per round before the SIGKILL


DIE_AT = [
    "write:1",
    "fsync:1",
    "rename:1",
    "fsync:2",
    "write:6",
    "fsync:9",
    "rename:7",
    "unlink:1",
    "unlink:2",
    "fsync:30",
    "write:11",
]


def run_and_kill(root: str, acks: int | None, die_at: str | None = None) -> list[tuple[str, int, str]]:
    """Start the writer and SIGKILL it once `acks` writes are acknowledged (or let it kill itself at `die_at`);
    every write it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_writer", root] + ([die_at] if die_at else []),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        assert child.stdout.readline() == "ready\n"
        while acks is None or len(lines) < acks:
            line = child.stdout.readline()
            if not line and acks is None:
                break  # it killed itself
            assert line, "the writer stopped before it was killed"
            lines.append(line)
        child.send_signal(signal.SIGKILL)
        lines += child.stdout.readlines()  # acknowledged between our last read and the kill
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    acked = []
    for line in lines:
        path, version, digest = line.split()
        acked.append((path, int(version), digest))
    return acked


def check_store(root: str, acked: list[tuple[str, int, str]]) -> None:
    with StorageManager(root, **LIMITS) as store:
        usage = store.usage(SPACE)  # the first touch: clears what the kill left
        visible = {info.path: info.version for info in store.list(SPACE)}
        stored = 0
        for path in PATHS:
            mine = [(version, digest) for (name, version, digest) in acked if name == path]
            last_acked = max((version for version, _ in mine), default=0)
            latest = visible.get(path, 0)
            assert latest in (last_acked, last_acked + 1)  # +1: published but killed before the ack
            kept = store.versions(SPACE, path) if latest else []
            assert [info.version for info in kept] == list(range(max(1, latest - KEEP + 1), latest + 1))
            for version, digest in mine:
                if version > latest - KEEP:
                    data, _ = store.read(SPACE, path, version)
                    assert hashlib.sha256(data).hexdigest() == digest, (path, version)
            for info in kept:
                data, _ = store.read(SPACE, path, info.version)
                assert data == content(path, info.version) and len(data) == info.size, (path, info.version)
                stored += info.size
        assert set(visible) <= set(PATHS)
        assert usage["bytes"] == stored and usage["versions"] <= KEEP * len(PATHS)
    assert not [name for name in tree(root) if ".aios-tmp-" in name]


def test_every_acknowledged_write_survives_sigkill_and_nothing_torn_is_visible(tmp_path):
    root = str(tmp_path / "root")
    acked: list[tuple[str, int, str]] = []
    for acks in KILL_AFTER:
        acked += run_and_kill(root, acks)
        check_store(root, acked)
    assert len(acked) >= sum(KILL_AFTER)


def test_a_kill_at_each_step_of_a_write_leaves_nothing_torn(tmp_path):
    root = str(tmp_path / "root")
    acked: list[tuple[str, int, str]] = []
    torn_seen = 0
    for die_at in DIE_AT:
        acked += run_and_kill(root, None, die_at)
        torn_seen += any(".aios-tmp-" in name for name in tree(root))
        check_store(root, acked)
    assert torn_seen >= 5  # write, fsync (file) and rename kills leave a temporary behind
