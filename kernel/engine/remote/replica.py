"""One serving replica: its endpoint, what it told us about itself, whether it is healthy, and the calls it holds.

Everything here is read and written on the kernel thread only (the health prober reports through the engine's event
queue, never by writing these fields), so no lock is needed.

What a replica is asked at start and after it comes back (describe()): the model it serves and its context length from
/v1/models (vLLM: max_model_len; llama.cpp: meta.n_ctx), and how many sequences it decodes at once from llama.cpp's
/props (total_slots). A server that does not say (vLLM has no such endpoint) gets the kernel's --max-batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kernel.engine.core.interface import EngineError
from kernel.engine.remote.http import Endpoint, HTTPFailure


@dataclass(frozen=True)
class ServerInfo:
    model: str  # the id to send as "model"
    max_context: int | None  # tokens one sequence may hold (None: the server did not say)
    slots: int | None  # sequences it decodes at once (None: the server did not say)


@dataclass
class Replica:
    name: str  # its URL, as given with --engine-url
    endpoint: Endpoint
    slots: int  # the in-flight bound: calls beyond it wait in the kernel, where the scheduler orders them
    healthy: bool = True
    in_flight: set[str] = field(default_factory=set)  # request ids it is serving (the kernel's, not the server's)
    failures: int = 0  # times it was found dead

    @property
    def free(self) -> int:
        return max(0, self.slots - len(self.in_flight)) if self.healthy else 0


def endpoints_of(urls: Sequence[str]) -> dict[str, Endpoint]:
    """Each --engine-url's endpoint, in order; EngineError if there are none, one is malformed or one repeats."""
    if not urls:
        raise EngineError("the remote engine needs at least one --engine-url")
    try:
        endpoints = {url: Endpoint(url) for url in urls}
    except ValueError as error:
        raise EngineError(str(error)) from None
    if len(endpoints) != len(urls):
        raise EngineError("each --engine-url must be given once")
    return endpoints


def describe(endpoint: Endpoint, timeout_s: float = 5.0) -> ServerInfo:
    """Ask a server what it serves. HTTPFailure if it does not answer like an OpenAI-compatible server."""
    models = endpoint.request_json("GET", f"{endpoint.base_path}/models", timeout_s=timeout_s)
    data = models.get("data") if isinstance(models, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "id" not in data[0]:
        raise HTTPFailure(f"{endpoint.url}/models lists no model")
    first = data[0]
    meta = first.get("meta") if isinstance(first.get("meta"), dict) else {}
    max_context = first.get("max_model_len") or meta.get("n_ctx")
    slots = None
    try:
        props = endpoint.request_json("GET", "/props", timeout_s=timeout_s)  # llama.cpp only
        if isinstance(props, dict):
            slots = props.get("total_slots")
            settings = props.get("default_generation_settings") or {}
            max_context = max_context or settings.get("n_ctx")
    except HTTPFailure:
        pass
    return ServerInfo(model=str(first["id"]), max_context=_positive(max_context), slots=_positive(slots))


def probe(endpoint: Endpoint, timeout_s: float) -> None:
    """A liveness check: /health at the server's root (vLLM, SGLang, llama.cpp), else /v1/models. HTTPFailure if
    dead."""
    try:
        endpoint.request_json("GET", "/health", timeout_s=timeout_s)
    except HTTPFailure as error:
        if error.status != 404:
            raise
        endpoint.request_json("GET", f"{endpoint.base_path}/models", timeout_s=timeout_s)


def _positive(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and value > 0 else None
