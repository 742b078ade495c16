"""Each family ModelConfig describes, built tiny by transformers and loaded by us from safetensors and from GGUF: fp32
greedy tokens identical to transformers and max |Δlogit| bounded, with prompts past Llama 3's rope-scaling wavelength
bands and past the sliding window; every refusal path names what it refuses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bench.logit_parity import compare
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.cpu.layer_ops import TorchOps
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.loading.checkpoint import load_checkpoint
from kernel.engine.loading.model_config import Family, ModelLoadError
from tests.engine import families
from tests.engine.helpers import greedy
from tests.engine.tiny_llama import CORPUS

# float32 rounding in another summation order over 2-3 tiny layers is ~1e-6 on logits of magnitude ~1-10; a wrong
# rotary frequency, window or norm moves them by 1e-2 or more (measured: see the commit messages)
MAX_DELTA = 1e-3
NEW_TOKENS = 12
FORMATS = ("safetensors", "gguf")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """family → (HF folder, GGUF path), built on first use."""
    cache: dict[str, tuple] = {}

    def get(family: str):
        if family not in cache:
            root = tmp_path_factory.mktemp(family)
            folder = families.save_family(family, root / "hf")
            cache[family] = (folder, families.save_family_gguf(family, folder, root / f"{family}.gguf"))
        return cache[family]

    return get


def _reference(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _prompt(checkpoint, n_tokens: int = 100) -> list[int]:
    ids = checkpoint.tokenizer.encode(" ".join(CORPUS[:8]))
    assert len(ids) >= n_tokens
    return ids[:n_tokens]


def _path(built, family, fmt):
    folder, gguf = built(family)
    return folder if fmt == "safetensors" else gguf


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", families.FAMILIES)
def test_logits_match_transformers(built, family, fmt):
    checkpoint = load_checkpoint(_path(built, family, fmt), torch.float32)
    model = LlamaModel(checkpoint.config, checkpoint.weights, torch.float32)
    tokens = _prompt(checkpoint)
    # chunks of 16 then decode steps: windows and rotary over the paged cache, prefill and decode alike
    result = compare(model, _reference(built(family)[0]), tokens, len(tokens) - 8, chunk=16)
    assert result["prompt_end"] <= MAX_DELTA and result["decode"] <= MAX_DELTA, result
    assert result["argmax_agree"], result


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", families.FAMILIES)
def test_greedy_matches_transformers(built, family, fmt):
    engine = TorchEngine.from_path(
        str(_path(built, family, fmt)), dtype="float32", kv_budget_tokens=512, max_batch=2, prefill_chunk=16
    )
    prompt = _prompt(engine, 70)
    with torch.inference_mode():
        out = _reference(built(family)[0]).generate(
            torch.tensor([prompt]),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    assert greedy(engine, prompt, NEW_TOKENS) == out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_phi3_is_read_as_phi3(built, fmt):
    """Phi-3 from either file: its fused qkv and gate_up split by rows at load (the parity tests above run it), every
    layer sliding; from GGUF the fused matrices stay the file's blocks until their product is built."""
    checkpoint = load_checkpoint(_path(built, "phi3", fmt), torch.float32, quantized=True)
    config = checkpoint.config
    assert config.family is Family.PHI3 and all(config.window(i) == families.WINDOW for i in range(config.n_layers))
    assert {"layers.0.q", "layers.0.k", "layers.0.v", "layers.0.gate", "layers.0.up"} <= set(checkpoint.weights)
    assert "layers.0.qkv" not in checkpoint.weights and "layers.0.gate_up" not in checkpoint.weights


def test_phi3_gguf_longrope_is_refused_by_name(built, tmp_path):
    """Phi-3 128k / Phi-3.5 files carry longrope as rope_factors_long/short tensors: refused, naming them."""

    def factors(writer):
        writer.add_tensor("rope_factors_long.weight", np.full(8, 2.0, dtype=np.float32))
        writer.add_tensor("rope_factors_short.weight", np.ones(8, dtype=np.float32))

    path = families.save_family_gguf("phi3", built("phi3")[0], tmp_path / "long.gguf", extra=factors)
    with pytest.raises(ModelLoadError, match="longrope.*rope_factors_long"):
        load_checkpoint(path, torch.float32)


