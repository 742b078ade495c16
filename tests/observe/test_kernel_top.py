"""kernel.top and kernel.metrics against a real aiosd: what they report matches what the calls returned, a
non-operator is refused, an agent over its token quota gets busy with a retry-after (or quota_exceeded), and what an
agent used outlives it in its principal's totals."""

from __future__ import annotations

import threading

import pytest

from sdk import connect
from sdk.errors import KernelError
from tests.kernel.harness import wait_until
from tests.kernel.raw_agent import RawAgent
from tests.observe.conftest import admin_token

TOP_KEYS = {
    "version", "time", "uptime_s", "model", "scheduler", "steps", "agents_total", "agents", "principals",
    "requests_total", "requests", "queue", "queue_order", "kv", "arena", "tools", "approvals", "spaces", "rates",
}  # fmt: skip


def test_top_reports_the_agents_calls_and_tokens(aiosd):
    with (
        connect(aiosd.address, name="counted") as agent,
        connect(aiosd.address, token=admin_token(aiosd.address)) as op,
    ):
        done = [agent.generate("The capital of France is", max_tokens=8, full=True) for _ in range(2)]
        top = op.top()
        assert TOP_KEYS <= set(top)
        row = next(a for a in top["agents"] if a["agent_id"] == agent.agent_id)
        assert row["name"] == "counted" and row["state"] == "idle" and row["requests"] == 0
        assert row["prompt_tokens"] == sum(c.usage.prompt_tokens for c in done)
        assert row["completion_tokens"] == sum(c.usage.completion_tokens for c in done)
        assert row["calls"] == 2 and row["errors"] == 0
        assert row["quota"]["tokens_per_minute"] is None
        assert top["agents_total"] >= 2 and top["kv"]["blocks_total"] > 0
        assert 0 <= top["kv"]["blocks_used"] <= top["kv"]["blocks_total"]
        assert top["arena"]["bytes_total"] > 0
        principal = next(p for p in top["principals"] if p["principal"] == row["principal"])
        assert principal["completion_tokens"] >= row["completion_tokens"]
        assert top["rates"]["ttft_p50_s"] is not None and top["rates"]["ttft_p50_s"] > 0


