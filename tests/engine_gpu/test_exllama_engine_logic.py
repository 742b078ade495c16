"""The ExLlamaV2 engine's own logic (pages, batching, chunked prefill, KV save/load, prefix sharing, sampling state),
run on the CPU against a toy paged model that keeps ExLlamaV2's paged-forward contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kernel.engine.core.interface import EngineError, EngineRequest, KVMeta, SamplingParams
from kernel.engine.gpu.engine import ExLlamaV2Engine
from tests.engine_gpu.toy_paged_runtime import ByteTokenizer, ToyPagedRuntime

PAGE = ToyPagedRuntime.page_size
GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)


def make_engine(n_pages: int = 8, max_batch: int = 8, prefill_chunk: int = 96) -> ExLlamaV2Engine:
    return ExLlamaV2Engine(
        ToyPagedRuntime(n_pages=n_pages), ByteTokenizer(), max_batch=max_batch, prefill_chunk=prefill_chunk
    )


def prompt(n: int, salt: int = 0) -> list[int]:
    return [(7 * i + 13 * salt) % 128 for i in range(n)]


def run(engine: ExLlamaV2Engine, reqs: list[EngineRequest], max_steps: int = 500) -> dict[str, list[int]]:
    for r in reqs:
        engine.add(r)
    out: dict[str, list[int]] = {r.req_id: [] for r in reqs}
    for _ in range(max_steps):
        if not engine.has_work():
            return out
        for ev in engine.step():
            if ev.token_id >= 0:
                out[ev.req_id].append(ev.token_id)
    raise AssertionError("engine did not finish")


def drain(engine: ExLlamaV2Engine, req_id: str) -> list[int]:
    """Step until the engine is idle; returns req_id's tokens."""
    out = []
    while engine.has_work():
        out += [e.token_id for e in engine.step() if e.req_id == req_id]
    return out


def steps_until(engine: ExLlamaV2Engine, req_id: str, n_tokens: int) -> list[int]:
    """Step until req_id has produced n_tokens; returns them."""
    out = []
    while len(out) < n_tokens:
        out += [e.token_id for e in engine.step() if e.req_id == req_id]
    return out


def test_batched_equals_solo_across_pages_and_chunks():
    lengths = [5, 300, 40, 530]  # one page, several pages, chunked prefills of several steps
    reqs = [EngineRequest(f"r{i}", prompt(n, i), GREEDY) for i, n in enumerate(lengths)]
    together = run(make_engine(), reqs)
    for r in reqs:
        solo = run(make_engine(), [EngineRequest(r.req_id, r.prompt_ids, GREEDY)])
        assert solo[r.req_id] == together[r.req_id]
        assert len(solo[r.req_id]) == GREEDY.max_tokens


def test_greedy_is_deterministic():
    reqs = lambda: [EngineRequest("a", prompt(70), GREEDY)]
    assert run(make_engine(), reqs()) == run(make_engine(), reqs())


@pytest.mark.parametrize("kv_at_snapshot", [100, 200, 256, 270])  # mid-prefill, chunk edge, page edge, decoding
def test_save_abort_load_continues_identically(kv_at_snapshot):
    params = SamplingParams(max_tokens=30, ignore_eos=True)
    full = run(make_engine(prefill_chunk=100), [EngineRequest("a", prompt(250), params)])["a"]

    engine = make_engine(prefill_chunk=100)
    engine.add(EngineRequest("a", prompt(250), params))
    before = []
    while engine.kv_nbytes("a") < kv_at_snapshot * engine.layout().bytes_per_token():
        before += [e.token_id for e in engine.step()]
    buf = bytearray(engine.kv_nbytes("a"))
    meta = engine.save_kv("a", memoryview(buf))
    engine.abort("a")
    assert engine.capacity().free_slots == engine.capacity().total_slots
    assert meta.n_kv_tokens == kv_at_snapshot and list(meta.token_ids) == prompt(250) + before

    resumed = EngineRequest("a", prompt(250), params, output_ids=before)
    other = make_engine(prefill_chunk=100)  # a fresh cache: nothing left to reuse by accident
    other.load_kv(resumed, meta, memoryview(buf))
    assert before + drain(other, "a") == full