def test_phi3_split_is_by_rows():
    """The fused rows go where Phi-3 puts them: q, k, v in that order; gate before up."""
    from kernel.engine.loading.gguf_names import split_fused
    from kernel.engine.loading.model_config import ModelConfig
    from kernel.engine.loading.rope import Rope

    cfg = ModelConfig(50, 8, 1, 2, 1, 4, 6, 1e-5, Rope(1e4), 64, True, family=Family.PHI3)
    qkv, gate_up = torch.arange(16 * 8).view(16, 8), torch.arange(12 * 8).view(12, 8)
    parts = split_fused({"layers.0.qkv": qkv, "layers.0.gate_up": gate_up, "embed": qkv}, cfg, "x")
    assert torch.equal(parts["layers.0.q"], qkv[:8]) and torch.equal(parts["layers.0.k"], qkv[8:12])
    assert torch.equal(parts["layers.0.v"], qkv[12:]) and torch.equal(parts["embed"], qkv)
    assert torch.equal(parts["layers.0.gate"], gate_up[:6]) and torch.equal(parts["layers.0.up"], gate_up[6:])
    with pytest.raises(ModelLoadError, match="fused 'layers.0.qkv' has 15 rows"):
        split_fused({"layers.0.qkv": qkv[:15]}, cfg, "x")


def test_phi3_longrope_is_refused(built, tmp_path):
    scaling = {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}
    edited = _edit_config(built("phi3")[0], tmp_path / "long", rope_parameters={"rope_theta": 1e4, **scaling})
    with pytest.raises(ModelLoadError, match="rope scaling 'longrope'"):
        load_checkpoint(edited, torch.float32)


def test_llama3_gguf_without_its_rope_freqs_is_wrong(built, tmp_path):
    """The failure this fixes: the same Llama 3 weights with plain rotary frequencies (rope_freqs skipped, as the
    loader used to) drift from transformers past the scaling's wavelength band, so the test above can see it."""
    folder, _ = built("llama3")
    plain = families.save_family_gguf("llama3", folder, tmp_path / "plain.gguf", with_rope_freqs=False)
    checkpoint = load_checkpoint(plain, torch.float32)
    model = LlamaModel(checkpoint.config, checkpoint.weights, torch.float32)
    tokens = _prompt(checkpoint)
    result = compare(model, _reference(folder), tokens, len(tokens) - 8, chunk=16)
    assert result["prompt_end"] > 10 * MAX_DELTA, result


@pytest.mark.parametrize("family", ["mistral", "gemma3"])
def test_the_window_matters(built, family):
    """Without its sliding window the model drifts from transformers on these prompts: the window is exercised."""
    import dataclasses

    checkpoint = load_checkpoint(built(family)[0], torch.float32)
    unwindowed = dataclasses.replace(checkpoint.config, sliding_window=None)
    model = LlamaModel(unwindowed, checkpoint.weights, torch.float32)
    tokens = _prompt(checkpoint)
    result = compare(model, _reference(built(family)[0]), tokens, len(tokens) - 8, chunk=16)
    assert result["prompt_end"] > 10 * MAX_DELTA, result


def test_configs_carry_the_family_features(built):
    expect = {
        "llama3": Family.LLAMA,
        "mistral": Family.MISTRAL,
        "qwen2": Family.QWEN2,
        "qwen3": Family.QWEN3,
        "gemma3": Family.GEMMA3,
    }
    for family, kind in expect.items():
        folder, gguf = built(family)
        from_folder, from_gguf = (load_checkpoint(p, torch.float32).config for p in (folder, gguf))
        assert from_folder.family is kind
        assert from_gguf.family is (Family.LLAMA if kind is Family.MISTRAL else kind)
        for field in (
            "qkv_bias",
            "qk_norm",
            "post_norms",
            "activation",
            "sliding_window",
            "sliding_layers",
            "n_layers",
            "head_dim",
        ):
            assert getattr(from_folder, field) == getattr(from_gguf, field), (family, field)
    assert load_checkpoint(built("gemma3")[0], torch.float32).config.sliding_layers == (True, False, True)


