"""aiosd: the AIOS kernel — one LLM engine, a scheduler, and the managers agents reach through syscalls."""
