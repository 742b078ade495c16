"""GGUF Q5_K and Q5_1 matrices: kept as the file stores them (plain GGUFBlocks, the file's bytes and values) and
multiplied as stored in int4 mode (BlockLinear's Q5_K / Q5_1 products); the re-expression machinery
(block_convert.py) for types a kernel does not read; types nothing reads refused by name.

A tiny llama from transformers (rows of 256, whole K-quant super-blocks) is written as GGUF with its matrices in
Q5_K and Q5_1 (gguf quantizes Q5_1; tests/loading/kquant_writer.py writes Q5_K), and loaded as aiosd loads it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.engine.cpu import block_weights, memory_plan, quant_weights
from kernel.engine.cpu.block_weights import BlockFormat, BlockLinear
from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.loading import gguf_loader
from kernel.engine.loading.block_convert import quantize_q6_k, reexpress
from kernel.engine.loading.gguf_blocks import GGUFBlocks, Reexpressed
from kernel.engine.loading.model_config import ModelLoadError
from kernel.engine.loading.quant_tensor import quantize_int4
from tests.engine import families
from tests.engine.tiny_llama import CORPUS
from tests.loading.kquant_writer import quantize_q5_k

SIZES = dict(hidden_size=256, intermediate_size=512, head_dim=64)


def _q6_k_steps(raw: np.ndarray) -> np.ndarray:
    """The stored step (d * scale) of each 16 weights of Q6_K bytes [rows, bytes] → [rows, k / 16]."""
    blocks = raw.reshape(raw.shape[0], -1, 210)
    d = np.ascontiguousarray(blocks[..., 208:210]).view(np.float16).astype(np.float32)  # [rows, supers, 1]
    scales = blocks[..., 192:208].view(np.int8).astype(np.float32)
    return np.abs(d * scales).reshape(raw.shape[0], -1)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 4),
    supers=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    magnitude=st.sampled_from([1e-4, 0.02, 1.0, 300.0]),
    spread=st.sampled_from([0.0, 0.5, 4.0]),
)
def test_q6_k_values_are_within_half_a_stored_step(rows, supers, seed, magnitude, spread):
    """Any values, sub-blocks of very different sizes and a few constant zero ones: each value comes back within half
    its 16-weight step (one step for the clamped +32 code), by gguf's own dequantizer."""
    rng = np.random.default_rng(seed)
    k = 256 * supers
    sizes = np.exp(rng.standard_normal((rows, k // 16, 1)) * spread)
    w = (rng.standard_normal((rows, k // 16, 16)) * magnitude * sizes).reshape(rows, k)
    w = np.clip(w, -1e6, 1e6).astype(np.float32)  # Q6_K's largest: 32 steps of 127 x fp16's largest d, 2.7e8
    w[:, :16] = 0.0
    raw = quantize_q6_k(w)
    assert raw.shape == (rows, supers * 210)
    back = dequantize(raw, Q.Q6_K).reshape(rows, k)
    step = np.repeat(_q6_k_steps(raw), 16, axis=1)
    assert np.all(np.abs(back - w) <= step * 1.0001 + 1e-30)
    beyond_half = np.abs(back - w) > step * 0.5001 + 1e-30
    assert np.all(np.abs(w[beyond_half]) >= 31.5 * step[beyond_half] * 0.9999)  # only the clamped +32 codes
    assert np.all(back[:, :16] == 0)


@pytest.mark.parametrize(("stored", "target", "k"), [(Q.Q5_K, Q.Q6_K, 512), (Q.Q5_1, Q.Q5_0, 96)])
def test_reexpression_is_much_closer_than_four_bits(stored, target, k):
    """The machinery a type without a kernel would use: converted values against the file's, a fraction of the error a
    4-bit requantization makes."""
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((64, k)) * 0.05).astype(np.float32)
    raw = quantize_q5_k(w) if stored is Q.Q5_K else quantize(w, stored)
    values = dequantize(raw, stored).reshape(64, k)
    converted = dequantize(reexpress(raw, stored, target), target).reshape(64, k)
    four_bits = quantize_int4(torch.from_numpy(values)).dequantize().numpy()
    rms = lambda a: float(np.sqrt(np.mean((a - values) ** 2)))
    assert rms(converted) < 0.6 * rms(four_bits), (rms(converted), rms(four_bits))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(the float GGUF, one with Q5_K matrices and a Q5_1 embedding) of one tiny llama."""
    root = tmp_path_factory.mktemp("kquants")
    folder = families.save_family("llama3", root / "hf", **SIZES)

    def store(name, w):
        if w.ndim != 2:
            return w, None
        if name == "token_embd.weight":
            return quantize(w, Q.Q5_1), Q.Q5_1
        return quantize_q5_k(w), Q.Q5_K

    float_file = families.save_family_gguf("llama3", folder, root / "f32.gguf")
    return float_file, families.save_family_gguf("llama3", folder, root / "q5.gguf", store=store)


def _load(path, quantized: bool):
    reader = gguf_loader.read_gguf(path)
    cfg = gguf_loader.config_from_metadata(gguf_loader.gguf_metadata(reader), path)
    return gguf_loader.load_gguf_weights(reader, cfg, torch.float32, path, quantized=quantized)


def _logits(model: LlamaModel, ids: list[int]) -> torch.Tensor:
    kv = KVCache(model.cfg.n_layers, -(-len(ids) // 16) * 16, model.cfg.n_kv_heads, model.cfg.head_dim, model.dtype)
    batch, _ = build_step_batch([ScheduledChunk(ids, 0, list(range(-(-len(ids) // 16))), True)], 16)
    from dataclasses import replace

    batch = replace(batch, logit_rows=torch.arange(len(ids)), narrow_rows=len(ids))
    with torch.inference_mode():
        return model.forward(batch, kv).float()


def test_q5_matrices_are_kept_as_the_file_stores_them(files):
    _, path = files
    cfg, blocks = _load(path, quantized=True)
    _, floats = _load(path, quantized=False)
    q = blocks["layers.0.q"]
    assert type(q) is GGUFBlocks and q.qtype is Q.Q5_K and q.stored_qtype is Q.Q5_K
    assert q.nbytes == q.shape[0] * q.shape[1] // 256 * 176  # the file's bytes: what a product of it holds
    embed = blocks["embed"]
    assert type(embed) is GGUFBlocks and embed.qtype is Q.Q5_1
    for name, weight in blocks.items():
        if isinstance(weight, GGUFBlocks):  # the file's values, rows unpermuted, exactly as the float load has them
            assert not isinstance(weight, Reexpressed), name
            assert torch.equal(weight.dequantize(), floats[name]), name
    ids = [3, 17, 40]
    assert torch.equal(embed.dequantize_rows(np.array(ids)), floats["embed"][ids])


def test_fp32_mode_is_the_files_own_weights(files):
    _, path = files
    cfg, blocks = _load(path, quantized=True)
    _, floats = _load(path, quantized=False)
    ids = [1, 5, 9, 33, 2, 7, 60, 12]
    got = _logits(LlamaModel(cfg, blocks, torch.float32, "fp32"), ids)
    assert torch.allclose(got, _logits(LlamaModel(cfg, floats, torch.float32), ids), atol=1e-5)


@pytest.mark.skipif(not block_weights.available(), reason="native ops did not build")
def test_int4_multiplies_the_stored_q5_blocks(files, monkeypatch):
    """int4 mode keeps Q5_K and Q5_1 as stored: the products are the file's blocks (a single matrix's product a view
    of the file), auto's stored mode is int4, and the logits land closer to the file's fp32 ones than the same file
    read with its Q5 matrices re-expressed as Q6_K / Q5_0, which in turn beats a 4-bit requantization."""
    _, path = files
    cfg, blocks = _load(path, quantized=True)
    assert memory_plan.auto_plan(cfg, blocks, torch.float32).stored == "int4"
    ids = [t % cfg.vocab_size for t in range(7, 7 + 48 * 5, 5)]
    reference = _logits(LlamaModel(cfg, blocks, torch.float32, "fp32"), ids)
    model = LlamaModel(cfg, blocks, torch.float32, "int4")
    layer = model.layers[0]
    assert isinstance(layer.qkv, BlockLinear) and layer.qkv.format is BlockFormat.Q5_K
    assert isinstance(layer.down, BlockLinear) and layer.down.format is BlockFormat.Q5_K
    assert layer.down.nbytes == blocks["layers.0.down"].nbytes
    targets = {Q.Q5_K: Q.Q6_K, Q.Q5_1: Q.Q5_0}
    reexpressed = {
        name: Reexpressed(w.file, w.offset, targets[w.qtype], w.shape, w.row_order, stored=w.qtype)
        if isinstance(w, GGUFBlocks) and w.qtype in targets
        else w
        for name, w in blocks.items()
    }
    converted = LlamaModel(cfg, reexpressed, torch.float32, "int4")
    assert converted.layers[0].qkv.format is BlockFormat.Q6_K
    kept = tuple(t for t in quant_weights.KEPT_TYPES["int4"] if t not in targets)
    monkeypatch.setitem(quant_weights.KEPT_TYPES, "int4", kept)  # int4 before any Q5 path: requantized to 4 bits
    four_bits = LlamaModel(cfg, blocks, torch.float32, "int4")
    assert four_bits.layers[0].qkv.format in (BlockFormat.Q4_0, BlockFormat.Q4_1)
    error = lambda m: float((_logits(m, ids) - reference).pow(2).mean().sqrt())
    ours, before, first = error(model), error(converted), error(four_bits)
    assert math.isfinite(ours) and ours < 0.7 * before and before < first, (ours, before, first)


def test_greedy_text_from_the_q5_file(files):
    """The whole engine on the file: it serves and its greedy tokens follow the fp32 load's for a few steps."""
    from kernel.engine.cpu.engine import TorchEngine
    from tests.engine.helpers import greedy

    _, path = files
    engine = TorchEngine.from_path(str(path), dtype="float32", kv_budget_tokens=256, max_batch=2, weights="fp32")
    prompt = engine.tokenizer.encode(" ".join(CORPUS[:2]))[:24]
    assert len(greedy(engine, prompt, 6)) == 6


@pytest.mark.parametrize("quantized", [True, False])
def test_a_type_nothing_reads_is_refused_by_name(files, tmp_path, quantized):
    float_file, _ = files
    folder = float_file.parent / "hf"

    def store(name, w):
        if name == "blk.1.ffn_up.weight":
            return w.astype(np.float64), None  # F64: gguf's dequantizer has no such type
        return w, None

    bad = families.save_family_gguf("llama3", folder, tmp_path / "f64.gguf", store=store)
    with pytest.raises(ModelLoadError, match=r"blk\.1\.ffn_up\.weight is stored as F64"):
        _load(bad, quantized)


@pytest.mark.skipif(not block_weights.available(), reason="native ops did not build")
def test_the_native_layer_loop_multiplies_the_q5_products(files):
    """int4 on the Q5 file: decode_layers.cpp takes the Q5_K / Q5_1 kinds, and its one-call decode gives the tokens
    of the per-layer Python loop over the same products."""
    from kernel.engine.cpu.engine import TorchEngine
    from kernel.engine.cpu.native import ProductKind
    from tests.engine.helpers import generate

    _, path = files
    engine = TorchEngine.from_path(str(path), "bfloat16", weights="int4", kv_budget_tokens=256, max_batch=2)
    model = engine.model
    assert model._native_stack is not None
    assert ProductKind.Q5_K in set(model._native_stack[1])
    prompt = engine.tokenizer.encode(" ".join(CORPUS[:2]))[:24]
    one_call = generate(engine, {"a": prompt}, max_tokens=8, ignore_eos=True)["a"].tokens
    model._native_stack = None
    loop = generate(engine, {"b": prompt}, max_tokens=8, ignore_eos=True)["b"].tokens
    assert one_call == loop and len(one_call) == 8
