"""The agentic mixes run for real: agent processes against aiosd (scheduler x retention, tools run by the kernel) and
against llama.cpp's server (the baseline users run today), per-agent completion mean and p99 and tokens/s per run,
medians over seeds, written as results.json and results.md.

    python -m bench.agentic_live --scale full --seeds 0 1 2 --label quiet-box      # the numbers (quiet machine)
    python -m bench.agentic_live --scale quick --seeds 0 --label loaded-box        # end to end in minutes

Every configuration runs the same traces (bench/agentic_scale.py), one agent process each (bench/agent_runner.py), the
same prompts (raw completions, greedy, ignore_eos: every output has the trace's length), the same model file (the
bundled SmolLM2 GGUF), and the same thread count for the engine. One server per configuration serves every (mix,
seed) in turn, started and warmed up (one short call) before the first; aiosd frees an agent's KV when it exits, so a
run inherits at most the engine's prefix cache, and each seed draws another system prompt.

- aiosd: `--tools bench/agentic_tools.toml`, the agents run their tool gaps as kernel tool calls (the calculator, or a
  sleeping MCP tool for the trace's latency), so the kernel sees each agent wait on a tool. Engine options as the
  suite's (max batch 8, KV budget 16384 tokens), arena --arena-mb (256 MiB: the replay bench's, where retained
  contexts compete for room).
- llama.cpp: one server, slots = min(agents, max batch), each slot's context the longest history of the run's traces
  plus a margin, its prompt cache as shipped (cache_prompt, the slots' own KV and its RAM cache); the agents run
  their tool gaps themselves, with the same sleeps.

The table's ratios: llama.cpp / the kernel's best configuration (plas + tool-aware), fifo / plas, dropping the KV /
tool-aware, LRU / tool-aware (each > 1 when the second is faster). Times are wall seconds on this machine: compare
configurations of one run only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.agentic_scale import Scale, longest_sequence, trace_for
from bench.agentic_table import write_results
from bench.backends import KernelBackend
from bench.calibrate import warm_up
from bench.llama_backend import LlamaServerBackend
from bench.llama_server import LlamaServer
from bench.metrics import summary, throughput
from bench.records import read_records
from bench.trace import Trace
from kernel.launch import KernelProcess

MIXES = ("agentic", "agentic_heavy_tailed", "agentic_interactive")
TOOLS_CONFIG = Path(__file__).parent / "agentic_tools.toml"
ENGINE_OPTIONS = {"max-batch": "8", "kv-budget": "16384"}
LLAMA = "llama.cpp"
# Seconds granted before t0 for the agent processes to start (imports, on a loaded 2-core machine).
LAUNCH_MARGIN_S, LAUNCH_MARGIN_PER_AGENT_S = 2.0, 0.5
SLOT_MARGIN_TOKENS = 512  # tokenisation of generated text may differ from one token per word
SERVER_READY_S = 900.0


@dataclass(frozen=True)
class LiveConfig:
    label: str
    scheduler: str | None = None  # None: the llama.cpp server
    retention: str = "on"
    prefix_cache: str = "on"

    def kernel_options(self) -> dict[str, str]:
        return {"scheduler": self.scheduler, "retention": self.retention, "prefix-cache": self.prefix_cache}


CONFIGS = (
    LiveConfig("fifo-drop", "fifo", retention="off", prefix_cache="off"),  # a serving engine that keeps no KV
    LiveConfig("fifo-lru", "fifo"),
    LiveConfig("fifo-tool-aware", "fifo", retention="tool-aware"),
    LiveConfig("plas-lru", "plas"),
    LiveConfig("plas-tool-aware", "plas", retention="tool-aware"),
    LiveConfig(LLAMA),
)


def engine_threads() -> int:
    """The cores this process may use: aiosd's engine and llama.cpp's server both get this many threads."""
    return len(os.sched_getaffinity(0))


def run_agents(trace: Trace, trace_path: Path, records_dir: Path, target: list[str], timeout_s: float) -> dict:
    """One runner process per agent, all started now and waiting for t0 + their arrival; each one's exit code."""
    t0 = time.time() + LAUNCH_MARGIN_S + LAUNCH_MARGIN_PER_AGENT_S * len(trace.agents)

    def one(agent_id: str) -> int:
        argv = [sys.executable, "-m", "bench.agent_runner", "--trace", str(trace_path), "--agent", agent_id]
        argv += ["--out", str(records_dir / f"{agent_id}.jsonl"), "--t0", repr(t0), *target]
        with open(records_dir / f"{agent_id}.log", "w") as log:
            try:
                return subprocess.run(argv, stdout=log, stderr=log, timeout=timeout_s).returncode
            except subprocess.TimeoutExpired:
                return -9

    ids = [a.agent_id for a in trace.agents]
    with ThreadPoolExecutor(max_workers=len(ids)) as pool:  # threads only wait on the agent processes
        return dict(zip(ids, pool.map(one, ids), strict=True))


