"""Cost of grammar-constrained decoding per token, next to unconstrained decoding of the same shape, in the same run.

    python -m bench.constrained_bench [--batches 1 8] [--runs 3] [--max-tokens 48] [--dtype float32]

For each batch size B: B distinct chat prompts carrying the same two tools (render_tool_prompt), decoded greedily
under tool_choice "required" (tool_call_grammar: the call's JSON constrained by each tool's schema). Each constrained
request i ends when its call is complete, after L_i tokens; the unconstrained twin run decodes the same prompts with
max_tokens = L_i and ignore_eos, so both runs have the same batch shape at every step and differ only by the masks.
The engine prefills every prompt in the first step (prefill_chunk large); only the steps after it are timed. Runs
alternate constrained / unconstrained; the table shows medians, the ratio is constrained / unconstrained, the target
is at most 1.10. A warm-up pass first pays the one-time costs (llguidance's token table, grammar compilation).
"""

from __future__ import annotations

import argparse
import statistics
import time

from kernel.engine.process_env import configure_process_env

# This script runs an engine in its own process: the settings its runtimes read when torch loads, set first.
configure_process_env()

from kernel.engine.core.interface import EngineRequest, SamplingParams  # noqa: E402
from kernel.engine.cpu.engine import TorchEngine  # noqa: E402
from kernel.engine.structured.tool_calls import tool_call_grammar  # noqa: E402
from kernel.engine.structured.tool_prompt import render_tool_prompt  # noqa: E402

TARGET_RATIO = 1.10
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "required": ["city", "unit"],
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 14},
                },
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression",
            "parameters": {
                "type": "object",
                "required": ["expression"],
                "properties": {"expression": {"type": "string"}},
            },
        },
    },
]
QUESTIONS = [
    "What is the weather in Paris?",
    "What is 17 * 23 + 4?",
    "Will it rain in Tokyo tomorrow?",
    "Compute 2 to the power of 10.",
    "How warm is it in Cairo in fahrenheit?",
    "What is 144 / 12?",
    "Weather forecast for Berlin for 3 days?",
    "What is 3.5 * 7?",
]


def decode(engine, prompts: list[list[int]], params: list[SamplingParams]) -> tuple[float, int, list[int]]:
    """(seconds of the timed steps, tokens they produced, output length of each request)."""
    for i, (prompt, p) in enumerate(zip(prompts, params)):
        engine.add(EngineRequest(f"r{i}", prompt, p))
    lengths = [0] * len(prompts)
    step, elapsed, timed_tokens = 0, 0.0, 0
    while engine.has_work():
        start = time.perf_counter()
        events = engine.step()
        took = time.perf_counter() - start
        produced = [e for e in events if e.token_id >= 0]
        for event in produced:
            lengths[int(event.req_id[1:])] += 1
        if step > 0:  # step 0 prefills every prompt
            elapsed += took
            timed_tokens += len(produced)
        step += 1
    return elapsed, timed_tokens, lengths


def measure(engine, batch: int, runs: int, max_tokens: int) -> dict:
    prompts = [
        engine.apply_chat_template(
            render_tool_prompt([{"role": "user", "content": QUESTIONS[i % 8]}], TOOLS, "required")
        )
        for i in range(batch)
    ]
    grammar = tool_call_grammar(TOOLS, "required")
    constrained = [SamplingParams(max_tokens=max_tokens, grammar=grammar)] * batch
    c_times, u_times, lengths = [], [], []
    for _ in range(runs):
        seconds, tokens, lengths = decode(engine, prompts, constrained)
        c_times.append(seconds / max(tokens, 1))
        free = [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths]
        seconds, tokens, _ = decode(engine, prompts, free)
        u_times.append(seconds / max(tokens, 1))
    c, u = statistics.median(c_times), statistics.median(u_times)
    return {
        "batch": batch,
        "tokens": sum(lengths),
        "unconstrained_ms": 1e3 * u,
        "constrained_ms": 1e3 * c,
        "ratio": c / u,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    engine = TorchEngine.from_path(
        args.model, args.dtype, kv_budget_tokens=16384, max_batch=max(args.batches), prefill_chunk=8192
    )
    measure(engine, 1, 1, 8)  # warm-up: token table, grammar compilation, kernels
    rows = [measure(engine, b, args.runs, args.max_tokens) for b in args.batches]
    print(
        f"{'batch':>5} {'tokens':>6} {'free ms/tok':>12} {'constrained ms/tok':>19} {'ratio':>6}  target <= "
        f"{TARGET_RATIO:.2f}"
    )
    for r in rows:
        verdict = "ok" if r["ratio"] <= TARGET_RATIO else "OVER"
        print(
            f"{r['batch']:>5} {r['tokens']:>6} {r['unconstrained_ms']:>12.2f} {r['constrained_ms']:>19.2f} "
            f"{r['ratio']:>6.3f}  {verdict}"
        )
    return rows


if __name__ == "__main__":
    main()
