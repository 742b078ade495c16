"""The part of the Engine interface a paged engine answers from its SequenceTable alone: admission, removal, how
full it is (in blocks) and the sequences it preempted on its own. Each engine subclasses it, sets self._table, and adds
what is its own: the model, the text, step() and the K/V copies behind save_kv / load_kv."""
from __future__ import annotations

from kernel.engine.core.interface import Capacity, EngineRequest
from kernel.engine.core.sequence_table import SequenceTable


class PagedEngine:
    _table: SequenceTable

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

    def take_preempted(self) -> list[str]:
        return self._table.take_preempted()

    def add(self, req: EngineRequest) -> None:
        self._table.admit(req)

    def abort(self, req_id: str) -> None:
        self._table.abort(req_id)
