"""Kernel-side programs as child processes, for the demo, the bench, the tests and the gateway's tests.

child.py: any program that prints a ready line (start, wait for the line, tee its output to a log, SIGTERM then
SIGKILL); kernel_process.py: aiosd with a configuration. The gateway's GatewayProcess (kernel/gateway/process.py) is
a ChildProcess too.
"""

from kernel.launch.child import ChildProcess, ChildStartError
from kernel.launch.kernel_process import KernelProcess, KernelStartError

__all__ = ["ChildProcess", "ChildStartError", "KernelProcess", "KernelStartError"]
