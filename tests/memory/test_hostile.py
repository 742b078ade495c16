"""Hostile input: whatever hypothesis builds (texts, metadata, filters, space names, ids, numbers of any type), every
call ends in a value or a ProtocolError, never another exception, and the manager keeps serving afterwards."""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc.errors import ErrorCode, ProtocolError
from kernel.memory import MemoryManager
from kernel.memory.embedder import HashEmbedder

ANY_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(st.characters(exclude_categories=()), max_size=20),
    st.sampled_from(["", " ", "\x00", "uid:0/notes", "eph:x", "a" * 201, "m1", "m0", "m" + "9" * 25]),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
ANYTHING = st.one_of(JSON, st.binary(max_size=8), st.tuples(st.integers()), st.just(object()))
SPACE = st.one_of(st.sampled_from(["uid:0/notes", "eph:1"]), ANYTHING)
INT = st.one_of(st.integers(-5, 200), st.integers(), ANYTHING)

CALLS = st.one_of(
    st.tuples(
        st.just("add"),
        SPACE,
        st.one_of(st.lists(ANY_TEXT, max_size=4), ANYTHING),
        st.one_of(st.lists(st.one_of(st.dictionaries(ANY_TEXT, JSON, max_size=4), ANYTHING), max_size=4), ANYTHING),
    ),
    st.tuples(
        st.just("search"),
        SPACE,
        ANY_TEXT,
        INT,
        st.one_of(st.none(), st.dictionaries(ANY_TEXT, JSON, max_size=3), ANYTHING),
    ),
    st.tuples(st.just("get"), SPACE, st.one_of(ANY_TEXT, ANYTHING)),
    st.tuples(
        st.just("update"),
        SPACE,
        st.one_of(st.sampled_from(["m1", "m2"]), ANY_TEXT),
        st.one_of(st.none(), ANY_TEXT, ANYTHING),
        st.one_of(st.none(), st.dictionaries(ANY_TEXT, JSON, max_size=3), ANYTHING),
    ),
    st.tuples(st.just("delete"), SPACE, st.one_of(st.sampled_from(["m1", "m3"]), ANYTHING)),
    st.tuples(st.just("list"), SPACE, INT, INT),
    st.tuples(st.just("drop_space"), SPACE),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CALLS, min_size=1, max_size=12))
def test_hostile_calls_answer_or_refuse(calls):
    with tempfile.TemporaryDirectory() as directory:
        memory = MemoryManager(directory, HashEmbedder(), max_entries=20, max_bytes=4096, ram_entries=8)
        try:
            for name, *args in calls:
                try:
                    getattr(memory, name)(*args)
                except ProtocolError as error:
                    assert error.code in (
                        ErrorCode.BAD_REQUEST,
                        ErrorCode.NOT_FOUND,
                        ErrorCode.QUOTA,
                    ), error
            ids = memory.add("uid:0/after", ["still serving"], [{}])  # nothing hostile broke it
            assert memory.search("uid:0/after", "still serving", k=1)[0].id == ids[0]
            assert memory.stats()["resident_entries"] <= 8
        finally:
            memory.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(ANY_TEXT, min_size=1, max_size=3), ANY_TEXT)
def test_the_real_model_takes_any_valid_text(minilm, texts, query):
    memory = MemoryManager(None, minilm, max_entries=1000, max_bytes=1 << 20, ram_entries=1000)
    try:
        try:
            ids = memory.add("uid:0/notes", texts, None)
        except ProtocolError as error:
            assert error.code == ErrorCode.BAD_REQUEST
            return
        assert [memory.get("uid:0/notes", i).text for i in ids] == texts
        try:
            hits = memory.search("uid:0/notes", query, k=3)
        except ProtocolError as error:
            assert error.code == ErrorCode.BAD_REQUEST
            return
        assert all(-1.01 <= hit.score <= 1.01 for hit in hits)
    finally:
        memory.close()
