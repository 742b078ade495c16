"""Tiny random-weight models of each family, built by Hugging Face transformers from that family's config scaled
down, saved as a safetensors folder and written as GGUF the way llama.cpp's converter writes them: llama q/k rows
permuted, Llama 3 rope scaling as the rope_freqs tensor, Gemma norms as 1 + w, Phi-3's fused qkv and gate_up kept
fused (attn_qkv, ffn_up)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFWriter

from tests.engine.tiny_llama import (
    CHATML,
    SPECIALS,
    _llama_cpp_permute,
    build_tokenizer,
)

WINDOW = 24  # sliding window of the mistral and gemma3 builds: the tests' prompts are longer
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}  # wavelength bands 16..64 tokens
YARN_ROPE = {
    "rope_type": "yarn",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "original_max_position_embeddings": 64,
    "beta_fast": 16.0,
    "beta_slow": 2.0,
}  # the ramp spans rotary pairs 0..3 of 8 at head_dim 16; attention factor 1 + 0.1 ln 8 (derived)
FAMILIES = ("llama3", "mistral", "qwen2", "qwen3", "gemma3", "qwen2-yarn", "phi3")


def hf_model(family: str, vocab: int, eos: int, bos: int, **sizes):
    """sizes: config fields that override the tiny defaults (hidden_size=256 for rows of whole K-quant blocks)."""
    import transformers as tf  # test-only dependency

    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        eos_token_id=eos,
        bos_token_id=bos,
        initializer_range=0.1,
    )
    common.update(sizes)
    if family == "llama3":
        config, cls = (
            tf.LlamaConfig(**common, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True),
            tf.LlamaForCausalLM,
        )
    elif family == "mistral":
        config, cls = tf.MistralConfig(**common, sliding_window=WINDOW), tf.MistralForCausalLM
    elif family == "qwen2":
        config, cls = tf.Qwen2Config(**common, tie_word_embeddings=True), tf.Qwen2ForCausalLM
    elif family == "qwen2-yarn":  # Qwen2.5's long-context setting, scaled down
        config = tf.Qwen2Config(**common, tie_word_embeddings=True, rope_parameters=dict(YARN_ROPE))
        cls = tf.Qwen2ForCausalLM
    elif family == "qwen3":
        config, cls = tf.Qwen3Config(**common, tie_word_embeddings=True), tf.Qwen3ForCausalLM
    elif family == "phi3":  # Phi-3 mini's shape scaled down: fused qkv and gate_up, every layer sliding
        common.pop("head_dim")  # Phi-3 derives it: hidden / heads = 16
        config, cls = tf.Phi3Config(**common, sliding_window=WINDOW, pad_token_id=0), tf.Phi3ForCausalLM
    elif family == "gemma3":
        common.update(num_hidden_layers=3, pad_token_id=0)
        config = tf.Gemma3TextConfig(
            **common,
            sliding_window=WINDOW,
            query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            },
        )
        cls = tf.Gemma3ForCausalLM
    else:
        raise ValueError(family)
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():  # random norms and biases: a mix-up of either cannot pass unnoticed
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(-0.5, 0.5) if family == "gemma3" else p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.uniform_(-0.5, 0.5)
    return model.eval()


def save_family(family: str, folder: Path, **sizes) -> Path:
    tok = build_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML, "eos_token": "<|im_end|>"}))
    model = hf_model(
        family, tok.get_vocab_size(), tok.token_to_id("<|im_end|>"), tok.token_to_id("<|im_start|>"), **sizes
    )
    model.save_pretrained(folder, safe_serialization=True)
    return folder


_GGUF_ARCH = {
    "llama3": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3": "gemma3",
    "qwen2-yarn": "qwen2",
    "phi3": "phi3",
}
_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "self_attn.qkv_proj": "attn_qkv",  # phi3's fused matrices, as llama.cpp's converter names them
    "mlp.gate_up_proj": "ffn_up",
}
_GEMMA_LAYER = {
    **_LAYER,
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def llama3_rope_freqs(rope: dict, head_dim: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py for Llama 3 rope scaling: one divisor per rotary frequency."""
    freqs = 1.0 / (rope["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def save_family_gguf(
    family: str, hf_folder: Path, path: Path, with_rope_freqs: bool = True, extra=None, store=None
) -> Path:
    """extra: called with the writer before it writes, to add metadata or tensors (the refusal tests). store: called
    with (GGUF name, float32 array) for each tensor, returns (array, GGUF type or None): how a test writes matrices
    in a block type (the bytes, [rows, row bytes]) instead of floats."""
    from safetensors.torch import load_file

    cfg = json.loads((hf_folder / "config.json").read_text())
    tok_json = json.loads((hf_folder / "tokenizer.json").read_text())
    weights = load_file(str(hf_folder / "model.safetensors"))
    arch = _GGUF_ARCH[family]
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]  # Phi-3 derives it
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    rope = cfg["rope_parameters"]
    writer.add_rope_freq_base((rope.get("full_attention") or rope)["rope_theta"])
    if rope.get("rope_type") == "yarn":  # as llama.cpp's converter writes it, and the betas llama.cpp reads
        from gguf import RopeScalingType

        writer.add_rope_scaling_type(RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        writer.add_rope_scaling_yarn_beta_fast(rope["beta_fast"])
        writer.add_rope_scaling_yarn_beta_slow(rope["beta_slow"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_vocab_size(cfg["vocab_size"])
    if cfg.get("sliding_window"):
        writer.add_sliding_window(cfg["sliding_window"])
    if family == "gemma3":  # the file states its layer pattern, query scale and local rope base
        writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in cfg["layer_types"]])
        writer.add_attention_scale(cfg["query_pre_attn_scalar"] ** -0.5)
        writer.add_float32("gemma3.rope.freq_base_swa", rope["sliding_attention"]["rope_theta"])
    vocab = sorted(tok_json["model"]["vocab"].items(), key=lambda kv: kv[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in SPECIALS else 1 for t, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_chat_template(CHATML)
    gemma = family == "gemma3"

    def tensor(name: str, w: torch.Tensor) -> None:
        array = np.ascontiguousarray((w + 1 if gemma and "norm" in name else w).numpy())
        raw_type = None
        if store is not None:
            array, raw_type = store(name, array)
        writer.add_tensor(name, array, raw_dtype=raw_type)

    tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    tensor("output_norm.weight", weights["model.norm.weight"])
    if "lm_head.weight" in weights and not cfg.get("tie_word_embeddings"):
        tensor("output.weight", weights["lm_head.weight"])
    if family == "llama3" and with_rope_freqs:
        writer.add_tensor("rope_freqs.weight", llama3_rope_freqs(rope, head_dim))
    names = _GEMMA_LAYER if gemma else _LAYER
    for hf_name, w in weights.items():
        if not hf_name.startswith("model.layers."):
            continue
        index, _, rest = hf_name.removeprefix("model.layers.").partition(".")
        stem, _, kind = rest.rpartition(".")
        if arch == "llama" and stem == "self_attn.q_proj":
            w = torch.from_numpy(_llama_cpp_permute(w.numpy(), cfg["num_attention_heads"]))
        elif arch == "llama" and stem == "self_attn.k_proj":
            w = torch.from_numpy(_llama_cpp_permute(w.numpy(), cfg["num_key_value_heads"]))
        tensor(f"blk.{index}.{names[stem]}.{kind}", w)
    if extra is not None:
        extra(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
