"""Shares: an owner lets another owner read (or read and write) its memory space or a path prefix of its file space.

Owners are space names ("<principal>/<agent name>"), so a share outlives both agents' runs, like the data it opens.

Contract:
- Checks (allows) are pure in-memory lookups on the kernel loop's thread, indexed by (kind, owner, grantee): a check
  costs the entries of that one pair (at most MAX_SHARES_PER_OWNER), never a scan of the table.
- Changes (set, drop_owner) act on memory at once and are persisted off the loop by one writer thread that coalesces:
  any number of changes become one atomic write of the latest table (temp file, fsync, rename, directory fsync), at
  most one write per MIN_WRITE_INTERVAL_S. An acknowledged change reaches disk within about that interval; a kernel
  crash inside it loses it. close() writes the last state and stops the writer.
- Bounded: a grant (a change that adds or widens access) costs a token of its owner's bucket (CHANGES_PER_S, burst
  CHANGE_BURST): over it, ProtocolError(BUSY). Revokes are never refused. MAX_SHARES_PER_OWNER per owner and
  MAX_SHARES_TOTAL in all: over either, ValueError (the syscall answers quota_exceeded).
- drop_owner(space) removes the shares that space gives and receives: a space that is gone neither opens nor reads.
- A table file that cannot be read is kept aside and the kernel starts with no shares (deny); invalid entries in it are
  skipped, and entries over the bounds are not loaded.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import weakref
from dataclasses import asdict, dataclass

from ipc.errors import ErrorCode, ProtocolError
from kernel.access.rate import RateLimiter

log = logging.getLogger("aiosd.access")

MAX_SHARES_PER_OWNER = 256
MAX_SHARES_TOTAL = 16_384  # ~1.6 MB of JSON: one write stays well under a second even on a slow disk
CHANGES_PER_S = 10.0
CHANGE_BURST = 20
MIN_WRITE_INTERVAL_S = 0.2  # coalescing window: a toggling owner costs at most 5 writes a second


class ShareKind(str, enum.Enum):
    MEM = "mem"
    FS = "fs"


class ShareMode(str, enum.Enum):
    READ = "r"
    READ_WRITE = "rw"
    NONE = "none"  # a revoke


@dataclass(frozen=True)
class ShareEntry:
    kind: ShareKind
    owner: str
    grantee: str
    mode: ShareMode  # READ or READ_WRITE
    prefix: str = ""  # fs only: the paths under it ("" = all)


class ShareTable:
    def __init__(
        self,
        path: str | None,
        *,
        max_per_owner: int = MAX_SHARES_PER_OWNER,
        max_total: int = MAX_SHARES_TOTAL,
        changes_per_s: float = CHANGES_PER_S,
        change_burst: int = CHANGE_BURST,
        min_write_interval_s: float = MIN_WRITE_INTERVAL_S,
    ):
        self._path = path
        self._max_per_owner, self._max_total = max_per_owner, max_total
        self._rate = RateLimiter(changes_per_s, change_burst)
        # (kind, owner, grantee) -> {prefix: mode}; owner -> its pairs; grantee -> pairs naming it
        self._pairs: dict[tuple[str, str, str], dict[str, ShareMode]] = {}
        self._owned: dict[str, set[tuple[str, str, str]]] = {}
        self._received: dict[str, set[tuple[str, str, str]]] = {}
        self._per_owner: dict[str, int] = {}
        self._total = 0
        # mutations (on the loop) and the writer's snapshot hold it; lookups need not: only the loop mutates
        self._lock = threading.Lock()
        self._writer = _Writer(path, self.entries, min_write_interval_s) if path else None
        if path:
            for entry in _load(path):
                self._load_one(entry)
            self._finalizer = weakref.finalize(self, self._writer.close)  # a table never closed still saves

    def __len__(self) -> int:
        return self._total

    def set(self, kind: str, owner: str, grantee: str, mode: str, prefix: str = "") -> None:
        """Grant mode ("r", "rw") or revoke ("none") grantee's access to owner's space (or prefix of it)."""
        kind, mode, prefix = ShareKind(kind), ShareMode(mode), prefix.strip("/")
        pair = (kind.value, owner, grantee)  # plain strings: a str enum hashes by its name, not its value
        current = self._pairs.get(pair, {}).get(prefix)
        if mode == ShareMode.NONE:
            if current is not None:
                with self._lock:
                    self._remove(pair, prefix)
                self._changed()
            return
        if current == mode:
            return
        if current is None:
            if self._per_owner.get(owner, 0) >= self._max_per_owner:
                raise ValueError(f"an owner may hold at most {self._max_per_owner} shares")
            if self._total >= self._max_total:
                raise ValueError(f"the kernel holds its limit of {self._max_total} shares")
        if not self._rate.take(owner):
            raise ProtocolError(
                ErrorCode.BUSY,
                f"too many share changes by {owner!r}: at most {self._rate.rate:g} a second; retry later",
            )
        with self._lock:
            self._put(pair, prefix, mode)
        self._changed()

    def allows(self, kind: str, owner: str, grantee: str, write: bool, path: str = "") -> bool:
        prefixes = self._pairs.get((getattr(kind, "value", kind), owner, grantee))
        if not prefixes:
            return False
        return any(
            (mode == ShareMode.READ_WRITE or not write) and _under(path, prefix) for prefix, mode in prefixes.items()
        )

    def drop_owner(self, owner: str) -> int:
        """Remove every share owner gives and every share it receives; how many were removed."""
        pairs = self._owned.get(owner, set()) | self._received.get(owner, set())
        removed = 0
        with self._lock:
            for pair in pairs:
                for prefix in list(self._pairs.get(pair, {})):
                    self._remove(pair, prefix)
                    removed += 1
        if removed:
            self._changed()
        return removed

    def entries(self) -> list[ShareEntry]:
        """A copy of every entry (safe from any thread)."""
        with self._lock:
            return self._snapshot()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every change made so far is on disk; False if that took longer than timeout_s."""
        return self._writer.flush(timeout_s) if self._writer else True

    def close(self) -> None:
        """Write the last state and stop the writer (idempotent)."""
        if self._writer is not None:
            self._finalizer()

    # -- mechanism -------------------------------------------------------------------------------------------------

    def _put(self, pair, prefix: str, mode: ShareMode) -> None:
        prefixes = self._pairs.setdefault(pair, {})
        if prefix not in prefixes:
            self._per_owner[pair[1]] = self._per_owner.get(pair[1], 0) + 1
            self._total += 1
            self._owned.setdefault(pair[1], set()).add(pair)
            self._received.setdefault(pair[2], set()).add(pair)
        prefixes[prefix] = mode

    def _remove(self, pair, prefix: str) -> None:
        prefixes = self._pairs[pair]
        del prefixes[prefix]
        self._total -= 1
        owner, grantee = pair[1], pair[2]
        self._per_owner[owner] -= 1
        if not self._per_owner[owner]:
            del self._per_owner[owner]
        if not prefixes:
            del self._pairs[pair]
            for index, name in ((self._owned, owner), (self._received, grantee)):
                index[name].discard(pair)
                if not index[name]:
                    del index[name]

    def _load_one(self, entry: ShareEntry) -> None:
        pair = (entry.kind.value, entry.owner, entry.grantee)
        if entry.prefix in self._pairs.get(pair, {}):
            self._pairs[pair][entry.prefix] = entry.mode
        elif self._per_owner.get(entry.owner, 0) < self._max_per_owner and self._total < self._max_total:
            self._put(pair, entry.prefix, entry.mode)
        else:
            log.warning(
                "share table %s: share of %s to %s over the limits, not loaded", self._path, entry.owner, entry.grantee
            )

    def _snapshot(self) -> list[ShareEntry]:
        """Every entry (call with the lock held)."""
        return [
            ShareEntry(ShareKind(kind), owner, grantee, mode, prefix)
            for (kind, owner, grantee), prefixes in self._pairs.items()
            for prefix, mode in prefixes.items()
        ]

    def _changed(self) -> None:
        if self._writer is not None:
            self._writer.changed()


