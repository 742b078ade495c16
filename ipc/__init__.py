"""The AIOS syscall protocol: typed messages (messages.py), their validation (schema.py), framing (codec.py)."""
