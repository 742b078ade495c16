"""What kernel.top and kernel.metrics read from the early starts (kernel/services/early_start.py), as a unit with an
injected clock and a stand-in tool service (its calls are Futures this test finishes): under any order of starts,
claims, finished runs, busy refusals, ticks and agent ends, started == held + claimed + expired + dropped + refused,
the listing names exactly the runs held (oldest first, bounded by its limit, running until finished), and the
per-agent counts match it. Plus `aios top`'s frame draws a held run's hostile tool name verbatim."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from ipc.errors import ErrorCode, ProtocolError
from kernel.console.render import frame
from kernel.services.early_start import EarlyOutcome, EarlyStarts

TTL, PER_AGENT, TOTAL = 5.0, 2, 4
AGENTS, KEYS = ["a1", "a2", "a3"], ["alpha", "beta"]
SCHEMA = {"type": "object", "properties": {"key": {"type": "string"}}}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ToolService:
    """The parts of kernel/services/tools.py ToolService the early starts call."""

    def __init__(self):
        spec = SimpleNamespace(name="lookup", early_start=True, irreversible=False, input_schema=SCHEMA)
        self.manager = SimpleNamespace(list_tools=lambda: [spec], call=self._call)
        self.gate = SimpleNamespace(record=lambda *args, **kwargs: None)
        self.futures: list[Future] = []

    def _call(self, name, arguments, context) -> Future:
        future = Future()
        future.set_running_or_notify_cancel()
        self.futures.append(future)
        return future

    def permits(self, agent, spec) -> bool:
        return True

    def context_of(self, agent) -> dict:
        return {}

    def await_result(self, identity, req_id, agent_id, tool, future) -> None:
        pass


ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from(AGENTS), st.sampled_from(KEYS)),
        st.tuples(st.just("claim"), st.sampled_from(AGENTS), st.sampled_from(KEYS)),
        st.tuples(st.just("finish"), st.integers(0, 20), st.booleans()),  # the n-th run ends (busy or a result)
        st.tuples(st.just("wait"), st.floats(0.0, 4.0)),
        st.tuples(st.just("tick")),
        st.tuples(st.just("end"), st.sampled_from(AGENTS)),
        st.tuples(st.just("top"), st.integers(1, 6)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_counts_add_up_and_the_listing_is_what_is_held(sequence):
    clock, service = Clock(), ToolService()
    early = EarlyStarts(service, ttl_s=TTL, per_agent=PER_AGENT, total=TOTAL, clock=clock)
    agents = {agent_id: SimpleNamespace(agent_id=agent_id) for agent_id in AGENTS}
    for op in sequence:
        kind = op[0]
        if kind == "start":
            early.start(agents[op[1]], "lookup", {"key": op[2]})
        elif kind == "claim":
            early.claim(agents[op[1]], "lookup", {"key": op[2]}, b"id", 1)
        elif kind == "finish" and op[1] < len(service.futures) and not service.futures[op[1]].done():
            if op[2]:
                service.futures[op[1]].set_exception(ProtocolError(ErrorCode.BUSY, "busy"))
            else:
                service.futures[op[1]].set_result("done")
        elif kind == "wait":
            clock.now += op[1]
        elif kind == "tick":
            early.tick()
        elif kind == "end":
            early.agent_ended(agents[op[1]])
        elif kind == "top":
            rows = early.held(op[1])
            assert len(rows) == min(op[1], len(early.table))
            assert [r["age_s"] for r in rows] == sorted((r["age_s"] for r in rows), reverse=True)  # oldest first
        counts = early.counts()
        assert counts["started"] == counts["held"] + sum(counts[o.value] for o in EarlyOutcome)
        assert counts["started"] == len(service.futures)
        rows = early.held(TOTAL)
        assert len(rows) == counts["held"] <= TOTAL
        per_agent = {}
        for row in rows:
            per_agent[row["agent_id"]] = per_agent.get(row["agent_id"], 0) + 1
            assert row["state"] in ("running", "finished") and row["age_s"] >= 0
            if kind == "tick":
                assert row["age_s"] < TTL  # a tick expires every run held for the TTL or longer
        assert per_agent == early.held_by()
        assert all(n <= PER_AGENT for n in per_agent.values())


def test_a_listed_run_turns_finished_when_its_call_ends():
    clock, service = Clock(), ToolService()
    early = EarlyStarts(service, clock=clock)
    agent = SimpleNamespace(agent_id="a1")
    assert early.start(agent, "lookup", {"key": "alpha"})
    clock.now += 1.5
    (row,) = early.held(10)
    assert row["state"] == "running" and row["age_s"] == 1.5 and row["tool"] == "lookup"
    service.futures[0].set_result("done")
    assert early.held(10)[0]["state"] == "finished"


@settings(max_examples=50, deadline=None)
@given(tool=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40))
def test_a_held_runs_tool_name_is_drawn_verbatim(tool):
    marked = f"[bold red]{tool}[/]"
    snapshot = {
        "early": [{"early_id": "e1", "agent_id": "a1", "tool": marked, "state": "running", "age_s": 1.0}],
        "early_total": 1,
    }
    console = Console(record=True, width=400, color_system=None)
    console.print(frame(snapshot))
    text = console.export_text()
    assert marked.strip() in text and "early running" in text
