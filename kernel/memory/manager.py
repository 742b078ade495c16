"""MemoryManager: each space's semantic memory (add, search, get, update, delete, list), persistent and bounded.

A plain single-threaded library: the kernel runs one on a worker thread of its own and handles syscalls,
authorization and replies. Every method takes `space`, an opaque namespace id such as "uid:0/notes" (1..200
printable characters), and answers with a value or raises ipc.errors.ProtocolError:
  bad_request     an argument out of its bounds (kernel/memory/limits.py)
  not_found       an id that is not in that space
  quota_exceeded  (ErrorCode.QUOTA; BUSY on a kernel without it) the space would pass max_entries or max_bytes, or
                  a new space would pass max_spaces per principal (the part of its name before the last "/"), so a
                  principal holds at most max_spaces x max_bytes of text and metadata
  internal        the embedder failed on a valid text
  shutdown        the manager is closed
update, delete and drop_space return None (the kernel answers Ack). Unknown spaces read as empty.

Where things live: SQLite (store.py) holds every record and its vector; an add has returned only once committed.
RAM holds a faiss index (index.py) for at most `ram_entries` vectors across spaces; which spaces are resident is
LRU-2 over spaces (eviction.py). A search of a space that is not resident loads it whole from SQLite, evicting
others; a space larger than ram_entries on its own is never loaded but scanned from SQLite in batches of
`scan_batch` (exact). SQLite is the truth and an index only a cache: any doubt about an index drops it.

Spaces whose name starts with one of `ephemeral_prefixes` ("eph:" by default: the kernel's throwaway agents) live in
an in-memory database: never written to disk, gone at close. directory=None makes every space ephemeral.
`drop_ephemeral()` drops every space with such a name, in RAM and on disk (how many); the manager calls it when it
opens, so a database written by a build that kept such spaces on disk holds none of them once opened.
Bytes are counted as UTF-8 text plus encoded metadata (what the agent stored; the vector's 1.5 KB is not charged).
"""

from __future__ import annotations

import logging
import os

import faiss
import numpy as np

from ipc.errors import ErrorCode, ProtocolError
from kernel.memory import limits
from kernel.memory.eviction import LRUK
from kernel.memory.index import DEFAULT_ANN_THRESHOLD, SpaceIndex, top_k
from kernel.memory.records import Hit, Record, format_id, parse_id
from kernel.memory.store import Store

log = logging.getLogger("aiosd.memory")

DB_NAME = "memory.sqlite3"
QUOTA = ErrorCode.QUOTA


