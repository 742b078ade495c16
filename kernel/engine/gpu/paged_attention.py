"""Paged attention in plain torch, with flash-attn's flash_attn_with_kvcache contract, for a GPU without flash-attn.

ExLlamaV2's paged forward (attn.py, forward_paged) calls flash_attn_with_kvcache, and flash-attn has no wheel for every
torch / CUDA pair (none for CUDA 13 at the time of writing; building it takes far longer than a short GPU window). This
function does what that call does, slower, so the engine still runs, exactly:
- q [batch, q_len, heads, head_dim]; k_cache / v_cache [pages, page_size, kv_heads, head_dim] (the paged view of the
  cache); block_table [batch, max_pages] int32 maps each row's logical page to a cache page; cache_seqlens [batch]
  int32;
- if k / v [batch, q_len, kv_heads, head_dim] are given, they are first written into the cache at positions
  cache_seqlens .. cache_seqlens + q_len of each row, and attention covers those too; if not (ExLlamaV2's "sequential"
  case, the new K/V already written), attention covers the first cache_seqlens positions;
- causal masking is aligned bottom-right: query j of q_len sees keys 0 .. total - q_len + j;
- grouped-query heads: query head h reads kv head h // (heads // kv_heads).
Sliding windows and logit soft-capping are refused (ExLlamaV2 passes them only when flash-attn supports them, so a model
needing them would otherwise run silently wrong): load_runtime refuses such models before any forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class UnsupportedAttention(ValueError):
    """A flash-attn feature this fallback does not implement was asked for."""


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    cache_seqlens: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    causal: bool = True,
    softmax_scale: float | None = None,
    window_size=(-1, -1),
    softcap: float = 0.0,
    **unsupported,
) -> torch.Tensor:
    if tuple(window_size) != (-1, -1) or softcap or unsupported:
        raise UnsupportedAttention(
            f"the torch paged attention has no sliding window / softcap / "
            f"{sorted(unsupported)}: this model needs flash-attn"
        )
    if cache_seqlens is None or block_table is None:
        raise UnsupportedAttention("the torch paged attention needs cache_seqlens and block_table (paged cache)")
    batch, q_len, n_heads, head_dim = q.shape
    page, n_kv = k_cache.shape[1], k_cache.shape[2]
    if n_heads % n_kv:
        raise UnsupportedAttention(f"{n_heads} query heads do not group over {n_kv} kv heads")
    n_new = 0 if k is None else k.shape[1]
    # One host copy of the small index tensors per call (flash-attn reads them on the device; we need Python ints).
    lens = cache_seqlens.tolist()
    table = block_table.tolist()
    out = torch.empty_like(q)
    for row in range(batch):
        start = lens[row]
        total = start + n_new
        pages = torch.tensor(table[row][: -(-total // page)], dtype=torch.long, device=k_cache.device)
        if k is not None:
            pos = torch.arange(start, total, device=k_cache.device)
            cache_page, offset = pages[pos // page], pos % page
            k_cache[cache_page, offset] = k[row]
            v_cache[cache_page, offset] = v[row]
        keys = k_cache.index_select(0, pages).flatten(0, 1)[:total]  # [total, kv_heads, head_dim]
        values = v_cache.index_select(0, pages).flatten(0, 1)[:total]
        group = n_heads // n_kv
        keys = keys.transpose(0, 1).repeat_interleave(group, 0)  # [heads, total, head_dim]
        values = values.transpose(0, 1).repeat_interleave(group, 0)
        mask = None
        if causal:
            key_pos = torch.arange(total, device=q.device)
            last_seen = torch.arange(q_len, device=q.device) + (total - q_len)
            mask = key_pos[None, :] <= last_seen[:, None]  # [q_len, total]
        attended = F.scaled_dot_product_attention(
            q[row].transpose(0, 1), keys, values, attn_mask=mask, scale=softmax_scale
        )  # [heads, q_len, head_dim]
        out[row] = attended.transpose(0, 1)
    return out
