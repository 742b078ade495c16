"""python -m bench [--smoke]: compare kernel configurations and baselines on agent workloads; write results, a
Markdown report and plots under bench/results/<run>/ and print the report."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import configs, plots, report, targets
from bench.suite import Suite, cost_dict
from bench.trace import TraceError
from kernel.launch import KernelStartError

RESULTS_DIR = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny workload, few configurations (under 2 minutes)")
    parser.add_argument("--workload", action="append", help="run only this workload (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="trace seed (default 0)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results parent folder")
    parser.add_argument("--run", help="run name (default: mode and timestamp)")
    for option, default in configs.DEFAULT_ENGINE_OPTIONS.items():
        parser.add_argument(f"--{option}", default=default, help=f"aiosd --{option} (default {default})")
    parser.add_argument("--dtype", help="aiosd --dtype (default: aiosd's)")
    parser.add_argument("--model", help="aiosd --model (default: aiosd's)")
    parser.add_argument("--agent-timeout", type=float, default=900.0, help="seconds before an agent process is killed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        chosen = configs.experiments(args.smoke, args.workload)
    except ValueError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    mode = "smoke" if args.smoke else "full"
    run_dir = args.out / (args.run or f"{mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    engine_options = {o: getattr(args, o.replace("-", "_")) for o in configs.DEFAULT_ENGINE_OPTIONS}
    engine_options.update({o: getattr(args, o) for o in ("dtype", "model") if getattr(args, o)})
    suite = Suite(run_dir, args.seed, engine_options, args.agent_timeout)
    started, load_before = time.monotonic(), os.getloadavg()
    try:
        workloads = suite.run(chosen)
    except (KernelStartError, TraceError) as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1
    # Load averages show whether other work shared the cores during the run.
    results = {
        "run": run_dir.name,
        "mode": mode,
        "seed": args.seed,
        "machine": report.describe_machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "engine_options": engine_options,
        "cost_model": cost_dict(suite.cost),
        "wall_s": time.monotonic() - started,
        "workloads": workloads,
    }
    measured = targets.evaluate(
        {w: {label: run["metrics"] for label, run in entry["configs"].items()} for w, entry in workloads.items()}
    )
    text = report.write(results, measured, run_dir)
    plots.plot_all(workloads, run_dir)
    print(text)
    print(f"results in {run_dir}")
    sound = all(not run["problems"] for entry in workloads.values() for run in entry["configs"].values())
    return 0 if sound else 1


if __name__ == "__main__":
    sys.exit(main())
