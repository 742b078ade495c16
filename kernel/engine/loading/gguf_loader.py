"""GGUF file → ModelConfig, canonical weights and tokenizer metadata.

Architectures (general.architecture): llama (Llama and Mistral, which llama.cpp writes as llama), qwen2, qwen3, gemma3.
Each one's metadata keys and tensor names are mapped explicitly; anything that changes the computation and is not
mapped (an unknown tensor, a rope scaling other than linear, softcapping, experts, partial rotary) is refused with
ModelLoadError naming it. Llama 3.x files carry their rope scaling as the `rope_freqs` tensor, a divisor per rotary
frequency (llama.cpp's freq_factors): it becomes the config's rope (rope.py), never skipped.

Weights come dequantized to the chosen dtype (gguf's reference dequantizer, what Hugging Face transformers reads too,
so the fp32 path can match it token for token), or with quantized=True the Q4_0, Q4_1, Q4_K and Q8_0 matrices as
GroupQuantized — their stored codes and scales, never expanded to floats — for the int4/int8 kernels. Other types
(F16, Q5_0/Q5_1, Q5_K, Q6_K, ...) are always dequantized, once, and the weights mode quantizes them for its kernels
(quant_weights.py); bench/perplexity_peer.py measures what that costs against the file's own fp32 weights and
llama.cpp (Gemma 3 270M Q4_K_M: int8 +0.9% perplexity, int4 +26% where Q5_0/Q6_K become 4 bits). llama-arch q and k
rows are unpermuted (unpermute_rotary_rows): llama.cpp's
converter interleaves them for that architecture only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from kernel.engine.loading.gguf_config import config_from_metadata, gguf_metadata, read_gguf  # noqa: F401  (re-exported)
from kernel.engine.loading.gguf_names import canonical_name, unpermute_rotary_rows
from kernel.engine.loading.model_config import (
    Family,
    ModelConfig,
    ModelLoadError,
    check_weights,
)
from kernel.engine.loading.quant_tensor import (
    GroupQuantized,
    from_q4_0,
    from_q4_1,
    from_q4_k,
    from_q8_0,
)
from kernel.engine.loading.rope import Rope, RopeKind

_GROUP_DECODERS = {
    GGMLQuantizationType.Q4_0: from_q4_0,
    GGMLQuantizationType.Q4_1: from_q4_1,
    GGMLQuantizationType.Q4_K: from_q4_k,
    GGMLQuantizationType.Q8_0: from_q8_0,
}


def _dequantized(tensor) -> np.ndarray:
    qtype = GGMLQuantizationType(tensor.tensor_type)
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        data = np.array(tensor.data, dtype=np.float32)  # a copy: the reader's memmap is read-only
    else:
        data = dequantize(tensor.data, qtype)
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGML lists dimensions innermost first
    return data.reshape(shape)


def load_gguf_weights(
    reader: GGUFReader, cfg: ModelConfig, dtype: torch.dtype, path: Path, quantized: bool = False
) -> tuple[ModelConfig, dict[str, torch.Tensor | GroupQuantized]]:
    weights: dict[str, torch.Tensor | GroupQuantized] = {}
    permuted = cfg.family is Family.LLAMA
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            cfg = _with_rope_freqs(cfg, _dequantized(tensor), path)
            continue
        name = canonical_name(tensor.name, cfg.family)
        if name is None:
            raise ModelLoadError(f"{path}: unknown tensor {tensor.name!r} for architecture {cfg.family.value!r}")
        qtype = GGMLQuantizationType(tensor.tensor_type)
        heads = None
        if permuted and name.endswith((".q", ".k")):
            heads = cfg.n_heads if name.endswith(".q") else cfg.n_kv_heads
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
    cfg = dataclasses.replace(cfg, tie_embeddings="lm_head" not in weights)
    cfg.validate()
    check_weights(cfg, weights, str(path))
    return cfg, weights


def _with_rope_freqs(cfg: ModelConfig, divisors: np.ndarray, path: Path) -> ModelConfig:
    """Llama 3.x's scaling as llama.cpp applies it: each rotary frequency divided by its rope_freqs entry."""
    if cfg.rope.kind is not RopeKind.PLAIN:
        raise ModelLoadError(f"{path}: rope_freqs together with rope scaling {cfg.rope.kind.value!r}")
    if divisors.size != cfg.head_dim // 2:
        raise ModelLoadError(f"{path}: rope_freqs holds {divisors.size} values, the heads need {cfg.head_dim // 2}")
    rope = Rope(cfg.rope.theta, RopeKind.DIVISORS, divisors=tuple(float(d) for d in divisors.reshape(-1)))
    return dataclasses.replace(cfg, rope=rope)
