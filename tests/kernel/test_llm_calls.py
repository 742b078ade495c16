"""LLM syscalls through the real sockets, I/O thread, loop and context manager, on the fake engine."""

import threading

import pytest

from kernel.scheduler.fifo import FifoScheduler
from kernel.scheduler.registry import make_scheduler
from sdk import KernelError, connect
from tests.kernel.fake_engine import FakeEngine, expected_output
from tests.kernel.harness import InProcessKernel, wait_until


def test_generate_returns_the_engine_output_with_usage(kernel):
    with connect(kernel.address, name="t") as k:
        completion = k.generate("hello", max_tokens=6, full=True)
    assert completion.text == expected_output("hello", 6)
    assert (completion.finish_reason, completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        "length",
        5,
        6,
    )
    assert 0 <= completion.timing.queue_s <= completion.timing.ttft_s <= completion.timing.total_s


def test_chat_applies_the_chat_template(kernel):
    with connect(kernel.address) as k:
        assert k.chat([{"role": "user", "content": "hi"}], max_tokens=4) == expected_output("<user>hi<assistant>", 4)


def test_stream_yields_deltas_that_add_up_to_the_answer(kernel):
    with connect(kernel.address) as k:
        deltas = list(k.stream(prompt="abc", max_tokens=9))
    assert len(deltas) == 9 and "".join(deltas) == expected_output("abc", 9)


def test_concurrent_agents_each_get_their_own_answer(kernel):
    prompts = [f"question {i}" for i in range(6)]
    answers = {}

    def agent(prompt):
        with connect(kernel.address, name=prompt) as k:  # one connection per thread
            answers[prompt] = k.generate(prompt, max_tokens=20)

    threads = [threading.Thread(target=agent, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {p: expected_output(p, 20) for p in prompts}


@pytest.mark.parametrize(
    "options, code",
    [
        ({"max_tokens": 5000}, "context_length_exceeded"),  # prompt + max_tokens over the 4096-token fake budget
        ({"max_tokens": 0}, "bad_request"),
        ({"temperature": -1.0}, "bad_request"),
        ({"stop": [""]}, "bad_request"),
        ({"predicted_tokens": 0}, "bad_request"),
    ],
)
def test_impossible_requests_are_refused_and_the_kernel_keeps_serving(kernel, options, code):
    with connect(kernel.address) as k:
        with pytest.raises(KernelError) as caught:
            k.generate("x", **options)
        assert caught.value.code == code
        assert k.generate("x", max_tokens=2) == expected_output("x", 2)


def test_empty_prompt_is_refused(kernel):
    with connect(kernel.address) as k, pytest.raises(KernelError, match="empty"):
        k.generate("")


def test_round_robin_preempts_and_resumes_exactly(tmp_path):
    """One batch slot, a 4-token quantum: three requests take turns through snapshots and still answer exactly."""
    engine = FakeEngine(max_batch=1)
    with InProcessKernel(f"ipc://{tmp_path}/k.sock", engine, make_scheduler("rr", quantum=4)) as kernel:
        prompts = ["alpha", "beta", "gamma"]
        answers = {}

        def agent(prompt):
            with connect(kernel.address, name=prompt) as k:
                answers[prompt] = k.generate(prompt, max_tokens=30)

        threads = [threading.Thread(target=agent, args=(p,)) for p in prompts]
        kernel.engine.stalled = True  # let all three arrive before any can finish
        for thread in threads:
            thread.start()
        with connect(kernel.address) as k:
            wait_until(lambda: len(in_flight(k)) == 3, what="three requests in the kernel")
            kernel.engine.stalled = False
            for thread in threads:
                thread.join(60)
            stats = k.stats()
    assert answers == {p: expected_output(p, 30) for p in prompts}
    assert stats["preemptions"] > 0 and stats["resumes"] == stats["preemptions"]


def in_flight(k):
    """Requests the kernel holds (not done), in agent order."""
    return [r for a in k.ps() for r in a.requests if r.state != "done"]


class RecordingScheduler(FifoScheduler):
    def __init__(self):
        self.views = []

    def plan(self, running, waiting, capacity, now):
        self.views.extend(running + waiting)
        return super().plan(running, waiting, capacity, now)


def test_scheduler_sees_true_request_views(tmp_path):
    scheduler = RecordingScheduler()
    with InProcessKernel(f"ipc://{tmp_path}/k.sock", FakeEngine(max_batch=1), scheduler) as kernel:
        first, second = connect(kernel.address, priority=-8), connect(kernel.address)
        kernel.engine.stalled = True  # "first" holds the only batch slot until "second" waits behind it
        calls = [
            threading.Thread(target=first.generate, args=("first",), kwargs={"max_tokens": 40, "priority": 3}),
            threading.Thread(target=second.generate, args=("second",), kwargs={"max_tokens": 3}),
        ]
        with connect(kernel.address) as observer:
            calls[0].start()
            wait_until(lambda: [r.state for r in in_flight(observer)] == ["running"], what="first request running")
            calls[1].start()
            wait_until(
                lambda: [r.state for r in in_flight(observer)] == ["running", "waiting"], what="second request waiting"
            )
        kernel.engine.stalled = False
        for call in calls:
            call.join(60)
        first.close(), second.close()
    mine = [v for v in scheduler.views if v.agent_id == first.agent_id]
    assert mine and all(v.priority == -5 and v.prompt_tokens == 5 and v.max_tokens == 40 for v in mine)
    running = [v for v in mine if v.state.value == "running"]
    assert running and all(v.slice_tokens == v.output_tokens for v in running)
    assert all(v.agent_service == v.prompt_tokens + v.output_tokens for v in running)
    assert [v.output_tokens for v in running] == sorted(v.output_tokens for v in running)
