"""How an agent runner reaches a model: through the kernel (the SDK), a llama.cpp server (its OpenAI API), or by loading
the model itself (no kernel); and where its tools run.

Each answers generate(prompt, max_tokens) with the same CallOutcome, so one runner replays a trace against any of them,
and run_tool(gap) -> seconds: in the agent's own process, or (KernelBackend with kernel_tools) as a kernel tool call,
which lets the kernel see the agent wait on the tool. A failed call raises; the runner records it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Protocol

from bench.tools import kernel_call, run_tool
from bench.trace import ToolGap


@dataclass(frozen=True)
class CallOutcome:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None  # seconds from the call to its first token
    queue_s: float  # seconds before the call was first served


class Backend(Protocol):
    def generate(self, prompt: str, max_tokens: int) -> CallOutcome: ...
    def run_tool(self, gap: ToolGap) -> float: ...
    def close(self) -> None: ...


def _operator_token(address: str) -> str:
    from ipc import runtime_dir
    from ipc.address import admin_token_path

    return runtime_dir.read_secret(admin_token_path(address)).decode()


# Seconds a kernel tool call may take past its sleep before the agent gives up (a loaded 2-core box, the MCP hop).
TOOL_TIMEOUT_MARGIN_S = 60.0


class KernelBackend:
    """LLM calls as syscalls to a running aiosd."""

    def __init__(self, address: str, name: str, priority: int, kernel_tools: bool = False):
        from sdk import connect

        self._kernel_tools = kernel_tools
        # above the default a priority is the operator's to give (proc.renice): the bench started this kernel and
        # holds its admin token, as `aios run` would hold a grant
        token = _operator_token(address) if priority > 0 else None
        self._kernel = connect(address, name=name, priority=priority, token=token)

    def generate(self, prompt: str, max_tokens: int) -> CallOutcome:
        completion = self._kernel.generate(prompt, full=True, max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        return CallOutcome(
            text=completion.text,
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens,
            ttft_s=completion.timing.ttft_s,
            queue_s=completion.timing.queue_s,
        )

    def run_tool(self, gap: ToolGap) -> float:
        """Through the kernel's tool manager when it runs the bench's tools, else in this process."""
        if not self._kernel_tools:
            return run_tool(gap)
        start = time.monotonic()
        name, arguments = kernel_call(gap)
        output = self._kernel.tools.call(name, arguments, timeout=gap.seconds + TOOL_TIMEOUT_MARGIN_S)
        if output.is_error:
            raise RuntimeError(f"tool {name} failed: {output.text}")
        return time.monotonic() - start

    def stats(self) -> dict:
        """The kernel's flat counters (preemptions, snapshot bytes, recomputed tokens...)."""
        return dict(self._kernel.stats())

    def close(self) -> None:
        self._kernel.close()


class LocalEngineBackend:
    """The no-kernel baseline: this process loads its own copy of the model and runs its calls one at a time."""

    def __init__(self, threads: int, kv_budget_tokens: int):
        from kernel.engine.factory import load_engine
        from kernel.engine.kinds import EngineKind
        from kernel.engine.process_env import configure_process_env

        configure_process_env()  # this agent process runs its own engine: the settings aiosd's engine gets
        # threads: several agents each spinning a pool over every core would slow all of them many times over.
        self._engine = load_engine(kind=EngineKind.CPU, kv_budget_tokens=kv_budget_tokens, max_batch=1, threads=threads)
        self._ids = itertools.count()

    def generate(self, prompt: str, max_tokens: int) -> CallOutcome:
        from kernel.engine.core.interface import EngineRequest, SamplingParams

        started = time.monotonic()
        prompt_ids = self._engine.tokenize(prompt)
        req_id = f"call-{next(self._ids)}"
        self._engine.add(
            EngineRequest(
                req_id=req_id,
                prompt_ids=prompt_ids,
                params=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
            )
        )
        pieces: list[str] = []
        generated, first_token_at = 0, None
        while self._engine.has_work():
            for event in self._engine.step():
                if event.req_id != req_id:
                    continue
                if event.token_id >= 0:
                    generated += 1
                    first_token_at = first_token_at or time.monotonic()
                pieces.append(event.text)
                if event.finished:
                    return CallOutcome(
                        text="".join(pieces),
                        prompt_tokens=len(prompt_ids),
                        completion_tokens=generated,
                        ttft_s=first_token_at - started if first_token_at else None,
                        queue_s=0.0,
                    )
        raise RuntimeError(f"engine went idle before finishing {req_id}")

    def run_tool(self, gap: ToolGap) -> float:
        return run_tool(gap)

    def close(self) -> None:
        pass
