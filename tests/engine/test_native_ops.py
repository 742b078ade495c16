"""The native layer ops (kernel/engine/cpu/native/ops.cpp) against the torch ops they replace (layer_ops.TorchOps), on
random inputs in each dtype, with paged contexts whose blocks are scattered and of different lengths; bad tables are
errors, not reads out of bounds."""

from __future__ import annotations

import pytest
import torch

from kernel.engine.cpu.layer_ops import NativeOps, TorchOps
from kernel.engine.cpu.native import load
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch

library = load()
pytestmark = pytest.mark.skipif(library is None, reason="the native ops did not build on this machine")

H, HKV, D, BLOCK, SLOTS = 6, 2, 32, 4, 256
# float32 agrees to rounding; bfloat16/float16 results are one rounding of a float32 value in both, bar the torch ops'
# intermediate roundings, so they agree to a few units in their last place
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}
DTYPES = list(TOLERANCE)


@pytest.fixture
def native():
    return NativeOps(library)


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    scale = max(1.0, float(b.float().abs().max()))
    return float((a.float() - b.float()).abs().max()) <= TOLERANCE[dtype] * scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_delta", [False, True])
def test_add_rms_norm(native, dtype, with_delta):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 48, generator=g).to(dtype)
    delta = torch.randn(5, 48, generator=g).to(dtype) if with_delta else None
    w = torch.rand(48, generator=g).to(dtype)
    x_ref = x.clone()
    expected = TorchOps.add_rms_norm(x_ref, delta, w, 1e-5)
    got = native.add_rms_norm(x, delta, w, 1e-5)
    assert torch.equal(x, x_ref)  # the residual sum, rounded to dtype as add_ does
    assert got.shape == expected.shape and got.dtype == dtype and close(got, expected, dtype)


