"""Per-agent limits on LLM work the kernel holds: calls in flight and prompt tokens queued (not yet admitted).

Without them one agent could fill the request table and the scheduler's queue for everyone. Over a limit, the new call
is answered `busy` (retry later); calls already held are untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

from ipc.errors import ErrorCode, ProtocolError
from kernel.scheduler.base import ReqState

DEFAULT_MAX_CALLS = 64
DEFAULT_MAX_QUEUED_TOKENS = 1 << 17


@dataclass(frozen=True)
class AgentLimits:
    max_calls: int = DEFAULT_MAX_CALLS
    max_queued_tokens: int = DEFAULT_MAX_QUEUED_TOKENS

    def check(self, held: list, prompt_tokens: int) -> None:
        """held: the agent's requests in the kernel (kernel/daemon/requests.py LLMRequest)."""
        if len(held) >= self.max_calls:
            raise ProtocolError(ErrorCode.BUSY, f"this agent has {len(held)} calls in flight, the most it may hold")
        queued = sum(r.prompt_tokens for r in held if r.state is ReqState.WAITING) + prompt_tokens
        if queued > self.max_queued_tokens:
            raise ProtocolError(ErrorCode.BUSY, f"this agent would have {queued} prompt tokens waiting, over its "
                                                f"limit of {self.max_queued_tokens}")