def test_native_path_only_for_what_it_computes(built):
    """The native ops compute every family's layers (tests/engine/test_native_families.py holds them to the torch
    ops); a model needing what they lack (a head over 512 values) runs the torch ops."""
    import dataclasses

    from kernel.engine.cpu.native import load

    for family in ("llama3", "qwen2", "qwen3", "gemma3"):
        checkpoint = load_checkpoint(built(family)[0], torch.float32)
        assert checkpoint.config.native_gaps() == [], family
        model = LlamaModel(checkpoint.config, checkpoint.weights, torch.float32)
        assert isinstance(model.ops, TorchOps) == (load() is None), family
    wide = dataclasses.replace(checkpoint.config, head_dim=1024)
    assert wide.native_gaps() == ["head size over 512"]


# ---- refusals ---------------------------------------------------------------------------------------------------


def _edit_config(src, dst, **changes):
    folder = shutil.copytree(src, dst)
    raw = json.loads((folder / "config.json").read_text())
    raw.update(changes)
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


def test_refuses_unknown_architecture(built, tmp_path):
    folder, _ = built("qwen2")
    with pytest.raises(ModelLoadError, match="unsupported architecture 'falcon'"):
        load_checkpoint(_edit_config(folder, tmp_path / "falcon", model_type="falcon"), torch.float32)
    with pytest.raises(ModelLoadError, match="unsupported architecture 'Qwen2MoeForCausalLM'"):
        load_checkpoint(_edit_config(folder, tmp_path / "moe", architectures=["Qwen2MoeForCausalLM"]), torch.float32)
    gguf = families.save_family_gguf("qwen2", folder, tmp_path / "x.gguf")
    data = gguf.read_bytes().replace(b"qwen2", b"qwenX")  # the architecture and every key's prefix
    (tmp_path / "y.gguf").write_bytes(data)
    with pytest.raises(ModelLoadError, match="unsupported architecture 'qwenX'"):
        load_checkpoint(tmp_path / "y.gguf", torch.float32)


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "low_freq_factor": 1.0},
        {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8},
        {"rope_type": "dynamic", "factor": 2.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
            "beta_fast": 32,
        },
    ],
)
def test_refuses_unknown_rope_scaling(built, tmp_path, scaling):
    folder, _ = built("llama3")
    edited = _edit_config(folder, tmp_path / "rope", rope_parameters={"rope_theta": 10000.0, **scaling})
    with pytest.raises(ModelLoadError, match="rope"):
        load_checkpoint(edited, torch.float32)


def test_refuses_gguf_yarn_it_does_not_compute(built, tmp_path):
    """YaRN loads (test_logits_match_transformers, qwen2-yarn); a key that changes its math and is not read here is
    refused by name, and so is a scaling type we do not know."""
    from gguf import RopeScalingType

    def yarn(writer):
        writer.add_rope_scaling_type(RopeScalingType.YARN)
        writer.add_rope_scaling_factor(4.0)
        writer.add_rope_scaling_yarn_log_mul(0.1)

    path = families.save_family_gguf("qwen3", built("qwen3")[0], tmp_path / "yarn.gguf", extra=yarn)
    with pytest.raises(ModelLoadError, match="yarn_log_multiplier"):
        load_checkpoint(path, torch.float32)

    def longrope(writer):
        writer.add_rope_scaling_type(RopeScalingType.LONGROPE)

    path = families.save_family_gguf("qwen3", built("qwen3")[0], tmp_path / "long.gguf", extra=longrope)
    with pytest.raises(ModelLoadError, match="rope scaling 'longrope'"):
        load_checkpoint(path, torch.float32)


