"""LLM engines behind one interface (interface.py): the torch CPU engine and the ExLlamaV2 GPU engine."""
import os

# Both are read once, when torch loads its runtimes or first allocates, so they are set before any torch import: entry
# points that import torch first should set them themselves.
# OpenMP threads that spin while waiting for each other collapse (10x slower steps) when agent processes share the cores
# with the engine; sleeping waits cost little.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Large tensors (the weights, the KV cache) on transparent huge pages: a decode step streams every weight once, and with
# 4 KiB pages its TLB misses cost about a tenth of a batch-1 step.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
