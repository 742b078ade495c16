"""The one error a model loader raises (re-exported by model_config.py, where callers import it from).

An EngineError (a ValueError), so aiosd's start-up reports it as one line and exits non-zero like any engine that
cannot start, rather than with a traceback."""

from __future__ import annotations

from kernel.engine.core.interface import EngineError


class ModelLoadError(EngineError):
    """A model file or folder that cannot be loaded: missing, corrupt, or a model whose computation we do not run
    exactly (an unknown architecture, rope scaling, tensor or key that changes the math), named in the message."""
