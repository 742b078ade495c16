"""The kernel's memory manager: per-space semantic memory (embeddings, faiss, SQLite). See manager.py."""

from kernel.memory.manager import MemoryManager
from kernel.memory.records import Hit, Record

__all__ = ["MemoryManager", "Hit", "Record"]
