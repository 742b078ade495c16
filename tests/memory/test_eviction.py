"""LRU-2 residency of memory spaces: the victim order, the RAM budget, reload and scan correctness."""

from __future__ import annotations

import numpy as np

from kernel.memory.embedder import HashEmbedder
from kernel.memory.eviction import LRUK


def test_lru2_evicts_the_once_referenced_space_before_an_older_twice_referenced_one():
    lru = LRUK(k=2)
    for space in ("a", "a", "b", "c"):
        lru.reference(space)
    for space in "abc":
        lru.admit(space, 1)
    assert lru.victim() == "b"  # plain LRU would pick "a" (oldest last reference)
    lru.evicted("b")
    assert lru.victim() == "c"
    assert lru.victim(protect="c") == "a"
    lru.evicted("c")
    assert lru.victim(protect="a") is None


def test_lru2_ranks_by_the_second_most_recent_reference():
    lru = LRUK(k=2)
    for space in ("a", "b", "b", "a"):  # a: t1, t4   b: t2, t3
        lru.reference(space)
    lru.admit("a", 5)
    lru.admit("b", 5)
    assert lru.victim() == "a"  # a's 2nd most recent (t1) is older than b's (t2), though a is most recent
    assert lru.backward_distance("a") == 3 and lru.resident_total == 10


def test_history_outlives_eviction_and_goes_with_forget():
    lru = LRUK(k=2)
    for space in ("a", "a", "b"):
        lru.reference(space)
    lru.admit("a", 1)
    lru.evicted("a")
    lru.reference("b")
    lru.admit("a", 1)
    lru.admit("b", 1)
    assert lru.victim() == "a"  # a: t1, t2; b: t3, t4
    lru.forget("a")
    assert lru.backward_distance("a") == float("inf") and not lru.is_resident("a")


def _populate(make, directory, spaces, per_space=4):
    ids = {}
    memory = make(directory)
    for space in spaces:
        ids[space] = memory.add(
            space, [f"{space} fact {i}" for i in range(per_space)], [{"i": i} for i in range(per_space)]
        )
    memory.close()
    return ids


def test_manager_evicts_by_lru2_and_reloads_identically(tmp_path, make):
    _populate(make, tmp_path / "d", ["s1", "s2", "s3"])
    memory = make(tmp_path / "d", ram_entries=10)
    before = {}
    for space in ("s1", "s1", "s2"):
        before[space] = memory.search(space, f"{space} fact 2", k=4)
    assert memory.resident_spaces() == ["s1", "s2"]
    memory.search("s3", "s3 fact 0", k=4)
    assert memory.resident_spaces() == ["s1", "s3"]  # s2 (one reference) went, not s1 (older last use)
    stats = memory.stats()
    assert stats["evictions"] == 1 and stats["resident_entries"] == 8 <= stats["ram_entries"]
    again = memory.search("s2", "s2 fact 2", k=4)  # reloaded from SQLite
    assert again == before["s2"] and again[0].text == "s2 fact 2" and again[0].score > 0.999
    assert memory.stats()["loads"] == 4 and memory.stats()["resident_entries"] <= 10


def test_budget_holds_under_a_stream_of_operations(tmp_path, make):
    memory = make(tmp_path / "d", ram_entries=25)
    rng = np.random.default_rng(7)
    for step in range(120):
        space = f"s{rng.integers(0, 6)}"
        if rng.random() < 0.6:
            memory.add(space, [f"{space} {step} {j}" for j in range(int(rng.integers(1, 4)))], None)
        else:
            memory.search(space, f"{space} query", k=3)
        assert memory.stats()["resident_entries"] <= 25
    for space in (f"s{i}" for i in range(6)):
        for record in memory.list(space, 0, 1000):
            assert memory.search(space, record.text, k=1)[0].id == record.id


def test_a_space_larger_than_ram_is_scanned_exactly(tmp_path, make):
    memory = make(tmp_path / "d", ram_entries=10, scan_batch=4)
    texts = [f"note {i}" for i in range(15)]
    ids = memory.add("big", texts, [{"even": i % 2 == 0} for i in range(15)])
    vectors = HashEmbedder().embed(texts)
    query = HashEmbedder().embed(["note 3"])[0]
    expected = [ids[i] for i in np.argsort(-(vectors @ query), kind="stable")[:5]]
    hits = memory.search("big", "note 3", k=5)
    assert [h.id for h in hits] == expected and hits[0].id == ids[3]
    assert memory.stats()["scans"] == 1 and memory.resident_spaces() == []
    even = memory.search("big", "note 3", k=20, filter={"even": True})
    assert sorted(h.id for h in even) == sorted(ids[0::2])


def test_a_resident_space_that_outgrows_ram_leaves_it_and_stays_correct(tmp_path, make):
    memory = make(tmp_path / "d", ram_entries=10)
    memory.add("grow", [f"g{i}" for i in range(6)], None)
    memory.search("grow", "g1", k=1)
    assert memory.resident_spaces() == ["grow"]
    ids = memory.add("grow", [f"g{i}" for i in range(6, 12)], None)
    assert memory.resident_spaces() == [] and memory.stats()["resident_entries"] == 0
    assert memory.search("grow", "g9", k=1)[0].id == ids[3]
