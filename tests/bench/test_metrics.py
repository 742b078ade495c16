import pytest

from bench.metrics import CostModel, config_metrics, jain_index, percentile, slowdowns, summary, throughput
from bench.records import AgentRecord, RequestRecord


def request(agent="a", call=0, submitted=0.0, first=0.5, finished=1.0, completion=10, kind="k", wait=0.1):
    return RequestRecord(agent, kind, 0, call, submitted, first, finished, 20, completion, completion, wait)


def agent(agent_id="a", arrival=0.0, finished=2.0, tool=0.0, kind="k"):
    return AgentRecord(agent_id, kind, 0, arrival, finished, tool, 0.0, 1)


def test_percentile_interpolates_between_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile([1, 2, 3, 4, 5], 0) == 1 and percentile([1, 2, 3, 4, 5], 100) == 5
    assert percentile([10, 0], 25) == 2.5


@pytest.mark.parametrize("values,q", [([], 50), ([1.0], 101), ([1.0], -1)])
def test_percentile_rejects_bad_input(values, q):
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summary_of_nothing_has_no_numbers():
    assert summary([]) == {"n": 0, "mean": None, "p50": None, "p99": None}
    assert summary([1, 3])["mean"] == 2


def test_jain_index_bounds():
    assert jain_index([2, 2, 2]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert 0.25 < jain_index([1, 2, 3, 4]) < 1
    with pytest.raises(ValueError):
        jain_index([])
    with pytest.raises(ValueError):
        jain_index([1, -1])


def test_slowdown_divides_completion_by_solo_time_plus_tools():
    cost = CostModel(overhead_s=0.0, prefill_s_per_token=0.0, decode_s_per_token=0.1)
    # solo: 10 tokens × 0.1 s = 1 s of service + 1 s of tools; completion 4 s → slowdown 2
    result = slowdowns([agent(finished=4.0, tool=1.0)], [request(completion=10)], cost)
    assert result == {"a": pytest.approx(2.0)}


def test_throughput_counts_tokens_over_makespan():
    agents = [agent("a", arrival=1.0, finished=3.0), agent("b", arrival=2.0, finished=5.0)]
    result = throughput(agents, [request("a", completion=20), request("b", completion=20)])
    assert result["makespan_s"] == 4.0
    assert result["tokens_per_s"] == 10.0
    assert result["agents_per_min"] == 30.0


def test_config_metrics_groups_by_kind_and_excludes_failed_calls():
    cost = CostModel(0.0, 0.0, 0.1)
    requests = [
        request("a", kind="fast", finished=1.0),
        request("b", kind="slow", finished=3.0),
        RequestRecord("b", "slow", 0, 1, 3.0, None, 3.5, 0, 0, 10, 0.0, error="boom"),
    ]
    agents = [agent("a", kind="fast", finished=1.0), agent("b", kind="slow", finished=3.5)]
    m = config_metrics(
        agents,
        requests,
        cost,
        {"preemptions": 3, "snapshot_bytes_saved": 1024, "snapshot_bytes_loaded": 1000, "other": "x"},
    )
    assert m["errors"] == 1 and m["requests"] == 3
    assert m["completion_tokens"] == 20
    assert m["latency_by_kind"]["fast"]["p50"] == 1.0 and m["latency_by_kind"]["slow"]["p50"] == 3.0
    assert m["preemptions"] == 3 and m["snapshot_bytes"] == 2024 and m["recomputed_tokens"] == 0
    assert 0 < m["fairness_jain"] <= 1
