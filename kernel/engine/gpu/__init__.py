"""The GPU engine: ExLlamaV2 on CUDA (engine.py; imports exllamav2 lazily: importing this package needs no GPU)."""
