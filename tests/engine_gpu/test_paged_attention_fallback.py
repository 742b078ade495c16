"""The torch paged attention (kernel/engine/gpu/paged_attention.py) against a naive attention over each sequence's
contiguous K/V, on the CPU: random page tables (pages scattered and shared out of order), cached lengths, new-token
counts, grouped heads, with and without the new K/V passed in. It stands in for flash-attn's paged kernel on the GPU
machine, so any difference here would be a wrong token there."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.engine.gpu.paged_attention import UnsupportedAttention, paged_attention


def naive(q, keys, values, scale):
    """q [q_len, heads, d]; keys / values [total, kv_heads, d]; bottom-right causal; float64."""
    q_len, heads, d = q.shape
    total, kv_heads, _ = keys.shape
    group = heads // kv_heads
    out = torch.empty(q_len, heads, d, dtype=torch.float64)
    for h in range(heads):
        kh, vh = keys[:, h // group].double(), values[:, h // group].double()
        for j in range(q_len):
            visible = total - q_len + j + 1
            w = torch.softmax((kh[:visible] @ q[j, h].double()) * scale, dim=0)
            out[j, h] = w @ vh[:visible]
    return out


@st.composite
def cases(draw):
    page = draw(st.sampled_from([2, 4, 8]))
    kv_heads = draw(st.integers(1, 2))
    heads = kv_heads * draw(st.integers(1, 3))
    head_dim = draw(st.sampled_from([4, 8]))
    batch = draw(st.integers(1, 3))
    q_len = draw(st.integers(1, 9))
    starts = draw(st.lists(st.integers(0, 20), min_size=batch, max_size=batch))
    pass_new = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return page, kv_heads, heads, head_dim, q_len, starts, pass_new, seed


@settings(max_examples=150, deadline=None)
@given(cases())
def test_matches_naive_attention_over_the_gathered_sequence(case):
    page, kv_heads, heads, head_dim, q_len, starts, pass_new, seed = case
    gen = torch.Generator().manual_seed(seed)
    batch = len(starts)
    totals = [s + q_len for s in starts]
    need = [-(-t // page) for t in totals]
    n_pages = sum(need) + 3
    order = torch.randperm(n_pages, generator=gen).tolist()  # pages handed out scattered
    tables, at = [], 0
    for n in need:
        tables.append(order[at : at + n])
        at += n
    width = max(need) + 1
    block_table = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
    k_cache = torch.randn(n_pages, page, kv_heads, head_dim, generator=gen)
    v_cache = torch.randn(n_pages, page, kv_heads, head_dim, generator=gen)
    q = torch.randn(batch, q_len, heads, head_dim, generator=gen)
    k_new = torch.randn(batch, q_len, kv_heads, head_dim, generator=gen)
    v_new = torch.randn(batch, q_len, kv_heads, head_dim, generator=gen)
    scale = 1 / math.sqrt(head_dim)

    def rows(r, n):  # cache (page, offset) of row r's first n positions
        return [(tables[r][p // page], p % page) for p in range(n)]

    if pass_new:
        out = paged_attention(
            q,
            k_cache,
            v_cache,
            k_new,
            v_new,
            torch.tensor(starts, dtype=torch.int32),
            block_table,
            causal=True,
            softmax_scale=scale,
        )
    else:  # ExLlamaV2's sequential case: the new K/V were written already, lengths count them
        for r, s in enumerate(starts):
            for i, (pg, off) in enumerate(rows(r, totals[r])[s:]):
                k_cache[pg, off], v_cache[pg, off] = k_new[r, i], v_new[r, i]
        out = paged_attention(
            q,
            k_cache,
            v_cache,
            None,
            None,
            torch.tensor(totals, dtype=torch.int32),
            block_table,
            causal=True,
            softmax_scale=scale,
        )
    for r in range(batch):
        where = rows(r, totals[r])
        keys = torch.stack([k_cache[pg, off] for pg, off in where])
        values = torch.stack([v_cache[pg, off] for pg, off in where])
        # the new K/V landed at positions start .. start + q_len of the row's own pages
        assert torch.equal(keys[starts[r] :], k_new[r]) and torch.equal(values[starts[r] :], v_new[r])
        torch.testing.assert_close(out[r].double(), naive(q[r], keys, values, scale), atol=1e-5, rtol=1e-5)


def test_other_rows_pages_are_left_alone():
    page, gen = 4, torch.Generator().manual_seed(1)
    k_cache = torch.randn(6, page, 1, 4, generator=gen)
    v_cache = torch.randn(6, page, 1, 4, generator=gen)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    q = torch.randn(1, 3, 1, 4, generator=gen)
    k = torch.randn(1, 3, 1, 4, generator=gen)
    paged_attention(
        q,
        k_cache,
        v_cache,
        k,
        k.clone(),
        torch.tensor([2], dtype=torch.int32),
        torch.tensor([[4, 1]], dtype=torch.int32),
    )
    touched = {(4, 2), (4, 3), (1, 0)}
    for pg in range(6):
        for off in range(page):
            if (pg, off) not in touched:
                assert torch.equal(k_cache[pg, off], before_k[pg, off]) and torch.equal(
                    v_cache[pg, off], before_v[pg, off]
                )


@pytest.mark.parametrize("extra", [{"window_size": (8, 8)}, {"softcap": 30.0}, {"alibi_slopes": None}])
def test_features_it_lacks_are_refused(extra):
    q = torch.zeros(1, 1, 1, 4)
    cache = torch.zeros(2, 4, 1, 4)
    with pytest.raises(UnsupportedAttention):
        paged_attention(
            q,
            cache,
            cache.clone(),
            None,
            None,
            torch.tensor([1], dtype=torch.int32),
            torch.tensor([[0]], dtype=torch.int32),
            **extra,
        )
