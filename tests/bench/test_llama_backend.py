"""Agents against a real llama.cpp server (xllamacpp, the bundled SmolLM2 GGUF): a tiny workload of 2 agents with 2
calls each, run by bench/agentic_live as agent processes, records every agent's completion and exact output lengths;
the backend reuses the server's prompt cache and reports a dead server as an error."""

from __future__ import annotations

import argparse
import random

import pytest

from bench.agentic_live import LLAMA, LiveConfig, run_config
from bench.llama_backend import LlamaServerBackend, LlamaServerError
from bench.llama_server import LlamaServer, free_port
from bench.records import read_records
from bench.text import words_text
from bench.trace import AgentProgram, Call, ToolGap, Trace

pytest.importorskip("xllamacpp")


def _tiny_trace() -> Trace:
    rng = random.Random(3)
    agents = tuple(
        AgentProgram(
            agent_id=f"agent-{i}",
            kind="agent",
            priority=0,
            arrival_s=0.1 * i,
            history=True,
            prefix="tools",
            calls=(
                Call(words_text(rng, 24), 24, 6 + i, ToolGap("api", 0.3)),
                Call(words_text(rng, 12), 12, 5),
            ),
        )
        for i in range(2)
    )
    return Trace("tiny", 0, "2 agents, 2 calls each", {"tools": words_text(rng, 40)}, agents)


def test_two_agents_run_against_the_server_and_record_their_completion(tmp_path):
    trace = _tiny_trace()
    path = tmp_path / "tiny.json"
    trace.save(path)
    args = argparse.Namespace(agent_timeout=600.0, arena_mb=64)
    results = run_config(LiveConfig(LLAMA), {("tiny", 0): (trace, path)}, tmp_path, args, threads=1)
    run = results["tiny"][0]
    assert run["failed_agents"] == [] and set(run["exit_codes"].values()) == {0}
    assert run["agents"] == 2 and run["agent_completion"]["n"] == 2
    assert run["completion_tokens"] == trace.requested_output_tokens()  # ignore_eos: exact lengths
    requests, agents = read_records(sorted((tmp_path / "records" / LLAMA / "tiny-seed0").glob("*.jsonl")))
    for program in trace.agents:
        mine = sorted((r for r in requests if r.agent_id == program.agent_id), key=lambda r: r.call)
        assert [r.completion_tokens for r in mine] == [c.max_tokens for c in program.calls]
        assert mine[1].prompt_tokens > mine[0].prompt_tokens  # the history grew by the output and the observation
        assert all(r.ttft is not None and 0 <= r.ttft <= r.latency for r in mine)
        (record,) = [a for a in agents if a.agent_id == program.agent_id]
        assert record.error is None and record.n_calls == 2
        assert record.tool_seconds >= 0.3  # the agent ran its own tool: the server runs none
        assert record.completion >= record.tool_seconds + sum(r.latency for r in mine) * 0.99


def test_the_second_call_of_a_history_finds_its_prefix_in_the_cache(tmp_path):
    with LlamaServer(tmp_path / "llama.log", slots=1, threads=1, ctx_per_slot=1024) as server:
        backend = LlamaServerBackend(server.url)
        prompt = words_text(random.Random(5), 120)
        first = backend.generate(prompt, 4)
        assert backend.cached_tokens == 0 and first.completion_tokens == 4
        backend.generate(prompt + first.text + " and then", 4)
        assert backend.cached_tokens >= first.prompt_tokens  # cache_prompt: only the new tokens were processed


def test_a_server_that_is_not_there_is_an_error_not_a_hang():
    backend = LlamaServerBackend(f"http://127.0.0.1:{free_port()}/v1", timeout_s=30)
    with pytest.raises(LlamaServerError):
        backend.generate("hello", 2)


@pytest.mark.parametrize("url", ["127.0.0.1:80/v1", "https://127.0.0.1:8/v1", "http://127.0.0.1/v1"])
def test_urls_without_host_and_port_over_http_are_refused(url):
    with pytest.raises(ValueError):
        LlamaServerBackend(url)
