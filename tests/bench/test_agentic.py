"""The agentic mixes (bench/agent_traces.py) stay within their distributions' bounds, and the replay of bench/agentic.py
accounts prompt tokens consistently: dropping the KV prefills every prompt whole; retention reuses history."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.agent_traces import AGENTIC_MIXES, distributions, draw, draw_tool
from bench.agentic import Replay, step_seconds
from bench.workloads import generate


@settings(max_examples=200)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(
        [
            "calls_per_program",
            "task_tokens",
            "observation_tokens",
            "step_output_tokens",
            "final_output_tokens",
            "system_prompt_tokens",
        ]
    ),
)
def test_draws_stay_within_the_scaled_bounds(seed, name):
    spec = distributions()[name]
    value = draw(random.Random(seed), name)
    if spec["dist"] == "uniform":
        assert spec["low"] <= value <= spec["high"]
    else:
        scale = spec.get("scale", 1.0)
        assert max(1, round(spec["min"] * scale)) <= value <= round(spec["max"] * scale)


@given(st.integers(0, 2**32 - 1))
def test_tool_gaps_are_known_kinds_with_capped_latencies(seed):
    gap = draw_tool(random.Random(seed))
    spec = distributions()["tools"][gap.kind]
    assert 0.0 <= gap.seconds <= spec.get("max_s", 0.0)
    assert (gap.kind == "calculator") == bool(gap.expression)


def test_every_agentic_program_shares_the_tool_prompt_and_grows_its_history():
    for mix in AGENTIC_MIXES:
        trace = generate(mix, 0)
        assert set(trace.prefixes) == {"tools"}
        assert all(a.prefix == "tools" and a.history for a in trace.agents)
        assert all(a.calls[-1].tool_after is None and all(c.tool_after for c in a.calls[:-1]) for a in trace.agents)


def test_step_cost_interpolates_the_measured_batch_table():
    assert step_seconds(1) == 0.0321 and step_seconds(8) == 0.0429
    assert step_seconds(4) < step_seconds(6) < step_seconds(8)


def test_replay_prefills_every_prompt_without_retention_and_reuses_history_with_it():
    trace = generate("agentic", 0)
    dropped = Replay(trace, "fifo", "off", 256 << 20)
    dropped_completion = dropped.run()
    prompts = 0
    for agent in trace.agents:
        history = len(trace.prefixes["tools"].split())
        for call in agent.calls:
            history += call.text_tokens
            prompts += history
            history += call.max_tokens
    assert dropped.reused == 0 and dropped.prefilled == prompts
    kept = Replay(trace, "fifo", "tool-aware", 256 << 20)
    kept_completion = kept.run()
    assert kept.prefilled + kept.reused == prompts and kept.reused > prompts // 2
    assert sum(kept_completion.values()) < sum(dropped_completion.values())
