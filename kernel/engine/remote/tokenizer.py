"""Tokenization for a remote engine: the kernel's own tokenizer for the same model, checked against the servers'.

Decision: the kernel tokenizes locally, and sends token ids. Its preprocessor thread tokenizes and renders chat
templates for every call, and its scheduler counts tokens before anything is sent; a round trip to a server's
/tokenize per call (llama.cpp and vLLM have one; not every OpenAI-compatible server does) would put a replica on the
path of every admission, and a dead replica would stop tokenization. Sending ids also keeps the rendered chat turn and
its control tokens exactly as the kernel built them.

The price: the model's tokenizer must be readable here (a GGUF file or a Hugging Face folder: --model; default, the
file the first replica reports serving if it exists on this machine, as with a llama.cpp server started on the same
host, else the bundled SmolLM2 GGUF). So a mismatch cannot pass silently, load() compares a probe text's ids with
the first replica's /tokenize when it has one, and refuses to start on a difference.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kernel.engine.core.interface import EngineError
from kernel.engine.loading.model_config import ModelLoadError
from kernel.engine.loading.tokenizer import TextTokenizer
from kernel.engine.remote.http import Endpoint, HTTPFailure

log = logging.getLogger("aiosd.remote")

PROBE = "Tokenizer check: Ünïcode, digits 12345, <|im_start|> and  double  spaces.\n"


def load_tokenizer(model: str | None, served_model: str) -> tuple[TextTokenizer, Path]:
    """The tokenizer of model (a path), else of the served model's file if it is local, else the bundled default."""
    from kernel.engine.loading.checkpoint import default_model_path

    if model is not None:
        path = Path(model)
    elif Path(served_model).is_file() or (Path(served_model) / "tokenizer.json").is_file():
        path = Path(served_model)
    else:
        path = default_model_path()
    try:
        if path.is_dir():
            from kernel.engine.loading.safetensors_loader import eos_ids_from_hf, read_hf_config

            return TextTokenizer.from_folder(path, eos_ids_from_hf(read_hf_config(path))), path
        from kernel.engine.loading.gguf_loader import gguf_metadata, read_gguf

        return TextTokenizer.from_gguf_metadata(gguf_metadata(read_gguf(path))), path
    except (ModelLoadError, OSError, KeyError) as error:
        raise EngineError(f"cannot load the tokenizer of {path} for the remote engine: {error}") from None


def check_against(tokenizer: TextTokenizer, endpoint: Endpoint) -> bool:
    """EngineError if the server tokenizes PROBE differently; False if it has no /tokenize to compare with."""
    body = {"content": PROBE, "prompt": PROBE, "add_special": False, "add_special_tokens": False, "parse_special": True}
    try:
        answer = endpoint.request_json("POST", "/tokenize", body)
    except HTTPFailure as error:
        log.warning("cannot check the tokenizer against %s (%s): token ids are trusted to match", endpoint.url, error)
        return False
    theirs = answer.get("tokens") if isinstance(answer, dict) else None
    ours = tokenizer.encode(PROBE)
    if theirs != ours:
        raise EngineError(
            f"the kernel's tokenizer does not match {endpoint.url}'s (probe text: {len(ours)} ids here, "
            f"{len(theirs) if isinstance(theirs, list) else '?'} there): pass --model with the served "
            f"model's GGUF file or tokenizer folder"
        )
    return True
