"""KV block accounting: a fixed pool of fixed-size blocks, shared by reference count, with prefix caching.

A block whose tokens are all computed is registered under a hash chained from its predecessor's, so a block's hash
names the whole prefix up to its end (vLLM's scheme). A new sequence whose leading tokens hash to registered blocks
shares them instead of recomputing. A released registered block stays cached (evictable, least recently used first)
until its slots are needed. With caching off nothing is registered: every sequence computes its own KV and a released
block is free at once (a plain serving engine, the baseline the kernel's context retention is measured against).

The hash only finds a candidate; it is never trusted. Each registered block keeps its own tokens and the exact block
(and that block's registration generation) it continues, and a lookup takes a block only if both equal what the
caller's prefix has: so a hit holds exactly the caller's tokens after exactly the caller's prefix, and a hash
collision, accidental or crafted by an agent to be served another's K/V, is a miss. A block's generation changes
whenever it is reallocated or unregistered, so a child of an evicted parent is unreachable.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import NamedTuple

ROOT_HASH = 0
_NO_BLOCK = -1


def block_hash(parent: int, tokens: Sequence[int]) -> int:
    return hash((parent, tuple(tokens)))


class PrefixLink(NamedTuple):
    """The end of a sequence's registered prefix: its chained hash, the registered block that holds it, and that
    block's generation when the link was made (ROOT_LINK before the first block)."""

    hash: int
    block: int
    gen: int


ROOT_LINK = PrefixLink(ROOT_HASH, _NO_BLOCK, 0)


class BlockPool:
    def __init__(self, n_blocks: int, block_size: int, caching: bool = True):
        self.n_blocks = n_blocks
        self.block_size = block_size
        self.caching = caching
        self._free: deque[int] = deque(range(n_blocks))  # never registered, or registration dropped
        self._evictable: OrderedDict[int, None] = OrderedDict()  # registered, unreferenced; oldest first
        self._refs = [0] * n_blocks
        self._hash_of: list[int | None] = [None] * n_blocks
        # For a registered block: (parent block, parent's generation, its own tokens): what a hit must equal.
        self._key_of: list[tuple[int, int, tuple[int, ...]] | None] = [None] * n_blocks
        self._gen = [0] * n_blocks
        self._block_of: dict[int, int] = {}  # hash → block

    def num_available(self) -> int:
        """Blocks an allocation may take now: free ones plus cached ones nobody references."""
        return len(self._free) + len(self._evictable)

    def allocate(self, count: int) -> list[int]:
        if count > self.num_available():
            raise MemoryError(f"need {count} KV blocks, {self.num_available()} available")
        blocks = []
        for _ in range(count):
            if self._free:
                block = self._free.popleft()
            else:
                block, _ = self._evictable.popitem(last=False)
                self._drop_registration(block)
            self._gen[block] += 1  # new contents: links to the old ones are stale
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def match_prefix(self, token_ids: Sequence[int], max_tokens: int) -> tuple[list[int], PrefixLink]:
        """Take a reference on the registered blocks that hold token_ids' longest cached prefix (at most max_tokens
        tokens, whole blocks only). Returns those blocks and the link at the end of the last one."""
        blocks, link = [], ROOT_LINK
        for start in range(0, max_tokens - self.block_size + 1, self.block_size):
            tokens = tuple(token_ids[start : start + self.block_size])
            h = block_hash(link.hash, tokens)
            block = self._block_of.get(h)
            if block is None or self._key_of[block] != (link.block, link.gen, tokens):
                break  # nothing cached, or a hash collision: a miss
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1
            blocks.append(block)
            link = PrefixLink(h, block, self._gen[block])
        return blocks, link

    def register(self, block: int, parent: PrefixLink, tokens: Sequence[int]) -> PrefixLink | None:
        """Record that block holds tokens right after parent's prefix. Returns the link for the next block: to this
        block, or to an identical one registered first (first writer wins: the duplicate stays unregistered). None
        when the chain cannot go on: caching is off, or another prefix holds the hash (a collision)."""
        if not self.caching:
            return None
        key = (parent.block, parent.gen, tuple(tokens))
        h = block_hash(parent.hash, key[2])
        holder = self._block_of.get(h)
        if holder is not None and self._key_of[holder] != key and self._is_stale(holder):
            self._drop_registration(holder)  # its parent is gone: nobody can reach it
            holder = None
        if holder is None:
            if self._hash_of[block] is not None:
                return None
            self._block_of[h], self._hash_of[block], self._key_of[block] = block, h, key
            holder = block
        elif self._key_of[holder] != key:
            return None
        return PrefixLink(h, holder, self._gen[holder])

    def forget_unshared(self, blocks: Sequence[int]) -> None:
        """Unregister those of blocks only their one owner references (their K/V is suspect): no later request is
        served them. Blocks others share are left cached: those others computed fine from them."""
        for block in blocks:
            if self._refs[block] == 1 and self._hash_of[block] is not None:
                self._drop_registration(block)

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each block. Pass a sequence's blocks in order: its tail is evicted before its head,
        which other sequences are likelier to share."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                if self._hash_of[block] is None:
                    self._free.append(block)
                else:
                    self._evictable[block] = None

    def _is_stale(self, block: int) -> bool:
        parent, parent_gen, _ = self._key_of[block]
        return parent != _NO_BLOCK and self._gen[parent] != parent_gen

    def _drop_registration(self, block: int) -> None:
        """Forget block's prefix. An unreferenced block moves from the cache to the free list."""
        del self._block_of[self._hash_of[block]]
        self._hash_of[block] = self._key_of[block] = None
        self._gen[block] += 1
        if self._refs[block] == 0 and block in self._evictable:
            del self._evictable[block]
            self._free.append(block)
