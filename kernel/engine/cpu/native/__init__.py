"""The decode step's small ops in C++ (ops.cpp), built for this CPU at first use and cached; None where they cannot be.

Why native code: at the few rows of a decode step the torch ops between the weight products cost more in dispatch than
in arithmetic. Measured on SmolLM2-135M, batch 1, 200-token context (bench/step_profile.py, bench/RESULTS.md): a
decode attention of 6-8 torch ops per sequence per layer took 5.7 ms of a 17.9 ms step at batch 1 and 49.5 ms of 85 ms
at batch 8, the norms, rotary and activations another 12-15 ops per layer. Each op here replaces one such run:

    add_rms_norm      x += delta; rms_norm(x) * w                      (2 ops → 1)
    rope_write        rotary on q and k (after their per-head RMS norms where the model has them: Qwen3, Gemma 3),
                      k and v into the paged cache                     (~10 ops → 1)
    decode_attention  every single-token row over its own paged context, or its sliding window where the layer has
                      one, at the model's query scale                  (6-8 ops per sequence → 1 per step)
    silu_mul          silu(gate) * up                                  (3 ops → 1)
    gelu_mul          gelu_tanh(gate) * up (Gemma's GeGLU)             (3 ops → 1)
    qgemm             products with GGUF Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K blocks and int8 activations (qgemm.cpp;
                      qgemm_kernels.cpp and, for rows grouped by 16, qgemm_group_kernels.cpp for decode rows,
                      qgemm_tile*.cpp for the blocked product: AVX2 / AVX-512
                      VNNI / scalar, picked at run time; kernel/engine/cpu/block_weights.py packs or passes them)
    decode_layers     every layer of a pure-decode step, these ops and the weight products called from C++
                      (decode_layers.cpp): ~300 Python-level calls per step → 1. With block products, one job on
                      the library's own worker pool (decode_pool.cpp, pool.cpp: threads kept for the process, a wait
                      on the work between dependent ops, bounded spin then futex sleep) instead of an OpenMP region
                      per op; qgemm's decode rows run on it too (AIOS_NATIVE_POOL=0|layers turns it off|to the loop)

torch.utils.cpp_extension builds the .cpp sources with the machine's C++ compiler (and ninja) into torch's
extension cache (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), under a name that includes a digest of the
sources, of their folder (two checkouts do not rebuild over each other) and of this CPU's instruction-set flags, since
it is compiled with -march=native: a cache shared by different CPUs never runs code built for another. The first build
takes ~30 s (`make install` does it); later loads take milliseconds. Where it cannot be built (no compiler), or with
AIOS_NATIVE_OPS=0, load() returns None and the model runs the same steps as torch ops (kernel/engine/cpu/layer_ops.py),
which tests/engine/test_native_ops.py holds the native ops to.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
from enum import IntEnum
from pathlib import Path

import torch

SOURCES = [
    Path(__file__).with_name(name)
    for name in (
        "ops.h",
        "ops_rows.h",
        "ops.cpp",
        "pool.h",
        "pool.cpp",
        "pool_profile.cpp",
        "decode_layers.cpp",
        "decode_pool.cpp",
        "qgemm.h",
        "qgemm_parts.h",
        "qgemm_simd.h",
        "qgemm_dispatch.cpp",
        "qgemm_kernels.cpp",
        "qgemm_group_kernels.cpp",
        "qgemm_tile.cpp",
        "qgemm_tile_kernels.cpp",
        "qgemm_raw_kernels.cpp",
        "qgemm_q5.h",
        "qgemm_q5_kernels.cpp",
        "qgemm.cpp",
    )
]
FLAGS = ["-O3", "-march=native", "-fopenmp"]
log = logging.getLogger(__name__)


class ProductKind(IntEnum):
    """How decode_layers.cpp multiplies by a layer's weight (its enum Kind): the product's native_kind() names it."""

    INT4 = 0  # aten._weight_int4pack_mm_for_cpu(x, packed codes, group, scales and zeros)
    INT8 = 1  # aten._weight_int8pack_mm(x, codes, row scales)
    FLOAT = 2  # F.linear(x, weight)
    Q8_0 = 3  # aios_cpu.qgemm(x, codes, scales, format): GGUF blocks (qgemm.h), format = kind - Q8_0
    Q4_0 = 4
    Q4_1 = 5
    Q5_0 = 6  # the raw formats: codes are the file's bytes, the scales tensor empty
    Q4_K = 7
    Q6_K = 8
    Q5_K = 9
    Q5_1 = 10


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return os.uname().machine


@functools.cache  # one build or load per process: torch.ops registers the library process-wide anyway
def load():
    """torch.ops.aios_cpu, or None (see the module docstring)."""
    if os.environ.get("AIOS_NATIVE_OPS", "1") == "0":
        return None
    identity = [path.read_bytes() for path in SOURCES] + [
        str(SOURCES[0].parent).encode(),
        " ".join(FLAGS).encode(),
        _cpu_flags().encode(),
    ]
    digest = hashlib.sha256(b"\0".join(identity)).hexdigest()[:12]
    name = f"aios_cpu_ops_{digest}"
    try:
        from torch.utils.cpp_extension import load as build_extension

        sources = [str(path) for path in SOURCES if path.suffix == ".cpp"]
        with _build_lock(name):
            build_extension(
                name, sources, extra_cflags=FLAGS, extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False
            )
    except Exception as error:  # noqa: BLE001 - no compiler, no ninja, a failed build: the torch ops serve instead
        first_line = str(error).splitlines()[0] if str(error) else repr(error)
        log.warning("native CPU ops unavailable, using torch ops: %s", first_line)
        return None
    return torch.ops.aios_cpu


@contextlib.contextmanager
def _build_lock(name: str):
    """Builds of one extension take turns on an flock beside torch's build folder, so torch's own lock file can be
    judged: torch waits forever on a `lock` file left by a build that was killed (its FileBaton has no owner check),
    which would hang every later aiosd at load. Under our flock no build of ours is running, so such a file is stale
    and goes; the kernel releases the flock of a killed process by itself."""
    from torch.utils.cpp_extension import _get_build_directory

    folder = Path(_get_build_directory(name, verbose=False))
    with open(folder.parent / f".{name}.build-lock", "a+") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            stale = folder / "lock"
            if stale.exists():
                log.warning("removing %s, left by a build that did not finish", stale)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
