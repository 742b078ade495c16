"""The remote engine in process against real llama.cpp servers: it streams what the server generates, resumes a
call from its text after a preemption, keeps an agent's calls on the replica holding its prefix, and fails calls over
when a replica is killed mid-stream (or fails them clearly when none is left)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from kernel.engine.core.interface import EngineError, EngineRequest, FinishReason, NoCapacity, SamplingParams
from kernel.engine.remote import RemoteEngine
from kernel.engine.remote.router import BLOCK
from tests.remote.conftest import drive, finished, tokens

PROMPT = "The history of the printing press begins"


@pytest.fixture
def engine(pair, tokenizer):
    engine = RemoteEngine([pair[0].url, pair[1].url], health_interval_s=0.2, tokenizer=tokenizer)
    yield engine
    engine.close()


def _direct(url: str, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """The same completion asked of the server directly (no kernel), its token ids from logprobs."""
    body = json.dumps(
        {
            "prompt": prompt_ids,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "logprobs": 1,
            "top_k": -1,
            "min_p": 0.0,
        }
    ).encode()
    with urllib.request.urlopen(
        urllib.request.Request(f"{url}/completions", body, {"Content-Type": "application/json"}), timeout=60
    ) as resp:
        return [c["id"] for c in json.load(resp)["choices"][0]["logprobs"]["content"]]


def test_streams_what_the_server_generates_and_reports_replica_slots_as_capacity(engine, pair):
    capacity = engine.capacity()
    assert (capacity.max_batch, capacity.free_blocks, capacity.running) == (4, 4, 0)
    assert not engine.layout().snapshots and engine.kv_nbytes("x") == 0
    ids = engine.tokenize(PROMPT)
    engine.add(EngineRequest("a", ids, SamplingParams(max_tokens=16, ignore_eos=True)))
    assert engine.capacity().free_blocks == 3
    events = drive(engine, finished("a"))["a"]
    assert events[-1].finish_reason is FinishReason.LENGTH
    assert tokens(events) == _direct(pair[0].url, ids, 16)
    assert "".join(e.text for e in events) == engine.detokenize(tokens(events))
    assert engine.capacity().free_blocks == 4


def test_a_call_resumed_from_its_output_continues_it_exactly(engine):
    """The text-based context switch: abort mid-stream, add again with the tokens so far; a greedy call's output is
    that of an uninterrupted run."""
    ids, params = engine.tokenize(PROMPT), SamplingParams(max_tokens=32, ignore_eos=True)
    engine.add(EngineRequest("ref", ids, params))
    reference = tokens(drive(engine, finished("ref"))["ref"])
    engine.add(EngineRequest("p", ids, params))
    first = tokens(drive(engine, lambda ev: len(tokens(ev.get("p", []))) >= 10)["p"])
    engine.abort("p")
    engine.add(EngineRequest("p", ids, params, output_ids=first))
    rest = drive(engine, finished("p"))["p"]
    assert len(first) + len(tokens(rest)) == 32
    assert first + tokens(rest) == reference


def test_an_agents_next_call_goes_to_the_replica_holding_its_history(engine):
    history = engine.tokenize(
        PROMPT + " in the fifteenth century, when Johannes Gutenberg of Mainz built a press "
        "with movable metal type, oil-based ink and a wooden frame adapted from the "
        "screw presses that wine makers of the Rhine valley had used for centuries."
    )
    assert len(history) >= 2 * BLOCK
    engine.add(EngineRequest("first", history, SamplingParams(max_tokens=8)))
    home = engine.replica_of("first")
    follow_up = history + tokens(drive(engine, finished("first"))["first"]) + engine.tokenize(" What came next?")
    # both idle: an unrelated call goes to the first listed, the home replica, which is now the busier one
    engine.add(EngineRequest("other", engine.tokenize("Unrelated."), SamplingParams(max_tokens=64, ignore_eos=True)))
    assert engine.replica_of("other") == home
    # least-loaded alone would pick the idle replica; the history's prefix keeps the agent's call home
    engine.add(EngineRequest("next", follow_up, SamplingParams(max_tokens=4)))
    assert engine.replica_of("next") == home
    # a call sharing no prefix goes to the idle one
    engine.add(EngineRequest("fresh", engine.tokenize("Another topic."), SamplingParams(max_tokens=4)))
    assert engine.replica_of("fresh") not in (home, None)
    engine.abort("other")
    drive(engine, finished("next", "fresh"))


def test_calls_beyond_the_slots_are_refused_for_the_kernel_to_queue(engine):
    params = SamplingParams(max_tokens=64, ignore_eos=True)
    for i in range(4):
        engine.add(EngineRequest(f"r{i}", engine.tokenize(f"Story {i}:"), params))
    assert engine.capacity().free_blocks == 0
    with pytest.raises(NoCapacity):
        engine.add(EngineRequest("r4", engine.tokenize("Story 4:"), params))
    with pytest.raises(EngineError, match="constrained decoding"):
        engine.add(EngineRequest("g", [1, 2], SamplingParams(grammar='{"type": "object"}')))
    for i in range(4):
        engine.abort(f"r{i}")
    assert engine.capacity().free_blocks == 4 and not engine.has_work()


def test_a_killed_replicas_calls_finish_on_the_other(victim, pair, tokenizer):
    engine = RemoteEngine([victim.url, pair[1].url], health_interval_s=0.2, tokenizer=tokenizer)
    try:
        params = SamplingParams(max_tokens=48, ignore_eos=True)
        engine.add(EngineRequest("v", engine.tokenize(PROMPT), params))
        assert engine.replica_of("v") == victim.url
        before = drive(engine, lambda ev: len(tokens(ev.get("v", []))) >= 4)
        victim.kill()
        after = drive(engine, finished("v"))
        out = tokens(before["v"]) + tokens(after["v"])
        assert len(out) == 48 and after["v"][-1].finish_reason is FinishReason.LENGTH
        assert engine.failovers == 1
        assert [r.healthy for r in engine.replicas()] == [False, True]
        assert engine.capacity().max_batch == 2
    finally:
        engine.close()


def test_with_no_replica_left_calls_fail_with_a_clear_error(victim, tokenizer):
    engine = RemoteEngine([victim.url], health_interval_s=0.2, tokenizer=tokenizer)
    try:
        engine.add(EngineRequest("v", engine.tokenize(PROMPT), SamplingParams(max_tokens=200, ignore_eos=True)))
        drive(engine, lambda ev: len(tokens(ev.get("v", []))) >= 2)
        victim.kill()
        last = drive(engine, finished("v"))["v"][-1]
        assert last.finish_reason is FinishReason.ERROR
        assert victim.url in last.error and "no healthy replica" in last.error
        with pytest.raises(EngineError, match="no healthy replica"):
            engine.add(EngineRequest("w", [1, 2, 3], SamplingParams(max_tokens=4)))
    finally:
        engine.close()
