"""Perplexity of a model on a text, and the weights mode `auto` resolves to: measured at load, never assumed.

auto tries the modes fastest first — int4, int8, bf16 (the order bench/quality_bench.py measures for decode at batch 1
and 8) — and takes the first whose perplexity on CALIBRATION_TEXT is within MAX_PPL_RATIO of the fp32 weights' on the
same checkpoint, falling back to fp32. The check builds the fp32 model and each candidate it tries from the checkpoint
once, at load, and runs the text through each (a few seconds for SmolLM2 on 2 cores); the models it discards are freed.
A short text gives a noisy absolute perplexity, but both sides read the same tokens, so the ratio compares the weights
alone; bench/quality_bench.py measures the ratio on a longer text, and both are in bench/RESULTS.md.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.loading.model_config import LlamaConfig

AUTO_ORDER = ("int4", "int8", "bf16")      # fastest first
MAX_PPL_RATIO = 1.03                        # quality target: perplexity within +3% of fp32
_BLOCK = 16

# Project prose, written for this check: plain English of the kind the agents exchange, about 300 tokens.
CALIBRATION_TEXT = (
    "The kernel starts before any agent does. It loads one language model, opens a socket, and waits. When an agent "
    "connects, it says who it is and what it may do; the kernel writes that down and answers with the name of the "
    "model it serves. From then on the agent asks for work in small, typed messages: generate some text, continue a "
    "chat, list the other processes, store a note for later. Each request waits in a queue until the scheduler picks "
    "it. The scheduler does not know what the words mean. It sees lengths, ages and priorities, and it decides which "
    "sequences share the next step of the engine. A long prompt is cut into pieces so that it never stalls the agents "
    "that are already answering. When memory runs short, the kernel copies a sequence's cache into shared memory and "
    "brings it back later, so the agent resumes where it stopped without reading its prompt again. Nothing here is "
    "magic. Every token costs a pass over the weights, and the weights are most of the bytes the processor reads. "
    "That is why the numbers are small on purpose: a small model, a small cache, and a careful count of what each "
    "step reads. If a change makes the answers worse, the tests should notice before a person does, and if it makes "
    "them faster, the benchmark should say by how much and on which machine."
)


def perplexity(model: LlamaModel, token_ids: list[int], chunk: int = 256) -> float:
    """exp(mean negative log-likelihood) of each token after the first, prefilled in chunks of `chunk` tokens with
    every row's logits kept (a whole long text at once would hold [T, vocabulary] float32 logits)."""
    if len(token_ids) < 2:
        raise ValueError("perplexity needs at least two tokens")
    cfg: LlamaConfig = model.cfg
    n_blocks = -(-len(token_ids) // _BLOCK)
    kv = KVCache(cfg.n_layers, n_blocks * _BLOCK, cfg.n_kv_heads, cfg.head_dim, model.dtype)
    block_table = list(range(n_blocks))
    targets = torch.tensor(token_ids[1:])
    nll = 0.0
    with torch.inference_mode():
        for start in range(0, len(token_ids) - 1, chunk):
            piece = token_ids[start:min(start + chunk, len(token_ids) - 1)]
            batch, _ = build_step_batch([ScheduledChunk(piece, start, block_table, True)], _BLOCK)
            # every row on the integer path: that is what decodes, and so what generates the tokens
            batch = replace(batch, logit_rows=torch.arange(len(piece)), narrow_rows=len(piece))
            logits = model.forward(batch, kv)
            nll += F.cross_entropy(logits, targets[start:start + len(piece)], reduction="sum").item()
    return math.exp(nll / (len(token_ids) - 1))


def choose_mode(cfg: LlamaConfig, weights: dict, dtype: torch.dtype, token_ids: list[int]
                ) -> tuple[str, dict[str, float], LlamaModel | None]:
    """The fastest mode whose perplexity on token_ids, computing in dtype, is within MAX_PPL_RATIO of fp32's (fp32
    weights and compute); the ratios measured; and that mode's model, already built (None for the fp32 fallback)."""
    reference = perplexity(LlamaModel(cfg, weights, torch.float32, "fp32"), token_ids)
    ratios: dict[str, float] = {}
    for mode in AUTO_ORDER:
        model = LlamaModel(cfg, weights, dtype, mode)
        ratios[mode] = perplexity(model, token_ids) / reference
        if ratios[mode] <= MAX_PPL_RATIO:
            return mode, ratios, model
    return "fp32", ratios, None
