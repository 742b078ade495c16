"""Run experiments: for each configuration, start aiosd (or not), launch every agent of the trace as its own process,
collect their records, stop the kernel, and compute the metrics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from bench.backends import KernelBackend
from bench.calibrate import calibrate, warm_up
from bench.configs import Experiment, RunConfig
from bench.consistency import problems
from bench.metrics import CostModel, config_metrics
from bench.records import read_records
from bench.trace import Trace
from bench.workloads import TRACES_DIR, load_or_generate
from kernel.launch import KernelProcess

# Seconds granted before t0 for the agent processes to start (Python + pyzmq imports, on a busy 2-core machine).
LAUNCH_MARGIN_S, LAUNCH_MARGIN_PER_AGENT_S = 1.0, 0.3
# Seconds aiosd may take to load and measure its model: over 3 minutes when other work shares the 2 cores (load ~17).
KERNEL_READY_S = 900.0


class Suite:
    def __init__(
        self,
        out_dir: Path,
        seed: int,
        engine_options: dict[str, str],
        agent_timeout_s: float,
        traces_dir: Path = TRACES_DIR,
    ):
        self.out_dir = out_dir
        self.seed = seed
        self.engine_options = engine_options
        self.agent_timeout_s = agent_timeout_s
        self.traces_dir = traces_dir
        self.cost: CostModel | None = None
        self._socket_dir = Path(tempfile.mkdtemp(prefix="aios-bench-"))

    def run(self, experiments: tuple[Experiment, ...]) -> dict:
        """{workload: {"trace", "description", "configs": {label: run result}}}."""
        traces = {e.workload: load_or_generate(e.workload, self.seed, self.traces_dir) for e in experiments}
        total = sum(len(traces[e.workload][0].agents) * len(e.configs) for e in experiments)
        results: dict = {}
        try:
            with tqdm(total=total, unit="agent", file=sys.stderr) as bar:
                for experiment in experiments:
                    trace, path = traces[experiment.workload]
                    runs = {}
                    for config in experiment.configs:
                        bar.set_description(f"{experiment.workload}/{config.label}")
                        runs[config.label] = self.run_config(trace, path, config, bar)
                    results[experiment.workload] = {
                        "trace": str(path),
                        "description": trace.description,
                        "configs": runs,
                    }
        finally:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        return results

    def run_config(self, trace: Trace, trace_path: Path, config: RunConfig, bar: tqdm) -> dict:
        records_dir = self.out_dir / "records" / trace.name / config.label
        # Runners append to their record files: a re-run under the same run name starts from an empty folder, or its
        # metrics would count the previous run's calls too.
        shutil.rmtree(records_dir, ignore_errors=True)
        records_dir.mkdir(parents=True)
        result: dict = {"kernel": None, "kernel_stats": None}
        if config.uses_kernel:
            address = f"ipc://{self._socket_dir}/kernel.sock"
            options = {**config.kernel_options(), **self.engine_options}
            with KernelProcess(address, options, records_dir / "aiosd.log", ready_timeout_s=KERNEL_READY_S) as kernel:
                harness = KernelBackend(address, name="bench-harness", priority=0)
                try:
                    if self.cost is None:
                        self.cost = calibrate(harness)
                    else:
                        warm_up(harness)
                    exit_codes = self.run_agents(
                        trace, trace_path, records_dir, ["--address", address], len(trace.agents), bar
                    )
                    result["kernel_stats"] = harness.stats()
                finally:
                    harness.close()
                result["kernel"] = kernel.ready_line
        else:
            if self.cost is None:
                raise RuntimeError("the first configuration of a run must use the kernel: it calibrates the costs")
            # As many agent processes as cores, each on its own core; the others wait for a free one, as they would
            # for memory on a machine that cannot hold one model copy per agent.
            slots = min(len(trace.agents), os.cpu_count() or 1)
            threads = max(1, (os.cpu_count() or 1) // slots)
            exit_codes = self.run_agents(
                trace, trace_path, records_dir, ["--no-kernel", "--threads", str(threads)], slots, bar
            )
            result["no_kernel"] = {"concurrent_processes": slots, "threads_each": threads}
        requests, agents = read_records(sorted(records_dir.glob("*.jsonl")))
        result["exit_codes"] = exit_codes
        result["problems"] = problems(trace, requests, agents)
        result["metrics"] = config_metrics(agents, requests, self.cost, result["kernel_stats"])
        result["records"] = str(records_dir)
        return result

    def run_agents(
        self, trace: Trace, trace_path: Path, records_dir: Path, target_args: list[str], concurrency: int, bar: tqdm
    ) -> dict[str, int]:
        """Launch one runner process per agent (at most `concurrency` alive at once, in arrival order) and wait for
        all of them. Returns each agent's exit code (-9 when it timed out and was killed)."""
        t0 = time.time() + LAUNCH_MARGIN_S + LAUNCH_MARGIN_PER_AGENT_S * min(concurrency, len(trace.agents))
        programs = sorted(trace.agents, key=lambda a: (a.arrival_s, a.agent_id))

        def run_one(agent_id: str) -> int:
            argv = [
                sys.executable,
                "-m",
                "bench.agent_runner",
                "--trace",
                str(trace_path),
                "--agent",
                agent_id,
                "--out",
                str(records_dir / f"{agent_id}.jsonl"),
                "--t0",
                repr(t0),
                *target_args,
            ]
            with open(records_dir / f"{agent_id}.log", "w") as log:
                try:
                    return subprocess.run(argv, stdout=log, stderr=log, timeout=self.agent_timeout_s).returncode
                except subprocess.TimeoutExpired:
                    return -9

        codes: dict[str, int] = {}
        # Threads here only wait on child processes; all the work happens in the agent and kernel processes.
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = {pool.submit(run_one, a.agent_id): a.agent_id for a in programs}
            for future in as_completed(futures):
                codes[futures[future]] = future.result()
                bar.update(1)
        return codes


def cost_dict(cost: CostModel | None) -> dict | None:
    return None if cost is None else asdict(cost)