def _tables(g: torch.Generator, positions: list[int]) -> list[list[int]]:
    """A block table per sequence, from one random permutation of the cache's blocks: scattered, never shared."""
    blocks = torch.randperm(SLOTS // BLOCK, generator=g).tolist()
    tables = []
    for pos in positions:
        n = pos // BLOCK + 1
        tables.append(blocks[:n])
        blocks = blocks[n:]
    return tables


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qk_norm", [False, True])
def test_rope_write_rotates_and_fills_the_cache(native, dtype, qk_norm):
    g = torch.Generator().manual_seed(2)
    rows = 7
    qkv = torch.randn(rows, (H + 2 * HKV) * D, generator=g).to(dtype)
    angles = torch.outer(torch.arange(64, dtype=torch.float32), torch.rand(D // 2, generator=g))
    cos = torch.cat([angles.cos()] * 2, -1).to(dtype)
    signed_sin = torch.cat([-angles.sin(), angles.sin()], -1).to(dtype)
    positions = torch.randint(0, 64, (rows,), generator=g)
    slots = torch.randperm(SLOTS, generator=g)[:rows]
    caches = [torch.zeros(2, SLOTS, HKV, D, dtype=dtype) for _ in range(2)]
    norms = [(torch.rand(D, generator=g) + 0.5).to(dtype) for _ in range(2)] if qk_norm else [None, None]
    q_ref, k_ref = TorchOps.rope_write(qkv, cos, signed_sin, positions, caches[0], slots, H, HKV, *norms, 1e-6)
    q, k = native.rope_write(qkv, cos, signed_sin, positions, caches[1], slots, H, HKV, *norms, 1e-6)
    if qk_norm:  # the norm changed the heads: rotary alone keeps each head's length, the norm sets it
        plain, _ = TorchOps.rope_write(qkv, cos, signed_sin, positions, caches[0].clone(), slots, H, HKV)
        assert not close(q, plain, dtype)
    assert q.shape == (rows, H, D) and k.shape == (rows, HKV, D)
    assert close(q, q_ref, dtype) and close(k, k_ref, dtype)
    assert torch.equal(caches[1][1], caches[0][1])  # v copied as is
    assert close(caches[1][0], caches[0][0], dtype)
    untouched = torch.ones(SLOTS, dtype=torch.bool)
    untouched[slots] = False
    assert not caches[1][:, untouched].any()  # nothing written beyond the rows' slots


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale, window", [(None, None), (0.3, None), (None, 6), (0.3, 5)])
def test_decode_attention_over_scattered_blocks(native, dtype, scale, window):
    g = torch.Generator().manual_seed(3)
    positions = [0, 5, 17, 40, 3]  # each sequence's new token position: contexts of 1..41 tokens
    tables = _tables(g, positions)
    chunks = [ScheduledChunk([7], pos, table, True) for pos, table in zip(positions, tables)]
    batch, _ = build_step_batch(chunks, BLOCK)
    cache = torch.randn(2, SLOTS, HKV, D, generator=g).to(dtype)
    q = torch.randn(len(positions), H, D, generator=g).to(dtype)
    expected = TorchOps.decode_attention(q, cache, batch, scale, window)
    got = native.decode_attention(q, cache, batch, scale, window)
    assert got.shape == q.shape and close(got, expected, dtype)
    if scale is not None or window is not None:  # each changes the result (contexts up to 41 > the windows)
        assert not close(got, native.decode_attention(q, cache, batch), dtype)
    # each row is its own sequence's: the same row alone in a batch gives the same bits
    alone, _ = build_step_batch(chunks[3:4], BLOCK)
    assert torch.equal(native.decode_attention(q[3:4].contiguous(), cache, alone, scale, window), got[3:4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul(native, dtype):
    gate_up = torch.randn(4, 2 * 40, generator=torch.Generator().manual_seed(4)).to(dtype)
    assert close(native.silu_mul(gate_up), TorchOps.silu_mul(gate_up), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_mul(native, dtype):
    gate_up = torch.randn(4, 2 * 40, generator=torch.Generator().manual_seed(5)).to(dtype) * 4  # tails of both signs
    assert close(native.gelu_mul(gate_up), TorchOps.gelu_mul(gate_up), dtype)


def test_out_of_range_tables_are_errors():
    cache = torch.zeros(2, SLOTS, HKV, D)
    q = torch.zeros(1, H, D)
    lens = torch.tensor([3])
    with pytest.raises(RuntimeError, match="block out of range"):
        library.decode_attention(q, cache, torch.tensor([[SLOTS // BLOCK]]), lens, BLOCK, 1.0)
    with pytest.raises(RuntimeError, match="context length out of range"):
        library.decode_attention(q, cache, torch.tensor([[0]]), torch.tensor([BLOCK + 1]), BLOCK, 1.0)
    qkv = torch.zeros(1, (H + 2 * HKV) * D)
    table = torch.zeros(8, D)
    with pytest.raises(RuntimeError, match="out of range"):
        library.rope_write(qkv, table, table, torch.tensor([0]), cache, torch.tensor([SLOTS]), H, HKV)
    wide = torch.zeros(2, SLOTS, HKV, 1024)
    norm, table = torch.ones(1024), torch.zeros(8, 1024)
    with pytest.raises(RuntimeError, match="at most 512"):
        library.rope_write(
            torch.zeros(1, (H + 2 * HKV) * 1024),
            table,
            table,
            torch.tensor([0]),
            wide,
            torch.tensor([0]),
            H,
            HKV,
            norm,
            norm,
            1e-6,
        )


@pytest.mark.parametrize("dtype, weights", [("float32", "fp32"), ("bfloat16", "int4"), ("float32", "int8")])
def test_the_native_layer_loop_is_the_python_loop(tiny_folder, dtype, weights):
    """A pure-decode step through native/decode_layers.cpp: the same logits and the same K/V, bit for bit, as the
    model's Python loop over the same native ops."""
    from kernel.engine.cpu.engine import TorchEngine

    engine = TorchEngine.from_path(str(tiny_folder), dtype, weights=weights, kv_budget_tokens=256, max_batch=4)
    model, kv = engine.model, engine.kv
    assert model._native_stack is not None
    prompts = [
        engine.tokenize(text)[:n]
        for text, n in (("the kernel schedules agents", 5), ("another agent asks for a tool call now", 11))
    ]
    with torch.inference_mode():
        model.forward(
            build_step_batch([ScheduledChunk(p, 0, [i], False) for i, p in enumerate(prompts)], BLOCK * 4)[0], kv
        )
        decodes = [ScheduledChunk([3], len(p), [i], True) for i, p in enumerate(prompts)]
        batch, _ = build_step_batch(decodes, BLOCK * 4)
        before = kv.data.clone()
        native = model.forward(batch, kv)
        after_native, kv.data[:] = kv.data.clone(), before
        stack, model._native_stack = model._native_stack, None
        python = model.forward(batch, kv)
        model._native_stack = stack
    assert torch.equal(native, python) and torch.equal(after_native, kv.data)


def test_the_torch_ops_fallback_computes_the_same_model(tiny_folder):
    """Where the native ops cannot be built the model runs its steps as torch ops: the same logits, to rounding, for
    prompt chunks and decodes alike."""
    from kernel.engine.cpu.kv_cache import KVCache
    from kernel.engine.cpu.model import LlamaModel
    from kernel.engine.loading.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(str(tiny_folder), torch.float32)
    cfg = checkpoint.config
    models = [LlamaModel(cfg, checkpoint.weights, torch.float32, native=native) for native in (True, False)]
    assert models[0].ops.name == "native" and models[1].ops.name == "torch"
    caches = [KVCache(cfg.n_layers, 64, cfg.n_kv_heads, cfg.head_dim, torch.float32) for _ in models]
    prompt = ScheduledChunk(list(range(5, 25)), 0, [0, 1], True)
    decode = ScheduledChunk([7], 20, [0, 1], True)
    with torch.inference_mode():
        for step in ([prompt], [decode]):
            batch, _ = build_step_batch(step, 16)
            native, fallback = (model.forward(batch, kv) for model, kv in zip(models, caches))
            assert torch.allclose(native, fallback, atol=1e-4, rtol=1e-4)
    assert torch.allclose(caches[0].data, caches[1].data, atol=1e-5)
