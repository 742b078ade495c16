"""The engine's memory path: weights read from the GGUF file's bytes compute what the in-memory codes and the
dequantized reference compute, and a model that does not fit is refused, before it allocates, with what it needs.

Random-weight GGUFs of the tiny llama shape (bench/make_gguf.py's writer: gguf's own quantizers, the bundled
tokenizer, rotary rows permuted as llama.cpp stores them). The resident-memory bound itself is measured by
bench/engine_memory.py, not here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.make_gguf import SHAPES, WeightType, write_gguf
from kernel.engine.cpu import memory_plan
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.loading.checkpoint import load_checkpoint
from kernel.engine.loading.gguf_blocks import GGUFBlocks
from kernel.engine.loading.model_config import ModelLoadError

PROMPT = [1, 17, 300, 4096, 9, 9, 12000, 5, 42, 777, 3, 31000]
MODES = {WeightType.Q4_0: "int4", WeightType.Q8_0: "int8"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    paths = {}
    for weight_type in MODES:
        paths[weight_type] = folder / f"tiny-{weight_type.value}.gguf"
        write_gguf(paths[weight_type], SHAPES["tiny"], weight_type, seed=3)
    return paths


def _logits(model: LlamaModel, ids: list[int]) -> torch.Tensor:
    """float32 logits of every prompt row, one prefill."""
    cfg = model.cfg
    kv = KVCache(cfg.n_layers, 32, cfg.n_kv_heads, cfg.head_dim, model.dtype)
    batch, _ = build_step_batch([ScheduledChunk(ids, 0, [0, 1], True)], 16)
    batch = dataclasses.replace(batch, logit_rows=torch.arange(len(ids)), narrow_rows=len(ids))
    with torch.inference_mode():
        return model.forward(batch, kv)


def _in_memory(weights: dict) -> dict:
    """The loader's former form: every GGUF matrix decoded to its codes in memory up front."""
    return {name: (w.group_quantized() if isinstance(w, GGUFBlocks) else w) for name, w in weights.items()}


@pytest.mark.parametrize("weight_type", list(MODES))
def test_file_blocks_give_the_in_memory_codes_logits_and_stay_near_the_float_reference(files, weight_type):
    path, mode = files[weight_type], MODES[weight_type]
    mapped = load_checkpoint(path, torch.float32, quantized=True)
    assert all(isinstance(mapped.weights[n], GGUFBlocks) for n in ("embed", "layers.0.q", "layers.1.down"))
    cfg = mapped.config
    from_file = _logits(LlamaModel(cfg, mapped.weights, torch.float32, mode), PROMPT)
    from_memory = _logits(LlamaModel(cfg, _in_memory(mapped.weights), torch.float32, mode), PROMPT)
    assert torch.equal(from_file, from_memory)  # the same products, whichever way the codes arrived

    floats = load_checkpoint(path, torch.float32)
    reference = _logits(LlamaModel(cfg, floats.weights, torch.float32, "fp32"), PROMPT)
    # the file's own weights multiplied with int8 activations: close to the dequantized weights in fp32
    assert float((from_file - reference).norm() / reference.norm()) < 0.05
    # a float mode reads the same file bytes through gguf's dequantizer: identical to the float load
    assert torch.equal(_logits(LlamaModel(cfg, mapped.weights, torch.float32, "fp32"), PROMPT), reference)


def test_a_model_that_does_not_fit_is_refused_with_what_it_needs(files):
    path = files[WeightType.Q4_0]
    checkpoint = load_checkpoint(path, torch.float32, quantized=True)
    options = dict(kv_budget_tokens=512, max_batch=2, prefill_chunk=64)
    plan = memory_plan.estimate(checkpoint.config, checkpoint.weights, "int4", torch.float32, 512, 2, 64)
    with pytest.raises(ModelLoadError) as refused:
        TorchEngine(checkpoint, "float32", weights="int4", memory_available=plan.total - 1, **options)
    message = str(refused.value)
    assert "does not fit" in message and f"{plan.total / memory_plan.GIB:.2f} GiB" in message
    assert f"{(plan.total - 1) / memory_plan.GIB:.2f} GiB is available (given)" in message

    engine = TorchEngine(checkpoint, "float32", weights="int4", memory_available=plan.total, **options)
    # the estimate bounds what the engine holds: its products and tables, and the KV cache
    held = engine.model.weight_nbytes() + engine.kv.data.numel() * engine.kv.data.element_size()
    assert held <= plan.weights + plan.kv
    assert engine.memory.kv == engine.kv.data.numel() * engine.kv.data.element_size()


def test_the_kv_budget_and_the_mode_change_the_estimate(files):
    checkpoint = load_checkpoint(files[WeightType.Q8_0], torch.float32, quantized=True)
    cfg, w = checkpoint.config, checkpoint.weights
    small = memory_plan.estimate(cfg, w, "int8", torch.float32, 256, 2, 64)
    large = memory_plan.estimate(cfg, w, "int8", torch.float32, 4096, 2, 64)
    assert large.kv == 16 * small.kv
    fp32 = memory_plan.estimate(cfg, w, "fp32", torch.float32, 256, 2, 64)
    assert fp32.weights > 2 * small.weights  # 4 bytes per weight against Q8_0's 34 per 32 (the table stays Q8_0)
    auto = memory_plan.estimate(cfg, w, "auto", torch.float32, 256, 2, 64)
    assert auto.weights < fp32.weights  # auto's reference is the file's own blocks: no fp32 copy
    # a bigger KV budget than the machine has is refused by the engine too
    with pytest.raises(ModelLoadError, match="KV cache"):
        TorchEngine(checkpoint, "float32", weights="int8", kv_budget_tokens=4096, memory_available=small.total)


def test_available_memory_is_the_lower_of_the_machine_and_the_cgroup(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    8000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert memory_plan.available_memory(meminfo, cgroup) == (8000000 * 1024, "MemAvailable")
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("1000\n")
    assert memory_plan.available_memory(meminfo, cgroup)[0] == 8000000 * 1024  # no limit
    (cgroup / "memory.max").write_text(f"{2 << 30}\n")
    (cgroup / "memory.current").write_text(f"{1 << 30}\n")
    assert memory_plan.available_memory(meminfo, cgroup) == (1 << 30, f"cgroup {cgroup / 'memory.max'}")
    assert memory_plan.available_memory(tmp_path / "absent", tmp_path / "none") == (None, "unknown")


@pytest.mark.parametrize("weight_type", list(MODES))
def test_a_row_cut_of_file_blocks_is_those_rows_of_the_matrix(files, weight_type):
    """phi3's fused qkv / gate_up become their parts by rows: a cut is the same bytes, so the same values."""
    up = load_checkpoint(files[weight_type], torch.float32, quantized=True).weights["layers.0.up"]
    whole = up.dequantize()
    rows = up.shape[0]
    for start, stop in ((0, rows // 3), (rows // 3, rows), (5, 6)):
        part = up[start:stop]
        assert part.shape == (stop - start, up.shape[1])
        assert torch.equal(part.dequantize(), whole[start:stop])
    with pytest.raises(ValueError):
        up[4:4]
    q = load_checkpoint(files[weight_type], torch.float32, quantized=True).weights["layers.0.q"]
    with pytest.raises(ValueError):  # llama's q rows are reordered: never cut
        q[0:8]
