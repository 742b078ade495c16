"""Model files: the tiny llama loads identically from its safetensors folder and from a GGUF; bad files fail clearly."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from kernel.engine.core.interface import EngineError
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.factory import load_engine
from kernel.engine.loading.checkpoint import load_checkpoint
from kernel.engine.loading.model_config import ModelLoadError
from tests.engine.helpers import generate, greedy


def test_gguf_and_folder_give_the_same_model(tiny_folder, tiny_gguf):
    folder = load_checkpoint(tiny_folder, torch.float32)
    gguf = load_checkpoint(tiny_gguf, torch.float32)
    assert folder.config == dataclasses.replace(gguf.config, rms_eps=folder.config.rms_eps)  # GGUF stores float32
    assert gguf.config.rms_eps == pytest.approx(folder.config.rms_eps)
    for name, tensor in folder.weights.items():
        assert torch.equal(tensor, gguf.weights[name]), name  # includes undoing the q/k row permutation
    text = "héllo agents 🙂 <|im_start|>user"
    assert folder.tokenizer.encode(text) == gguf.tokenizer.encode(text)
    messages = [{"role": "user", "content": "hi"}]
    assert folder.tokenizer.apply_chat_template(messages) == gguf.tokenizer.apply_chat_template(messages)


def test_tiny_model_matches_transformers(tiny_folder):
    from transformers import LlamaForCausalLM

    engine = TorchEngine.from_path(
        str(tiny_folder), dtype="float32", kv_budget_tokens=512, max_batch=4, prefill_chunk=16
    )
    reference = LlamaForCausalLM.from_pretrained(tiny_folder, dtype=torch.float32).eval()
    prompt = engine.tokenize("The quick brown fox jumps over the lazy dog. " * 3)
    with torch.inference_mode():
        out = reference.generate(
            torch.tensor([prompt]),
            max_new_tokens=20,
            min_new_tokens=20,
            do_sample=False,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    assert greedy(engine, prompt, 20) == out[0, len(prompt) :].tolist()


def test_bfloat16_engine_runs(tiny_gguf):
    engine = load_engine(model=str(tiny_gguf), dtype="bfloat16", kv_budget_tokens=256, max_batch=2)
    assert engine.layout().dtype == "bfloat16"
    result = generate(engine, {"a": engine.tokenize("Agents call tools")}, max_tokens=5, ignore_eos=True)["a"]
    assert len(result.tokens) == 5


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_checkpoint(tmp_path / "nothing.gguf", torch.float32)


def test_corrupt_gguf(tmp_path, tiny_gguf):
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(tiny_gguf.read_bytes()[:3000])
    with pytest.raises(ModelLoadError, match="damaged.gguf"):
        load_checkpoint(damaged, torch.float32)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_checkpoint(garbage, torch.float32)


def test_folder_errors(tmp_path, tiny_folder):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_checkpoint(tmp_path, torch.float32)
    other = shutil.copytree(tiny_folder, tmp_path / "gpt2")
    (other / "config.json").write_text((other / "config.json").read_text().replace('"llama"', '"gpt2"'))
    with pytest.raises(ModelLoadError, match="unsupported architecture 'gpt2'"):
        load_checkpoint(other, torch.float32)
    broken = shutil.copytree(tiny_folder, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="corrupt safetensors"):
        load_checkpoint(broken, torch.float32)


def test_factory_rejects_unknown_kind_and_dtype(tiny_gguf):
    with pytest.raises(EngineError, match="unknown engine kind"):
        load_engine(kind="tpu")
    with pytest.raises(EngineError, match="dtype"):
        load_engine(model=str(tiny_gguf), dtype="int3")
