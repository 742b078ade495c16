"""Hugging Face llama folder (config.json + *.safetensors + tokenizer.json) → LlamaConfig and canonical weights."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from kernel.engine.loading.model_config import LlamaConfig, ModelLoadError, check_weights

_LAYER_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "q", "self_attn.k_proj": "k",
                "self_attn.v_proj": "v", "self_attn.o_proj": "o", "post_attention_layernorm": "mlp_norm",
                "mlp.gate_proj": "gate", "mlp.up_proj": "up", "mlp.down_proj": "down"}
_GLOBAL_NAMES = {"model.embed_tokens": "embed", "model.norm": "norm", "lm_head": "lm_head"}


def read_hf_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc


def config_from_hf(raw: dict, folder: Path) -> LlamaConfig:
    if raw.get("model_type") != "llama":
        raise ModelLoadError(f"{folder}: unsupported architecture {raw.get('model_type')!r} (only 'llama')")
    # Older configs carry rope_theta and rope_scaling; newer ones one rope_parameters map.
    rope = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if scaling:
        raise ModelLoadError(f"{folder}: rope scaling {scaling!r} is not supported")
    try:
        n_heads = int(raw["num_attention_heads"])
        cfg = LlamaConfig(
            vocab_size=int(raw["vocab_size"]), hidden_size=int(raw["hidden_size"]),
            n_layers=int(raw["num_hidden_layers"]), n_heads=n_heads,
            n_kv_heads=int(raw.get("num_key_value_heads") or n_heads),
            head_dim=int(raw.get("head_dim") or raw["hidden_size"] // n_heads),
            ffn_size=int(raw["intermediate_size"]), rms_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(raw.get("rope_theta") or rope.get("rope_theta", 10000.0)),
            max_context=int(raw.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)))
    except KeyError as exc:
        raise ModelLoadError(f"{folder}/config.json lacks {exc.args[0]!r}") from exc
    cfg.validate()
    return cfg


def eos_ids_from_hf(raw: dict) -> tuple[int, ...]:
    eos = raw.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list) else (int(eos),)


def load_safetensors_weights(folder: Path, cfg: LlamaConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
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
            name = _canonical_name(hf_name)
            if name is not None:
                weights[name] = tensor.to(dtype)
    if cfg.tie_embeddings:
        weights.pop("lm_head", None)
    check_weights(cfg, weights, str(folder))
    return weights


def _canonical_name(hf_name: str) -> str | None:
    stem = hf_name.removesuffix(".weight")
    if stem in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[stem]
    if stem.startswith("model.layers."):
        index, _, rest = stem.removeprefix("model.layers.").partition(".")
        if rest in _LAYER_NAMES:
            return f"layers.{index}.{_LAYER_NAMES[rest]}"
    return None   # rotary inv_freq buffers and the like
