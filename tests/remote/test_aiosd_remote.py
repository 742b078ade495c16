"""aiosd with the remote engine (--engine remote) over real llama.cpp servers, used by agents through the SDK: answers
match the server's own, the kernel's priority order holds when there are more calls than replica slots (and a
preemption is a cancel and resubmit that loses nothing), and when a replica is killed mid-run its calls finish on the
other."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from bench.llama_server import LlamaServer
from bench.remote_bench import RemoteKernel
from sdk import connect
from tests.kernel.harness import wait_until

OPTIONS = {"scheduler": "priority", "sched-opt": "aging_steps=1000000"}  # no aging: the order is the priority's


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    with LlamaServer(tmp_path_factory.mktemp("victim") / "victim.log", slots=2) as server:
        yield server


@pytest.fixture(scope="module")
def pool(tmp_path_factory, victim, pair):
    """aiosd over two replicas: the victim (killed by the last test) and a survivor."""
    workdir = tmp_path_factory.mktemp("aiosd-pool")
    with RemoteKernel(
        f"ipc://{workdir}/kernel.sock", [victim.url, pair[1].url], OPTIONS, workdir / "aiosd.log"
    ) as kernel:
        yield kernel


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory, pair):
    """aiosd over one replica, one call in flight (--max-batch bounds the replica's slots)."""
    workdir = tmp_path_factory.mktemp("aiosd-one")
    with RemoteKernel(
        f"ipc://{workdir}/kernel.sock", [pair[0].url], {**OPTIONS, "max-batch": 1}, workdir / "aiosd.log"
    ) as kernel:
        yield kernel


def _server_text(url: str, prompt: str, max_tokens: int) -> str:
    body = json.dumps(
        {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "top_k": -1, "min_p": 0.0}
    ).encode()
    request = urllib.request.Request(f"{url}/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.load(resp)["choices"][0]["text"]


def test_agents_are_served_end_to_end_through_the_kernel(pool, pair):
    prompt = "The capital of France is"
    with connect(pool.address, name="checker") as k:
        assert k.generate(prompt, max_tokens=12, ignore_eos=True) == _server_text(pair[1].url, prompt, 12)
        streamed = "".join(k.stream([{"role": "user", "content": "Say hello."}], max_tokens=12))
        assert streamed
    answers = {}

    def agent(i: int) -> None:
        with connect(pool.address, name=f"agent{i}") as k:
            answers[i] = k.chat([{"role": "user", "content": f"Name a colour ({i})."}], max_tokens=10, full=True)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(6)]  # more than the 4 slots
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers) == list(range(6))
    assert all(a.text and 0 < a.usage.completion_tokens <= 10 for a in answers.values())


def _call(address: str, name: str, priority: int, max_tokens: int, order: list, results: dict) -> threading.Thread:
    def run() -> None:
        with connect(address, name=name, priority=priority) as k:
            results[name] = k.generate(f"Tell me about {name}.", max_tokens=max_tokens, ignore_eos=True, full=True)
        order.append(name)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_calls_beyond_the_replica_slots_wait_in_the_kernel_and_run_in_priority_order(one_slot):
    order, results = [], {}
    with connect(one_slot.address, name="watcher") as watcher:
        threads = [_call(one_slot.address, "first", 0, 24, order, results)]  # outranks all: never preempted
        wait_until(lambda: watcher.stats()["requests_running"] == 1, timeout_s=60, what="the first call running")
        for n, (name, priority) in enumerate((("p1", -5), ("p3", -3), ("p5", -1)), start=1):  # lowest arrives first
            threads.append(_call(one_slot.address, name, priority, 4, order, results))
            wait_until(lambda n=n: watcher.stats()["requests_waiting"] == n, timeout_s=60, what=f"{name} queued")
        for t in threads:
            t.join(timeout=180)
    assert order == ["first", "p5", "p3", "p1"]


def test_a_preempted_call_is_resubmitted_with_its_output_and_loses_nothing(one_slot):
    order, results = [], {}
    with connect(one_slot.address, name="watcher") as watcher:
        before = watcher.stats()
        low = _call(one_slot.address, "low", -5, 60, order, results)
        wait_until(lambda: watcher.stats()["requests_running"] == 1, timeout_s=60, what="the low call running")
        high = _call(one_slot.address, "high", 0, 4, order, results)
        for t in (low, high):
            t.join(timeout=180)
        stats = watcher.stats()
    assert order == ["high", "low"]
    assert results["low"].usage.completion_tokens == 60 and results["low"].finish_reason == "length"
    assert stats["preemptions"] > before["preemptions"] and stats["recomputed_tokens"] > before["recomputed_tokens"]


def test_a_replica_killed_mid_run_has_its_calls_finish_on_the_other(pool, victim):
    """Runs last in this module: it kills the pool's victim."""
    progress = {i: threading.Event() for i in range(4)}
    results, errors = {}, []

    def agent(i: int) -> None:
        try:
            with connect(pool.address, name=f"worker{i}") as k:
                pieces = []
                for piece in k.stream(
                    prompt=f"Chapter {i}. It was a dark and stormy night;", max_tokens=48, ignore_eos=True
                ):
                    pieces.append(piece)
                    if len(pieces) >= 3:
                        progress[i].set()
                results[i] = "".join(pieces)
        except Exception as error:  # reported below: a thread's exception would otherwise vanish
            errors.append(error)
            progress[i].set()

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(4)]  # 2 per replica
    for t in threads:
        t.start()
    for i in range(4):
        assert progress[i].wait(timeout=120), f"worker{i} got no tokens"
    victim.kill()
    for t in threads:
        t.join(timeout=180)
    assert not errors and sorted(results) == [0, 1, 2, 3]
    with connect(pool.address, name="after") as k:
        full = k.generate("One more call after the failover:", max_tokens=8, ignore_eos=True, full=True)
    assert full.usage.completion_tokens == 8
    log = pool.log_path.read_text()
    assert f"replica {victim.url} is down" in log and "resumes on" in log
