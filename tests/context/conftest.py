import pytest


@pytest.fixture(scope="package")
def engine():
    """The real torch engine on the default model, float32 so restored and uninterrupted runs match bit for bit."""
    from kernel.engine.factory import load_engine
    return load_engine(dtype="float32", kv_budget_tokens=1024, max_batch=4, prefill_chunk=256)
