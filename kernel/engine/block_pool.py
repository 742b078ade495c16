"""KV block accounting: a fixed pool of fixed-size blocks, shared by reference count, with prefix caching.

A block whose tokens are all computed is registered under a hash chained from its predecessor's, so a block's hash
names the whole prefix up to its end (vLLM's scheme). A new sequence whose leading tokens hash to registered blocks
shares them instead of recomputing. A released registered block stays cached (evictable, least recently used first)
until its slots are needed. With caching off nothing is registered: every sequence computes its own KV and a released
block is free at once (a plain serving engine, the baseline the kernel's context retention is measured against).
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Sequence

ROOT_HASH = 0


def block_hash(parent: int, tokens: Sequence[int]) -> int:
    return hash((parent, tuple(tokens)))


class BlockPool:
    def __init__(self, n_blocks: int, block_size: int, caching: bool = True):
        self.n_blocks = n_blocks
        self.block_size = block_size
        self.caching = caching
        self._free: deque[int] = deque(range(n_blocks))          # never registered, or registration dropped
        self._evictable: OrderedDict[int, None] = OrderedDict()  # registered, unreferenced; oldest first
        self._refs = [0] * n_blocks
        self._hash_of: list[int | None] = [None] * n_blocks
        self._block_of: dict[int, int] = {}                      # hash → block

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
                del self._block_of[self._hash_of[block]]
                self._hash_of[block] = None
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def match_prefix(self, token_ids: Sequence[int], max_tokens: int) -> tuple[list[int], int]:
        """Take a reference on the registered blocks that hold token_ids' longest cached prefix (at most max_tokens
        tokens, whole blocks only). Returns those blocks and the hash of the last one."""
        blocks, parent = [], ROOT_HASH
        for start in range(0, max_tokens - self.block_size + 1, self.block_size):
            h = block_hash(parent, token_ids[start:start + self.block_size])
            block = self._block_of.get(h)
            if block is None:
                break
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1
            blocks.append(block)
            parent = h
        return blocks, parent

    def register(self, block: int, h: int) -> None:
        """Record that block holds the prefix named by h (first writer wins: a duplicate stays unregistered)."""
        if self.caching and h not in self._block_of and self._hash_of[block] is None:
            self._block_of[h] = block
            self._hash_of[block] = h

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
