"""Weights modes through the engine: SmolLM2's GGUF codes loaded as stored, int4 perplexity near fp32's, the mode named
in the KV layout (a snapshot never crosses modes), bad modes refused."""

from __future__ import annotations

import pytest
import torch

from kernel.engine.core.interface import EngineError, EngineRequest, SamplingParams
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.cpu.quant_select import AUTO_ORDER, CALIBRATION_TEXT, MAX_PPL_RATIO, perplexity
from kernel.engine.factory import load_engine
from kernel.engine.loading.checkpoint import load_checkpoint
from kernel.engine.loading.gguf_blocks import GGUFBlocks
from kernel.engine.loading.quant_tensor import GroupQuantized
from tests.engine.helpers import drain, generate


@pytest.fixture(scope="module")
def quantized_checkpoint():
    return load_checkpoint(None, torch.float32, quantized=True)


def test_gguf_codes_load_as_stored_and_dequantize_to_the_float_load(quantized_checkpoint, smollm_checkpoint):
    q, floats = quantized_checkpoint.weights, smollm_checkpoint.weights
    assert (q["layers.0.q"].bits, q["layers.0.q"].group) == (4, 32)  # Q4_1
    assert (q["embed"].bits, q["embed"].group) == (8, 32)  # Q8_0
    # q and k: rows unpermuted with their scales, exactly as the float path unpermutes the dequantized matrix; the
    # stored codes (group_quantized) and a row lookup decode to the same values
    for name in ("layers.0.q", "layers.0.k", "layers.0.v", "layers.29.k", "layers.3.down", "embed"):
        assert isinstance(q[name], GGUFBlocks)
        assert torch.equal(q[name].dequantize(), floats[name]), name
        codes = q[name].group_quantized()
        assert isinstance(codes, GroupQuantized) and torch.equal(codes.dequantize(), floats[name]), name
        rows = torch.tensor([0, 5, 63, 64, q[name].shape[0] - 1, 5])
        assert torch.equal(q[name].dequantize_rows(rows), floats[name][rows]), name
    assert torch.equal(q["layers.0.attn_norm"], floats["layers.0.attn_norm"])


def test_int4_perplexity_is_within_three_percent_of_fp32(quantized_checkpoint, smollm_checkpoint):
    cfg = smollm_checkpoint.config
    ids = smollm_checkpoint.tokenizer.encode(CALIBRATION_TEXT)
    fp32 = perplexity(LlamaModel(cfg, smollm_checkpoint.weights, torch.float32), ids)
    int4 = perplexity(LlamaModel(cfg, quantized_checkpoint.weights, torch.bfloat16, "int4"), ids)
    assert 0.97 <= int4 / fp32 <= 1.03, (int4, fp32)


def test_weights_mode_is_named_in_the_layout(tiny_folder):
    fp32 = TorchEngine.from_path(str(tiny_folder), "float32", kv_budget_tokens=256, max_batch=2)
    int4 = TorchEngine.from_path(str(tiny_folder), "float32", weights="int4", kv_budget_tokens=256, max_batch=2)
    int8 = load_engine(model=str(tiny_folder), dtype="float32", weights="int8", kv_budget_tokens=256, max_batch=2)
    assert (fp32.weights, int4.weights, int8.weights) == ("fp32", "int4", "int8")
    assert int4.layout().model_id == fp32.layout().model_id + "+weights=int4"
    assert len({fp32.layout(), int4.layout(), int8.layout()}) == 3
    # the dtype's own float keeps the checkpoint's id: weights="fp32" with float32 is the old engine
    assert (
        TorchEngine.from_path(str(tiny_folder), "float32", weights="fp32", kv_budget_tokens=256, max_batch=2).layout()
        == fp32.layout()
    )


def test_a_snapshot_taken_under_int4_does_not_load_under_another_mode(tiny_folder):
    int4 = TorchEngine.from_path(str(tiny_folder), "float32", weights="int4", kv_budget_tokens=256, max_batch=2)
    fp32 = TorchEngine.from_path(str(tiny_folder), "float32", kv_budget_tokens=256, max_batch=2)
    prompt = int4.tokenize("An operating system schedules processes")
    int4.add(EngineRequest("s", prompt, SamplingParams(max_tokens=8)))
    int4.step()
    buffer = memoryview(bytearray(int4.kv_nbytes("s")))
    meta = int4.save_kv("s", buffer)
    resumed = EngineRequest("s", list(meta.token_ids), SamplingParams(max_tokens=2))
    with pytest.raises(EngineError, match="layout"):
        fp32.load_kv(resumed, meta, buffer)
    int4.abort("s")
    int4.load_kv(resumed, meta, buffer)  # the same mode takes it back and continues from it
    assert len(drain(int4)["s"].tokens) >= 1


def test_int_modes_generate_from_float_weights(tiny_folder):
    for mode in ("int4", "int8", "bf16"):
        engine = TorchEngine.from_path(str(tiny_folder), "float32", weights=mode, kv_budget_tokens=256, max_batch=2)
        out = generate(engine, {"a": engine.tokenize("Agents call tools")}, max_tokens=6, ignore_eos=True)
        assert len(out["a"].tokens) == 6, mode


def test_auto_takes_a_mode_whose_measured_perplexity_holds(tiny_folder):
    """Which passing mode is fastest is measured (tests/engine/test_auto_weights.py injects the speeds); here: every
    candidate's ratio is measured, and the mode chosen holds the bar (or fp32, when none does) and names the layout."""
    engine = TorchEngine.from_path(str(tiny_folder), "float32", weights="auto", kv_budget_tokens=256, max_batch=2)
    assert list(engine.weight_ratios) == list(AUTO_ORDER)
    if engine.weights != "fp32":
        assert engine.weight_ratios[engine.weights] <= MAX_PPL_RATIO
        assert engine.layout().model_id.endswith(f"+weights={engine.weights}")
    else:
        assert all(ratio > MAX_PPL_RATIO for ratio in engine.weight_ratios.values())


@pytest.mark.parametrize("weights", ["int3", "q4_1", "", "FP32"])
def test_an_unknown_weights_mode_is_an_engine_error(tiny_folder, weights):
    with pytest.raises(EngineError, match="weights"):
        TorchEngine.from_path(str(tiny_folder), "float32", weights=weights)
    with pytest.raises(EngineError, match="weights"):
        load_engine(model=str(tiny_folder), weights=weights)
