"""What the memory manager hands back: Record (a stored memory) and Hit (a search result), and the id format.

An id is "m" followed by the record's decimal key, e.g. "m42". Keys come from SQLite AUTOINCREMENT, so an id is never
reused within its store, even after a delete. Ids are scoped to their space: the same id asked of another space is
not found. parse_id returns None for anything that is not an id of that form (the caller answers not_found).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ID_PREFIX = "m"
MAX_KEY = (1 << 63) - 1


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)
    created: float = 0.0  # seconds since the epoch
    updated: float = 0.0


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float  # cosine similarity (vectors are normalized), higher is nearer
    metadata: dict = field(default_factory=dict)


def format_id(key: int) -> str:
    return f"{ID_PREFIX}{key}"


def parse_id(value) -> int | None:
    if not isinstance(value, str) or not value.startswith(ID_PREFIX):
        return None
    digits = value[len(ID_PREFIX) :]
    # isdecimal admits other scripts' digits ("m٣"); ids are ASCII only, so check that as well
    if not (0 < len(digits) <= 19 and digits.isascii() and digits.isdecimal()) or digits[0] == "0":
        return None
    key = int(digits)
    return key if key <= MAX_KEY else None
