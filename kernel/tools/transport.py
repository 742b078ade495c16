"""The stdio pipes to one MCP server process, bounded: `open_stdio(...)` spawns it and yields a `Pipes`.

Why not the SDK's stdio_client: it reads each JSON-RPC line whole, so a server that answers with 100 MB makes the
kernel hold (and pydantic parse) 100 MB; and it gives no hook for the launcher's environment, stderr tail or exit
watch. Here:
- a stdout line longer than `max_message_bytes` is never held: its first `max_message_bytes` are kept, the rest is
  read and dropped, and if the head is a tools/call response, the call gets a result made from the head (its text
  cut where the head ends) marked `_meta["aios/truncated"]`; an unrecognizable oversize line is dropped (logged);
- stderr is drained always (a full stderr pipe would stall the server), its last lines kept for error messages;
- the process starts in a new session: leaving the context closes stdin, waits `grace` seconds, then SIGKILLs the
  whole process group and reaps the child (no zombie), whatever state the server is in;
- `Pipes.exited` completes when the process exits (the supervisor's crash signal); stdout EOF closes the read stream,
  so requests pending in the ClientSession fail at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import signal
from dataclasses import dataclass, field

import anyio
import mcp_types
from mcp.shared.message import SessionMessage

log = logging.getLogger(__name__)

TRUNCATED_META = "aios/truncated"
STDERR_LINES = 20
_ID = re.compile(rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.){0,200}")')
_TEXT = b'"text":"'


@dataclass
class Pipes:
    read_stream: object
    write_stream: object
    process: asyncio.subprocess.Process
    exited: asyncio.Future
    stderr_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=STDERR_LINES))

    def stderr_text(self) -> str:
        return " | ".join(self.stderr_tail)


@contextlib.asynccontextmanager
async def open_stdio(
    name: str, argv: list[str], env: dict[str, str], cwd: str | None, max_message_bytes: int, grace: float = 1.0
):
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](16)
    pipes = Pipes(read_recv, write_send, process, asyncio.get_running_loop().create_future())
    tasks = [
        asyncio.create_task(coro)
        for coro in (
            _read_stdout(name, process, read_send, max_message_bytes),
            _write_stdin(process, write_recv, read_send),
            _read_stderr(name, process, pipes.stderr_tail),
            _watch_exit(process, pipes.exited),
        )
    ]
    try:
        yield pipes
    finally:
        await _stop(process, grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in (read_send, read_recv, write_send, write_recv):
            stream.close()


async def _stop(process: asyncio.subprocess.Process, grace: float) -> None:
    with contextlib.suppress(Exception):
        process.stdin.close()
    if process.returncode is None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
    # Always, even after a clean exit: children it left behind (a runner's snippet) share its process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(process.wait()), 10)


async def _watch_exit(process: asyncio.subprocess.Process, exited: asyncio.Future) -> None:
    code = await process.wait()
    if not exited.done():
        exited.set_result(code)


async def _read_stderr(name: str, process: asyncio.subprocess.Process, tail: collections.deque) -> None:
    while chunk := await process.stderr.read(65536):
        for line in chunk.decode("utf-8", "replace").splitlines():
            if line.strip():
                tail.append(line.strip()[:300])
                log.debug("tool server %s: %s", name, line[:300])


async def _write_stdin(process: asyncio.subprocess.Process, write_recv, read_send) -> None:
    try:
        async for message in write_recv:
            data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
            process.stdin.write(data.encode("utf-8"))
            await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError, anyio.ClosedResourceError):
        # The server is gone or going: let pending requests fail now rather than at their timeouts.
        await read_send.aclose()


async def _read_stdout(name: str, process: asyncio.subprocess.Process, read_send, max_bytes: int) -> None:
    line = bytearray()
    head: bytes | None = None  # set while inside an oversize line: its first max_bytes
    try:
        while chunk := await process.stdout.read(65536):
            start = 0
            while True:
                end = chunk.find(b"\n", start)
                piece = chunk[start:] if end < 0 else chunk[start:end]
                if head is None:
                    if len(line) + len(piece) > max_bytes:
                        head = bytes(line + piece[: max_bytes - len(line)])
                        line.clear()
                    else:
                        line += piece
                if end < 0:
                    break
                message = _parse(bytes(line)) if head is None else _truncated(name, head)
                line.clear()
                head = None
                if message is not None:
                    await read_send.send(message)
                start = end + 1
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        await read_send.aclose()


def _parse(line: bytes) -> SessionMessage | Exception | None:
    if not line.strip():
        return None
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as error:
        # Handed to the session as a value, as the SDK's transport does (a server printing junk to stdout).
        return error


def _truncated(name: str, head: bytes) -> SessionMessage | None:
    """A result built from the first bytes of an oversize response; None if they do not look like one."""
    found = _ID.search(head[:512])
    if not head.lstrip().startswith(b"{") or found is None or b'"result"' not in head:
        log.warning("tool server %s: dropped an oversize message (%d+ bytes) with no request id", name, len(head))
        return None
    at = head.find(_TEXT)
    text, whole = _partial_json_string(head[at + len(_TEXT) :]) if at >= 0 else ("", False)
    result = {"content": [{"type": "text", "text": text}], "isError": False, "_meta": {TRUNCATED_META: not whole}}
    message = {"jsonrpc": "2.0", "id": json.loads(found.group(1)), "result": result}
    return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_python(message, by_name=False))


def _partial_json_string(raw: bytes) -> tuple[str, bool]:
    """The decoded JSON string starting at raw (just after its opening quote), and whether it ended within raw."""
    body = raw.decode("utf-8", "ignore")  # the cut may split a character: drop the fragment
    with contextlib.suppress(ValueError):
        return json.decoder.scanstring(body, 0)[0], True
    for cut in range(0, 8):  # the cut may split an escape such as \u00e9: back off a few chars
        with contextlib.suppress(ValueError):
            return json.decoder.scanstring(body[: len(body) - cut] + '"', 0)[0], False
    return "", False
