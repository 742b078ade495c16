"""Our decoder forward pass for every family ModelConfig describes (llama, mistral, qwen2, qwen3, gemma3): RMSNorm,
rotary embeddings, grouped-query attention over a paged KV cache (a sliding window where a layer has one), gated MLP.

The family's differences are data in the config (kernel/engine/loading/model_config.py): q/k/v biases, per-head q/k
norms, norms after attention and MLP, Gemma's (1 + w) norms (folded into the weights here), the activation, the
embedding scale, the query scale, per-layer windows and rotary tables. The weight products are torch's kernels
(quant_weights.py); the steps between them are the layer ops (layer_ops.py: fused native ops where they build, else
torch ops), and a pure-decode step runs all its layers in one native call. The native ops compute every feature above;
a model that needs one they lack (ModelConfig.native_gaps()) runs the torch ops, decided here at load and logged.

Shapes: T = rows in the step (all sequences' tokens flattened), H = attention heads, Hkv = KV heads, D = head_dim,
E = hidden size, F = MLP size, V = vocabulary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.layer_ops import NativeOps, layer_ops
from kernel.engine.cpu.quant_weights import (
    Product,
    SplitProduct,
    Weight,
    build_embedding,
    build_product,
    lm_head_mode,
    multiply,
    natural_mode,
)
from kernel.engine.cpu.step_batch import StepBatch
from kernel.engine.loading.model_config import Activation, ModelConfig
from kernel.engine.loading.rope import Rope, inverse_frequencies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: torch.Tensor  # [E]
    qkv: Product  # E → (H + 2 Hkv) D: q, k, v projections fused into one matmul
    o: Product  # H D → E
    mlp_norm: torch.Tensor  # [E]
    gate_up: Product  # E → 2 F: gate and up fused
    down: Product  # F → E
    qkv_bias: torch.Tensor | None = None  # [(H + 2 Hkv) D]   (qwen2)
    q_norm: torch.Tensor | None = None  # [D]               (qwen3, gemma3)
    k_norm: torch.Tensor | None = None  # [D]
    post_attn_norm: torch.Tensor | None = None  # [E]               (gemma3)
    post_mlp_norm: torch.Tensor | None = None  # [E]

    def nbytes(self) -> int:
        small = [
            t
            for t in (
                self.attn_norm,
                self.mlp_norm,
                self.qkv_bias,
                self.q_norm,
                self.k_norm,
                self.post_attn_norm,
                self.post_mlp_norm,
            )
            if t is not None
        ]
        return sum(t.numel() * t.element_size() for t in small) + sum(
            linear.nbytes for linear in (self.qkv, self.o, self.gate_up, self.down)
        )


class LlamaModel:
    def __init__(
        self,
        cfg: ModelConfig,
        weights: dict[str, Weight],
        dtype: torch.dtype,
        mode: str | None = None,
        native: bool = True,
    ):
        """dtype: activations, norms and KV; mode: how the matrices are stored and multiplied (quant_weights.py),
        None → the compute dtype's own float (weights: float tensors or GGUF-quantized GroupQuantized). native: the
        steps between products as fused native ops where they build and the model needs nothing they lack
        (layer_ops.py), else torch ops."""
        self.cfg = cfg
        gaps = cfg.native_gaps()
        if native and gaps:
            log.info(
                "native layer ops and layer loop off for this %s model (%s): torch ops",
                cfg.family.value,
                ", ".join(gaps),
            )
        self.ops = layer_ops(native and not gaps)
        self.dtype = dtype
        self.mode = mode = mode or natural_mode(dtype)
        w = weights
        norm = lambda name: (w[name].float() + cfg.norm_offset).to(dtype)  # Gemma's (1 + w), folded once
        optional = lambda name, make: make(name) if name in w else None
        self.norm = norm("norm")  # [E]
        head = w["embed"] if cfg.tie_embeddings else w["lm_head"]
        self.lm_head = build_product([head], lm_head_mode(mode, head, dtype))  # E → V
        self.embed = build_embedding(w["embed"], self.lm_head if cfg.tie_embeddings else None, mode, dtype)  # [V, E]
        # Int modes computing in bfloat16 keep a bfloat16 copy of the layers' matrices for prompt rows
        # (quant_weights.SplitProduct); the lm_head only multiplies the rows that sample, so it keeps one path.
        wide = dtype == torch.bfloat16
        self.layers = []
        for i in range(cfg.n_layers):
            p = f"layers.{i}."
            bias = torch.cat([w[p + "q_bias"], w[p + "k_bias"], w[p + "v_bias"]]).to(dtype) if cfg.qkv_bias else None
            self.layers.append(
                LayerWeights(
                    attn_norm=norm(p + "attn_norm"),
                    qkv=build_product([w[p + "q"], w[p + "k"], w[p + "v"]], mode, wide),
                    o=build_product([w[p + "o"]], mode, wide),
                    mlp_norm=norm(p + "mlp_norm"),
                    gate_up=build_product([w[p + "gate"], w[p + "up"]], mode, wide),
                    down=build_product([w[p + "down"]], mode, wide),
                    qkv_bias=bias,
                    q_norm=optional(p + "q_norm", norm),
                    k_norm=optional(p + "k_norm", norm),
                    post_attn_norm=optional(p + "post_attn_norm", norm),
                    post_mlp_norm=optional(p + "post_mlp_norm", norm),
                )
            )
        copies = [
            product.wide.nbytes
            for layer in self.layers
            for product in (layer.qkv, layer.o, layer.gate_up, layer.down)
            if isinstance(product, SplitProduct)
        ]
        if copies:  # the opt-in bfloat16 copy for prompt rows: its memory, said once
            log.info(
                "prefill copy: %d products keep a bfloat16 copy for prompt rows, %.2f GiB beside %.2f GiB of weights",
                len(copies),
                sum(copies) / (1 << 30),
                self.weight_nbytes() / (1 << 30),  # what decode reads: a SplitProduct's nbytes are its narrow path's
            )
        # Rotary tables for every position, one pair per distinct rope (Gemma 3's local layers have their own)
        tables: dict[Rope, tuple[torch.Tensor, torch.Tensor]] = {}
        for i in range(cfg.n_layers):
            rope = cfg.layer_rope(i)
            if rope not in tables:
                tables[rope] = _rotary_tables(rope, cfg.head_dim, cfg.max_context, dtype)
        self._rotary = [tables[cfg.layer_rope(i)] for i in range(cfg.n_layers)]
        self._windows = [cfg.window(i) for i in range(cfg.n_layers)]
        self._scale = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim**-0.5  # the logits' scale
        # the layers as native/decode_layers.cpp takes them, when the native ops loaded and it can call every product
        self._native_stack = self.ops.stack(self.layers) if isinstance(self.ops, NativeOps) else None

    def weight_nbytes(self) -> int:
        """Bytes read per forward step (the tied embedding is read once, as the lm_head)."""
        norm = self.norm.numel() * self.norm.element_size()
        return norm + self.lm_head.nbytes + sum(layer.nbytes() for layer in self.layers)

    def forward(self, batch: StepBatch, kv: KVCache) -> torch.Tensor:
        """Runs every row of the batch, writes their K/V into kv, returns float32 logits [S, V] for batch.logit_rows."""
        cfg = self.cfg
        n_heads, n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        # x is this step's own tensor (the embedding rows were copied out by the lookup): the layers add to it in place
        x = self.embed[batch.input_ids]  # [T, E]
        if cfg.embed_scale != 1.0:
            x.mul_(cfg.embed_scale)
        if self._native_stack is not None and not batch.prefills:
            self.ops.decode_layers(
                x,
                self._native_stack,
                self._rotary,
                self._windows,
                batch,
                kv.data,
                n_heads,
                n_kv_heads,
                cfg.rms_eps,
                self._scale,
                cfg.activation is Activation.GELU_TANH,
            )
        else:
            self._layers(x, batch, kv)
        h = F.rms_norm(x[batch.logit_rows], (cfg.hidden_size,), self.norm, cfg.rms_eps)  # [S, E]
        return self.lm_head(h).float()  # [S, V]

    def _layers(self, x: torch.Tensor, batch: StepBatch, kv: KVCache) -> None:
        """Every layer, advancing the residual stream x [T, E] in place; each residual add is fused with the norm
        that reads the sum. (A pure-decode step runs the same ops in native/decode_layers.cpp where it can.)"""
        cfg, ops, eps = self.cfg, self.ops, self.cfg.rms_eps
        n_heads, n_kv_heads, head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        narrow = batch.narrow_rows
        h = ops.add_rms_norm(x, None, self.layers[0].attn_norm, eps)
        for index, layer in enumerate(self.layers):
            cache = kv.layer(index)  # [2, slots, Hkv, D]
            qkv = multiply(layer.qkv, h, narrow)  # [T, (H + 2 Hkv) D]
            if layer.qkv_bias is not None:
                qkv = qkv + layer.qkv_bias
            cos, signed_sin = self._rotary[index]
            q, k = ops.rope_write(
                qkv,
                cos,
                signed_sin,
                batch.positions,
                cache,
                batch.slot_mapping,
                n_heads,
                n_kv_heads,
                layer.q_norm,
                layer.k_norm,
                eps,
            )  # [T, H, D], [T, Hkv, D]: q and k normed (where the model norms them) and rotated
            v = qkv[:, (n_heads + n_kv_heads) * head_dim :].view(-1, n_kv_heads, head_dim)
            attn = _attention(ops, q, k, v, kv, index, batch, self._windows[index], cfg.query_scale)  # [T, H, D]
            out = multiply(layer.o, attn.flatten(1), narrow)
            if layer.post_attn_norm is not None:  # Gemma's norm of the output before the residual add
                out = ops.add_rms_norm(out, None, layer.post_attn_norm, eps)
            h = ops.add_rms_norm(x, out, layer.mlp_norm, eps)
            gate_up = multiply(layer.gate_up, h, narrow)
            act = ops.silu_mul(gate_up) if cfg.activation is Activation.SILU else ops.gelu_mul(gate_up)
            mlp = multiply(layer.down, act, narrow)
            if layer.post_mlp_norm is not None:
                mlp = ops.add_rms_norm(mlp, None, layer.post_mlp_norm, eps)
            if index + 1 < len(self.layers):
                h = ops.add_rms_norm(x, mlp, self.layers[index + 1].attn_norm, eps)
            else:
                x.add_(mlp)


def _rotary_tables(
    rope: Rope, head_dim: int, max_context: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign-folded sin for every position [P, D], computed in float32 as the reference implementation does."""
    angles = torch.outer(torch.arange(max_context, dtype=torch.float32), inverse_frequencies(rope, head_dim))
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)


