"""The AIOS agent SDK: `from sdk import connect`, then k.chat(...), k.generate(...), k.stream(...), k.ps(), ...;
or, on an asyncio event loop, `k = await sdk.aconnect()`, then `await k.chat(...)`, `async for d in k.stream(...)`.

One sync connection per thread: a connection's socket must not be shared between threads. An AsyncKernel serves any
number of tasks on its one event loop.
"""

from ipc.messages import AgentInfo, Completion, RequestInfo, Timing, Usage
from sdk.agent import Agent
from sdk.aio import AsyncKernel, aconnect
from sdk.client import Kernel, connect
from sdk.errors import KernelError, KernelTimeout, KernelUnavailable

__all__ = [
    "connect",
    "aconnect",
    "Kernel",
    "AsyncKernel",
    "Agent",
    "KernelError",
    "KernelTimeout",
    "KernelUnavailable",
    "Completion",
    "Usage",
    "Timing",
    "AgentInfo",
    "RequestInfo",
]
