"""The agentic end-to-end run's tables: medians over seeds per (mix, configuration), and the ratios the targets name.

    write_results(out_dir, runs, meta)   # results.json (every run, the medians, meta), results.md (also on stdout),
                                         # agentic_live.png (mean and p99 per configuration, one panel per mix)
    python -m bench.agentic_table DIR    # the tables and plot again from DIR/results.json

runs: {configuration: {mix: {seed: result}}} with result["agent_completion"]["mean"/"p99"] and result["tokens_per_s"]
(bench/agentic_live.py). A ratio is a / b of mean (and p99) completion, so > 1 means b finished its agents sooner:
the ratio of the medians over seeds, and beside it the median and range of the per-seed ratios (a and b on the same
trace); a ratio whose two configurations did not both run is left out. Runs with failed agents are kept and counted
in the table: a median over them is flagged, never silently mixed in.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from bench.plots import plot_agentic
from bench.report import describe_machine

# (name, slower-or-baseline configuration, configuration under test)
RATIOS = (
    ("llama.cpp / plas+tool-aware", "llama.cpp", "plas-tool-aware"),
    ("fifo / plas (lru)", "fifo-lru", "plas-lru"),
    ("fifo / plas (tool-aware)", "fifo-tool-aware", "plas-tool-aware"),
    ("drop / tool-aware (fifo)", "fifo-drop", "fifo-tool-aware"),
    ("lru / tool-aware (fifo)", "fifo-lru", "fifo-tool-aware"),
    ("lru / tool-aware (plas)", "plas-lru", "plas-tool-aware"),
)


def medians(runs: dict) -> dict:
    """{mix: {configuration: median over seeds of mean, p99, tokens/s; failed agents summed}}."""
    table: dict = {}
    for config, by_mix in runs.items():
        for mix, by_seed in by_mix.items():
            results = list(by_seed.values())
            done = [r for r in results if r["agent_completion"]["n"]]
            if not done:
                continue
            table.setdefault(mix, {})[config] = {
                "mean": statistics.median(r["agent_completion"]["mean"] for r in done),
                "p99": statistics.median(r["agent_completion"]["p99"] for r in done),
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in done),
                "retained_tokens_reused": statistics.median(
                    r.get("kernel", {}).get("retained_tokens_reused", 0) for r in done
                ),
                "failed_agents": sum(len(r["failed_agents"]) for r in results),
                "seeds": len(results),
            }
    return table


def ratios(table: dict, runs: dict) -> dict:
    out: dict = {}
    for mix, configs in table.items():
        for name, a, b in RATIOS:
            if a in configs and b in configs:
                per_seed = _per_seed(runs[a][mix], runs[b][mix])
                out.setdefault(mix, {})[name] = {
                    "mean": configs[a]["mean"] / configs[b]["mean"],
                    "p99": configs[a]["p99"] / configs[b]["p99"],
                    "per_seed_mean": per_seed,
                }
    return out


def _per_seed(a_runs: dict, b_runs: dict) -> list[float]:
    """a / b of mean completion on each seed both ran with every agent finished."""
    both = [seed for seed in a_runs if seed in b_runs and a_runs[seed]["agent_completion"]["n"]]
    ok = [s for s in both if not a_runs[s]["failed_agents"] and not b_runs[s]["failed_agents"]]
    return [a_runs[s]["agent_completion"]["mean"] / b_runs[s]["agent_completion"]["mean"] for s in ok]


def markdown(table: dict, ratio_table: dict, meta: dict) -> str:
    lines = [
        f"Agentic mixes end to end ({meta.get('label') or 'unlabelled'}; scale {meta.get('scale')}; seeds "
        f"{meta.get('seeds')}; {meta.get('threads')} engine threads; {meta.get('machine', {}).get('cpu', '?')}). "
        "Agent completion in wall seconds, median over seeds.",
        "",
        "| mix | configuration | mean | p99 | tokens/s | retained tokens reused | failed agents |",
        "|---|---|---|---|---|---|---|",
    ]
    for mix, configs in table.items():
        for config, r in configs.items():
            lines.append(
                f"| {mix} | {config} | {r['mean']:.2f} | {r['p99']:.2f} | {r['tokens_per_s']:.1f} | "
                f"{r['retained_tokens_reused']:.0f} | {r['failed_agents']} |"
            )
    names = [name for name, _, _ in RATIOS if any(name in m for m in ratio_table.values())]
    if names:
        lines += ["", "| mix | " + " | ".join(f"{n}, mean / p99" for n in names) + " |", "|---|" + "---|" * len(names)]
        for mix, by_name in ratio_table.items():
            cells = [f"{by_name[n]['mean']:.2f} / {by_name[n]['p99']:.2f}" if n in by_name else "" for n in names]
            lines.append(f"| {mix} | " + " | ".join(cells) + " |")
        lines += ["", "Per-seed ratios of mean completion (same trace): median [min - max]", ""]
        lines += ["| mix | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for mix, by_name in ratio_table.items():
            cells = [_spread(by_name[n]["per_seed_mean"]) if n in by_name else "" for n in names]
            lines.append(f"| {mix} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} [{min(values):.2f} - {max(values):.2f}]"


def write_results(out_dir: Path, runs: dict, meta: dict) -> str:
    meta = {**meta, "machine": describe_machine()}
    table = medians(runs)
    ratio_table = ratios(table, runs)
    text = markdown(table, ratio_table, meta)
    payload = {"meta": meta, "medians": table, "ratios": ratio_table, "runs": runs}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (out_dir / "results.md").write_text(text)
    if table:
        plot_agentic(table, out_dir / "agentic_live.png")
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    out_dir = Path((argv if argv is not None else sys.argv[1:])[0])
    payload = json.loads((out_dir / "results.json").read_text())
    meta = {k: v for k, v in payload["meta"].items() if k != "machine"}
    write_results(out_dir, payload["runs"], meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
