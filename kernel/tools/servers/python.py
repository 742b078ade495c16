"""The python runner as an MCP server: `run_python(code, timeout)` runs a snippet and returns its exit code and output.

The server itself runs inside the sandbox (kernel/tools/sandbox.py: as root, uid/gid 65534 with no groups or
capabilities; mount, PID, network and user namespaces: the kernel's runtime and data directories covered, the rest of
the tree read-only but its private directory, no other process in sight, no network; a task budget; an allowlisted
environment). Each snippet is a fresh `python -I -c CODE` process
started through the same launcher (`--nested`) with tighter limits of its own: CPU seconds (timeout + 1), 1 GiB of
address space (a 10 GB allocation raises MemoryError), 64 open files, 16 MiB per written file; it runs in a new
temporary directory (removed after), in a process group of its own that is SIGKILLed when the timeout passes, with an
environment of PATH, LANG and HOME only. Its stdout and stderr are read concurrently and kept up to MAX_STREAM_BYTES
each (the rest is read and dropped, so a snippet that prints 100 MB neither blocks nor fills the server's memory).
A fork bomb meets the sandbox's task budget (RLIMIT_NPROC, counted in the server's user namespace): forks fail with
EAGAIN and the group is killed at the timeout. A snippet that failed, timed out or was killed is a tool error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from kernel.tools.sandbox import SandboxLimits, launcher_argv

MAX_STREAM_BYTES = 32 * 1024
MAX_CODE_CHARS = 100_000
MAX_TIMEOUT_S = 30.0
SNIPPET_LIMITS = SandboxLimits(cpu_seconds=None, memory_mb=1024, open_files=64, processes=None, file_size_mb=16)


def build() -> MCPServer:
    server = MCPServer("python", log_level="WARNING")

    @server.tool(structured_output=False)
    async def run_python(
        code: Annotated[str, Field(max_length=MAX_CODE_CHARS)],
        timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)] = 10.0,
    ) -> str:
        """Run a Python snippet in a sandbox (no network, limited memory and CPU); returns exit code, stdout, stderr."""
        code_out, stdout, stderr, timed_out = await run_snippet(code, timeout)
        report = f"exit code: {code_out}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        if timed_out:
            raise ToolError(f"timed out after {timeout:g}s\n{report}")
        if code_out != 0:
            raise ToolError(report)
        return report

    return server


async def run_snippet(code: str, timeout: float) -> tuple[int, str, str, bool]:
    workdir = tempfile.mkdtemp(prefix="snippet-", dir=os.getcwd())
    limits = SandboxLimits(**{**SNIPPET_LIMITS.__dict__, "cpu_seconds": int(timeout) + 1})
    argv = launcher_argv(limits, workdir, [sys.executable, "-I", "-c", code], nested=True)
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "HOME": workdir}
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
        readers = asyncio.gather(_read_bounded(process.stdout), _read_bounded(process.stderr))
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            timed_out = True
        # The whole group: a snippet's children (a fork bomb's survivors) go with it, and the pipes reach EOF.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        stdout, stderr = await readers
        return process.returncode, stdout, stderr, timed_out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _read_bounded(stream: asyncio.StreamReader) -> str:
    kept, dropped = bytearray(), 0
    while chunk := await stream.read(65536):
        room = MAX_STREAM_BYTES - len(kept)
        kept += chunk[: max(room, 0)]
        dropped += max(len(chunk) - max(room, 0), 0)
    text = kept.decode("utf-8", "replace")
    return text + (f"\n[... {dropped} more bytes dropped]" if dropped else "")


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
