"""Tool-aware retention (kernel/context/tool_retention.py): the tool latency EWMA, the eviction order (idle agents
first, then most byte-seconds until reuse, TTL expiry), and, with the real engine and arena, an agent in a tool call
keeping its context where LRU retention loses it."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.context.retention import Kind, Resident, RetentionPolicy
from kernel.context.tool_retention import ToolAwareRetention, ToolLatency
from kernel.engine.core.interface import SamplingParams
from tests.context.loop import MiniLoop


class Clock:
    """The policy's clock, advanced by the test (the policy reads monotonic seconds in the kernel)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(st.lists(st.floats(0.0, 60.0), min_size=1, max_size=30), st.floats(0.05, 1.0))
def test_ewma_stays_within_the_observed_latencies_and_weights_the_latest_by_alpha(latencies, alpha):
    ewma = ToolLatency(alpha=alpha, prior_s=7.0)
    assert ewma.expected("search") == 7.0
    for seconds in latencies:
        before = ewma.expected("search") if ewma._mean else None
        ewma.observe("search", seconds)
        if before is not None:
            assert ewma.expected("search") == pytest.approx(before + alpha * (seconds - before))
    assert min(latencies) - 1e-9 <= ewma.expected("search") <= max(latencies) + 1e-9
    assert ewma.expected("other") == 7.0


def retained(key, nbytes, last_used):
    return Resident(key=key, kind=Kind.RETAINED, nbytes=nbytes, last_used=last_used)


def test_victims_idle_first_by_recency_then_most_byte_seconds_to_reuse_and_never_snapshots():
    clock = Clock()
    policy = ToolAwareRetention(clock=clock, latency=ToolLatency(prior_s=2.0))
    policy.latency.observe("compile", 20.0)
    policy.tool_started("soon-big", "search")  # back in ~2 s, 1000 bytes: 2000 byte-seconds
    policy.tool_started("late-small", "compile")  # back in ~20 s, 300 bytes: 6000 byte-seconds
    policy.tool_started("queued", "compile")
    policy.tool_finished("queued", "compile")  # answered; its next call waits for admission
    residents = [
        retained("soon-big", 1000, 1),
        retained("late-small", 300, 2),
        retained("idle-new", 10, 9),
        retained("idle-old", 10, 3),
        retained("queued", 5000, 0),
        Resident("live", Kind.REQUEST, 10, 0),
    ]
    assert [r.key for r in policy.victims(residents)] == ["idle-old", "idle-new", "late-small", "soon-big", "queued"]
    assert [r.key for r in RetentionPolicy().victims(residents)] == [
        "queued",
        "soon-big",
        "late-small",
        "idle-old",
        "idle-new",
    ]


def test_a_context_past_its_ttl_is_idle_and_a_finished_tool_feeds_the_ewma():
    clock = Clock()
    policy = ToolAwareRetention(clock=clock, ttl_factor=3.0, min_ttl_s=0.5, latency=ToolLatency(alpha=0.5, prior_s=1.0))
    policy.tool_started("a", "api")
    clock.now += 0.25
    assert policy.seconds_to_reuse("a") == pytest.approx(0.75)
    clock.now += 2.5  # 2.75 s: overdue but within 3 x 1 s
    assert policy.seconds_to_reuse("a") == 0.0
    clock.now += 0.5  # 3.25 s: past the TTL
    assert policy.seconds_to_reuse("a") is None
    policy.tool_finished("a", "api")
    assert policy.latency.expected("api") == pytest.approx(3.25)  # the first observation replaces the prior
    assert policy.seconds_to_reuse("a") == 0.0  # answered: its next call is due, maybe queued
    clock.now += policy.due_ttl_s + 0.1
    assert policy.seconds_to_reuse("a") is None  # due too long without an admission: idle
    policy.tool_finished("a", "api")
    policy.call_started("a")  # admitted: nothing expected until its next tool call
    assert policy.seconds_to_reuse("a") is None
    policy.tool_started("b", "api")
    policy.agent_gone("b")
    assert policy.seconds_to_reuse("b") is None


def test_tool_ends_reported_from_another_thread_while_the_loop_ranks_victims():
    """The tool manager's thread reports tool starts and ends while the loop ranks the arena's residents."""
    import threading

    policy = ToolAwareRetention()
    residents = [retained(f"a{i}", 100 + i, i) for i in range(50)]
    stop, errors = threading.Event(), []

    def tools():
        try:
            for n in range(3000):
                agent = f"a{n % 50}"
                policy.tool_started(agent, f"tool{n % 3}")
                policy.tool_finished(agent, f"tool{n % 3}")
                policy.call_started(agent)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            stop.set()

    worker = threading.Thread(target=tools)
    worker.start()
    while not stop.is_set():
        assert sorted(r.key for r in policy.victims(residents)) == sorted(r.key for r in residents)
    worker.join(timeout=60)
    assert not errors and all(policy.seconds_to_reuse(r.key) is None for r in residents)
    assert set(policy.latency._mean) == {"tool0", "tool1", "tool2"}


GREEDY = SamplingParams(max_tokens=6, ignore_eos=True)


@pytest.mark.parametrize("policy_name, hit_expected", [("lru", False), ("tool-aware", True)])
def test_an_agent_in_a_tool_call_keeps_its_context_where_lru_evicts_it(engine, manager, policy_name, hit_expected):
    base = engine.apply_chat_template([{"role": "user", "content": "Describe the sea."}])
    prompts = {agent: base + [token] * 4 for agent, token in (("tooling", 17), ("idle", 18), ("third", 19))}
    record_bytes = (len(base) + 4 + GREEDY.max_tokens + 2) * engine.layout().bytes_per_token()
    policy = (
        RetentionPolicy(max_share=1.0) if policy_name == "lru" else ToolAwareRetention(max_share=1.0, clock=Clock())
    )
    # Room for two retained contexts (and their headers), not three.
    cm = manager(arena_bytes=record_bytes * 2 + record_bytes // 2, policy=policy)
    loop = MiniLoop(engine, cm)
    first = loop.generate("tooling", "t0", prompts["tooling"], GREEDY)
    cm.tool_started("tooling", "search")  # its call asked for a tool: the kernel runs it
    loop.generate("idle", "i0", prompts["idle"], GREEDY)  # answered, no tool: nothing says it comes back
    assert cm.stats()["retained_contexts"] == 2
    loop.generate("third", "x0", prompts["third"], GREEDY)
    assert cm.stats()["evictions"] == 1 and cm.stats()["retained_contexts"] == 2
    cm.tool_finished("tooling", "search")
    reused = loop.admit("tooling", "t1", prompts["tooling"] + first + [20, 21], GREEDY)
    loop.run_until_done("t1")
    assert (reused > 0) is hit_expected
    assert cm.stats()["retained_hits"] == (1 if hit_expected else 0)
