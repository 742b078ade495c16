"""Test double for ExLlamaRuntime: a tiny random-weight attention model with a paged KV cache, on the CPU.

It keeps the contract ExLlamaRuntime.forward() gets from ExLlamaV2's paged mode (flash_attn_with_kvcache with a block
table): row i's q new tokens sit at positions cache_seqlens[i].., their K/V go to page block_index[i, pos // page_size]
at row pos % page_size, and each attends causally to its row's cached tokens. It also checks what the GPU would not:
that no row read was left unwritten, and how many tokens were run (for prefix-reuse tests).
"""

from __future__ import annotations

import torch

from kernel.engine.core.interface import KVLayout

ASCII = 128
EOS = 128


class ToyPagedRuntime:
    page_size = 256
    vocab_size = ASCII + 1
    max_chunk = 2048

    def __init__(
        self,
        n_pages: int = 8,
        n_layers: int = 2,
        kv_heads: int = 2,
        head_dim: int = 8,
        max_context: int = 4096,
        seed: int = 0,
    ):
        g = torch.Generator().manual_seed(seed)
        hidden = kv_heads * head_dim
        self.n_pages = n_pages
        self.max_context = max_context
        self._heads, self._head_dim = kv_heads, head_dim
        self._embed = torch.randn(self.vocab_size, hidden, generator=g)  # [vocab, hidden]
        self._positions = torch.randn(max_context, hidden, generator=g) * 0.5  # [ctx, hidden]
        self._layers = [
            [torch.randn(hidden, hidden, generator=g) / hidden**0.5 for _ in range(4)] for _ in range(n_layers)
        ]  # q, k, v, o
        rows = n_pages * self.page_size
        # NaN until written: attention over a row nobody wrote poisons the logits, which forward() checks. Made in
        # inference mode, as ExLlamaV2's load_autosplit makes its cache: such tensors refuse in-place writes outside it.
        with torch.inference_mode():
            self._kv = [
                (
                    torch.full((rows, kv_heads, head_dim), float("nan")),
                    torch.full((rows, kv_heads, head_dim), float("nan")),
                )
                for _ in range(n_layers)
            ]
        self.tokens_run = 0
        self._layout = KVLayout("toy-paged", n_layers, kv_heads, head_dim, "float32")

    def layout(self) -> KVLayout:
        return self._layout

    def eos_token_ids(self) -> tuple[int, ...]:
        return (EOS,)

    def kv_tensors(self):
        return self._kv

    @torch.inference_mode()
    def forward(self, input_ids, block_index, cache_seqlens, want_logits: bool):
        assert input_ids.dtype == torch.long and block_index.dtype == torch.int32
        assert cache_seqlens.dtype == torch.int32
        batch, q_len = input_ids.shape
        self.tokens_run += batch * q_len
        out = []
        for row in range(batch):
            start = int(cache_seqlens[row])
            positions = torch.arange(start, start + q_len)  # [q]
            slots = self._slots(block_index[row], start + q_len)  # [ctx]
            x = self._embed[input_ids[row]] + self._positions[positions]  # [q, hidden]
            for (wq, wk, wv, wo), (k_cache, v_cache) in zip(self._layers, self._kv):
                shape = (q_len, self._heads, self._head_dim)
                k_cache[slots[start:]] = (x @ wk).view(shape)
                v_cache[slots[start:]] = (x @ wv).view(shape)
                q = (x @ wq).view(shape).transpose(0, 1)  # [H, q, D]
                k = k_cache[slots].transpose(0, 1)  # [H, ctx, D]
                v = v_cache[slots].transpose(0, 1)
                causal = positions[:, None] >= torch.arange(start + q_len)[None, :]  # [q, ctx]
                scores = (q @ k.transpose(1, 2)).masked_fill(~causal, float("-inf"))  # [H, q, ctx]
                attn = torch.softmax(scores / self._head_dim**0.5, dim=-1) @ v  # [H, q, D]
                x = x + attn.transpose(0, 1).reshape(q_len, -1) @ wo
            assert bool(torch.isfinite(x).all()), "attention read K/V rows nobody wrote"
            out.append(x[-1] @ self._embed.T)  # [vocab]
        return torch.stack(out) if want_logits else None  # [batch, vocab]

    def _slots(self, pages: torch.Tensor, n_tokens: int) -> torch.Tensor:
        t = torch.arange(n_tokens)
        page_of = pages.long()[t // self.page_size]
        assert bool((page_of < self.n_pages).all()), "block_index names a page outside the cache"
        return page_of * self.page_size + t % self.page_size


class ByteTokenizer:
    """ASCII bytes as tokens, 128 as EOS: enough text machinery for stop strings and detokenization."""

    eos_ids = (EOS,)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("ascii"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < ASCII).decode("ascii")

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        return self.encode("".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>")
