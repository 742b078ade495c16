"""Rotary position embeddings as data: the base, the scaling a file declares, and the inverse frequencies they give.

A loader turns its file's rope description into a Rope (rope_from_hf for config.json, the GGUF loader from metadata
keys and the `rope_freqs` tensor); inverse_frequencies() is the one place the model's rotary angles come from. Every
scaling that changes the math is either computed here exactly as the reference does (Hugging Face transformers'
modeling_rope_utils, llama.cpp's freq_factors) or refused by name with ModelLoadError: a Llama 3.1 file run with plain
frequencies loads and answers, wrongly, so silence is never an option.

Kinds: PLAIN (theta only), LINEAR (every frequency / factor), LLAMA3 (Llama 3.1's wavelength-banded division),
DIVISORS (a per-frequency divisor table: GGUF's rope_freqs, which llama.cpp's converter writes for Llama 3.x),
YARN (transformers' _compute_yarn_parameters: interpolated and extrapolated frequencies mixed by a linear ramp between
the beta_fast/beta_slow correction dimensions, and an attention factor, 0.1 ln(factor) + 1 unless given).

YaRN's attention factor multiplies cos and sin in transformers, so every query-key product by its square; it is not
in the rotary tables here: the loaders fold attention_scale(rope)**2 into ModelConfig.query_scale (scaled_query), the
same logits, and a KV cache whose keys are unscaled. Dynamic NTK and longrope are refused by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch

from kernel.engine.loading.load_errors import ModelLoadError


class RopeKind(Enum):
    PLAIN = "default"
    LINEAR = "linear"
    LLAMA3 = "llama3"
    DIVISORS = "divisors"
    YARN = "yarn"


@dataclass(frozen=True)
class Rope:
    theta: float
    kind: RopeKind = RopeKind.PLAIN
    factor: float = 1.0  # LINEAR, LLAMA3
    low_freq_factor: float = 1.0  # LLAMA3
    high_freq_factor: float = 4.0  # LLAMA3
    original_context: int = 0  # LLAMA3: original_max_position_embeddings
    divisors: tuple[float, ...] = ()  # DIVISORS: one per frequency (head_dim / 2)
    beta_fast: float = 32.0  # YARN: rotations at the ramp's extrapolated end
    beta_slow: float = 1.0  # YARN: rotations at its interpolated end
    truncate: bool = True  # YARN: correction dimensions rounded outward (floor, ceil)
    attention_factor: float = 1.0  # YARN: what cos and sin are multiplied by


def yarn(
    theta: float,
    factor: float,
    original_context: int,
    attention_factor: float | None = None,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
    truncate: bool = True,
) -> Rope:
    """A YaRN rope, its attention factor derived as transformers derives it when not given."""
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(factor)
    return Rope(
        theta,
        RopeKind.YARN,
        factor=float(factor),
        original_context=int(original_context),
        beta_fast=float(beta_fast),
        beta_slow=float(beta_slow),
        truncate=bool(truncate),
        attention_factor=float(attention_factor),
    )


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def attention_scale(rope: Rope) -> float:
    """What the rope multiplies cos and sin by (1 but for YaRN)."""
    return rope.attention_factor if rope.kind is RopeKind.YARN else 1.0


def scaled_query(query_scale: float | None, head_dim: int, rope: Rope) -> float | None:
    """The attention logits' scale with the rope's attention factor folded in: q and k each carry it once."""
    s = attention_scale(rope)
    if s == 1.0:
        return query_scale
    return (head_dim**-0.5 if query_scale is None else query_scale) * s * s


# the keys of a config.json rope description each kind reads; any other key there could change the math
_HF_KEYS = {
    RopeKind.PLAIN: set(),
    RopeKind.LINEAR: {"factor"},
    RopeKind.LLAMA3: {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
    RopeKind.YARN: {
        "factor",
        "original_max_position_embeddings",
        "attention_factor",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "truncate",
    },
}
_HF_IGNORED = {"rope_type", "type", "rope_theta"}


def inverse_frequencies(rope: Rope, head_dim: int) -> torch.Tensor:
    """float32 [head_dim / 2], computed as transformers computes them (so fp32 parity holds bit for bit where it
    can)."""
    inv = 1.0 / (rope.theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope.kind is RopeKind.LINEAR:
        return inv / rope.factor
    if rope.kind is RopeKind.DIVISORS:
        if len(rope.divisors) != head_dim // 2:
            raise ModelLoadError(f"rope_freqs holds {len(rope.divisors)} divisors, the heads need {head_dim // 2}")
        return inv / torch.tensor(rope.divisors, dtype=torch.float32)
    if rope.kind is RopeKind.LLAMA3:
        low_wavelen = rope.original_context / rope.low_freq_factor
        high_wavelen = rope.original_context / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (rope.original_context / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    if rope.kind is RopeKind.YARN:
        return _yarn_frequencies(rope, head_dim)
    return inv


def _yarn_frequencies(rope: Rope, dim: int) -> torch.Tensor:
    """transformers' _compute_yarn_parameters, step for step (float32 ramps, float64 correction dimensions)."""

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(rope.original_context / (rotations * 2 * math.pi))) / (2 * math.log(rope.theta))

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # the reference's guard against a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = rope.theta ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (rope.factor * pos_freqs)
    extrapolation_share = 1 - ramp
    return interpolation * (1 - extrapolation_share) + extrapolation * extrapolation_share


