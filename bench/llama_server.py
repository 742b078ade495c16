"""llama.cpp's HTTP server (through the xllamacpp package) as a child process on 127.0.0.1: the real OpenAI-compatible
server behind the remote-engine tests and bench/remote_bench.py. A child process, so it can be killed like a crashed
replica (SIGKILL) without taking the caller down.

    python -m bench.llama_server --port 8081 --model PATH.gguf [--slots 4] [--threads 1] [--ctx 1024]

prints "llama-server ready http://127.0.0.1:PORT/v1" once the model is loaded and the port listens, then serves until
killed. LlamaServer starts one and waits for that line.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

READY = "llama-server ready "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One llama.cpp server child. Its output goes to log_path."""

    def __init__(
        self,
        log_path: Path,
        slots: int = 4,
        threads: int = 1,
        ctx_per_slot: int = 1024,
        model: str | None = None,
        ready_timeout_s: float = 120.0,
        port: int | None = None,
    ):
        from kernel.engine.loading.checkpoint import default_model_path  # here: the child need not import torch

        model = model or str(default_model_path())
        self.port = port or free_port()  # a port of its own, or a killed server's to stand in for it
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._argv = [
            sys.executable,
            "-m",
            "bench.llama_server",
            "--port",
            str(self.port),
            "--slots",
            str(slots),
            "--threads",
            str(threads),
            "--ctx",
            str(ctx_per_slot),
            "--model",
            model,
        ]
        self._log_path = log_path
        self._ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def start(self) -> None:
        self._log = open(self._log_path, "a")
        from kernel.engine.process_env import without_engine_openmp

        # Our engine's OpenMP settings (kernel/engine/process_env.py; entry points set them in our own environment):
        # llama.cpp's build is OpenMP too, and inheriting a passive wait policy costs it 2.5x at batch 1 on 2 threads
        # (measured: 50 vs 130 tok/s). The server runs as a user would start it, with OpenMP's defaults.
        env = without_engine_openmp(os.environ)
        self._proc = subprocess.Popen(
            self._argv,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            cwd=Path(__file__).resolve().parents[1],
            env=env,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def copy() -> None:
            for line in self._proc.stdout:
                self._log.write(line)
                self._log.flush()
                lines.put(line)
            lines.put(None)

        threading.Thread(target=copy, daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=self._ready_timeout_s)
            except queue.Empty:
                self.kill()
                raise RuntimeError(
                    f"llama.cpp server not ready after {self._ready_timeout_s:.0f} s; see {self._log_path}"
                ) from None
            if line is None:
                raise RuntimeError(f"llama.cpp server exited with {self._proc.wait()}; see {self._log_path}")
            if line.startswith(READY):
                return

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, as far as its clients can tell."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
            self._proc = None
            self._log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=1024, help="context per slot, in tokens")
    parser.add_argument("--model", required=True, help="a GGUF file")
    args = parser.parse_args()
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_parallel = args.slots
    params.n_ctx = args.ctx * args.slots
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    server = xllamacpp.Server(params)  # loads the model and starts listening; serves on its own threads
    print(f"{READY}{server.listening_address}/v1", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    main()
