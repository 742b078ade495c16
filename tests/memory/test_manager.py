"""The manager's contract with the deterministic HashEmbedder: ids, get/update/delete/list, filters, quotas,
ephemeral spaces, refusals as ProtocolError with the right code."""

from __future__ import annotations

import os

import pytest

from ipc.errors import ErrorCode, ProtocolError
from kernel.memory.manager import QUOTA

S = "uid:0/notes"


def code_of(call, *args, **kwargs):
    with pytest.raises(ProtocolError) as raised:
        call(*args, **kwargs)
    return raised.value.code


def test_add_get_update_delete_list(make):
    memory = make()
    ids = memory.add(S, ["alpha", "beta", "gamma"], [{"i": 0}, {"i": 1}, {"i": 2, "tags": ["x", "y"]}])
    assert len(set(ids)) == 3 and all(i.startswith("m") and i[1:].isdigit() for i in ids)
    assert memory.get(S, ids[2]).metadata == {"i": 2, "tags": ["x", "y"]}
    memory.update(S, ids[0], text="alpha two")
    assert memory.get(S, ids[0]).text == "alpha two" and memory.get(S, ids[0]).metadata == {"i": 0}
    assert memory.search(S, "alpha two", k=1)[0].id == ids[0]  # the vector follows the text
    assert memory.search(S, "alpha", k=3)[0].score < 0.99  # the old text's vector is gone
    memory.update(S, ids[1], metadata={"i": 10})
    assert memory.get(S, ids[1]).text == "beta" and memory.get(S, ids[1]).metadata == {"i": 10}
    memory.delete(S, ids[1])
    assert code_of(memory.get, S, ids[1]) == ErrorCode.NOT_FOUND
    assert code_of(memory.delete, S, ids[1]) == ErrorCode.NOT_FOUND
    assert ids[1] not in [h.id for h in memory.search(S, "beta", k=10)]
    assert [r.id for r in memory.list(S, 0, 10)] == [ids[0], ids[2]]
    assert [r.id for r in memory.list(S, 1, 10)] == [ids[2]]
    assert memory.list(S, 5, 10) == [] and memory.list("uid:0/never", 0, 10) == []


def test_ids_are_scoped_and_never_reused(make):
    memory = make()
    first = memory.add(S, ["one"], [{}])[0]
    memory.delete(S, first)
    second = memory.add(S, ["one"], [{}])[0]
    assert second != first
    other = memory.add("uid:0/other", ["one"], [{}])[0]
    assert code_of(memory.get, S, other) == ErrorCode.NOT_FOUND
    for bogus in ("", "m", "m0", "m01", "x1", "m-1", "m1.0", "m٣", "m" + "9" * 30, 7, None):
        assert code_of(memory.get, S, bogus) == ErrorCode.NOT_FOUND


def test_filter_is_exact_on_value_and_type(make):
    memory = make()
    ids = memory.add(
        S, ["a", "b", "c", "d", "e"], [{"k": 1}, {"k": True}, {"k": 1.0}, {"k": "1"}, {"k": None, "z": "q"}]
    )
    found = lambda where: {h.id for h in memory.search(S, "a", k=10, filter=where)}
    assert found({"k": 1}) == {ids[0]}
    assert found({"k": True}) == {ids[1]}
    assert found({"k": 1.0}) == {ids[2]}
    assert found({"k": "1"}) == {ids[3]}
    assert found({"k": None}) == {ids[4]}
    assert found({"k": None, "z": "q"}) == {ids[4]}
    assert found({"k": None, "z": "r"}) == set()
    assert found({"missing": 1}) == set()
    assert found({}) == set(ids)
    assert [r.id for r in memory.list(S, 0, 10, filter={"k": True})] == [ids[1]]
    assert [r.id for r in memory.list(S, 1, 10, filter={"z": "q"})] == []
    assert code_of(memory.search, S, "a", 3, {"k": [1]}) == ErrorCode.BAD_REQUEST


def test_entry_quota(make):
    memory = make(max_entries=5)
    memory.add(S, ["a", "b", "c"], [{}] * 3)
    assert code_of(memory.add, S, ["d", "e", "f"], [{}] * 3) == QUOTA
    assert len(memory.list(S, 0, 100)) == 3  # the refused batch left nothing behind
    memory.add(S, ["d", "e"], [{}] * 2)
    with pytest.raises(ProtocolError) as raised:
        memory.add(S, ["f"], [{}])
    assert raised.value.code == QUOTA and "5 of 5 entries" in raised.value.message
    memory.delete(S, memory.list(S, 0, 1)[0].id)
    memory.add(S, ["f"], [{}])  # a delete frees its slot
    memory.add("uid:0/other", ["a"], [{}])  # quotas are per space


