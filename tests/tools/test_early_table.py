"""The early-start holding table as a pure unit: random orders of hold / claim / expire / agent exit against a plain
model of what should be held. Every entry comes back exactly once (to its own agent's matching claim, to expiry, or
to its agent's exit), the bounds hold, and an agent that ends leaves no entry and no bookkeeping behind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.services.early_table import EarlyTable, canonical_key

TTL, PER_AGENT, TOTAL = 5.0, 3, 7
AGENTS, TOOLS, KEYS = ["a1", "a2", "a3"], ["lookup", "search"], ['{"k":1}', '{"k":2}']

ops = st.lists(
    st.one_of(
        st.tuples(st.just("hold"), st.sampled_from(AGENTS), st.sampled_from(TOOLS), st.sampled_from(KEYS)),
        st.tuples(st.just("claim"), st.sampled_from(AGENTS), st.sampled_from(TOOLS), st.sampled_from(KEYS)),
        st.tuples(st.just("expire")),
        st.tuples(st.just("drop"), st.sampled_from(AGENTS)),
        st.tuples(st.just("tick"), st.floats(0.0, 4.0)),
    ),
    max_size=80,
)


@settings(max_examples=500, deadline=None)
@given(ops)
def test_every_entry_returns_once_and_nothing_leaks(sequence):
    table = EarlyTable(TTL, PER_AGENT, TOTAL)
    model: dict[tuple, tuple[object, float]] = {}  # (agent, tool, key) -> (handle, since)
    returned: list[object] = []
    now, handles = 0.0, 0

    for op in sequence:
        kind = op[0]
        if kind == "tick":
            now += op[1]
        elif kind == "hold":
            _, agent, tool, key = op
            handles += 1
            handle = object()
            mine = sum(1 for a, _, _ in model if a == agent)
            entry = table.hold(agent, tool, key, handle, now)
            if (agent, tool, key) in model or mine >= PER_AGENT or len(model) >= TOTAL:
                assert entry is None
            else:
                assert entry is not None and entry.handle is handle
                model[(agent, tool, key)] = (handle, now)
        elif kind == "claim":
            _, agent, tool, key = op
            entry = table.claim(agent, tool, key)
            expected = model.pop((agent, tool, key), None)
            assert (entry is None) == (expected is None)
            if entry is not None:
                assert entry.handle is expected[0] and entry.agent_id == agent
                returned.append(entry.handle)
        elif kind == "expire":
            gone = table.expire(now)
            old = {k for k, (_, since) in model.items() if now - since >= TTL}
            assert {(e.agent_id, e.tool, e.key) for e in gone} == old
            for k in old:
                returned.append(model.pop(k)[0])
        else:
            _, agent = op
            gone = table.drop_agent(agent)
            assert all(e.agent_id == agent for e in gone)
            theirs = {k for k in model if k[0] == agent}
            assert {(e.agent_id, e.tool, e.key) for e in gone} == theirs
            for k in theirs:
                returned.append(model.pop(k)[0])
            assert table.held(agent) == 0 and agent not in table._per_agent
        assert len(table) == len(model) <= TOTAL
        for agent in AGENTS:
            assert table.held(agent) == sum(1 for a, _, _ in model if a == agent) <= PER_AGENT
        assert set(table._per_agent) == {a for a, _, _ in model}

    assert len(returned) == len({id(h) for h in returned})  # no entry came back twice
    for agent in AGENTS:
        table.drop_agent(agent)
    assert len(table) == 0 and not table._per_agent


def test_canonical_key_ignores_key_order_and_spacing_but_not_values():
    assert canonical_key({"b": [1, {"y": 2, "x": 1}], "a": "é"}) == canonical_key(
        {"a": "é", "b": [1, {"x": 1, "y": 2}]}
    )
    assert canonical_key({"a": 1}) != canonical_key({"a": 2})
    assert canonical_key({"a": "1"}) != canonical_key({"a": 1})


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        EarlyTable(ttl_s=0)
    with pytest.raises(ValueError):
        EarlyTable(per_agent=0)
