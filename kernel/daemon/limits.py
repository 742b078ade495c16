"""Limits on what one agent, one principal and everyone together can make the kernel hold.

Per agent, LLM work: calls in flight and prompt tokens queued (not yet admitted). Without them one agent could fill the
request table and the scheduler's queue for everyone. Over a limit, the new call is answered `busy` (retry later);
calls already held are untouched.

Per principal and in total, connections and agents, derived from the file-descriptor limit (ConnectionBudget): every
connection holds a descriptor in libzmq, every agent one more (the pidfd the kernel watches its process with), and
libzmq aborts the whole process when it cannot accept for want of a descriptor (ipc:// listeners treat EMFILE as
fatal). So aiosd first raises its soft RLIMIT_NOFILE to the hard one (raise_fd_limit), then keeps connections plus
agents within the limit less a reserve for the kernel's own files, sockets, threads and tool servers. The reserve also
absorbs connections libzmq accepts before the I/O thread hears of them and drops the excess.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from ipc.errors import ErrorCode, ProtocolError
from kernel.scheduler.base import ReqState

DEFAULT_MAX_CALLS = 64
DEFAULT_MAX_QUEUED_TOKENS = 1 << 17

DEFAULT_HELLO_TIMEOUT_S = 5.0  # a connection that has not said hello by then is dropped (the SDK says it at once)
FD_RESERVE_MIN = 512  # descriptors kept for the kernel itself: arena, data files, tool servers' pipes, ...
FD_RESERVE_FRACTION = 8  # ... and at least 1/8 of the limit, for connections accepted before they are seen
MAX_AGENTS = 10_000  # memory and scheduling cost bound agents even where descriptors are plenty
MAX_CONNECTIONS = 2 * MAX_AGENTS
PRINCIPAL_SHARE = (3, 4)  # one principal may hold 3/4 of the connections and of the agents: others still fit


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
            raise ProtocolError(
                ErrorCode.BUSY,
                f"this agent would have {queued} prompt tokens waiting, over its limit of {self.max_queued_tokens}",
            )


@dataclass(frozen=True)
class ConnectionBudget:
    """How many connections (said hello or not) and agents the kernel holds, per principal and in all; and how long
    a connection may stay silent before saying hello. max_connections + max_agents + the reserve fit in fd_limit
    (for any limit of at least twice FD_RESERVE_MIN; below that, one agent still fits)."""

    fd_limit: int
    max_connections: int
    max_connections_per_principal: int
    max_agents: int
    max_agents_per_principal: int
    hello_timeout_s: float = DEFAULT_HELLO_TIMEOUT_S

    @property
    def reserve(self) -> int:
        return reserve_of(self.fd_limit)

    @classmethod
    def from_fd_limit(
        cls,
        fd_limit: int,
        hello_timeout_s: float = DEFAULT_HELLO_TIMEOUT_S,
        max_connections_per_principal: int | None = None,
    ) -> ConnectionBudget:
        usable = max(2, fd_limit - reserve_of(fd_limit))  # a limit below the reserve still lets one agent in
        agents = max(1, min(MAX_AGENTS, usable // 3))
        connections = max(agents, min(MAX_CONNECTIONS, usable - agents))
        share, whole = PRINCIPAL_SHARE
        per_principal = max(1, connections * share // whole)
        if max_connections_per_principal is not None:
            per_principal = max(1, min(connections, max_connections_per_principal))
        # a principal's agents leave some of its connections free: for its `aios` commands, and for a hello over the
        # agent cap, which can then be answered `busy` instead of its connection being dropped unanswered
        agents_per_principal = max(1, min(per_principal * share // whole, agents * share // whole))
        return cls(
            fd_limit=fd_limit,
            max_connections=connections,
            max_connections_per_principal=per_principal,
            max_agents=agents,
            max_agents_per_principal=agents_per_principal,
            hello_timeout_s=hello_timeout_s,
        )

    @classmethod
    def for_process(cls, **options) -> ConnectionBudget:
        """The budget of this process's current soft descriptor limit."""
        return cls.from_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[0], **options)


def reserve_of(fd_limit: int) -> int:
    """Descriptors kept out of the connection budget (half of a limit too small for FD_RESERVE_MIN)."""
    return min(max(FD_RESERVE_MIN, fd_limit // FD_RESERVE_FRACTION), fd_limit // 2)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (nothing above it is allowed without privilege); (before,
    after). Descriptors numbered 1024 and up are safe here: every poll in the kernel uses poll(), not select()."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a sandbox may refuse: keep the soft limit, the budget follows it
            return soft, soft
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
