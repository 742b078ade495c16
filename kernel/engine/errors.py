"""The engine's errors, and the context-length rule that raises one of them.

Every engine (kernel/engine/cpu, gpu, remote), the engine's shared machinery (kernel/engine/core) and constrained
decoding (kernel/engine/structured) raise these; this module imports nothing of the engine, so each of those packages
can use it without importing the others. kernel/engine/core/interface.py re-exports them for the kernel's callers.

EngineError is a ValueError: a request the engine cannot take. Its two refinements tell the caller what to do about it:
ContextLengthExceeded (the request can never fit: shorten it) and NoCapacity (it fits, not now: retry once capacity
frees). The kernel maps them to ErrorCode values at its boundary (ipc/errors.py); this module knows no wire codes.
"""

from __future__ import annotations


class EngineError(ValueError):
    """A request the engine cannot take (bad sampling values, prompt too long, unknown request id...)."""


class ContextLengthExceeded(EngineError):
    """A request longer than the engine's context: its prompt and the tokens it may generate cannot fit one sequence.
    Retrying cannot help; a shorter prompt or a smaller max_tokens can."""


class NoCapacity(EngineError):
    """A valid request the engine cannot take now (not enough free KV blocks, batch full): the caller may retry it
    once capacity frees; every other EngineError means the request itself is wrong."""


def check_context_length(prompt_tokens: int, max_tokens: int, context: int) -> None:
    """The context-length rule, the one place it is written: a request fits when its prompt and every token it may
    generate fit one sequence, prompt_tokens + max_tokens <= context (exactly at the limit fits: the last token
    sampled needs no KV slot of its own). ContextLengthExceeded, naming the three numbers, otherwise.

    The kernel applies it at admission with the call's max_tokens (kernel/daemon/preprocess.py), so no request
    the engine holds can outgrow its context; the sequence table checks it with max_tokens=1 (room for the next
    token), the invariant it relies on for every sequence, admitted or resumed."""
    if prompt_tokens + max_tokens > context:
        raise ContextLengthExceeded(
            f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the {context}-token context"
        )
