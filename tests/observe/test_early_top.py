"""Tool runs started early, as the operator sees them, through a real aiosd (the default model, constrained tool calls)
and the recording MCP server of tests/tools (its read-only `lookup` starts early): a held run is listed in kernel.top
under its agent while unclaimed and leaves when its tool.call claims it or its agent ends; kernel.metrics' counts move
with it and always add up (started == held + claimed + expired + dropped + refused); the gateway's /metrics renders
them under their Prometheus names."""

from __future__ import annotations

import time

import pytest

import sdk
from kernel.gateway.metrics import render
from kernel.launch import KernelProcess
from tests.kernel.harness import wait_until
from tests.observe.conftest import admin_token
from tests.tools.test_early_start import OPTIONS, model_call, offered, recorder_tools, runs

OUTCOMES = ("claimed", "expired", "dropped", "refused")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("early-top")
    record, config = recorder_tools(workdir)
    with KernelProcess(f"ipc://{workdir}/kernel.sock", {**OPTIONS, "tools": str(config)}, workdir / "aiosd.log") as k:
        k.record = record
        yield k


@pytest.fixture
def op(kernel):
    with sdk.connect(kernel.address, token=admin_token(kernel.address), timeout=300) as operator:
        yield operator


def held_of(top: dict, agent_id: str) -> list[dict]:
    return [run for run in top["early"] if run["agent_id"] == agent_id]


def agent_row(top: dict, agent_id: str) -> dict:
    return next(a for a in top["agents"] if a["agent_id"] == agent_id)


def early_counts(op) -> dict:
    counts = op.metrics()["early_tools"]
    assert counts["enabled"]
    assert counts["started"] == counts["held"] + sum(counts[o] for o in OUTCOMES)  # they add up, every time
    return counts


def test_a_held_run_is_listed_until_its_tool_call_claims_it(kernel, op):
    with sdk.connect(kernel.address, name="early-top-claim", timeout=300) as agent:
        before = early_counts(op)
        name, arguments = model_call(agent, offered(agent, "lookup"))
        top = wait_until(lambda: held_of(t := op.top(), agent.agent_id) and t, what="the held run listed")
        (run,) = held_of(top, agent.agent_id)
        assert run["tool"] == name and run["state"] in ("running", "finished") and run["age_s"] >= 0
        assert run["started"] <= time.time() and top["early_total"] >= 1
        assert agent_row(top, agent.agent_id)["early_held"] == 1
        wait_until(lambda: held_of(op.top(), agent.agent_id)[0]["state"] == "finished", what="the run finished")
        held = early_counts(op)
        assert held["started"] == before["started"] + 1 and held["held"] >= 1

        output = agent.tools.call(name, arguments)
        assert not output.is_error and output.text == runs(kernel, "lookup")[-1]["run"]
        top = op.top()
        assert held_of(top, agent.agent_id) == [] and agent_row(top, agent.agent_id)["early_held"] == 0
        after = early_counts(op)
        assert after["claimed"] == before["claimed"] + 1 and after["started"] == before["started"] + 1


def test_a_held_run_leaves_when_its_agent_ends(kernel, op):
    agent = sdk.connect(kernel.address, name="early-top-leaver", timeout=300)
    try:
        before = early_counts(op)
        model_call(agent, offered(agent, "lookup"))
        wait_until(lambda: held_of(op.top(), agent.agent_id), what="the held run listed")
    finally:
        agent.close()
    wait_until(lambda: not held_of(op.top(), agent.agent_id), what="the run dropped with its agent")
    after = early_counts(op)
    assert after["dropped"] == before["dropped"] + 1 and after["claimed"] == before["claimed"]


def test_the_counts_reach_the_prometheus_text(kernel, op):
    values = op.metrics()
    counts = values["early_tools"]
    text = render(values).decode()
    assert f"aios_early_tool_runs_started_total {float(counts['started'])}" in text
    assert f"aios_early_tool_runs_held {float(counts['held'])}" in text
    for outcome in OUTCOMES:
        assert f'aios_early_tool_runs_total{{outcome="{outcome}"}} {float(counts[outcome])}' in text


def test_top_lists_at_most_its_limit_of_held_runs(kernel, op):
    with sdk.connect(kernel.address, name="early-top-limit", timeout=300) as agent:
        model_call(agent, offered(agent, "lookup"))
        wait_until(lambda: held_of(op.top(), agent.agent_id), what="the held run listed")
        top = op.top(limit=1)
        assert len(top["early"]) <= 1 and top["early_total"] >= 1
