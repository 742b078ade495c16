"""KV snapshot copies by runs of consecutive slots: the same bytes a per-slot gather gives, for any block table."""

from __future__ import annotations

import torch

from kernel.engine.cpu.kv_cache import KVCache, SlotRun, slot_runs

BLOCK = 4


def test_adjacent_blocks_merge_into_runs():
    assert slot_runs([3, 4, 5, 9, 2, 3], BLOCK, 22) == [SlotRun(12, 0, 12), SlotRun(36, 12, 4), SlotRun(8, 16, 6)]
    assert slot_runs([7], BLOCK, 1) == [SlotRun(28, 0, 1)]
    assert slot_runs([1, 2], BLOCK, 0) == []


def _per_slot(block_table: list[int], n_tokens: int) -> torch.Tensor:
    blocks = torch.tensor(block_table)
    return (blocks[:, None] * BLOCK + torch.arange(BLOCK)).flatten()[:n_tokens]


def test_save_then_load_round_trips_through_a_fragmented_table():
    cache = KVCache(n_layers=3, n_slots=16 * BLOCK, n_kv_heads=2, head_dim=5, dtype=torch.bfloat16)
    cache.data.copy_(torch.randn(cache.data.shape))
    table, n_tokens = [5, 6, 1, 9, 10, 11], 22
    buffer = bytearray(n_tokens * cache.bytes_per_token)
    assert cache.save(slot_runs(table, BLOCK, n_tokens), n_tokens, memoryview(buffer)) == len(buffer)
    expected = cache.data.index_select(2, _per_slot(table, n_tokens))
    saved = torch.frombuffer(buffer, dtype=torch.bfloat16).view(expected.shape)
    assert torch.equal(saved, expected)

    target, n_loaded = [2, 3, 4, 12, 13], 19  # fewer tokens than the snapshot holds: its stride stays 22
    cache.load(slot_runs(target, BLOCK, n_loaded), memoryview(bytes(buffer)), n_tokens)
    assert torch.equal(cache.data.index_select(2, _per_slot(target, n_loaded)), expected[:, :, :n_loaded])
