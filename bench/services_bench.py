"""The memory and file services through the syscall path, each next to its in-process baseline in the same run:

mem.add       items/s, one syscall per memory, vs the embedding model called directly (one text, and batched)
mem.search    p50/p99 at N entries in the agent's space, vs embedding the query + faiss search in-process
fs.write/read MB/s per file size, vs plain write + fsync + rename of the same bytes
decode        tok/s of a generation alone, and while another agent adds memories (the memory worker's cost to the
              LLM loop on 2 shared cores)

  python -m bench.services_bench [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.syscall_bench import timed
from kernel.launch import KernelProcess
from sdk import connect

TEXTS = [
    "The {} meeting moved to room {}.",
    "Buy {} apples and {} pears.",
    "Ada's {} flight lands at gate {}.",
    "Remember the {} password hint: {}.",
    "The {} report is due on day {}.",
]


def _text(i: int) -> str:
    return TEXTS[i % len(TEXTS)].format(["quarterly", "weekly", "red", "blue", "early", "late"][i % 6], i)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def populate(data_dir: Path, space: str, entries: int) -> None:
    """Fill a space before aiosd starts, in batches (adding 10k through single syscalls would take minutes)."""
    from kernel.memory.manager import MemoryManager

    manager = MemoryManager(data_dir / "memory")
    try:
        for start in range(0, entries, 256):
            batch = [_text(i) for i in range(start, min(entries, start + 256))]
            manager.add(space, batch, [{"i": i} for i in range(start, start + len(batch))])
    finally:
        manager.close()


def in_process_baselines(entries: int, queries: list[str]) -> dict:
    import faiss

    from kernel.memory.embedder import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    texts = [_text(i) for i in range(200)]
    single = statistics.median(timed(lambda: embedder.embed([texts[0]]), 50))
    start = time.perf_counter()
    embedder.embed(texts)
    batched = (time.perf_counter() - start) / len(texts)
    index = faiss.IndexFlatIP(embedder.dim)
    index.add(np.random.default_rng(0).standard_normal((entries, embedder.dim)).astype(np.float32))
    search = timed(lambda: index.search(embedder.embed([queries[0]]), 5), 200)
    return {"embed_one_s": single, "embed_batched_s": batched, "search": search}


def file_baseline(directory: Path, size: int, count: int) -> float:
    data = os.urandom(size)
    start = time.perf_counter()
    for i in range(count):
        path, temp = directory / f"f{i}", directory / f".f{i}.tmp"
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    return size * count / (time.perf_counter() - start) / 1e6


def decode_rate(address: str, tokens: int) -> float:
    with connect(address, name="decoder") as k:
        done = k.generate("Once upon a time", max_tokens=tokens, ignore_eos=True, full=True)
    return done.usage.completion_tokens / max(1e-9, done.timing.total_s - (done.timing.ttft_s or 0.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.services_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args(argv)
    entries = 1_000 if args.quick else 10_000
    adds, searches, decode_tokens = (50, 50, 32) if args.quick else (300, 300, 128)
    queries = ["when does the flight land?", "what should I buy?", "where is the meeting?"]
    with tempfile.TemporaryDirectory(prefix="aios-services-bench-") as workdir:
        work = Path(workdir)
        space = f"uid:{os.getuid()}/bench"
        populate(work / "data", space, entries)
        base = in_process_baselines(entries, queries)
        options = {"dtype": "float32", "memory": "on", "storage": "on", "data-dir": str(work / "data")}
        with (
            KernelProcess(f"ipc://{workdir}/kernel.sock", options, work / "aiosd.log") as kernel,
            connect(kernel.address, name="bench") as k,
        ):
            k.memory.search("warm up", k=5)  # the model is loaded in the worker by now
            add = timed(lambda: k.memory.add(_text(7)), adds)
            search = timed(lambda: k.memory.search(queries[len(queries) - 1], k=5), searches)
            files = {}
            for size in (4 << 10, 256 << 10, 2 << 20):
                data, count = os.urandom(size), max(4, (8 << 20) // size // (4 if args.quick else 1))
                start = time.perf_counter()
                for i in range(count):
                    k.fs.write(f"bench/{size}/f{i}", data)
                write_mb = size * count / (time.perf_counter() - start) / 1e6
                read = timed(lambda size=size: k.fs.read(f"bench/{size}/f0"), count)
                plain_dir = work / f"plain{size}"
                plain_dir.mkdir()
                files[size] = (write_mb, size / statistics.median(read) / 1e6, file_baseline(plain_dir, size, count))
            alone = decode_rate(kernel.address, decode_tokens)
            stop = threading.Event()

            def flood():
                with connect(kernel.address, name="memory-flood") as other:
                    for i in range(1000):
                        if stop.is_set():
                            return
                        other.memory.add(_text(i))

            flooder = threading.Thread(target=flood)
            flooder.start()
            busy = decode_rate(kernel.address, decode_tokens)
            stop.set()
            flooder.join()
    print(f"memory service via syscalls ({entries} entries in the space; float32 aiosd, 2 shared cores)")
    print(f"{'measure':<40}{'syscall':>12}{'in-process':>12}{'ratio':>8}")
    add_rate = 1 / statistics.median(add)
    print(
        f"{'mem.add items/s (one per call)':<40}{add_rate:>12.1f}{1 / base['embed_one_s']:>12.1f}"
        f"{add_rate * base['embed_one_s']:>8.2f}"
    )
    print(f"{'  in-process batched embedding items/s':<40}{'':>12}{1 / base['embed_batched_s']:>12.1f}")
    for q in (0.5, 0.99):
        ours, theirs = _pct(search, q) * 1e3, _pct(base["search"], q) * 1e3
        label = f"mem.search p{int(q * 100)} ms (embed + search)"
        print(f"{label:<40}{ours:>12.2f}{theirs:>12.2f}{ours / theirs:>8.2f}")
    print(f"\n{'file size':<12}{'fs.write MB/s':>15}{'fs.read MB/s':>14}{'plain write MB/s':>18}{'write ratio':>13}")
    for size, (write_mb, read_mb, plain_mb) in files.items():
        print(f"{size >> 10:>8} KiB{write_mb:>15.1f}{read_mb:>14.1f}{plain_mb:>18.1f}{write_mb / plain_mb:>13.2f}")
    print(f"\ndecode tok/s alone {alone:.1f}; while another agent adds memories {busy:.1f} ({busy / alone:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
