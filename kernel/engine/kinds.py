"""The kinds of engine, one name each: the name of the folder that holds it (kernel/engine/cpu, gpu, remote).

EngineKind.CPU: the torch engine on this machine's CPU; GPU: the ExLlamaV2 engine on a CUDA GPU; REMOTE: a pool of
OpenAI-compatible servers. factory.load_engine takes one; aiosd's --engine and the bench scripts name one.

parse_engine_kind(text) is the one place a name becomes a kind, at the boundary (the command line): it accepts the kind
names and, as aliases, the older backend names (torch, exllamav2, openai) so existing command lines keep working; any
other text is refused with UnknownEngineKind naming the accepted ones. Nothing past the boundary compares strings.
"""

from __future__ import annotations

import argparse
import enum

from kernel.engine.errors import EngineError


class EngineKind(str, enum.Enum):
    """Which engine; its value is the folder under kernel/engine/ that implements it. A str, so it prints and
    encodes as that name."""

    CPU = "cpu"
    GPU = "gpu"
    REMOTE = "remote"

    def __str__(self) -> str:
        return self.value


# The names the backends went by before the kinds were named after their folders: still accepted on command lines.
ALIASES = {"torch": EngineKind.CPU, "exllamav2": EngineKind.GPU, "openai": EngineKind.REMOTE}

ENGINE_KIND_HELP = (
    "engine kind: cpu (torch on this CPU), gpu (ExLlamaV2 on a CUDA GPU), remote (OpenAI-compatible servers, "
    "see --engine-url); the older names torch, exllamav2 and openai are accepted as aliases of cpu, gpu and remote"
)


class UnknownEngineKind(EngineError, argparse.ArgumentTypeError):
    """A name that is no engine kind. An ArgumentTypeError too, so argparse (type=parse_engine_kind) prints this
    message rather than a generic 'invalid value'."""


def parse_engine_kind(text: str | EngineKind) -> EngineKind:
    """The kind a command line (or a caller) names: a kind name, an alias, or an EngineKind; case and surrounding
    spaces ignored. UnknownEngineKind otherwise."""
    if isinstance(text, EngineKind):
        return text
    if not isinstance(text, str):
        raise UnknownEngineKind(f"an engine kind is a name, got {type(text).__name__}")
    name = text.strip().lower()
    if name in ALIASES:
        return ALIASES[name]
    try:
        return EngineKind(name)
    except ValueError:
        accepted = ", ".join([*(kind.value for kind in EngineKind), *ALIASES])
        raise UnknownEngineKind(f"unknown engine kind {text!r} (expected one of {accepted})") from None
