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

from kernel.engine.loading.model_config import (
    Activation,
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

_ARCHITECTURES = {"llama": Family.LLAMA, "qwen2": Family.QWEN2, "qwen3": Family.QWEN3, "gemma3": Family.GEMMA3}
_LLAMA_LAYER = {
    "attn_norm.weight": "attn_norm",
    "attn_q.weight": "q",
    "attn_k.weight": "k",
    "attn_v.weight": "v",
    "attn_output.weight": "o",
    "ffn_norm.weight": "mlp_norm",
    "ffn_gate.weight": "gate",
    "ffn_up.weight": "up",
    "ffn_down.weight": "down",
}
_QK_NORM = {"attn_q_norm.weight": "q_norm", "attn_k_norm.weight": "k_norm"}
_LAYER_NAMES = {
    Family.LLAMA: _LLAMA_LAYER,
    Family.QWEN2: {**_LLAMA_LAYER, "attn_q.bias": "q_bias", "attn_k.bias": "k_bias", "attn_v.bias": "v_bias"},
    Family.QWEN3: {**_LLAMA_LAYER, **_QK_NORM},
    Family.GEMMA3: {
        **_LLAMA_LAYER,
        **_QK_NORM,
        "post_attention_norm.weight": "post_attn_norm",
        "post_ffw_norm.weight": "post_mlp_norm",
    },
}
_GLOBAL_NAMES = {"token_embd.weight": "embed", "output_norm.weight": "norm", "output.weight": "lm_head"}
_GROUP_DECODERS = {
    GGMLQuantizationType.Q4_0: from_q4_0,
    GGMLQuantizationType.Q4_1: from_q4_1,
    GGMLQuantizationType.Q4_K: from_q4_k,
    GGMLQuantizationType.Q8_0: from_q8_0,
}
# metadata (after the architecture's prefix) that changes the computation in ways ModelConfig does not express
_REFUSED_KEYS = (
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "expert_count",
    "attention.clamp_kqv",
    "embedding_scale",
    "logit_scale",
    "residual_scale",
    "attention.output_scale",
    "attention.temperature_scale",
    "attention.key_length_swa",
    "rope.dimension_count_swa",
)
_GEMMA3_SWA_PATTERN = 6  # llama.cpp's: every 6th Gemma 3 layer is global, the rest slide
_GEMMA3_LOCAL_THETA = 10000.0  # llama.cpp's rope base for Gemma 3's sliding layers


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


def config_from_metadata(meta: dict, path: Path) -> ModelConfig:
    arch = meta.get("general.architecture")
    family = _ARCHITECTURES.get(arch)
    if family is None:
        raise ModelLoadError(f"{path}: unsupported architecture {arch!r} (supported: {', '.join(_ARCHITECTURES)})")
    key = lambda name: f"{arch}.{name}"
    for name in _REFUSED_KEYS:
        if key(name) in meta and meta[key(name)]:
            raise ModelLoadError(f"{path}: {key(name)}={meta[key(name)]!r} is not supported")
    try:
        n_heads, hidden = int(meta[key("attention.head_count")]), int(meta[key("embedding_length")])
        n_layers = int(meta[key("block_count")])
        head_dim = int(meta.get(key("attention.key_length"), hidden // n_heads))
        if int(meta.get(key("attention.value_length"), head_dim)) != head_dim:
            raise ModelLoadError(f"{path}: value heads of another size than key heads are not supported")
        if int(meta.get(key("rope.dimension_count"), head_dim)) != head_dim:
            raise ModelLoadError(f"{path}: partial rotary ({key('rope.dimension_count')}) is not supported")
        window = meta.get(key("attention.sliding_window"))
        gemma = family is Family.GEMMA3
        sliding = (
            _sliding_layers(
                meta.get(key("attention.sliding_window_pattern"), _GEMMA3_SWA_PATTERN if gemma else 0), n_layers
            )
            if window
            else ()
        )
        scale = meta.get(key("attention.scale"))
        cfg = ModelConfig(
            vocab_size=int(meta.get(key("vocab_size")) or len(meta["tokenizer.ggml.tokens"])),
            hidden_size=hidden,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=int(meta.get(key("attention.head_count_kv"), n_heads)),
            head_dim=head_dim,
            ffn_size=int(meta[key("feed_forward_length")]),
            rms_eps=float(meta[key("attention.layer_norm_rms_epsilon")]),
            rope=_rope(meta, arch, path),
            max_context=int(meta[key("context_length")]),
            tie_embeddings=False,  # decided from the tensors present
            family=family,
            qkv_bias=family is Family.QWEN2,
            qk_norm=family in (Family.QWEN3, Family.GEMMA3),
            post_norms=gemma,
            # llama.cpp's converter stores Gemma's norms as 1 + w already, so norm_offset stays 0
            activation=Activation.GELU_TANH if gemma else Activation.SILU,
            embed_scale=float(torch.tensor(hidden**0.5)) if gemma else 1.0,
            # llama.cpp scales Gemma 3 queries by head_dim ** -0.5 unless the file says (27B excepted, by size)
            query_scale=float(scale) if scale else head_dim**-0.5 if gemma else None,
            sliding_window=int(window) if window else None,
            sliding_layers=sliding,
            local_rope=Rope(float(meta.get(key("rope.freq_base_swa"), _GEMMA3_LOCAL_THETA)))
            if gemma and window
            else None,
        )
    except KeyError as exc:
        raise ModelLoadError(f"{path}: GGUF metadata lacks {exc.args[0]!r}") from exc
    if gemma and n_layers == 62 and not scale:
        raise ModelLoadError(f"{path}: Gemma 3 27B's query scale is not supported")
    return cfg


def _sliding_layers(pattern, n_layers: int) -> tuple[bool, ...]:
    """llama.cpp's rule: a list says per layer (True = sliding); n: every n-th layer is global; 0: all slide."""
    if isinstance(pattern, list):
        if len(pattern) != n_layers:
            raise ModelLoadError(f"sliding_window_pattern has {len(pattern)} entries for {n_layers} layers")
        return tuple(bool(p) for p in pattern)
    n = int(pattern)
    return tuple(n == 0 or i % n < n - 1 for i in range(n_layers))


def _rope(meta: dict, arch: str, path: Path) -> Rope:
    theta = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    factor = float(meta.get(f"{arch}.rope.scaling.factor", 1.0) or 1.0)
    if kind == "linear":
        return Rope(theta, RopeKind.LINEAR, factor=factor)
    if kind != "none" or factor != 1.0:
        raise ModelLoadError(f"{path}: rope scaling {kind!r} is not supported (linear and rope_freqs are)")
    return Rope(theta)


def unpermute_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (its converter interleaves each head's two rotary halves) so rotate_half applies.

    w: [n_heads * head_dim, hidden]; llama.cpp stored rows as (head, pair i, half) where HF has (head, half, pair i).
    """
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


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
        name = _canonical_name(tensor.name, cfg.family)
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


def _canonical_name(gguf_name: str, family: Family) -> str | None:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES[family]:
        return f"layers.{parts[1]}.{_LAYER_NAMES[family][parts[2]]}"
    return None
