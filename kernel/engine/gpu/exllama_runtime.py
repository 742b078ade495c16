"""ExLlamaV2 behind the small surface the engine drives: one paged forward pass and the cache's K/V tensors.

Text is not ExLlamaV2's business here: an EXL2 folder is a Hugging Face folder, so the engine reads its tokenizer.json
and chat template with kernel/engine/loading/tokenizer.py, exactly as the CPU engine does for a safetensors folder.

exllamav2 is imported only inside load_runtime() and forward(), and CUDA is touched only there, so this module imports
on a machine without either; load_runtime() then raises ExLlamaUnavailable saying what is missing.

exllamav2 APIs relied on (v0.2/0.3 source):
- config.py        ExLlamaV2Config(model_dir) (reads config.json, calls prepare()), .arch_compat_overrides(),
                   .max_input_len / .max_batch_size (size of the scratch buffers), .max_seq_len, .vocab_size,
                   .num_hidden_layers, .eos_token_id, .generation_config, .no_flash_attn
- attn.py          has_flash_attn_with_paged (flash-attn >= 2.5.7), ExLlamaV2Attention.PagedParams(batch_size,
                   block_index, cache_seqlens, max_cache_seqlen, page_size, q_len): forward_paged() hands them to
                   flash_attn_with_kvcache(k_cache, v_cache, cache_seqlens, block_table), which writes the new K/V
                   at positions cache_seqlens.. of each sequence through its block table row
- cache.py         ExLlamaV2Cache(model, batch_size=1, max_seq_len, lazy=True): per layer key_states[i] /
                   value_states[i] of shape [1, max_seq_len, kv_heads, head_dim] fp16; paged mode views them as
                   [max_seq_len // page_size, page_size, kv_heads, head_dim]
- model.py         ExLlamaV2(config), .load_autosplit(cache), .forward_chunk(input_ids, cache, attn_params,
                   preprocess_only, last_id_only) -> {"logits": [batch, q, padded vocab]}
- generator/       PAGED_PAGE_SIZE = 256, the page size the dynamic generator (and flash-attn's paged kernel) uses
  dynamic.py
- attn.py          forward_paged() calls the module global flash_attn_with_kvcache, bound only when flash-attn >= 2.5.7
                   imports. Without flash-attn (no wheel for the machine's torch / CUDA) we bind paged_attention.py's
                   torch version there instead: same results, slower; runtime.attention says which one runs. Models
                   that need a sliding window or soft-capping are refused then (ExLlamaV2 would not pass those on).
"""

from __future__ import annotations

import enum
import hashlib
import os
from typing import Protocol

import torch

from kernel.engine.core.interface import EngineError, KVLayout

PAGE_SIZE = 256


class ExLlamaUnavailable(RuntimeError):
    """The ExLlamaV2 engine cannot run here: no CUDA device, or exllamav2 missing."""


class Attention(enum.Enum):
    FLASH_ATTN = "flash-attn"  # flash-attn's paged kernel
    TORCH = "torch"  # paged_attention.py: the same contract in plain torch (SDPA per sequence)


class PagedRuntime(Protocol):
    """What the engine needs from a model with a paged KV cache."""

    page_size: int
    n_pages: int
    vocab_size: int
    max_context: int  # longest sequence the model's positions allow
    max_chunk: int  # most tokens one forward may carry (scratch buffer rows)

    def layout(self) -> KVLayout: ...

    def forward(self, input_ids, block_index, cache_seqlens, want_logits: bool):
        """input_ids [batch, q] int64, block_index [batch, pages] int32, cache_seqlens [batch] int32, all on the
        CPU. Appends the K/V of the q new tokens of each row after its cache_seqlens cached ones.
        Returns the last position's logits [batch, vocab] float32 on the CPU, or None if not want_logits."""

    def kv_tensors(self) -> list[tuple]:
        """Per layer (K, V), each [n_pages * page_size, kv_heads, head_dim]: views of the cache itself."""

    def eos_token_ids(self) -> tuple[int, ...]: ...


def _require_cuda_and_exllamav2():
    if not torch.cuda.is_available():
        raise ExLlamaUnavailable(
            "the ExLlamaV2 engine needs a CUDA GPU, and torch sees none "
            f"(torch {torch.__version__}); use the torch CPU engine instead"
        )
    try:
        import exllamav2
        from exllamav2.attn import has_flash_attn_with_paged
    except ImportError as exc:
        raise ExLlamaUnavailable(
            f"the ExLlamaV2 engine needs the exllamav2 package (pip install 'aios[gpu]'): {exc}"
        ) from exc
    if has_flash_attn_with_paged:
        return exllamav2, Attention.FLASH_ATTN
    # forward_paged() looks the name up in its module at each call, so binding it there is enough.
    import exllamav2.attn as exllama_attn

    from kernel.engine.gpu.paged_attention import paged_attention

    exllama_attn.flash_attn_with_kvcache = paged_attention
    exllama_attn.has_flash_attn_with_paged = True
    return exllamav2, Attention.TORCH


