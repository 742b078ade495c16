"""Hugging Face model folder (config.json + *.safetensors + tokenizer.json) → ModelConfig and canonical weights.

Families by config.json's model_type: llama, mistral, qwen2, qwen3, gemma3_text (Gemma3ForCausalLM), phi3 (its fused
qkv and gate_up matrices split by rows; longrope refused by name). Each family's
keys and tensor names are mapped explicitly; a key that would change the computation and is not expressed in
ModelConfig (an activation, a bias, softcapping, an unknown rope scaling, ...) and a tensor no map names are refused
with ModelLoadError naming them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from kernel.engine.loading.gguf_names import split_fused
from kernel.engine.loading.model_config import (
    Activation,
    Family,
    ModelConfig,
    ModelLoadError,
    check_weights,
)
from kernel.engine.loading.rope import Rope, attention_scale, rope_from_hf, scaled_query

_FAMILIES = {
    "llama": Family.LLAMA,
    "mistral": Family.MISTRAL,
    "qwen2": Family.QWEN2,
    "qwen3": Family.QWEN3,
    "gemma3_text": Family.GEMMA3,
    "phi3": Family.PHI3,
}
_ARCHITECTURES = {
    Family.LLAMA: "LlamaForCausalLM",
    Family.MISTRAL: "MistralForCausalLM",
    Family.QWEN2: "Qwen2ForCausalLM",
    Family.QWEN3: "Qwen3ForCausalLM",
    Family.GEMMA3: "Gemma3ForCausalLM",
    Family.PHI3: "Phi3ForCausalLM",
}
_ACTIVATIONS = {"silu": Activation.SILU, "gelu_pytorch_tanh": Activation.GELU_TANH}
_LLAMA_LAYER = {
    "input_layernorm.weight": "attn_norm",
    "self_attn.q_proj.weight": "q",
    "self_attn.k_proj.weight": "k",
    "self_attn.v_proj.weight": "v",
    "self_attn.o_proj.weight": "o",
    "post_attention_layernorm.weight": "mlp_norm",
    "mlp.gate_proj.weight": "gate",
    "mlp.up_proj.weight": "up",
    "mlp.down_proj.weight": "down",
}
_QK_NORM = {"self_attn.q_norm.weight": "q_norm", "self_attn.k_norm.weight": "k_norm"}
_LAYER_NAMES = {
    Family.LLAMA: _LLAMA_LAYER,
    Family.MISTRAL: _LLAMA_LAYER,
    Family.QWEN2: {
        **_LLAMA_LAYER,
        "self_attn.q_proj.bias": "q_bias",
        "self_attn.k_proj.bias": "k_bias",
        "self_attn.v_proj.bias": "v_bias",
    },
    Family.QWEN3: {**_LLAMA_LAYER, **_QK_NORM},
    # Phi-3's fused matrices: split by rows after loading (gguf_names.split_fused)
    Family.PHI3: {
        "input_layernorm.weight": "attn_norm",
        "self_attn.qkv_proj.weight": "qkv",
        "self_attn.o_proj.weight": "o",
        "post_attention_layernorm.weight": "mlp_norm",
        "mlp.gate_up_proj.weight": "gate_up",
        "mlp.down_proj.weight": "down",
    },
    # Gemma's post_attention_layernorm normalizes the attention output; the MLP's input norm is pre_feedforward
    Family.GEMMA3: {
        **_LLAMA_LAYER,
        **_QK_NORM,
        "post_attention_layernorm.weight": "post_attn_norm",
        "pre_feedforward_layernorm.weight": "mlp_norm",
        "post_feedforward_layernorm.weight": "post_mlp_norm",
    },
}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "embed", "model.norm.weight": "norm", "lm_head.weight": "lm_head"}
# keys whose non-default value changes the computation in a way ModelConfig does not express
_REFUSED_IF_SET = (
    "attention_bias",
    "mlp_bias",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "use_bidirectional_attention",
)


def read_hf_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc


def config_from_hf(raw: dict, folder: Path) -> ModelConfig:
    where = f"{folder}/config.json"
    family = _FAMILIES.get(raw.get("model_type"))
    if family is None:
        raise ModelLoadError(
            f"{folder}: unsupported architecture {raw.get('model_type')!r} (supported: {', '.join(_FAMILIES)})"
        )
    architecture = (raw.get("architectures") or [_ARCHITECTURES[family]])[0]
    if architecture != _ARCHITECTURES[family]:
        raise ModelLoadError(f"{where}: unsupported architecture {architecture!r} for {family.value}")
    for key in _REFUSED_IF_SET:
        if raw.get(key):
            raise ModelLoadError(f"{where}: {key}={raw[key]!r} is not supported")
    act_name = raw.get("hidden_activation") or raw.get("hidden_act") or "silu"
    activation = _ACTIVATIONS.get(act_name)
    if activation is None or (activation is Activation.GELU_TANH) != (family is Family.GEMMA3):
        raise ModelLoadError(f"{where}: activation {act_name!r} is not supported for {family.value}")
    try:
        n_heads, hidden, n_layers = (
            int(raw["num_attention_heads"]),
            int(raw["hidden_size"]),
            int(raw["num_hidden_layers"]),
        )
        head_dim = int(raw.get("head_dim") or hidden // n_heads)
        rope, local_rope = _ropes(raw, family, where)
        if local_rope is not None and attention_scale(local_rope) != attention_scale(rope):
            raise ModelLoadError(f"{where}: sliding and global layers with different YaRN attention factors")
        window, sliding = _sliding(raw, family, n_layers)
        cfg = ModelConfig(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=int(raw.get("num_key_value_heads") or n_heads),
            head_dim=head_dim,
            ffn_size=int(raw["intermediate_size"]),
            rms_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope=rope,
            max_context=int(raw.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(raw.get("tie_word_embeddings", family is Family.GEMMA3)),
            family=family,
            qkv_bias=family is Family.QWEN2,
            qk_norm=family in (Family.QWEN3, Family.GEMMA3),
            post_norms=family is Family.GEMMA3,
            norm_offset=1.0 if family is Family.GEMMA3 else 0.0,
            activation=activation,
            # transformers rounds the scale to float32 before multiplying (a float32 tensor buffer)
            embed_scale=float(torch.tensor(hidden**0.5)) if family is Family.GEMMA3 else 1.0,
            query_scale=scaled_query(
                float(raw["query_pre_attn_scalar"]) ** -0.5 if family is Family.GEMMA3 else None, head_dim, rope
            ),
            sliding_window=window,
            sliding_layers=sliding,
            local_rope=local_rope,
        )
    except KeyError as exc:
        raise ModelLoadError(f"{where} lacks {exc.args[0]!r}") from exc
    cfg.validate()
    return cfg


def _ropes(raw: dict, family: Family, where: str) -> tuple[Rope, Rope | None]:
    """The global rope and, for Gemma 3, the sliding layers' own. Newer configs carry one rope_parameters map (per
    layer type for Gemma 3); older ones rope_theta, rope_scaling and Gemma's rope_local_base_freq."""
    params = raw.get("rope_parameters") or {}
    contexts = {"max_context": int(raw.get("max_position_embeddings") or 0)}
    contexts["original_context"] = raw.get("original_max_position_embeddings")
    if family is Family.GEMMA3:
        if "full_attention" in params:
            full, local = params["full_attention"], params.get("sliding_attention", {})
            return (
                rope_from_hf(float(full["rope_theta"]), full, where, **contexts),
                rope_from_hf(float(local.get("rope_theta", 10000.0)), local, where, **contexts),
            )
        scaling = raw.get("rope_scaling")
        return (
            rope_from_hf(float(raw.get("rope_theta", 1e6)), scaling, where, **contexts),
            Rope(float(raw.get("rope_local_base_freq", 10000.0))),
        )
    theta = float(raw.get("rope_theta") or params.get("rope_theta", 10000.0))
    scaling = raw.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise ModelLoadError(f"{where}: partial_rotary_factor={raw['partial_rotary_factor']} is not supported")
    return rope_from_hf(theta, scaling, where, **contexts), None


