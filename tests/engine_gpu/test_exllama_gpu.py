"""The ExLlamaV2 engine on a real GPU with a real EXL2 model (folder given by AIOS_EXL2_MODEL); skipped elsewhere."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("exllamav2")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)
MODEL = os.environ.get("AIOS_EXL2_MODEL")
if not MODEL:
    pytest.skip("set AIOS_EXL2_MODEL to an EXL2 model folder", allow_module_level=True)

from kernel.engine.core.interface import EngineRequest, SamplingParams  # noqa: E402
from kernel.engine.gpu.engine import ExLlamaV2Engine  # noqa: E402

GREEDY = SamplingParams(max_tokens=24, ignore_eos=True)
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away,",
    "List three primary colours:",
]


@pytest.fixture(scope="module")
def engine() -> ExLlamaV2Engine:
    return ExLlamaV2Engine.from_path(MODEL, kv_budget_tokens=8192, max_batch=8, prefill_chunk=256)


def drain(engine: ExLlamaV2Engine) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    while engine.has_work():
        for e in engine.step():
            if e.token_id >= 0:
                out.setdefault(e.req_id, []).append(e.token_id)
    engine.step()  # releases the finished sequences' pages
    return out


def generate(engine: ExLlamaV2Engine, prompts: dict[str, list[int]], params=GREEDY) -> dict[str, list[int]]:
    for req_id, ids in prompts.items():
        engine.add(EngineRequest(req_id, ids, params))
    return drain(engine)


def test_layout_describes_the_cache(engine):
    layout = engine.layout()
    assert layout.dtype == "float16" and layout.n_layers > 0 and layout.n_kv_heads > 0 and layout.head_dim > 0
    engine.add(EngineRequest("probe", engine.tokenize(PROMPTS[0]), GREEDY))
    engine.step()
    assert engine.kv_nbytes("probe") == (len(engine.tokenize(PROMPTS[0]))) * layout.bytes_per_token()
    engine.abort("probe")


def test_greedy_is_deterministic(engine):
    ids = {"a": engine.tokenize(PROMPTS[0])}
    first = generate(engine, ids)
    # A different request id and an intervening run: the same tokens must come back.
    generate(engine, {"other": engine.tokenize(PROMPTS[1])})
    assert generate(engine, {"b": ids["a"]})["b"] == first["a"]
    assert engine.detokenize(first["a"]).strip()


def test_batched_equals_solo(engine):
    prompts = {f"p{i}": engine.tokenize(p) for i, p in enumerate(PROMPTS)}
    prompts["long"] = engine.tokenize(" ".join(PROMPTS) * 40)[:700]  # several pages, chunked prefill
    together = generate(engine, prompts)
    for req_id, ids in prompts.items():
        assert generate(engine, {req_id + "-solo": ids})[req_id + "-solo"] == together[req_id], req_id


def test_save_abort_load_continues_identically(engine):
    ids = engine.tokenize(PROMPTS[2])
    params = SamplingParams(max_tokens=32, temperature=0.8, top_p=0.95, seed=7, ignore_eos=True)
    full = generate(engine, {"full": ids}, params)["full"]

    engine.add(EngineRequest("r", ids, params))  # seeded sampling: the RNG state travels with the KV
    before: list[int] = []
    while len(before) < 10:
        before += [e.token_id for e in engine.step()]
    snapshot = bytearray(engine.kv_nbytes("r"))
    meta = engine.save_kv("r", memoryview(snapshot))
    engine.abort("r")
    engine.load_kv(EngineRequest("r", ids, params, output_ids=before), meta, memoryview(snapshot))
    assert before + drain(engine)["r"] == full