def test_yarn_config_from_both_files(built):
    """The YaRN rope read from config.json and from GGUF metadata is the same, and its attention factor is in the
    query scale (measured on qwen2-yarn: max |Δlogit| 1.2e-6 against transformers; 0.54 without the attention
    factor, 1.09 with plain frequencies)."""
    from kernel.engine.loading.rope import RopeKind

    folder, gguf = built("qwen2-yarn")
    a, b = (load_checkpoint(p, torch.float32).config for p in (folder, gguf))
    assert a.rope == b.rope and a.rope.kind is RopeKind.YARN
    assert (a.rope.factor, a.rope.original_context, a.rope.beta_fast, a.rope.beta_slow) == (8.0, 64, 16.0, 2.0)
    assert a.query_scale == b.query_scale
    assert a.query_scale == pytest.approx(16**-0.5 * (1 + 0.1 * np.log(8)) ** 2)


def test_refuses_math_changing_keys(built, tmp_path):
    folder, _ = built("gemma3")
    with pytest.raises(ModelLoadError, match="final_logit_softcapping"):
        load_checkpoint(_edit_config(folder, tmp_path / "cap", final_logit_softcapping=30.0), torch.float32)
    with pytest.raises(ModelLoadError, match="activation 'gelu'"):
        load_checkpoint(_edit_config(folder, tmp_path / "act", hidden_activation="gelu"), torch.float32)
    with pytest.raises(ModelLoadError, match="attention_bias"):
        load_checkpoint(_edit_config(built("llama3")[0], tmp_path / "bias", attention_bias=True), torch.float32)


def test_refuses_unknown_tensor(built, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(built("qwen3")[0], tmp_path / "extra")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(64)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="unknown tensor 'model.layers.0.self_attn.o_proj.bias'"):
        load_checkpoint(folder, torch.float32)
    # a qwen2 tensor in a llama GGUF: the llama map does not name q biases
    bias = lambda writer: writer.add_tensor("blk.0.attn_q.bias", np.zeros(64, dtype=np.float32))
    path = families.save_family_gguf("llama3", built("llama3")[0], tmp_path / "bias.gguf", extra=bias)
    with pytest.raises(ModelLoadError, match="unknown tensor 'blk.0.attn_q.bias'"):
        load_checkpoint(path, torch.float32)


def test_gguf_rope_freqs_become_the_rope(built):
    config = load_checkpoint(built("llama3")[1], torch.float32).config
    expected = families.llama3_rope_freqs(families.LLAMA3_ROPE, 16)
    assert np.allclose(config.rope.divisors, expected)


def test_snapshot_never_restores_into_another_family(built):
    """Two families of the same KV shape (2 layers, 2 KV heads of 16): the layout names the family, so a snapshot of
    one is refused by the other before any byte is read."""
    from kernel.engine.core.interface import EngineError, EngineRequest, SamplingParams

    engines = {
        family: TorchEngine.from_path(
            str(built(family)[0]), dtype="float32", kv_budget_tokens=256, max_batch=2, prefill_chunk=16
        )
        for family in ("qwen2", "qwen3")
    }
    source, target = engines["qwen2"], engines["qwen3"]
    assert "qwen2" in source.layout().model_id and source.layout().n_layers == target.layout().n_layers
    prompt = source.tokenize("Agents call tools")
    source.add(EngineRequest("a", prompt, SamplingParams(max_tokens=50, ignore_eos=True)))
    source.step()  # the prompt's K/V computed, the request still running
    buffer = bytearray(source.kv_nbytes("a"))
    meta = source.save_kv("a", memoryview(buffer))
    assert meta.nbytes > 0
    with pytest.raises(EngineError, match="layout"):
        target.load_kv(EngineRequest("a", prompt, SamplingParams(max_tokens=2)), meta, memoryview(buffer))


def test_aiosd_exits_with_the_refusal(built, tmp_path):
    """aiosd on an unsupported model: one clear line naming what is refused, a non-zero exit, no traceback."""
    import subprocess
    import sys

    folder = _edit_config(built("qwen2")[0], tmp_path / "falcon", model_type="falcon")
    start = "import sys; from kernel.daemon.main import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", start, "--model", str(folder), "--address", f"ipc://{tmp_path}/k.sock"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert "unsupported architecture 'falcon'" in run.stderr and "Traceback" not in run.stderr, run.stderr