def load_runtime(model_dir: str, kv_budget_tokens: int, max_batch: int, max_chunk: int) -> ExLlamaRuntime:
    """Load an EXL2 (or fp16 safetensors) model folder onto the GPU(s) with a paged cache of kv_budget_tokens."""
    if not os.path.isdir(model_dir):
        raise EngineError(f"ExLlamaV2 model folder not found: {model_dir!r}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise EngineError(f"{model_dir!r} has no config.json: not a Hugging Face / EXL2 model folder")
    if kv_budget_tokens < PAGE_SIZE or max_batch < 1 or max_chunk < 1:
        raise EngineError(
            f"need kv_budget_tokens >= {PAGE_SIZE}, max_batch >= 1 and max_chunk >= 1, got "
            f"{kv_budget_tokens}, {max_batch}, {max_chunk}"
        )
    exllamav2, attention = _require_cuda_and_exllamav2()
    try:
        config = exllamav2.ExLlamaV2Config(model_dir)
        config.arch_compat_overrides(quiet=True)
    except (AssertionError, ValueError, KeyError, OSError) as exc:
        raise EngineError(f"cannot read the model in {model_dir!r}: {exc}") from exc
    if config.no_flash_attn:
        raise ExLlamaUnavailable(f"{config.architecture} cannot use flash-attn here, and paged mode needs it")
    if attention is Attention.TORCH and (
        config.arch.lm.swa or config.arch.lm.alternating_swa or config.attn_logit_softcapping
    ):
        raise ExLlamaUnavailable(
            f"{config.architecture} needs a sliding window or soft-capping, which only "
            "flash-attn's paged kernel provides, and flash-attn >= 2.5.7 is not installed"
        )
    # Scratch buffers hold max_batch_size * max_input_len rows: one prefill chunk, or one decode row per sequence.
    config.max_batch_size = 1
    config.max_input_len = max(max_chunk, max_batch)
    config.max_attention_size = config.max_input_len**2
    n_pages = -(-kv_budget_tokens // PAGE_SIZE)
    model = exllamav2.ExLlamaV2(config)
    cache = exllamav2.ExLlamaV2Cache(model, batch_size=1, max_seq_len=n_pages * PAGE_SIZE, lazy=True)
    try:
        model.load_autosplit(cache)  # weights and cache layer by layer over the GPUs, in turn
    except RuntimeError as exc:  # "Insufficient VRAM for model and cache", CUDA out of memory
        raise EngineError(f"cannot load {model_dir!r} with a {n_pages * PAGE_SIZE}-token KV cache: {exc}") from exc
    return ExLlamaRuntime(model_dir, config, model, cache, n_pages, attention)


def _model_id(model_dir: str) -> str:
    """Folder name plus a digest of config.json (which carries the EXL2 bits per weight), so two quantisations of one
    model never accept each other's snapshots."""
    with open(os.path.join(model_dir, "config.json"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    return f"exl2:{os.path.basename(os.path.normpath(model_dir))}:{digest}"


class ExLlamaRuntime:
    page_size = PAGE_SIZE

    def __init__(self, model_dir, config, model, cache, n_pages: int, attention: Attention):
        self.attention = attention
        self._config = config
        self._model = model
        self._cache = cache
        self.n_pages = n_pages
        self.vocab_size = config.vocab_size
        self.max_context = config.max_seq_len
        self.max_chunk = config.max_input_len
        self._layout = KVLayout(
            model_id=_model_id(model_dir),
            n_layers=config.num_hidden_layers,
            n_kv_heads=cache.num_key_value_heads,
            head_dim=cache.head_dim,
            dtype="float16",
        )

    def layout(self) -> KVLayout:
        return self._layout

    def forward(self, input_ids, block_index, cache_seqlens, want_logits: bool):
        from exllamav2.attn import ExLlamaV2Attention

        batch, q_len = input_ids.shape
        params = ExLlamaV2Attention.PagedParams(
            batch_size=batch,
            block_index=block_index,
            cache_seqlens=cache_seqlens,
            max_cache_seqlen=int(cache_seqlens.max()),
            page_size=self.page_size,
            q_len=q_len,
        )
        with torch.inference_mode():
            out = self._model.forward_chunk(
                input_ids=input_ids,
                cache=self._cache,
                attn_params=params,
                preprocess_only=not want_logits,
                last_id_only=True,
            )
        if not want_logits:
            return None
        logits = out["logits"]  # [batch, 1, padded vocab]
        return logits[:, -1, : self.vocab_size].float().cpu()  # [batch, vocab]

    def kv_tensors(self) -> list[tuple]:
        # [1, n_pages * page_size, kv_heads, head_dim] -> [n_pages * page_size, kv_heads, head_dim]
        return [(k[0], v[0]) for k, v in zip(self._cache.key_states, self._cache.value_states)]

    def eos_token_ids(self) -> tuple[int, ...]:
        """config.json's eos_token_id, plus generation_config.json's list (chat models often stop on several)."""
        generation = getattr(self._config, "generation_config", None) or {}
        ids = {self._config.eos_token_id, *(generation.get("eos_token_id") or ())}
        return tuple(sorted(i for i in ids if i is not None))
