"""Int modes computing in bfloat16: decode rows on the integer kernel, prompt rows on a bfloat16 copy of the same codes
(quant_weights.SplitProduct), so a sequence's tokens never depend on what else shares its steps."""

from __future__ import annotations

import pytest
import torch

from kernel.engine.core.interface import EngineRequest, SamplingParams
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.cpu.linear import packing_available
from kernel.engine.cpu.quant_linear import Int4Linear
from kernel.engine.cpu.quant_weights import SplitProduct, build_product
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.loading.quant_tensor import quantize_int4
from tests.engine.helpers import drain, generate, record

needs_packing = pytest.mark.skipif(not packing_available(), reason="no oneDNN bfloat16 path on this CPU")


@needs_packing
def test_rows_take_their_own_path():
    weight = torch.randn(96, 64, generator=torch.Generator().manual_seed(0)) * 0.05
    product = build_product([weight], "int4", wide_copy=True)
    assert isinstance(product, SplitProduct) and isinstance(product.narrow, Int4Linear)
    x = torch.randn(10, 64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    out = product(x, 3)
    assert torch.equal(out[:3], product.narrow(x[:3])) and torch.equal(out[3:], product.wide(x[3:]))
    assert torch.equal(product(x, 10), product.narrow(x)) and torch.equal(product(x, 0), product.wide(x))
    # the copy holds the codes' values: both paths compute the same product up to bfloat16 rounding
    reference = x.float() @ quantize_int4(weight).dequantize().t()
    assert float((out.float() - reference).abs().max()) < 0.02 * float(reference.abs().max())


def test_no_copy_without_bfloat16_activations(tiny_folder):
    engine = TorchEngine.from_path(str(tiny_folder), "float32", weights="int4", kv_budget_tokens=256, max_batch=2)
    assert not any(isinstance(layer.qkv, SplitProduct) for layer in engine.model.layers)


@needs_packing
def test_a_decode_does_not_depend_on_its_neighbours(tiny_folder):
    engine = TorchEngine.from_path(
        str(tiny_folder),
        "bfloat16",
        weights="int4",
        kv_budget_tokens=1024,
        max_batch=4,
        prefill_chunk=8,
        prefix_cache=False,
    )
    assert all(isinstance(layer.gate_up, SplitProduct) for layer in engine.model.layers)
    prompt = engine.tokenize("the kernel schedules agents and their calls")
    solo = generate(engine, {"solo": prompt}, max_tokens=24, ignore_eos=True)["solo"].tokens
    # the same sequence prefilled alone again, then its decodes sharing steps with others' prompt chunks (an 8-token
    # budget: several steps of them, next to its single-token rows)
    engine.add(EngineRequest("again", prompt, SamplingParams(max_tokens=24, ignore_eos=True)))
    results = {}
    while "again" not in results:
        record(engine.step(), results)
    for i in range(3):
        engine.add(
            EngineRequest(
                f"other{i}",
                engine.tokenize(f"a longer prompt number {i} " * 6),
                SamplingParams(max_tokens=4, ignore_eos=True),
            )
        )
    done = drain(engine, results)
    assert done["again"].tokens == solo


@needs_packing
def test_a_decode_rows_logits_are_the_same_bits_beside_a_prompt_chunk(tiny_folder):
    """The property itself, at the forward: a decode row's logits alone and in a step with another sequence's prompt
    chunk are bit-identical (a per-step choice of path, by row count, would move them)."""
    engine = TorchEngine.from_path(str(tiny_folder), "bfloat16", weights="int4", kv_budget_tokens=256, max_batch=4)
    model, kv, block = engine.model, engine.kv, engine.block_size
    context = engine.tokenize("the kernel schedules agents")[:6]
    with torch.inference_mode():
        model.forward(build_step_batch([ScheduledChunk(context[:-1], 0, [0], False)], block)[0], kv)
        decode = ScheduledChunk(context[-1:], len(context) - 1, [0], True)
        alone = model.forward(build_step_batch([decode], block)[0], kv)
        prompt = ScheduledChunk(engine.tokenize("another agent's prompt of several tokens")[:9], 0, [1], True)
        mixed, order = build_step_batch([prompt, decode], block)
        together = model.forward(mixed, kv)
    assert torch.equal(together[order.index(1)], alone[0])
