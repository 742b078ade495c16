"""The gateway through the official openai client (sync, async, streaming) against a real aiosd: answers equal the
SDK's for the same call, options reach the kernel, errors are the right HTTP statuses, keys are agents, and a client
that leaves cancels its call in the kernel."""

import asyncio
import json
import time

import httpx2
import openai
import pytest

import sdk
from ipc import runtime_dir
from ipc.address import admin_token_path
from kernel.gateway import keys
from kernel.gateway.process import GatewayProcess

PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4,",
    "def fibonacci(n):",
    "Roses are red,",
    "The opposite of hot is",
    "Monday, Tuesday,",
    "import numpy as",
    "Once upon a time",
]
COUNTING = "1, 2, 3, 4, 5,"  # greedy raw completion runs to max_tokens (no EOS for hundreds of tokens)
WAIT_S = 120.0


def client(stack, agent="alice", **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url, api_key=stack.keys[agent], max_retries=0, timeout=WAIT_S, **kwargs)


def chat_of(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def reference(stack):
    """The SDK's own connection to the same kernel: the baseline every gateway answer is compared with."""
    with sdk.connect(stack.kernel.address, name="reference") as kernel:
        yield kernel


@pytest.fixture(scope="module")
def model(reference):
    return reference.model


def held_calls(kernel) -> int:
    stats = kernel.stats()
    return stats["requests_waiting"] + stats["requests_running"] + stats["requests_preempted"]


def wait_until_no_held_calls(kernel) -> None:
    deadline = time.monotonic() + WAIT_S
    while held_calls(kernel):
        assert time.monotonic() < deadline, "the kernel still holds the call"
        time.sleep(0.05)


def test_models_lists_the_kernels_model(stack, model):
    models = client(stack).models.list()
    assert [m.id for m in models.data] == [model]
    assert client(stack).models.retrieve(model).id == model


def test_chat_equals_the_sdk_and_carries_usage(stack, reference, model):
    messages = chat_of("Name three colors.")
    expected = reference.chat(messages, max_tokens=12, full=True)
    reply = client(stack).chat.completions.create(model=model, messages=messages, max_tokens=12)
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == {"eos": "stop", "length": "length"}[expected.finish_reason]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        expected.usage.prompt_tokens,
        expected.usage.completion_tokens,
    )
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_equals_the_unstreamed_one_and_ends_with_usage(stack, model):
    messages = chat_of("Name three animals.")
    whole = client(stack).chat.completions.create(model=model, messages=messages, max_tokens=12)
    chunks = list(
        client(stack).chat.completions.create(
            model=model, messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([d for d in deltas if d]) > 1
    assert "".join(deltas) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_streamed_and_not_equal_the_sdks_generate(stack, reference, model):
    expected = reference.generate(PROMPTS[0], max_tokens=8)
    reply = client(stack).completions.create(model=model, prompt=PROMPTS[0], max_tokens=8)
    streamed = client(stack).completions.create(model=model, prompt=[PROMPTS[0]], max_tokens=8, stream=True)
    assert reply.choices[0].text == expected
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected


def test_sampling_options_reach_the_kernel(stack, reference, model):
    options = {"temperature": 0.9, "top_p": 0.8, "seed": 1234, "max_tokens": 12}
    expected = reference.generate(PROMPTS[7], **options)
    assert client(stack).completions.create(model=model, prompt=PROMPTS[7], **options).choices[0].text == expected
    greedy = reference.generate(COUNTING, max_tokens=12)
    stop = greedy.strip().split()[2]  # a word the greedy answer has: generation stops before it
    reply = client(stack).completions.create(model=model, prompt=COUNTING, max_tokens=12, stop=[stop])
    assert reply.choices[0].text == reference.generate(COUNTING, max_tokens=12, stop=(stop,))
    assert reply.choices[0].finish_reason == "stop" and stop not in reply.choices[0].text


def test_tools_come_back_as_the_kernel_returns_them(stack, reference, model):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "calculate",
                "description": "Evaluate an arithmetic expression",
                "parameters": {
                    "type": "object",
                    "properties": {"expression": {"type": "string"}},
                    "required": ["expression"],
                },
            },
        }
    ]
    messages = chat_of("What is 17 * 23?")
    expected = reference.chat(messages, tools=tools, tool_choice="required", max_tokens=40, full=True)
    reply = client(stack).chat.completions.create(
        model=model, messages=messages, tools=tools, tool_choice="required", max_tokens=40
    )
    message = reply.choices[0].message
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        (c.name, c.arguments) for c in expected.tool_calls
    ]
    assert all(c.id and c.type == "function" for c in message.tool_calls or [])
    assert reply.choices[0].finish_reason == ("tool_calls" if expected.tool_calls else "length")
    assert (message.content or "") == expected.text
    streamed = list(
        client(stack).chat.completions.create(
            model=model, messages=messages, tools=tools, tool_choice="required", max_tokens=40, stream=True
        )
    )
    # streamed as generated (id and name first, then argument fragments): joined per index, the kernel's calls
    joined: dict[int, list] = {}
    for call in (call for c in streamed for call in (c.choices[0].delta.tool_calls or [])):
        entry = joined.setdefault(call.index, [call.function.name, ""])
        entry[1] += call.function.arguments or ""
    assert [(name, json.loads(arguments)) for name, arguments in joined.values()] == [
        (c.name, json.loads(c.arguments)) for c in expected.tool_calls
    ]
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected.text


