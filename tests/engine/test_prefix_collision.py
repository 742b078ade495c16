"""The prefix cache never serves K/V on a hash match alone: with every block hashing alike, a request whose tokens
differ from the cached ones is prefilled and answers exactly as without the cache."""

from __future__ import annotations

from kernel.engine.core import block_pool
from kernel.engine.core.interface import EngineRequest, SamplingParams
from tests.engine.helpers import drain, greedy


def _prompt(engine, text: str) -> list[int]:
    return engine.tokenize(text)  # raw text: a chat's shared system prompt would make the first blocks equal


def test_colliding_hash_is_prefilled_not_served_wrong_kv(engine, monkeypatch):
    cached = _prompt(engine, "Tell me about the moon and its phases, briefly, in one or two short sentences.")
    other = _prompt(engine, "Tell me about the sea and its tides, briefly, in one or two short sentences please.")
    assert min(len(cached), len(other)) > engine.block_size + 1 and cached[:16] != other[:16]
    expected = greedy(engine, other, 12)  # under the real hash: no collision anywhere
    monkeypatch.setattr(block_pool, "block_hash", lambda parent, tokens: 7)
    assert greedy(engine, cached, 4)  # its first block now holds hash 7
    engine.add(EngineRequest("same", cached, SamplingParams(max_tokens=1)))
    assert engine._table.lookup("same").num_computed == engine.block_size  # the true prefix still hits
    engine.abort("same")
    engine.add(EngineRequest("other", other, SamplingParams(max_tokens=12, ignore_eos=True)))
    assert engine._table.lookup("other").num_computed == 0  # the colliding block was refused
    assert drain(engine)["other"].tokens == expected