def _sliding(raw: dict, family: Family, n_layers: int) -> tuple[int | None, tuple[bool, ...]]:
    window = raw.get("sliding_window")
    if window is None:
        return None, ()
    if family in (Family.MISTRAL, Family.PHI3):
        return int(window), (True,) * n_layers
    if family in (Family.QWEN2, Family.QWEN3) and not raw.get("use_sliding_window"):
        return None, ()
    types = raw.get("layer_types")
    if types is None and family is Family.GEMMA3:  # older configs: every pattern-th layer is global
        pattern = int(raw.get("sliding_window_pattern", 6))
        types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    if types is None:
        raise ModelLoadError(f"sliding_window={window} without layer_types is not supported for {family.value}")
    return int(window), tuple(kind == "sliding_attention" for kind in types)


def eos_ids_from_hf(raw: dict) -> tuple[int, ...]:
    eos = raw.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list) else (int(eos),)


def load_safetensors_weights(folder: Path, cfg: ModelConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder}: no *.safetensors files")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors = load_file(str(file))
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{file}: corrupt safetensors file ({exc})") from exc
        for hf_name, tensor in tensors.items():
            name = _canonical_name(hf_name, cfg.family)
            if name is None:
                raise ModelLoadError(f"{file}: unknown tensor {hf_name!r} for a {cfg.family.value} model")
            if name:
                weights[name] = tensor.to(dtype)
    if cfg.tie_embeddings:
        weights.pop("lm_head", None)
    weights = split_fused(weights, cfg, str(folder))
    check_weights(cfg, weights, str(folder))
    return weights


def _canonical_name(hf_name: str, family: Family) -> str | None:
    """The canonical name; "" for a tensor that is safely skipped (rotary buffers); None for an unknown one."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    if hf_name.startswith("model.layers."):
        index, _, rest = hf_name.removeprefix("model.layers.").partition(".")
        if rest in _LAYER_NAMES[family]:
            return f"layers.{index}.{_LAYER_NAMES[family][rest]}"
        if rest == "self_attn.rotary_emb.inv_freq":  # older checkpoints saved the plain table; rope is computed
            return ""
    return None