def _attention(
    ops,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv: KVCache,
    index: int,
    batch: StepBatch,
    window: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, Hkv, D] (this step's, already in layer index of the cache). Decode rows through the
    layer ops; each prefill chunk through one SDPA (torch's flash kernel is the fast one for many query rows).
    window: each query sees the last `window` positions only (itself included), by masking on positions: the cache
    keeps every token, which is the simplest correct way. scale: None → D ** -0.5."""
    n = batch.n_decode
    if not batch.prefills:  # a pure decode step, the common case: the result needs no assembly
        return ops.decode_attention(q, kv.layer(index), batch, scale, window)
    out = torch.empty_like(q)
    if n:
        out[:n] = ops.decode_attention(q[:n], kv.layer(index), batch, scale, window)
    for chunk in batch.prefills:
        query = q[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
        if chunk.context_slots is None:  # first chunk: attends to itself only
            keys = k[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)  # [1, Hkv, n, D]
            values = v[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)
            if window is None:
                result = F.scaled_dot_product_attention(
                    query, keys, values, is_causal=True, enable_gqa=True, scale=scale
                )
            else:
                pos = torch.arange(chunk.end - chunk.start)
                mask = _window_mask(pos, pos, window)
                result = F.scaled_dot_product_attention(
                    query, keys, values, attn_mask=mask, enable_gqa=True, scale=scale
                )
        else:
            context = kv.gather(index, chunk.context_slots).transpose(1, 2)  # [2, Hkv, n_ctx, D]
            mask = chunk.mask
            if window is not None:
                mask = _window_mask(batch.positions[chunk.start : chunk.end], torch.arange(mask.shape[1]), window)
            result = F.scaled_dot_product_attention(
                query, context[0:1], context[1:2], attn_mask=mask, enable_gqa=True, scale=scale
            )
        out[chunk.start : chunk.end] = result.squeeze(0).transpose(0, 1)
    return out


def _window_mask(query_pos: torch.Tensor, key_pos: torch.Tensor, window: int) -> torch.Tensor:
    """[n_q, n_k] bool, True = may attend: causal, and within the last `window` positions (HF: q - k < window)."""
    distance = query_pos[:, None] - key_pos[None, :]
    return (distance >= 0) & (distance < window)
