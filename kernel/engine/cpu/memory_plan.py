"""What the CPU engine will hold in memory, estimated from the model's config and weights before anything is allocated,
and the refusal when that is more than the machine can give.

    estimate(cfg, weights, mode, dtype, kv_tokens, max_batch, prefill_chunk) -> MemoryPlan
        weights: the products' bytes in that mode (quant_weights.py's rules: a GGUF matrix kept in its stored type
                 costs its file bytes; requantized, the mode's format; a float mode, its dtype; the opt-in bfloat16
                 prefill copy 2 bytes per weight more); the embedding lookup, rotary tables and norms.
                 auto: the most its measurement holds at once — the fp32 reference, or two candidates side by side.
        kv:      the KV cache, [layers, K/V, tokens, kv heads, head_dim] in dtype.
        scratch: one step's activations (a prefill chunk plus a decode batch: the fused products' outputs, the
                 logits, a chunk's attention scores over the whole context) and the largest product's transient
                 while it is built from the file (its codes decoded once, and a fused product's parts).
    available_memory() -> (bytes, where from): /proc/meminfo's MemAvailable, or the cgroup's limit less its usage when
        that is lower (a container sees the host's MemAvailable).
    check(plan, available, source) raises ModelLoadError naming what is needed, part by part, and what is available.

The estimate is deliberately an upper bound of the anonymous memory the engine allocates (file pages of the map are
the page cache's, reclaimable); tests/engine/test_memory.py holds it above what a loaded model's products and KV
cache actually take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from kernel.engine.cpu.linear import packing_available
from kernel.engine.cpu.quant_weights import (
    FLOAT_MODES,
    KEPT_TYPES,
    QUANT_MODES,
    Weight,
    block_products,
    is_quantized,
    lm_head_mode,
)
from kernel.engine.loading.gguf_blocks import GGUFBlocks
from kernel.engine.loading.model_config import ModelConfig, ModelLoadError
from kernel.engine.loading.quant_tensor import GroupQuantized

GIB = 1 << 30
_MARGIN = 64 << 20  # allocator slack, torch's own buffers: a fixed allowance above the parts
_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryPlan:
    weights: int
    kv: int
    scratch: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.scratch + _MARGIN

    def describe(self) -> str:
        return (
            f"{self.total / GIB:.2f} GiB (weights {self.weights / GIB:.2f}, KV cache {self.kv / GIB:.2f}, "
            f"scratch {self.scratch / GIB:.2f}, margin {_MARGIN / GIB:.2f})"
        )


def _numel(weight: Weight) -> int:
    rows, cols = weight.shape
    return int(rows) * int(cols)


def _stored_bytes(weight: Weight) -> int:
    if isinstance(weight, GGUFBlocks):
        return weight.nbytes
    if isinstance(weight, GroupQuantized):
        return weight.codes.numel() * weight.bits // 8 + weight.scale.numel() * 4
    return _numel(weight) * weight.element_size()


def product_bytes(parts: list[Weight], mode: str, wide: bool) -> int:
    """The bytes of build_product(parts, mode, wide) (quant_weights.py), without building it."""
    n = sum(_numel(p) for p in parts)
    rows = sum(int(p.shape[0]) for p in parts)
    if mode in FLOAT_MODES:
        return n * FLOAT_MODES[mode].itemsize
    blocks = block_products() and all(is_quantized(p) for p in parts)
    if blocks:
        kept = all(isinstance(p, GGUFBlocks) and p.qtype in KEPT_TYPES[mode] for p in parts)
        if kept:
            size = sum(_stored_bytes(p) for p in parts)
        else:
            size = n * 34 // 32 if mode == "int8" else n * 20 // 32  # Q8_0, or Q4_1 (Q4_0's 18 at most this)
        copy = wide and os.environ.get("AIOS_PREFILL_COPY", "0") == "1"
    else:
        size = n + rows * 2 if mode == "int8" else n // 2 + n // 32 * 4  # torch's int8 rows / int4 + scales, zeros
        copy = wide
    return size + (n * 2 if copy and packing_available() else 0)


def _model_weights(cfg: ModelConfig, weights: dict[str, Weight], mode: str, dtype: torch.dtype) -> int:
    wide = dtype == torch.bfloat16
    head = weights["embed"] if cfg.tie_embeddings else weights["lm_head"]
    total = product_bytes([head], lm_head_mode(mode, head, dtype), False)
    table = weights["embed"]
    if isinstance(table, GGUFBlocks):
        total += table.nbytes  # the file's pages, as many as lookups touch
    elif mode in FLOAT_MODES:
        total += _numel(table) * dtype.itemsize
    elif not cfg.tie_embeddings or mode != "int8":
        total += _numel(table) + _numel(table) // 32 * 8
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        for names in (("q", "k", "v"), ("o",), ("gate", "up"), ("down",)):
            total += product_bytes([weights[p + name] for name in names], mode, wide)
    small = sum(w.numel() * dtype.itemsize for w in weights.values() if isinstance(w, torch.Tensor) and w.dim() == 1)
    ropes = {cfg.layer_rope(i) for i in range(cfg.n_layers)}
    rotary = len(ropes) * 2 * cfg.max_context * cfg.head_dim * dtype.itemsize
    return total + small + rotary


def _transient(cfg: ModelConfig, weights: dict[str, Weight]) -> int:
    """The largest product's decode while it is built: int8 codes and float32 scales of its parts, then their
    concatenation (fused products), then the packing — at most ~3 bytes per weight of one fused product."""
    largest = max(
        sum(_numel(weights[f"layers.{i}.{name}"]) for name in names)
        for i in range(cfg.n_layers)
        for names in (("q", "k", "v"), ("gate", "up"), ("down",))
    )
    return largest * 3


def estimate(
    cfg: ModelConfig,
    weights: dict[str, Weight],
    mode: str,
    dtype: torch.dtype,
    kv_tokens: int,
    max_batch: int,
    prefill_chunk: int,
) -> MemoryPlan:
    """See the module docstring. mode: a weights mode or "auto"."""
    if mode == "auto":
        each = {m: _model_weights(cfg, weights, m, dtype) for m in (*QUANT_MODES, "bf16")}
        reference = _model_weights(cfg, weights, "fp32", torch.float32)
        weight_bytes = max(reference, each["bf16"] + max(each[m] for m in QUANT_MODES))
    else:
        weight_bytes = _model_weights(cfg, weights, mode, dtype)
    kv = 2 * cfg.n_layers * kv_tokens * cfg.n_kv_heads * cfg.head_dim * dtype.itemsize
    rows = prefill_chunk + max_batch
    qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    activations = rows * (qkv + 2 * cfg.ffn_size + 4 * cfg.hidden_size) * 4
    logits = max_batch * cfg.vocab_size * 4 * 2
    scores = cfg.n_heads * prefill_chunk * min(cfg.max_context, max(kv_tokens, prefill_chunk)) * 4
    scratch = activations + logits + scores + _transient(cfg, weights)
    return MemoryPlan(weight_bytes, kv, scratch)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = _CGROUP) -> tuple[int | None, str]:
    """(bytes this process can still allocate, where that came from); None when nothing says."""
    found: list[tuple[int, str]] = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        pass
    for limit_name, usage_name in (
        ("memory.max", "memory.current"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),  # v1
    ):
        limit, usage = _read_int(cgroup / limit_name), _read_int(cgroup / usage_name)
        if limit is not None and usage is not None and limit < 1 << 60:
            found.append((max(0, limit - usage), f"cgroup {cgroup / limit_name}"))
    if not found:
        return None, "unknown"
    return min(found)


def check(plan: MemoryPlan, available: int | None, source: str) -> None:
    """ModelLoadError when the plan needs more than is available (nothing is refused when nothing says)."""
    if available is not None and plan.total > available:
        raise ModelLoadError(
            f"the model does not fit: it needs {plan.describe()}, {available / GIB:.2f} GiB is available ({source}); "
            "a smaller --kv-budget, --weights int4, or a smaller model would need less"
        )
