"""bench/make_gguf.py: a tiny random-weight GGUF of each type loads through our loader with the shape asked for, the
bundled tokenizer, the stored block format, weights of the intended spread, and an engine that generates from it."""

import gguf
import numpy as np
import pytest
import torch

from bench.make_gguf import SHAPES, WEIGHT_STD, WeightType, tensor_plan, write_gguf
from kernel.engine.core.interface import EngineRequest, SamplingParams
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.loading.checkpoint import default_model_path, load_checkpoint
from kernel.engine.loading.gguf_blocks import GGUFBlocks

TINY = SHAPES["tiny"]
# what each type decodes to in our loader's codes (GGUFBlocks.bits, .low): (bits, lowest code)
CODES = {WeightType.Q4_0: (4, -8), WeightType.Q4_1: (4, 0), WeightType.Q8_0: (8, -128)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {
        t: (folder / f"tiny-{t.value}.gguf", write_gguf(folder / f"tiny-{t.value}.gguf", TINY, t, seed=1))
        for t in WeightType
    }


@pytest.fixture(scope="module")
def reference():
    """The bundled model's vocabulary size and tokenizer (loaded once: parsing a 49k vocabulary takes seconds)."""
    source = gguf.GGUFReader(default_model_path())
    return len(source.fields["tokenizer.ggml.tokens"].data), load_checkpoint(None, torch.float32, True).tokenizer


@pytest.mark.parametrize("weight_type", list(WeightType))
def test_tiny_file_loads_with_its_shape_tokenizer_and_format(files, reference, weight_type):
    path, size = files[weight_type]
    assert path.stat().st_size == size
    reader = gguf.GGUFReader(path)
    names = {t.name: t for t in reader.tensors}
    vocab, tokenizer = reference
    assert list(names) == [name for name, _ in tensor_plan(TINY, vocab)]
    assert names["blk.0.ffn_up.weight"].tensor_type == weight_type.ggml
    assert names["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32

    quantized = weight_type in CODES
    checkpoint = load_checkpoint(path, torch.float32, quantized=quantized)
    cfg = checkpoint.config
    assert (cfg.n_layers, cfg.hidden_size, cfg.ffn_size, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (
        TINY.n_layers,
        TINY.hidden,
        TINY.ffn,
        TINY.n_heads,
        TINY.n_kv_heads,
        vocab,
    )
    assert cfg.tie_embeddings
    text = "The kernel schedules agents."
    assert checkpoint.tokenizer.encode(text) == tokenizer.encode(text)
    up = checkpoint.weights["layers.0.up"]
    if quantized:
        assert isinstance(up, GGUFBlocks) and (up.bits, up.low) == CODES[weight_type]
        up = up.dequantize()
    assert up.shape == (TINY.ffn, TINY.hidden)
    # N(0, 0.02) through the format's rounding: the spread survives within a quarter
    assert abs(float(up.std()) / WEIGHT_STD - 1) < 0.25 and abs(float(up.mean())) < WEIGHT_STD / 4


def test_engine_generates_from_a_random_q4_0_file(files):
    path, _ = files[WeightType.Q4_0]
    engine = TorchEngine.from_path(str(path), "float32", weights="int4", kv_budget_tokens=256, max_batch=2)
    engine.add(EngineRequest("r", engine.tokenize("hello there"), SamplingParams(max_tokens=5, ignore_eos=True)))
    tokens = []
    while engine.has_work():
        tokens += [event.token_id for event in engine.step() if event.token_id >= 0]
    assert len(tokens) == 5 and all(0 <= t < engine.model.cfg.vocab_size for t in tokens)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    for path, seed in ((a, 3), (b, 3), (c, 4)):
        write_gguf(path, TINY, WeightType.Q8_0, seed=seed)
    assert a.read_bytes() == b.read_bytes()
    assert np.any(np.frombuffer(a.read_bytes(), np.uint8) != np.frombuffer(c.read_bytes(), np.uint8))
