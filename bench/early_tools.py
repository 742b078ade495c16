"""Early tool starts measured: agents that chat, call the tool the model chose, and chat again, through aiosd with
`--early-tools on` and `off`, alternated in one run (on, off, on, off, ...), so a loaded machine weighs on both alike.

    python -m bench.early_tools --agents 4 --rounds 3 --tool-s 1.0 --repeats 2

Each agent is its own connection (a thread of this process): per round one chat offering the bench's `lookup` tool
(bench/tool_server.py: read-only, sleeps --tool-s) with tool_choice naming it, so the model writes a call; then the
tool.call of what the model wrote; then the tool's answer goes back into the conversation. An agent's completion time
is its first chat's start to its last tool result. The table: mean agent completion per setting, the ratio off / on
(> 1: early starts are faster), and the kernel's early-start counters of the "on" runs. Wall times depend on the
machine's load: compare the two settings of one run only.
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


def agent_program(address: str, index: int, rounds: int, out: dict, errors: list) -> None:
    try:
        with sdk.connect(address, name=f"early-bench-{index}", timeout=600) as k:
            tools = [t for t in k.tools.as_openai() if t["function"]["name"] == "lookup"]
            messages = [{"role": "user", "content": QUESTION.format(key=f"item{index}")}]
            choice = {"type": "function", "function": {"name": "lookup"}}
            started = time.monotonic()
            for _ in range(rounds):
                reply = k.chat(messages, tools=tools, tool_choice=choice, max_tokens=48, full=True)
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
            out[index] = time.monotonic() - started
    except Exception as error:  # reported in the table: an agent that failed is not counted
        errors.append(f"agent {index}: {type(error).__name__}: {error}")


def one_run(early: str, args, workdir: Path, config: Path, run: int) -> dict:
    address = f"ipc://{workdir}/k{run}.sock"
    options = {**OPTIONS, "tools": str(config), "early-tools": early}
    with KernelProcess(address, options, workdir / f"aiosd-{run}-{early}.log") as kernel:
        with sdk.connect(kernel.address, name="early-bench-warmup", timeout=600) as k:
            k.chat([{"role": "user", "content": "hi"}], max_tokens=2)
            times, errors = {}, []
            threads = [
                threading.Thread(target=agent_program, args=(address, i, args.rounds, times, errors))
                for i in range(args.agents)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            stats = k.stats()
    counters = {key: stats.get(key, 0) for key in ("early_tool_starts", "early_tool_claims", "early_tool_expired")}
    return {"early": early, "times": list(times.values()), "errors": errors, **counters}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tool-s", type=float, default=1.0, help="seconds each tool call sleeps")
    parser.add_argument("--repeats", type=int, default=2, help="on/off pairs, alternated")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="aios-early-"))
    config = tools_config(workdir, args.tool_s)
    runs = []
    for _ in range(args.repeats):
        for early in ("on", "off"):
            result = one_run(early, args, workdir, config, len(runs))
            runs.append(result)
            mean = statistics.mean(result["times"]) if result["times"] else float("nan")
            print(
                f"run {len(runs)} early={early}: mean agent completion {mean:.2f} s, "
                f"starts {result['early_tool_starts']} claims {result['early_tool_claims']} "
                f"expired {result['early_tool_expired']}, "
                f"failed {len(result['errors'])}",
                file=sys.stderr,
                flush=True,
            )
            for error in result["errors"]:
                print("  " + error, file=sys.stderr)
    by = {e: [t for r in runs if r["early"] == e for t in r["times"]] for e in ("on", "off")}
    on, off = statistics.mean(by["on"]), statistics.mean(by["off"])
    print(f"\n{args.agents} agents x {args.rounds} rounds, tool {args.tool_s:g} s, {args.repeats} on/off pairs")
    print("| early tools | mean agent completion (s) | agents |")
    print("|---|---|---|")
    print(f"| on | {on:.2f} | {len(by['on'])} |")
    print(f"| off | {off:.2f} | {len(by['off'])} |")
    print(f"off / on: {off / on:.3f}x")
    claims = sum(r["early_tool_claims"] for r in runs if r["early"] == "on")
    calls = args.agents * args.rounds * args.repeats
    print(f"on runs: {claims} of {calls} tool calls answered by an early start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
