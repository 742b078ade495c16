"""Tool calls started before the agent asks: as the model writes a constrained call (kernel/engine/structured/
call_watch.py, fed by the LLM service), the kernel starts the tool and holds the result for the agent's tool.call.

On the kernel loop's thread only (the holding table, kernel/services/early_table.py, has no lock). The LLM service
tells it of each chat offering tools (watch: a CallWatch per request, kept only when some offered tool may start
early and the call did not opt out), of the text each such request generates (feed) and of its end (forget). The tool
service (kernel/services/tools.py) owns the tools; this module asks it everything:
- candidates(agent, offered): which of the functions a chat offers the watch should look for: kernel tools offered
  with the kernel's own schema (so an agent's homonymous function of its own never starts a kernel tool), marked safe
  to start early (ToolSpec.early_start: read-only or idempotent, by MCP annotation or the tools config; never an
  irreversible tool, which needs approval), that the agent may call — ToolService.permits, the one check tool.call
  makes too. Nothing is audited here: nothing was decided yet.
- start(agent, name, arguments): the same checks again for the call as written, then, with room in the table (per
  agent and in all), the tool is started as tool.call starts it (same context, same manager) and held. Audited: the
  call was started early (an allow of tool.call on the tool, with the early id).
- claim(agent, name, arguments, identity, req_id): the agent's tool.call, already authorized by the tool service. A
  held call of the same agent, tool and canonical arguments is taken off the table and answers this tool.call when it
  finishes (at once if it has), audited as claimed; accounting and the tool-aware context observer see one tool call,
  from the claim to its reply. An early run the tool refused as busy is not claimed: the call runs anew. False: no
  match, the caller runs the call as usual.
- tick(): held calls older than the TTL expire; agent_ended(agent): the agent's held calls go. Either way a call
  still running is cancelled (its Future; the manager cancels the tool call), and each is audited as expired.
Refuses nothing to anyone: an early start that cannot happen (no room, not allowed, not safe) just does not happen.

What the operator sees (kernel.top, kernel.metrics: kernel/observe/): held(limit) lists the runs held now, the oldest
first, each {early_id, agent_id, tool, state (EarlyState: running | finished), started (wall-clock Unix seconds),
age_s}; held_by() counts them per agent; counts() gives how many started and how each held run left the table
(EarlyOutcome: claimed by its tool.call, expired past the TTL, dropped when its agent ended, refused: the run was
refused busy, so the tool.call ran anew). Invariant: started == held + the sum of the outcomes.
"""

from __future__ import annotations

import enum
import logging
import time

from ipc.errors import ErrorCode, ProtocolError
from kernel.access.audit import Decision
from kernel.engine.structured.call_watch import CallWatch
from kernel.services.early_table import DEFAULT_PER_AGENT, DEFAULT_TOTAL, DEFAULT_TTL_S, EarlyTable, canonical_key

log = logging.getLogger("aiosd.tools")


class EarlyOutcome(enum.Enum):
    CLAIMED = "claimed"
    EXPIRED = "expired"
    DROPPED = "dropped"
    REFUSED = "refused"


class EarlyState(enum.Enum):
    RUNNING = "running"
    FINISHED = "finished"


