"""Our llama forward pass in torch: RMSNorm, rotary embeddings, grouped-query attention over a paged KV cache, SwiGLU.

Shapes: T = rows in the step (all sequences' tokens flattened), H = attention heads, Hkv = KV heads, D = head_dim,
E = hidden size, F = MLP size, V = vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.quant_weights import (Product, Weight, build_embedding, build_product, lm_head_mode,
                                              natural_mode)
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
    def __init__(self, cfg: LlamaConfig, weights: dict[str, Weight], dtype: torch.dtype, mode: str | None = None):
        """dtype: activations, norms and KV; mode: how the matrices are stored and multiplied (quant_weights.py),
        None → the compute dtype's own float (weights: float tensors or GGUF-quantized GroupQuantized)."""
        self.cfg = cfg
        self.dtype = dtype
        self.mode = mode = mode or natural_mode(dtype)
        w = weights
        self.norm = w["norm"].to(dtype)                                                     # [E]
        head = w["embed"] if cfg.tie_embeddings else w["lm_head"]
        self.lm_head = build_product([head], lm_head_mode(mode, head))                                  # E → V
        self.embed = build_embedding(w["embed"], self.lm_head if cfg.tie_embeddings else None, mode, dtype)  # [V, E]
        self.layers = [LayerWeights(
            attn_norm=w[f"layers.{i}.attn_norm"].to(dtype),
            qkv=build_product([w[f"layers.{i}.q"], w[f"layers.{i}.k"], w[f"layers.{i}.v"]], mode),
            o=build_product([w[f"layers.{i}.o"]], mode),
            mlp_norm=w[f"layers.{i}.mlp_norm"].to(dtype),
            gate_up=build_product([w[f"layers.{i}.gate"], w[f"layers.{i}.up"]], mode),
            down=build_product([w[f"layers.{i}.down"]], mode)) for i in range(cfg.n_layers)]
        # Rotary tables for every position, computed in float32 as the reference implementation does.
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        angles = torch.outer(torch.arange(cfg.max_context, dtype=torch.float32), inv_freq)   # [P, D/2]
        cos, sin = angles.cos(), angles.sin()
        self._cos = torch.cat([cos, cos], dim=-1).to(dtype)                                   # [P, D]
        self._signed_sin = torch.cat([-sin, sin], dim=-1).to(dtype)                           # [P, D]

    def weight_nbytes(self) -> int:
        """Bytes read per forward step (the tied embedding is read once, as the lm_head)."""
        norm = self.norm.numel() * self.norm.element_size()
        return norm + self.lm_head.nbytes + sum(layer.nbytes() for layer in self.layers)

    def forward(self, batch: StepBatch, kv: KVCache) -> torch.Tensor:
        """Runs every row of the batch, writes their K/V into kv, returns float32 logits [S, V] for batch.logit_rows."""
        cfg = self.cfg
        x = self.embed[batch.input_ids]                                   # [T, E]
        cos = self._cos[batch.positions].unsqueeze(1)                     # [T, 1, D]
        signed_sin = self._signed_sin[batch.positions].unsqueeze(1)       # [T, 1, D]
        q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        for index, layer in enumerate(self.layers):
            h = F.rms_norm(x, (cfg.hidden_size,), layer.attn_norm, cfg.rms_eps)
            qk, v = layer.qkv(h).split([q_size + kv_size, kv_size], dim=-1)
            qk = _rotate(qk.view(-1, cfg.n_heads + cfg.n_kv_heads, cfg.head_dim), cos, signed_sin)  # [T, H + Hkv, D]
            q, k = qk.split([cfg.n_heads, cfg.n_kv_heads], dim=1)                # [T, H, D], [T, Hkv, D]
            v = v.view(-1, cfg.n_kv_heads, cfg.head_dim)                        # [T, Hkv, D]
            kv.write(index, batch.slot_mapping, k, v)
            attn = _attention(q, k, v, kv, index, batch)                        # [T, H, D]
            # In place: x is this step's own tensor (the embedding rows were copied out by the lookup).
            x.add_(layer.o(attn.flatten(1)))
            h = F.rms_norm(x, (cfg.hidden_size,), layer.mlp_norm, cfg.rms_eps)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)                        # [T, F] each
            x.add_(layer.down(F.silu(gate).mul_(up)))
        h = F.rms_norm(x[batch.logit_rows], (cfg.hidden_size,), self.norm, cfg.rms_eps)   # [S, E]
        return self.lm_head(h).float()                                                   # [S, V]


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half convention: x * cos + [-x2, x1] * sin, with the sign folded into the table (exact:
    (-a) * b == a * (-b)) so the half swap is one roll. x: [T, heads, D]; cos, signed_sin: [T, 1, D]."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVCache, index: int, batch: StepBatch
               ) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, Hkv, D] (this step's, already in layer index of the cache)."""
    n = batch.n_decode
    if not batch.prefills:            # a pure decode step, the common case: the result needs no assembly
        return _decode_attention(q, kv, index, batch)
    out = torch.empty_like(q)
    if n:
        out[:n] = _decode_attention(q[:n], kv, index, batch)
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


def _decode_attention(q: torch.Tensor, kv: KVCache, index: int, batch: StepBatch) -> torch.Tensor:
    """The single-token rows, each over its own context. q: [n_decode, H, D] → [n_decode, H, D].

    One attention per sequence over a view of its slots, not one over a padded gather of every context: the gather
    copied each layer's whole context and the padding needed a mask, 1.7x (200 tokens) to 4x (1k tokens) slower at 8
    sequences than these views (bench/RESULTS.md, "Engine speed vs llama.cpp")."""
    out = q if len(batch.decode_contexts) == 1 else torch.empty_like(q)
    for row, context in enumerate(batch.decode_contexts):
        keys_values = kv.span(index, *context) if isinstance(context, tuple) else kv.gather(index, context)
        keys_values = keys_values.transpose(1, 2).unsqueeze(1)                  # [2, 1, Hkv, n_ctx, D]
        result = F.scaled_dot_product_attention(q[row:row + 1].unsqueeze(2), keys_values[0], keys_values[1],
                                                enable_gqa=True)               # [1, H, 1, D]
        if out is q:
            return result.view_as(q)
        out[row] = result.view(q.shape[1:])
    return out
