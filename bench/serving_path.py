"""python -m bench.serving_path: what the kernel path costs a decoding sequence, against the bare engine.

    python -m bench.serving_path [--batches 1,4,8] [--new-tokens 64] [--repeats 3] [--dtype bfloat16] [--weights int4]
                                 [--peer llamacpp] [--model PATH.gguf] [--threads N]

For each batch size N: the bare engine in this process is given N sequences at once (200-word prompts, ignore_eos)
and each sequence's ms/token is the time between its first and last token over the tokens between; then aiosd (its
own process, same engine options) serves N agent processes (each its own OS process, streaming one generate call with
the same prompt and length) and each agent's ms/token is measured the same way, from its streamed tokens. Overhead =
kernel ms/token over bare
ms/token − 1, medians over sequences and --repeats runs. Both runs happen here, one after the other, on the same cores.
--model: a GGUF other than the bundled one (e.g. bench/make_gguf.py's); --threads: the thread count of the bare engine,
aiosd's (through $AIOS_THREADS) and the peer, by default the engine's default (physical cores usable).

--peer llamacpp adds llama.cpp's server (bench/llama_server.py, same GGUF, same threads, one slot per agent of the
largest batch) given the same N prompts (as token ids) at once: its ms/token per sequence is its own server-side
predicted_per_token_ms (no HTTP counted against it), measured right after the agents in each round. A second table
gives the aggregate tokens/s of N agents at once (all their tokens over the time from the common send to the last
token, prompt processing included), through aiosd and through llama.cpp's N parallel slots, and their ratio (the
median of each round's ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from bench.text import words_text
from kernel.engine.process_env import configure_process_env
from kernel.launch import KernelProcess

PROMPT_WORDS = 200


def _prompt(index: int) -> str:
    return words_text(random.Random(index), PROMPT_WORDS)


def bare_ms_per_token(engine, batch: int, new_tokens: int) -> float:
    """The bare engine given the same arrivals (every prompt at once) and measured the same way as the agents: each
    sequence's time from its first to its last token over the tokens between, median over sequences. Early starters'
    decode steps share the engine with the others' prefill chunks, here as in aiosd."""
    from kernel.engine.core.interface import EngineRequest, SamplingParams

    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True)
    for i in range(batch):
        engine.add(EngineRequest(req_id=f"bare{batch}-{i}", prompt_ids=engine.tokenize(_prompt(i)), params=params))
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    count: dict[str, int] = {}
    while engine.has_work():
        events = engine.step()
        now = time.perf_counter()
        for event in events:
            first.setdefault(event.req_id, now)
            last[event.req_id] = now
            count[event.req_id] = count.get(event.req_id, 0) + 1
    return statistics.median(1000 * (last[r] - first[r]) / max(1, count[r] - 1) for r in first)


def agent_main(address: str, index: int, new_tokens: int, start_at: float) -> None:
    """One agent process: stream one call, print the seconds between its first and last token, the count, and the CPU
    time this process spent receiving them (time the engine's threads could not have on shared cores)."""
    import sdk

    with sdk.connect(address, name=f"serving-{index}", timeout=600) as kernel:
        while time.time() < start_at:  # every agent sends at once, so their decodes overlap
            time.sleep(min(0.01, max(0.0, start_at - time.time())))
        cpu_before = time.process_time()
        stamps = [
            time.perf_counter() for _ in kernel.stream(prompt=_prompt(index), max_tokens=new_tokens, ignore_eos=True)
        ]
        cpu = time.process_time() - cpu_before
    print(
        json.dumps(
            {
                "seconds": stamps[-1] - stamps[0],
                "tokens": len(stamps) - 1,
                "cpu_seconds": cpu,
                "last_token_at": time.time(),
            }
        )
    )


def kernel_ms_per_token(address: str, batch: int, new_tokens: int) -> tuple[float, float, float]:
    """Median ms/token of the agents, their total CPU ms per decode step (all agents, one token each), and the
    aggregate tokens/s: every agent's tokens over the time from the common send to the last agent's last token."""
    start_at = time.time() + 3.0  # time for every agent process to start and connect
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.serving_path",
                "--agent",
                str(i),
                "--address",
                address,
                "--new-tokens",
                str(new_tokens),
                "--start-at",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(batch)
    ]
    rates, cpu_ms, last = [], 0.0, start_at
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"agent process failed with exit code {proc.returncode}")
        result = json.loads(out.strip().splitlines()[-1])
        # streamed deltas may merge tokens (text held back at a UTF-8 or stop boundary): count what arrived
        rates.append(1000 * result["seconds"] / max(1, result["tokens"]))
        cpu_ms += 1000 * result["cpu_seconds"] / max(1, result["tokens"] + 1)
        last = max(last, result["last_token_at"])
    return statistics.median(rates), cpu_ms, batch * new_tokens / (last - start_at)


