"""`python -m bench --smoke` end to end: a real aiosd on the default model, agents as real processes, and the no-kernel
baseline; the numbers it reports must account for the trace exactly."""

import json

from bench.__main__ import main
from bench.workloads import generate


def test_smoke_run_is_consistent(tmp_path):
    assert main(["--smoke", "--out", str(tmp_path), "--run", "smoke"]) == 0
    run_dir = tmp_path / "smoke"
    results = json.loads((run_dir / "results.json").read_text())
    trace = generate("smoke", 0)
    configs = results["workloads"]["smoke"]["configs"]
    assert set(configs) == {"fifo", "priority", "no-kernel"}
    for label, run in configs.items():
        m = run["metrics"]
        assert run["problems"] == [], label
        assert set(run["exit_codes"].values()) == {0}, label
        assert m["requests"] == trace.n_calls() and m["errors"] == 0, label
        assert m["completion_tokens"] == trace.requested_output_tokens(), label  # ignore_eos: exact lengths
        assert m["agents"] == len(trace.agents), label
        assert 0 < m["latency"]["p50"] <= m["latency"]["p99"], label
        assert 0 <= m["ttft"]["p50"] <= m["latency"]["p99"], label
        assert m["tokens_per_s"] > 0 and 0 < m["fairness_jain"] <= 1, label
        assert m["slowdown"]["p50"] > 0, label
    assert configs["fifo"]["kernel"].startswith("aiosd ready")
    assert configs["no-kernel"]["metrics"]["model_load_s"]["mean"] > 0
    assert configs["fifo"]["metrics"]["model_load_s"]["mean"] == 0
    assert results["cost_model"]["decode_s_per_token"] > 0
    report = (run_dir / "report.md").read_text()
    assert "| fifo |" in report and "## Targets" in report
    assert (run_dir / "smoke.png").stat().st_size > 0
