"""One PNG per workload: agent completion times per configuration, and each configuration's request latency CDF; and
the agentic end-to-end run's medians (bench/agentic_table.py) as one PNG with a panel per mix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from bench.records import read_records  # noqa: E402


def plot_workload(workload: str, configs: dict, path: Path) -> None:
    labels = list(configs)
    fig, (bars, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    positions = range(len(labels))
    means = [configs[name]["metrics"]["agent_completion"]["mean"] or 0 for name in labels]
    p99s = [configs[name]["metrics"]["agent_completion"]["p99"] or 0 for name in labels]
    bars.bar([p - 0.2 for p in positions], means, width=0.4, label="mean")
    bars.bar([p + 0.2 for p in positions], p99s, width=0.4, label="p99")
    bars.set_xticks(list(positions), labels, rotation=20)
    bars.set_ylabel("agent completion time (s)")
    bars.set_title(f"{workload}: agent completion")
    bars.legend()
    for label in labels:
        requests, _ = read_records(sorted(Path(configs[label]["records"]).glob("*.jsonl")))
        latencies = sorted(r.latency for r in requests if r.error is None)
        if latencies:
            cdf.step(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))], where="post", label=label)
    cdf.set_xscale("log")
    cdf.set_xlabel("request latency (s, log)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title(f"{workload}: request latency CDF")
    cdf.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_all(workloads: dict, run_dir: Path) -> list[Path]:
    paths = []
    for workload, entry in workloads.items():
        path = run_dir / f"{workload}.png"
        plot_workload(workload, entry["configs"], path)
        paths.append(path)
    return paths


def plot_agentic(table: dict, path: Path) -> None:
    """table: {mix: {configuration: {"mean", "p99", ...}}} (medians over seeds): mean and p99 bars per configuration."""
    fig, panels = plt.subplots(1, len(table), figsize=(6 * len(table), 4.5), squeeze=False)
    for panel, (mix, configs) in zip(panels[0], table.items(), strict=True):
        labels = list(configs)
        positions = range(len(labels))
        panel.bar([p - 0.2 for p in positions], [configs[c]["mean"] for c in labels], width=0.4, label="mean")
        panel.bar([p + 0.2 for p in positions], [configs[c]["p99"] for c in labels], width=0.4, label="p99")
        panel.set_xticks(list(positions), labels, rotation=30, ha="right")
        panel.set_ylabel("agent completion time (s), median over seeds")
        panel.set_title(mix)
        panel.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
