"""Continuous batching changes nothing: sequences run together (and joining mid-flight) match their solo runs."""

from __future__ import annotations

from kernel.engine.core.interface import EngineRequest, SamplingParams
from kernel.engine.cpu.engine import TorchEngine
from tests.engine.helpers import drain, greedy

MAX_TOKENS = 8


def _mixed_prompts(engine) -> dict[str, list[int]]:
    words = "agents schedule memory tools files processes kernels tokens".split()
    lengths = [3, 17, 40, 70, 96, 150, 9, 33]  # 150 spans two prefill chunks
    base = engine.tokenize(" ".join(words * 40))
    return {f"s{i}": base[i : i + n] for i, n in enumerate(lengths)}


def test_eight_mixed_lengths_match_solo_runs(engine):
    prompts = _mixed_prompts(engine)
    solo = {name: greedy(engine, prompt, MAX_TOKENS) for name, prompt in prompts.items()}
    # Half join at the start, half after a few steps, so prefill chunks and decodes share steps.
    names = list(prompts)
    for name in names[:4]:
        engine.add(EngineRequest(name, prompts[name], SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)))
    results = {}
    for _ in range(3):
        for event in engine.step():
            results.setdefault(event.req_id, []).append(event.token_id)
    for name in names[4:]:
        engine.add(EngineRequest(name, prompts[name], SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)))
    for name, result in drain(engine).items():
        results.setdefault(name, []).extend(result.tokens)
    assert results == solo


def test_internal_preemption_recomputes_identically(smollm_checkpoint):
    """A KV budget too small for all decodes forces the engine to evict and later recompute the youngest sequence."""
    engine = TorchEngine(smollm_checkpoint, "float32", kv_budget_tokens=128, max_batch=4, prefill_chunk=64)
    prompts = {f"p{i}": engine.tokenize(f"Count slowly from {i} to one hundred:") for i in range(3)}
    solo = {name: greedy(engine, prompt, 24) for name, prompt in prompts.items()}
    for name, prompt in prompts.items():
        engine.add(EngineRequest(name, prompt, SamplingParams(max_tokens=24, ignore_eos=True)))
    together = drain(engine)
    assert {name: r.tokens for name, r in together.items()} == solo
    engine.step()  # finished sequences release their blocks at the next step
    assert engine.capacity().free_slots == 128  # everything released (cached blocks count as free)
