"""One memory space's vectors in RAM: exact inner product below a size threshold, HNSW above it.

Contract: add(keys, vectors) with unit float32 vectors, remove(keys), search(query, k, allowed=None) → (scores, keys)
best first, at most k, never a removed key. `allowed` (an int64 array of record keys, from a metadata filter) makes
the search exact over just those keys, whatever the mode, so a selective filter never loses hits to the ANN graph.

Modes: below `ann_threshold` live vectors a faiss IndexFlatIP (exact). At the threshold the index is rebuilt as
IndexHNSWFlat (M=32, efConstruction=64, efSearch=max(128, k)), which grows by adds without retraining (an IVF index
trained on the first vectors would skew as a space grows); it goes back to exact when deletes bring it under half
the threshold (hysteresis, so a space at the edge does not rebuild on every add/delete). Faiss rows are positions,
mapped to record keys by an int64 array: HNSW cannot remove a vector, so a delete marks its row dead (key -1) in
both modes, searches exclude dead rows with an IDSelector, and the index is compacted (rebuilt from its live rows)
once a quarter of its rows are dead. The vectors themselves are read back from faiss's own storage, never copied
twice in RAM.
"""

from __future__ import annotations

import faiss
import numpy as np

DEFAULT_ANN_THRESHOLD = 20_000
HNSW_M = 32
EF_CONSTRUCTION = 64
EF_SEARCH = 128
DEAD = -1


class SpaceIndex:
    def __init__(
        self,
        dim: int,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        ef_search: int = EF_SEARCH,
        hnsw_m: int = HNSW_M,
        ef_construction: int = EF_CONSTRUCTION,
    ):
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.ef_search, self.hnsw_m, self.ef_construction = ef_search, hnsw_m, ef_construction
        self._keys = np.empty(0, dtype=np.int64)  # row → record key, DEAD once removed
        self._row: dict[int, int] = {}  # live record key → row
        self._dead = 0
        self._index = self._new_index(ann=False)

    @property
    def ann(self) -> bool:
        return isinstance(self._index, faiss.IndexHNSWFlat)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, key: int) -> bool:
        return key in self._row

    def add(self, keys, vectors: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        if not len(keys):
            return
        self.remove([key for key in keys.tolist() if key in self._row])  # re-adding a key replaces its vector
        if not self.ann and len(self) + len(keys) >= self.ann_threshold:
            self._rebuild(ann=True, extra=(keys, vectors))
            return
        self._append(keys, vectors)

    def remove(self, keys) -> None:
        for key in keys:
            row = self._row.pop(int(key), None)
            if row is not None:
                self._keys[row] = DEAD
                self._dead += 1
        if self.ann and len(self) < self.ann_threshold // 2:
            self._rebuild(ann=False)
        elif self._dead > 64 and self._dead * 4 > len(self._keys):
            self._rebuild(ann=self.ann)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        if allowed is not None:
            rows = np.nonzero(np.isin(self._keys, allowed))[0]
            return self._exact(query, k, rows)
        if not len(self):
            return np.empty(0, np.float32), np.empty(0, np.int64)
        k_eff = min(k, len(self))
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k)) if self.ann else faiss.SearchParameters()
        if self._dead:
            dead = faiss.IDSelectorBatch(np.nonzero(self._keys == DEAD)[0].astype(np.int64))
            keep = faiss.IDSelectorNot(dead)  # faiss holds raw pointers: `dead` and `keep` must outlive search
            params.sel = keep
        scores, rows = self._index.search(query, k_eff, params=params)
        found = rows[0] >= 0
        return scores[0][found], self._keys[rows[0][found]]

    # -- mechanism ---------------------------------------------------------------------------------------------

    def _new_index(self, ann: bool):
        if not ann:
            return faiss.IndexFlatIP(self.dim)
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def _vectors(self) -> np.ndarray:
        """A view of every row's vector inside faiss (valid until the next add)."""
        flat = self._index if not self.ann else faiss.downcast_index(self._index.storage)
        n = self._index.ntotal
        if not n:
            return np.empty((0, self.dim), np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def _append(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        start = len(self._keys)
        self._index.add(vectors)
        self._keys = np.concatenate([self._keys, keys])
        self._row.update(zip(keys.tolist(), range(start, start + len(keys))))

    def _rebuild(self, ann: bool, extra: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        live = np.nonzero(self._keys != DEAD)[0]
        keys, vectors = self._keys[live], self._vectors()[live].copy()
        if extra is not None:
            keys, vectors = np.concatenate([keys, extra[0]]), np.concatenate([vectors, extra[1]])
        self._index = self._new_index(ann)
        self._keys, self._row, self._dead = np.empty(0, dtype=np.int64), {}, 0
        self._append(keys, vectors)

    def _exact(self, query: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(rows):
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores = self._vectors()[rows] @ query[0]
        return top_k(scores, self._keys[rows], k)


def top_k(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, keys), best first; ties broken by key so results are deterministic."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        scores, keys = scores[part], keys[part]
    order = np.lexsort((keys, -scores))
    return scores[order], keys[order]
