"""SQLite holding every memory: records (text, metadata, vector blob) and per-space usage, the source of truth.

Contract: each mutating method is one transaction; when it returns the change is committed. The RAM indexes are a
cache of the `vector` column and can always be rebuilt from it, so vectors are never re-embedded at start.

Crash safety: journal_mode=WAL with synchronous=FULL. In WAL mode a commit appends the transaction to the -wal file;
with FULL that file is fsync'd before COMMIT returns, so an add that returned survives SIGKILL of the process *and*
a power loss or OS crash. NORMAL would also survive SIGKILL (the write is in the OS page cache before COMMIT
returns; only the fsync is deferred to checkpoints) but could lose the last commits on power loss; it is offered as
an option (`synchronous="NORMAL"`) for the measured cost. A torn transaction is never visible: SQLite's WAL replay
ignores frames after the last valid commit record.

An ephemeral store (path None) is an in-memory database with the same schema: nothing touches disk and it is gone at
close. Vectors are stored as little-endian float32 bytes, `dim` per row; the store records the embedder's dim and
name and refuses to open a database made by another embedder (its vectors would be meaningless to this one).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spaces(sid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                                  entries INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS records(key INTEGER PRIMARY KEY AUTOINCREMENT, sid INTEGER NOT NULL, text TEXT NOT NULL,
                                   metadata TEXT NOT NULL, vector BLOB NOT NULL, size INTEGER NOT NULL,
                                   created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS records_by_space ON records(sid, key);
"""
# JSON type of a filter value as SQLite's json_each names it
_JSON_TYPES = {str: "text", int: "integer", float: "real", type(None): "null"}


class StoreError(Exception):
    """The database cannot be used (made by another embedder, unreadable)."""


