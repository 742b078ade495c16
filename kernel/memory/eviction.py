"""Which memory spaces keep their vectors in RAM: LRU-K (K=2) over spaces, under a budget of vectors.

A space's faiss index is the unit of residency: it is loaded whole from SQLite (one read of its vector blobs) when a
search needs it and evicted whole when RAM is short, like a process's pages swapped as a set. Its records never leave
SQLite; only the RAM copy goes. Why a space and not single entries: a search ranks every vector of its space, so a
partly resident space would still have to read the rest; whole spaces keep a resident search pure faiss.

A reference is a search of the space or an add to it. The victim is the resident space whose K-th most recent
reference is oldest (largest backward K-distance); spaces referenced fewer than K times have an infinite distance
and go first, among them the least recently referenced (LRU as the subsidiary policy). So a space searched once (an
operator's one-off look, a scan) does not push out one an agent searches again and again. History is kept for
evicted spaces too (it is what lets a space that comes back regain its rank), and dropped with the space. Time is a
logical clock (one tick per reference), so the order is deterministic. Not done: LRU-K's correlated-reference
period (two references in one burst counting as one).
"""

from __future__ import annotations

import math


class LRUK:
    def __init__(self, k: int = 2):
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self._clock = 0
        self._history: dict[str, list[int]] = {}  # space → its last k reference times, oldest first
        self._resident: dict[str, int] = {}  # space → vectors it holds in RAM

    def reference(self, space: str) -> None:
        self._clock += 1
        times = self._history.setdefault(space, [])
        times.append(self._clock)
        del times[: -self.k]

    def admit(self, space: str, size: int) -> None:
        self._resident[space] = size

    def resize(self, space: str, size: int) -> None:
        if space in self._resident:
            self._resident[space] = size

    def evicted(self, space: str) -> None:
        self._resident.pop(space, None)

    def forget(self, space: str) -> None:
        self._resident.pop(space, None)
        self._history.pop(space, None)

    def is_resident(self, space: str) -> bool:
        return space in self._resident

    @property
    def resident_total(self) -> int:
        return sum(self._resident.values())

    def resident(self) -> dict[str, int]:
        return dict(self._resident)

    def backward_distance(self, space: str) -> float:
        times = self._history.get(space, [])
        return self._clock - times[-self.k] if len(times) >= self.k else math.inf

    def victim(self, protect: str | None = None) -> str | None:
        """The resident space to evict next (never `protect`), or None when no other space is resident."""
        candidates = [space for space in self._resident if space != protect]
        if not candidates:
            return None

        def rank(space: str):
            times = self._history.get(space) or [0]
            return (-self.backward_distance(space), times[-1])  # farthest K-th reference first, then LRU

        return min(candidates, key=rank)