def test_load_of_fewer_tokens_than_the_snapshot_holds():
    """A snapshot whose K/V covers every one of its tokens: the last is recomputed, so fewer tokens are loaded than the
    snapshot holds, and they must be read at the snapshot's own token stride."""
    engine = make_engine()
    engine.add(EngineRequest("a", prompt(40), GREEDY))
    steps_until(engine, "a", 3)
    buf = bytearray(engine.kv_nbytes("a"))
    meta = engine.save_kv("a", memoryview(buf))
    engine.abort("a")
    full_kv = dataclasses.replace(meta, token_ids=meta.token_ids[: meta.n_kv_tokens])
    tokens = list(full_kv.token_ids)
    engine.load_kv(EngineRequest("a", tokens, GREEDY), full_kv, memoryview(buf))
    reloaded = bytearray(engine.kv_nbytes("a"))
    engine.save_kv("a", memoryview(reloaded))
    # Snapshot bytes are [layer, K/V, token, row]: the reloaded tokens' rows must be the snapshot's own.
    blocks = 2 * meta.layout.n_layers
    saved = np.frombuffer(buf, np.uint8).reshape(blocks, meta.n_kv_tokens, -1)
    assert np.array_equal(np.frombuffer(reloaded, np.uint8).reshape(blocks, meta.n_kv_tokens - 1, -1), saved[:, :-1])
    assert drain(engine, "a") == run(make_engine(), [EngineRequest("a", tokens, GREEDY)])["a"]


def test_load_into_a_longer_request_prefills_only_the_suffix():
    engine = make_engine()
    engine.add(EngineRequest("turn1", prompt(300), GREEDY))
    reply = drain(engine, "turn1")
    buf = bytearray(engine.kv_nbytes("turn1"))
    meta = engine.save_kv("turn1", memoryview(buf))
    engine.abort("turn1")

    turn2 = prompt(300) + reply + prompt(20, salt=5)
    fresh = run(make_engine(), [EngineRequest("turn2", turn2, GREEDY)])["turn2"]
    runtime = ToyPagedRuntime()
    restored = ExLlamaV2Engine(runtime, ByteTokenizer(), prefill_chunk=96)
    restored.load_kv(EngineRequest("turn2", turn2, GREEDY), meta, memoryview(buf))
    assert drain(restored, "turn2") == fresh
    assert runtime.tokens_run == len(turn2) - meta.n_kv_tokens - 1 + GREEDY.max_tokens


def test_shared_prefix_pages_are_reused_not_recomputed():
    runtime = ToyPagedRuntime()
    engine = ExLlamaV2Engine(runtime, ByteTokenizer(), prefill_chunk=96)
    system = prompt(2 * PAGE + 10)
    first = run(engine, [EngineRequest("a", system + prompt(15, 1), GREEDY)])["a"]
    runtime.tokens_run = 0
    second = run(engine, [EngineRequest("b", system + prompt(15, 2), GREEDY)])["b"]
    assert runtime.tokens_run == (10 + 15 - 1) + GREEDY.max_tokens  # two full pages shared
    assert second == run(make_engine(), [EngineRequest("b", system + prompt(15, 2), GREEDY)])["b"]
    assert first != second


def test_seeded_sampling_repeats_and_resumes_from_snapshot():
    params = SamplingParams(max_tokens=20, temperature=0.9, top_p=0.9, top_k=40, seed=1234, ignore_eos=True)
    full = run(make_engine(), [EngineRequest("s", prompt(30), params)])["s"]
    assert full == run(make_engine(), [EngineRequest("s", prompt(30), params)])["s"]

    engine = make_engine()
    engine.add(EngineRequest("s", prompt(30), params))
    before = steps_until(engine, "s", 7)
    buf = bytearray(engine.kv_nbytes("s"))
    meta = engine.save_kv("s", memoryview(buf))
    engine.abort("s")
    engine.load_kv(EngineRequest("s", prompt(30), params, output_ids=before), meta, memoryview(buf))
    assert before + drain(engine, "s") == full


def test_stop_string_ends_the_sequence_and_is_withheld():
    engine = make_engine()
    tok = ByteTokenizer()
    text = tok.decode(run(engine, [EngineRequest("a", prompt(50), GREEDY)])["a"])
    stop = text[5:7]
    events = []
    engine.add(EngineRequest("b", prompt(50), SamplingParams(max_tokens=12, ignore_eos=True, stop=(stop,))))
    while engine.has_work():
        events += engine.step()
    streamed = "".join(e.text for e in events)
    assert events[-1].finish_reason == "stop"
    assert streamed == text[: text.index(stop)]


