"""Block accounting: reference counts, prefix matching by hash chain (verified by tokens and parent block), LRU
eviction of cached blocks."""

from __future__ import annotations

import pytest

from kernel.engine.core import block_pool
from kernel.engine.core.block_pool import ROOT_LINK, BlockPool


def _register_all(pool: BlockPool, blocks: list[int], tokens: list[int]) -> None:
    link = ROOT_LINK
    for i, block in enumerate(blocks):
        link = pool.register(block, link, tokens[i * pool.block_size : (i + 1) * pool.block_size])


def test_released_prefix_is_matched_then_shared():
    pool = BlockPool(8, 4)
    tokens = list(range(12))
    blocks = pool.allocate(3)
    _register_all(pool, blocks, tokens)
    pool.release(blocks)
    assert pool.num_available() == 8  # cached blocks still count as available
    matched, _ = pool.match_prefix(tokens + [99], max_tokens=12)
    assert matched == blocks
    again, _ = pool.match_prefix(tokens, max_tokens=11)  # whole blocks only, up to max_tokens
    assert again == blocks[:2]
    assert pool.num_available() == 5


def test_without_caching_a_released_sequence_is_never_matched():
    pool = BlockPool(8, 4, caching=False)
    tokens = list(range(12))
    blocks = pool.allocate(3)
    _register_all(pool, blocks, tokens)
    pool.release(blocks)
    assert pool.match_prefix(tokens + [99], max_tokens=12)[0] == []
    assert sorted(pool.allocate(8)) == list(range(8))  # released blocks went straight back to the free list


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
    assert pool.allocate(1) == [2]  # the never-used block
    assert pool.allocate(1) == [blocks[1]]  # then the cached tail, keeping the shared head
    assert pool.match_prefix([1, 2, 3, 4], max_tokens=4)[0] == [blocks[0]]
    with pytest.raises(MemoryError):
        pool.allocate(1)


@pytest.fixture
def colliding_hash(monkeypatch):
    """Every block hashes alike: any lookup after the first registration finds a candidate of another prefix."""
    monkeypatch.setattr(block_pool, "block_hash", lambda parent, tokens: 42)


def test_a_hash_collision_is_a_miss(colliding_hash):
    pool = BlockPool(8, 4)
    blocks = pool.allocate(2)
    _register_all(pool, blocks, [1, 2, 3, 4, 5, 6, 7, 8])
    pool.release(blocks)
    assert pool.match_prefix([9, 9, 9, 9, 1], max_tokens=4)[0] == []  # same hash, other tokens
    assert pool.match_prefix([1, 2, 3, 4, 5, 6, 7, 8, 0], max_tokens=8)[0] == [blocks[0]]  # the real prefix hits
    # A colliding registration is refused and ends that sequence's chain; the first holder keeps the hash.
    other = pool.allocate(1)
    assert pool.register(other[0], ROOT_LINK, [9, 9, 9, 9]) is None
    assert pool.match_prefix([1, 2, 3, 4, 0], max_tokens=4)[0] == [blocks[0]]


def test_same_tokens_after_another_prefix_with_a_colliding_hash_is_a_miss(monkeypatch):
    """The crafted case: an attacker's second block holds the victim's next tokens and its hash collides with the
    victim's (here: the hash ignores the parent); only the parent block's identity tells them apart."""
    monkeypatch.setattr(block_pool, "block_hash", lambda parent, tokens: hash(tuple(tokens)))
    pool = BlockPool(8, 2)
    attacker, victim = pool.allocate(2), pool.allocate(1)
    _register_all(pool, attacker, [7, 7, 3, 4])
    _register_all(pool, victim, [1, 2])
    assert pool.match_prefix([7, 7, 3, 4, 0], max_tokens=4)[0] == attacker
    assert pool.match_prefix([1, 2, 3, 4, 0], max_tokens=4)[0] == victim  # not the attacker's [3, 4] block


def test_a_duplicate_links_to_the_first_writer_so_its_continuation_is_shared():
    pool = BlockPool(8, 2)
    first, second = pool.allocate(2), pool.allocate(2)
    _register_all(pool, first, [1, 2, 3, 4])
    link = pool.register(second[0], ROOT_LINK, [1, 2])  # a duplicate of first[0]
    assert link.block == first[0]
    pool.register(second[1], link, [5, 6])  # its own continuation
    pool.release(first)
    pool.release(second)
    assert pool.match_prefix([1, 2, 5, 6, 0], max_tokens=4)[0] == [first[0], second[1]]


def test_a_child_of_an_evicted_parent_is_unreachable():
    pool = BlockPool(2, 2)
    blocks = pool.allocate(2)
    _register_all(pool, blocks, [1, 2, 3, 4])
    pool.release(blocks[:1])  # the head is now the oldest
    pool.release(blocks[1:])
    (reused,) = pool.allocate(1)
    assert reused == blocks[0]
    _register_all(pool, [reused], [1, 2])  # same tokens, new contents
    assert pool.match_prefix([1, 2, 3, 4, 0], max_tokens=4)[0] == [reused]  # the old child is not served


def test_forget_unshared_uncaches_only_blocks_nobody_else_holds():
    pool = BlockPool(4, 2)
    blocks = pool.allocate(2)
    _register_all(pool, blocks, [1, 2, 3, 4])
    shared, _ = pool.match_prefix([1, 2, 9], max_tokens=2)  # another sequence holds the head
    pool.forget_unshared(blocks)
    pool.release(blocks)
    assert pool.match_prefix([1, 2, 3, 4, 0], max_tokens=4)[0] == [blocks[0]]
    assert pool.num_available() == 3
