"""An agent's LLM calls sent to a llama.cpp server (bench/llama_server.py) through its OpenAI API: the baseline a user
runs today when several agents share one model.

    backend = LlamaServerBackend("http://127.0.0.1:PORT/v1")
    backend.generate(prompt, max_tokens) -> CallOutcome     # one /v1/completions call, streamed
    backend.run_tool(gap) -> seconds                        # in this process: the server runs no tools

Each call is a raw completion of the prompt text, as the kernel's llm.generate is: greedy, ignore_eos (the output has
exactly max_tokens tokens), cache_prompt on (the server reuses the longest cached prefix of a slot or of its RAM prompt
cache). Streamed, so the time to the first token is measured here; the server's own timings (prompt_ms, cache_n) come
with the last chunk and give the queue wait: time to first token less the prompt's processing. A connection per call
(the server closes a streamed response's connection; on loopback a connect costs well under a millisecond). A non-200
answer, a dropped stream, or a reply without usage raises LlamaServerError.
"""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

from bench.backends import CallOutcome
from bench.tools import run_tool
from bench.trace import ToolGap

CALL_TIMEOUT_S = 900.0  # a loaded 2-core box, a long queue of agents ahead: a call may wait minutes, never forever


class LlamaServerError(RuntimeError):
    pass


class LlamaServerBackend:
    def __init__(self, url: str, timeout_s: float = CALL_TIMEOUT_S):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"expected http://HOST:PORT/v1, got {url!r}")
        self._host, self._port, self._timeout_s = parts.hostname, parts.port, timeout_s
        self._path = parts.path.rstrip("/") + "/completions"
        self.cached_tokens = 0  # prompt tokens the server found in its cache, over this backend's calls
        self.prompt_tokens = 0

    def generate(self, prompt: str, max_tokens: int) -> CallOutcome:
        body = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "cache_prompt": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.monotonic()
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        try:
            conn.request("POST", self._path, json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise LlamaServerError(f"HTTP {response.status}: {response.read()[:300]!r}")
            return self._read_stream(response, started)
        except (OSError, http.client.HTTPException) as err:
            raise LlamaServerError(f"llama.cpp server at {self._host}:{self._port}: {err}") from err
        finally:
            conn.close()

    def _read_stream(self, response, started: float) -> CallOutcome:
        pieces: list[str] = []
        first_token_at, usage, timings = None, None, None
        for raw in response:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or ():
                if choice.get("text"):
                    first_token_at = first_token_at or time.monotonic()
                    pieces.append(choice["text"])
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
        if usage is None:
            raise LlamaServerError("the stream ended without usage")
        ttft = None if first_token_at is None else first_token_at - started
        prompt_s = (timings or {}).get("prompt_ms", 0.0) / 1000
        self.cached_tokens += int((timings or {}).get("cache_n", 0))
        self.prompt_tokens += int(usage["prompt_tokens"])
        return CallOutcome(
            text="".join(pieces),
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            ttft_s=ttft,
            queue_s=max(0.0, (ttft or 0.0) - prompt_s),
        )

    def run_tool(self, gap: ToolGap) -> float:
        return run_tool(gap)

    def close(self) -> None:
        pass  # no connection outlives a call
