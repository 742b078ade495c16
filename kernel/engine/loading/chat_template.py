"""A model's chat template (jinja, as shipped in GGUF metadata and tokenizer_config.json), rendered in a sandbox.

The environment is the one Hugging Face transformers renders templates in (an immutable sandbox with trim_blocks and
lstrip_blocks, loop controls, a tojson filter that keeps non-ASCII text and takes indent/separators, raise_exception,
strftime_now, dict and namespace), so a template renders here exactly as `apply_chat_template` renders it there: the
model saw that text in training. Templates with a `{% generation %}` block (assistant masks for training) are not
supported: none of the chat templates of the families we load uses one.

render(messages, tools): tools (OpenAI's [{"type": "function", "function": {...}}]) go to the template as `tools`,
None when there are none (as transformers passes them). takes_tools says whether the template reads `tools` at all:
a template that does not (SmolLM2's ChatML) gets its tools from the generic tool prompt instead (structured/).
Messages are checked at this boundary: a string role; a string content, except an assistant message carrying
tool_calls (a list), whose content may be None.
"""

from __future__ import annotations

import json
from datetime import datetime

import jinja2.ext
from jinja2 import TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from kernel.engine.core.interface import EngineError


def _raise_exception(message: str):
    raise TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # jinja's own tojson escapes HTML characters ('<' → \u003c): templates expect plain json.dumps, as in transformers
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict(...)` for templates, without exposing the type itself (attribute access on it could reach internals)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(Namespace):
    """jinja's namespace(), refusing underscore names (no reach into CPython internals through a namespace)."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes ({name!r})")


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(), namespace=_TemplateNamespace
    )
    return env


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        env = _environment()
        self.source = source
        try:
            self._template = env.from_string(source)
            variables = meta.find_undeclared_variables(env.parse(source))
        except TemplateError as exc:
            raise EngineError(f"the model's chat template does not parse: {exc}") from exc
        self.takes_tools = "tools" in variables or "custom_tools" in variables
        self._specials = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
        if not isinstance(messages, list) or not messages:
            raise EngineError("messages must be a non-empty list")
        for m in messages:
            _check_message(m)
        if tools is not None and not isinstance(tools, list):
            raise EngineError("tools must be a list")
        try:
            return self._template.render(
                messages=messages,
                tools=tools or None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self._specials,
            )
        except TemplateError as exc:
            raise EngineError(f"chat template rejected the messages: {exc}") from exc


def _check_message(m) -> None:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise EngineError(f"each message needs a string 'role', got {m!r}")
    content, calls = m.get("content"), m.get("tool_calls")
    if calls is not None and (m["role"] != "assistant" or not isinstance(calls, list)):
        raise EngineError(f"only an assistant message carries tool_calls, as a list: got {m!r}")
    if not isinstance(content, str) and not (content is None and calls):
        raise EngineError(f"each message needs a string 'content', got {m!r}")