class MemoryManager:
    def __init__(
        self,
        directory: str | os.PathLike | None,
        embedder=None,
        *,
        max_entries: int = 100_000,
        max_bytes: int = 64 << 20,
        ram_entries: int = 500_000,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        ephemeral_prefixes: tuple[str, ...] = ("eph:",),
        synchronous: str = "FULL",
        scan_batch: int = 8192,
        faiss_threads: int | None = 1,
        max_spaces: int = limits.MAX_SPACES_PER_PRINCIPAL,
    ):
        if embedder is None:
            from kernel.memory.embedder import MiniLMEmbedder

            embedder = MiniLMEmbedder()
        self.embedder = embedder
        self.dim = int(embedder.dim)
        self.max_entries, self.max_bytes, self.ram_entries = max_entries, max_bytes, ram_entries
        self.max_spaces = max_spaces
        self.ann_threshold, self.scan_batch = ann_threshold, scan_batch
        self.ephemeral_prefixes = tuple(ephemeral_prefixes)
        if faiss_threads is not None:
            # one query at a time: OpenMP threads only add wake-ups on 2 cores shared with the LLM engine
            faiss.omp_set_num_threads(faiss_threads)
        name = str(getattr(embedder, "name", type(embedder).__name__))
        self._ram_store = Store(None, self.dim, name)
        self._disk_store = None
        if directory is not None:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self._disk_store = Store(os.path.join(os.fspath(directory), DB_NAME), self.dim, name, synchronous)
        self._indexes: dict[str, SpaceIndex] = {}
        self._lru = LRUK(k=2)
        self._counts = dict(loads=0, loaded_entries=0, evictions=0, scans=0, searches=0, adds=0)
        self._closed = False
        self.drop_ephemeral()

    # -- the API -------------------------------------------------------------------------------------------------

    def add(self, space: str, texts: list[str], metadatas: list[dict] | None = None) -> list[str]:
        store, space = self._open(space)
        batch = limits.check_batch(texts, metadatas)
        rows = [(text, meta, len(text.encode("utf-8")) + len(meta.encode("utf-8"))) for text, meta, _ in batch]
        sid = store.space_id(space)
        if sid is None:
            self._check_new_space(store, space)
        entries, used = store.usage(sid) if sid is not None else (0, 0)
        if entries + len(rows) > self.max_entries:
            raise ProtocolError(
                QUOTA, f"space holds {entries} of {self.max_entries} entries: {len(rows)} more do not fit"
            )
        added = sum(size for _, _, size in rows)
        if used + added > self.max_bytes:
            raise ProtocolError(QUOTA, f"space holds {used} of {self.max_bytes} bytes: {added} more do not fit")
        vectors = self._embed([text for text, _, _ in batch])
        keys = store.insert(store.space_id(space, create=True), rows, vectors)
        self._counts["adds"] += len(keys)
        self._lru.reference(space)
        index = self._indexes.get(space)
        if index is not None:
            self._cached(space, lambda: index.add(keys, vectors))
        return [format_id(key) for key in keys]

    def search(self, space: str, query: str, k: int = 5, filter: dict | None = None) -> list[Hit]:
        store, space = self._open(space)
        limits.check_text(query, "query", limits.MAX_QUERY_CHARS)
        k = limits.check_int(k, 1, limits.MAX_K, "k")
        where = limits.check_filter(filter)
        sid = store.space_id(space)
        if sid is None or (space not in self._indexes and store.usage(sid)[0] == 0):
            return []
        self._counts["searches"] += 1
        self._lru.reference(space)
        allowed = store.filter_keys(sid, where) if where else None
        if allowed is not None and not len(allowed):
            return []
        vector = self._embed([query])[0]
        index = self._resident(space, store, sid)
        if index is not None:
            scores, keys = index.search(vector, k, allowed)
        else:
            scores, keys = self._scan(store, sid, vector, k, allowed)
        found = store.fetch(sid, keys.tolist())
        return [
            Hit(format_id(key), found[key][0], float(score), found[key][1])
            for score, key in zip(scores.tolist(), keys.tolist())
            if key in found and limits.matches(found[key][1], where)
        ]

    def get(self, space: str, id: str) -> Record:
        store, space = self._open(space)
        sid, key, row = self._find(store, space, id)
        return Record(format_id(key), row[1], row[2], row[3], row[4])

    def update(self, space: str, id: str, text: str | None = None, metadata: dict | None = None) -> None:
        store, space = self._open(space)
        if text is not None:
            limits.check_text(text)
        meta_json = limits.encode_metadata(metadata)[0] if metadata is not None else None
        sid, key, row = self._find(store, space, id)
        text = row[1] if text is None else text
        if meta_json is None:
            meta_json = limits.encode_metadata(row[2])[0]
        size = len(text.encode("utf-8")) + len(meta_json.encode("utf-8"))
        used = store.usage(sid)[1]
        if used - row[5] + size > self.max_bytes:
            raise ProtocolError(QUOTA, f"space holds {used} of {self.max_bytes} bytes: the update does not fit")
        vector = self._embed([text]) if text != row[1] else None
        store.update(sid, key, text, meta_json, size, vector)
        index = self._indexes.get(space)
        if index is not None and vector is not None:
            self._cached(space, lambda: index.add([key], vector))

    def delete(self, space: str, id: str) -> None:
        store, space = self._open(space)
        sid, key, _ = self._find(store, space, id)
        store.delete(sid, key)
        index = self._indexes.get(space)
        if index is not None:
            self._cached(space, lambda: index.remove([key]))

    def list(self, space: str, offset: int = 0, limit: int = 100, filter: dict | None = None) -> list[Record]:
        """Records in id (insertion) order; with `filter`, only those whose metadata matches it exactly."""
        store, space = self._open(space)
        offset = limits.check_int(offset, 0, limits.MAX_OFFSET, "offset")
        limit = limits.check_int(limit, 1, limits.MAX_LIST, "limit")
        where = limits.check_filter(filter)
        sid = store.space_id(space)
        if sid is None:
            return []
        if where is None:
            return [
                Record(format_id(key), text, meta, created, updated)
                for key, text, meta, created, updated in store.page(sid, offset, limit)
            ]
        keys = sorted(store.filter_keys(sid, where).tolist())[offset : offset + limit]
        found = store.fetch(sid, keys)
        return [Record(format_id(key), *found[key]) for key in keys if limits.matches(found[key][1], where)]

    def drop_space(self, space: str) -> None:
        store, space = self._open(space)
        store.drop(space)
        self._indexes.pop(space, None)
        self._lru.forget(space)

    def drop_ephemeral(self) -> int:
        """Drop every space whose name starts with an ephemeral prefix, wherever it lives; how many were dropped."""
        self._check_open()
        dropped = 0
        for store in self._stores():
            for name, _, _ in store.spaces():
                if name.startswith(self.ephemeral_prefixes) and store.drop(name):
                    self._indexes.pop(name, None)
                    self._lru.forget(name)
                    dropped += 1
        return dropped

    def stats(self) -> dict:
        self._check_open()
        spaces = [
            (name, entries, size, store.ephemeral) for store in self._stores() for name, entries, size in store.spaces()
        ]
        return {
            "spaces": len(spaces),
            "entries": sum(entries for _, entries, _, _ in spaces),
            "bytes": sum(size for _, _, size, _ in spaces),
            "ephemeral_spaces": sum(1 for *_, ephemeral in spaces if ephemeral),
            "resident_spaces": len(self._indexes),
            "resident_entries": self._lru.resident_total,
            "ram_entries": self.ram_entries,
            "ann_spaces": sum(1 for index in self._indexes.values() if index.ann),
            "ann_threshold": self.ann_threshold,
            **self._counts,
        }

    def resident_spaces(self) -> list[str]:
        return sorted(self._indexes)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._indexes.clear()
        for store in self._stores():
            store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- mechanism -----------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ProtocolError(ErrorCode.SHUTDOWN, "the memory manager is closed")

    def _stores(self) -> list[Store]:
        return [store for store in (self._disk_store, self._ram_store) if store is not None]

    def _open(self, space) -> tuple[Store, str]:
        self._check_open()
        space = limits.check_space(space)
        if self._disk_store is None or space.startswith(self.ephemeral_prefixes):
            return self._ram_store, space
        return self._disk_store, space

    def _check_new_space(self, store: Store, space: str) -> None:
        principal = limits.principal_of(space)
        held = sum(1 for name, _, _ in store.spaces() if limits.principal_of(name) == principal)
        if held >= self.max_spaces:
            raise ProtocolError(
                QUOTA,
                f"{principal!r} already holds {held} memory spaces; the limit is "
                f"{self.max_spaces} (drop one to make another)",
            )

    def _find(self, store: Store, space: str, id) -> tuple[int, int, tuple]:
        key = parse_id(id)
        sid = store.space_id(space)
        row = store.get(sid, key) if key is not None and sid is not None else None
        if row is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no memory {str(id)[:80]!r} in this space")
        return sid, key, row

    def _embed(self, texts: list[str]) -> np.ndarray:
        try:
            vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        except Exception as error:
            log.exception("the embedder failed on %d texts", len(texts))
            raise ProtocolError(ErrorCode.INTERNAL, f"embedding failed: {type(error).__name__}") from None
        if vectors.shape != (len(texts), self.dim) or not np.isfinite(vectors).all():
            raise ProtocolError(
                ErrorCode.INTERNAL, f"the embedder returned {vectors.shape}, not finite ({len(texts)}, {self.dim})"
            )
        return vectors

    def _resident(self, space: str, store: Store, sid: int) -> SpaceIndex | None:
        """The space's index, loaded (and others evicted) if need be; None when it alone exceeds ram_entries."""
        index = self._indexes.get(space)
        if index is not None:
            return index
        entries = store.usage(sid)[0]
        if entries > self.ram_entries:
            return None
        self._make_room(entries, protect=space)
        keys, vectors = store.vectors(sid)
        index = SpaceIndex(self.dim, self.ann_threshold)
        index.add(keys, vectors)
        self._indexes[space] = index
        self._lru.admit(space, len(index))
        self._counts["loads"] += 1
        self._counts["loaded_entries"] += len(index)
        return index

    def _make_room(self, entries: int, protect: str) -> None:
        while self._lru.resident_total + entries > self.ram_entries:
            victim = self._lru.victim(protect=protect)
            if victim is None:
                return
            self._evict(victim)

    def _evict(self, space: str) -> None:
        self._indexes.pop(space, None)
        self._lru.evicted(space)
        self._counts["evictions"] += 1

    def _cached(self, space: str, change) -> None:
        """Apply a change to a resident index after its commit; on failure, or when it outgrows RAM, drop it."""
        try:
            change()
        except Exception:
            log.exception("memory index of %r dropped after a failed change (it reloads from SQLite)", space)
            self._evict(space)
            return
        index = self._indexes[space]
        self._lru.resize(space, len(index))
        if len(index) > self.ram_entries:
            self._evict(space)
        else:
            self._make_room(0, protect=space)

    def _scan(self, store: Store, sid: int, vector: np.ndarray, k: int, allowed: np.ndarray | None):
        """Exact top-k over a space read from SQLite in batches (a space too large for RAM)."""
        self._counts["scans"] += 1
        best_scores, best_keys = np.empty(0, np.float32), np.empty(0, np.int64)
        for keys, vectors in store.scan(sid, self.scan_batch):
            if allowed is not None:
                mask = np.isin(keys, allowed)
                keys, vectors = keys[mask], vectors[mask]
            scores = vectors @ vector
            best_scores, best_keys = top_k(np.concatenate([best_scores, scores]), np.concatenate([best_keys, keys]), k)
        return best_scores, best_keys
