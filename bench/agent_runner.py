"""Replay one agent's program from a trace, as its own OS process: LLM calls, tool gaps, growing history.

    python -m bench.agent_runner --trace T.json --agent ID --out RECORDS.jsonl --t0 EPOCH
        (--address A [--kernel-tools] | --llama-url http://127.0.0.1:PORT/v1 | --no-kernel)

Every call sets ignore_eos, so outputs have exactly the trace's lengths. The runner waits for its arrival time
(t0 + arrival), then runs the calls in order, appending one RequestRecord per call and one AgentRecord at the end.
Tool gaps run in the runner's own process, or with --kernel-tools as kernel tool calls (aiosd started with
bench/agentic_tools.toml), so the kernel sees the agent wait on each tool.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.backends import Backend, KernelBackend, LocalEngineBackend
from bench.llama_backend import LlamaServerBackend
from bench.records import AgentRecord, RequestRecord, write_record
from bench.trace import AgentProgram, Trace, TraceError, load_trace

# Slots the no-kernel engine reserves past the program's own text and outputs (tokenisation at text joins may differ).
KV_MARGIN_TOKENS = 64


def kv_tokens_needed(trace: Trace, program: AgentProgram) -> int:
    """An upper bound on the longest sequence the program builds (its whole history when it grows)."""
    prefix = len(trace.prefixes[program.prefix].split()) if program.prefix else 0  # one token per word (bench.text)
    if program.history:
        longest = sum(call.text_tokens + call.max_tokens for call in program.calls)
    else:
        longest = max(call.text_tokens + call.max_tokens for call in program.calls)
    return prefix + longest + KV_MARGIN_TOKENS


def run_program(
    trace: Trace,
    program: AgentProgram,
    backend: Backend,
    out: Path,
    t0: float,
    load_seconds: float = 0.0,
    ready_at: float | None = None,
) -> bool:
    """Run every call; True when all succeeded. ready_at (seconds since t0) is when the agent could first run."""
    prefix = trace.prefixes[program.prefix] if program.prefix else ""
    prompt = prefix
    tool_seconds, error = 0.0, None
    for index, call in enumerate(program.calls):
        prompt = (prompt if program.history else prefix) + call.text
        submitted = time.time() - t0
        try:
            outcome = backend.generate(prompt, call.max_tokens)
        except Exception as err:  # a kernel error or a dead engine: record it and stop this agent's program
            error = f"{type(err).__name__}: {err}"
            write_record(
                out,
                RequestRecord(
                    program.agent_id,
                    program.kind,
                    program.priority,
                    index,
                    submitted,
                    None,
                    time.time() - t0,
                    0,
                    0,
                    call.max_tokens,
                    0.0,
                    error,
                ),
            )
            break
        finished = time.time() - t0
        # A call that had to wait for the agent's process to get a CPU slot (no-kernel baseline) waited that long too.
        waited = outcome.queue_s + (max(0.0, ready_at - program.arrival_s) if index == 0 and ready_at else 0.0)
        write_record(
            out,
            RequestRecord(
                program.agent_id,
                program.kind,
                program.priority,
                index,
                submitted,
                None if outcome.ttft_s is None else submitted + outcome.ttft_s,
                finished,
                outcome.prompt_tokens,
                outcome.completion_tokens,
                call.max_tokens,
                waited,
            ),
        )
        prompt += outcome.text
        if call.tool_after is not None:
            try:
                tool_seconds += backend.run_tool(call.tool_after)
            except Exception as err:  # a kernel tool that failed or timed out: the program cannot go on
                error = f"tool {call.tool_after.kind}: {type(err).__name__}: {err}"
                break
    write_record(
        out,
        AgentRecord(
            program.agent_id,
            program.kind,
            program.priority,
            program.arrival_s,
            time.time() - t0,
            tool_seconds,
            load_seconds,
            len(program.calls),
            error,
        ),
    )
    return error is None


def wait_until(deadline_epoch: float) -> None:
    """Sleep until a wall-clock instant: the trace's arrival schedule, not a guess at readiness."""
    delay = deadline_epoch - time.time()
    if delay > 0:
        time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file the records are appended to")
    parser.add_argument("--t0", type=float, required=True, help="wall-clock epoch of the run's start")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--address", help="aiosd address")
    target.add_argument("--llama-url", help="a llama.cpp server's OpenAI API (http://HOST:PORT/v1)")
    target.add_argument("--no-kernel", action="store_true", help="load the model in this process")
    parser.add_argument("--kernel-tools", action="store_true", help="run tool gaps as kernel tool calls (--address)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (--no-kernel)")
    args = parser.parse_args(argv)
    if args.kernel_tools and not args.address:
        parser.error("--kernel-tools needs --address: only a kernel runs tools for the agent")
    try:
        trace = load_trace(args.trace)
        program = trace.agent(args.agent)
    except TraceError as err:
        print(f"agent_runner: {err}", file=sys.stderr)
        return 2
    if args.no_kernel:
        wait_until(args.t0 + program.arrival_s)
        ready_at = time.time() - args.t0
        load_start = time.monotonic()
        backend = LocalEngineBackend(args.threads, kv_tokens_needed(trace, program))
        load_seconds = time.monotonic() - load_start
    elif args.llama_url:
        backend, ready_at, load_seconds = LlamaServerBackend(args.llama_url), None, 0.0
        wait_until(args.t0 + program.arrival_s)
    else:
        backend = KernelBackend(args.address, program.agent_id, program.priority, kernel_tools=args.kernel_tools)
        ready_at, load_seconds = None, 0.0
        wait_until(args.t0 + program.arrival_s)
    try:
        ok = run_program(trace, program, backend, args.out, args.t0, load_seconds, ready_at)
    finally:
        backend.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
