"""The base class for agent programs: subclass it, write run(), end the file with `MyAgent.main()`.

The program then runs as `python my_agent.py ARGS` or `aios run my_agent.py ARGS`, as its own OS process, with
`self.kernel` connected to the kernel at $AIOS_ADDRESS.
"""

from __future__ import annotations

import sys

from sdk.client import Kernel, connect
from sdk.errors import KernelError


class Agent:
    name: str | None = None  # shown by `aios ps`; defaults to the class name
    priority: int = 0  # higher runs first under the priority scheduler

    def __init__(self, kernel: Kernel | None = None):
        self.kernel = kernel or connect(name=self.name or type(self).__name__, priority=self.priority)

    def run(self, args: list[str]) -> int | None:
        """The agent's program; args are its command-line arguments. Returns the exit status (None = 0)."""
        raise NotImplementedError

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        """Connect, run, exit with run()'s status; a kernel error ends the process with status 1 and its message."""
        args = sys.argv[1:] if argv is None else argv
        try:
            agent = cls()
            try:
                status = agent.run(args)
            finally:
                agent.kernel.close()
        except KernelError as error:
            print(f"{cls.name or cls.__name__}: {error}", file=sys.stderr)
            sys.exit(1)
        sys.exit(status or 0)
