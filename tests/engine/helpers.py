"""Drive an engine to completion and collect each request's tokens, text and finish reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from kernel.engine.core.interface import EngineRequest, SamplingParams


@dataclass
class Result:
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    reason: str | None = None


def drain(engine, results: dict[str, Result] | None = None, max_steps: int = 100_000) -> dict[str, Result]:
    results = {} if results is None else results
    for _ in range(max_steps):
        if not engine.has_work():
            return results
        record(engine.step(), results)
    raise AssertionError("engine did not finish")


def record(events, results: dict[str, Result]) -> None:
    """Add one step's events to the per-request results."""
    for event in events:
        result = results.setdefault(event.req_id, Result())
        if event.token_id >= 0:
            result.tokens.append(event.token_id)
        result.text += event.text
        if event.finished:
            result.reason = event.finish_reason


def generate(engine, prompts: dict[str, list[int]], **params) -> dict[str, Result]:
    for req_id, prompt in prompts.items():
        engine.add(EngineRequest(req_id, list(prompt), SamplingParams(**params)))
    return drain(engine)


def greedy(engine, prompt: list[int], max_tokens: int) -> list[int]:
    return generate(engine, {"solo": prompt}, max_tokens=max_tokens, ignore_eos=True)["solo"].tokens
