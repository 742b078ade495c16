"""The files and memory servers' connection to the kernel: one SDK connection per worker thread, made on first use.

The server acts for whichever agent calls it, so it never uses a space of its own: every SDK call names the caller's
space, which the tool manager injects (kernel/tools/schema.py). It reaches the kernel at $AIOS_ADDRESS with
$AIOS_TOKEN, a grant with fs.any / mem.any that the kernel mints and puts into this server's config `env`; without
them calls fail with a message saying so. Kernel errors become tool errors carrying the kernel's code and message.
(An SDK connection belongs to one thread, and the MCP server runs sync tools on worker threads: hence threading.local.)
"""

from __future__ import annotations

import os
import threading

from mcp.server.mcpserver.exceptions import ToolError

CALL_TIMEOUT_S = 30.0


class KernelLink:
    def __init__(self, name: str):
        self._name = name
        self._local = threading.local()

    def kernel(self):
        connection = getattr(self._local, "kernel", None)
        if connection is None:
            if not os.environ.get("AIOS_ADDRESS") or not os.environ.get("AIOS_TOKEN"):
                raise ToolError(f"{self._name} server has no kernel to reach (AIOS_ADDRESS / AIOS_TOKEN not given)")
            import sdk  # late: the server starts (and lists tools) without it

            try:
                connection = sdk.connect(name=f"tools.{self._name}", timeout=CALL_TIMEOUT_S)
            except sdk.KernelError as error:
                raise ToolError(f"cannot reach the kernel: {error}") from None
            self._local.kernel = connection
        return connection

    def run(self, call):
        """call(kernel) → its value; a kernel error → ToolError with the kernel's code."""
        import sdk

        try:
            return call(self.kernel())
        except sdk.KernelError as error:
            if error.code in ("unavailable", "disconnected"):
                self._local.kernel = None  # reconnect on the next call
            raise ToolError(f"[{error.code}] {error.message}") from None
