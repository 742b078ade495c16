"""Tool-call round trips: the calculator MCP server called directly over the mcp SDK's stdio client, and the same
server through the kernel's ToolManager in-process (schema check, per-tool limits, the manager's loop thread hop).
The syscall path (agent → aiosd tool.call → manager) is a column the kernel wiring adds next to these.

    python -m bench.tools_bench [--calls N]

`tool_call_direct(calls)` and `tool_call_manager(calls)` return {"p50_ms", "p99_ms", "mean_ms", "calls"} for
`calculate("17 * 23 + 4")`, each after a warm-up, timed call by call with the server already initialized.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from mcp import ClientSession, StdioServerParameters, stdio_client

EXPRESSION = {"expression": "17 * 23 + 4"}
WARMUP = 20


def summarize(samples_s: list[float]) -> dict:
    ordered = sorted(samples_s)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3  # noqa: E731
    return {
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "calls": len(ordered),
    }


def tool_call_direct(calls: int = 300) -> dict:
    """The calculator server spawned and called over the SDK's own stdio client, as an agent would without aiosd."""

    async def measure() -> list[float]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "kernel.tools.servers.calculator"])
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            samples = []
            for index in range(WARMUP + calls):
                began = time.perf_counter()
                result = await session.call_tool("calculate", EXPRESSION)
                elapsed = time.perf_counter() - began
                assert result.content[0].text == "395", result
                if index >= WARMUP:
                    samples.append(elapsed)
            return samples

    return summarize(asyncio.run(measure()))


def tool_call_manager(calls: int = 300) -> dict:
    """The same server (sandboxed, as configured by default) through ToolManager.call from a caller thread."""
    from kernel.tools import ToolManager, ToolsConfig, load_config

    manager = ToolManager(ToolsConfig(servers=[load_config(None).server("calculator")]))
    try:
        errors = manager.start(timeout=120)
        assert not errors, errors
        samples = []
        for index in range(WARMUP + calls):
            began = time.perf_counter()
            result = manager.call("calculate", EXPRESSION, {"space": "bench/agent"}).result(60)
            elapsed = time.perf_counter() - began
            assert result.text == "395", result
            if index >= WARMUP:
                samples.append(elapsed)
        return summarize(samples)
    finally:
        manager.stop()


def tool_call_syscall(calls: int = 300) -> dict:
    """The same server through aiosd: an agent's tool.call syscall (I/O thread → loop → manager → reply worker)."""
    import tempfile
    from pathlib import Path

    from kernel.launch import KernelProcess
    from sdk import connect

    with (
        tempfile.TemporaryDirectory(prefix="aios-tools-bench-") as workdir,
        KernelProcess(
            f"ipc://{workdir}/kernel.sock", {"dtype": "float32", "tools": "default"}, Path(workdir) / "aiosd.log"
        ) as kernel,
        connect(kernel.address, name="tools-bench") as k,
    ):
        samples = []
        for index in range(WARMUP + calls):
            began = time.perf_counter()
            output = k.tools.call("calculate", EXPRESSION)
            elapsed = time.perf_counter() - began
            assert output.text == "395", output
            if index >= WARMUP:
                samples.append(elapsed)
        return summarize(samples)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    rows = {
        "direct (mcp stdio client)": tool_call_direct(args.calls),
        "ToolManager.call (in-process)": tool_call_manager(args.calls),
        "tool.call syscall via aiosd": tool_call_syscall(args.calls),
    }
    print(f"{'calculate round trip':32} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'calls':>6}")
    for name, row in rows.items():
        print(f"{name:32} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['mean_ms']:8.2f} {row['calls']:6d}")
    return rows


if __name__ == "__main__":
    main()
