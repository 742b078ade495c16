"""aiosd with a given engine and model, driven by agents over its socket: the checks the GPU window must prove.

    python -m bench.gpu.kernel_checks MODEL_DIR --engine gpu --out kernel.json --logs DIR
    python -m bench.gpu.kernel_checks MODEL_DIR --engine cpu --dtype float32 --out kernel.json --logs DIR --tokens 24

Three aiosd runs (each its own daemon: the checks need different batch limits), each phase timed:
1. snapshot (--max-batch 1, --preempt-mode snapshot): an uninterrupted greedy run of one prompt, then the same prompt
   from a priority-0 agent displaced by a priority-5 call: its KV goes to the shared-memory arena and comes back. Holds
   if the victim's text equals the uninterrupted one, the kernel counts a preemption and a resume, bytes were loaded
   from the arena and no token was recomputed.
2. preemption (--max-batch 4): 6 priority-0 agents (4 run, 2 wait), then 2 priority-5 agents. Holds if both priority-5
   calls are among the first 4 to finish (of the 4 slots, they take 2 by preemption; only the 2 priority-0 calls left
   running beside them may end first), every call returns its full length, the kernel preempted at least twice and
   restored from the arena. Reported, not required: how many priority-0 texts equal their solo runs (a GPU's kernels
   may round differently at another batch size, so a near-tie token may flip; the snapshot phase is the exact check).
3. decode (--max-batch 8): one agent, then 8 at once, --decode-tokens each; per call decode rate from the kernel's own
   timing, (completion tokens - 1) / (total_s - ttft_s), summed over the concurrent calls.
Exit status 0 only if phases 1 and 2 hold; the JSON is written after every phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ipc import runtime_dir
from ipc.address import admin_token_path
from kernel.engine.kinds import EngineKind, parse_engine_kind
from kernel.launch import KernelProcess
from sdk import connect

PROMPT = "The history of the printing press begins"
LOW_PROMPTS = [
    "The history of the printing press begins",
    "Rivers carve valleys over",
    "A compiler reads source code",
    "In the harbour the ships",
    "Photosynthesis turns light into",
    "The rules of chess say",
]
HIGH_PROMPTS = ["The capital of France is", "Two plus two equals"]
HIGH_PRIORITY = 5
HIGH_TOKENS = 8
TIMEOUT_S = 300.0


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


class Daemon:
    """aiosd for one phase: the engine options shared by all, the phase's own on top."""

    def __init__(self, args, phase: str, **options):
        self.address = f"ipc://{args.logs}/{phase}.sock"
        base = {
            "engine": args.engine.value,
            "model": str(args.model),
            "kv-budget": args.kv_budget,
            "arena-mb": 256,
            "scheduler": "priority",
            "preempt-mode": "snapshot",
        }
        if args.dtype:
            base["dtype"] = args.dtype
        self.proc = KernelProcess(
            self.address,
            {**base, **{k.replace("_", "-"): v for k, v in options.items()}},
            args.logs / f"aiosd-{phase}.log",
            ready_timeout_s=TIMEOUT_S,
        )


def snapshot_phase(args) -> dict:
    daemon = Daemon(args, "snapshot", max_batch=1)
    with daemon.proc:
        address = daemon.address
        with connect(address, name="reference") as reference:
            uninterrupted = reference.generate(PROMPT, max_tokens=args.tokens, ignore_eos=True)
        results: dict[str, str] = {}
        low = threading.Thread(target=lambda: results.__setitem__("low", _generate(address, PROMPT, args.tokens, 0)))
        with _connect(address, "interactive", HIGH_PRIORITY) as high:
            low.start()
            wait_until(lambda: high.stats()["requests_running"] == 1, TIMEOUT_S, "the priority-0 call running")
            high.generate(HIGH_PROMPTS[0], max_tokens=8, ignore_eos=True)
            low.join(timeout=TIMEOUT_S)
            stats = high.stats()
    checks = {
        "victim_text_identical": results.get("low") == uninterrupted,
        "preempted_and_resumed": stats["preemptions"] >= 1 and stats["resumes"] >= 1,
        "restored_from_arena": stats["snapshot_bytes_loaded"] > 0 and stats["recomputed_tokens"] == 0,
    }
    return {"ok": all(checks.values()), **checks, "snapshot_bytes_loaded": stats["snapshot_bytes_loaded"]}


