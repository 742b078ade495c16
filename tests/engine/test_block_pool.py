"""Block accounting: reference counts, prefix matching by hash chain, LRU eviction of cached blocks."""
from __future__ import annotations

import pytest

from kernel.engine.block_pool import ROOT_HASH, BlockPool, block_hash


def _register_all(pool: BlockPool, blocks: list[int], tokens: list[int]) -> None:
    parent = ROOT_HASH
    for i, block in enumerate(blocks):
        parent = block_hash(parent, tokens[i * pool.block_size:(i + 1) * pool.block_size])
        pool.register(block, parent)


def test_released_prefix_is_matched_then_shared():
    pool = BlockPool(8, 4)
    tokens = list(range(12))
    blocks = pool.allocate(3)
    _register_all(pool, blocks, tokens)
    pool.release(blocks)
    assert pool.num_available() == 8                      # cached blocks still count as available
    matched, _ = pool.match_prefix(tokens + [99], max_tokens=12)
    assert matched == blocks
    again, _ = pool.match_prefix(tokens, max_tokens=11)   # whole blocks only, up to max_tokens
    assert again == blocks[:2]
    assert pool.num_available() == 5


def test_without_caching_a_released_sequence_is_never_matched():
    pool = BlockPool(8, 4, caching=False)
    tokens = list(range(12))
    blocks = pool.allocate(3)
    _register_all(pool, blocks, tokens)
    pool.release(blocks)
    assert pool.match_prefix(tokens + [99], max_tokens=12)[0] == []
    assert sorted(pool.allocate(8)) == list(range(8))      # released blocks went straight back to the free list


def test_different_prefix_does_not_match():
    pool = BlockPool(4, 4)
    blocks = pool.allocate(2)
    _register_all(pool, blocks, [1, 2, 3, 4, 5, 6, 7, 8])
    pool.release(blocks)
    matched, _ = pool.match_prefix([1, 2, 3, 0, 5, 6, 7, 8], max_tokens=8)
    assert matched == []
    # Same second block content after a different first block: the chain differs, so no match either.
    assert pool.match_prefix([9, 9, 9, 9, 5, 6, 7, 8], max_tokens=8)[0] == []


def test_eviction_takes_free_blocks_first_then_least_recent_tail_first():
    pool = BlockPool(3, 2)
    blocks = pool.allocate(2)
    _register_all(pool, blocks, [1, 2, 3, 4])
    pool.release(blocks)
    assert pool.allocate(1) == [2]                         # the never-used block
    assert pool.allocate(1) == [blocks[1]]                 # then the cached tail, keeping the shared head
    assert pool.match_prefix([1, 2, 3, 4], max_tokens=4)[0] == [blocks[0]]
    with pytest.raises(MemoryError):
        pool.allocate(1)
