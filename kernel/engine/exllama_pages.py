"""Page table of the ExLlamaV2 engine's paged KV cache: which cache pages each sequence holds.

The cache is one pool of fixed-size pages (flash-attn's paged mode wants 256-token pages). A sequence's token t lives
in page pages[t // page_size] at row t % page_size, so its pages need not be contiguous and a freed page serves any
sequence. This file is bookkeeping only (no tensors): the engine turns its answers into block_index rows for the
forward pass and into flat slot indices for copying one sequence's KV out and back.
"""
from __future__ import annotations


class PageTable:
    def __init__(self, n_pages: int, page_size: int):
        if n_pages <= 0 or page_size <= 0:
            raise ValueError(f"a page table needs pages and a page size, got {n_pages} x {page_size}")
        self.n_pages = n_pages
        self.page_size = page_size
        # Popped from the end: low page numbers go out first, which keeps single sequences contiguous (ExLlamaV2 then
        # writes a lone prefill straight into the cache instead of through flash-attn's scatter).
        self._free = list(range(n_pages - 1, -1, -1))
        self._held: dict[str, list[int]] = {}

    def free_pages(self) -> int:
        return len(self._free)

    def pages_needed(self, n_tokens: int) -> int:
        return -(-n_tokens // self.page_size)

    def held(self, seq_id: str) -> list[int]:
        return self._held.get(seq_id, [])

    def held_pages(self, seq_id: str) -> int:
        return len(self._held.get(seq_id, ()))

    def reserve(self, seq_id: str, n_tokens: int) -> bool:
        """Grow seq_id's pages to cover n_tokens. All or nothing: False (and no change) if the pool is short."""
        pages = self._held.setdefault(seq_id, [])
        missing = self.pages_needed(n_tokens) - len(pages)
        if missing > len(self._free):
            if not pages:
                del self._held[seq_id]
            return False
        for _ in range(missing):
            pages.append(self._free.pop())
        return True

    def release(self, seq_id: str) -> None:
        """Return every page seq_id holds to the pool (unknown ids are ignored)."""
        self._free.extend(reversed(self._held.pop(seq_id, [])))

    def block_row(self, seq_id: str, width: int) -> list[int]:
        """seq_id's pages padded to width with page 0 (never read: flash-attn stops at the sequence length)."""
        pages = self.held(seq_id)
        if len(pages) > width:
            raise ValueError(f"sequence {seq_id!r} holds {len(pages)} pages, more than the row width {width}")
        return pages + [0] * (width - len(pages))

    def slots(self, seq_id: str, n_tokens: int) -> list[int]:
        """Flat cache row of each of seq_id's first n_tokens tokens (page * page_size + offset in page)."""
        pages = self.held(seq_id)
        if self.pages_needed(n_tokens) > len(pages):
            raise ValueError(f"sequence {seq_id!r} holds {len(pages)} pages, too few for {n_tokens} tokens")
        size = self.page_size
        return [pages[t // size] * size + t % size for t in range(n_tokens)]