def measure(records_dir: Path, codes: dict) -> dict:
    """One run's numbers from its agents' records: completion (arrival to last call's end), ttft, tokens/s."""
    requests, agents = read_records(sorted(records_dir.glob("*.jsonl")))
    ok = [r for r in requests if r.error is None]
    return {
        "agents": len(agents),
        "failed_agents": sorted(a.agent_id for a in agents if a.error)
        + sorted(set(codes) - {a.agent_id for a in agents}),
        "exit_codes": codes,
        "agent_completion": summary(a.completion for a in agents),
        "completion_by_kind": {
            k: summary(a.completion for a in agents if a.kind == k) for k in {a.kind for a in agents}
        },
        "ttft": summary(r.ttft for r in ok if r.ttft is not None),
        "tool_seconds": sum(a.tool_seconds for a in agents),
        "completion_tokens": sum(r.completion_tokens for r in ok),
        "prompt_tokens": sum(r.prompt_tokens for r in ok),
        **throughput(agents, ok),
    }


def run_config(config: LiveConfig, traces: dict, out_dir: Path, args, threads: int) -> dict:
    """{mix: {seed: result}} for one configuration, its server started once."""
    results: dict = {}
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if config.scheduler is None:
        ctx = max(longest_sequence(t) for t, _ in traces.values()) + SLOT_MARGIN_TOKENS
        slots = min(int(ENGINE_OPTIONS["max-batch"]), max(len(t.agents) for t, _ in traces.values()))
        with LlamaServer(logs / "llama.log", slots, threads, ctx, ready_timeout_s=SERVER_READY_S) as server:
            LlamaServerBackend(server.url).generate("Warm up the server.", 2)
            for (mix, seed), (trace, path) in traces.items():
                results.setdefault(mix, {})[seed] = _one(
                    config, trace, path, out_dir, ["--llama-url", server.url], args
                )
        return results
    socket_dir = Path(tempfile.mkdtemp(prefix="aios-agentic-"))
    address = f"ipc://{socket_dir}/kernel.sock"
    options = {
        **config.kernel_options(),
        **ENGINE_OPTIONS,
        "arena-mb": str(args.arena_mb),
        "threads": str(threads),
        "tools": str(TOOLS_CONFIG),
    }
    try:
        with KernelProcess(address, options, logs / f"aiosd-{config.label}.log", SERVER_READY_S):
            harness = KernelBackend(address, name="bench-harness", priority=0)
            try:
                warm_up(harness)
                for (mix, seed), (trace, path) in traces.items():
                    before = harness.stats()
                    target = ["--address", address, "--kernel-tools"]
                    result = _one(config, trace, path, out_dir, target, args)
                    result["kernel"] = measure_kernel(before, harness.stats())
                    results.setdefault(mix, {})[seed] = result
            finally:
                harness.close()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    return results


def measure_kernel(before: dict, after: dict) -> dict:
    """The kernel's counters over one run alone (the kernel serves every run of a configuration)."""
    keys = ("retained_hits", "retained_tokens_reused", "preemptions", "recomputed_tokens")
    return {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in keys}


def _one(config: LiveConfig, trace: Trace, path: Path, out_dir: Path, target: list[str], args) -> dict:
    records_dir = out_dir / "records" / config.label / f"{trace.name}-seed{trace.seed}"
    shutil.rmtree(records_dir, ignore_errors=True)  # runners append: a re-run starts empty
    records_dir.mkdir(parents=True)
    started = time.monotonic()
    codes = run_agents(trace, path, records_dir, target, args.agent_timeout)
    result = measure(records_dir, codes)
    print(
        f"{config.label:>16} {trace.name:>22} seed {trace.seed}: mean {result['agent_completion']['mean']:.2f} s, "
        f"p99 {result['agent_completion']['p99']:.2f} s, {result['tokens_per_s']:.1f} tok/s, "
        f"failed {len(result['failed_agents'])} ({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=Scale, choices=list(Scale), default=Scale.FULL)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mixes", nargs="+", choices=MIXES, default=list(MIXES))
    parser.add_argument("--configs", nargs="+", choices=[c.label for c in CONFIGS], default=[c.label for c in CONFIGS])
    parser.add_argument("--arena-mb", type=int, default=256)
    parser.add_argument("--agent-timeout", type=float, default=3600.0, help="seconds before an agent is killed")
    parser.add_argument("--label", default="", help="what the run was, e.g. quiet-box or loaded-box (in the tables)")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: bench/results/agentic-live-SCALE-STAMP")
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out_dir or Path(__file__).parent / "results" / f"agentic-live-{args.scale.value}-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    traces = {
        (mix, seed): trace_for(mix, seed, args.scale, out_dir / "traces") for mix in args.mixes for seed in args.seeds
    }
    threads = engine_threads()
    runs = {}
    for config in (c for c in CONFIGS if c.label in args.configs):
        runs[config.label] = run_config(config, traces, out_dir, args, threads)
        meta = vars(args) | {"scale": args.scale.value, "threads": threads, "started": stamp}
        write_results(out_dir, runs, meta)  # partial results survive
    print(f"results in {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
