"""The gateway's operator connection (the dashboard's and /metrics'): an agent holding the operator's admin token.

The gateway reads the token the kernel leaves in its private runtime directory (ipc/address.admin_token_path, read
under ipc/runtime_dir's secret rules: ours, 0600, no symlink), the way `aios` does, so the gateway must run as the
kernel's user to show the dashboard. One connection, opened on first use, serves every snapshot (`kernel.top`) and,
without a keys file, the approvals decided on the page. A kernel restart mints a new admin token: a connection that
fails for any reason but a timeout is dropped, and the next call reads the token again and says hello afresh.

Refuses: nothing itself; an unreadable token is an OSError (RuntimeDirError says why), a kernel error a KernelError.
"""

from __future__ import annotations

import asyncio

from ipc import runtime_dir
from ipc.address import admin_token_path
from ipc.messages import MAX_LISTED
from sdk.aio import AsyncKernel, aconnect
from sdk.errors import KernelError, KernelTimeout

AGENT_NAME = "aios dashboard"
CALL_TIMEOUT_S = 30.0
# the connection is gone or its token is stale (a restarted kernel refuses the old admin token): open a new one
RECONNECT_CODES = frozenset({"disconnected", "unavailable", "unauthorized", "hello_required", "permission_denied"})


class OperatorLink:
    def __init__(self, address: str, limit: int = MAX_LISTED, name: str = AGENT_NAME):
        self.address, self.limit, self.name = address, limit, name
        self._kernel: AsyncKernel | None = None
        self._lock = asyncio.Lock()

    async def top(self) -> dict:
        return await self._call(lambda kernel: kernel.top(self.limit))

    async def metrics(self) -> dict:
        return await self._call(lambda kernel: kernel.metrics())

    async def approve(self, approval_id: str, allow: bool) -> None:
        await self._call(lambda kernel: kernel.tools.approve(approval_id, allow=allow))

    async def _call(self, make_call):
        kernel = await self._connection()
        try:
            return await make_call(kernel)
        except KernelTimeout:
            raise
        except KernelError as error:
            if error.code in RECONNECT_CODES:
                await self._drop(kernel)
            raise

    async def _connection(self) -> AsyncKernel:
        async with self._lock:
            if self._kernel is None:
                token = runtime_dir.read_secret(admin_token_path(self.address)).decode()
                self._kernel = await aconnect(self.address, name=self.name, timeout=CALL_TIMEOUT_S, token=token)
            return self._kernel

    async def _drop(self, kernel: AsyncKernel) -> None:
        async with self._lock:
            if self._kernel is kernel:
                self._kernel = None
        await kernel.close()

    async def close(self) -> None:
        async with self._lock:
            kernel, self._kernel = self._kernel, None
        if kernel is not None:
            await kernel.close()
