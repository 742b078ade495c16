"""The storage API on a real directory: round trips, versions kept and pruned, rollback, list, delete, spaces,
persistence across managers, and what a crash leaves behind (temporaries, unpruned versions, half-dropped spaces)."""

import os

import pytest

from ipc.errors import ErrorCode, ProtocolError
from tests.storage.conftest import space_dir, tree

S = "uid:1000/notes"


def code_of(call, *args, **kwargs) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        call(*args, **kwargs)
    return info.value.code


def test_round_trip_and_versions_count_up(store):
    payload = bytes(range(256)) * 3
    assert store.write(S, "notes/today.txt", payload) == 1
    assert store.write(S, "notes/today.txt", b"second") == 2
    assert store.read(S, "notes/today.txt") == (b"second", 2)
    assert store.read(S, "notes/today.txt", 1) == (payload, 1)
    assert store.write(S, "empty", b"") == 1
    assert store.read(S, "empty") == (b"", 1)
    assert store.write(S, "views", bytearray(b"ab")) == 1 and store.write(S, "views", memoryview(b"cd")) == 2
    assert store.read(S, "views") == (b"cd", 2)


def test_only_the_last_n_versions_are_kept(store, root):
    for number in range(1, 6):
        assert store.write(S, "f", b"v%d" % number) == number
    assert [info.version for info in store.versions(S, "f")] == [3, 4, 5]
    assert [info.size for info in store.versions(S, "f")] == [2, 2, 2]
    assert store.read(S, "f", 3) == (b"v3", 3)
    with pytest.raises(ProtocolError) as info:
        store.read(S, "f", 2)
    assert info.value.code is ErrorCode.NOT_FOUND and "kept: 3..5" in info.value.message
    assert sorted(os.listdir(os.path.join(space_dir(root, S), "f"))) == [
        ".aios-v000000000003",
        ".aios-v000000000004",
        ".aios-v000000000005",
    ]


def test_rollback_makes_a_new_version_equal_to_the_old_one(store):
    store.write(S, "f", b"good")
    store.write(S, "f", b"bad")
    assert store.rollback(S, "f", 1) == 3
    assert store.read(S, "f") == (b"good", 3)
    assert store.read(S, "f", 2) == (b"bad", 2)
    store.write(S, "f", b"x")  # versions 2..4 kept now
    assert code_of(store.rollback, S, "f", 1) is ErrorCode.NOT_FOUND
    assert code_of(store.rollback, S, "missing", 1) is ErrorCode.NOT_FOUND
    assert [info.version for info in store.versions(S, "f")] == [2, 3, 4]


def test_list_by_string_prefix(store):
    for path, data in [("notes/a", b"1"), ("notes/b/c", b"22"), ("notes2", b"333"), ("other", b"4444")]:
        store.write(S, path, data)
    store.write(S, "notes/a", b"again")
    everything = store.list(S)
    assert [info.path for info in everything] == ["notes/a", "notes/b/c", "notes2", "other"]
    first = everything[0]
    assert (first.size, first.version) == (5, 2) and first.modified > 0
    assert [info.path for info in store.list(S, "notes/")] == ["notes/a", "notes/b/c"]
    assert [info.path for info in store.list(S, "notes")] == ["notes/a", "notes/b/c", "notes2"]
    assert [info.path for info in store.list(S, "no")] == ["notes/a", "notes/b/c", "notes2"]
    assert [info.path for info in store.list(S, "notes/b")] == ["notes/b/c"]
    assert store.list(S, "nothing/") == [] and store.list(S, "zz") == []
    assert store.list("uid:1000/empty") == []


def test_a_path_can_be_a_file_and_a_prefix_of_others(store):
    store.write(S, "a", b"parent")
    store.write(S, "a/b", b"child")
    assert store.read(S, "a")[0] == b"parent" and store.read(S, "a/b")[0] == b"child"
    store.delete(S, "a")
    assert code_of(store.read, S, "a") is ErrorCode.NOT_FOUND
    assert store.read(S, "a/b")[0] == b"child"
    assert [info.path for info in store.list(S)] == ["a/b"]


def test_delete_removes_every_version_and_its_directories(store, root):
    store.write(S, "keep/me", b"k")
    store.write(S, "deep/er/file", b"12345")
    store.write(S, "deep/er/file", b"123")
    store.delete(S, "deep/er/file")
    for call in (store.read, store.versions, store.delete):
        assert code_of(call, S, "deep/er/file") is ErrorCode.NOT_FOUND
    assert tree(space_dir(root, S)) == [".aios-space", "keep", "keep/me", "keep/me/.aios-v000000000001"]
    assert store.usage(S)["bytes"] == 1 and store.usage(S)["files"] == 1
    assert store.write(S, "deep/er/file", b"new") == 1  # numbering starts again after a delete
    assert code_of(store.delete, S, "keep") is ErrorCode.NOT_FOUND  # a directory of other files is no file


