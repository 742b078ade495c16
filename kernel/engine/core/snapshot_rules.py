"""What every engine accepts as a KV snapshot and records with one, whatever its K/V byte layout.

The engine copies the bytes; these rules make a foreign, truncated or self-contradictory snapshot a clear EngineError
before any byte is read, and give every engine's save_kv the same metadata.
"""

from __future__ import annotations

from kernel.engine.core.interface import EngineError, EngineRequest, KVLayout, KVMeta
from kernel.engine.core.sampler import generator_state
from kernel.engine.core.sequence import Sequence


def check_snapshot(req: EngineRequest, meta: KVMeta, src: memoryview, layout: KVLayout, bytes_per_token: int) -> None:
    """Raise EngineError unless src holds meta's snapshot, of this engine's layout, and req extends its tokens."""
    if meta.layout != layout:
        raise EngineError(f"snapshot layout {meta.layout} does not match this engine's {layout}")
    if tuple(req.token_ids[: len(meta.token_ids)]) != tuple(meta.token_ids):
        raise EngineError(
            f"request {req.req_id!r} does not extend the snapshot: its tokens are not a prefix of the request's"
        )
    if not 0 <= meta.n_kv_tokens <= len(meta.token_ids) or meta.nbytes != meta.n_kv_tokens * bytes_per_token:
        raise EngineError(f"inconsistent snapshot: K/V of {meta.n_kv_tokens} tokens in {meta.nbytes} bytes")
    if src.nbytes < meta.nbytes:
        raise EngineError(f"snapshot needs {meta.nbytes} bytes, the source holds {src.nbytes}")


def check_destination(dst: memoryview, nbytes: int) -> None:
    if dst.nbytes < nbytes:
        raise EngineError(f"destination holds {dst.nbytes} bytes, {nbytes} needed")


def snapshot_meta(layout: KVLayout, seq: Sequence, nbytes: int) -> KVMeta:
    """The metadata of a snapshot of seq's computed K/V: enough to resume it at its exact next token and draw."""
    return KVMeta(
        layout, tuple(seq.token_ids), seq.prompt_len, seq.num_computed, nbytes, generator_state(seq.generator)
    )
