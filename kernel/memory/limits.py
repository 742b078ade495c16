"""Bounds on everything a caller hands the memory manager, checked before any work: a bad value is a ProtocolError.

Every public MemoryManager method validates its arguments here first, so hostile input (wrong types, huge values,
strings that are not valid UTF-8, NaN, deep nesting) ends as ProtocolError(BAD_REQUEST) and never reaches SQLite,
the tokenizer or faiss. The limits match ipc/service_messages.py where the kernel bounds the same fields at decode
time (a space may be 6 characters longer: the kernel indexes files in "<space>#files").

Metadata is a JSON object of at most MAX_METADATA_BYTES encoded; it is stored and returned as its JSON round trip
(tuples come back as lists). A filter maps metadata keys to scalar values (str, int, float, bool, None) and matches
records whose metadata has every key with exactly that value and JSON type (True does not match 1, 1 not 1.0).
"""

from __future__ import annotations

import json
import math

from ipc.errors import ErrorCode, ProtocolError

MAX_SPACE_CHARS = 200
MAX_TEXT_CHARS = 32_768
MAX_QUERY_CHARS = 4_096
MAX_METADATA_BYTES = 4_096
MAX_BATCH = 256  # texts in one add
MAX_K = 100
MAX_FILTER_KEYS = 16
MAX_OFFSET = 1 << 40
MAX_SPACES_PER_PRINCIPAL = 128  # an agent's space and its "#files" index are two: 64 agents' worth
MAX_LIST = 100_000  # the kernel's file index lists a whole space to replace a path's entries

SCALARS = (str, int, float, bool, type(None))


def bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message)


def _utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(f"{what} is not valid UTF-8 (lone surrogate)") from None


def check_space(space) -> str:
    if not isinstance(space, str):
        raise bad("space must be a string")
    if not 0 < len(space) <= MAX_SPACE_CHARS or not space.isprintable():
        raise bad(f"space must be 1..{MAX_SPACE_CHARS} printable characters")
    _utf8(space, "space")
    return space


def principal_of(space: str) -> str:
    """Who owns a space for the per-principal bound: the part of its name before the last "/"."""
    return space.rpartition("/")[0]


def check_text(text, what: str = "text", limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str):
        raise bad(f"{what} must be a string")
    if not 0 < len(text) <= limit:
        raise bad(f"{what} must be 1..{limit} characters")
    _utf8(text, what)
    return text


def encode_metadata(metadata) -> tuple[str, dict]:
    """(stored JSON text, the dict as it will be returned)."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(key, str) for key in metadata):
        raise bad("metadata must be an object with string keys")
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True)
        size = len(encoded.encode("utf-8"))
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as error:
        raise bad(f"metadata is not JSON-encodable: {type(error).__name__}") from None
    if size > MAX_METADATA_BYTES:
        raise bad(f"metadata is {size} bytes encoded, over {MAX_METADATA_BYTES}")
    return encoded, json.loads(encoded)


def check_batch(texts, metadatas) -> list[tuple[str, str, dict]]:
    """[(text, metadata JSON, metadata)] for an add."""
    if not isinstance(texts, list) or not 0 < len(texts) <= MAX_BATCH:
        raise bad(f"texts must be a list of 1..{MAX_BATCH} strings")
    if metadatas is None:
        metadatas = [None] * len(texts)
    if not isinstance(metadatas, list) or len(metadatas) != len(texts):
        raise bad("metadatas must be a list as long as texts")
    return [(check_text(text), *encode_metadata(metadata)) for text, metadata in zip(texts, metadatas)]


def check_int(value, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(f"{what} must be an integer in {lo}..{hi}")
    return value


def check_filter(where) -> dict | None:
    if where is None:
        return None
    if not isinstance(where, dict) or len(where) > MAX_FILTER_KEYS:
        raise bad(f"filter must be an object of at most {MAX_FILTER_KEYS} keys")
    for key, value in where.items():
        if not isinstance(key, str) or not isinstance(value, SCALARS):
            raise bad("filter maps string keys to scalar values (string, number, boolean, null)")
        if isinstance(value, float) and not math.isfinite(value):
            raise bad("filter values must be finite")
        if isinstance(value, int) and not -(1 << 63) <= value < (1 << 63):
            raise bad("filter integers must fit in 64 bits")
        _utf8(key, "filter key")
        if isinstance(value, str):
            _utf8(value, "filter value")
    return where or None


def matches(metadata: dict, where: dict | None) -> bool:
    """Exact match: every key present with an equal value of the same JSON type."""
    if not where:
        return True
    for key, value in where.items():
        if key not in metadata:
            return False
        have = metadata[key]
        if type(have) is not type(value) or have != value:
            return False
    return True
