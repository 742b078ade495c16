"""Write a run's results: results.json, report.md (Markdown tables, targets) and the same tables on stdout."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

from bench.targets import TargetResult


def describe_machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes else "0"


CONFIG_COLUMNS = (
    ("agent completion mean (s)", lambda m: _seconds(m["agent_completion"]["mean"])),
    ("p50", lambda m: _seconds(m["agent_completion"]["p50"])),
    ("p99", lambda m: _seconds(m["agent_completion"]["p99"])),
    ("latency p50 (s)", lambda m: _seconds(m["latency"]["p50"])),
    ("latency p99", lambda m: _seconds(m["latency"]["p99"])),
    ("TTFT p50 (s)", lambda m: _seconds(m["ttft"]["p50"])),
    ("wait mean (s)", lambda m: _seconds(m["queue_wait"]["mean"])),
    ("tokens/s", lambda m: f"{m['tokens_per_s']:.1f}"),
    ("agents/min", lambda m: f"{m['agents_per_min']:.1f}"),
    ("Jain", lambda m: "–" if m["fairness_jain"] is None else f"{m['fairness_jain']:.3f}"),
    ("preempt", lambda m: str(m["preemptions"])),
    ("snapshots", lambda m: _size(m["snapshot_bytes"])),
    ("recomputed tok", lambda m: str(m["recomputed_tokens"])),
    ("reused tok", lambda m: str(m["retained_tokens_reused"])),
)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def workload_table(configs: dict) -> str:
    header = ["config"] + [name for name, _ in CONFIG_COLUMNS]
    return _table(
        header, [[label] + [cell(run["metrics"]) for _, cell in CONFIG_COLUMNS] for label, run in configs.items()]
    )


def by_kind_table(configs: dict) -> str:
    kinds = sorted({k for run in configs.values() for k in run["metrics"]["latency_by_kind"]})
    header = ["config"] + [f"{k} latency p50 (s)" for k in kinds] + [f"{k} completion mean (s)" for k in kinds]
    rows = [
        [label]
        + [_seconds(run["metrics"]["latency_by_kind"].get(k, {}).get("p50")) for k in kinds]
        + [_seconds(run["metrics"]["completion_by_kind"].get(k, {}).get("mean")) for k in kinds]
        for label, run in configs.items()
    ]
    return _table(header, rows)


def targets_table(targets: list[TargetResult]) -> str:
    def status(t: TargetResult) -> str:
        return {None: "not measured", True: "met", False: "missed"}[t.met]

    rows = [
        [
            t.name,
            t.workload,
            "–" if t.measured is None else f"{t.measured:.2f}×",
            f"{t.comparison} {t.target}×",
            status(t),
        ]
        for t in targets
    ]
    return _table(["target", "workload", "measured", "target", "status"], rows)


def markdown(results: dict) -> str:
    out = [
        f"# Bench run {results['run']}",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{results['machine']['memory_gib']} GiB; torch {results['machine']['torch']}. "
        f"Mode: {results['mode']}, seed {results['seed']}, engine options {results['engine_options']}, "
        f"wall time {results['wall_s']:.0f} s; 1-minute load average {results['load_average_before'][0]:.1f} "
        f"before, {results['load_average_after'][0]:.1f} after.",
        "",
    ]
    cost = results["cost_model"]
    if cost:
        out += [
            f"Solo cost model (calibrated in this run): {cost['overhead_s'] * 1000:.1f} ms per call + "
            f"{cost['prefill_s_per_token'] * 1000:.2f} ms per prompt token + "
            f"{cost['decode_s_per_token'] * 1000:.1f} ms per output token.",
            "",
        ]
    out += ["## Targets", "", targets_table([TargetResult(**t) for t in results["targets"]]), ""]
    for workload, entry in results["workloads"].items():
        out += [
            f"## {workload}",
            "",
            entry["description"] + f" (trace `{Path(entry['trace']).name}`).",
            "",
            workload_table(entry["configs"]),
            "",
            by_kind_table(entry["configs"]),
            "",
        ]
        for label, run in entry["configs"].items():
            for problem in run["problems"]:
                out.append(f"- **{label}**: {problem}")
            if run.get("no_kernel"):
                out.append(
                    f"- {label}: {run['no_kernel']['concurrent_processes']} agent processes at once, "
                    f"{run['no_kernel']['threads_each']} torch thread(s) each; each loads the model "
                    f"(mean {run['metrics']['model_load_s']['mean']:.1f} s, counted in completion time)."
                )
        out += [f"![{workload}]({workload}.png)", ""]
    return "\n".join(out) + "\n"


def write(results: dict, targets: list[TargetResult], run_dir: Path) -> str:
    results["targets"] = [asdict(t) for t in targets]
    (run_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    (run_dir / "report.md").write_text(text)
    return text
