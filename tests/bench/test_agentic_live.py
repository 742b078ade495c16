"""The agentic end-to-end bench's parts: the tool server aiosd runs for the agents (real MCP over stdio, through the
kernel's tool manager and bench/agentic_tools.toml), every trace gap mapped to a tool it offers, the quick cut of a
mix, and the results table's medians and ratios."""

from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.agent_traces import AGENTIC_MIXES, draw_tool
from bench.agentic_live import TOOLS_CONFIG
from bench.agentic_scale import Scale, cut, trace_for
from bench.agentic_table import medians, ratios, write_results
from bench.tools import kernel_call
from bench.workloads import generate
from kernel.tools import ToolManager, load_config
from tests.tools.reachable import needs_sandbox_reach


@pytest.fixture(scope="module")
def tools():
    manager = ToolManager(load_config(TOOLS_CONFIG))
    assert manager.start(timeout=120) == {}
    yield manager
    manager.stop()


@needs_sandbox_reach()
def test_every_gap_kind_runs_as_a_kernel_tool_call(tools):
    rng = random.Random(7)
    gaps = {}
    while len(gaps) < 3:  # one gap of each kind the distributions draw
        gap = draw_tool(rng)
        gaps.setdefault(gap.kind, gap)
    offered = {spec.name for spec in tools.list_tools()}
    for gap in gaps.values():
        name, arguments = kernel_call(gap)
        assert name in offered
        result = tools.call(name, arguments, {"agent_id": "a1"}).result(timeout=120)
        assert not result.is_error, result.text
    expression = gaps["calculator"].expression
    name, arguments = kernel_call(gaps["calculator"])
    # the kernel's calculator computes what the agent-side calculator does
    from bench.tools import calculate

    assert tools.call(name, arguments, {"agent_id": "a1"}).result(timeout=120).text == str(calculate(expression))


@needs_sandbox_reach()
def test_a_sleeping_tool_holds_no_other_call_back_and_refuses_bad_latencies(tools):
    # a short call behind a long one of the same tool finishes first: the server does not hold its loop in a sleep
    long = tools.call("run_tests", {"seconds": 50.0}, {"agent_id": "a1"})
    started = time.monotonic()
    short = tools.call("run_tests", {"seconds": 0.2}, {"agent_id": "a2"})
    assert not short.result(timeout=45).is_error
    assert time.monotonic() - started >= 0.2  # it really waited
    assert not long.done()
    long.cancel()
    for seconds in (-1.0, 1e6):
        assert tools.call("api_request", {"seconds": seconds}, {"agent_id": "a1"}).result(timeout=120).is_error


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(AGENTIC_MIXES)), st.integers(0, 50), st.integers(1, 20), st.integers(1, 30))
def test_a_cut_is_a_prefix_of_the_full_trace(mix, seed, agents, calls):
    full = generate(mix, seed)
    small = cut(full, agents, calls)
    assert len(small.agents) == min(agents, len(full.agents))
    by_arrival = sorted(full.agents, key=lambda a: (a.arrival_s, a.agent_id))
    for program, original in zip(small.agents, by_arrival, strict=False):
        assert program.agent_id == original.agent_id and program.arrival_s == original.arrival_s
        assert len(program.calls) == min(calls, len(original.calls))
        assert program.calls[-1].tool_after is None
        for mine, theirs in zip(program.calls[:-1], original.calls, strict=False):
            assert mine == theirs
        assert program.calls[-1].text == original.calls[len(program.calls) - 1].text


def test_quick_traces_are_saved_and_replayable(tmp_path):
    trace, path = trace_for("agentic_heavy_tailed", 1, Scale.QUICK, tmp_path)
    assert path.exists() and path.parent == tmp_path and "quick" in path.name
    assert len(trace.agents) <= len(generate("agentic_heavy_tailed", 1).agents)


def _run(mean: float, p99: float, tps: float, failed: int = 0) -> dict:
    return {
        "agent_completion": {"n": 3, "mean": mean, "p99": p99},
        "tokens_per_s": tps,
        "failed_agents": [f"x{i}" for i in range(failed)],
    }


def test_medians_over_seeds_and_ratios_of_baseline_to_tested():
    runs = {
        "llama.cpp": {"agentic": {0: _run(10, 30, 5), 1: _run(20, 40, 6), 2: _run(30, 50, 7, failed=1)}},
        "plas-tool-aware": {"agentic": {0: _run(4, 10, 9), 1: _run(5, 20, 8), 2: _run(6, 30, 7)}},
        "fifo-lru": {"agentic": {0: _run(8, 8, 1)}},
    }
    table = medians(runs)
    assert table["agentic"]["llama.cpp"]["mean"] == 20 and table["agentic"]["llama.cpp"]["p99"] == 40
    assert table["agentic"]["llama.cpp"]["failed_agents"] == 1
    assert table["agentic"]["plas-tool-aware"]["tokens_per_s"] == 8
    out = ratios(table, runs)["agentic"]
    ratio = out["llama.cpp / plas+tool-aware"]
    assert (ratio["mean"], ratio["p99"]) == (4.0, 2.0)
    assert ratio["per_seed_mean"] == [2.5, 4.0]  # seed 2 had a failed agent: not a like-for-like pair
    assert "fifo / plas (lru)" not in out  # plas-lru did not run


def test_results_are_written_as_json_and_a_markdown_table(tmp_path):
    runs = {"llama.cpp": {"agentic": {0: _run(10, 30, 5)}}, "plas-tool-aware": {"agentic": {0: _run(5, 10, 9)}}}
    text = write_results(tmp_path, runs, {"label": "loaded-box", "scale": "quick", "seeds": [0], "threads": 2})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["ratios"]["agentic"]["llama.cpp / plas+tool-aware"] == {
        "mean": 2.0,
        "p99": 3.0,
        "per_seed_mean": [2.0],
    }
    assert (tmp_path / "agentic_live.png").stat().st_size > 0
    assert "2.00 [2.00 - 2.00]" in text
    assert saved["meta"]["label"] == "loaded-box" and saved["meta"]["machine"]["cpu"]
    assert (tmp_path / "results.md").read_text() == text
    assert "| agentic | plas-tool-aware | 5.00 | 10.00 | 9.0 |" in text and "loaded-box" in text
