"""Rotary position embeddings as data: the base, the scaling a file declares, and the inverse frequencies they give.

A loader turns its file's rope description into a Rope (rope_from_hf for config.json, the GGUF loader from metadata
keys and the `rope_freqs` tensor); inverse_frequencies() is the one place the model's rotary angles come from. Every
scaling that changes the math is either computed here exactly as the reference does (Hugging Face transformers'
modeling_rope_utils, llama.cpp's freq_factors) or refused by name with ModelLoadError: a Llama 3.1 file run with plain
frequencies loads and answers, wrongly, so silence is never an option.

Kinds: PLAIN (theta only), LINEAR (every frequency / factor), LLAMA3 (Llama 3.1's wavelength-banded division),
DIVISORS (a per-frequency divisor table: GGUF's rope_freqs, which llama.cpp's converter writes for Llama 3.x).
YaRN, dynamic NTK and longrope are refused: their attention factor and ramps are not implemented here.
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


@dataclass(frozen=True)
class Rope:
    theta: float
    kind: RopeKind = RopeKind.PLAIN
    factor: float = 1.0  # LINEAR, LLAMA3
    low_freq_factor: float = 1.0  # LLAMA3
    high_freq_factor: float = 4.0  # LLAMA3
    original_context: int = 0  # LLAMA3: original_max_position_embeddings
    divisors: tuple[float, ...] = ()  # DIVISORS: one per frequency (head_dim / 2)


# the keys of a config.json rope description each kind reads; any other key there could change the math
_HF_KEYS = {
    RopeKind.PLAIN: set(),
    RopeKind.LINEAR: {"factor"},
    RopeKind.LLAMA3: {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
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
    return inv


def rope_from_hf(theta: float, scaling: dict | None, where: str) -> Rope:
    """A config.json rope description (rope_scaling, or one rope_parameters map) → Rope; anything else refused."""
    if not scaling:
        return Rope(theta)
    name = scaling.get("rope_type", scaling.get("type", "default"))
    try:
        kind = RopeKind(name)
    except ValueError:
        kind = None
    if kind is None or kind is RopeKind.DIVISORS:
        raise ModelLoadError(f"{where}: rope scaling {name!r} is not supported (plain, linear and llama3 are)")
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
    except KeyError as exc:
        raise ModelLoadError(f"{where}: rope {name!r} lacks {exc.args[0]!r}") from exc
    return Rope(theta)
