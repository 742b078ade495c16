"""Fixtures for the storage tests: a store on a real directory under pytest's tmp_path, closed after the test."""

import os

import pytest

from kernel.storage import StorageManager

LIMITS = dict(keep_versions=3, quota_bytes=1 << 20, max_file_bytes=64 << 10, max_files=16)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "root")


@pytest.fixture
def make_store(root):
    """make_store(**limits) opens a StorageManager on `root` (LIMITS unless overridden); all are closed at the end."""
    opened = []

    def make(**overrides):
        store = StorageManager(root, **{**LIMITS, **overrides})
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


def space_dir(root: str, space: str) -> str:
    from kernel.storage.paths import space_dirname

    return os.path.join(root, "spaces", space_dirname(space))


def tree(top: str) -> list[str]:
    """Every entry under `top` (relative, sorted), symlinks listed and not followed."""
    found = []
    for base, dirs, files in os.walk(top):
        found += [os.path.relpath(os.path.join(base, name), top) for name in dirs + files]
    return sorted(found)