def test_finished_sequence_can_still_be_snapshotted_until_next_step():
    engine = make_engine()
    engine.add(EngineRequest("a", prompt(20), SamplingParams(max_tokens=3, ignore_eos=True)))
    while engine.has_work():
        last = engine.step()
    assert last[-1].finished and last[-1].finish_reason == "length"
    assert engine.capacity().running == 0
    meta = engine.save_kv("a", memoryview(bytearray(engine.kv_nbytes("a"))))
    assert meta.n_kv_tokens == 22 and len(meta.token_ids) == 23
    engine.step()
    assert engine.capacity().free_slots == engine.capacity().total_slots
    with pytest.raises(EngineError, match="unknown request id"):
        engine.kv_nbytes("a")


def test_capacity_accounting_and_full_cache():
    engine = make_engine(n_pages=3)
    assert engine.capacity().total_slots == 3 * PAGE
    engine.add(EngineRequest("a", prompt(PAGE + 1), GREEDY))
    assert engine.capacity().free_slots == PAGE and engine.capacity().running == 1
    with pytest.raises(EngineError, match="not enough free KV slots"):
        engine.add(EngineRequest("b", prompt(PAGE + 1, 1), GREEDY))
    engine.abort("a")
    assert engine.capacity().free_slots == 3 * PAGE and engine.capacity().running == 0


def test_out_of_pages_preempts_the_youngest_and_recomputes_it():
    engine = make_engine(n_pages=2)
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    a = EngineRequest("a", prompt(PAGE - 2), params)  # crosses into a second page while decoding
    b = EngineRequest("b", prompt(10, 1), params)
    engine.add(a)
    engine.add(b)
    out = {"a": [], "b": []}
    b_waited = False
    while engine.has_work():
        assert engine.capacity().running == 2 or out["a"] or out["b"]
        events = engine.step()
        b_waited |= bool(out["b"]) and len(out["b"]) < 20 and not any(e.req_id == "b" for e in events)
        for e in events:
            out[e.req_id].append(e.token_id)
    assert b_waited
    assert out["a"] == run(make_engine(), [a])["a"]
    assert out["b"] == run(make_engine(), [b])["b"]


@pytest.mark.parametrize(
    "req, message",
    [
        (EngineRequest("x", [], GREEDY), "empty prompt"),
        (EngineRequest("x", [1, 999], GREEDY), "token ids"),
        (EngineRequest("x", [1, 2], SamplingParams(max_tokens=0)), "max_tokens"),
        (EngineRequest("x", [1, 2], SamplingParams(temperature=-1)), "temperature"),
        (EngineRequest("x", [1, 2], SamplingParams(top_p=0)), "top_p"),
        (EngineRequest("x", prompt(5000), GREEDY), "context"),
        (EngineRequest("x", [1, 2], SamplingParams(max_tokens=2), output_ids=[3, 4]), "already produced"),
        (EngineRequest("", [1, 2], GREEDY), "req_id"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_error(req, message):
    engine = make_engine()
    with pytest.raises(EngineError, match=message):
        engine.add(req)
    assert engine.capacity().free_slots == engine.capacity().total_slots


def test_bad_snapshots_and_ids_are_refused():
    engine = make_engine(max_batch=1)
    engine.add(EngineRequest("a", prompt(20), GREEDY))
    with pytest.raises(EngineError, match="already running"):
        engine.add(EngineRequest("a", prompt(20), GREEDY))
    with pytest.raises(EngineError, match="batch full"):
        engine.add(EngineRequest("b", prompt(20), GREEDY))
    engine.step()
    buf = bytearray(engine.kv_nbytes("a"))
    with pytest.raises(EngineError, match="destination"):
        engine.save_kv("a", memoryview(bytearray(len(buf) - 1)))
    meta = engine.save_kv("a", memoryview(buf))
    engine.abort("a")
    with pytest.raises(EngineError, match="unknown request id"):
        engine.save_kv("a", memoryview(buf))
    other_layout = KVMeta(
        ToyPagedRuntime(n_layers=3).layout(), meta.token_ids, meta.prompt_len, meta.n_kv_tokens, meta.nbytes
    )
    resumed = EngineRequest("a", list(meta.token_ids), GREEDY)
    with pytest.raises(EngineError, match="layout"):
        engine.load_kv(resumed, other_layout, memoryview(buf))
    with pytest.raises(EngineError, match="does not extend"):
        engine.load_kv(EngineRequest("a", prompt(20, 3), GREEDY), meta, memoryview(buf))
    with pytest.raises(EngineError, match="bytes"):
        engine.load_kv(resumed, meta, memoryview(buf)[:-4])
    assert engine.capacity().free_slots == engine.capacity().total_slots
    engine.abort("never-seen")  # unknown ids are ignored
