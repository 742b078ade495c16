"""Stateful hypothesis test: the store against a plain in-memory model of the contract (versions numbered up from
the latest kept, the last N kept, delete forgets all, rollback is a write, quotas checked in the order size, files,
bytes), including closing and reopening the manager on the same root between any two steps. Directories are charged
as quota.py says: every proper prefix of a stored path ("a" and "a/b" of "a/b/c") is a plain directory, or a file that
has a subdirectory, and costs DIR_BYTES of the byte quota and one inode of max_files; a file's own node does not."""

import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ipc.errors import ErrorCode, ProtocolError
from kernel.storage import StorageManager
from kernel.storage.quota import DIR_BYTES

# two directories fit beside 200 bytes of files, a third does not; four inodes (files and directories)
KEEP, QUOTA_BYTES, MAX_FILE, MAX_FILES = 3, 2 * DIR_BYTES + 200, 64, 4
QUOTA = ErrorCode.QUOTA
SPACES = st.sampled_from(["s1", "s2"])
PATHS = st.sampled_from(["a", "b", "a/b", "a/b/c", "c/d"])
DATA = st.one_of(st.binary(max_size=MAX_FILE), st.binary(min_size=MAX_FILE - 8, max_size=MAX_FILE + 8))


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp()
        self.store = self._open()
        self.model: dict[tuple[str, str], list[tuple[int, bytes]]] = {}  # kept versions, oldest first

    def _open(self) -> StorageManager:
        return StorageManager(
            self.root, keep_versions=KEEP, quota_bytes=QUOTA_BYTES, max_file_bytes=MAX_FILE, max_files=MAX_FILES
        )

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.root)

    def _space_files(self, space):
        return {path: kept for (owner, path), kept in self.model.items() if owner == space and kept}

    @staticmethod
    def _dirs(paths) -> set[str]:
        """The charged directories of a space holding `paths`: every proper prefix of one."""
        return {
            "/".join(parts[:depth]) for parts in (path.split("/") for path in paths) for depth in range(1, len(parts))
        }

    def _expected_write(self, space, path, data):
        """The version the model gives the write, or the error code it expects."""
        files = self._space_files(space)
        kept = files.get(path, [])
        if len(data) > MAX_FILE:
            return ErrorCode.TOO_LARGE
        dirs_before, dirs_after = len(self._dirs(files)), len(self._dirs(set(files) | {path}))
        if (not kept or dirs_after > dirs_before) and len(files) + (0 if kept else 1) + dirs_after > MAX_FILES:
            return QUOTA
        used = sum(len(blob) for versions in files.values() for _, blob in versions)
        freed = sum(len(blob) for _, blob in kept[: max(0, len(kept) - (KEEP - 1))])
        if used - freed + len(data) + dirs_after * DIR_BYTES > QUOTA_BYTES:
            return QUOTA
        return (kept[-1][0] if kept else 0) + 1

    def _apply_write(self, space, path, data, expected):
        try:
            got = self.store.write(space, path, data)
        except ProtocolError as error:
            got = error.code
        assert got == expected
        if isinstance(expected, int):
            self.model[(space, path)] = (self.model.get((space, path), []) + [(expected, data)])[-KEEP:]

    @rule(space=SPACES, path=PATHS, data=DATA)
    def write(self, space, path, data):
        self._apply_write(space, path, data, self._expected_write(space, path, data))

    @rule(space=SPACES, path=PATHS, back=st.integers(0, 4))
    def rollback(self, space, path, back):
        kept = self.model.get((space, path), [])
        version = (kept[-1][0] if kept else 1) - back
        old = dict(kept).get(version)
        if old is None:
            try:
                self.store.rollback(space, path, version)
            except ProtocolError as error:
                assert error.code is (ErrorCode.NOT_FOUND if version >= 1 else ErrorCode.BAD_REQUEST)
            else:
                raise AssertionError("rollback to a version that is not kept succeeded")
            return
        self._apply_write(space, path, old, self._expected_write(space, path, old))

    @rule(space=SPACES, path=PATHS)
    def delete(self, space, path):
        try:
            self.store.delete(space, path)
            deleted = True
        except ProtocolError as error:
            assert error.code is ErrorCode.NOT_FOUND
            deleted = False
        assert deleted == bool(self.model.pop((space, path), []))

    @rule()
    def reopen(self):
        self.store.close()
        self.store = self._open()

    @invariant()
    def store_matches_model(self):
        for space in ("s1", "s2"):
            files = self._space_files(space)
            listed = {info.path: (info.version, info.size) for info in self.store.list(space)}
            assert listed == {path: (kept[-1][0], len(kept[-1][1])) for path, kept in files.items()}
            for path, kept in files.items():
                assert [(info.version, info.size) for info in self.store.versions(space, path)] == [
                    (number, len(blob)) for number, blob in kept
                ]
                for number, blob in kept:
                    assert self.store.read(space, path, number) == (blob, number)
            usage = self.store.usage(space)
            assert (usage["files"], usage["versions"], usage["bytes"]) == (
                len(files),
                sum(map(len, files.values())),
                sum(len(blob) for kept in files.values() for _, blob in kept),
            )


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
