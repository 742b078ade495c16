"""One supervised MCP server: spawned (sandboxed if configured), initialized once, reused, restarted after a crash.

Runs entirely on the manager's event loop (no locks: one thread). `ServerSupervisor`:
- `ensure_started()`: spawn + `initialize` + `tools/list`, bounded by `startup_timeout` (on expiry the process group is
  killed, so nothing waits on a server that never answers). Concurrent callers share one start. A failed start raises
  INTERNAL naming the server, the reason, its exit code and last stderr lines; for RETRY_AFTER seconds later calls
  get the same error without spawning again (a broken command does not fork a process per call);
- `call(tool, arguments, timeout)`: per-tool concurrency (`concurrency` running, `queue` waiting, else BUSY), then
  the MCP call; the timeout covers queueing, a (re)start and the call. A timed-out call is abandoned (the SDK tells the
  server it was cancelled); the server keeps serving. A server whose process exits or whose stdout closes fails its
  calls in flight with INTERNAL and is started again by the next call;
- `stop()`: ends the session, closes stdin, then kills the process group (transport.open_stdio) and removes the
  sandbox directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field

import mcp_types
from mcp import ClientSession
from mcp.shared.exceptions import MCPError

from ipc.errors import ErrorCode, ProtocolError
from kernel.tools.config import ServerConfig
from kernel.tools.sandbox import build_env, launcher_argv, make_workdir, remove_workdir
from kernel.tools.schema import ToolSchema, compile_schema
from kernel.tools.specs import ToolResult, ToolSpec
from kernel.tools.transport import TRUNCATED_META, Pipes, open_stdio

log = logging.getLogger(__name__)

TIMEOUT_CODE = ErrorCode.CANCELLED  # the kernel stopped waiting for the tool: the call is cancelled
RETRY_AFTER = 5.0
MAX_TOOLS = 1000
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Tool:
    spec: ToolSpec  # name as the server calls it; the manager may expose it under another
    schema: ToolSchema
    semaphore: asyncio.Semaphore
    waiting: int = 0


@dataclass
class _Run:
    """One life of the server process."""

    ready: asyncio.Future
    stop: asyncio.Future
    pipes: Pipes | None = None
    session: ClientSession | None = None
    task: asyncio.Task | None = field(default=None, repr=False)


class ServerSupervisor:
    def __init__(self, config: ServerConfig, hide: tuple[str, ...] = ()):
        self.config = config
        self.hide = hide  # paths the sandbox covers (ToolsConfig.hidden_paths())
        self.tools: dict[str, Tool] = {}
        self.error = ""  # why the last start failed ("" when up or never tried)
        self._run: _Run | None = None
        self._starting: asyncio.Future | None = None
        self._failed_at = -RETRY_AFTER

    @property
    def name(self) -> str:
        return self.config.name

    def is_up(self) -> bool:
        run = self._run
        return run is not None and run.session is not None and not run.pipes.exited.done()

    async def ensure_started(self) -> ClientSession:
        if self.is_up():
            return self._run.session
        if self._starting is None:
            if self.error and time.monotonic() - self._failed_at < RETRY_AFTER:
                raise ProtocolError(ErrorCode.INTERNAL, self.error)
            self._starting = asyncio.ensure_future(self._start())
            self._starting.add_done_callback(lambda _: setattr(self, "_starting", None))
        await asyncio.shield(self._starting)  # a caller's timeout must not cancel the start others wait on
        return self._run.session

    async def _start(self) -> None:
        await self._end_run()  # a crashed run's remains (its task, its directory)
        loop = asyncio.get_running_loop()
        run = _Run(loop.create_future(), loop.create_future())
        # after a startup timeout nobody awaits `ready` any more: mark its exception seen, or asyncio logs it at exit
        run.ready.add_done_callback(lambda done: done.cancelled() or done.exception())
        run.task = asyncio.create_task(self._lifetime(run))
        self._run = run
        try:
            listing = await asyncio.wait_for(asyncio.shield(run.ready), self.config.startup_timeout)
        except TimeoutError:
            self._kill(run)
            await asyncio.gather(run.task, return_exceptions=True)
            self._fail(f"tool server {self.name!r} did not start within {self.config.startup_timeout:g}s", run)
        except Exception as error:
            await asyncio.gather(run.task, return_exceptions=True)
            self._fail(f"tool server {self.name!r} failed to start: {_describe(error)}", run)
        self.error = ""
        self._install(listing)
        log.info("tool server %s up: %d tools", self.name, len(self.tools))

    def _fail(self, message: str, run: _Run):
        if run.pipes is not None and run.pipes.exited.done():
            message += f" (exit code {run.pipes.exited.result()})"
        if run.pipes is not None and run.pipes.stderr_tail:
            message += f"; stderr: {run.pipes.stderr_text()}"
        self.error, self._failed_at = message, time.monotonic()
        log.warning("%s", message)
        raise ProtocolError(ErrorCode.INTERNAL, message)

    async def _lifetime(self, run: _Run) -> None:
        """Owns the process and session for one life; returns when the process exits or stop is asked."""
        config = self.config
        workdir = make_workdir(config.name) if config.sandbox else None
        argv = launcher_argv(config.limits, workdir, config.argv(), hide=self.hide) if config.sandbox else config.argv()
        env = build_env(config.pass_env, config.env, workdir, PROJECT_ROOT)
        try:
            # Generous room for JSON escaping and a structured copy of the text; the text is cut to the limit later.
            async with open_stdio(config.name, argv, env, workdir, 4 * config.max_output_bytes + 65536) as pipes:
                run.pipes = pipes
                async with ClientSession(pipes.read_stream, pipes.write_stream) as session:
                    await session.initialize()
                    listing = await _list_tools(session)
                    run.session = session
                    run.ready.set_result(listing)
                    await asyncio.wait([pipes.exited, run.stop], return_when=asyncio.FIRST_COMPLETED)
        except Exception as error:
            if not run.ready.done():
                run.ready.set_exception(error)
            elif not run.stop.done():
                log.warning("tool server %s ended: %s", config.name, _describe(error))
        finally:
            run.session = None
            remove_workdir(workdir)
            if not run.ready.done():
                run.ready.set_exception(RuntimeError("ended before it was ready"))

    def _install(self, listing: list[mcp_types.Tool]) -> None:
        old, self.tools = self.tools, {}
        for tool in listing:
            schema = compile_schema(tool.input_schema)
            irreversible = tool.name in self.config.irreversible or bool(
                tool.annotations is not None and tool.annotations.destructive_hint is True
            )
            # Safe to start before the agent asks: the config says so, or the server marks it read-only or idempotent
            # (never a tool that needs approval).
            hints = tool.annotations
            early = not irreversible and (
                tool.name in self.config.early_start
                or bool(hints is not None and (hints.read_only_hint is True or hints.idempotent_hint is True))
            )
            spec = ToolSpec(tool.name, tool.description or "", schema.visible, self.name, irreversible, early)
            # Keep the semaphore of a tool that survives a restart: calls in flight still hold it.
            previous = old.get(tool.name)
            semaphore = previous.semaphore if previous else asyncio.Semaphore(self.config.concurrency)
            self.tools[tool.name] = Tool(spec, schema, semaphore)

    async def call(self, tool: Tool, arguments: dict, timeout: float) -> ToolResult:
        if tool.semaphore.locked() and tool.waiting >= self.config.queue:
            raise ProtocolError(
                ErrorCode.BUSY,
                f"{tool.spec.name}: {self.config.concurrency} calls running and {self.config.queue} waiting",
            )
        try:
            async with asyncio.timeout(timeout):
                tool.waiting += 1
                try:
                    await tool.semaphore.acquire()
                finally:
                    tool.waiting -= 1
                try:
                    session = await self.ensure_started()
                    run = self._run
                    result = await self._call_once(run, session, tool.spec.name, arguments)
                finally:
                    tool.semaphore.release()
        except TimeoutError:
            raise ProtocolError(TIMEOUT_CODE, f"{tool.spec.name} timed out after {timeout:g}s") from None
        return to_result(result, self.config.max_output_bytes)

    async def _call_once(self, run: _Run, session: ClientSession, name: str, arguments: dict):
        try:
            return await session.call_tool(name, arguments)
        except MCPError as error:
            if run.pipes.exited.done() or "closed" in str(error).lower():
                # The process died or its pipe did: make sure it is gone, so the next call starts a fresh one.
                self._kill(run)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(run.pipes.exited), 5)
                code = run.pipes.exited.result() if run.pipes.exited.done() else "?"
                raise ProtocolError(
                    ErrorCode.INTERNAL,
                    f"tool server {self.name!r} crashed during {name} (exit "
                    f"code {code}); it restarts on the next call; stderr: "
                    f"{run.pipes.stderr_text()}",
                ) from None
            return mcp_types.CallToolResult(
                content=[mcp_types.TextContent(type="text", text=str(error))], is_error=True
            )

    def _kill(self, run: _Run) -> None:
        if run.pipes is not None and run.pipes.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pipes.process.pid, signal.SIGKILL)

    async def _end_run(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        if not run.stop.done():
            run.stop.set_result(None)
        if run.task is not None:
            await asyncio.gather(run.task, return_exceptions=True)

    async def stop(self) -> None:
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        await self._end_run()


async def _list_tools(session: ClientSession) -> list[mcp_types.Tool]:
    tools, cursor = [], None
    while len(tools) < MAX_TOOLS:
        page = await session.list_tools(params=mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools[:MAX_TOOLS]


def to_result(result, max_bytes: int) -> ToolResult:
    parts = []
    for block in result.content:
        if block.type == "text":
            parts.append(block.text)
        else:  # images, audio, resources: described, never inlined into the agent's text
            parts.append(f"[{block.type} content{' ' + block.mime_type if getattr(block, 'mime_type', None) else ''}]")
    text = "\n".join(parts)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content)
    truncated = bool((result.meta or {}).get(TRUNCATED_META))
    encoded = text.encode("utf-8")
    if len(encoded) > max_bytes:
        text, truncated = encoded[:max_bytes].decode("utf-8", "ignore"), True
    return ToolResult(text=text, is_error=bool(result.is_error), truncated=truncated)


def _describe(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:  # the session's task group wraps the cause
        error = error.exceptions[0]
    if isinstance(error, FileNotFoundError):
        return f"command not found: {error.filename or error}"
    if isinstance(error, MCPError) and "closed" in str(error).lower():
        return "the process closed its connection"
    return f"{type(error).__name__}: {error}"
