"""The ExLlamaV2 GPU engine (imports exllamav2 lazily: importing this package needs no GPU)."""
