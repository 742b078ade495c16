"""The AIOS agent SDK: `from sdk import connect`, then k.chat(...), k.generate(...), k.stream(...), k.ps(), ...

One connection per thread: a connection's socket must not be shared between threads.
"""
from ipc.messages import AgentInfo, Completion, RequestInfo, Timing, Usage
from sdk.agent import Agent
from sdk.client import Kernel, connect
from sdk.errors import KernelError, KernelTimeout, KernelUnavailable

__all__ = ["connect", "Kernel", "Agent", "KernelError", "KernelTimeout", "KernelUnavailable", "Completion", "Usage",
           "Timing",
           "AgentInfo", "RequestInfo"]