class Store:
    def __init__(self, path: str | None, dim: int, embedder_name: str, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path, self.dim = path, dim
        self.ephemeral = path is None
        self._db = sqlite3.connect(":memory:" if path is None else path, isolation_level=None)
        if path is not None:
            os.chmod(path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(SCHEMA)
        self._check_embedder(embedder_name)

    def close(self) -> None:
        self._db.close()

    # -- spaces --------------------------------------------------------------------------------------------------

    def space_id(self, name: str, create: bool = False) -> int | None:
        row = self._db.execute("SELECT sid FROM spaces WHERE name = ?", (name,)).fetchone()
        if row is None and create:
            return self._db.execute("INSERT INTO spaces(name) VALUES (?)", (name,)).lastrowid
        return row[0] if row else None

    def usage(self, sid: int) -> tuple[int, int]:
        """(entries, bytes) of a space."""
        return self._db.execute("SELECT entries, bytes FROM spaces WHERE sid = ?", (sid,)).fetchone() or (0, 0)

    def spaces(self) -> list[tuple[str, int, int]]:
        return self._db.execute("SELECT name, entries, bytes FROM spaces ORDER BY name").fetchall()

    def drop(self, name: str) -> bool:
        with self._transaction():
            sid = self.space_id(name)
            if sid is None:
                return False
            self._db.execute("DELETE FROM records WHERE sid = ?", (sid,))
            self._db.execute("DELETE FROM spaces WHERE sid = ?", (sid,))
        return True

    # -- records -------------------------------------------------------------------------------------------------

    def insert(self, sid: int, rows: list[tuple[str, str, int]], vectors: np.ndarray) -> list[int]:
        """rows: (text, metadata JSON, size in bytes). Returns the new keys, committed."""
        now = time.time()
        blobs = self._blobs(vectors)
        with self._transaction():
            keys = [
                self._db.execute(
                    "INSERT INTO records(sid, text, metadata, vector, size, created, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (sid, text, meta, blob, size, now, now),
                ).lastrowid
                for (text, meta, size), blob in zip(rows, blobs)
            ]
            self._db.execute(
                "UPDATE spaces SET entries = entries + ?, bytes = bytes + ? WHERE sid = ?",
                (len(rows), sum(size for _, _, size in rows), sid),
            )
        return keys

    def update(self, sid: int, key: int, text: str, meta: str, size: int, vector: np.ndarray | None) -> None:
        with self._transaction():
            old = self._db.execute("SELECT size FROM records WHERE sid = ? AND key = ?", (sid, key)).fetchone()
            if vector is None:
                self._db.execute(
                    "UPDATE records SET text = ?, metadata = ?, size = ?, updated = ? WHERE key = ?",
                    (text, meta, size, time.time(), key),
                )
            else:
                self._db.execute(
                    "UPDATE records SET text = ?, metadata = ?, size = ?, vector = ?, updated = ? WHERE key = ?",
                    (text, meta, size, self._blobs(vector)[0], time.time(), key),
                )
            self._db.execute("UPDATE spaces SET bytes = bytes + ? WHERE sid = ?", (size - old[0], sid))

    def delete(self, sid: int, key: int) -> bool:
        with self._transaction():
            row = self._db.execute("SELECT size FROM records WHERE sid = ? AND key = ?", (sid, key)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM records WHERE key = ?", (key,))
            self._db.execute("UPDATE spaces SET entries = entries - 1, bytes = bytes - ? WHERE sid = ?", (row[0], sid))
        return True

    def get(self, sid: int, key: int) -> tuple | None:
        """(key, text, metadata dict, created, updated, size) or None."""
        row = self._db.execute(
            "SELECT key, text, metadata, created, updated, size FROM records WHERE sid = ? AND key = ?", (sid, key)
        ).fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def fetch(self, sid: int, keys: list[int]) -> dict[int, tuple]:
        """key → (text, metadata dict, created, updated) for those of `keys` in the space."""
        found = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, text, metadata, created, updated FROM records "
                f"WHERE sid = ? AND key IN ({','.join('?' * len(chunk))})",
                (sid, *chunk),
            )
            found.update(
                (key, (text, json.loads(meta), created, updated)) for key, text, meta, created, updated in rows
            )
        return found

    def page(self, sid: int, offset: int, limit: int) -> list[tuple]:
        return [
            (key, text, json.loads(meta), created, updated)
            for key, text, meta, created, updated in self._db.execute(
                "SELECT key, text, metadata, created, updated FROM records WHERE sid = ? ORDER BY key LIMIT ? OFFSET ?",
                (sid, limit, offset),
            )
        ]

    def vectors(self, sid: int) -> tuple[np.ndarray, np.ndarray]:
        """Every (key, vector) of a space, keys ascending."""
        rows = self._db.execute("SELECT key, vector FROM records WHERE sid = ? ORDER BY key", (sid,)).fetchall()
        return self._unpack(rows)

    def scan(self, sid: int, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The space's (keys, vectors) in batches, by key ranges (no OFFSET rescans)."""
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT key, vector FROM records WHERE sid = ? AND key > ? ORDER BY key LIMIT ?", (sid, last, batch)
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield self._unpack(rows)

    def filter_keys(self, sid: int, where: dict) -> np.ndarray:
        """Keys whose metadata has every key of `where` with that value and JSON type (limits.matches)."""
        clauses, params = [], []
        for name, value in where.items():
            if isinstance(value, bool):
                clauses.append("EXISTS (SELECT 1 FROM json_each(r.metadata) j WHERE j.key = ? AND j.type = ?)")
                params += [name, "true" if value else "false"]
            elif value is None:
                clauses.append("EXISTS (SELECT 1 FROM json_each(r.metadata) j WHERE j.key = ? AND j.type = 'null')")
                params.append(name)
            else:
                clauses.append(
                    "EXISTS (SELECT 1 FROM json_each(r.metadata) j WHERE j.key = ? AND j.type = ? AND j.atom = ?)"
                )
                params += [name, _JSON_TYPES[type(value)], value]
        sql = f"SELECT key FROM records r WHERE sid = ? AND {' AND '.join(clauses)}"
        return np.array([key for (key,) in self._db.execute(sql, (sid, *params))], dtype=np.int64)

    # -- mechanism -----------------------------------------------------------------------------------------------

    def _transaction(self):
        return _Transaction(self._db)

    def _blobs(self, vectors: np.ndarray) -> list[bytes]:
        vectors = np.ascontiguousarray(vectors, dtype="<f4").reshape(-1, self.dim)
        return [row.tobytes() for row in vectors]

    def _unpack(self, rows) -> tuple[np.ndarray, np.ndarray]:
        keys = np.fromiter((key for key, _ in rows), dtype=np.int64, count=len(rows))
        flat = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4")
        return keys, flat.reshape(len(rows), self.dim).astype(np.float32, copy=False)

    def _check_embedder(self, name: str) -> None:
        with self._transaction():
            stored = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
            if not stored:
                self._db.executemany(
                    "INSERT INTO meta(name, value) VALUES (?, ?)", [("dim", str(self.dim)), ("embedder", name)]
                )
            elif stored.get("dim") != str(self.dim) or stored.get("embedder") != name:
                raise StoreError(
                    f"{self.path} holds {stored.get('embedder')} vectors of dim {stored.get('dim')}, "
                    f"not {name} of dim {self.dim}"
                )


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception (the connection is in autocommit mode otherwise)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self):
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._owner = True
        else:
            self._owner = False
        return self

    def __exit__(self, kind, error, trace):
        if not self._owner:
            return False
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
