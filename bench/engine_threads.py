"""The engine's decode step beside agent processes on the same cores: fixed threads (before) vs the run-time thread
count (after: kernel/engine/cpu/threads.py), in one run.

    python -m bench.engine_threads [--model PATH] [--weights int4] [--agents 0,4,8] [--duty 0.1] [--new-tokens 32]

Agents are ordinary processes on the cores aiosd may use: between calls they tokenize, parse JSON, run tools. Each
stand-in agent here burns the CPU for `duty` of every 20 ms period (10% by default: 8 of them ask for 0.8 of a core on
top of the engine) on the engine's own CPU set. For each number of agents, one engine decodes at batch 1 and batch 8
three ways back to back, each after an untimed decode of the same length: fixed at the default threads (the physical
cores this process may use), fixed at 1 thread, and adaptive (starting at the default; its state carries over from
one measurement to the next, as in a running aiosd). Printed per row: tok/s, the ratio to the same way with no agents,
adaptive / fixed-default, and the adaptive thread count at the end. An OpenMP step that waits on a descheduled thread
collapses far below the agents' share. Ratios within one run only: the machine may be shared with other work. The
first line names the CPU.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import time

PERIOD = 0.02


def _agent(duty: float, stop) -> None:
    """Busy for duty x PERIOD, asleep for the rest, until stop is set."""
    while not stop.is_set():
        end = time.perf_counter() + duty * PERIOD
        x = 0
        while time.perf_counter() < end:
            x += 1
        time.sleep((1 - duty) * PERIOD)


def _decode(engine, ids: list[int], n_seqs: int, tokens: int) -> float:
    from kernel.engine.core.interface import EngineRequest, SamplingParams

    for i in range(n_seqs):
        params = SamplingParams(max_tokens=tokens, ignore_eos=True)
        engine.add(EngineRequest(f"t{time.monotonic_ns()}-{i}", ids[i * 3 : i * 3 + 24], params))
    started: set[str] = set()
    while len(started) < n_seqs:
        started.update(e.req_id for e in engine.step())
    start, produced = time.perf_counter(), 0
    while engine.has_work():
        produced += len(engine.step())
    return produced / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--weights", default="int4")
    parser.add_argument("--agents", default="0,4,8", help="agent counts, comma-separated (0: alone)")
    parser.add_argument("--duty", type=float, default=0.1)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--verbose", action="store_true", help="log every decision window's measured wait")
    args = parser.parse_args(argv)
    counts = sorted({0, *(int(n) for n in args.agents.split(","))})

    from kernel.engine.process_env import configure_process_env

    configure_process_env()  # the OpenMP wait policy, as aiosd sets it, before torch loads
    import torch

    from bench.bandwidth import cpu_line  # imports torch: after the environment is set
    from kernel.engine.cpu.engine import TorchEngine
    from kernel.engine.cpu.threads import ThreadGovernor
    from kernel.engine.factory import default_threads

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kernel.engine.cpu.threads").setLevel(
        logging.DEBUG if args.verbose else logging.INFO
    )  # the adaptive count's changes
    default = default_threads()
    engine = TorchEngine.from_path(args.model, "bfloat16", weights=args.weights, kv_budget_tokens=2048)
    ids = engine.tokenize(" ".join(f"Agent {i} asks the kernel for memory." for i in range(40)))
    print(cpu_line(), f"| engine CPUs {sorted(os.sched_getaffinity(0))} | default threads {default}")
    print(f"agents: each busy {args.duty:.0%} of every {PERIOD * 1000:.0f} ms, on the same CPUs")
    ways = {
        f"fixed {default}": ThreadGovernor(default, torch.set_num_threads, adaptive=False),
        "fixed 1": ThreadGovernor(1, torch.set_num_threads, adaptive=False),
        "adaptive": engine.thread_governor,
    }
    _decode(engine, ids, 1, 4)  # warm-up
    results: dict[tuple[str, int], tuple[float, float, int]] = {}
    for n_agents in counts:
        stop = multiprocessing.Event()
        agents = [multiprocessing.Process(target=_agent, args=(args.duty, stop)) for _ in range(n_agents)]
        for agent in agents:
            agent.start()
        try:
            for way, governor in ways.items():
                engine.thread_governor = governor
                torch.set_num_threads(governor.threads)
                _decode(engine, ids, 1, args.new_tokens)  # untimed: the adaptive count settles to these agents
                b1, b8 = (_decode(engine, ids, n, args.new_tokens) for n in (1, 8))
                results[way, n_agents] = (b1, b8, governor.threads)
        finally:
            stop.set()
            for agent in agents:
                agent.join()
    print("way        | agents | b1 tok/s | vs alone | b8 tok/s | vs alone | adaptive/fixed b1, b8 | threads at end")
    for n_agents in counts:
        fixed = results[f"fixed {default}", n_agents]
        for way in ways:
            b1, b8, threads = results[way, n_agents]
            alone = results[way, 0]
            versus = f"{b1 / fixed[0]:.2f}, {b8 / fixed[1]:.2f}" if way == "adaptive" else ""
            print(
                f"{way:<10} | {n_agents:>6} | {b1:8.1f} | {b1 / alone[0]:8.2f} | {b8:8.1f} | {b8 / alone[1]:8.2f} | "
                f"{versus:>21} | {threads}"
            )


if __name__ == "__main__":
    main()
