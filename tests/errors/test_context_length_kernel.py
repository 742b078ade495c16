"""The context-length rule at its boundaries through a real kernel on the default model: a raw prompt of P tokens
with max_tokens = limit - P is served, one token more (in the prompt or in max_tokens) is refused with
context_length_exceeded, as is a prompt that cannot fit by its characters alone; the kernel keeps serving."""

from __future__ import annotations

import pytest

import sdk
from ipc.errors import ErrorCode
from kernel.launch import KernelProcess
from sdk.errors import KernelError

# a small KV budget makes the context limit the pool (a few hundred tokens), so the boundary is cheap to reach
OPTIONS = {"dtype": "float32", "kv-budget": 256, "max-batch": 4, "arena-mb": 16}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("aiosd")
    with KernelProcess(f"ipc://{workdir}/kernel.sock", OPTIONS, workdir / "aiosd.log") as process:
        with sdk.connect(process.address, name="context") as connection:
            yield connection


def _refusal(call) -> KernelError:
    with pytest.raises(KernelError) as refused:
        call()
    return refused.value


def test_exactly_at_the_limit_is_served_and_one_over_is_context_length_exceeded(kernel):
    stats = kernel.stats()
    limit = min(stats["max_context"], stats["total_slots"])
    prompt = "The quick brown fox jumps over the lazy dog. " * (limit // 16)
    tokens = kernel.generate(prompt, max_tokens=1, full=True).usage.prompt_tokens
    assert limit // 2 < tokens < limit - 1  # a prompt near the limit, leaving a short output

    done = kernel.generate(prompt, max_tokens=limit - tokens, full=True)
    assert done.usage.prompt_tokens + done.usage.completion_tokens <= limit

    over = _refusal(lambda: kernel.generate(prompt, max_tokens=limit - tokens + 1))
    assert over.code == ErrorCode.CONTEXT_LENGTH == "context_length_exceeded"
    assert str(limit) in over.message and over.retry_after_s is None

    longer = prompt + " fox" * 8  # a few tokens more in the prompt instead
    longer_tokens = kernel.generate(longer, max_tokens=1, full=True).usage.prompt_tokens
    assert longer_tokens > tokens
    assert _refusal(lambda: kernel.generate(longer, max_tokens=limit - tokens)).code == ErrorCode.CONTEXT_LENGTH
    assert kernel.generate(prompt, max_tokens=2, full=True).usage.prompt_tokens == tokens  # still serving


def test_a_prompt_that_cannot_fit_by_its_characters_is_refused_before_it_is_tokenized(kernel):
    stats = kernel.stats()
    limit = min(stats["max_context"], stats["total_slots"])
    error = _refusal(lambda: kernel.generate("x" * (limit * 64 + 1), max_tokens=1))
    assert error.code == ErrorCode.CONTEXT_LENGTH
    chat = _refusal(lambda: kernel.chat([{"role": "user", "content": "y" * (limit * 64 + 1)}], max_tokens=1))
    assert chat.code == ErrorCode.CONTEXT_LENGTH
    assert kernel.generate("Hello", max_tokens=1)  # the kernel keeps serving
