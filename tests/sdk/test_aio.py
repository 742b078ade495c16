"""The asyncio SDK against a real aiosd: many tasks on one loop share one connection and each gets its own answer,
streams match chat, leaving a call early cancels it in the kernel, and a dead kernel fails every pending call."""

import asyncio
import time

import pytest

import sdk
from kernel.launch import KernelProcess
from sdk import AsyncKernel, KernelError, KernelTimeout, KernelUnavailable
from tests.sdk.conftest import KERNEL_OPTIONS

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "def fibonacci(n):", "Roses are red,"]
WAIT_S = 120.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT_S * 2))


async def held_calls(kernel: AsyncKernel) -> int:
    """LLM calls the kernel still holds (waiting, running or preempted), every agent's."""
    stats = await kernel.stats()
    return stats["requests_waiting"] + stats["requests_running"] + stats["requests_preempted"]


async def until_no_held_calls(kernel: AsyncKernel) -> None:
    deadline = time.monotonic() + WAIT_S
    while await held_calls(kernel):
        assert time.monotonic() < deadline, "the kernel still holds the call"
        await asyncio.sleep(0.05)


def test_sixteen_tasks_on_one_loop_each_get_their_own_answer(aiosd):
    with sdk.connect(aiosd.address, name="reference") as sync:
        expected = {p: sync.generate(p, max_tokens=8) for p in PROMPTS}
    assert len(set(expected.values())) == len(PROMPTS)  # distinct answers: a mix-up would show

    async def main():
        async with await sdk.aconnect(aiosd.address, name="many-tasks") as kernel:
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(16)]
            answers = await asyncio.gather(*(kernel.generate(p, max_tokens=8) for p in prompts))
            return prompts, answers

    prompts, answers = run(main())
    assert answers == [expected[p] for p in prompts]


def test_stream_yields_the_same_text_as_chat_and_full_ends_with_the_completion(aiosd):
    messages = [{"role": "user", "content": "Name three colors."}]

    async def main():
        async with await sdk.aconnect(aiosd.address, name="streamer") as kernel:
            said = await kernel.chat(messages, max_tokens=12, full=True)
            deltas = [d async for d in kernel.stream(messages, max_tokens=12)]
            items = [d async for d in kernel.stream(messages, max_tokens=12, full=True)]
            return said, deltas, items

    said, deltas, items = run(main())
    assert len(deltas) > 1 and "".join(deltas) == said.text
    assert items[:-1] == deltas and items[-1].text == said.text and items[-1].usage == said.usage


def test_services_and_process_calls(aiosd):
    async def main():
        async with await sdk.aconnect(aiosd.address, name="services") as kernel:
            await kernel.ping()
            stats = await kernel.stats()
            agents = await kernel.ps()
            return kernel.agent_id, stats, agents

    agent_id, stats, agents = run(main())
    assert "max_context" in stats
    assert [a.agent_id for a in agents] == [agent_id]  # without proc.view an agent sees itself only


def test_leaving_a_stream_early_cancelling_a_task_or_timing_out_cancels_the_call_in_the_kernel(aiosd):
    long = {"max_tokens": 2000, "ignore_eos": True}

    async def main():
        async with await sdk.aconnect(aiosd.address, name="leaver") as kernel:
            async for _ in kernel.stream(prompt="Once upon a time", **long):
                break
            await until_no_held_calls(kernel)

            started = asyncio.Event()

            async def reader():
                async for _ in kernel.stream(prompt="Once upon a time", **long):
                    started.set()

            task = asyncio.create_task(reader())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until_no_held_calls(kernel)

            with pytest.raises(KernelTimeout):
                await kernel.generate("Once upon a time", timeout=0.5, **long)
            await until_no_held_calls(kernel)
            # the late replies of those calls are dropped: the next call gets its own answer
            return await kernel.generate(PROMPTS[0], max_tokens=8)

    with sdk.connect(aiosd.address, name="reference") as sync:
        expected = sync.generate(PROMPTS[0], max_tokens=8)
    assert run(main()) == expected


def test_errors_are_kernel_errors_with_codes(aiosd):
    async def main():
        async with await sdk.aconnect(aiosd.address, name="errors") as kernel:
            with pytest.raises(KernelError) as refused:
                await kernel.generate("hi", max_tokens=1 << 21)  # past the protocol's bound
            with pytest.raises(KernelError) as too_long:
                await kernel.generate("hi", max_tokens=100_000)  # past the context
            with pytest.raises(KernelError) as unknown:  # not its own agent
                await kernel.kill("a999999")
            return refused.value.code, too_long.value.code, unknown.value.code

    assert run(main()) == ("bad_request", "context_length_exceeded", "permission_denied")


def test_no_kernel_at_the_address(tmp_path):
    with pytest.raises(KernelUnavailable):
        run(sdk.aconnect(f"ipc://{tmp_path}/nobody.sock"))


def test_kernel_killed_fails_every_pending_call_then_new_calls_fail_at_once(tmp_path):
    """SIGKILL, so the kernel answers nothing: only the dropped connection can end the calls."""
    kernel_proc = KernelProcess(f"ipc://{tmp_path}/kernel.sock", KERNEL_OPTIONS, tmp_path / "aiosd.log")
    kernel_proc.start()
    try:

        async def main():
            kernel = await sdk.aconnect(kernel_proc.address, name="orphan")
            try:
                started = asyncio.Event()

                async def streamer():
                    async for _ in kernel.stream(prompt="Once upon a time", max_tokens=4000, ignore_eos=True):
                        started.set()

                calls = [asyncio.create_task(streamer())] + [
                    asyncio.create_task(kernel.generate(p, max_tokens=4000, ignore_eos=True)) for p in PROMPTS
                ]
                await started.wait()
                kernel_proc._proc.kill()
                results = await asyncio.gather(*calls, return_exceptions=True)
                with pytest.raises(KernelUnavailable):
                    await kernel.ping()
                return results
            finally:
                await kernel.close()

        results = run(main())
        assert all(isinstance(r, KernelError) and r.code == "disconnected" for r in results), results
    finally:
        kernel_proc.stop()
