"""One engine against Hugging Face transformers on the same weights, in one process on one device: greedy parity, then
decode tokens/s at batch 1 and 8.

    python -m bench.gpu.parity MODEL_DIR --engine gpu --device cuda --out parity.json
    python -m bench.gpu.parity MODEL_DIR --engine cpu --device cpu --out parity.json --decode-tokens 16   # dry run

Parity: each prompt is continued greedily for --tokens tokens by the engine (all prompts in one batch) and by HF
generate (one prompt at a time). Agreement is exact token identity; where the two part, the step is a near tie if HF's
top two logits there are closer than --tie (fp16 kernels may round such a pair either way), and parity fails only when a
prompt parts at a step that is not a near tie. Reported: tokens agreed per prompt, the margin where they parted.
Decode rate: batch b of distinct prompts of the same length (no padding on the HF side), --decode-tokens new tokens
each. Engine: steps are timed from the step after every sequence has its first token to the last one, rate =
b * (n - 1) / time. HF: generate(n) - generate(1) timed on the same inputs (warmed up once), rate = b * (n - 1) / that.
Exit status 0 only if parity holds; the JSON is written either way. HF must be able to load the folder: an fp16 (or
bf16) safetensors llama, not an EXL2-quantised one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kernel.engine.process_env import configure_process_env

# This script runs an engine in its own process: the settings its runtimes read when torch loads, set first.
configure_process_env()

import torch  # noqa: E402

from kernel.engine.core.interface import EngineRequest, SamplingParams  # noqa: E402
from kernel.engine.factory import load_engine  # noqa: E402
from kernel.engine.kinds import EngineKind, parse_engine_kind  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away,",
    "List three primary colours:",
]
TEXT = (
    "An operating system schedules processes, pages memory in and out, and keeps one program's faults from another. "
) * 40
BATCHES = (1, 8)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hf_greedy(hf, ids: list[int], n: int, device: str) -> tuple[list[int], list[float]]:
    """HF's greedy continuation and, per step, the gap between its top two logits."""
    out = hf.generate(
        torch.tensor([ids], device=device),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    tokens = out.sequences[0, len(ids) :].tolist()
    margins = []
    for logits in out.logits:
        top = torch.topk(logits[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return tokens, margins


def engine_run(engine, prompts: dict[str, list[int]], n: int) -> tuple[dict[str, list[int]], float]:
    """Greedy n tokens for every prompt at once; returns the tokens and the decode seconds (after all first tokens)."""
    params = SamplingParams(max_tokens=n, ignore_eos=True)
    for req_id, ids in prompts.items():
        engine.add(EngineRequest(req_id, ids, params))
    out: dict[str, list[int]] = {req_id: [] for req_id in prompts}
    start = None
    while engine.has_work():
        for event in engine.step():
            if event.token_id >= 0:
                out[event.req_id].append(event.token_id)
        if start is None and all(out.values()):
            start = time.perf_counter()
    return out, time.perf_counter() - (start or time.perf_counter())


def parity(engine, hf, device: str, n: int, tie: float) -> dict:
    prompts = {f"p{i}": engine.tokenize(text) for i, text in enumerate(PROMPTS)}
    ours, _ = engine_run(engine, prompts, n)
    rows, ok = [], True
    for req_id, ids in prompts.items():
        theirs, margins = hf_greedy(hf, ids, n, device)
        agreed = next((i for i, (a, b) in enumerate(zip(ours[req_id], theirs)) if a != b), n)
        row = {"prompt": PROMPTS[int(req_id[1:])], "agreed": agreed, "of": n}
        if agreed < n:
            row["hf_margin_at_split"] = margins[agreed]
            row["near_tie"] = margins[agreed] < tie
            ok &= row["near_tie"]
        rows.append(row)
    return {"ok": ok, "tie": tie, "prompts": rows}


def decode_rates(engine, hf, device: str, n: int) -> dict:
    tokens = engine.tokenize(TEXT)
    length = 64
    rates: dict[str, dict[str, float]] = {"engine": {}, "hf": {}}
    for batch in BATCHES:
        prompts = {f"d{batch}-{i}": tokens[7 * i : 7 * i + length] for i in range(batch)}  # distinct, same length
        engine_run(engine, {f"warm{batch}-{i}": ids for i, ids in enumerate(prompts.values())}, 4)
        _, seconds = engine_run(engine, prompts, n)
        rates["engine"][str(batch)] = batch * (n - 1) / seconds
        inputs = torch.tensor(list(prompts.values()), device=device)
        timed = {}
        for new in (1, n, 1, n):  # the first pair warms up; the second is kept
            _sync(device)
            start = time.perf_counter()
            hf.generate(inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
            _sync(device)
            timed[new] = time.perf_counter() - start
        rates["hf"][str(batch)] = batch * (n - 1) / max(timed[n] - timed[1], 1e-9)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument(
        "--engine",
        type=parse_engine_kind,
        default=EngineKind.GPU,
        choices=(EngineKind.GPU, EngineKind.CPU),
        help="gpu or cpu (older names exllamav2, torch accepted)",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens compared per prompt")
    parser.add_argument("--decode-tokens", type=int, default=128, help="new tokens per sequence in the rate runs")
    parser.add_argument("--tie", type=float, default=None, help="near-tie logit gap (default 0.05 fp16, 1e-4 fp32)")
    args = parser.parse_args(argv)
    from transformers import LlamaForCausalLM

    half = args.device.startswith("cuda")
    dtype = torch.float16 if half else torch.float32
    tie = args.tie if args.tie is not None else (0.05 if half else 1e-4)
    result: dict = {"engine": args.engine.value, "device": args.device, "model": str(args.model)}
    start = time.perf_counter()
    engine = load_engine(
        args.engine,
        str(args.model),
        dtype="float16" if half else "float32",
        kv_budget_tokens=8192,
        max_batch=8,
        prefill_chunk=256,
        prefix_cache=False,
    )
    runtime = getattr(engine, "_runtime", None)
    result["attention"] = getattr(getattr(runtime, "attention", None), "value", "n/a")
    # loaded in its default dtype, then cast: the dtype keyword of from_pretrained differs between transformers 4 and 5
    hf = LlamaForCausalLM.from_pretrained(args.model).to(device=args.device, dtype=dtype).eval()
    result["load_s"] = time.perf_counter() - start
    print(f"parity: engines loaded in {result['load_s']:.1f} s (attention: {result['attention']})", flush=True)
    try:
        with torch.inference_mode():
            result["parity"] = parity(engine, hf, args.device, args.tokens, tie)
            print(
                f"parity: {'ok' if result['parity']['ok'] else 'FAILED'} "
                f"{[r['agreed'] for r in result['parity']['prompts']]} of {args.tokens}",
                flush=True,
            )
            result["decode_tok_s"] = decode_rates(engine, hf, args.device, args.decode_tokens)
            print(f"parity: decode tok/s {result['decode_tok_s']}", flush=True)
    finally:
        result["seconds"] = time.perf_counter() - start
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if result["parity"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
