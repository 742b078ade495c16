"""Storage manager throughput: fs.write / fs.read MB/s through kernel.storage.StorageManager next to plain fsync'd
file writes and plain reads of the same sizes, in the same run, on the same disk.

    python -m bench.storage_bench [--quick] [--dir DIR] [--runs 3]

For each size (4 KiB, 256 KiB, 4 MiB) a run writes N distinct files of random bytes, then reads them all back:
- store:  StorageManager.write(space, "bench/fNNNN", data) (validation, quota check, temp + write + fsync + rename
          + directory fsync, versions from names) and StorageManager.read(space, path);
- plain:  open(O_CREAT|O_TRUNC) + write + fsync + close, then open + read + close: the baseline the issue names;
- atomic: the store's disk protocol without the store (temp + write + fsync + rename + directory fsync), to show
          how much of the gap is the crash-safe protocol itself (the extra directory fsync) and how much the manager.
Each run uses fresh directories; reported numbers are medians over the runs, MB = 10^6 bytes. Reads come from the
page cache (the files were just written), so read MB/s measures the code path, not the disk.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import tempfile
import time

from kernel.storage import StorageManager
from kernel.storage.quota import DIR_BYTES

SIZES = [(4 << 10, "4 KiB"), (256 << 10, "256 KiB"), (4 << 20, "4 MiB")]
FULL_COUNTS = {4 << 10: 2000, 256 << 10: 200, 4 << 20: 24}
QUICK_COUNTS = {4 << 10: 200, 256 << 10: 24, 4 << 20: 4}
SPACE = "uid:0/bench"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def plain_write(directory: str, name: str, data: bytes) -> None:
    fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(directory: str, dir_fd: int, name: str, data: bytes) -> None:
    temp = os.path.join(directory, ".tmp-" + secrets.token_hex(8))
    plain_write(directory, os.path.basename(temp), data)
    os.rename(temp, os.path.join(directory, name))
    os.fsync(dir_fd)


def plain_read(directory: str, name: str) -> bytes:
    with open(os.path.join(directory, name), "rb", buffering=0) as file:
        return file.read()


def one_run(base: str, size: int, count: int) -> dict[str, tuple[float, float]]:
    """{kind: (write seconds, read seconds)} for `count` files of `size` bytes, each kind in fresh directories."""
    blobs = [os.urandom(size) for _ in range(min(count, 8))]  # a few distinct payloads, reused round-robin
    names = [f"f{i:05d}" for i in range(count)]
    results = {}

    root = tempfile.mkdtemp(dir=base)
    # the files plus their one directory "bench" (4 KiB and an inode: directories are charged, quota.py)
    with StorageManager(
        os.path.join(root, "store"),
        keep_versions=2,
        quota_bytes=size * count * 2 + DIR_BYTES,
        max_file_bytes=size,
        max_files=count + 1,
    ) as store:
        start = time.perf_counter()
        for i, name in enumerate(names):
            store.write(SPACE, "bench/" + name, blobs[i % len(blobs)])
        wrote = time.perf_counter() - start
        start = time.perf_counter()
        for name in names:
            assert len(store.read(SPACE, "bench/" + name)[0]) == size
        results["store"] = (wrote, time.perf_counter() - start)

    for kind in ("plain", "atomic"):
        directory = os.path.join(root, kind)
        os.mkdir(directory)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            start = time.perf_counter()
            for i, name in enumerate(names):
                if kind == "plain":
                    plain_write(directory, name, blobs[i % len(blobs)])
                else:
                    atomic_write(directory, dir_fd, name, blobs[i % len(blobs)])
            wrote = time.perf_counter() - start
        finally:
            os.close(dir_fd)
        start = time.perf_counter()
        for name in names:
            assert len(plain_read(directory, name)) == size
        results[kind] = (wrote, time.perf_counter() - start)
    shutil.rmtree(root)
    return results


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storage_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer files per size and one run (seconds)")
    parser.add_argument("--dir", default=None, help="where to write (default: the system temp dir)")
    parser.add_argument("--runs", type=int, default=None, help="runs per size (default 3, 1 with --quick)")
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs <= 0:
        parser.error("--runs must be positive")
    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    base = tempfile.mkdtemp(prefix="aios-storage-bench-", dir=args.dir)
    rows = []
    try:
        for size, label in SIZES:
            count = counts[size]
            measured = [one_run(base, size, count) for _ in range(runs)]
            mbps = {
                kind: tuple(size * count / 1e6 / statistics.median(run[kind][k] for run in measured) for k in (0, 1))
                for kind in ("store", "plain", "atomic")
            }
            store_w, store_r = mbps["store"]
            plain_w, plain_r = mbps["plain"]
            rows.append(
                [
                    label,
                    str(count),
                    f"{store_w:.1f}",
                    f"{plain_w:.1f}",
                    f"{store_w / plain_w:.2f}",
                    f"{mbps['atomic'][0]:.1f}",
                    f"{store_w / mbps['atomic'][0]:.2f}",
                    f"{store_r:.0f}",
                    f"{plain_r:.0f}",
                    f"{store_r / plain_r:.2f}",
                ]
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"storage manager vs plain files, median of {runs} run(s), {os.cpu_count()} cores, under {base}\n")
    print(
        table(
            [
                "size",
                "files",
                "store write MB/s",
                "plain fsync write MB/s",
                "store/plain write",
                "atomic write MB/s",
                "store/atomic write",
                "store read MB/s",
                "plain read MB/s",
                "store/plain read",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
