"""aiosd's command line."""

from __future__ import annotations

import argparse

import zmq

from ipc.address import check_address, default_address
from ipc.curve import is_tcp
from kernel.daemon.limits import DEFAULT_HELLO_TIMEOUT_S, DEFAULT_MAX_CALLS, DEFAULT_MAX_QUEUED_TOKENS
from kernel.engine.kinds import ENGINE_KIND_HELP, EngineKind, parse_engine_kind
from kernel.services.factory import default_data_dir


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _address(text: str) -> str:
    try:
        return check_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _scheduler_option(text: str) -> tuple[str, int | float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), (int(value) if value.lstrip("-").isdigit() else float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: expected a number, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiosd", description="The AIOS kernel: serves LLM syscalls to agent processes over ZeroMQ."
    )
    parser.add_argument(
        "--address",
        type=_address,
        default=None,
        help="ipc://PATH or tcp://HOST:PORT (default: $AIOS_ADDRESS, else a socket in the runtime directory)",
    )
    parser.add_argument("--model", default=None, help="model file (default: SmolLM2-135M-Instruct GGUF)")
    parser.add_argument(
        "--engine",
        type=parse_engine_kind,
        default=EngineKind.CPU,
        metavar="{cpu,gpu,remote}",
        help=f"{ENGINE_KIND_HELP} (default: cpu)",
    )
    parser.add_argument(
        "--engine-url",
        action="append",
        default=[],
        metavar="URL",
        help="--engine remote: an OpenAI-compatible server's base URL, http://HOST:PORT/v1 "
        "(vLLM, SGLang, llama.cpp's server); repeat for a pool of replicas",
    )
    parser.add_argument(
        "--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="activations and KV cache (torch engine)"
    )
    parser.add_argument(
        "--weights",
        choices=("auto", "int4", "int8", "bf16", "fp32"),
        default=None,
        help="how the torch engine stores and multiplies weights; auto: the fastest within 3%% of the "
        "file's own weights' perplexity and 1.3x their memory, measured at load (default: auto with "
        "--dtype bfloat16, fp32 with --dtype float32, the reference path)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="the CPU engine's threads (default: $AIOS_THREADS, else the physical cores aiosd may use)",
    )
    parser.add_argument(
        "--scheduler",
        default="fifo",
        help="scheduling policy: fifo, rr, priority, sjf, las, plas (LAS over each agent's program)",
    )
    parser.add_argument("--quantum", type=_positive_int, default=None, help="round-robin time slice, in tokens")
    parser.add_argument(
        "--sched-opt",
        type=_scheduler_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a policy option, repeatable: priority aging_steps/margin/min_slice, sjf ratio/min_slice, "
        "las first_level/growth/levels/starvation_steps",
    )
    parser.add_argument("--kv-budget", type=_positive_int, default=16384, help="KV cache size, in tokens")
    parser.add_argument("--max-batch", type=_positive_int, default=32, help="most sequences per engine step")
    parser.add_argument(
        "--prefill-chunk", type=_positive_int, default=256, help="most prompt tokens per sequence per step"
    )
    parser.add_argument(
        "--arena-mb", type=_positive_int, default=256, help="shared-memory arena for KV snapshots, in MiB"
    )
    parser.add_argument(
        "--retention",
        choices=("on", "tool-aware", "off"),
        default="on",
        help="keep each agent's last context for its next call: on (least recently used evicted "
        "first), tool-aware (an agent waiting on a kernel-run tool keeps its context for about "
        "that tool's observed latency; kernel/context/tool_retention.py), off",
    )
    parser.add_argument(
        "--prefix-cache",
        choices=("on", "off"),
        default="on",
        help="let the engine reuse finished sequences' KV for requests that extend them",
    )
    parser.add_argument("--preempt-mode", choices=("snapshot", "recompute"), default="snapshot")
    parser.add_argument(
        "--lease",
        type=_positive_float,
        default=30.0,
        help="seconds of silence after which an agent on another host is reaped",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="agents' memory and files, kept across restarts (default: $XDG_DATA_HOME/aios, else ~/.local/share/aios)",
    )
    parser.add_argument("--memory", choices=("on", "off"), default="on", help="the memory service (mem.*)")
    parser.add_argument("--storage", choices=("on", "off"), default="on", help="the file service (fs.*)")
    parser.add_argument(
        "--tools",
        default="default",
        metavar="FILE|default|off",
        help="MCP tool servers: a TOML/JSON config, the built-in set (calculator, python, files, memory), or off",
    )
    parser.add_argument(
        "--tool-approval",
        choices=("ask", "allow", "deny"),
        default="ask",
        help="calls of irreversible tools: wait for `aios approve ID` (ask), or a fixed policy",
    )
    parser.add_argument(
        "--early-tools",
        choices=("on", "off"),
        default="on",
        help="start a read-only or idempotent tool as the model writes its call, the result held for the agent's "
        "tool.call (kernel/services/early_start.py)",
    )
    parser.add_argument(
        "--approval-timeout",
        type=_positive_float,
        default=300.0,
        help="seconds a held tool call waits for approval before it is denied",
    )
    parser.add_argument(
        "--audit-log",
        default=None,
        help="JSON-lines audit log of privileged calls and denials (default: audit.jsonl beside the socket)",
    )
    parser.add_argument(
        "--allow-uid",
        type=int,
        action="append",
        default=[],
        metavar="UID",
        help="also accept ipc:// agents of this uid (the socket's directory must let them reach it)",
    )
    parser.add_argument(
        "--max-calls-per-agent",
        type=_positive_int,
        default=DEFAULT_MAX_CALLS,
        help="LLM calls one agent may have in flight",
    )
    parser.add_argument(
        "--max-queued-tokens-per-agent",
        type=_positive_int,
        default=DEFAULT_MAX_QUEUED_TOKENS,
        help="prompt tokens one agent may have waiting for admission",
    )
    parser.add_argument(
        "--quota-tokens-per-minute",
        type=_non_negative_int,
        default=0,
        help="tokens (prompt + generated) each agent may use per minute, as a token bucket; a call over it is "
        "refused busy with a retry-after; an agent (a gateway key) may ask for less at hello, never more (0: off)",
    )
    parser.add_argument(
        "--quota-tokens-total",
        type=_non_negative_int,
        default=0,
        help="tokens each agent may use in all while it is connected (a quota an agent asks for at hello, as the "
        "gateway does per key, is kept under its principal and name and continues across its connections); past it "
        "calls are refused quota_exceeded (0: off)",
    )
    parser.add_argument(
        "--hello-timeout",
        type=_positive_float,
        default=DEFAULT_HELLO_TIMEOUT_S,
        help="seconds a connection may stay open without saying hello before it is dropped",
    )
    parser.add_argument(
        "--max-connections-per-principal",
        type=_positive_int,
        default=None,
        help="connections one uid (ipc://) or address (tcp://) may hold (default: 3/4 of what the "
        "descriptor limit allows, which aiosd raises to the hard limit at start)",
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    parser.add_argument(
        "--insecure-tcp",
        action="store_true",
        help="serve a tcp:// address without CurveZMQ: anyone who can reach the port can use the "
        "kernel (default: tcp:// is CURVE-encrypted and only authorized client keys connect)",
    )
    parser.add_argument(
        "--keys-dir",
        default=None,
        help="CURVE key directory for tcp:// (default: $AIOS_KEYS_DIR, else ~/.config/aios/keys; see `aios keys`)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.address = args.address or check_address(default_address())
    args.data_dir = args.data_dir or default_data_dir()
    if (args.engine is EngineKind.REMOTE) != bool(args.engine_url):
        parser.error("--engine remote needs at least one --engine-url, and --engine-url needs --engine remote")
    if is_tcp(args.address) and not args.insecure_tcp and not zmq.has("curve"):
        # never fall back to plain tcp: it would expose the kernel to anyone who can reach the port
        parser.error(f"{args.address} needs CurveZMQ, which this libzmq lacks: use ipc:// or --insecure-tcp")
    return args
