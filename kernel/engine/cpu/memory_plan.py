"""What the CPU engine will hold in memory, estimated from the model's config and weights before anything is allocated,
and the refusal when that is more than the machine can give.

    estimate(cfg, weights, mode, dtype, kv_tokens, max_batch, prefill_chunk) -> MemoryPlan
        weights: the products' bytes in that mode (quant_weights.py's rules: a GGUF matrix kept in its stored type
                 costs its file bytes; requantized, the mode's format; a float mode, its dtype; the opt-in bfloat16
                 prefill copy 2 bytes per weight more); the embedding lookup, rotary tables and norms.
                 auto: the most its measurement holds at once (auto_plan: the largest model it builds, or two it
                 keeps side by side when both fit that; never more).
        kv:      the KV cache, [layers, K/V, tokens, kv heads, head_dim] in dtype.
        scratch: one step's activations (a prefill chunk plus a decode batch: the fused products' outputs, the
                 logits, a chunk's attention scores over the whole context) and the largest product's transient
                 while it is built from the file (its codes decoded once, and a fused product's parts).
    auto_plan(cfg, weights, dtype) -> AutoPlan: what --weights auto builds, from the file's types alone (below).
    available_memory() -> (bytes, where from): /proc/meminfo's MemAvailable, or the cgroup's limit less its usage when
        that is lower (a container sees the host's MemAvailable), or $AIOS_MEMORY_LIMIT (bytes, or with a K/M/G
        suffix: the most the operator lets the engine take) when that is lower still.
    check(plan, available, source) raises ModelLoadError naming what is needed, part by part, and what is available.

auto (quant_select.py measures; this decides what it may build). The engine's memory target is resident weights of
about the file's, at most AUTO_MEMORY_RATIO (1.3) times the stored model's: a candidate whose weights would take more
is not built (logged, with its size). The reference the candidates' perplexity is compared with is the file's own:
  - a quantized GGUF (every layer matrix in integer blocks, the native block kernels built): the stored mode, the int
    mode that multiplies the most of the file's bytes as stored, at least half of them (int4 for Q4_0, Q4_1, Q4_K,
    Q5_0, Q5_1, Q5_K or Q6_K files, int8 for Q8_0). Its products are the file's blocks themselves, no requantization:
    the file's quality by construction, a candidate of ratio 1, never compared with a float copy (an fp32 model is 4
    bytes per weight: 7 GB for a 1.7B, 28 GB for a 7B, beside a 1 GB Q4_0 file). Products whose parts mix types
    (Gemma's Q5_0 q and k beside a Q8_0 v) are requantized in it as in every int mode (quant_weights._block_codes).
    The other candidates (int4 from a Q8_0 file, bf16 from a Q4_K one) requantize, and are compared with it when they
    fit the target; for a Q4_0/Q4_1 file none does (int8 is 1.7-1.9x its bytes, bf16 3-3.6x), so auto is the stored
    mode, unmeasured.
  - float weights (a Hugging Face folder, an F16/F32 GGUF) or no native block kernels: fp32, built once for its
    perplexity and freed (the float values exactly; a folder's checkpoint already holds them as float32). Every
    candidate is smaller than it; it is counted in the plan, so a model whose fp32 reference does not fit is refused
    before anything is allocated, the message naming it (an explicit --weights needs no reference).
One model is built at a time; the best so far is kept beside the next only while both fit the plan's weights (else
it is rebuilt if chosen), so auto's peak is its largest single model.

The estimate is deliberately an upper bound of the anonymous memory the engine allocates (file pages of the map are
the page cache's, reclaimable); tests/engine/test_memory.py holds it above what a loaded model's products and KV
cache actually take.
"""

from __future__ import annotations

import os
import re
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
AUTO_ORDER = ("int4", "int8", "bf16")  # auto's candidates, in the order built; ties in speed go to the earlier
AUTO_MEMORY_RATIO = 1.3  # the most a candidate's weights may take, times the file's
FALLBACK = "fp32"  # the reference for float weights, and auto's choice when no candidate holds
_STORED_SHARE = 0.5  # the stored mode must multiply at least this share of the file's matrix bytes as stored
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_MARGIN = 64 << 20  # allocator slack, torch's own buffers: a fixed allowance above the parts
_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryPlan:
    weights: int
    kv: int
    scratch: int
    detail: str = ""  # what the weights are, where that is not just the mode's model (auto)

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.scratch + _MARGIN

    def describe(self) -> str:
        return (
            f"{self.total / GIB:.2f} GiB (weights {self.weights / GIB:.2f}, KV cache {self.kv / GIB:.2f}, "
            f"scratch {self.scratch / GIB:.2f}, margin {_MARGIN / GIB:.2f})"
            + (f"; {self.detail}" if self.detail else "")
        )


def _numel(weight: Weight) -> int:
    rows, cols = weight.shape
    return int(rows) * int(cols)


def _stored_bytes(weight: Weight) -> int:
    if isinstance(weight, GGUFBlocks):
        return weight.nbytes
    if isinstance(weight, GroupQuantized):
        return weight.codes.numel() * weight.bits // 8 + weight.scale.numel() * 4
    return weight.numel() * weight.element_size()


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


