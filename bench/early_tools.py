"""Early tool starts measured: agents that chat, call the tool the model chose, and chat again, through aiosd, with
early starts and without, side by side in one run, so a loaded machine weighs on both alike.

    python -m bench.early_tools --agents 4 --rounds 3 --tool-s 1.0 --repeats 3               # mixed (default)
    python -m bench.early_tools --mode servers --repeats 3

- mixed: one aiosd (`--early-tools on`); in each repeat half the agents opt out per call (Chat.early_tools=False),
  which half alternating between repeats: both settings share every batch and every moment of the machine's load.
- servers: aiosd with `--early-tools on`, then `off`, alternated (on, off, on, off, ...): the switch itself, end to end,
  but each run meets the load of its own minutes.

Each agent is its own connection (a thread of this process): per round one chat offering the bench's `lookup` tool
(bench/tool_server.py: read-only, sleeps --tool-s) with tool_choice naming it, so the model writes a call; then the
tool.call of what the model wrote; then the tool's answer goes back into the conversation. An agent's completion time
is its first chat's start to its last tool result. The table: mean agent completion per setting, the ratio off / on
(> 1: early starts are faster), and the kernel's early-start counters of the "on" runs. Wall times depend on the
machine's load: compare the two settings of one run only.

Measured (mixed, AMD EPYC Zen 4, 2 cores, box loaded by other work; ratios of one run): 4 agents x 3 rounds, 1 s
tool, 4 repeats: off / on 1.06x (7.97 vs 7.51 s); 8 agents x 3 rounds, 0.5 s tool, 4 repeats: 1.10x (19.83 vs 17.96 s);
early starts faster in every repeat of both, every call of an early-start agent answered by its early run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import sdk
from kernel.launch import KernelProcess

OPTIONS = {"max-batch": "8", "kv-budget": "8192", "memory": "off", "storage": "off"}
QUESTION = "Find the catalogue entry for the key '{key}' and tell me what it says."


def tools_config(directory: Path, tool_s: float) -> Path:
    config = directory / "tools.toml"
    config.write_text(
        "[defaults]\nconcurrency = 32\nqueue = 32\ntimeout = 120\n\n"
        "[servers.bench]\n"
        'command = ["python", "-m", "bench.tool_server"]\n'
        f'env = {{ BENCH_LOOKUP_S = "{tool_s}" }}\n'
    )
    return config


def agent_program(address: str, index: int, rounds: int, early: bool, out: dict, errors: list) -> None:
    try:
        with sdk.connect(address, name=f"early-bench-{index}", timeout=600) as k:
            tools = [t for t in k.tools.as_openai() if t["function"]["name"] == "lookup"]
            messages = [{"role": "user", "content": QUESTION.format(key=f"item{index}")}]
            choice = {"type": "function", "function": {"name": "lookup"}}
            started = time.monotonic()
            for _ in range(rounds):
                reply = k.chat(messages, tools=tools, tool_choice=choice, max_tokens=48, full=True, early_tools=early)
                if not reply.tool_calls:
                    raise RuntimeError(f"the model wrote no call: {reply.text[:80]!r}")
                call = reply.tool_calls[0]
                result = k.tools.call(call.name, json.loads(call.arguments))
                messages += [
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": call.arguments},
                            }
                        ],
                    },
                    {"role": "tool", "content": result.text, "tool_call_id": call.id},
                ]
            out[index] = (early, time.monotonic() - started)
    except Exception as error:  # reported in the table: an agent that failed is not counted
        errors.append(f"agent {index}: {type(error).__name__}: {error}")


COUNTERS = ("early_tool_starts", "early_tool_claims", "early_tool_expired")


def agents_round(address: str, args, early_of) -> tuple[list[tuple[bool, float]], list[str]]:
    """Every agent at once; (early, completion seconds) per agent that finished, and the failures."""
    times, errors = {}, []
    threads = [
        threading.Thread(target=agent_program, args=(address, i, args.rounds, early_of(i), times, errors))
        for i in range(args.agents)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return list(times.values()), errors


def kernel_runs(early: str, args, workdir: Path, config: Path, run: int, repeats: int, mixed: bool) -> list[dict]:
    """One aiosd, `repeats` rounds of agents; mixed: half the agents opt out, which half alternating."""
    address = f"ipc://{workdir}/k{run}.sock"
    options = {**OPTIONS, "tools": str(config), "early-tools": early}
    results = []
    with KernelProcess(address, options, workdir / f"aiosd-{run}-{early}.log") as kernel:
        with sdk.connect(kernel.address, name="early-bench-warmup", timeout=600) as k:
            k.chat([{"role": "user", "content": "hi"}], max_tokens=2)
            for repeat in range(repeats):
                before = k.stats()
                times, errors = agents_round(
                    address, args, (lambda i, r=repeat: (i + r) % 2 == 0) if mixed else (lambda i: early == "on")
                )
                after = k.stats()
                counters = {key: after.get(key, 0) - before.get(key, 0) for key in COUNTERS}
                results.append({"times": times, "errors": errors, **counters})
                report(len(results) + run, early if not mixed else "mixed", results[-1])
    return results


def report(number: int, setting: str, result: dict) -> None:
    parts = []
    for early in (True, False):
        times = [t for e, t in result["times"] if e is early]
        if times:
            parts.append(f"{'on' if early else 'off'} {statistics.mean(times):.2f} s ({len(times)})")
    print(
        f"run {number} {setting}: mean agent completion {', '.join(parts)}; "
        + ", ".join(f"{key} {result[key]}" for key in COUNTERS)
        + f", failed {len(result['errors'])}",
        file=sys.stderr,
        flush=True,
    )
    for error in result["errors"]:
        print("  " + error, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("mixed", "servers"), default="mixed")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tool-s", type=float, default=1.0, help="seconds each tool call sleeps")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of agents (servers: on/off pairs)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="aios-early-"))
    config = tools_config(workdir, args.tool_s)
    results = []
    if args.mode == "mixed":
        results += kernel_runs("on", args, workdir, config, 0, args.repeats, mixed=True)
    else:
        for _ in range(args.repeats):
            for early in ("on", "off"):
                results += kernel_runs(early, args, workdir, config, len(results), 1, mixed=False)
    by = {e: [t for r in results for on, t in r["times"] if on is e] for e in (True, False)}
    on, off = statistics.mean(by[True]), statistics.mean(by[False])
    print(f"\n{args.mode}: {args.agents} agents x {args.rounds} rounds, tool {args.tool_s:g} s, {args.repeats} repeats")
    print("| early tools | mean agent completion (s) | agents |")
    print("|---|---|---|")
    print(f"| on | {on:.2f} | {len(by[True])} |")
    print(f"| off | {off:.2f} | {len(by[False])} |")
    print(f"off / on: {off / on:.3f}x")
    claims = sum(r["early_tool_claims"] for r in results)
    print(f"{claims} of {len(by[True]) * args.rounds} tool calls of early-start agents answered by an early start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
