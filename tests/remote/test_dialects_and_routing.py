"""Without a server: the stream dialects the remote engine reads (vLLM's token_ids, llama.cpp's logprobs and native
chunks, text only) and the router's choice between prefix affinity and load."""

from __future__ import annotations

import pytest

from kernel.engine.core.interface import FinishReason, SamplingParams
from kernel.engine.remote.chunks import parse_chunk, request_body
from kernel.engine.remote.http import Endpoint
from kernel.engine.remote.replica import Replica
from kernel.engine.remote.router import BLOCK, Router


def test_token_ids_come_from_whichever_field_the_server_fills():
    vllm = {"choices": [{"text": " Paris", "token_ids": [7042], "finish_reason": None}]}
    llama = {
        "choices": [
            {"text": " Par is", "logprobs": {"content": [{"id": 5, "token": " Par"}, {"id": 6}]}, "finish_reason": None}
        ]
    }
    native = {"content": "x", "tokens": [9], "stop": True, "stop_type": "limit"}
    text_only = {"choices": [{"text": " hello", "finish_reason": None}]}
    assert (parse_chunk(vllm).ids, parse_chunk(vllm).text) == ([7042], " Paris")
    assert parse_chunk(llama).ids == [5, 6]
    assert (parse_chunk(native).ids, parse_chunk(native).finish) == ([9], FinishReason.LENGTH)
    assert parse_chunk(text_only).ids is None and parse_chunk(text_only).text == " hello"
    with pytest.raises(ValueError):
        parse_chunk({"object": "error"})


@pytest.mark.parametrize(
    "reason, stop_reason, expected",
    [("length", None, FinishReason.LENGTH), ("stop", None, FinishReason.EOS), ("stop", "###", FinishReason.STOP)],
)
def test_finish_reasons(reason, stop_reason, expected):
    chunk = parse_chunk({"choices": [{"text": "", "finish_reason": reason, "stop_reason": stop_reason}]})
    assert chunk.finish is expected and chunk.ids == []


def test_the_request_carries_the_kernels_sampling_and_asks_for_ids():
    body = request_body("m", [1, 2], SamplingParams(max_tokens=9, temperature=0.5, top_k=0, seed=3, stop=("x",)), 4)
    assert body["prompt"] == [1, 2] and body["max_tokens"] == 4 and body["stream"] is True
    assert (body["top_k"], body["min_p"], body["seed"], body["stop"]) == (-1, 0.0, 3, ["x"])
    assert body["return_token_ids"] is True and body["logprobs"] == 1


def _replicas(n: int, slots: int = 4) -> list[Replica]:
    return [Replica(f"http://r{i}:80/v1", Endpoint(f"http://r{i}:80/v1"), slots) for i in range(n)]


def test_affinity_wins_within_the_balance_slack_and_load_wins_beyond_it():
    a, b = _replicas(2)
    router = Router([a, b], slack=1)
    history = list(range(3 * BLOCK))
    router.record(b, history)
    assert router.choose(history + [7, 8], [a, b]) == (b, 3 * BLOCK)
    b.in_flight |= {"x"}  # one more than a: still within the slack
    assert router.choose(history, [a, b])[0] is b
    b.in_flight |= {"y"}  # two more: load decides
    assert router.choose(history, [a, b]) == (a, 0)
    assert router.choose([1, 2, 3], [a]) == (a, 0) and router.choose([1], []) is None


def test_a_short_shared_prefix_is_no_affinity_and_a_dead_replica_forgets():
    a, b = _replicas(2)
    router = Router([a, b], min_match=2 * BLOCK)
    router.record(b, list(range(BLOCK)))  # one block in common only: too short to count
    assert router.choose(list(range(BLOCK)) + [99] * BLOCK, [a, b])[0] is a
    router.record(b, list(range(4 * BLOCK)))
    router.forget(b)
    assert router.choose(list(range(4 * BLOCK)), [a, b]) == (a, 0)
