"""Our llama forward pass: RMSNorm, rotary embeddings, grouped-query attention over a paged KV cache, SwiGLU.

The weight products are torch's kernels (quant_weights.py); the steps between them are the layer ops (layer_ops.py:
fused native ops where they build, else torch ops), and a pure-decode step runs all its layers in one native call.

Shapes: T = rows in the step (all sequences' tokens flattened), H = attention heads, Hkv = KV heads, D = head_dim,
E = hidden size, F = MLP size, V = vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.layer_ops import NativeOps, layer_ops
from kernel.engine.cpu.quant_weights import (Product, Weight, build_embedding, build_product, lm_head_mode,
                                              multiply, natural_mode)
from kernel.engine.loading.model_config import LlamaConfig
from kernel.engine.cpu.step_batch import StepBatch


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: torch.Tensor   # [E]
    qkv: Product              # E → (H + 2 Hkv) D: q, k, v projections fused into one matmul
    o: Product                # H D → E
    mlp_norm: torch.Tensor    # [E]
    gate_up: Product          # E → 2 F: gate and up fused
    down: Product             # F → E

    def nbytes(self) -> int:
        norms = (self.attn_norm.numel() + self.mlp_norm.numel()) * self.attn_norm.element_size()
        return norms + sum(linear.nbytes for linear in (self.qkv, self.o, self.gate_up, self.down))


class LlamaModel:
    def __init__(self, cfg: LlamaConfig, weights: dict[str, Weight], dtype: torch.dtype, mode: str | None = None,
                 native: bool = True):
        """dtype: activations, norms and KV; mode: how the matrices are stored and multiplied (quant_weights.py),
        None → the compute dtype's own float (weights: float tensors or GGUF-quantized GroupQuantized). native: the
        steps between products as fused native ops where they build (layer_ops.py), else torch ops."""
        self.cfg = cfg
        self.ops = layer_ops(native)
        self.dtype = dtype
        self.mode = mode = mode or natural_mode(dtype)
        w = weights
        self.norm = w["norm"].to(dtype)                                                     # [E]
        head = w["embed"] if cfg.tie_embeddings else w["lm_head"]
        self.lm_head = build_product([head], lm_head_mode(mode, head, dtype))                           # E → V
        self.embed = build_embedding(w["embed"], self.lm_head if cfg.tie_embeddings else None, mode, dtype)  # [V, E]
        # Int modes computing in bfloat16 keep a bfloat16 copy of the layers' matrices for prompt rows
        # (quant_weights.SplitProduct); the lm_head only multiplies the rows that sample, so it keeps one path.
        wide = dtype == torch.bfloat16
        self.layers = [LayerWeights(
            attn_norm=w[f"layers.{i}.attn_norm"].to(dtype),
            qkv=build_product([w[f"layers.{i}.q"], w[f"layers.{i}.k"], w[f"layers.{i}.v"]], mode, wide),
            o=build_product([w[f"layers.{i}.o"]], mode, wide),
            mlp_norm=w[f"layers.{i}.mlp_norm"].to(dtype),
            gate_up=build_product([w[f"layers.{i}.gate"], w[f"layers.{i}.up"]], mode, wide),
            down=build_product([w[f"layers.{i}.down"]], mode, wide)) for i in range(cfg.n_layers)]
        # Rotary tables for every position, computed in float32 as the reference implementation does.
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        angles = torch.outer(torch.arange(cfg.max_context, dtype=torch.float32), inv_freq)   # [P, D/2]
        cos, sin = angles.cos(), angles.sin()
        self._cos = torch.cat([cos, cos], dim=-1).to(dtype)                                   # [P, D]
        self._signed_sin = torch.cat([-sin, sin], dim=-1).to(dtype)                           # [P, D]
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
        x = self.embed[batch.input_ids]                                   # [T, E]
        if self._native_stack is not None and not batch.prefills:
            self.ops.decode_layers(x, self._native_stack, self._cos, self._signed_sin, batch, kv.data, n_heads,
                                   n_kv_heads, cfg.rms_eps)
        else:
            self._layers(x, batch, kv)
        h = F.rms_norm(x[batch.logit_rows], (cfg.hidden_size,), self.norm, cfg.rms_eps)   # [S, E]
        return self.lm_head(h).float()                                                   # [S, V]

    def _layers(self, x: torch.Tensor, batch: StepBatch, kv: KVCache) -> None:
        """Every layer, advancing the residual stream x [T, E] in place; each residual add is fused with the norm
        that reads the sum. (A pure-decode step runs the same ops in native/decode_layers.cpp where it can.)"""
        cfg, ops = self.cfg, self.ops
        n_heads, n_kv_heads, head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        narrow = batch.narrow_rows
        h = ops.add_rms_norm(x, None, self.layers[0].attn_norm, cfg.rms_eps)
        for index, layer in enumerate(self.layers):
            cache = kv.layer(index)                                       # [2, slots, Hkv, D]
            qkv = multiply(layer.qkv, h, narrow)                          # [T, (H + 2 Hkv) D]
            q, k = ops.rope_write(qkv, self._cos, self._signed_sin, batch.positions, cache, batch.slot_mapping,
                                  n_heads, n_kv_heads)                    # [T, H, D], [T, Hkv, D]
            v = qkv[:, (n_heads + n_kv_heads) * head_dim:].view(-1, n_kv_heads, head_dim)
            attn = _attention(ops, q, k, v, kv, index, batch)            # [T, H, D]
            h = ops.add_rms_norm(x, multiply(layer.o, attn.flatten(1), narrow), layer.mlp_norm, cfg.rms_eps)
            mlp = multiply(layer.down, ops.silu_mul(multiply(layer.gate_up, h, narrow)), narrow)
            if index + 1 < len(self.layers):
                h = ops.add_rms_norm(x, mlp, self.layers[index + 1].attn_norm, cfg.rms_eps)
            else:
                x.add_(mlp)


def _attention(ops, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVCache, index: int, batch: StepBatch
               ) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, Hkv, D] (this step's, already in layer index of the cache). Decode rows through the
    layer ops; each prefill chunk through one SDPA (torch's flash kernel is the fast one for many query rows)."""
    n = batch.n_decode
    if not batch.prefills:            # a pure decode step, the common case: the result needs no assembly
        return ops.decode_attention(q, kv.layer(index), batch)
    out = torch.empty_like(q)
    if n:
        out[:n] = ops.decode_attention(q[:n], kv.layer(index), batch)
    for chunk in batch.prefills:
        query = q[chunk.start:chunk.end].transpose(0, 1).unsqueeze(0)       # [1, H, n, D]
        if chunk.context_slots is None:   # first chunk: attends to itself only
            keys = k[chunk.start:chunk.end].transpose(0, 1).unsqueeze(0)    # [1, Hkv, n, D]
            values = v[chunk.start:chunk.end].transpose(0, 1).unsqueeze(0)
            result = F.scaled_dot_product_attention(query, keys, values, is_causal=True, enable_gqa=True)
        else:
            context = kv.gather(index, chunk.context_slots).transpose(1, 2)    # [2, Hkv, n_ctx, D]
            result = F.scaled_dot_product_attention(query, context[0:1], context[1:2], attn_mask=chunk.mask,
                                                    enable_gqa=True)
        out[chunk.start:chunk.end] = result.squeeze(0).transpose(0, 1)
    return out