def llamacpp_ms_per_token(peer, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """Median over the concurrent requests of llama.cpp's own decode ms/token, and the aggregate tokens/s: every
    request's tokens over the time from sending them all to the last answer (HTTP included, as the agents' frames
    are)."""
    start = time.time()
    with ThreadPoolExecutor(len(prompts)) as pool:
        timings = list(pool.map(lambda p: peer.complete(p, new_tokens), prompts))
    aggregate = sum(t["predicted_n"] for t in timings) / (time.time() - start)
    return statistics.median(t["predicted_per_token_ms"] for t in timings), aggregate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_path", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--weights", default="int4", help="weights mode of both engines (aiosd --weights)")
    parser.add_argument("--peer", choices=("llamacpp",), default=None, help="also measure llama.cpp's server")
    parser.add_argument("--model", default=None, help="GGUF file (default: the bundled SmolLM2)")
    parser.add_argument("--threads", type=int, default=None, help="default: the engine's (physical cores usable)")
    parser.add_argument("--agent", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--address", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.agent is not None:
        agent_main(args.address, args.agent, args.new_tokens, args.start_at)
        return 0
    # the engine here and aiosd (a child, inheriting them) get the engine's settings before either loads torch
    configure_process_env()
    # here, not at the top: every agent process runs this module, and should import no more than an agent does
    from bench.engine_bench import LlamaCppPeer
    from bench.llama_server import LlamaServer

    batches = [int(b) for b in args.batches.split(",")]
    from kernel.engine.factory import THREADS_ENV, default_threads, load_engine
    from kernel.engine.kinds import EngineKind

    threads = args.threads or default_threads()
    os.environ[THREADS_ENV] = str(threads)  # aiosd (a child) takes the same count
    bare: dict[int, list[float]] = {b: [] for b in batches}
    served: dict[int, list[float]] = {b: [] for b in batches}
    agent_cpu: dict[int, list[float]] = {b: [] for b in batches}
    # the options aiosd gets below: the same prompts every round must not be served from a prefix cache in one of
    # them (with it on, the bare engine skipped every prompt after the first round)
    engine = load_engine(
        EngineKind.CPU,
        model=args.model,
        dtype=args.dtype,
        threads=threads,
        kv_budget_tokens=8192,
        weights=args.weights,
        prefix_cache=False,
    )
    peer_ms: dict[int, list[float]] = {b: [] for b in batches}
    served_total: dict[int, list[float]] = {b: [] for b in batches}
    peer_total: dict[int, list[float]] = {b: [] for b in batches}
    with tempfile.TemporaryDirectory(prefix="aios-serving-") as tmp, ExitStack() as stack:
        address = f"ipc://{tmp}/kernel.sock"
        options = {
            "dtype": args.dtype,
            "weights": args.weights,
            "kv-budget": 8192,
            "retention": "off",
            "prefix-cache": "off",
        }
        if args.model:
            options["model"] = args.model
        stack.enter_context(KernelProcess(address, options, Path(tmp) / "aiosd.log"))
        peer = None
        if args.peer == "llamacpp":
            server = stack.enter_context(
                LlamaServer(
                    Path(tmp) / "llama-server.log",
                    slots=max(batches),
                    threads=threads,
                    ctx_per_slot=1024,
                    model=args.model,
                )
            )
            peer = LlamaCppPeer(server, Path(args.model) if args.model else None)
            peer.complete(engine.tokenize(_prompt(-1)), 8)  # warm-up
        for _ in range(args.repeats):  # alternate them, so drift on a shared machine hits each
            for batch in batches:
                bare[batch].append(bare_ms_per_token(engine, batch, args.new_tokens))
                rate, cpu, aggregate = kernel_ms_per_token(address, batch, args.new_tokens)
                served[batch].append(rate)
                agent_cpu[batch].append(cpu)
                served_total[batch].append(aggregate)
                if peer is not None:
                    prompts = [engine.tokenize(_prompt(i)) for i in range(batch)]
                    ms, aggregate = llamacpp_ms_per_token(peer, prompts, args.new_tokens)
                    peer_ms[batch].append(ms)
                    peer_total[batch].append(aggregate)
    print(
        f"decode ms/token per sequence, {args.dtype} activations, {args.weights} weights, {threads} threads, "
        f"{args.new_tokens} new tokens, "
        f"median of {args.repeats} runs"
    )
    peer_header = f" {'llama.cpp':>10}" if args.peer else ""
    print(
        f"{'batch':>5} {'bare engine':>12} {'through aiosd':>14} {'overhead':>9} {'agents CPU ms/step':>19}"
        + peer_header
    )
    for batch in batches:
        b, k = statistics.median(bare[batch]), statistics.median(served[batch])
        line = f"{batch:>5} {b:>12.1f} {k:>14.1f} {k / b - 1:>+9.1%} {statistics.median(agent_cpu[batch]):>19.2f}"
        print(line + (f" {statistics.median(peer_ms[batch]):>10.1f}" if args.peer else ""))
    print(
        "\naggregate tokens/s of N agents at once (every token over the time from the common send to the last one,"
        " prompts included)"
    )
    print(f"{'batch':>5} {'through aiosd':>14}" + (f" {'llama.cpp':>10} {'ratio':>6}" if args.peer else ""))
    for batch in batches:
        k = statistics.median(served_total[batch])
        line = f"{batch:>5} {k:>14.1f}"
        if args.peer:
            ref = statistics.median(peer_total[batch])
            ratio = statistics.median(a / r for a, r in zip(served_total[batch], peer_total[batch]))
            line += f" {ref:>10.1f} {ratio:>5.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
