"""SpaceIndex: exact below the threshold, HNSW above it with recall@10 ≥ 0.95, deletes, filters, mode changes.

Recall is measured on clustered unit vectors (500 centres, each vector a centre plus noise, cosine to its centre
~0.5), which is how sentence embeddings sit; uniformly random vectors on the 384-sphere are the known worst case for
any ANN index (every neighbour is barely nearer than any other point) and do not model a memory space.
"""

from __future__ import annotations

import faiss
import numpy as np

from kernel.memory.index import SpaceIndex


def unit(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def clustered(n, seed, dim=384, centres=500):
    rng = np.random.default_rng(seed)
    c = unit(rng.standard_normal((centres, dim)))
    return unit(c[rng.integers(0, centres, n)] + 0.08 * rng.standard_normal((n, dim)))


def exact_top(vectors, keys, query, k):
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return keys[flat.search(query.reshape(1, -1), k)[1][0]]


def test_hnsw_recall_at_10_above_the_threshold():
    n, threshold = 6000, 2000
    data = clustered(n + 100, seed=1)
    vectors, queries = data[:n], data[n:]
    keys = np.arange(1, n + 1, dtype=np.int64) * 3  # keys are not rows
    index = SpaceIndex(384, ann_threshold=threshold)
    index.add(keys[:1000], vectors[:1000])
    assert not index.ann
    index.add(keys[1000:], vectors[1000:])  # crosses the threshold: rebuilt as HNSW
    assert index.ann and len(index) == n
    recall = np.mean([len(set(index.search(q, 10)[1]) & set(exact_top(vectors, keys, q, 10))) / 10 for q in queries])
    assert recall >= 0.95, recall


def test_deletes_never_come_back_and_compact_and_switch_back():
    n = 3000
    vectors = clustered(n, seed=2)
    keys = np.arange(1, n + 1, dtype=np.int64)
    index = SpaceIndex(384, ann_threshold=2000)
    index.add(keys, vectors)
    assert index.ann
    gone = keys[:500]
    index.remove(gone)
    for q in vectors[:50]:  # their own vectors: the nearest would be themselves
        assert not set(index.search(q, 10)[1]) & set(gone.tolist())
    index.remove(keys[500:2100])  # under half the threshold: exact again
    assert not index.ann and len(index) == 900
    q = vectors[2500]
    assert index.search(q, 1)[1][0] == 2501
    assert list(index.search(q, 10)[1]) == list(exact_top(vectors[2100:], keys[2100:], q, 10))


def test_filtered_search_is_exact_in_ann_mode():
    n = 2500
    vectors = clustered(n, seed=3)
    keys = np.arange(1, n + 1, dtype=np.int64)
    index = SpaceIndex(384, ann_threshold=2000)
    index.add(keys, vectors)
    allowed = keys[::97]
    q = vectors[10]
    mask = np.isin(keys, allowed)
    scores, found = index.search(q, 5, allowed)
    assert list(found) == list(exact_top(vectors[mask], keys[mask], q, 5))
    assert np.all(np.diff(scores) <= 0)


def test_readding_a_key_replaces_its_vector():
    vectors = clustered(10, seed=4)
    index = SpaceIndex(384)
    index.add([1, 2], vectors[:2])
    index.add([1], vectors[5:6])
    assert len(index) == 2 and index.search(vectors[5], 1)[1][0] == 1
    assert index.search(vectors[0], 2)[0][0] < 0.99
