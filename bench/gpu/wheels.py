"""The wheels the GPU machine lacks: which ones (resolve, pure), fetching them here (fetch), and on the machine, which
of them to install (missing_there).

    python -m bench.gpu.wheels fetch DEST        # here, with network: DEST/*.whl + DEST/manifest.json
    python -m bench.gpu.wheels missing DEST      # there: the wheel files of DEST whose distribution is not installed
    python -m bench.gpu.wheels verify DEST       # there: every file of the manifest present with its size and sha256

The machine (its published description): CPython 3.12, x86-64 Linux, with PyTorch, transformers, safetensors,
tokenizers, msgpack and ninja, hence everything those require (PRESENT). The check needs ROOTS on top: exllamav2 and
what aiosd, its SDK, the engine's grammar and the tests import. resolve() walks the requirements of the roots
(markers evaluated for that machine, extras off) and keeps what PRESENT lacks, minus SKIPPED: exllamav2 declares
pandas, fastparquet and websockets for its converter and server, which `import exllamav2` never loads (checked on the
0.3.2 source: its module-level import closure reaches PIL, rich, numpy, safetensors, tokenizers and torch only), and
ninja, which the machine has. On the machine, a wheel whose distribution is already installed is not installed again
(missing_there): a second numpy or pyzmq ahead of the machine's own on PYTHONPATH could break what works there.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from packaging.requirements import Requirement

ROOTS = (
    "exllamav2==0.3.2",
    "pyzmq==27.3.0",
    "gguf==0.19.0",
    "llguidance==1.9.1",
    "pytest==9.2.0",
    "hypothesis==6.170.27",
)
MACHINE_HAS = ("torch", "transformers", "safetensors", "tokenizers", "msgpack", "ninja")  # its published description
PRESENT = frozenset(
    {
        *MACHINE_HAS,
        # torch's requirements
        "filelock",
        "typing-extensions",
        "sympy",
        "mpmath",
        "networkx",
        "jinja2",
        "markupsafe",
        "fsspec",
        "setuptools",
        # transformers' (5.x: requests is no longer among them, so a wheel that needs it brings it; missing_there skips
        # it where an older transformers did install it)
        "numpy",
        "huggingface-hub",
        "packaging",
        "pyyaml",
        "regex",
        "tqdm",
        "hf-xet",
    }
)
SKIPPED = {"exllamav2": frozenset({"pandas", "fastparquet", "websockets", "ninja"})}
# The GPU machine, for requirement markers.
MACHINE = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
# glibc up to 2.31 (llguidance 1.9 is built for manylinux_2_31): a CUDA 13 machine has at least that.
PLATFORMS = (
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_26_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "linux_x86_64",
    "any",
)
PIP_TARGET = [
    "--only-binary=:all:",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--abi",
    "cp312",
    "--abi",
    "abi3",
    "--abi",
    "none",
    *(arg for p in PLATFORMS for arg in ("--platform", p)),
]
SIZE_LIMIT = 48 << 20  # the working tree may carry 64 MiB of extra files: keep room for the tokenizer and logs


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(
    roots: Iterable[str],
    requires: Callable[[str], list[str]],
    present: Iterable[str] = PRESENT,
    skipped: Mapping[str, Iterable[str]] = SKIPPED,
    env: Mapping[str, str] = MACHINE,
) -> list[str]:
    """The normalized names of the distributions to ship, roots first, then breadth-first. requires(name) gives a
    distribution's Requires-Dist lines; it is asked once per shipped distribution."""
    have = {normalize(n) for n in present}
    skip = {normalize(k): {normalize(n) for n in v} for k, v in skipped.items()}
    order: list[str] = []
    queue = deque(normalize(Requirement(r).name) for r in roots)
    while queue:
        name = queue.popleft()
        if name in have or name in order:
            continue
        order.append(name)
        for line in requires(name):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(dict(env)):
                continue
            dep = normalize(req.name)
            if dep not in skip.get(name, ()):
                queue.append(dep)
    return order


def wheel_metadata(path: Path) -> tuple[str, str, list[str]]:
    """(normalized name, version, Requires-Dist lines) from a wheel's METADATA."""
    with zipfile.ZipFile(path) as wheel:
        meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(wheel.read(meta_name).decode())
    return normalize(meta["Name"]), meta["Version"], meta.get_all("Requires-Dist") or []


def fetch(dest: Path) -> list[dict]:
    """Download the resolved wheels into dest (pip, one distribution at a time, no dependencies of its own choosing)
    and write dest/manifest.json. Returns the manifest."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = {normalize(Requirement(r).name): r for r in ROOTS}
    files: dict[str, Path] = {}

    def requires(name: str) -> list[str]:
        before = set(dest.glob("*.whl"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                str(dest),
                *PIP_TARGET,
                pins.get(name, name),
            ],
            check=True,
        )
        new = set(dest.glob("*.whl")) - before
        path = next((p for p in new | before if wheel_metadata(p)[0] == name), None)
        if path is None:
            raise RuntimeError(f"pip gave no wheel for {name}")
        files[name] = path
        print(f"  {path.name}", flush=True)
        return wheel_metadata(path)[2]

    names = resolve(ROOTS, requires)
    manifest = [
        {
            "name": n,
            "version": wheel_metadata(files[n])[1],
            "file": files[n].name,
            "size": files[n].stat().st_size,
            "sha256": hashlib.sha256(files[n].read_bytes()).hexdigest(),
        }
        for n in names
    ]
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def verify(dest: Path) -> list[str]:
    """Problems with dest against its manifest (empty: all there, intact)."""
    problems = []
    for entry in json.loads((dest / "manifest.json").read_text()):
        path = dest / entry["file"]
        if not path.is_file():
            problems.append(f"missing {entry['file']}")
        elif path.stat().st_size != entry["size"] or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"damaged {entry['file']}")
    return problems


def missing_there(manifest: list[dict], installed: Callable[[str], bool]) -> list[str]:
    """The manifest's wheel files whose distribution is not installed on this machine."""
    return [entry["file"] for entry in manifest if not installed(entry["name"])]


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    command, dest = (argv or sys.argv[1:])[:2]
    dest = Path(dest)
    if command == "fetch":
        manifest = fetch(dest)
        total = sum(e["size"] for e in manifest)
        print(f"{len(manifest)} wheels, {total / 2**20:.1f} MiB: {' '.join(e['name'] for e in manifest)}")
        if total > SIZE_LIMIT:
            print(f"over the {SIZE_LIMIT >> 20} MiB budget", file=sys.stderr)
            return 1
        return 0
    if command == "verify":
        problems = verify(dest)
        print("\n".join(problems) or "all wheels present and intact")
        return 1 if problems else 0
    if command == "missing":
        for name in missing_there(json.loads((dest / "manifest.json").read_text()), _installed):
            print(dest / name)
        return 0
    print(f"unknown command {command!r}: fetch | verify | missing", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