class _Writer:
    """The thread that persists the table: woken by changes, writes the latest snapshot, then rests the interval."""

    def __init__(self, path: str, snapshot, min_interval_s: float):
        self._path, self._min_interval_s = path, min_interval_s
        self._snapshot = snapshot  # ShareTable.entries: a copy taken under the table's lock
        self._cond = threading.Condition()
        self._version = self._written = 0
        self._closing = False
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="share-writer", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        with self._cond:
            target = self._version
            return (
                self._cond.wait_for(lambda: self._written >= target or not self._thread.is_alive(), timeout_s)
                and self._written >= target
            )

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(60)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._version > self._written or self._closing)
                if self._version == self._written:
                    return  # closing, and nothing left to write
                version = self._version
            entries = self._snapshot()
            self._write(entries)
            with self._cond:
                self._written = version
                self._cond.notify_all()
                if not self._closing:  # coalesce: changes in the interval go out in the next write
                    self._cond.wait(self._min_interval_s)

    def _write(self, entries: list[ShareEntry]) -> None:
        try:
            _save(self._path, entries)
            self._failed = False
        except OSError as error:  # memory stays authoritative; the next change tries again
            if not self._failed:
                log.error("cannot write the share table %s: %s", self._path, error)
            self._failed = True


def _load(path: str) -> list[ShareEntry]:
    try:
        with open(path, encoding="utf-8") as file:
            raw = json.load(file)
        if not isinstance(raw, list):
            raise ValueError("not a list")
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:  # unreadable: start empty (deny), keep the file aside
        log.error("cannot read the share table %s (%s): no shares are in force", path, error)
        try:
            os.replace(path, f"{path}.unreadable")
        except OSError:
            pass
        return []
    entries = []
    for item in raw:
        try:
            entry = ShareEntry(
                ShareKind(item["kind"]),
                str(item["owner"]),
                str(item["grantee"]),
                ShareMode(item["mode"]),
                str(item.get("prefix", "")).strip("/"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("share table %s: skipping an invalid entry", path)
            continue
        if entry.mode != ShareMode.NONE:
            entries.append(entry)
    return entries


def _save(path: str, entries: list[ShareEntry]) -> None:
    directory = os.path.dirname(path) or "."
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as file:
        json.dump([{**asdict(e), "kind": e.kind.value, "mode": e.mode.value} for e in entries], file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _under(path: str, prefix: str) -> bool:
    """path is prefix itself or lies below it, by whole components ("a/b" is under "a", "ab" is not)."""
    prefix = prefix.strip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")
