"""The OpenAI-compatible gateway's cost: what HTTP adds over the SDK, measured against the SDK in the same run.

1. Added latency: a short chat (max_tokens 1, the same prompt each time, so the kernel's retained context makes the
   LLM part small and steady) through the gateway with the official openai client, with a lean client (stdlib
   http.client, keep-alive, TCP_NODELAY: its row is the gateway's own cost; the openai row adds that library's), and
   through the SDK directly, calls interleaved so machine load hits all paths alike; medians of --count calls each.
   Also /v1/models against the SDK's kernel.ping: the HTTP path with no LLM work at all. Target: added p50 of the
   short chat <= 1 ms.
2. 8 streaming clients at once: 8 AsyncOpenAI clients (8 API keys, so 8 kernel agents) streaming completions of the
   same prompts, against 8 SDK agents (AsyncKernel connections) streaming the same calls; every call runs to
   max_tokens (a counting prompt: greedy never stops early), total tokens / wall time, median of --rounds rounds,
   the two paths alternated.

--compare-stack starts a second gateway on the asyncio loop and h11 (AIOS_GATEWAY_LOOP / AIOS_GATEWAY_HTTP) next to
the default one (uvloop and httptools when installed) and interleaves its calls with the others: before and after
in the same run.

    python -m bench.gateway_bench [--count 200] [--rounds 3] [--max-tokens 64] [--compare-stack]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

import sdk
from kernel.gateway import keys
from kernel.gateway.app import KERNEL_TIME_HEADER
from kernel.gateway.process import GatewayProcess
from kernel.gateway.server import HTTP_ENV, LOOP_ENV, server_stack
from kernel.launch import KernelProcess

KERNEL_OPTIONS = {"dtype": "float32", "kv-budget": 8192, "max-batch": 16, "arena-mb": 128}
SHORT_CHAT = [{"role": "user", "content": "Say yes."}]
BASE = " (asyncio+h11)"  # --compare-stack: the second gateway's paths
STREAM_PROMPTS = [f"{i}, {i + 1}, {i + 2}, {i + 3}," for i in range(1, 9)]  # counting: runs to max_tokens


def latency(
    kernel: sdk.Kernel, gateways: dict[str, tuple[str, str]], count: int
) -> dict[str, list[tuple[float, float]]]:
    """(wall seconds, kernel seconds) per call and path; the kernel's own time comes from the Completion (SDK) or the
    gateway's x-aios-kernel-ms header, so wall minus kernel is the path's overhead without the LLM's noise.
    gateways: suffix -> (url, key); each gateway gets its own openai and lean paths ("openai chat" + suffix, ...)."""
    body = {"model": kernel.model, "messages": SHORT_CHAT, "max_tokens": 1}
    raw_body = json.dumps(body).encode()

    def sdk_chat() -> float:
        return kernel.chat(SHORT_CHAT, max_tokens=1, full=True).timing.total_s

    def openai_chat(client: openai.OpenAI) -> float:
        raw = client.chat.completions.with_raw_response.create(**body)
        raw.parse()
        return float(raw.headers[KERNEL_TIME_HEADER]) / 1e3

    def lean_chat(lean: http.client.HTTPConnection, headers: dict) -> float:
        lean.request("POST", "/v1/chat/completions", body=raw_body, headers=headers)
        response = lean.getresponse()
        assert response.status == 200, response.status
        json.loads(response.read())
        return float(response.getheader(KERNEL_TIME_HEADER)) / 1e3

    paths = {"sdk chat": sdk_chat, "sdk ping": lambda: kernel.ping() or 0.0}
    closers = []
    for suffix, (url, key) in gateways.items():
        client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        lean = http.client.HTTPConnection(host, int(port), timeout=60)
        lean.connect()
        # the request goes out in one write (bytes body); no Nagle: a lean client, so what is measured is the gateway
        lean.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        paths["openai chat" + suffix] = lambda client=client: openai_chat(client)
        paths["lean chat" + suffix] = lambda lean=lean, headers=headers: lean_chat(lean, headers)
        paths["openai models" + suffix] = lambda client=client: client.models.list() and 0.0
        closers += [lean.close, client.close]
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for round_ in range(count + 10):  # 10 warm-up rounds
        for name, call in paths.items():
            start = time.perf_counter()
            kernel_s = call()
            if round_ >= 10:
                samples[name].append((time.perf_counter() - start, kernel_s))
    for close in closers:
        close()
    return samples


async def sdk_streams(address: str, max_tokens: int) -> tuple[int, float]:
    kernels = [await sdk.aconnect(address, name=f"bench-sdk-{i}") for i in range(len(STREAM_PROMPTS))]

    async def one(kernel, prompt) -> int:
        async for item in kernel.stream(prompt=prompt, max_tokens=max_tokens, full=True):
            if isinstance(item, sdk.Completion):
                return item.usage.completion_tokens
        return 0

    try:
        start = time.perf_counter()
        tokens = await asyncio.gather(*(one(k, p) for k, p in zip(kernels, STREAM_PROMPTS)))
        wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(k.close() for k in kernels))
    return sum(tokens), wall


async def gateway_streams(url: str, plain_keys: list[str], model: str, max_tokens: int) -> tuple[int, float]:
    clients = [openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=600) for key in plain_keys]

    async def one(client, prompt) -> int:
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=max_tokens, stream=True, stream_options={"include_usage": True}
        )
        used = 0
        async for chunk in stream:
            if chunk.usage is not None:
                used = chunk.usage.completion_tokens
        return used

    try:
        start = time.perf_counter()
        tokens = await asyncio.gather(*(one(c, p) for c, p in zip(clients, STREAM_PROMPTS)))
        wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return sum(tokens), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="calls per path for the latency medians")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 8-stream comparison")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per streamed call")
    parser.add_argument(
        "--compare-stack",
        action="store_true",
        help="also a second gateway on the asyncio loop and "
        "h11 (AIOS_GATEWAY_LOOP/HTTP), its calls interleaved with the first's",
    )
    args = parser.parse_args(argv)
    stack = "+".join(server_stack())
    with tempfile.TemporaryDirectory(prefix="aios-gateway-bench-") as workdir:
        keys_path = f"{workdir}/keys.json"
        plain = [keys.add(keys_path, f"bench-http-{i}") for i in range(len(STREAM_PROMPTS))]
        plain_base = keys.add(keys_path, "bench-http-base")
        with contextlib.ExitStack() as stack_:
            proc = stack_.enter_context(
                KernelProcess(f"ipc://{workdir}/kernel.sock", KERNEL_OPTIONS, Path(workdir) / "aiosd.log")
            )
            gateway = stack_.enter_context(GatewayProcess(proc.address, keys_path, Path(workdir) / "gateway.log"))
            gateways = {"": (gateway.url, plain[0])}
            if args.compare_stack:
                base = stack_.enter_context(
                    GatewayProcess(
                        proc.address,
                        keys_path,
                        Path(workdir) / "gateway-base.log",
                        env={LOOP_ENV: "asyncio", HTTP_ENV: "h11"},
                    )
                )
                gateways[BASE] = (base.url, plain_base)
            kernel = stack_.enter_context(sdk.connect(proc.address, name="bench-sdk"))
            samples = latency(kernel, gateways, args.count)
            sdk_rates, http_rates = [], []
            for _ in range(args.rounds):
                tokens, wall = asyncio.run(sdk_streams(proc.address, args.max_tokens))
                assert tokens == args.max_tokens * len(STREAM_PROMPTS), tokens
                sdk_rates.append(tokens / wall)
                tokens, wall = asyncio.run(gateway_streams(gateway.url, plain, kernel.model, args.max_tokens))
                assert tokens == args.max_tokens * len(STREAM_PROMPTS), tokens
                http_rates.append(tokens / wall)
    wall = {name: statistics.median(w for w, _ in values) * 1e3 for name, values in samples.items()}
    over = {name: statistics.median(w - k for w, k in values) * 1e3 for name, values in samples.items()}
    print(
        f"gateway vs SDK, same run: median of {args.count} interleaved calls per path; 'outside kernel' is each "
        f"call's wall time minus the kernel's own time for it"
    )
    print(f"gateway: {stack}" + ("; second gateway: asyncio+h11" if args.compare_stack else ""))
    print(f"{'path':<42}{'p50 ms':>9}{'ratio':>8}{'outside kernel ms':>19}{'added ms':>10}")
    rows = [("short chat, SDK (baseline)", "sdk chat", "sdk chat")]
    for suffix in ("", BASE) if args.compare_stack else ("",):
        rows += [
            (f"short chat, gw{suffix}, openai client", "openai chat" + suffix, "sdk chat"),
            (f"short chat, gw{suffix}, http.client", "lean chat" + suffix, "sdk chat"),
        ]
    rows.append(("no-op, SDK kernel.ping (baseline)", "sdk ping", "sdk ping"))
    for suffix in ("", BASE) if args.compare_stack else ("",):
        rows.append((f"no-op, gw{suffix} /v1/models, openai", "openai models" + suffix, "sdk ping"))
    for label, name, base in rows:
        print(
            f"{label:<42}{wall[name]:>9.2f}{wall[name] / wall[base]:>7.2f}x{over[name]:>19.2f}"
            f"{over[name] - over[base]:>10.2f}"
        )
    added = over["lean chat"] - over["sdk chat"]
    print(
        f"target: added p50 of a short chat <= 1 ms -> {added:.2f} ms (http.client), "
        f"{over['openai chat'] - over['sdk chat']:.2f} ms (openai client): {'met' if added <= 1 else 'NOT met'}"
    )
    if not args.rounds:
        return 0
    sdk_rate, http_rate = statistics.median(sdk_rates), statistics.median(http_rates)
    print(f"\n8 streaming clients at once, {args.max_tokens} tokens each, median of {args.rounds} rounds (tok/s)")
    print(f"{'path':<34}{'tok/s':>10}{'ratio':>8}")
    print(f"{'8 SDK agents (baseline)':<34}{sdk_rate:>10.1f}{1.0:>7.2f}x")
    print(f"{'8 openai clients via gateway':<34}{http_rate:>10.1f}{http_rate / sdk_rate:>7.2f}x")
    print(f"rounds: sdk {[round(r, 1) for r in sdk_rates]} gateway {[round(r, 1) for r in http_rates]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
