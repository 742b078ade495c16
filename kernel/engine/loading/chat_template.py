"""A model's chat template (jinja, as shipped in GGUF metadata and tokenizer_config.json), rendered in a sandbox."""
from __future__ import annotations

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kernel.engine.core.interface import EngineError


def _raise_exception(message: str):
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        self.source = source
        self._template = env.from_string(source)
        self._specials = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if not isinstance(messages, list) or not messages:
            raise EngineError("messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise EngineError(f"each message needs string 'role' and 'content', got {m!r}")
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **self._specials)
        except TemplateError as exc:
            raise EngineError(f"chat template rejected the messages: {exc}") from exc
