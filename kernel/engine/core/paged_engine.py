"""What every paged engine does the same way, written once: admission, removal and capacity (in blocks) from its
SequenceTable; text in and out with input checks; KV snapshots in and out with their checks and metadata.

A device engine (cpu/engine.py, gpu/engine.py) subclasses it, sets `self._table`, `self.tokenizer` and
`self._layout`, implements step() and the three hooks below that move K/V between its cache and a snapshot buffer:
  _kv_bytes(n_tokens)                         bytes of n_tokens tokens' K/V across all layers
  _copy_in(seq, n_kv, src, src_tokens)        seq's first n_kv tokens' K/V from src (a snapshot of src_tokens tokens)
  _copy_out(seq, n_tokens, dst)               seq's first n_tokens tokens' K/V into dst
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

from kernel.engine.core.interface import Capacity, EngineError, EngineRequest, KVLayout, KVMeta
from kernel.engine.core.sequence import Sequence
from kernel.engine.core.sequence_table import SequenceTable
from kernel.engine.core.snapshot_rules import check_destination, check_snapshot, snapshot_meta


class PagedEngine:
    _table: SequenceTable
    _layout: KVLayout
    tokenizer: object  # loading.tokenizer.TextTokenizer: encode, decode, apply_chat_template

    # ---- description -------------------------------------------------------------------------------------------
    def layout(self) -> KVLayout:
        return self._layout

    def capacity(self) -> Capacity:
        return self._table.capacity()

    def eos_token_ids(self) -> tuple[int, ...]:
        return self._table.eos_ids

    def has_work(self) -> bool:
        return self._table.has_work()

    def request_ids(self) -> list[str]:
        """Every request holding KV: running, waiting to recompute, or finished in the last step."""
        return self._table.request_ids()

    def blocks_needed(self, req: EngineRequest) -> int:
        return self._table.blocks_needed(req)

    def blocks_held(self, req_id: str) -> int:
        return self._table.blocks_held(req_id)

    # ---- text --------------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise EngineError(f"text must be a string, got {type(text).__name__}")
        return self.tokenizer.encode_prompt(text)

    def detokenize(self, ids: Seq[int]) -> str:
        self._table.check_ids(ids)
        return self.tokenizer.decode(ids)

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages)

    # ---- requests ----------------------------------------------------------------------------------------------
    def take_preempted(self) -> list[str]:
        return self._table.take_preempted()

    def add(self, req: EngineRequest) -> None:
        self._table.admit(req)

    def abort(self, req_id: str) -> None:
        self._table.abort(req_id)

    # ---- snapshots in and out ----------------------------------------------------------------------------------
    def load_kv(self, req: EngineRequest, meta: KVMeta, src: memoryview) -> None:
        check_snapshot(req, meta, src, self._layout, self._kv_bytes(1))

        def copy_in(seq: Sequence, n_kv: int) -> None:
            # rows past n_kv are K/V of tokens recomputed anyway: not copied
            self._copy_in(seq, n_kv, src, meta.n_kv_tokens)

        self._table.admit_snapshot(req, meta, copy_in)

    def kv_nbytes(self, req_id: str) -> int:
        return self._kv_bytes(self._table.lookup(req_id).num_computed)

    def save_kv(self, req_id: str, dst: memoryview) -> KVMeta:
        seq = self._table.lookup(req_id)
        nbytes = self._kv_bytes(seq.num_computed)
        check_destination(dst, nbytes)
        if nbytes:
            self._copy_out(seq, seq.num_computed, dst)
        return snapshot_meta(self._layout, seq, nbytes)

    # ---- device hooks ------------------------------------------------------------------------------------------
    def _kv_bytes(self, n_tokens: int) -> int:
        raise NotImplementedError

    def _copy_in(self, seq: Sequence, n_kv: int, src: memoryview, src_tokens: int) -> None:
        raise NotImplementedError

    def _copy_out(self, seq: Sequence, n_tokens: int, dst: memoryview) -> None:
        raise NotImplementedError