def test_async_clients_streaming_at_once_each_get_their_own_answer(stack, reference, model):
    expected = [reference.generate(p, max_tokens=10) for p in PROMPTS]
    assert len(set(expected)) == len(PROMPTS)

    async def main():
        agents = ["alice", "bob", "flood"]
        clients = [
            openai.AsyncOpenAI(
                base_url=stack.gateway.url, api_key=stack.keys[agents[i % 3]], max_retries=0, timeout=WAIT_S
            )
            for i in range(len(PROMPTS))
        ]

        async def one(c, prompt):
            stream = await c.completions.create(model=model, prompt=prompt, max_tokens=10, stream=True)
            return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])

        try:
            return await asyncio.gather(*(one(c, p) for c, p in zip(clients, PROMPTS)))
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    assert asyncio.run(main()) == expected


def test_errors_are_http_statuses_with_openai_bodies(stack, model):
    good = {"model": model, "messages": chat_of("hi"), "max_tokens": 1}
    cases = [
        (
            openai.AuthenticationError,
            401,
            lambda: openai.OpenAI(
                base_url=stack.gateway.url, api_key="sk-aios-nope", max_retries=0
            ).chat.completions.create(**good),
        ),
        (openai.NotFoundError, 404, lambda: client(stack).chat.completions.create(**{**good, "model": "gpt-4"})),
        (openai.BadRequestError, 400, lambda: client(stack).chat.completions.create(**{**good, "top_p": 7})),
        (openai.BadRequestError, 400, lambda: client(stack).chat.completions.create(**{**good, "messages": []})),
        (
            openai.BadRequestError,  # what OpenAI answers: 400 with code context_length_exceeded
            400,
            lambda: client(stack).chat.completions.create(**{**good, "max_tokens": 100_000}),
        ),
        (
            openai.RateLimitError,
            429,
            lambda: client(stack, "flood").chat.completions.create(**{**good, "messages": chat_of("hello " * 1500)}),
        ),
        (
            openai.PermissionDeniedError,
            403,
            lambda: client(stack).chat.completions.create(**good, extra_headers={"x-aios-priority": "6"}),
        ),
        (
            openai.BadRequestError,
            400,
            lambda: client(stack).chat.completions.create(**good, extra_headers={"x-aios-priority": "high"}),
        ),
    ]
    for kind, status, call in cases:
        with pytest.raises(kind) as raised:
            call()
        assert raised.value.status_code == status
        assert set(raised.value.body) >= {"message", "type", "code"}
    with pytest.raises(openai.BadRequestError) as too_long:  # the code OpenAI clients look for, not a message
        client(stack).chat.completions.create(**{**good, "max_tokens": 100_000})
    assert too_long.value.code == "context_length_exceeded"
    # within the allowance, a priority is fine
    assert client(stack).chat.completions.create(**good, extra_headers={"x-aios-priority": "5"}).choices


def test_no_kernel_is_503(tmp_path, model):
    with GatewayProcess(f"ipc://{tmp_path}/nobody.sock", None, tmp_path / "gateway.log") as orphan:
        with pytest.raises(openai.APIStatusError) as raised:
            openai.OpenAI(base_url=orphan.url, api_key="any", max_retries=0).chat.completions.create(
                model=model, messages=chat_of("hi"), max_tokens=1
            )
        assert raised.value.status_code == 503 and raised.value.body["code"] == "kernel_unavailable"


def test_each_key_is_its_own_agent_and_revoked_keys_stop_at_once(stack, model):
    client(stack, "bob").chat.completions.create(model=model, messages=chat_of("hi"), max_tokens=1)
    admin = runtime_dir.read_secret(admin_token_path(stack.kernel.address)).decode()
    with sdk.connect(stack.kernel.address, name="operator", token=admin) as operator:
        agents = {a.name: a for a in operator.ps()}
    assert agents["bob"].priority == 2 and agents["alice"].priority == 0
    assert agents["bob"].pid == agents["alice"].pid == stack.gateway.pid

    # a key with grants: the gateway mints the agent's grant token with the operator's admin token
    granted = keys.add(stack.keys_path, "granted", grants=["proc.view"])
    assert (
        openai.OpenAI(base_url=stack.gateway.url, api_key=granted, max_retries=0)
        .chat.completions.create(model=model, messages=chat_of("hi"), max_tokens=1)
        .choices
    )

    late = keys.add(stack.keys_path, "late")
    late_client = openai.OpenAI(base_url=stack.gateway.url, api_key=late, max_retries=0)
    assert late_client.models.list().data
    entry = next(e for e in keys.load(stack.keys_path) if e.agent == "late")
    assert keys.revoke(stack.keys_path, entry.id)
    with pytest.raises(openai.AuthenticationError):
        late_client.models.list()


def test_a_client_leaving_mid_stream_cancels_its_call_in_the_kernel(stack, reference, model):
    """Greedy counting would run to all 1000 tokens: fewer generated means the call was cancelled."""
    wait_until_no_held_calls(reference)
    before = reference.stats()["tokens_generated"]
    stream = client(stack).completions.create(model=model, prompt=COUNTING, max_tokens=1000, stream=True)
    next(iter(stream))
    stream.close()
    wait_until_no_held_calls(reference)
    assert reference.stats()["tokens_generated"] - before < 1000


def test_a_client_giving_up_on_an_unstreamed_call_cancels_it(stack, reference, model):
    wait_until_no_held_calls(reference)
    before = reference.stats()["tokens_generated"]
    with httpx2.Client(timeout=httpx2.Timeout(WAIT_S, read=0.5)) as http:
        with pytest.raises(httpx2.ReadTimeout):
            http.post(
                f"{stack.gateway.url}/completions",
                headers={"authorization": f"Bearer {stack.keys['alice']}"},
                json={"model": model, "prompt": COUNTING, "max_tokens": 1000},
            )
    wait_until_no_held_calls(reference)
    assert reference.stats()["tokens_generated"] - before < 1000
    assert stack.gateway.alive()
