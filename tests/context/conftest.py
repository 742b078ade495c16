import itertools
import os

import pytest


@pytest.fixture(scope="package")
def engine():
    """The real torch engine on the default model, float32 so restored and uninterrupted runs match bit for bit."""
    from kernel.engine.factory import load_engine

    return load_engine(dtype="float32", kv_budget_tokens=1024, max_batch=4, prefill_chunk=256)


@pytest.fixture
def manager(engine):
    """make(arena_bytes, **options): a ContextManager on the package's engine, each closed (and the engine left idle)
    when the test ends."""
    from kernel.context.manager import ContextManager

    managers, numbers = [], itertools.count()

    def make(arena_bytes=64 << 20, **options):
        cm = ContextManager(engine, arena_bytes, kernel_id=f"{os.getpid()}.t{next(numbers)}", **options)
        managers.append(cm)
        return cm

    yield make
    for cm in managers:
        cm.close()
    assert not engine.has_work()
