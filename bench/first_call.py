"""Is aiosd ready when it says so? The decode rate of the first call made the moment the ready line appears, against
the same call once the kernel has settled (steady state), with aiosd's default configuration (memory, file and tool
services on), a fresh kernel per run.

    python -m bench.first_call [--runs 3] [--tokens 48] [--settle 10] [--model ...]

Prints a table: per run the time to ready, the first call's decode rate, the steady rate (median of a few calls after
`settle` seconds) and their ratio; then the medians. Target (issue 17): first / steady >= 0.9.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kernel.launch import KernelProcess
from sdk import connect

PROMPT = "Once upon a time"
STEADY_CALLS = 3


def decode_rate(kernel, tokens: int) -> float:
    """Tokens/s of one call's decode (after its first token), as the kernel timed it."""
    done = kernel.generate(PROMPT, max_tokens=tokens, ignore_eos=True, full=True)
    decode_s = done.timing.total_s - (done.timing.ttft_s or 0.0)
    return (done.usage.completion_tokens - 1) / max(1e-9, decode_s)


def one_run(workdir: Path, options: dict, tokens: int, settle_s: float) -> dict:
    started = time.monotonic()
    with KernelProcess(f"ipc://{workdir}/kernel.sock", options, workdir / "aiosd.log") as kernel:
        ready_s = time.monotonic() - started
        with connect(kernel.address, name="first") as k:
            first = decode_rate(k, tokens)
            time.sleep(settle_s)  # not synchronization: the time anything loading in the background would take
            steady = statistics.median(decode_rate(k, tokens) for _ in range(STEADY_CALLS))
    return {"ready_s": ready_s, "first": first, "steady": steady, "ratio": first / steady}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before the steady-state calls")
    parser.add_argument("--model", default=None)
    parser.add_argument("--tools", default="default", help="aiosd's --tools (default: the built-in servers)")
    args = parser.parse_args(argv)
    options = {"memory": "on", "storage": "on", "tools": args.tools}
    if args.model:
        options["model"] = args.model
    rows = []
    print(f"{'run':>3} {'ready s':>8} {'first tok/s':>12} {'steady tok/s':>13} {'first/steady':>13}")
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="aios-first-call-") as workdir:
            row = one_run(Path(workdir), options, args.tokens, args.settle)
        rows.append(row)
        print(
            f"{run:>3} {row['ready_s']:>8.1f} {row['first']:>12.1f} {row['steady']:>13.1f} {row['ratio']:>13.2f}",
            flush=True,
        )
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    print(
        f"{'med':>3} {median['ready_s']:>8.1f} {median['first']:>12.1f} {median['steady']:>13.1f} "
        f"{median['ratio']:>13.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
