"""LLM engines behind one interface (interface.py): the torch CPU engine and the ExLlamaV2 GPU engine."""
