"""python -m bench.batch_scaling: decode step time against batch size on this machine, the basis of the suite's
batch cap. Prints ms per step, tokens/s, and both as ratios to batch 1 measured in the same run."""

from __future__ import annotations

import argparse
import random
import time

from bench.text import words_text

PROMPT_TOKENS, WARM_STEPS, TIMED_STEPS = 200, 4, 16


def step_seconds(engine, batch: int) -> float:
    """Mean seconds of a decode step with `batch` sequences of PROMPT_TOKENS context."""
    from kernel.engine.core.interface import EngineRequest, SamplingParams

    rng = random.Random(batch)
    params = SamplingParams(max_tokens=WARM_STEPS + TIMED_STEPS + 64, ignore_eos=True)
    ids = [f"b{batch}-{i}" for i in range(batch)]
    for req_id in ids:
        engine.add(
            EngineRequest(req_id=req_id, prompt_ids=engine.tokenize(words_text(rng, PROMPT_TOKENS)), params=params)
        )
    while len(engine.step()) < batch:  # prefill (possibly chunked) until every sequence has produced a token
        pass
    for _ in range(WARM_STEPS):
        engine.step()
    start = time.monotonic()
    for _ in range(TIMED_STEPS):
        engine.step()
    elapsed = (time.monotonic() - start) / TIMED_STEPS
    for req_id in ids:
        engine.abort(req_id)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8,12,16,24,32", help="comma-separated batch sizes")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args(argv)
    batches = sorted({1, *(int(b) for b in args.batches.split(","))})  # batch 1 is the baseline
    from kernel.engine.factory import load_engine
    from kernel.engine.kinds import EngineKind
    from kernel.engine.process_env import configure_process_env

    configure_process_env()  # this process runs the engine: its settings before torch loads
    engine = load_engine(
        kind=EngineKind.CPU,
        dtype=args.dtype,
        kv_budget_tokens=max(batches) * (PROMPT_TOKENS + 128),
        max_batch=max(batches),
    )
    print("| batch | ms/step | tokens/s | step time × batch 1 | throughput × batch 1 |\n|---|---|---|---|---|")
    single = step_seconds(engine, 1)
    for batch in batches:
        seconds = single if batch == 1 else step_seconds(engine, batch)
        print(
            f"| {batch} | {seconds * 1000:.1f} | {batch / seconds:.0f} | {seconds / single:.2f} | "
            f"{batch * single / seconds:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