@dataclass(frozen=True)
class AutoPlan:
    """What --weights auto builds (see the module docstring)."""

    file_bytes: int  # the checkpoint's matrices and tables as held (a GGUF's: the file's bytes)
    stored: str | None  # the mode whose products are the file's blocks as stored (a candidate of ratio 1), or None
    candidates: tuple[str, ...]  # modes built and measured, in AUTO_ORDER
    skipped: tuple[tuple[str, str], ...]  # (mode, why it is not built)
    sizes: tuple[tuple[str, int], ...]  # weight bytes of every model built: the candidates, and fp32 when it is
    # the reference (stored is None)

    @property
    def reference(self) -> str:
        return self.stored or FALLBACK

    @property
    def limit(self) -> int:
        """The most weight bytes auto holds at once: its largest model."""
        return max(size for _, size in self.sizes)

    def size(self, mode: str) -> int:
        return dict(self.sizes)[mode]


def _kept_bytes(cfg: ModelConfig, weights: dict[str, Weight], mode: str, dtype: torch.dtype) -> int:
    """The file bytes that mode's products multiply as stored (quant_weights._stored_product's rule)."""
    groups = [[weights["embed"] if cfg.tie_embeddings else weights["lm_head"]]]
    groups += [
        [weights[f"layers.{i}.{name}"] for name in names]
        for i in range(cfg.n_layers)
        for names in (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))
    ]
    kept = 0
    for index, parts in enumerate(groups):
        product_mode = lm_head_mode(mode, parts[0], dtype) if index == 0 else mode
        qtypes = {getattr(p, "qtype", None) for p in parts}
        if product_mode in KEPT_TYPES and len(qtypes) == 1 and qtypes <= set(KEPT_TYPES[product_mode]):
            kept += sum(_stored_bytes(p) for p in parts)
    return kept


def auto_plan(cfg: ModelConfig, weights: dict[str, Weight], dtype: torch.dtype) -> AutoPlan:
    """See the module docstring; decided from the checkpoint's types and shapes, nothing built."""
    file_bytes = sum(_stored_bytes(w) for w in weights.values())
    layers = [weights[f"layers.{i}.{n}"] for i in range(cfg.n_layers) for n in ("q", "k", "v", "o", "gate", "up")]
    stored = None
    if block_products() and all(is_quantized(w) for w in layers):
        kept = {m: _kept_bytes(cfg, weights, m, dtype) for m in QUANT_MODES}
        best = max(QUANT_MODES, key=lambda m: kept[m])
        matrices = sum(_stored_bytes(w) for w in weights.values() if not isinstance(w, torch.Tensor) or w.dim() == 2)
        stored = best if kept[best] >= _STORED_SHARE * matrices else None
    sizes = {m: _model_weights(cfg, weights, m, dtype) for m in AUTO_ORDER}
    candidates, skipped = [], []
    for mode in AUTO_ORDER:
        # the same accounting on both sides (tables, rotary, norms): the stored model is the file's blocks
        if stored is None or sizes[mode] <= AUTO_MEMORY_RATIO * sizes[stored]:
            candidates.append(mode)
        else:
            why = f"{sizes[mode] / GIB:.3f} GiB of weights, over {AUTO_MEMORY_RATIO}x the stored {stored}'s "
            skipped.append((mode, why + f"{sizes[stored] / GIB:.3f} (the file: {file_bytes / GIB:.3f})"))
    built = [(m, sizes[m]) for m in candidates]
    if stored is None:
        built.append((FALLBACK, _model_weights(cfg, weights, FALLBACK, torch.float32)))
    return AutoPlan(file_bytes, stored, tuple(candidates), tuple(skipped), tuple(built))


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
    calibration, detail = 0, ""
    if mode == "auto":
        plan = auto_plan(cfg, weights, dtype)
        weight_bytes = plan.limit
        detail = f"--weights auto builds {', '.join(plan.candidates)}" + (
            f" and an {FALLBACK} reference" if plan.stored is None else f" ({plan.stored}: the file's blocks)"
        )
        if len(plan.candidates) > 1 or plan.stored is None:  # perplexity: a chunk's logits, and their softmax
            calibration = 2 * 256 * cfg.vocab_size * 4
    else:
        weight_bytes = _model_weights(cfg, weights, mode, dtype)
    kv = 2 * cfg.n_layers * kv_tokens * cfg.n_kv_heads * cfg.head_dim * dtype.itemsize
    rows = prefill_chunk + max_batch
    qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    activations = rows * (qkv + 2 * cfg.ffn_size + 4 * cfg.hidden_size) * 4
    logits = max_batch * cfg.vocab_size * 4 * 2
    scores = cfg.n_heads * prefill_chunk * min(cfg.max_context, max(kv_tokens, prefill_chunk)) * 4
    scratch = activations + max(logits, calibration) + scores + _transient(cfg, weights)
    return MemoryPlan(weight_bytes, kv, scratch, detail)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _operator_limit() -> int | None:
    """$AIOS_MEMORY_LIMIT in bytes (a K/M/G suffix allowed); ModelLoadError when it is not a size."""
    text = os.environ.get("AIOS_MEMORY_LIMIT", "").strip().upper()
    if not text:
        return None
    match = re.fullmatch(r"(\d+)\s*([KMG]?)I?B?", text)
    if match is None:
        raise ModelLoadError(f"AIOS_MEMORY_LIMIT={text!r} is not a size (bytes, or a number with K, M or G)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = _CGROUP) -> tuple[int | None, str]:
    """(bytes this process can still allocate, where that came from); None when nothing says."""
    found: list[tuple[int, str]] = []
    limit = _operator_limit()
    if limit is not None:
        found.append((limit, "AIOS_MEMORY_LIMIT"))
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
