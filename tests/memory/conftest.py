"""Fixtures for the memory manager's tests: the real all-MiniLM-L6-v2 embedder (loaded once per session: ~10 s on 2
shared cores), a counting wrapper that tells whether a manager embedded anything, and a manager factory on a fresh
directory with the deterministic HashEmbedder for the logic tests (quota, eviction, crash)."""

from __future__ import annotations

import pytest

from kernel.memory import MemoryManager
from kernel.memory.embedder import HashEmbedder, MiniLMEmbedder


class Counting:
    """Passes embed() through and counts the texts, so a test can assert that a reload embedded nothing."""

    def __init__(self, inner):
        self.inner, self.texts = inner, 0
        self.name, self.dim = inner.name, inner.dim

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)


@pytest.fixture(scope="session")
def minilm():
    return MiniLMEmbedder()


@pytest.fixture
def make(tmp_path):
    """make(**options) → a MemoryManager on tmp_path/mem with HashEmbedder unless embedder= is given; closed after."""
    made = []

    def factory(directory=tmp_path / "mem", embedder=None, **options):
        options.setdefault("max_entries", 10_000)
        options.setdefault("max_bytes", 10 << 20)
        options.setdefault("ram_entries", 100_000)
        manager = MemoryManager(directory, embedder or HashEmbedder(), **options)
        made.append(manager)
        return manager

    yield factory
    for manager in made:
        manager.close()
