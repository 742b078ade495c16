"""Per-space quotas: bytes across every kept version, file count; refused before anything is written."""

import pytest

from ipc.errors import ErrorCode, ProtocolError
from tests.storage.conftest import tree

S = "uid:1000/notes"
QUOTA = ErrorCode.QUOTA


def refusal(call, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    return info.value


def test_bytes_over_quota_are_refused_before_anything_is_written(make_store, root):
    store = make_store(quota_bytes=100, max_file_bytes=100)
    store.write(S, "a", b"x" * 60)
    before = tree(root)
    error = refusal(store.write, S, "new/deep/file", b"y" * 41)
    assert error.code is QUOTA and "100" in error.message and "101" in error.message
    assert tree(root) == before  # not even the directories of the new path
    assert refusal(store.write, S, "a", b"y" * 41).code is QUOTA  # old versions are kept, so they count
    assert store.read(S, "a") == (b"x" * 60, 1)
    assert store.write(S, "b", b"y" * 40) == 1  # exactly at the quota is allowed
    assert store.usage(S)["bytes"] == 100


def test_versions_pushed_out_by_a_write_free_their_room(make_store):
    store = make_store(keep_versions=1, quota_bytes=100, max_file_bytes=100)
    for number in range(1, 5):
        assert store.write(S, "f", b"%d" % number * 90) == number
    assert store.usage(S)["bytes"] == 90 and store.usage(S)["versions"] == 1


def test_file_count_quota_counts_paths_not_versions(make_store):
    store = make_store(max_files=2)
    store.write(S, "a", b"1")
    store.write(S, "b", b"2")
    error = refusal(store.write, S, "c", b"3")
    assert error.code is QUOTA and "limit is 2" in error.message
    assert store.write(S, "a", b"again") == 2  # a new version of an existing file is fine
    store.delete(S, "b")
    assert store.write(S, "c", b"3") == 1
    assert store.usage(S)["files"] == 2


def test_delete_and_drop_give_the_room_back(make_store):
    store = make_store(quota_bytes=100, max_file_bytes=100)
    store.write(S, "a", b"x" * 100)
    assert refusal(store.write, S, "b", b"y").code is QUOTA
    store.delete(S, "a")
    store.write(S, "b", b"y" * 100)
    store.drop_space(S)
    assert store.write(S, "c", b"z" * 100) == 1


def test_each_space_has_its_own_quota(make_store):
    store = make_store(quota_bytes=50, max_file_bytes=50)
    store.write("uid:1", "f", b"x" * 50)
    store.write("uid:2", "f", b"x" * 50)
    assert refusal(store.write, "uid:1", "g", b"x").code is QUOTA
    assert store.usage("uid:2")["bytes"] == 50


def test_quota_is_recomputed_from_disk_by_a_new_manager(make_store):
    store = make_store(quota_bytes=100, max_file_bytes=100)
    store.write(S, "a", b"x" * 70)
    store.close()
    store = make_store(quota_bytes=100, max_file_bytes=100)
    assert refusal(store.write, S, "b", b"x" * 31).code is QUOTA
    assert store.write(S, "b", b"x" * 30) == 1


def test_rollback_is_a_write_and_obeys_the_quota(make_store):
    store = make_store(quota_bytes=100, max_file_bytes=100)
    store.write(S, "f", b"x" * 50)
    store.write(S, "f", b"y" * 10)
    assert refusal(store.rollback, S, "f", 1).code is QUOTA
    assert [info.version for info in store.versions(S, "f")] == [1, 2]
