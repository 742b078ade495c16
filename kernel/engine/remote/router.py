"""Which replica takes a call: the one whose prefix cache most likely holds the call's history, unless that would
pile calls onto one replica while another idles; else the least loaded.

Affinity is by content, not by agent: each replica remembers (bounded, least recently used first out) the hashes of
the block-aligned prefixes of the sequences it served — prompt + output, recorded when a call ends. An agent's next
call extends its last one (the chat so far, then the new turn), so its longest remembered prefix is on the replica
that served that call, and the server's own prefix cache (llama.cpp's slot reuse, vLLM's and SGLang's prefix caching)
skips recomputing it. Hashing whole blocks keeps lookups proportional to the prompt's length / BLOCK.

Balance. A prefix shared by everyone (a chat template's default system prompt) would otherwise draw every call to
the first replica that served it; so affinity only decides among replicas whose load is within `slack` calls of the
least loaded one's, and a match shorter than `min_match` tokens counts as none.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from kernel.engine.remote.replica import Replica

BLOCK = 16  # tokens per hashed prefix block


def prefix_hashes(token_ids: Sequence[int]) -> list[int]:
    """The hash of each block-aligned prefix, shortest first (each chains the previous one's)."""
    hashes, previous = [], 0
    for start in range(0, len(token_ids) - BLOCK + 1, BLOCK):
        previous = hash((previous, tuple(token_ids[start : start + BLOCK])))
        hashes.append(previous)
    return hashes


class PrefixIndex:
    """One replica's remembered prefixes."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._hashes: OrderedDict[int, None] = OrderedDict()

    def record(self, token_ids: Sequence[int]) -> None:
        for h in prefix_hashes(token_ids):
            self._hashes[h] = None
            self._hashes.move_to_end(h)
        while len(self._hashes) > self._capacity:
            self._hashes.popitem(last=False)

    def matched_tokens(self, hashes: list[int]) -> int:
        n = 0
        for h in hashes:
            if h not in self._hashes:
                break
            n += 1
        return n * BLOCK

    def forget(self) -> None:
        """The replica restarted (or died): its cache is gone."""
        self._hashes.clear()


class Router:
    def __init__(
        self, replicas: list[Replica], slack: int = 1, min_match: int = 2 * BLOCK, index_capacity: int = 1 << 16
    ):
        self._slack = slack
        self._min_match = min_match
        self._index = {r.name: PrefixIndex(index_capacity) for r in replicas}

    def choose(self, token_ids: Sequence[int], candidates: list[Replica]) -> tuple[Replica, int] | None:
        """The replica for a call among candidates (healthy, with room), and the prefix length it is expected to hold;
        None if there are no candidates."""
        if not candidates:
            return None
        least = min(len(r.in_flight) for r in candidates)
        balanced = [r for r in candidates if len(r.in_flight) <= least + self._slack]
        hashes = prefix_hashes(token_ids)
        matches = {r.name: self._index[r.name].matched_tokens(hashes) for r in balanced}
        best = max(balanced, key=lambda r: (matches[r.name], -len(r.in_flight), -candidates.index(r)))
        if matches[best.name] >= self._min_match:
            return best, matches[best.name]
        return min(candidates, key=lambda r: (len(r.in_flight), candidates.index(r))), 0

    def record(self, replica: Replica, token_ids: Sequence[int]) -> None:
        self._index[replica.name].record(token_ids)

    def forget(self, replica: Replica) -> None:
        self._index[replica.name].forget()
