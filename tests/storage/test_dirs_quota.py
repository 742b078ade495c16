"""Directories are charged to the space's quota (quota.py): hypothesis over random sets of paths written and
deleted, on a real directory: the charged usage always equals what is on disk (bytes of version files plus dir_bytes
per charged directory; files plus charged directories as inodes), never exceeds the limits, and survives a reopen;
paths past the depth limit are refused before anything is made."""

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc.errors import ErrorCode, ProtocolError
from kernel.storage import StorageManager
from kernel.storage.paths import space_dirname

S = "uid:1/s"
QUOTA = ErrorCode.QUOTA
LIMITS = dict(keep_versions=2, quota_bytes=6 * 4096 + 300, max_file_bytes=200, max_files=8)
PATHS = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4).map("/".join)
STEPS = st.lists(st.tuples(st.booleans(), PATHS, st.integers(0, 200)), min_size=1, max_size=25)


def on_disk(root: str) -> tuple[int, int, int]:
    """(bytes of version files, files, charged directories) found by walking the space directory."""
    top = os.path.join(root, "spaces", space_dirname(S))
    data = files = dirs = 0
    for base, subdirs, names in os.walk(top):
        versions = [n for n in names if n.startswith(".aios-v")]
        data += sum(os.path.getsize(os.path.join(base, n)) for n in versions)
        if base != top:
            files += bool(versions)
            dirs += not (versions and not subdirs)
    return data, files, dirs


def check(store: StorageManager, root: str) -> None:
    data, files, dirs = on_disk(root)
    usage = store._usage_of(space_dirname(S))
    assert (usage.bytes, usage.files, usage.dirs) == (data, files, dirs)
    assert store.usage(S)["bytes"] == data
    assert data + 4096 * dirs <= LIMITS["quota_bytes"] and files + dirs <= LIMITS["max_files"]


@settings(max_examples=60, deadline=None)
@given(steps=STEPS)
def test_charged_usage_is_what_is_on_disk_and_within_the_limits(steps):
    with tempfile.TemporaryDirectory() as root:
        store = StorageManager(root, **LIMITS)
        try:
            for write, path, size in steps:
                try:
                    store.write(S, path, b"x" * size) if write else store.delete(S, path)
                except ProtocolError as error:
                    assert error.code in ((QUOTA,) if write else (ErrorCode.NOT_FOUND,))
                check(store, root)
            store.close()
            store = StorageManager(root, **LIMITS)  # a fresh scan agrees with the kept count
            check(store, root)
        finally:
            store.close()


def test_the_directory_flood_is_refused(tmp_path):
    store = StorageManager(str(tmp_path), quota_bytes=256 << 20, max_file_bytes=1 << 20, max_files=10_000)
    deep = "/".join(["d"] * 17)
    with pytest.raises(ProtocolError) as refused:
        store.write(S, deep, b"")
    assert refused.value.code is ErrorCode.BAD_REQUEST and "16" in refused.value.message
    assert not os.path.exists(os.path.join(str(tmp_path), "spaces", space_dirname(S)))
    made = 0
    with pytest.raises(ProtocolError) as full:  # the 20-empty-files attack: 15 new directories per file
        for number in range(10_000):
            store.write(S, f"{number}/" + "/".join(["d"] * 15), b"")
            made += 1
    assert full.value.code is QUOTA and made < 700
    usage = store._usage_of(space_dirname(S))
    assert usage.files + usage.dirs <= 10_000 and usage.bytes + 4096 * usage.dirs <= 256 << 20
    store.close()
