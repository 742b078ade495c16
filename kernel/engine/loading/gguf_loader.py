"""GGUF file → ModelConfig, canonical weights and tokenizer metadata.

Architectures (general.architecture): llama (Llama and Mistral, which llama.cpp writes as llama), qwen2, qwen3, gemma3.
Each one's metadata keys and tensor names are mapped explicitly; anything that changes the computation and is not
mapped (an unknown tensor, a rope scaling other than linear, softcapping, experts, partial rotary) is refused with
ModelLoadError naming it. Llama 3.x files carry their rope scaling as the `rope_freqs` tensor, a divisor per rotary
frequency (llama.cpp's freq_factors): it becomes the config's rope (rope.py), never skipped.

Weights come dequantized to the chosen dtype (gguf's reference dequantizer, what Hugging Face transformers reads too,
so the fp32 path can match it token for token), or with quantized=True every matrix (any GGUF type) as GGUFBlocks
(gguf_blocks.py): its bytes left in a read-only map of the file, decoded only when a product or a lookup is built from
it, one matrix at a time — so loading allocates nothing per weight, and the engine's products are the only copy
(quant_weights.py: the file's blocks repacked for the native kernels, or a float copy in a float mode). Q5_K and Q5_1
matrices are kept as stored like the other block types (the kernels multiply them from the file's bytes). A matrix
in a type gguf's dequantizer does not read (Q8_K, Q8_1, the integer and F64 types) is refused naming the tensor and
the type, and so are longrope's rope_factors_long / rope_factors_short tensors (Phi-3 128k, Phi-3.5), naming
longrope. 1-D tensors (norms, biases) are always dequantized: they are small. bench/perplexity_peer.py measures what a
mode costs against the file's own fp32 weights and llama.cpp (Gemma 3 270M Q4_K_M, perplexity over fp32's: int8
1.005, int4 1.009, the file's blocks as stored; llama.cpp 1.010).
llama-arch q and k rows are unpermuted (unpermute_rotary_rows; for GGUFBlocks as a row
order): llama.cpp's converter interleaves them for that architecture only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from kernel.engine.loading.gguf_blocks import GGUFBlocks, WeightFile, decodable, file_matrix
from kernel.engine.loading.gguf_config import config_from_metadata, gguf_metadata, read_gguf  # noqa: F401  (re-exported)
from kernel.engine.loading.gguf_names import canonical_name, split_fused, unpermute_rotary_rows
from kernel.engine.loading.model_config import (
    Family,
    ModelConfig,
    ModelLoadError,
    check_weights,
)
from kernel.engine.loading.rope import Rope, RopeKind

_LONGROPE_TENSORS = ("rope_factors_long.weight", "rope_factors_short.weight")


def _dequantized(tensor) -> np.ndarray:
    qtype = GGMLQuantizationType(tensor.tensor_type)
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        data = np.array(tensor.data, dtype=np.float32)  # a copy: the reader's memmap is read-only
    else:
        data = dequantize(tensor.data, qtype)
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGML lists dimensions innermost first
    return data.reshape(shape)


def load_gguf_weights(
    reader, cfg: ModelConfig, dtype: torch.dtype, path: Path, quantized: bool = False
) -> tuple[ModelConfig, dict[str, torch.Tensor | GGUFBlocks]]:
    """reader: read_gguf's (its .tensors: name, tensor_type, shape, data, data_offset)."""
    weights: dict[str, torch.Tensor | GGUFBlocks] = {}
    permuted = cfg.family is Family.LLAMA
    file = WeightFile(path) if quantized else None
    readable: set[GGMLQuantizationType] = set()  # the types checked so far
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            cfg = _with_rope_freqs(cfg, _dequantized(tensor), path)
            continue
        if tensor.name in _LONGROPE_TENSORS:
            raise ModelLoadError(
                f"{path}: longrope rope scaling ({tensor.name}: Phi-3 128k / Phi-3.5's per-frequency factors) is not"
                " supported"
            )
        name = canonical_name(tensor.name, cfg.family)
        if name is None:
            raise ModelLoadError(f"{path}: unknown tensor {tensor.name!r} for architecture {cfg.family.value!r}")
        qtype = GGMLQuantizationType(tensor.tensor_type)
        if qtype not in readable:
            if not decodable(qtype):
                raise ModelLoadError(
                    f"{path}: tensor {tensor.name} is stored as {qtype.name}, a GGUF type this engine does not read"
                )
            readable.add(qtype)
        heads = None
        if permuted and name.endswith((".q", ".k")):
            heads = cfg.n_heads if name.endswith(".q") else cfg.n_kv_heads
        if file is not None and len(tensor.shape) == 2:
            shape = (int(tensor.shape[1]), int(tensor.shape[0]))
            order = None
            if heads is not None:  # the rotary unpermute as a row order: whole rows move, blocks and all
                order = unpermute_rotary_rows(np.arange(shape[0]).reshape(-1, 1), heads).reshape(-1)
            weights[name] = file_matrix(file, int(tensor.data_offset), qtype, shape, order)
            continue
        try:
            data = _dequantized(tensor)
        except (NotImplementedError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot dequantize {tensor.name} ({exc})") from exc
        if heads is not None:
            data = unpermute_rotary_rows(data, heads)
        weights[name] = torch.from_numpy(np.ascontiguousarray(data)).to(dtype)
    weights = split_fused(weights, cfg, str(path))  # phi3's qkv and gate_up, cut by rows
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