class EarlyStarts:
    def __init__(
        self,
        service,
        ttl_s: float = DEFAULT_TTL_S,
        per_agent: int = DEFAULT_PER_AGENT,
        total: int = DEFAULT_TOTAL,
        clock=time.monotonic,
    ):
        self.service = service  # kernel/services/tools.py ToolService
        self.table = EarlyTable(ttl_s, per_agent, total)
        self.clock = clock
        self.started = 0
        self.outcomes = dict.fromkeys(EarlyOutcome, 0)
        self._watches: dict[str, tuple[CallWatch, object, frozenset[str]]] = {}  # req id -> (watch, agent, names)

    # -- the LLM service's side ----------------------------------------------------------------------------------

    def watch(self, req_id: str, agent, tools: list, tool_format) -> None:
        """Watch a constrained chat's output for calls of the offered tools that may start early."""
        try:
            names = self.candidates(agent, tools) if tools and tool_format is not None else frozenset()
        except Exception:  # as in feed: never the LLM call's failure
            log.exception("cannot tell which tools of %s may start early; it is not watched", req_id)
            return
        if names:
            self._watches[req_id] = (CallWatch(tool_format), agent, names)

    def feed(self, req_id: str, text: str) -> None:
        """Text the request generated: start each watched call whose arguments just closed."""
        watched = self._watches.get(req_id)
        if watched is None or not text:
            return
        watch, agent, names = watched
        try:
            for call in watch.feed(text):
                if call.name in names:
                    self.start(agent, call.name, call.arguments)
        except Exception:  # an early start is an optimization: its failure costs it alone, never the LLM call
            log.exception("early tool start for %s failed; the request is no longer watched", req_id)
            self._watches.pop(req_id, None)

    def forget(self, req_id: str) -> None:
        self._watches.pop(req_id, None)

    # -- what to watch for ---------------------------------------------------------------------------------------

    def candidates(self, agent, offered: list) -> frozenset[str]:
        """Names among offered (a chat's OpenAI-shaped tools) whose calls may start early for this agent."""
        specs = {spec.name: spec for spec in self.service.manager.list_tools()}
        names = set()
        for tool in offered:
            fn = tool.get("function") if isinstance(tool, dict) else None
            spec = specs.get(fn.get("name")) if isinstance(fn, dict) else None
            if spec is not None and self._safe(agent, spec) and _same_schema(fn.get("parameters"), spec.input_schema):
                names.add(spec.name)
        return frozenset(names)

    def _safe(self, agent, spec) -> bool:
        return bool(spec.early_start) and not spec.irreversible and self.service.permits(agent, spec)

    # -- start, claim, expire ------------------------------------------------------------------------------------

    def start(self, agent, name: str, arguments: dict) -> bool:
        """Start the call as written, if allowed and safe and there is room; True if it was started."""
        spec = next((t for t in self.service.manager.list_tools() if t.name == name), None)
        if spec is None or not self._safe(agent, spec) or not self.table.has_room(agent.agent_id):
            return False
        try:
            key = canonical_key(arguments)
        except (TypeError, ValueError):
            return False
        if self.table.holds(agent.agent_id, name, key):
            return False  # the same call already runs: one early run serves one claim
        future = self.service.manager.call(name, arguments, self.service.context_of(agent))
        entry = self.table.hold(agent.agent_id, name, key, (future, agent), self.clock())
        self.started += 1
        self._audit(
            agent,
            name,
            f"started early ({entry.early_id}): a read-only or idempotent tool, as the model wrote the call",
        )
        return True

    def claim(self, agent, name: str, arguments, identity: bytes, req_id) -> bool:
        """Answer the agent's tool.call from a held early run of the same call; False if there is none."""
        try:
            key = canonical_key(arguments)
        except (TypeError, ValueError):
            return False
        entry = self.table.claim(agent.agent_id, name, key)
        if entry is None:
            return False
        future, _ = entry.handle
        if future.done() and _refused_busy(future):
            self.outcomes[EarlyOutcome.REFUSED] += 1
            self._audit(agent, name, f"early start {entry.early_id} was refused busy; the call runs anew")
            return False
        self.outcomes[EarlyOutcome.CLAIMED] += 1
        self._audit(agent, name, f"claimed the early start {entry.early_id}")
        self.service.await_result(identity, req_id, agent.agent_id, name, future)
        return True

    def tick(self) -> None:
        for entry in self.table.expire(self.clock()):
            self._end(entry, EarlyOutcome.EXPIRED, "expired unclaimed")

    def agent_ended(self, agent) -> None:
        for entry in self.table.drop_agent(agent.agent_id):
            self._end(entry, EarlyOutcome.DROPPED, "dropped unclaimed: the agent ended")

    def _end(self, entry, outcome: EarlyOutcome, why: str) -> None:
        future, agent = entry.handle
        future.cancel()  # a call still running is cancelled; a finished one's result is let go
        self.outcomes[outcome] += 1
        self._audit(agent, entry.tool, f"early start {entry.early_id} {why}")

    # -- the operator's view --------------------------------------------------------------------------------------

    def held(self, limit: int) -> list[dict]:
        """The runs held now, the oldest first, at most `limit` (O(limit))."""
        now, wall = self.clock(), time.time()
        rows = []
        for entry in self.table.oldest(limit):
            future, _ = entry.handle
            age = max(0.0, now - entry.since)
            rows.append(
                {
                    "early_id": entry.early_id,
                    "agent_id": entry.agent_id,
                    "tool": entry.tool,
                    "state": (EarlyState.FINISHED if future.done() else EarlyState.RUNNING).value,
                    "started": round(wall - age, 3),
                    "age_s": round(age, 3),
                }
            )
        return rows

    def held_by(self) -> dict[str, int]:
        return self.table.held_by()

    def counts(self) -> dict:
        """{started, held, and one count per EarlyOutcome value}: started == held + the outcomes' sum."""
        return {
            "started": self.started,
            "held": len(self.table),
            **{outcome.value: n for outcome, n in self.outcomes.items()},
        }

    def stats(self) -> dict:
        expired = self.outcomes[EarlyOutcome.EXPIRED] + self.outcomes[EarlyOutcome.DROPPED]
        return {
            "early_tool_starts": self.started,
            "early_tool_claims": self.outcomes[EarlyOutcome.CLAIMED],
            "early_tool_expired": expired,
            "early_tools_held": len(self.table),
            "early_tool_watches": len(self._watches),
        }

    def _audit(self, agent, tool: str, reason: str) -> None:
        self.service.gate.record(agent, "tool.call", Decision.ALLOW, target=tool, reason=reason)


def _same_schema(offered, schema) -> bool:
    try:
        return canonical_key(offered if offered is not None else {"type": "object"}) == canonical_key(schema)
    except (TypeError, ValueError):
        return False


def _refused_busy(future) -> bool:
    if future.cancelled():
        return False
    error = future.exception()
    return isinstance(error, ProtocolError) and error.code is ErrorCode.BUSY
