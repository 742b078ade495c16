"""GGUF metadata → ModelConfig: the architecture, its hyperparameters and rope, mapped key by key.

Architectures (general.architecture): llama (Llama and Mistral, which llama.cpp writes as llama), qwen2, qwen3, gemma3,
phi3 (Phi-3 mini's plain rope; Phi-3.5's longrope, rope_factors_long/short tensors, is refused by name).
A metadata key that changes the computation and that ModelConfig does not express (softcapping, experts, a rope
scaling other than linear or yarn, partial rotary...) is refused with ModelLoadError naming it; the weights themselves
are gguf_loader.py's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from kernel.engine.loading.gguf_file import GGUFFile, read_gguf_file
from kernel.engine.loading.model_config import Activation, Family, ModelConfig, ModelLoadError
from kernel.engine.loading.rope import Rope, RopeKind, scaled_query, yarn

_ARCHITECTURES = {
    "llama": Family.LLAMA,
    "qwen2": Family.QWEN2,
    "qwen3": Family.QWEN3,
    "gemma3": Family.GEMMA3,
    "phi3": Family.PHI3,
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


def read_gguf(path: Path) -> GGUFFile:
    """The file's metadata and tensor views (gguf_file.py); ModelLoadError naming what is wrong with a damaged one."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    return read_gguf_file(path)


def gguf_metadata(reader) -> dict:
    """Every metadata field as a plain Python value (strings, numbers, lists): a GGUFFile's own, or a
    gguf.GGUFReader's fields (what bench scripts and tests that write files with gguf's writer still hold)."""
    if isinstance(reader, GGUFFile):
        return dict(reader.metadata)
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
        rope = _rope(meta, arch, path)
        cfg = ModelConfig(
            vocab_size=int(meta.get(key("vocab_size")) or len(meta["tokenizer.ggml.tokens"])),
            hidden_size=hidden,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=int(meta.get(key("attention.head_count_kv"), n_heads)),
            head_dim=head_dim,
            ffn_size=int(meta[key("feed_forward_length")]),
            rms_eps=float(meta[key("attention.layer_norm_rms_epsilon")]),
            rope=rope,
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
            query_scale=scaled_query(float(scale) if scale else head_dim**-0.5 if gemma else None, head_dim, rope),
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
    if kind == "yarn":
        return _yarn(meta, f"{arch}.rope.scaling.", theta, factor, path)
    if kind != "none" or factor != 1.0:
        raise ModelLoadError(f"{path}: rope scaling {kind!r} is not supported (linear, yarn and rope_freqs are)")
    return Rope(theta)


def _yarn(meta: dict, prefix: str, theta: float, factor: float, path: Path) -> Rope:
    """llama.cpp's YaRN keys: cos and sin scaled by yarn_attn_factor * (1 + 0.1 ln factor), as its rope kernel does
    (ext_factor 1); the original context defaults to the training context, as llama.cpp's does. Keys whose meaning
    would change that (a log multiplier, another ext factor, attn_factor) are refused by name."""
    for name, neutral in (("yarn_log_multiplier", 0.0), ("yarn_ext_factor", 1.0), ("attn_factor", 1.0)):
        value = meta.get(prefix + name)
        if value is not None and float(value) != neutral and not (name == "yarn_ext_factor" and float(value) < 0):
            raise ModelLoadError(f"{path}: {prefix}{name}={value!r} with yarn is not supported")
    arch = prefix.split(".", 1)[0]
    original = meta.get(prefix + "original_context_length") or meta.get(f"{arch}.context_length")
    rope = yarn(
        theta,
        factor,
        int(original),
        beta_fast=float(meta.get(prefix + "yarn_beta_fast", 32.0)),
        beta_slow=float(meta.get(prefix + "yarn_beta_slow", 1.0)),
    )
    multiplier = float(meta.get(prefix + "yarn_attn_factor", 1.0))
    return dataclasses.replace(rope, attention_factor=rope.attention_factor * multiplier)
