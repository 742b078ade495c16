"""The context manager: carries out the scheduler's preemptions and resumptions by moving KV between the engine and the
shared-memory arena, and keeps each agent's last context for its next call (retention).

Called from the kernel loop only (one thread). Every request it handles is admitted through admit(); then, per request,
any number of preempt()/resume() pairs, and finally finished() (the engine reported it done) or drop_request()
(cancelled). drop_agent() frees everything an agent holds, e.g. when it disconnects.

Where a preempted request's KV goes: into the arena as a snapshot record (kernel/context/snapshot.py); when the arena
has no room even after evicting retained contexts (kernel/context/retention.py), or in preempt_mode "recompute" (the
text-based baseline), it is dropped and resume() re-prefills prompt + output from the token ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel.context.arena import Arena
from kernel.context.retention import Kind, Resident, RetentionPolicy
from kernel.context.snapshot import SnapshotError, check_restorable, header_reserve, read_header, write_header
from kernel.engine.core.interface import Engine, EngineRequest, KVMeta

PREEMPT_MODES = ("snapshot", "recompute")
_COUNTERS = (
    "preemptions",
    "resumes",
    "snapshot_bytes_saved",
    "snapshot_bytes_loaded",
    "recomputed_tokens",
    "recompute_fallbacks",
    "retained_hits",
    "retained_tokens_reused",
    "evictions",
)


@dataclass
class _Record:
    block: int  # arena offset of the record (header, then payload)
    nbytes: int  # whole record
    last_used: int


class ContextManager:
    def __init__(
        self,
        engine: Engine,
        arena_bytes: int,
        retention: bool = True,
        preempt_mode: str = "snapshot",
        kernel_id: str | None = None,
        policy: RetentionPolicy | None = None,
    ):
        if preempt_mode not in PREEMPT_MODES:
            raise ValueError(f"preempt_mode must be one of {PREEMPT_MODES}, got {preempt_mode!r}")
        self._engine = engine
        self._layout = engine.layout()
        self._retention = retention
        self._preempt_mode = preempt_mode
        self._policy = policy or RetentionPolicy()
        self._arena = Arena(arena_bytes, kernel_id)
        self._agent_of: dict[str, str] = {}  # live request id -> agent id
        self._records: dict[tuple[Kind, str], _Record] = {}
        self._clock = 0  # operation counter for LRU
        self._counts = dict.fromkeys(_COUNTERS, 0)

    # -- the kernel loop's calls ---------------------------------------------------------------------------------

    def admit(self, agent_id: str, req: EngineRequest) -> int:
        """Start a new request. Returns how many tokens' KV came from the agent's retained context (0: cold start)."""
        retained = self._records.get((Kind.RETAINED, agent_id))
        reused = self._restore(retained, req, strict=False) if retained else None
        if reused is None:
            self._engine.add(req)
        else:
            self._free(Kind.RETAINED, agent_id)
            self._counts["retained_hits"] += 1
            self._counts["retained_tokens_reused"] += reused.n_kv_tokens
        self._agent_of[req.req_id] = agent_id
        self._policy.call_started(agent_id)
        return reused.n_kv_tokens if reused else 0

    def preempt(self, req_id: str) -> str:
        """Pause a running request and free its engine slots. Returns where its KV went: "snapshot" or "recompute"."""
        self._require_live(req_id)
        self._counts["preemptions"] += 1
        saved = self._preempt_mode == "snapshot" and self._save(Kind.REQUEST, req_id, req_id)
        if self._preempt_mode == "snapshot" and not saved:
            self._counts["recompute_fallbacks"] += 1
        self._engine.abort(req_id)
        return "snapshot" if saved else "recompute"

    def resume(self, req: EngineRequest) -> str:
        """Re-admit a preempted request (req.output_ids = the tokens it had generated). Returns "snapshot" or
        "recompute"."""
        self._require_live(req.req_id)
        record = self._records.get((Kind.REQUEST, req.req_id))
        if record is not None:
            self._restore(record, req, strict=True)
            self._free(Kind.REQUEST, req.req_id)
            how = "snapshot"
        else:
            self._engine.add(req)
            self._counts["recomputed_tokens"] += len(req.token_ids)
            how = "recompute"
        self._counts["resumes"] += 1
        return how

    def finished(self, agent_id: str, req_id: str) -> None:
        """The engine just reported req_id finished (same loop iteration): retain its KV as the agent's context."""
        self._agent_of.pop(req_id, None)
        self._free(Kind.REQUEST, req_id)
        if self._retention:
            self._free(Kind.RETAINED, agent_id)
            self._save(Kind.RETAINED, agent_id, req_id)
        self._engine.abort(req_id)

    def drop_request(self, req_id: str) -> None:
        """Cancel: abort the request in the engine and free its snapshot. Unknown ids are ignored."""
        self._agent_of.pop(req_id, None)
        self._free(Kind.REQUEST, req_id)
        self._engine.abort(req_id)

    def drop_agent(self, agent_id: str) -> None:
        """Free everything the agent holds: its requests (engine and arena) and its retained context."""
        for req_id in [r for r, agent in self._agent_of.items() if agent == agent_id]:
            self.drop_request(req_id)
        self._free(Kind.RETAINED, agent_id)
        self._policy.agent_gone(agent_id)

    def tool_started(self, agent_id: str, tool: str) -> None:
        """The kernel started a tool call for agent_id (its retained context is then expected back after it)."""
        self._policy.tool_started(agent_id, tool)

    def tool_finished(self, agent_id: str, tool: str) -> None:
        """The kernel's tool call for agent_id answered."""
        self._policy.tool_finished(agent_id, tool)

    @property
    def snapshot_bytes_saved(self) -> int:
        """KV bytes written to the arena so far (read around a preemption: what that preemption wrote)."""
        return self._counts["snapshot_bytes_saved"]

    def arena_usage(self) -> tuple[int, int]:
        """(bytes used, bytes in all) of the snapshot arena, without stats()'s walk over the records."""
        return self._arena.used_bytes, self._arena.size

    def record_counts(self) -> dict:
        """Snapshots of preempted requests and retained contexts the arena holds now."""
        kinds = [kind for kind, _ in self._records]
        return {"snapshots": kinds.count(Kind.REQUEST), "retained_contexts": kinds.count(Kind.RETAINED)}

    def stats(self) -> dict:
        kinds = [kind for kind, _ in self._records]
        return {
            **self._counts,
            "snapshots": kinds.count(Kind.REQUEST),
            "retained_contexts": kinds.count(Kind.RETAINED),
            "arena_bytes": self._arena.size,
            "arena_used": self._arena.used_bytes,
            "arena_free": self._arena.free_bytes,
            "arena_path": self._arena.path,
        }

    def close(self) -> None:
        """Unlink the arena. The engine is not touched: the caller owns it."""
        self._records.clear()
        self._arena.close()

    def __enter__(self) -> ContextManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- mechanism -----------------------------------------------------------------------------------------------

    def _require_live(self, req_id: str) -> None:
        if req_id not in self._agent_of:
            raise KeyError(f"request {req_id!r} was not admitted through the context manager, or has ended")

    def _save(self, kind: Kind, key: str, req_id: str) -> bool:
        """Copy req_id's KV into a new arena record; False if there is nothing to save or no room."""
        payload_bytes = self._engine.kv_nbytes(req_id)
        if payload_bytes <= 0:
            return False
        # save_kv returns the token ids only after writing, so reserve the header for the most tokens it can carry.
        reserve = header_reserve(self._layout, payload_bytes // self._layout.bytes_per_token() + 2)
        size = reserve + payload_bytes
        if kind is Kind.RETAINED and not self._policy.should_retain(size, self._arena.size):
            return False
        block = self._alloc(size)
        if block is None:
            return False
        try:
            meta = self._engine.save_kv(req_id, self._arena.view(block, reserve, payload_bytes))
            write_header(self._arena.view(block, 0, reserve), meta, reserve)
        except BaseException:
            self._arena.free(block)
            raise
        self._records[(kind, key)] = _Record(block=block, nbytes=size, last_used=self._tick())
        self._counts["snapshot_bytes_saved"] += payload_bytes
        return True

    def _restore(self, record: _Record, req: EngineRequest, strict: bool) -> KVMeta | None:
        """Load a record's KV into the engine for req. A record that cannot seed req (another layout, tokens that req
        does not extend): SnapshotError if strict, else None and nothing is loaded."""
        whole = self._arena.view(record.block, 0, record.nbytes)
        try:
            meta, payload_offset = read_header(whole)
            check_restorable(meta, self._layout, req.token_ids)
        except SnapshotError:
            if strict:
                raise
            return None
        self._engine.load_kv(req, meta, whole[payload_offset : payload_offset + meta.nbytes])
        self._counts["snapshot_bytes_loaded"] += meta.nbytes
        return meta

    def _alloc(self, nbytes: int) -> int | None:
        block = self._arena.alloc(nbytes)
        if block is not None:
            return block
        residents = [
            Resident(key=key, kind=kind, nbytes=rec.nbytes, last_used=rec.last_used)
            for (kind, key), rec in self._records.items()
        ]
        for victim in self._policy.victims(residents):
            self._free(victim.kind, victim.key)
            self._counts["evictions"] += 1
            block = self._arena.alloc(nbytes)
            if block is not None:
                return block
        return None

    def _free(self, kind: Kind, key: str) -> None:
        record = self._records.pop((kind, key), None)
        if record is not None:
            self._arena.free(record.block)

    def _tick(self) -> int:
        self._clock += 1
        return self._clock
