"""ToolManager: the kernel's one handle on its tool servers; every method is safe to call from any thread.

    manager = ToolManager(config)
    errors = manager.start(timeout=None)    # starts every server at once; {server: why} for those that did not come up
    manager.list_tools()                    # [ToolSpec] of the servers that are up (injected arguments hidden)
    future = manager.call(name, arguments, context)   # concurrent.futures.Future → ToolResult
    manager.stop()                          # ends sessions, kills server process groups, removes sandbox dirs

The manager owns an asyncio event loop on a daemon thread of its own ("aios-tools"); all server state lives on it, so
nothing here takes a lock and no tool work ever runs on the caller's thread (the kernel loop never waits on a tool).
`call()` returns at once; its Future resolves to a ToolResult (the tool ran: `is_error` says whether it reported a
failure, `truncated` whether the text was cut), or raises ipc.errors.ProtocolError:
- NOT_FOUND: no such tool (and every server is up);
- BAD_REQUEST: arguments are not an object, fail the tool's JSON schema, or set an argument the kernel injects —
  refused before the server sees anything;
- BUSY: the tool's `concurrency` calls are running and `queue` more are waiting;
- TIMEOUT (ErrorCode.TIMEOUT if the protocol has it, else CANCELLED with "timed out" in the message): the call's
  timeout (server `timeout`, or `tool_timeouts[tool]`) passed, queueing and a restart included;
- INTERNAL: the server crashed during the call (the next call restarts it), could not be started (the message names
  the server, why, its exit code and stderr), or a name is unknown while some server is down (it may be that one's).
Done-callbacks added to the Future run on the manager's loop thread: they must be quick and must not block (hand the
result to the kernel's own queue). Cancelling the Future cancels the call.

Context: `context` is what the kernel knows of the caller, e.g. {"space": "uid:0/notes", "agent_id": "a3"}; the
manager copies keys into arguments of tools that declare them (`x-aios-context`, see kernel/tools/schema.py) and whose
server's config grants them (`context = ["space"]`). Nothing else of it reaches a server.

Sandboxed servers (kernel/tools/sandbox.py) get `config.hidden_paths()` to cover: the kernel's runtime directory
(socket, admin token, audit log) and data directory (every agent's space), whatever else the config names.

Names: a tool is exposed under its own name; if two servers offer the same name, the later server's (config order)
is exposed as "<server>_<name>". `call()` also accepts "<server>.<name>", which reaches a server even while it is down
(so a server that failed at start answers its real error).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import logging
import threading

from ipc.errors import ErrorCode, ProtocolError
from kernel.tools.config import ToolsConfig
from kernel.tools.server import ServerSupervisor, Tool
from kernel.tools.specs import ToolResult, ToolSpec

log = logging.getLogger(__name__)


class ToolManager:
    def __init__(self, config: ToolsConfig):
        names = [server.name for server in config.servers]
        if len(set(names)) != len(names):
            raise ValueError(f"tool server names must be unique: {names}")
        self.config = config
        hide = config.hidden_paths() if any(server.sandbox for server in config.servers) else ()
        self._servers = {server.name: ServerSupervisor(server, hide) for server in config.servers}
        self._index: dict[str, tuple[ServerSupervisor, Tool]] = {}  # exposed name → where it lives (loop only)
        self._specs: tuple[ToolSpec, ...] = ()  # replaced whole; read from any thread
        self._calls: set[asyncio.Task] = set()  # calls in flight (loop only), for stop()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aios-tools", daemon=True)
        self._state = "new"
        self._state_lock = threading.Lock()  # start/stop from different threads

    # ------------------------------------------------------------------------------------------------ thread API

    def start(self, timeout: float | None = None) -> dict[str, str]:
        """Start every server (each bounded by its startup_timeout); {server name: why} for those that failed."""
        with self._state_lock:
            if self._state != "new":
                raise RuntimeError(f"ToolManager already {self._state}")
            self._thread.start()
            self._state = "running"
        return self._submit(self._start_all()).result(timeout)

    def list_tools(self) -> list[ToolSpec]:
        return [dataclasses.replace(spec, input_schema=copy.deepcopy(spec.input_schema)) for spec in self._specs]

    def call(self, name: str, arguments: dict, context: dict | None = None) -> concurrent.futures.Future:
        if self._state != "running":
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_exception(
                ProtocolError(
                    ErrorCode.SHUTDOWN if self._state == "stopped" else ErrorCode.INTERNAL,
                    f"tool manager is {self._state}",
                )
            )
            return future
        return self._submit(self._call(name, arguments, dict(context or {})))

    def stop(self, timeout: float = 30.0) -> None:
        with self._state_lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopped"
        try:
            self._submit(self._stop_all()).result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> ToolManager:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _submit(self, coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    # ------------------------------------------------------------------------------------------- on the loop

    async def _start_all(self) -> dict[str, str]:
        servers = list(self._servers.values())
        outcomes = await asyncio.gather(*(server.ensure_started() for server in servers), return_exceptions=True)
        self._reindex()
        return {
            server.name: getattr(outcome, "message", str(outcome))
            for server, outcome in zip(servers, outcomes)
            if isinstance(outcome, BaseException)
        }

    async def _stop_all(self) -> None:
        calls = list(self._calls)
        for task in calls:  # calls in flight end with CancelledError on their Futures
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.gather(*(server.stop() for server in self._servers.values()), return_exceptions=True)

    async def _call(self, name: str, arguments: dict, context: dict) -> ToolResult:
        task = asyncio.current_task()
        self._calls.add(task)
        try:
            return await self._call_tool(name, arguments, context)
        finally:
            self._calls.discard(task)

    async def _call_tool(self, name: str, arguments: dict, context: dict) -> ToolResult:
        server, tool = await self._resolve(name)
        tool.schema.check(name, arguments)
        full = tool.schema.inject(name, arguments, context, server.config.context)
        result = await server.call(tool, full, server.config.timeout_for(tool.spec.name))
        if server.tools.get(tool.spec.name) is not tool:
            self._reindex()  # it restarted during the call and may offer other tools now
        return result

    async def _resolve(self, name: str) -> tuple[ServerSupervisor, Tool]:
        if not isinstance(name, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "tool name must be a string")
        server_name, dot, remote = name.partition(".")
        if dot and server_name in self._servers:
            server = self._servers[server_name]
            await server.ensure_started()
            self._reindex()
            if remote in server.tools:
                return server, server.tools[remote]
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no tool {remote!r} in server {server_name!r}")
        if name not in self._index or not self._index[name][0].is_up():
            # Start what is down (a crashed server, or one that failed at start and may work now), then look again.
            await asyncio.gather(
                *(server.ensure_started() for server in self._servers.values() if not server.is_up()),
                return_exceptions=True,
            )
            self._reindex()
        if name in self._index:
            server, tool = self._index[name]
            if server.error:
                raise ProtocolError(ErrorCode.INTERNAL, server.error)
            return server, tool
        down = [server.error for server in self._servers.values() if server.error]
        if down:
            raise ProtocolError(ErrorCode.INTERNAL, f"no tool {name!r} among running servers; down: {down[0]}")
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no tool {name!r}")

    def _reindex(self) -> None:
        index: dict[str, tuple[ServerSupervisor, Tool]] = {}
        specs = []
        for server in self._servers.values():
            for tool in server.tools.values():
                exposed = tool.spec.name if tool.spec.name not in index else f"{server.name}_{tool.spec.name}"
                index[exposed] = (server, tool)
                specs.append(dataclasses.replace(tool.spec, name=exposed))
        self._index, self._specs = index, tuple(specs)
