"""On a machine without CUDA or exllamav2 the GPU engine still imports, and loading says clearly what is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from kernel.engine.core.interface import EngineError
from kernel.engine.gpu.engine import ExLlamaV2Engine
from kernel.engine.gpu.exllama_runtime import ExLlamaUnavailable


def test_module_imports_without_loading_exllamav2_or_cuda():
    # A fresh interpreter, so nothing else has imported exllamav2 or initialised CUDA before.
    code = (
        "import sys, torch, kernel.engine.gpu.engine; "
        "assert 'exllamav2' not in sys.modules and 'flash_attn' not in sys.modules; "
        "assert not torch.cuda.is_initialized()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        ExLlamaV2Engine.from_path(tmp_path / "nowhere")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(EngineError, match="config.json"):
        ExLlamaV2Engine.from_path(tmp_path)


def test_no_model_given():
    with pytest.raises(EngineError, match="needs a model folder"):
        ExLlamaV2Engine.from_path(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_loading_says_so(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ExLlamaUnavailable, match="CUDA"):
        ExLlamaV2Engine.from_path(tmp_path)
