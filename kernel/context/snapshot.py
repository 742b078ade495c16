"""Snapshot records in the arena: a self-describing header followed by the engine's KV bytes.

Record layout (little endian), starting at an arena block:
    fixed header   magic "AIOSKV\\r\\n", version, string lengths, layout numbers, prompt_len, n_kv_tokens,
                   n_tokens, rng_len, payload_offset, payload_nbytes
    model id       utf-8, then dtype name, ascii
    token ids      n_tokens x int32 (prompt + output so far)
    rng state      rng_len bytes (the sampler's state, so a seeded sampled run resumes identically)
    padding        up to payload_offset (a multiple of 64)
    payload        payload_nbytes of KV, in the engine's own order (only an engine of the same layout reads it)

The header is written after the payload (save_kv returns the token ids), so the space for it is reserved up front from
the KV size: header_reserve() bounds it.
"""

from __future__ import annotations

import struct
from array import array

from kernel.engine.core.interface import KVLayout, KVMeta

MAGIC = b"AIOSKV\r\n"
VERSION = 1
RNG_RESERVE = 64 << 10  # room for the sampler state (torch's CPU generator state is ~5 KB)
_FIXED = struct.Struct("<8sHHH2xIIIIIIIIQ")
_ALIGN = 64
_TOKEN = array("i").itemsize


class SnapshotError(ValueError):
    """A record that is not a snapshot, of another version or layout, or that does not fit its request."""


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def header_reserve(layout: KVLayout, max_tokens: int) -> int:
    """Bytes to reserve before the payload for a snapshot of at most max_tokens token ids."""
    return _align(_FIXED.size + len(layout.model_id.encode()) + len(layout.dtype) + max_tokens * _TOKEN + RNG_RESERVE)


def write_header(dst: memoryview, meta: KVMeta, payload_offset: int) -> None:
    """Write meta's header at the start of dst (the record's block); payload_offset is where save_kv wrote the KV."""
    model_id, dtype = meta.layout.model_id.encode(), meta.layout.dtype.encode("ascii")
    tokens = array("i", meta.token_ids).tobytes()
    rng = meta.rng_state or b""
    body = model_id + dtype + tokens + rng
    if _FIXED.size + len(body) > payload_offset:
        raise SnapshotError(
            f"snapshot header ({_FIXED.size + len(body)} bytes) exceeds its reserved {payload_offset} bytes"
        )
    layout = meta.layout
    _FIXED.pack_into(
        dst,
        0,
        MAGIC,
        VERSION,
        len(model_id),
        len(dtype),
        layout.n_layers,
        layout.n_kv_heads,
        layout.head_dim,
        meta.prompt_len,
        meta.n_kv_tokens,
        len(meta.token_ids),
        len(rng),
        payload_offset,
        meta.nbytes,
    )
    dst[_FIXED.size : _FIXED.size + len(body)] = body


def read_header(src: memoryview) -> tuple[KVMeta, int]:
    """Decode and validate a record's header: (meta, payload offset). SnapshotError if it is not a valid record."""
    if len(src) < _FIXED.size:
        raise SnapshotError(f"a snapshot record needs at least {_FIXED.size} bytes, got {len(src)}")
    (
        magic,
        version,
        model_len,
        dtype_len,
        n_layers,
        n_kv_heads,
        head_dim,
        prompt_len,
        n_kv_tokens,
        n_tokens,
        rng_len,
        payload_offset,
        payload_nbytes,
    ) = _FIXED.unpack_from(src, 0)
    if magic != MAGIC:
        raise SnapshotError(f"bad snapshot magic {magic!r} (expected {MAGIC!r}): not a KV snapshot")
    if version != VERSION:
        raise SnapshotError(f"snapshot version {version} is not supported (this kernel reads version {VERSION})")
    body_len = model_len + dtype_len + n_tokens * _TOKEN + rng_len
    if _FIXED.size + body_len > payload_offset or payload_offset + payload_nbytes > len(src):
        raise SnapshotError("snapshot header lengths run past the record: corrupt record")
    if not (prompt_len <= n_tokens and n_kv_tokens <= n_tokens):
        raise SnapshotError(
            f"inconsistent snapshot: prompt_len={prompt_len} n_kv_tokens={n_kv_tokens} n_tokens={n_tokens}"
        )
    cursor = _FIXED.size
    try:
        model_id = bytes(src[cursor : cursor + model_len]).decode()
        cursor += model_len
        dtype = bytes(src[cursor : cursor + dtype_len]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"corrupt snapshot layout strings: {exc}") from None
    cursor += dtype_len
    tokens = array("i")
    tokens.frombytes(src[cursor : cursor + n_tokens * _TOKEN])
    cursor += n_tokens * _TOKEN
    rng = bytes(src[cursor : cursor + rng_len]) if rng_len else None
    layout = KVLayout(model_id=model_id, n_layers=n_layers, n_kv_heads=n_kv_heads, head_dim=head_dim, dtype=dtype)
    meta = KVMeta(
        layout=layout,
        token_ids=tuple(tokens),
        prompt_len=prompt_len,
        n_kv_tokens=n_kv_tokens,
        nbytes=payload_nbytes,
        rng_state=rng,
    )
    return meta, payload_offset


def check_restorable(meta: KVMeta, layout: KVLayout, token_ids: list[int]) -> None:
    """SnapshotError unless meta's KV can seed a sequence of token_ids in an engine of this layout."""
    if meta.layout != layout:
        raise SnapshotError(f"snapshot layout {meta.layout} does not match the engine's {layout}")
    if len(meta.token_ids) > len(token_ids) or tuple(token_ids[: len(meta.token_ids)]) != meta.token_ids:
        raise SnapshotError("the snapshot's tokens are not a prefix of the request's tokens")
