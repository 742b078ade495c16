"""GGUF file → LlamaConfig, canonical weights and tokenizer metadata.

Weights come dequantized to the chosen dtype (gguf's reference dequantizer, what Hugging Face transformers reads too,
so the fp32 path can match it token for token), or with quantized=True the Q4_0, Q4_1 and Q8_0 matrices as
GroupQuantized — their stored codes and scales, never expanded to floats — for the int4/int8 kernels. Other types
(F16, K-quants, ...) are always dequantized. Either way q and k rows are unpermuted (unpermute_rotary_rows).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from kernel.engine.loading.model_config import LlamaConfig, ModelLoadError, check_weights
from kernel.engine.loading.quant_tensor import GroupQuantized, from_q4_0, from_q4_1, from_q8_0

_LAYER_NAMES = {"attn_norm": "attn_norm", "attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_output": "o",
                "ffn_norm": "mlp_norm", "ffn_gate": "gate", "ffn_up": "up", "ffn_down": "down"}
_GLOBAL_NAMES = {"token_embd": "embed", "output_norm": "norm", "output": "lm_head"}
_GROUP_DECODERS = {GGMLQuantizationType.Q4_0: from_q4_0, GGMLQuantizationType.Q4_1: from_q4_1,
                   GGMLQuantizationType.Q8_0: from_q8_0}


def read_gguf(path: Path) -> GGUFReader:
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, struct.error, IndexError... on damaged files
        raise ModelLoadError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def gguf_metadata(reader: GGUFReader) -> dict:
    """Every metadata field as a plain Python value (strings, numbers, lists)."""
    return {name: field.contents() for name, field in reader.fields.items()}


def config_from_metadata(meta: dict, path: Path) -> LlamaConfig:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ModelLoadError(f"{path}: unsupported architecture {arch!r} (only 'llama' is supported)")
    try:
        n_heads = int(meta["llama.attention.head_count"])
        hidden = int(meta["llama.embedding_length"])
        cfg = LlamaConfig(
            vocab_size=int(meta.get("llama.vocab_size") or len(meta["tokenizer.ggml.tokens"])),
            hidden_size=hidden,
            n_layers=int(meta["llama.block_count"]),
            n_heads=n_heads,
            n_kv_heads=int(meta.get("llama.attention.head_count_kv", n_heads)),
            head_dim=int(meta.get("llama.attention.key_length", hidden // n_heads)),
            ffn_size=int(meta["llama.feed_forward_length"]),
            rms_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
            rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
            max_context=int(meta["llama.context_length"]),
            tie_embeddings=False,   # decided below from the tensors present
        )
    except KeyError as exc:
        raise ModelLoadError(f"{path}: GGUF metadata lacks {exc.args[0]!r}") from exc
    if meta.get("llama.rope.scaling.type", "none") not in ("none", "linear") or "llama.rope.scaling.factor" in meta:
        raise ModelLoadError(f"{path}: rope scaling is not supported")
    return cfg


def unpermute_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (its converter interleaves each head's two rotary halves) so rotate_half applies.

    w: [n_heads * head_dim, hidden]; llama.cpp stored rows as (head, pair i, half) where HF has (head, half, pair i).
    """
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _dequantized(tensor) -> np.ndarray:
    qtype = GGMLQuantizationType(tensor.tensor_type)
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        data = np.array(tensor.data, dtype=np.float32)   # a copy: the reader's memmap is read-only
    else:
        data = dequantize(tensor.data, qtype)
    shape = tuple(int(d) for d in reversed(tensor.shape))   # GGML lists dimensions innermost first
    return data.reshape(shape)


def load_gguf_weights(reader: GGUFReader, cfg: LlamaConfig, dtype: torch.dtype, path: Path, quantized: bool = False
                      ) -> tuple[LlamaConfig, dict[str, torch.Tensor | GroupQuantized]]:
    weights: dict[str, torch.Tensor | GroupQuantized] = {}
    for tensor in reader.tensors:
        name = _canonical_name(tensor.name)
        if name is None:
            continue
        qtype = GGMLQuantizationType(tensor.tensor_type)
        heads = cfg.n_heads if name.endswith(".q") else cfg.n_kv_heads if name.endswith(".k") else None
        if quantized and qtype in _GROUP_DECODERS and len(tensor.shape) == 2:
            weight = _GROUP_DECODERS[qtype](tensor.data)
            if heads is not None:
                weight = weight.permute_rows(lambda rows, h=heads: unpermute_rotary_rows(rows, h))
            weights[name] = weight
            continue
        try:
            data = _dequantized(tensor)
        except (NotImplementedError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot dequantize {tensor.name} ({exc})") from exc
        if heads is not None:
            data = unpermute_rotary_rows(data, heads)
        weights[name] = torch.from_numpy(np.ascontiguousarray(data)).to(dtype)
    cfg = LlamaConfig(**{**cfg.__dict__, "tie_embeddings": "lm_head" not in weights})
    cfg.validate()
    check_weights(cfg, weights, str(path))
    return cfg, weights


def _canonical_name(gguf_name: str) -> str | None:
    stem = gguf_name.removesuffix(".weight")
    if stem in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[stem]
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    return None   # e.g. rope_freqs: derived from metadata instead