def test_spaces_are_separate_and_ids_never_reach_the_file_system(store, root):
    store.write("uid:1/a", "f", b"one")
    store.write("../../etc", "f", b"two")
    store.write("uid:1/a/../b\x00", "f", b"three")
    assert store.read("uid:1/a", "f")[0] == b"one" and store.read("../../etc", "f")[0] == b"two"
    assert store.list("uid:1/b") == []
    spaces = os.listdir(os.path.join(root, "spaces"))
    assert len(spaces) == 3 and all(name.startswith("s-") and len(name) == 66 for name in spaces)
    assert sorted(os.listdir(root)) == [".aios-lock", "spaces"]


def test_files_and_numbering_survive_a_new_manager(make_store):
    first = make_store()
    first.write(S, "f", b"a")
    first.write(S, "f", b"b")
    first.close()
    second = make_store()
    assert second.read(S, "f") == (b"b", 2) and second.write(S, "f", b"c") == 3
    assert second.usage(S) == {
        "bytes": 3,
        "files": 1,
        "versions": 3,
        "quota_bytes": 1 << 20,
        "max_files": 16,
        "max_file_bytes": 64 << 10,
        "keep_versions": 3,
    }


def test_one_manager_per_root_and_a_closed_manager_refuses(make_store):
    first = make_store()
    with pytest.raises(RuntimeError, match="in use"):
        make_store()
    first.close()
    first.close()  # idempotent
    assert code_of(first.write, S, "f", b"x") is ErrorCode.SHUTDOWN
    assert code_of(first.list, S) is ErrorCode.SHUTDOWN
    second = make_store()  # the lock went with the first
    assert second.write(S, "f", b"x") == 1


def test_drop_space_removes_it_and_only_it(store, root):
    store.write(S, "a/b", b"x" * 100)
    store.write("other", "a/b", b"y")
    assert store.drop_space(S) is True
    assert store.drop_space(S) is False
    assert not os.path.exists(space_dir(root, S))
    assert store.list(S) == [] and store.usage(S)["bytes"] == 0
    assert store.read("other", "a/b")[0] == b"y"


def test_a_torn_temporary_is_never_visible_and_is_removed(make_store, root):
    store = make_store()
    store.write(S, "f", b"complete")
    store.close()
    node = os.path.join(space_dir(root, S), "f")
    with open(os.path.join(node, ".aios-tmp-0123456789abcdef"), "wb") as torn:
        torn.write(b"half of a new vers")  # what SIGKILL mid-write leaves
    store = make_store()
    assert store.read(S, "f") == (b"complete", 1)
    assert [info.version for info in store.versions(S, "f")] == [1]
    assert store.usage(S)["bytes"] == len(b"complete")
    assert os.listdir(node) == [".aios-v000000000001"]
    assert store.write(S, "f", b"next") == 2


def test_versions_a_crash_kept_beyond_n_are_pruned_on_first_touch(make_store, root):
    store = make_store(keep_versions=5)
    for number in range(5):
        store.write(S, "f", b"%d" % number)
    store.close()
    store = make_store(keep_versions=2)
    assert store.usage(S) == {**store.usage(S), "bytes": 2, "versions": 2, "files": 1}
    assert [info.version for info in store.versions(S, "f")] == [4, 5]
    assert len(os.listdir(os.path.join(space_dir(root, S), "f"))) == 2


def test_a_half_dropped_space_is_finished_by_the_next_manager(make_store, root):
    store = make_store()
    store.write(S, "a/b", b"x")
    store.close()
    spaces = os.path.join(root, "spaces")
    os.rename(space_dir(root, S), os.path.join(spaces, ".aios-drop-feedfacefeedface"))  # crash after the rename
    store = make_store()
    assert os.listdir(spaces) == []
    assert store.list(S) == []


def test_usage_matches_the_bytes_on_disk(store, root):
    store.write(S, "a", b"x" * 10)
    store.write(S, "a", b"x" * 20)
    store.write(S, "b/c", b"x" * 7)
    on_disk = sum(
        os.path.getsize(os.path.join(space_dir(root, S), name))
        for name in tree(space_dir(root, S))
        if ".aios-v" in name
    )
    usage = store.usage(S)
    assert usage["bytes"] == on_disk == 37 and usage["files"] == 2 and usage["versions"] == 3
