"""Accounting: over any sequence of events, every account's counters are the sums of the events that reached it, the
kernel's equal the sum over principals, and an agent's usage outlives it in its principal's totals."""

from __future__ import annotations

import collections

from hypothesis import given, settings
from hypothesis import strategies as st

from ipc.errors import ErrorCode
from kernel.observe.accounting import OTHER_PRINCIPAL, TTFT_BUCKETS, Accounting, Histogram, ToolEvents

AGENTS = [("a1", "p1"), ("a2", "p1"), ("a3", "p2"), ("a4", "p3")]

event = st.one_of(
    st.tuples(st.just("admitted"), st.sampled_from(AGENTS), st.integers(0, 5000)),
    st.tuples(
        st.just("finished"),
        st.sampled_from(AGENTS),
        st.integers(0, 5000),
        st.one_of(st.none(), st.floats(0, 100)),
        st.one_of(st.none(), st.floats(0, 5)),
    ),
    st.tuples(st.just("failed"), st.sampled_from(AGENTS), st.sampled_from(list(ErrorCode)), st.integers(0, 100)),
    st.tuples(st.just("preempted"), st.sampled_from(AGENTS), st.integers(0, 1 << 30)),
    st.tuples(st.just("end"), st.sampled_from(AGENTS)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(event, max_size=80))
def test_totals_are_sums_of_events(events):
    accounting = Accounting()
    live = set()
    expected = collections.defaultdict(collections.Counter)  # principal -> counters
    for agent_id, principal in AGENTS:
        accounting.agent_started(agent_id, agent_id.upper(), principal)
        live.add(agent_id)
    for kind, (agent_id, principal), *rest in events:
        if kind == "end":
            accounting.agent_ended(agent_id)
            live.discard(agent_id)
            continue
        getattr(accounting, kind)(agent_id, *rest)
        if agent_id not in live:
            principal = None  # charged to the kernel alone
        counts = expected[principal]
        if kind == "admitted":
            counts["prompt"] += rest[0]
        elif kind == "finished":
            counts["completion"] += rest[0]
            counts["calls"] += 1
            counts["ttft"] += rest[1] is not None
        elif kind == "failed":
            counts["errors:" + rest[0].value] += 1
            counts["completion"] += rest[1]
        elif kind == "preempted":
            counts["preemptions"] += 1
            counts["snapshot"] += rest[0]
    everyone = sum(expected.values(), collections.Counter())
    for principal, usage in accounting.principals.items():
        want = expected[principal]
        assert usage.prompt_tokens == want["prompt"]
        assert usage.completion_tokens == want["completion"]
        assert usage.calls == want["calls"]
        assert usage.preemptions == want["preemptions"] and usage.snapshot_bytes == want["snapshot"]
        assert {f"errors:{c}": n for c, n in usage.errors.items()} == {
            k: v for k, v in want.items() if k.startswith("errors:")
        }
        assert usage.ttft.count == want["ttft"]
    kernel = accounting.kernel
    assert kernel.prompt_tokens == everyone["prompt"]
    assert kernel.completion_tokens == everyone["completion"]
    assert kernel.calls == everyone["calls"]
    assert kernel.error_count == sum(v for k, v in everyone.items() if k.startswith("errors:"))
    # the kernel's totals are the principals' plus what reached no live agent
    assert (
        kernel.prompt_tokens == sum(u.prompt_tokens for u in accounting.principals.values()) + expected[None]["prompt"]
    )
    # a live agent's own usage never exceeds its principal's
    for account in accounting.agents.values():
        assert account.usage.prompt_tokens <= accounting.principals[account.principal].prompt_tokens
        assert account.usage.completion_tokens <= accounting.principals[account.principal].completion_tokens


@given(st.lists(st.floats(0, 1000, allow_nan=False), max_size=200))
def test_histogram_cumulative_counts(values):
    hist = Histogram(TTFT_BUCKETS)
    for v in values:
        hist.observe(v)
    cumulative = hist.cumulative()
    assert cumulative[-1] == hist.count == len(values)
    assert all(a <= b for a, b in zip(cumulative, cumulative[1:]))
    for bound, count in zip(TTFT_BUCKETS, cumulative):
        assert count == sum(1 for v in values if v <= bound)


def test_principals_are_bounded():
    accounting = Accounting(max_principals=3)
    for n in range(10):
        accounting.agent_started(f"a{n}", "x", f"net:10.0.0.{n}")
        accounting.admitted(f"a{n}", 1)
    assert len(accounting.principals) <= 4  # three named and the fold
    assert accounting.principals[OTHER_PRINCIPAL].prompt_tokens == 7
    assert accounting.kernel.prompt_tokens == 10


def test_tool_events_cross_threads_and_drain_on_the_loop():
    import threading

    clock = iter(range(100)).__next__
    accounting = Accounting()
    accounting.agent_started("a1", "x", "uid:1")
    events = ToolEvents(clock)
    tickets = [events.started("a1", "calculator") for _ in range(5)]
    assert len(events.in_flight) == 5
    threads = [threading.Thread(target=events.ended, args=(t, t % 2 == 0)) for t in tickets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events.drain(accounting)
    assert not events.in_flight
    usage = accounting.agents["a1"].usage
    assert usage.tool_calls["calculator"] == 5
    assert usage.tool_errors == sum(1 for t in tickets if t % 2 == 0)
    assert usage.tool_seconds.count == 5 and usage.tool_seconds.total > 0
