"""How far the torch engine's float32 logits are from HF transformers' on the same GGUF, at long context.

    python -m bench.logit_parity [--lengths 256,1024,2048] [--chunk 128] [--decodes 8]

For each length n, the first n tokens of tests/engine/data/long_prompt.txt (a committed, project-owned text) are
prefilled through our forward pass in chunks of --chunk tokens (as the engine schedules a long prompt), then the next
--decodes tokens of the text are fed one at a time as decode steps (teacher-forced, so both sides see the same tokens).
HF runs the n + decodes tokens in one forward. Printed: max |Δlogit| over the vocabulary at the prompt's last position
and over the decode steps, and HF's smallest top-2 margin among those positions (a greedy choice can only flip where
the margin is below Δ).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kernel.engine.process_env import configure_process_env

# This script runs an engine in its own process: the settings its runtimes read when torch loads, set first.
configure_process_env()

import torch  # noqa: E402

from kernel.engine.cpu.kv_cache import KVCache  # noqa: E402
from kernel.engine.cpu.model import LlamaModel  # noqa: E402
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch  # noqa: E402

LONG_PROMPT = Path(__file__).resolve().parents[1] / "tests" / "engine" / "data" / "long_prompt.txt"
BLOCK = 16


def our_logits(model: LlamaModel, tokens: list[int], n_prompt: int, chunk: int) -> torch.Tensor:
    """float32 logits [1 + len(tokens) - n_prompt, V]: the prompt's last position, then each decode step's, computed
    in a KV cache of our own (an engine's cache belongs to its sequence table)."""
    cfg = model.cfg
    kv = KVCache(cfg.n_layers, -(-len(tokens) // BLOCK) * BLOCK, cfg.n_kv_heads, cfg.head_dim, model.dtype)
    blocks = list(range(-(-len(tokens) // BLOCK)))
    rows = []
    with torch.inference_mode():
        for start in range(0, n_prompt, chunk):
            ids = tokens[start : min(start + chunk, n_prompt)]
            batch, _ = build_step_batch([ScheduledChunk(ids, start, blocks, True)], BLOCK)
            logits = model.forward(batch, kv)
        rows.append(logits[0])
        for position in range(n_prompt, len(tokens) - 1):
            batch, _ = build_step_batch([ScheduledChunk([tokens[position]], position, blocks, True)], BLOCK)
            rows.append(model.forward(batch, kv)[0])
    return torch.stack(rows)


def hf_logits(hf, tokens: list[int], n_prompt: int) -> torch.Tensor:
    """The same positions' logits from one HF forward over all of tokens."""
    with torch.inference_mode():
        return hf(torch.tensor([tokens])).logits[0, n_prompt - 1 : len(tokens) - 1].float()


def compare(model: LlamaModel, hf, tokens: list[int], n_prompt: int, chunk: int) -> dict[str, float]:
    ours, ref = our_logits(model, tokens, n_prompt, chunk), hf_logits(hf, tokens, n_prompt)
    delta = (ours - ref).abs().amax(dim=-1)
    top2 = ref.topk(2, dim=-1).values
    return {
        "prompt_end": float(delta[0]),
        "decode": float(delta[1:].max()) if len(delta) > 1 else 0.0,
        "min_margin": float((top2[:, 0] - top2[:, 1]).min()),
        "argmax_agree": bool((ours.argmax(-1) == ref.argmax(-1)).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,1024,2048")
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--decodes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM  # the reference only

    from kernel.engine.cpu.engine import TorchEngine
    from kernel.engine.loading.checkpoint import default_model_path

    engine = TorchEngine.from_path(None, "float32", kv_budget_tokens=256, threads=args.threads)
    path = default_model_path()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    text = engine.tokenize(LONG_PROMPT.read_text())
    print(f"threads={torch.get_num_threads()} chunk={args.chunk} decodes={args.decodes} text={len(text)} tokens")
    print("tokens | max|Δlogit| prompt end | max|Δlogit| decodes | HF min top-2 margin | argmax agree")
    for n in (int(x) for x in args.lengths.split(",")):
        result = compare(engine.model, hf, text[: n + args.decodes], n, args.chunk)
        print(
            f"{n} | {result['prompt_end']:.2e} | {result['decode']:.2e} | {result['min_margin']:.3f} | "
            f"{result['argmax_agree']}"
        )


if __name__ == "__main__":
    main()
