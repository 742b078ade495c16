"""The agentic end-to-end run's tables: medians over seeds per (mix, configuration), and the ratios the targets name.

    write_results(out_dir, runs, meta)   # results.json (every run, the medians, meta) and results.md; the md on stdout

runs: {configuration: {mix: {seed: result}}} with result["agent_completion"]["mean"/"p99"] and result["tokens_per_s"]
(bench/agentic_live.py). A ratio is a / b of mean (and p99) completion, so > 1 means b finished its agents sooner; a
ratio whose two configurations did not both run is left out. Runs with failed agents are kept and counted in the table:
a median over them is flagged, never silently mixed in.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.report import describe_machine

# (name, slower-or-baseline configuration, configuration under test)
RATIOS = (
    ("llama.cpp / plas+tool-aware", "llama.cpp", "plas-tool-aware"),
    ("fifo / plas (lru)", "fifo-lru", "plas-lru"),
    ("drop / tool-aware (fifo)", "fifo-drop", "fifo-tool-aware"),
    ("lru / tool-aware (fifo)", "fifo-lru", "fifo-tool-aware"),
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


def ratios(table: dict) -> dict:
    out: dict = {}
    for mix, configs in table.items():
        for name, a, b in RATIOS:
            if a in configs and b in configs:
                out.setdefault(mix, {})[name] = {
                    "mean": configs[a]["mean"] / configs[b]["mean"],
                    "p99": configs[a]["p99"] / configs[b]["p99"],
                }
    return out


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
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, runs: dict, meta: dict) -> str:
    meta = {**meta, "machine": describe_machine()}
    table = medians(runs)
    ratio_table = ratios(table)
    text = markdown(table, ratio_table, meta)
    payload = {"meta": meta, "medians": table, "ratios": ratio_table, "runs": runs}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (out_dir / "results.md").write_text(text)
    print(text)
    return text
