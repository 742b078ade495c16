"""Engine test fixtures: the real SmolLM2 weights (loaded once per session) and a tiny llama the tests build."""

from __future__ import annotations

import pytest
import torch

from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.loading.checkpoint import default_model_path, load_checkpoint
from tests.engine import tiny_llama


@pytest.fixture(scope="session", autouse=True)
def _private_auto_cache(tmp_path_factory):
    """--weights auto caches what it measured per CPU and model: the tests measure afresh, in a folder of their own,
    never reading (or leaving) a user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIOS_CACHE_DIR", str(tmp_path_factory.mktemp("aios-cache")))
        yield


@pytest.fixture(scope="session")
def smollm_checkpoint():
    # float32: argmax ties that bfloat16 rounding creates would make token-identity comparisons meaningless
    return load_checkpoint(None, torch.float32)


@pytest.fixture(scope="session")
def smollm_engine(smollm_checkpoint):
    return TorchEngine(smollm_checkpoint, "float32", kv_budget_tokens=8192, max_batch=8, prefill_chunk=128)


@pytest.fixture
def engine(smollm_engine):
    """The shared engine, with nothing left running after the test."""
    yield smollm_engine
    for req_id in smollm_engine.request_ids():
        smollm_engine.abort(req_id)


@pytest.fixture(scope="session")
def hf_smollm():
    from transformers import AutoModelForCausalLM  # test-only reference

    path = default_model_path()
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return tiny_llama.save_hf_folder(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_folder, tmp_path_factory):
    return tiny_llama.save_gguf(tiny_folder, tmp_path_factory.mktemp("tiny_gguf") / "tiny.gguf")