def test_byte_quota_counts_text_and_metadata(make):
    memory = make(max_bytes=100)
    memory.add(S, ["x" * 40], [{"k": "v"}])  # 40 + len('{"k":"v"}') = 49
    assert memory.stats()["bytes"] == 49
    assert code_of(memory.add, S, ["é" * 26], [{}]) == QUOTA  # 52 UTF-8 bytes + 2 → 103
    only = memory.list(S, 0, 1)[0].id
    assert code_of(memory.update, S, only, "y" * 95) == QUOTA
    memory.update(S, only, "y" * 80, {})  # 82: fits once the old 49 is released
    assert memory.stats()["bytes"] == 82


def test_ephemeral_spaces_never_touch_disk(tmp_path, make):
    memory = make(tmp_path / "d")
    memory.add("eph:a7", ["throwaway"], [{}])
    memory.add(S, ["kept"], [{}])
    assert memory.search("eph:a7", "throwaway", k=1)[0].text == "throwaway"
    assert memory.stats()["ephemeral_spaces"] == 1
    memory.close()
    reopened = make(tmp_path / "d")
    assert reopened.list("eph:a7", 0, 10) == [] and len(reopened.list(S, 0, 10)) == 1
    raw = b"".join(open(os.path.join(tmp_path / "d", f), "rb").read() for f in os.listdir(tmp_path / "d"))
    assert b"throwaway" not in raw and b"kept" in raw


def test_all_ephemeral_without_directory(make):
    memory = make(directory=None)
    ids = memory.add(S, ["a"], [{}])
    assert memory.get(S, ids[0]).text == "a"


def test_drop_space(make):
    memory = make()
    memory.add(S, ["a", "b"], [{}, {}])
    memory.search(S, "a", k=1)
    memory.drop_space(S)
    memory.drop_space("uid:0/never-existed")
    assert memory.list(S, 0, 10) == [] and memory.search(S, "a", k=1) == []
    assert memory.stats()["resident_entries"] == 0
    memory.add(S, ["c"], [{}])  # quota counts start again
    assert memory.stats()["entries"] == 1


def test_bounds(make):
    memory = make()
    for args in (
        (S, [], []),
        (S, ["a"], []),
        (S, ["a"] * 257, [{}] * 257),
        (S, ["x" * 32_769], [{}]),
        (S, [""], [{}]),
        (S, ["a"], [{"big": "x" * 5000}]),
        (S, ["a"], [{"f": float("nan")}]),
        (S, ["a"], [{1: "int key"}]),
        (S, ["\ud800"], [{}]),
        ("", ["a"], [{}]),
        ("x" * 201, ["a"], [{}]),
        ("bad\nspace", ["a"], [{}]),
        (None, ["a"], [{}]),
        (S, "a", [{}]),
    ):
        assert code_of(memory.add, *args) == ErrorCode.BAD_REQUEST, args
    for k in (0, 101, True, 1.5, "3"):
        assert code_of(memory.search, S, "q", k) == ErrorCode.BAD_REQUEST
    assert code_of(memory.search, S, "q" * 4097, 3) == ErrorCode.BAD_REQUEST
    assert code_of(memory.list, S, -1, 10) == ErrorCode.BAD_REQUEST
    assert code_of(memory.list, S, 0, 0) == ErrorCode.BAD_REQUEST
    assert memory.stats()["entries"] == 0


def test_closed_manager_refuses(make):
    memory = make()
    memory.close()
    memory.close()
    assert code_of(memory.add, S, ["a"], [{}]) == ErrorCode.SHUTDOWN


def test_a_failing_embedder_is_an_internal_error_and_stores_nothing(make):
    class Broken:
        name, dim = "broken", 8

        def embed(self, texts):
            raise RuntimeError("boom")

    memory = make(directory=None, embedder=Broken())
    assert code_of(memory.add, S, ["a"], [{}]) == ErrorCode.INTERNAL
    assert memory.list(S, 0, 10) == []


def test_a_database_from_another_embedder_is_refused(tmp_path, make):
    from kernel.memory.embedder import HashEmbedder
    from kernel.memory.store import StoreError

    make(tmp_path / "d").close()
    with pytest.raises(StoreError):
        make(tmp_path / "d", embedder=HashEmbedder(dim=16))