def test_top_lists_requests_in_flight_and_the_queue(aiosd):
    """A long call holds the batch while others queue behind it: kernel.top names them, bounded by its limit."""
    address = aiosd.address
    with connect(address, token=admin_token(address)) as op:
        errors = []

        def call(n: int) -> None:
            try:
                with connect(address, name=f"queued-{n}") as k:
                    k.generate("Count slowly:", max_tokens=24, ignore_eos=True)
            except KernelError as error:  # pragma: no cover - the assertion below names it
                errors.append(error)

        threads = [threading.Thread(target=call, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        seen = wait_until(lambda: (top := op.top(limit=2))["requests_total"] >= 2 and top, what="calls in flight")
        assert len(seen["requests"]) <= 2 and len(seen["agents"]) <= 2
        for request in seen["requests"]:
            assert request["state"] in ("waiting", "running", "preempted")
            assert request["max_tokens"] == 24 and request["prompt_tokens"] > 0
            assert 0 <= request["generated_tokens"] <= 24 and request["age_s"] >= request["waiting_s"] >= 0
        full = op.top()
        waiting = {r["request_id"] for r in full["requests"] if r["state"] in ("waiting", "preempted")}
        assert set(full["queue"]) == waiting
        assert full["rates"]["queue_length"] == len(waiting)
        for t in threads:
            t.join(timeout=300)
        assert not errors


def test_non_operators_are_refused(aiosd):
    with connect(aiosd.address, name="nosy") as agent:
        for call in (agent.top, agent.metrics):
            with pytest.raises(KernelError) as refused:
                call()
            assert refused.value.code == "permission_denied"


def test_the_sdk_asks_for_lower_quotas_at_hello(aiosd):
    with connect(aiosd.address, name="sdk-metered", tokens_per_minute=40, max_tokens_total=1000) as agent:
        agent.generate("Hello", max_tokens=30, ignore_eos=True)  # most of the 40-token bucket
        with pytest.raises(KernelError) as refused:
            agent.generate("Hello", max_tokens=30, ignore_eos=True)
        assert refused.value.code == "busy"
        assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 0


def test_an_agent_over_its_tokens_per_minute_gets_busy_with_retry_after(aiosd):
    raw = RawAgent(aiosd.address)
    try:
        reply = raw.call("hello", "h", {"name": "metered", "tokens_per_minute": 40})
        assert reply["type"] == "result", reply
        first = raw.call("llm.generate", 1, {"prompt": "Hello", "max_tokens": 30, "ignore_eos": True})
        assert first["type"] == "result", first
        second = raw.call("llm.generate", 2, {"prompt": "Hello", "max_tokens": 30})
        assert second["type"] == "error" and second["body"]["code"] == "busy", second
        assert second["body"]["retry_after_s"] > 0
        with connect(aiosd.address, token=admin_token(aiosd.address)) as op:
            top = op.top()
        row = next(a for a in top["agents"] if a["name"] == "metered")
        assert row["quota"]["tokens_per_minute"] == 40 and row["quota"]["minute_left"] < 40
        assert row["errors"] == 1 and row["calls"] == 1
    finally:
        raw.close()


def test_an_agent_past_its_total_quota_gets_quota_exceeded(aiosd):
    raw = RawAgent(aiosd.address)
    try:
        assert raw.call("hello", "h", {"name": "capped", "max_tokens_total": 40})["type"] == "result"
        first = raw.call("llm.generate", 1, {"prompt": "Hello", "max_tokens": 20, "ignore_eos": True})
        assert first["type"] == "result", first
        used = first["body"]["usage"]["prompt_tokens"] + first["body"]["usage"]["completion_tokens"]
        second = raw.call("llm.generate", 2, {"prompt": "Hello", "max_tokens": 40 - used + 1})
        assert second["type"] == "error" and second["body"]["code"] == "quota_exceeded", second
        assert second["body"].get("retry_after_s") is None
        fits = raw.call(
            "llm.generate", 3, {"prompt": "Hello", "max_tokens": 40 - used - first["body"]["usage"]["prompt_tokens"]}
        )
        assert fits["type"] == "result", fits  # exactly what is left still fits
    finally:
        raw.close()


def test_usage_outlives_the_agent_in_its_principals_totals(aiosd):
    with connect(aiosd.address, token=admin_token(aiosd.address)) as op:
        before = op.metrics()
        with connect(aiosd.address, name="short-lived") as agent:
            done = agent.generate("Once upon a time", max_tokens=6, full=True)
            principal = next(a["principal"] for a in op.metrics()["agents"] if a["name"] == "short-lived")
        wait_until(lambda: all(a["name"] != "short-lived" for a in op.metrics()["agents"]), what="agent's end")
        after = op.metrics()

    def totals(values: dict) -> dict:
        return next((p["counters"] for p in values["principals"] if p["principal"] == principal), {})

    grew = totals(after).get("completion_tokens", 0) - totals(before).get("completion_tokens", 0)
    assert grew >= done.usage.completion_tokens
    assert after["kernel"]["counters"]["calls"] > before["kernel"]["counters"]["calls"]
    ttft = next(p for p in after["principals"] if p["principal"] == principal)["histograms"]["ttft_seconds"]
    assert ttft["cumulative"][-1] == ttft["count"] >= 1


def test_spaces_show_file_bytes_from_the_storage_service(aiosd):
    with connect(aiosd.address, name="writer") as agent, connect(aiosd.address, token=admin_token(aiosd.address)) as op:
        agent.fs.write("notes/a.txt", b"x" * 1234)
        files = wait_until(
            lambda: [f for f in op.top()["spaces"]["files"] if f["space"].endswith("/writer")],
            timeout_s=120,
            what="the storage service's counts",
        )
        assert files[0]["bytes"] >= 1234 and files[0]["files"] == 1
