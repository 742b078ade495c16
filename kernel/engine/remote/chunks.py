"""What one streamed /v1/completions event says, whichever OpenAI-compatible server sent it.

The request asks every known dialect for token ids: vLLM answers `return_token_ids` with `choices[0].token_ids`;
llama.cpp's OpenAI endpoint has no such field, but `logprobs` brings each sampled token's id
(`choices[0].logprobs.content[i].id`); llama.cpp's native endpoint puts them in `tokens`. A server that gives none of
these sends text only (ids is None): the caller tokenizes that text itself (see call.py).

Finish reasons: OpenAI's "length" is ours; its "stop" covers both an end-of-sequence token and a stop string, told apart
where the server says which (vLLM's `stop_reason` is the matched string, llama.cpp's native `stopping_word`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel.engine.core.interface import FinishReason, SamplingParams

TOKEN_ID_FIELDS = {"return_token_ids": True, "logprobs": 1}  # what the request adds to get ids back


@dataclass(frozen=True)
class Chunk:
    text: str
    ids: list[int] | None  # None: the server gave text only
    finish: FinishReason | None


def parse_chunk(event: dict) -> Chunk:
    """ValueError if the event is not a completion chunk."""
    choices = event.get("choices")
    if isinstance(choices, list) and choices:
        choice = choices[0]
        text = choice.get("text") or ""
        ids = _ids(choice.get("token_ids"))
        if ids is None:
            logprobs = choice.get("logprobs")
            content = logprobs.get("content") if isinstance(logprobs, dict) else None
            if isinstance(content, list) and content and all(isinstance(c, dict) and "id" in c for c in content):
                ids = _ids([c["id"] for c in content])
        if ids is None and not text:
            ids = []  # a pure finish (or keep-alive) chunk carries no token
        return Chunk(text, ids, _finish(choice.get("finish_reason"), choice.get("stop_reason")))
    if "content" in event:  # llama.cpp's native /completion
        finish = None
        if event.get("stop"):
            finish = _finish(
                "length" if event.get("stop_type") == "limit" else "stop", event.get("stopping_word") or None
            )
        return Chunk(event.get("content") or "", _ids(event.get("tokens")), finish)
    raise ValueError(f"not a completion chunk: {str(event)[:120]}")


def request_body(model: str, prompt_ids: list[int], params: SamplingParams, max_tokens: int) -> dict:
    """The streamed /v1/completions request for a prompt given as token ids (every dialect accepts a list of ints)."""
    body = {
        "model": model,
        "prompt": prompt_ids,
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": params.temperature,
        "top_p": params.top_p,
        # top_k -1 and min_p 0 switch those filters off everywhere: llama.cpp would apply its own defaults (40,
        # 0.05) and the kernel's sampling contract has neither unless asked
        "top_k": params.top_k if params.top_k > 0 else -1,
        "min_p": 0.0,
        "ignore_eos": params.ignore_eos,
        **TOKEN_ID_FIELDS,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def _ids(value) -> list[int] | None:
    if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        return list(value)
    return None


def _finish(reason, stop_reason) -> FinishReason | None:
    if reason is None:
        return None
    if reason == "length":
        return FinishReason.LENGTH
    if reason == "stop" and isinstance(stop_reason, str) and stop_reason:
        return FinishReason.STOP
    return FinishReason.EOS if reason == "stop" else FinishReason.STOP
