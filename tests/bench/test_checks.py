"""The suite's own judgements: the calculator tool, run consistency, and the targets table."""

import pytest

from bench.consistency import problems
from bench.records import AgentRecord, RequestRecord
from bench.targets import evaluate
from bench.tools import calculate
from bench.workloads import generate


def test_calculator_does_integer_arithmetic_and_refuses_the_rest():
    assert calculate("(12 * 34) % 5 + 12 - 34") == (12 * 34) % 5 + 12 - 34
    assert calculate("-3 // 2") == -2
    for bad in ("__import__('os')", "2 ** 8", "1 +", "1 // 0"):
        with pytest.raises(ValueError):
            calculate(bad)


def _sound_records(trace):
    requests = [
        RequestRecord(a.agent_id, a.kind, a.priority, i, 1.0, 1.5, 2.0, 10, call.max_tokens, call.max_tokens, 0.0)
        for a in trace.agents
        for i, call in enumerate(a.calls)
    ]
    agents = [
        AgentRecord(a.agent_id, a.kind, a.priority, a.arrival_s, 3.0, 0.0, 0.0, len(a.calls)) for a in trace.agents
    ]
    return requests, agents


def test_a_sound_run_has_no_problems_and_each_fault_is_named():
    trace = generate("smoke", 0)
    requests, agents = _sound_records(trace)
    assert problems(trace, requests, agents) == []
    short = requests[0].__class__(**{**requests[0].__dict__, "completion_tokens": 1})
    assert any("generated 1 tokens" in p for p in problems(trace, [short] + requests[1:], agents))
    assert any("answered 2 times" in p for p in problems(trace, requests + requests[:1], agents))
    assert any("has no record" in p for p in problems(trace, requests[1:], agents))
    assert any("reported 0 times" in p for p in problems(trace, requests, agents[1:]))


def _metrics(interactive_p50, tokens_per_s, mean_completion):
    return {
        "latency_by_kind": {"interactive": {"p50": interactive_p50}},
        "tokens_per_s": tokens_per_s,
        "agent_completion": {"mean": mean_completion},
    }


def test_targets_compare_configs_of_the_same_workload():
    results = {
        "interactive_background": {"fifo": _metrics(6.0, 100.0, 10.0), "priority": _metrics(1.0, 95.0, 9.0)},
        "many_short_few_long": {
            "fifo": _metrics(None, 1.0, 12.0),
            "las": _metrics(None, 1.0, 10.0),
            "no-kernel": _metrics(None, 1.0, 30.0),
        },
    }
    rows = {(t.name.split(":")[0], t.workload): t for t in evaluate(results) if "throughput" not in t.name}
    throughput = next(t for t in evaluate(results) if "throughput" in t.name)
    assert rows[("priority", "interactive_background")].measured == pytest.approx(6.0)
    assert rows[("priority", "interactive_background")].met is True
    assert throughput.measured == pytest.approx(0.95) and throughput.met is True
    las = rows[("las", "many_short_few_long")]
    assert las.measured == pytest.approx(1.2) and las.met is False
    assert rows[("kernel", "many_short_few_long")].met is True
    assert rows[("retention", "multi_call_history")].measured is None
    assert rows[("retention", "multi_call_history")].met is None
