"""GGUF tensor names → the engine's canonical weight names, per family, and the row orders llama.cpp changed.

`canonical_name(gguf_name, family)` maps a tensor explicitly (None: unknown, which the loader refuses);
`unpermute_rotary_rows` undoes llama.cpp's interleaving of q/k rows for the llama architecture. Phi-3 stores q, k and
v as one matrix (attn_qkv) and gate and up as one (ffn_up, gate rows first), in its GGUF files and its safetensors
alike: they map to the canonical "qkv" and "gate_up", and `split_fused` cuts them by rows into the matrices the model
reads (`fused_rows` says where: rows are whole, so a quantized matrix splits exactly too). The tensors' bytes are
gguf_loader.py's.
"""

from __future__ import annotations

import numpy as np

from kernel.engine.loading.model_config import Family, ModelConfig, ModelLoadError

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
    Family.PHI3: {
        "attn_norm.weight": "attn_norm",
        "attn_qkv.weight": "qkv",
        "attn_output.weight": "o",
        "ffn_norm.weight": "mlp_norm",
        "ffn_up.weight": "gate_up",
        "ffn_down.weight": "down",
    },
    Family.GEMMA3: {
        **_LLAMA_LAYER,
        **_QK_NORM,
        "post_attention_norm.weight": "post_attn_norm",
        "post_ffw_norm.weight": "post_mlp_norm",
    },
}
_GLOBAL_NAMES = {"token_embd.weight": "embed", "output_norm.weight": "norm", "output.weight": "lm_head"}


def canonical_name(gguf_name: str, family: Family) -> str | None:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES[family]:
        return f"layers.{parts[1]}.{_LAYER_NAMES[family][parts[2]]}"
    return None


def fused_rows(part: str, cfg: ModelConfig) -> list[tuple[str, int, int]]:
    """(canonical name, first row, end row) of each matrix a fused one holds; [] for a matrix that is not fused."""
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    if part == "qkv":
        return [("q", 0, q_dim), ("k", q_dim, q_dim + kv_dim), ("v", q_dim + kv_dim, q_dim + 2 * kv_dim)]
    if part == "gate_up":
        return [("gate", 0, cfg.ffn_size), ("up", cfg.ffn_size, 2 * cfg.ffn_size)]
    return []


def split_fused(weights: dict, cfg: ModelConfig, source: str) -> dict:
    """weights with each fused layer matrix replaced by its parts, cut by rows (w[start:stop]: a torch or numpy
    array; another kind needs row slicing of its own); a fused matrix of the wrong row count is refused."""
    out = {}
    for name, w in weights.items():
        layer, _, part = name.rpartition(".")
        rows = fused_rows(part, cfg) if layer.startswith("layers.") else []
        if not rows:
            out[name] = w
            continue
        if w.shape[0] != rows[-1][2]:
            raise ModelLoadError(f"{source}: fused {name!r} has {w.shape[0]} rows, the config needs {rows[-1][2]}")
        out.update({f"{layer}.{piece}": w[start:stop] for piece, start, stop in rows})
    return out


def unpermute_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (its converter interleaves each head's two rotary halves) so rotate_half applies.

    w: [n_heads * head_dim, hidden]; llama.cpp stored rows as (head, pair i, half) where HF has (head, half, pair i).
    """
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
