"""save_kv → abort → load_kv resumes at the exact next token; prefix reuse equals a full prefill."""

from __future__ import annotations

import dataclasses

import pytest

from kernel.engine.core.interface import EngineError, EngineRequest, KVLayout, SamplingParams
from kernel.engine.cpu.engine import TorchEngine
from tests.engine.helpers import Result, drain, greedy


def _prompt(engine) -> list[int]:
    return engine.apply_chat_template([{"role": "user", "content": "List three uses of a kernel in an OS."}])


def _generate_text(engine, prompt: list[int], params: SamplingParams) -> str:
    engine.add(EngineRequest("whole", prompt, params))
    return drain(engine)["whole"].text


def _run_steps(engine, n: int, results: dict[str, Result]) -> None:
    for _ in range(n):
        for event in engine.step():
            results.setdefault(event.req_id, Result()).tokens.append(event.token_id)


def test_save_abort_load_continues_identically(engine):
    prompt = _prompt(engine)
    expected = greedy(engine, prompt, 24)
    engine.add(EngineRequest("r", prompt, SamplingParams(max_tokens=24, ignore_eos=True)))
    results: dict[str, Result] = {}
    _run_steps(engine, 6, results)
    buffer = bytearray(engine.kv_nbytes("r"))
    meta = engine.save_kv("r", memoryview(buffer))
    engine.abort("r")
    produced = results["r"].tokens
    assert meta.n_kv_tokens == len(prompt) + len(produced) - 1 and meta.nbytes == len(buffer)
    assert list(meta.token_ids) == prompt + produced and meta.prompt_len == len(prompt)
    engine.load_kv(
        EngineRequest("r", prompt, SamplingParams(max_tokens=24, ignore_eos=True), produced),
        meta,
        memoryview(bytes(buffer)),
    )
    drain(engine, results)
    assert results["r"].tokens == expected


def test_snapshot_mid_prefill_and_extended_request(engine):
    """A snapshot taken before the prompt is fully prefilled, loaded into a request with more tokens, still matches."""
    prompt = engine.tokenize(" ".join(f"Step {i}: the scheduler admits agent {i % 7}." for i in range(30)))
    assert len(prompt) > 128  # more than one prefill chunk
    extension = engine.tokenize(" Answer briefly.")
    engine.add(EngineRequest("r", prompt, SamplingParams(max_tokens=10)))
    engine.step()  # one chunk only
    buffer = bytearray(engine.kv_nbytes("r"))
    meta = engine.save_kv("r", memoryview(buffer))
    engine.abort("r")
    assert meta.n_kv_tokens == 128
    engine.load_kv(
        EngineRequest("r", prompt + extension, SamplingParams(max_tokens=10, ignore_eos=True)), meta, memoryview(buffer)
    )
    assert drain(engine)["r"].tokens == greedy(engine, prompt + extension, 10)


def test_prefix_reuse_matches_full_prefill(smollm_checkpoint):
    engine = TorchEngine(smollm_checkpoint, "float32", kv_budget_tokens=2048, max_batch=4, prefill_chunk=128)
    fresh = TorchEngine(smollm_checkpoint, "float32", kv_budget_tokens=2048, max_batch=4, prefill_chunk=128)
    turn1 = engine.apply_chat_template([{"role": "user", "content": "Name a planet with rings."}])
    first = greedy(engine, turn1, 16)
    history = [
        {"role": "user", "content": "Name a planet with rings."},
        {"role": "assistant", "content": engine.detokenize(first)},
        {"role": "user", "content": "How many moons does it have?"},
    ]
    turn2 = engine.apply_chat_template(history)
    engine.add(EngineRequest("turn2", turn2, SamplingParams(max_tokens=16, ignore_eos=True)))
    reused_tokens = engine.kv_nbytes("turn2") // engine.layout().bytes_per_token()
    assert reused_tokens >= len(turn1) - 16  # the previous turn's full blocks were found in the cache
    assert drain(engine)["turn2"].tokens == greedy(fresh, turn2, 16)


def test_load_rejects_foreign_or_inconsistent_snapshots(engine):
    prompt = _prompt(engine)
    engine.add(EngineRequest("r", prompt, SamplingParams(max_tokens=4)))
    engine.step()
    buffer = bytearray(engine.kv_nbytes("r"))
    meta = engine.save_kv("r", memoryview(buffer))
    engine.abort("r")
    params = SamplingParams(max_tokens=4)
    resumed = EngineRequest("r", prompt, params, list(meta.token_ids[len(prompt) :]))
    other_layout = KVLayout("other-model", *list(meta.layout.__dict__.values())[1:])
    with pytest.raises(EngineError, match="layout"):
        engine.load_kv(resumed, type(meta)(**{**meta.__dict__, "layout": other_layout}), memoryview(buffer))
    with pytest.raises(EngineError, match="prefix"):
        engine.load_kv(EngineRequest("r", prompt[1:], params), meta, memoryview(buffer))
    with pytest.raises(EngineError, match="bytes"):
        engine.load_kv(resumed, meta, memoryview(buffer)[:10])
    with pytest.raises(EngineError, match="holds"):
        engine.add(EngineRequest("s", prompt, params))
        engine.save_kv("s", memoryview(bytearray(1)))
    with pytest.raises(EngineError, match="unknown request"):
        engine.save_kv("nobody", memoryview(buffer))


def test_load_of_fewer_tokens_than_the_snapshot_holds(engine):
    """A snapshot whose KV covers every one of its tokens: the last is recomputed, so fewer tokens are loaded than the
    snapshot holds, and they must be read at the snapshot's own token stride."""
    prompt = _prompt(engine)
    engine.add(EngineRequest("r", prompt, SamplingParams(max_tokens=8, ignore_eos=True)))
    _run_steps(engine, 3, {})
    buffer = bytearray(engine.kv_nbytes("r"))
    meta = engine.save_kv("r", memoryview(buffer))
    engine.abort("r")
    full_kv = dataclasses.replace(meta, token_ids=meta.token_ids[: meta.n_kv_tokens])
    tokens = list(full_kv.token_ids)
    engine.load_kv(
        EngineRequest("r", tokens, SamplingParams(max_tokens=8, ignore_eos=True)), full_kv, memoryview(buffer)
    )
    assert drain(engine)["r"].tokens == greedy(engine, tokens, 8)


def test_text_withheld_at_preemption_is_emitted_after_resume(engine):
    """Preempted while the text of its last token may start a stop string: that text was not sent, so the resumed
    request must send it (the concatenated text equals an uninterrupted run's)."""
    prompt = _prompt(engine)
    tokens = greedy(engine, prompt, 12)
    cut = 6  # preempt right after the event of token index cut - 1
    last_text = engine.detokenize(tokens[:cut])[len(engine.detokenize(tokens[: cut - 1])) :]
    assert last_text and "\ufffd" not in last_text
    params = SamplingParams(max_tokens=12, ignore_eos=True, stop=(last_text + "\x00",))  # never matches in full
    uninterrupted = _generate_text(engine, prompt, params)

    engine.add(EngineRequest("r", prompt, params))
    before = Result()
    while len(before.tokens) < cut:
        for event in engine.step():
            before.tokens.append(event.token_id)
            before.text += event.text
    buffer = bytearray(engine.kv_nbytes("r"))
    meta = engine.save_kv("r", memoryview(buffer))
    engine.abort("r")
    assert not before.text.endswith(last_text)  # withheld: it may start the stop string
    engine.load_kv(EngineRequest("r", prompt, params, before.tokens), meta, memoryview(buffer))
    assert before.text + drain(engine)["r"].text == uninterrupted
