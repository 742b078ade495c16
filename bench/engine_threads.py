"""The engine's decode step beside agent processes on the same cores: does it hold, and with how many threads?

    python -m bench.engine_threads [--model PATH] [--weights int4] [--agents 8] [--duty 0.1] [--new-tokens 32]

Agents are ordinary processes on the cores aiosd may use: between calls they tokenize, parse JSON, run tools. Each
stand-in agent here burns the CPU for `duty` of every 20 ms period (10% by default: 8 of them ask for 0.8 of a core on
top of the engine) on the engine's own CPU set. For each thread count (1 and the engine's default, the physical cores
this process may use), batch-1 and batch-8 decode tok/s alone, then with the agents running; the ratio with / alone
is what matters (1.0: untouched; an OpenMP step that waits on a descheduled thread collapses far below the agents'
share). Ratios within one run only: the machine may be shared with other work. The first line names the CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from bench.bandwidth import cpu_line

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
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--duty", type=float, default=0.1)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    from kernel.engine.process_env import configure_process_env

    configure_process_env()  # the OpenMP wait policy, as aiosd sets it, before torch loads
    import torch

    from kernel.engine.cpu.engine import TorchEngine
    from kernel.engine.factory import default_threads

    default = default_threads()
    engine = TorchEngine.from_path(args.model, "bfloat16", weights=args.weights, kv_budget_tokens=2048)
    ids = engine.tokenize(" ".join(f"Agent {i} asks the kernel for memory." for i in range(40)))
    print(cpu_line(), f"| engine CPUs {sorted(os.sched_getaffinity(0))} | default threads {default}")
    print(f"{args.agents} agents, each busy {args.duty:.0%} of every {PERIOD * 1000:.0f} ms, on the same CPUs")
    rows = []
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        _decode(engine, ids, 1, 4)  # warm-up
        alone = [_decode(engine, ids, n, args.new_tokens) for n in (1, 8)]
        stop = multiprocessing.Event()
        agents = [multiprocessing.Process(target=_agent, args=(args.duty, stop)) for _ in range(args.agents)]
        for agent in agents:
            agent.start()
        try:
            shared = [_decode(engine, ids, n, args.new_tokens) for n in (1, 8)]
        finally:
            stop.set()
            for agent in agents:
                agent.join()
        rows.append((threads, alone, shared))
    print("threads | b1 alone | b1 with agents | ratio | b8 alone | b8 with agents | ratio")
    for threads, alone, shared in rows:
        print(
            f"{threads:>7} | {alone[0]:8.1f} | {shared[0]:14.1f} | {shared[0] / alone[0]:.2f} | "
            f"{alone[1]:8.1f} | {shared[1]:14.1f} | {shared[1] / alone[1]:.2f}"
        )


if __name__ == "__main__":
    main()