def rope_from_hf(
    theta: float, scaling: dict | None, where: str, max_context: int = 0, original_context: int | None = None
) -> Rope:
    """A config.json rope description (rope_scaling, or one rope_parameters map) → Rope; anything else refused.

    max_context: the config's max_position_embeddings; original_context: its top-level
    original_max_position_embeddings (Phi-3 keeps it there, and transformers then prefers it to the map's)."""
    if not scaling:
        return Rope(theta)
    name = scaling.get("rope_type", scaling.get("type", "default"))
    try:
        kind = RopeKind(name)
    except ValueError:
        kind = None
    if kind is None or kind is RopeKind.DIVISORS:
        raise ModelLoadError(f"{where}: rope scaling {name!r} is not supported (plain, linear, llama3 and yarn are)")
    extra = {
        key: value
        for key, value in scaling.items()
        if key not in _HF_KEYS[kind] | _HF_IGNORED and not (key == "partial_rotary_factor" and value == 1.0)
    }
    if extra:
        raise ModelLoadError(f"{where}: rope {name!r} with {sorted(extra)} is not supported")
    try:
        if kind is RopeKind.LINEAR:
            return Rope(theta, kind, factor=float(scaling["factor"]))
        if kind is RopeKind.LLAMA3:
            return Rope(
                theta,
                kind,
                factor=float(scaling["factor"]),
                low_freq_factor=float(scaling["low_freq_factor"]),
                high_freq_factor=float(scaling["high_freq_factor"]),
                original_context=int(scaling["original_max_position_embeddings"]),
            )
        if kind is RopeKind.YARN:
            return _yarn_from_hf(theta, scaling, max_context, original_context)
    except KeyError as exc:
        raise ModelLoadError(f"{where}: rope {name!r} lacks {exc.args[0]!r}") from exc
    return Rope(theta)


def _yarn_from_hf(theta: float, scaling: dict, max_context: int, original_context: int | None) -> Rope:
    """transformers' reading of a yarn map: the original context from the config's top level first, then the map,
    then max_position_embeddings."""
    original = original_context or scaling.get("original_max_position_embeddings") or max_context
    if not original:
        raise KeyError("original_max_position_embeddings")
    factor = scaling["factor"]  # transformers requires it too
    attention = scaling.get("attention_factor")
    return yarn(
        theta,
        float(factor),
        int(original),
        attention_factor=None if attention is None else float(attention),
        beta_fast=float(scaling.get("beta_fast") or 32),
        beta_slow=float(scaling.get("beta_slow") or 1),
        mscale=scaling.get("mscale"),
        mscale_all_dim=scaling.get("mscale_all_dim"),
        truncate=bool(scaling.get("truncate", True)),
    )
