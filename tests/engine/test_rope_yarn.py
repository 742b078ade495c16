"""YaRN rope (kernel/engine/loading/rope.py) against transformers' own rope init on random configs: the inverse
frequencies equal _compute_yarn_parameters' bit for bit and the attention factor equals its, with every optional key
present or absent (attention_factor, mscale/mscale_all_dim, betas, truncate,
original_max_position_embeddings at the config's top level as Phi-3 keeps it). The end-to-end parity (logits of a
tiny Qwen2 with YaRN, from safetensors and GGUF) is test_families.py's qwen2-yarn."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.engine.loading.model_config import ModelLoadError
from kernel.engine.loading.rope import RopeKind, attention_scale, inverse_frequencies, rope_from_hf, scaled_query

transformers = pytest.importorskip("transformers", reason="the reference is HF transformers (test extra)")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

_maybe = lambda strategy: st.one_of(st.none(), strategy)  # noqa: E731


@st.composite
def yarn_configs(draw):
    head_dim = draw(st.sampled_from([16, 32, 64, 80, 128, 256]))
    original = draw(st.sampled_from([64, 512, 2048, 4096, 32768]))
    params = {"rope_type": "yarn", "rope_theta": draw(st.sampled_from([10000.0, 500000.0, 1e6, 1234.5]))}
    params["factor"] = draw(st.floats(1.0, 64.0))
    max_position = int(original * draw(st.sampled_from([1.0, 2.0, params["factor"]])))
    top_level_original = draw(st.booleans())
    if not top_level_original:
        params["original_max_position_embeddings"] = original
    for key, strategy in (
        ("attention_factor", st.floats(0.5, 2.0)),
        ("beta_fast", st.floats(4.0, 64.0)),
        ("beta_slow", st.floats(0.5, 4.0)),
        ("mscale", st.floats(0.5, 2.0)),
        ("mscale_all_dim", st.floats(0.5, 2.0)),
        ("truncate", st.booleans()),
    ):
        value = draw(_maybe(strategy))
        if value is not None:
            params[key] = value
    config = dict(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=max_position,
        rope_parameters=params,
    )
    if top_level_original:
        config["original_max_position_embeddings"] = original
    return config


@settings(max_examples=300, deadline=None)
@given(raw=yarn_configs())
def test_yarn_equals_transformers(raw):
    params = dict(raw["rope_parameters"])
    config = transformers.Qwen2Config(**{**raw, "rope_parameters": dict(params)})
    ref_inv, ref_scale = ROPE_INIT_FUNCTIONS["yarn"](config)
    rope = rope_from_hf(
        params["rope_theta"],
        params,
        "config.json",
        max_context=raw["max_position_embeddings"],
        original_context=raw.get("original_max_position_embeddings"),
    )
    assert rope.kind is RopeKind.YARN
    assert torch.equal(inverse_frequencies(rope, raw["head_dim"]), ref_inv.float())
    assert attention_scale(rope) == pytest.approx(float(ref_scale), rel=1e-12)


def test_attention_factor_goes_into_the_query_scale():
    """cos and sin each times s in transformers: the product q·k times s², which the loaders fold into the scale."""
    rope = rope_from_hf(1e4, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}, "c")
    s = attention_scale(rope)
    assert s > 1.0
    assert scaled_query(None, 64, rope) == pytest.approx(64**-0.5 * s * s)
    assert scaled_query(0.1, 64, rope) == pytest.approx(0.1 * s * s)
    plain = rope_from_hf(1e4, None, "c")
    assert scaled_query(None, 64, plain) is None and attention_scale(plain) == 1.0


def test_yarn_without_original_context_is_refused():
    with pytest.raises(ModelLoadError, match="original_max_position_embeddings"):
        rope_from_hf(1e4, {"rope_type": "yarn", "factor": 4.0}, "config.json")
