"""Sampling controls: seeds, top-k/top-p, stop strings, EOS and max_tokens."""

from __future__ import annotations

from kernel.engine.core.interface import EngineRequest, SamplingParams
from tests.engine.helpers import Result, drain, generate, greedy


def _prompt(engine) -> list[int]:
    return engine.apply_chat_template([{"role": "user", "content": "Invent a name for a new fruit."}])


def test_same_seed_same_output_regardless_of_batch(engine):
    prompt = _prompt(engine)
    params = dict(max_tokens=10, temperature=1.0, top_p=0.95, top_k=50, ignore_eos=True)
    alone = generate(engine, {"a": prompt}, seed=7, **params)["a"].tokens
    batched = generate(engine, {"a": prompt, "b": prompt, "c": prompt}, seed=7, **params)
    assert batched["a"].tokens == batched["b"].tokens == batched["c"].tokens == alone
    other = generate(engine, {"x": prompt}, seed=8, **params)["x"].tokens
    assert other != alone


def test_top_k_one_is_greedy(engine):
    prompt = _prompt(engine)
    sampled = generate(engine, {"k": prompt}, max_tokens=10, temperature=2.0, top_k=1, seed=1, ignore_eos=True)
    assert sampled["k"].tokens == greedy(engine, prompt, 10)


def test_tiny_top_p_is_greedy(engine):
    prompt = _prompt(engine)
    sampled = generate(engine, {"p": prompt}, max_tokens=10, temperature=1.5, top_p=1e-6, seed=3, ignore_eos=True)
    assert sampled["p"].tokens == greedy(engine, prompt, 10)


def test_seeded_run_resumes_from_snapshot_rng_state(engine):
    prompt = _prompt(engine)
    params = SamplingParams(max_tokens=14, temperature=1.0, seed=11, ignore_eos=True)
    expected = generate(engine, {"s": prompt}, **params.__dict__)["s"].tokens
    engine.add(EngineRequest("s", prompt, params))
    results: dict[str, Result] = {}
    for _ in range(5):
        for event in engine.step():
            results.setdefault(event.req_id, Result()).tokens.append(event.token_id)
    buffer = bytearray(engine.kv_nbytes("s"))
    meta = engine.save_kv("s", memoryview(buffer))
    engine.abort("s")
    engine.load_kv(EngineRequest("s", prompt, params, results["s"].tokens), meta, memoryview(buffer))
    drain(engine, results)
    assert results["s"].tokens == expected


def test_eos_max_tokens_and_text(engine):
    chat = engine.apply_chat_template([{"role": "user", "content": "Say hello."}])
    done = generate(engine, {"eos": chat, "len": chat}, max_tokens=200)
    assert done["eos"].reason == "eos"
    assert done["eos"].tokens[-1] in engine.eos_token_ids()
    assert done["eos"].text == engine.detokenize(done["eos"].tokens)
    capped = generate(engine, {"len": chat}, max_tokens=3, ignore_eos=True)["len"]
    assert capped.reason == "length" and len(capped.tokens) == 3


def test_stop_string_cuts_and_withholds(engine):
    chat = engine.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    full = generate(engine, {"f": chat}, max_tokens=30)["f"].text
    assert "Paris" in full
    stopped = generate(engine, {"s": chat}, max_tokens=30, stop=("Paris",))["s"]
    assert stopped.reason == "stop"
    assert stopped.text == full[: full.index("Paris")]
