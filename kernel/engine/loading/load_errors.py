"""The one error a model loader raises (re-exported by model_config.py, where callers import it from)."""
from __future__ import annotations


class ModelLoadError(ValueError):
    """A model file or folder that cannot be loaded: missing, corrupt, or a model whose computation we do not run
    exactly (an unknown architecture, rope scaling, tensor or key that changes the math), named in the message."""
