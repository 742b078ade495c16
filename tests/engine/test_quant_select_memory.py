"""--weights auto within the memory plan: on a quantized GGUF it never builds an fp32 copy of the model (its reference
is the file's own blocks), holds one model at a time within what memory_plan planned, and a model whose plan does not
fit is refused before anything is built, by the engine and by aiosd (non-zero exit, one clear line).

Random-weight GGUFs of the tiny llama shape (bench/make_gguf.py). What is built is recorded by wrapping the model and
the float product (LlamaModel, Linear), not inferred from resident memory.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bench.make_gguf import SHAPES, WeightType, write_gguf
from kernel.engine.cpu import engine as engine_module
from kernel.engine.cpu import memory_plan, quant_select, quant_weights
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.cpu.linear import Linear
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.loading.checkpoint import load_checkpoint
from kernel.engine.loading.model_config import ModelLoadError

pytestmark = pytest.mark.skipif(not quant_weights.block_products(), reason="the native block kernels did not build")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auto-memory")
    paths = {}
    for weight_type in (WeightType.Q4_0, WeightType.Q8_0):
        paths[weight_type] = folder / f"tiny-{weight_type.value}.gguf"
        write_gguf(paths[weight_type], SHAPES["tiny"], weight_type, seed=5)
    return paths


class Built:
    """Every LlamaModel and float Linear built while installed, and the most model weight bytes alive at once."""

    def __init__(self, monkeypatch):
        self.modes: list[str] = []
        self.float_dtypes: list[torch.dtype] = []
        self.peak = 0
        alive: list[weakref.ref] = []
        record = self

        class RecordedModel(LlamaModel):
            def __init__(self, cfg, weights, dtype, mode=None, native=True):
                super().__init__(cfg, weights, dtype, mode, native)
                record.modes.append(self.mode)
                gc.collect()  # a model dropped by its holder is gone before it is counted
                alive.append(weakref.ref(self))
                held = sum(model.weight_nbytes() for model in (ref() for ref in alive) if model is not None)
                record.peak = max(record.peak, held)

        class RecordedLinear(Linear):
            def __init__(self, weight):
                super().__init__(weight)
                record.float_dtypes.append(weight.dtype)

        monkeypatch.setattr(quant_select, "LlamaModel", RecordedModel)
        monkeypatch.setattr(engine_module, "LlamaModel", RecordedModel)
        monkeypatch.setattr(quant_weights, "Linear", RecordedLinear)


class Injected:
    """Speeds per mode in place of the clock."""

    def __init__(self, speeds: dict[str, float]):
        self.speeds = speeds

    def __call__(self, model, token_ids) -> float:
        return self.speeds[model.mode]


def _calibration(checkpoint) -> list[int]:
    return checkpoint.tokenizer.encode(quant_select.CALIBRATION_TEXT)[:96]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_auto_on_a_q4_0_file_is_its_stored_blocks_and_builds_nothing_in_fp32(files, monkeypatch, tmp_path, dtype):
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path))
    built = Built(monkeypatch)
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    engine = TorchEngine.from_path(str(files[WeightType.Q4_0]), name, weights="auto", kv_budget_tokens=256, max_batch=2)
    plan = memory_plan.auto_plan(engine.model.cfg, load_checkpoint(files[WeightType.Q4_0], dtype, True).weights, dtype)
    assert plan.stored == "int4" and plan.candidates == ("int4",)
    assert {mode for mode, _ in plan.skipped} == {"int8", "bf16"}  # wider than 1.3x the file: never built
    assert engine.weights == "int4" and [(c.mode, c.ppl_ratio) for c in engine.weight_choice] == [("int4", 1.0)]
    assert built.modes == ["int4"]  # one model, the engine's own: nothing measured, no reference
    assert torch.float32 not in built.float_dtypes
    assert not any(isinstance(p, Linear) for layer in engine.model.layers for p in (layer.qkv, layer.o, layer.down))


def test_auto_on_a_q8_0_file_compares_int4_with_the_stored_blocks_one_model_at_a_time(files, monkeypatch):
    checkpoint = load_checkpoint(files[WeightType.Q8_0], torch.float32, quantized=True)
    cfg, weights = checkpoint.config, checkpoint.weights
    plan = memory_plan.auto_plan(cfg, weights, torch.float32)
    assert plan.stored == "int8" and plan.candidates == ("int4", "int8")
    assert dict(plan.skipped).keys() == {"bf16"}
    for fastest in ("int4", "int8"):
        built = Built(monkeypatch)
        measure = Injected({"int4": 90.0 if fastest == "int4" else 10.0, "int8": 50.0})
        mode, candidates, model = quant_select.choose_mode(cfg, weights, torch.float32, _calibration(checkpoint),
                                                           measure=measure)  # fmt: skip
        assert built.modes == ["int8", "int4"]  # the stored reference first, then the requantized candidate
        assert "fp32" not in built.modes and torch.float32 not in built.float_dtypes
        assert built.peak <= plan.limit  # never more weights at once than the plan counted
        by_mode = {c.mode: c for c in candidates}
        assert [c.mode for c in candidates] == ["int4", "int8"] and by_mode["int8"].ppl_ratio == 1.0
        assert by_mode["int4"].ppl_ratio != 1.0  # measured against the stored model, not assumed
        assert mode == quant_select.pick(candidates)[0]
        if mode == "int4":
            assert model is not None and model.mode == "int4"  # the last one built is handed over
        else:
            assert model is None  # dropped to build int4 within the plan: the engine rebuilds it


def test_a_plan_that_does_not_fit_is_refused_before_anything_is_built(files, monkeypatch):
    path = files[WeightType.Q8_0]
    checkpoint = load_checkpoint(path, torch.float32, quantized=True)
    options = dict(kv_budget_tokens=256, max_batch=2, prefill_chunk=64)
    plan = memory_plan.estimate(checkpoint.config, checkpoint.weights, "auto", torch.float32, 256, 2, 64)
    fp32 = memory_plan.estimate(checkpoint.config, checkpoint.weights, "fp32", torch.float32, 256, 2, 64)
    assert plan.weights < fp32.weights / 2  # no fp32 reference counted: the largest model is the stored Q8_0's
    built = Built(monkeypatch)
    with pytest.raises(ModelLoadError) as refused:
        TorchEngine(checkpoint, "float32", weights="auto", memory_available=plan.total - 1, **options)
    assert built.modes == [] and built.float_dtypes == []  # refused from the plan alone
    message = str(refused.value)
    assert "does not fit" in message and f"{plan.total / memory_plan.GIB:.2f} GiB" in message
    assert "--weights auto builds int4, int8" in message

    monkeypatch.setenv("AIOS_MEMORY_LIMIT", f"{plan.total // 1024 - 1}K")  # the operator's cap, read the same way
    with pytest.raises(ModelLoadError, match=r"is available \(AIOS_MEMORY_LIMIT\)"):
        TorchEngine(checkpoint, "float32", weights="auto", **options)
    assert built.modes == []
    monkeypatch.delenv("AIOS_MEMORY_LIMIT")

    engine = TorchEngine(checkpoint, "float32", weights="auto", memory_available=plan.total, **options)
    assert built.peak <= plan.weights  # what it measured and what it runs, within the plan
    assert (
        engine.model.weight_nbytes() + engine.kv.data.numel() * engine.kv.data.element_size() <= plan.weights + plan.kv
    )


def test_a_float_checkpoint_still_counts_its_fp32_reference(tiny_folder):
    checkpoint = load_checkpoint(tiny_folder, torch.float32)
    plan = memory_plan.auto_plan(checkpoint.config, checkpoint.weights, torch.float32)
    assert plan.stored is None and plan.reference == "fp32" and plan.candidates == quant_select.AUTO_ORDER
    assert plan.limit == plan.size("fp32")  # the largest model auto builds
    estimate = memory_plan.estimate(checkpoint.config, checkpoint.weights, "auto", torch.float32, 256, 2, 64)
    assert "fp32 reference" in estimate.detail and estimate.weights == plan.limit


@given(st.integers(0, 1 << 40), st.sampled_from(["", "K", "M", "G", "k", "MiB", "gb"]))
def test_the_operator_limit_reads_sizes(n, suffix):
    unit = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[suffix[:1].upper()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIOS_MEMORY_LIMIT", f"{n}{suffix}")
        available, source = memory_plan.available_memory()
    assert source == "AIOS_MEMORY_LIMIT" or available < n * unit  # the lowest of what is known
    assert available <= n * unit


@pytest.mark.parametrize("text", ["lots", "-5G", "1.5G", "12T", "G"])
def test_a_limit_that_is_not_a_size_is_refused(text, monkeypatch):
    monkeypatch.setenv("AIOS_MEMORY_LIMIT", text)
    with pytest.raises(ModelLoadError, match="AIOS_MEMORY_LIMIT"):
        memory_plan.available_memory()


def test_aiosd_exits_with_the_refusal(files, tmp_path):
    """aiosd with --weights auto and a memory limit below the plan: one clear line, a non-zero exit, no traceback."""
    start = "import sys; from kernel.daemon.main import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            start,
            "--model",
            str(files[WeightType.Q4_0]),
            "--weights",
            "auto",
            "--address",
            f"ipc://{tmp_path}/k.sock",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "AIOS_MEMORY_LIMIT": "4M", "AIOS_CACHE_DIR": str(tmp_path)},
    )
    assert run.returncode != 0
    assert "does not fit" in run.stderr and "AIOS_MEMORY_LIMIT" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
