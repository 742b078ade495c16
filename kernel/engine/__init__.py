"""LLM engines behind one interface (interface.py): the torch CPU engine and the ExLlamaV2 GPU engine."""

import os

# Both are read once, when torch loads its runtimes or first allocates, so they are set before any torch import: entry
# points that import torch first should set them themselves.
# How long an idle OpenMP thread spins before it sleeps, unless the user chose (OMP_WAIT_POLICY or GOMP_SPINCOUNT).
# A decode step is ~300 ops, each its own parallel region a few microseconds after the last: threads that sleep at
# once pay a futex wake-up per region (2x slower batch-1 decode, measured), threads that spin forever collapse (10x
# slower steps) when agent processes share the cores with the engine. A bounded spin covers the gaps between one step's
# ops and yields the cores between steps.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "100000"
# Large tensors (the weights, the KV cache) on transparent huge pages: a decode step streams every weight once, and with
# 4 KiB pages its TLB misses cost about a tenth of a batch-1 step.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
