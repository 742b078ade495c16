"""Quality and speed of the torch engine's weights modes (int4, int8, bf16, auto) against a reference, in one run.
    python -m bench.quality_bench [--model PATH] [--modes int4,int8,bf16,auto] [--dtype bfloat16] [--repeats 3]
                                  [--new-tokens 64] [--agree-tokens 48] [--threads N] [--reference fp32|stored]
Quality, against the reference: fp32 weights computing in float32 (the path token-identical to transformers), or with
--reference stored the file's own blocks as stored (memory_plan.auto_plan's stored mode, what --weights auto compares
with: for a model whose fp32 copy does not fit, 4 bytes per weight):
- perplexity on bench/texts/kernel_notes.txt (project prose, ~1,900 SmolLM2 tokens), each mode's ratio to the
  reference's (target <= 1.03);
- greedy agreement: for each of several chat prompts, the position of the first generated token that differs from
  the reference's (--agree-tokens when none does).
Every engine is held at once: their memory plans are summed and the run refused first when the sum does not fit.
Speed: decode tokens/s at batch 1 and 8 (timed from each sequence's first sampled token, prefill excluded; 32-token
prompts, --new-tokens each, ignore_eos), the median of --repeats runs in which the modes alternate, and the ratio to
the bf16 mode measured in the same run. The modes other than fp32 compute in --dtype (activations and KV).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from kernel.engine.process_env import configure_process_env

# This script runs an engine in its own process: the settings its runtimes read when torch loads, set first.
configure_process_env()

import torch  # noqa: E402

from bench.engine_bench import ours_decode  # noqa: E402
from kernel.engine.core.interface import EngineRequest, SamplingParams  # noqa: E402
from kernel.engine.cpu import memory_plan  # noqa: E402
from kernel.engine.cpu.engine import DTYPES, TorchEngine  # noqa: E402
from kernel.engine.cpu.quant_select import MAX_PPL_RATIO, perplexity  # noqa: E402
from kernel.engine.loading.checkpoint import load_checkpoint  # noqa: E402

TEXT = Path(__file__).parent / "texts" / "kernel_notes.txt"
BATCH = 8
PROMPT_TOKENS = 32
AGREEMENT_PROMPTS = (
    "What is the capital of France?",
    "Write a short story about a robot who learns to paint.",
    "Explain what an operating system kernel does, in two sentences.",
    "List three ways to save memory when running a language model.",
    "Write a Python function that reverses a linked list.",
    "Why do agents need a scheduler when they share one model?",
)


def greedy(engine: TorchEngine, prompts: list[list[int]], n: int) -> list[list[int]]:
    for i, prompt in enumerate(prompts):
        engine.add(EngineRequest(f"g{i}", prompt, SamplingParams(max_tokens=n)))
    out: dict[str, list[int]] = {f"g{i}": [] for i in range(len(prompts))}
    while engine.has_work():
        for event in engine.step():
            if event.token_id >= 0:
                out[event.req_id].append(event.token_id)
    return [out[f"g{i}"] for i in range(len(prompts))]


def first_divergence(ours: list[int], reference: list[int]) -> int:
    for position, (a, b) in enumerate(zip(ours, reference)):
        if a != b:
            return position
    return min(len(ours), len(reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file or HF folder (default: bundled SmolLM2 Q4_1 GGUF)")
    parser.add_argument("--modes", default="int4,int8,bf16")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--agree-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reference", choices=("fp32", "stored"), default="fp32")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if "bf16" not in modes:
        modes.append("bf16")  # the speed baseline

    checkpoint = load_checkpoint(args.model, torch.float32, quantized=True)
    cfg = checkpoint.config
    if args.reference == "stored":
        ref_mode, ref_dtype = memory_plan.auto_plan(cfg, checkpoint.weights, DTYPES[args.dtype]).stored, args.dtype
        if ref_mode is None:
            parser.error("--reference stored needs a quantized GGUF (and the native block kernels)")
    else:
        ref_mode, ref_dtype = "fp32", "float32"
    plans = [(ref_mode, DTYPES[ref_dtype])] + [(m, DTYPES[args.dtype]) for m in modes]
    needed = sum(memory_plan.estimate(cfg, checkpoint.weights, m, d, 8192, BATCH, 256).total for m, d in plans)
    available, source = memory_plan.available_memory()
    if available is not None and needed > available:
        gib = memory_plan.GIB
        parser.error(
            f"the {len(plans)} engines need {needed / gib:.2f} GiB together, {available / gib:.2f} GiB is available "
            f"({source}): fewer --modes, or --reference stored"
        )
    reference_name = "fp32" if ref_mode == "fp32" else f"ref:{ref_mode}"
    engines = {
        reference_name: TorchEngine(
            checkpoint, ref_dtype, weights=ref_mode, kv_budget_tokens=8192, max_batch=BATCH, threads=args.threads
        )
    }
    for mode in modes:
        start = time.perf_counter()
        engines[mode] = TorchEngine(
            checkpoint, args.dtype, weights=mode, kv_budget_tokens=8192, max_batch=BATCH, threads=args.threads
        )
        print(
            f"built {mode} in {time.perf_counter() - start:.1f} s, {engines[mode].model.weight_nbytes() / 1e6:.0f} "
            f"MB of weights read per step",
            flush=True,
        )
    reference = engines[reference_name]
    text_ids = reference.tokenize(TEXT.read_text())
    chats = [reference.apply_chat_template([{"role": "user", "content": p}]) for p in AGREEMENT_PROMPTS]
    filler = reference.tokenize(
        " ".join(f"Agent {i} asks the kernel to schedule tool calls, memory and files." for i in range(60))
    )
    one, eight = [filler[:PROMPT_TOKENS]], [filler[i * 7 : i * 7 + PROMPT_TOKENS] for i in range(BATCH)]

    ppl = {name: perplexity(engine.model, text_ids) for name, engine in engines.items()}
    ref_out = greedy(reference, chats, args.agree_tokens)
    agreement = {
        name: [first_divergence(out, ref) for out, ref in zip(greedy(engine, chats, args.agree_tokens), ref_out)]
        for name, engine in engines.items()
        if name != reference_name
    }

    speed: dict[tuple[str, int], list[float]] = {}
    with torch.inference_mode():
        for engine in engines.values():  # warm-up: one-off allocations and kernel selection
            ours_decode(engine, one, 4)
        for _ in range(args.repeats):
            for prompts in (one, eight):
                for name, engine in engines.items():  # alternated: drift on a shared machine hits every mode
                    speed.setdefault((name, len(prompts)), []).append(ours_decode(engine, prompts, args.new_tokens))
    med = {key: statistics.median(values) for key, values in speed.items()}

    print(
        f"\n{len(text_ids)} tokens of {TEXT.name}; greedy agreement over {len(chats)} prompts x "
        f"{args.agree_tokens} tokens; decode medians of {args.repeats} runs, {args.new_tokens} new tokens; "
        f"threads {torch.get_num_threads()}; reference {reference_name} computing in {ref_dtype}, the modes in "
        f"{args.dtype}"
    )
    header = (
        f"{'mode':<10} {'weights MB':>10} {'ppl':>8} {'ppl/ref':>9} {'ok':>3}  {'first divergence':<24} "
        f"{'tok/s b1':>9} {'vs bf16':>7} {'tok/s b8':>9} {'vs bf16':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, engine in engines.items():
        ratio = ppl[name] / ppl[reference_name]
        diverge = "identical (reference)" if name == reference_name else " ".join(str(p) for p in agreement[name])
        label = f"{name}>{engine.weights}" if name == "auto" else name  # what auto chose
        print(
            f"{label:<10} {engine.model.weight_nbytes() / 1e6:>10.0f} {ppl[name]:>8.3f} {ratio:>9.4f} "
            f"{'yes' if ratio <= MAX_PPL_RATIO else 'no':>3}  {diverge:<24} "
            f"{med[name, 1]:>9.1f} {med[name, 1] / med['bf16', 1]:>6.2f}x "
            f"{med[name, BATCH]:>9.1f} {med[name, BATCH] / med['bf16', BATCH]:>6.2f}x"
        )


if __name__ == "__main__":
    main()