def preemption_phase(args) -> dict:
    daemon = Daemon(args, "preemption", max_batch=4)
    with daemon.proc:
        address = daemon.address
        with connect(address, name="reference") as reference:
            solo = [reference.generate(p, max_tokens=args.tokens, ignore_eos=True) for p in LOW_PROMPTS]
        finished: list[tuple[str, float]] = []
        lock = threading.Lock()

        def call(name: str, prompt: str, n: int, priority: int):
            completion = _generate(address, prompt, n, priority, full=True)
            with lock:
                finished.append((name, time.perf_counter()))
            return completion

        with connect(address, name="observer") as observer, ThreadPoolExecutor(8) as pool:
            lows = [pool.submit(call, f"low{i}", p, args.tokens, 0) for i, p in enumerate(LOW_PROMPTS)]
            wait_until(lambda: observer.stats()["requests_running"] == 4, TIMEOUT_S, "4 priority-0 calls running")
            highs = [pool.submit(call, f"high{i}", p, HIGH_TOKENS, HIGH_PRIORITY) for i, p in enumerate(HIGH_PROMPTS)]
            low_out = [f.result(timeout=TIMEOUT_S) for f in lows]
            high_out = [f.result(timeout=TIMEOUT_S) for f in highs]
            stats = observer.stats()
    order = [name for name, _ in sorted(finished, key=lambda item: item[1])]
    checks = {
        "priority_5_within_first_4": {"high0", "high1"} <= set(order[:4]),
        "full_lengths": all(c.usage.completion_tokens == args.tokens for c in low_out)
        and all(c.usage.completion_tokens == HIGH_TOKENS for c in high_out),
        "preempted_twice": stats["preemptions"] >= 2,
        "restored_from_arena": stats["snapshot_bytes_loaded"] > 0,
    }
    return {
        "ok": all(checks.values()),
        **checks,
        "finish_order": order,
        "preemptions": stats["preemptions"],
        "low_identical_to_solo": sum(c.text == s for c, s in zip(low_out, solo)),
        "of": len(LOW_PROMPTS),
        "high_ttft_s": [c.timing.ttft_s for c in high_out],
    }


def decode_phase(args) -> dict:
    daemon = Daemon(args, "decode", max_batch=8)
    rates = {}
    with daemon.proc:
        _generate(daemon.address, PROMPT, 8, 0)  # warm-up
        for batch in (1, 8):
            with ThreadPoolExecutor(batch) as pool:
                calls = [
                    pool.submit(_generate, daemon.address, LOW_PROMPTS[i % 6] + f" ({i})", args.decode_tokens, 0, True)
                    for i in range(batch)
                ]
                done = [f.result(timeout=TIMEOUT_S) for f in calls]
            rates[str(batch)] = sum(
                (c.usage.completion_tokens - 1) / (c.timing.total_s - c.timing.ttft_s) for c in done
            )
    return {"ok": True, "decode_tok_s": rates}


def _generate(address: str, prompt: str, n: int, priority: int, full: bool = False):
    with _connect(address, f"agent-p{priority}", priority) as k:
        return k.generate(prompt, max_tokens=n, ignore_eos=True, full=full, timeout=TIMEOUT_S)


def _connect(address: str, name: str, priority: int = 0):
    """Priority above the default is the operator's to give: those agents hold the admin token aiosd wrote."""
    token = runtime_dir.read_secret(admin_token_path(address)).decode() if priority > 0 else None
    return connect(address, name=name, priority=priority, token=token)


PHASES = {"snapshot": snapshot_phase, "preemption": preemption_phase, "decode": decode_phase}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.kernel_checks", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument(
        "--engine",
        type=parse_engine_kind,
        default=EngineKind.GPU,
        choices=(EngineKind.GPU, EngineKind.CPU),
        help="gpu or cpu (older names exllamav2, torch accepted)",
    )
    parser.add_argument("--dtype", default=None, help="cpu engine only (e.g. float32)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True, help="folder for the daemons' logs and sockets")
    parser.add_argument("--tokens", type=int, default=128, help="length of the priority-0 calls")
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--kv-budget", type=int, default=8192)
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    result: dict = {"engine": args.engine.value, "model": str(args.model)}
    for phase in args.phases:
        start = time.perf_counter()
        print(f"kernel: {phase} ...", flush=True)
        try:
            result[phase] = PHASES[phase](args)
        except Exception as exc:  # recorded, then stop: a daemon that did not start fails them all
            result[phase] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result[phase]["seconds"] = round(time.perf_counter() - start, 2)
        args.out.write_text(json.dumps(result, indent=1))
        print(
            f"kernel: {phase} {'ok' if result[phase]['ok'] else 'FAILED'} in {result[phase]['seconds']} s "
            f"{ {k: v for k, v in result[phase].items() if k not in ('ok', 'seconds')} }",
            flush=True,
        )
        if "error" in result[phase]:
            return 1
    return 0 if all(result[p]["ok"] for p in args.phases) else 1


if __name__ == "__main__":
    sys.exit(main())
