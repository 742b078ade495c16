"""LLM engines behind one interface (interface.py): the torch CPU engine and the ExLlamaV2 GPU engine."""
import os

# OpenMP threads that spin while waiting for each other collapse (10x slower steps) when agent processes share the cores
# with the engine; sleeping waits cost little. Read once when torch loads its OpenMP runtime, so set before any torch
# import: entry points that import torch first should set it themselves.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
