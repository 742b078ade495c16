"""What of the GPU check (bench/gpu/) can be proved without a GPU: the wheel list resolves (on data, no network), the
model builder writes a folder the CPU engine loads, and check.sh runs its steps end to end in --dry-run mode (CPU,
torch engine, tiny model) and stops at the first failing step."""

from __future__ import annotations

import email.message
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from bench.gpu import wheels
from bench.gpu.build_model import Shape, build, export_bundled_tokenizer
from kernel.engine.core.interface import EngineRequest, SamplingParams
from kernel.engine.factory import load_engine
from kernel.engine.kinds import EngineKind

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "bench" / "gpu" / "check.sh"
# exllamav2 0.3.2's METADATA (it is not installed here: it needs CUDA to import)
EXLLAMAV2_REQUIRES = [
    "pandas",
    "ninja",
    "fastparquet",
    "torch>=2.2.0",
    "safetensors>=0.3.2",
    "pygments",
    "websockets",
    "regex",
    "numpy",
    "rich",
    "pillow>=9.1.0",
]
MARKERS = [
    "",
    "; python_version < '3.11'",
    "; extra == 'dev'",
    "; sys_platform == 'linux'",
    "; sys_platform == 'win32'",
    "; python_version >= '3.12'",
]
# imported inside try: when installed, required by none of the shipped packages: sniffio by anyio / httpcore; trio
# (and its outcome, attrs) by hypothesis's async support — here only because selenium (the dashboard's browser test)
# installs trio beside it
OPTIONAL = {"sniffio", "trio", "outcome", "attrs"}
ACTIVE = {"", "; sys_platform == 'linux'", "; python_version >= '3.12'"}  # true on the GPU machine (3.12, linux)


# ---- the wheel list -----------------------------------------------------------------------------------------------
@st.composite
def graphs(draw):
    n = draw(st.integers(1, 10))
    names = [f"pkg-{i}" for i in range(n)]
    spell = st.sampled_from([lambda s: s, str.upper, lambda s: s.replace("-", "_"), lambda s: s.replace("-", ".")])
    deps = {
        name: draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(MARKERS), spell), max_size=4))
        for name in names
    }
    roots = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3))
    present = draw(st.sets(st.sampled_from(names)))
    skipped = {draw(st.sampled_from(names)): draw(st.sets(st.sampled_from(names), max_size=2))}
    return deps, roots, present, skipped


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_resolve_ships_exactly_what_the_roots_need_and_the_machine_lacks(graph):
    deps, roots, present, skipped = graph
    asked = []

    def requires(name):
        asked.append(name)
        return [f"{render(dep)}>=1.0{marker}" for dep, marker, render in deps[name]]

    shipped = wheels.resolve([r.upper() + "==1.0" for r in roots], requires, present, skipped)
    # the reference: breadth-first over active, unskipped edges, never into what is present
    expected, frontier = set(), [r for r in roots if r not in present]
    while frontier:
        name = frontier.pop()
        if name in expected:
            continue
        expected.add(name)
        frontier += [
            dep
            for dep, marker, _ in deps[name]
            if marker in ACTIVE and dep not in present and dep not in skipped.get(name, ())
        ]
    assert set(shipped) == expected and len(shipped) == len(set(shipped))
    assert sorted(asked) == sorted(shipped)  # each shipped distribution read once, no other
    first = list(dict.fromkeys(r for r in roots if r not in present))
    assert shipped[: len(first)] == first  # roots first, in order


def local_requires(name: str) -> list[str]:
    return EXLLAMAV2_REQUIRES if name == "exllamav2" else metadata.requires(name) or []


def test_the_real_list_resolves_from_local_metadata():
    shipped = wheels.resolve(wheels.ROOTS, local_requires)
    assert not set(shipped) & wheels.PRESENT  # nothing the machine has (no second numpy)
    assert {"exllamav2", "pyzmq", "gguf", "llguidance", "pytest", "hypothesis", "pillow", "rich"} <= set(shipped)
    assert not {"pandas", "fastparquet", "websockets", "ninja"} & set(shipped)


IMPORTS = (
    "import sys, importlib; mods = ['bench.gpu.parity', 'bench.gpu.kernel_checks', 'bench.gpu.build_model', "
    "'bench.gpu.report', 'kernel.daemon.main', 'kernel.engine.gpu.engine', 'sdk', 'llguidance', "
    "'pytest', 'hypothesis', 'transformers', 'tests.engine_gpu.test_exllama_gpu']\n"
    "for m in mods:\n"
    "    try: importlib.import_module(m)\n"
    "    except BaseException: pass\n"  # test_exllama_gpu skips itself here, after its imports
    "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
)


def test_everything_the_check_imports_is_on_the_machine_or_shipped():
    tops = subprocess.run(
        [sys.executable, "-c", IMPORTS], cwd=REPO, capture_output=True, text=True, check=True, timeout=600
    ).stdout.split()
    owners = metadata.packages_distributions()
    needed = {
        wheels.normalize(dist)
        for top in tops
        for dist in owners.get(top, ())
        if top not in sys.stdlib_module_names and wheels.normalize(dist) not in {"aios", *OPTIONAL}
    }
    shipped = set(wheels.resolve(wheels.ROOTS, local_requires))
    # what the machine has: its named packages and what they require (httpx and such, under huggingface-hub)
    machine = set(wheels.resolve(wheels.MACHINE_HAS, local_requires, present=()))
    assert wheels.PRESENT <= machine  # the list claims nothing those packages do not bring
    assert needed and needed <= machine | shipped, needed - machine - shipped


def make_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    meta = email.message.Message()
    meta["Metadata-Version"], meta["Name"], meta["Version"] = "2.1", name, version
    for line in requires:
        meta["Requires-Dist"] = line
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta.as_string())
    return path


def write_manifest(folder: Path, paths: list[Path]) -> list[dict]:
    manifest = [
        {
            "name": wheels.wheel_metadata(p)[0],
            "version": wheels.wheel_metadata(p)[1],
            "file": p.name,
            "size": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in paths
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_wheel_files_metadata_verify_and_what_is_missing_there(tmp_path):
    a = make_wheel(tmp_path, "Probe_A", "1.0", ["probe-b>=2; python_version >= '3.12'"])
    b = make_wheel(tmp_path, "probe-b", "2.1", [])
    assert wheels.wheel_metadata(a) == ("probe-a", "1.0", ["probe-b>=2; python_version >= '3.12'"])
    manifest = write_manifest(tmp_path, [a, b])
    assert wheels.verify(tmp_path) == []
    assert wheels.missing_there(manifest, lambda name: name == "probe-b") == [a.name]
    b.write_bytes(b.read_bytes() + b"x")
    a.unlink()
    assert sorted(wheels.verify(tmp_path)) == [f"damaged {b.name}", f"missing {a.name}"]


# ---- the model builder ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return export_bundled_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer_dir) -> Path:
    return build(tmp_path_factory.mktemp("model") / "tiny", tokenizer_dir, Shape.TINY)


def test_built_folder_is_fp16_untied_llama_with_the_bundled_tokenizer(tiny_model, tokenizer_dir):
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["rope_theta"] == 10000.0
    assert config["torch_dtype"] == "float16" and not config["tie_word_embeddings"]
    with safe_open(str(tiny_model / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert "lm_head.weight" in names
        assert {str(f.get_tensor(n).dtype) for n in names} == {"torch.float16"}
        norms = f.get_tensor("model.layers.0.input_layernorm.weight").float()
        assert norms.min() >= 0.5 and norms.max() <= 1.5 and norms.std() > 0.1  # drawn, not left at 1
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tiny_model / name).read_bytes() == (tokenizer_dir / name).read_bytes()
    assert config["vocab_size"] == 49152 and config["eos_token_id"] == 2  # SmolLM2's vocabulary and <|im_end|>


def test_built_folder_loads_in_the_cpu_engine_and_generates(tiny_model):
    engine = load_engine(EngineKind.CPU, str(tiny_model), dtype="float32", kv_budget_tokens=512, max_batch=2, threads=1)
    assert engine.tokenizer.eos_ids == (2,)
    assert engine.detokenize(engine.tokenize("Hello, world")) == "Hello, world"
    engine.add(
        EngineRequest("r", engine.tokenize("The capital of France is"), SamplingParams(max_tokens=5, ignore_eos=True))
    )
    out = []
    while engine.has_work():
        out += [e.token_id for e in engine.step() if e.token_id >= 0]
    assert len(out) == 5 and all(0 <= t < 49152 for t in out)


def test_same_seed_same_weights(tmp_path, tokenizer_dir, tiny_model):
    again = build(tmp_path / "again", tokenizer_dir, Shape.TINY)
    assert (again / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()


# ---- check.sh --dry-run ------------------------------------------------------------------------------------------
def run_check(tmp_path: Path, payload: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECK), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "OUT": str(tmp_path / "out"), "PAYLOAD": str(payload), "PYTHON": sys.executable, **env},
    )


def test_dry_run_runs_every_step_and_writes_the_json(tmp_path, tokenizer_dir):
    payload = tmp_path / "payload"
    (payload / "wheels").mkdir(parents=True)
    write_manifest(payload / "wheels", [make_wheel(payload / "wheels", "aios-probe-dist", "1.0", [])])
    (payload / "tokenizer").symlink_to(tokenizer_dir)
    done = run_check(tmp_path, payload)
    out = tmp_path / "out"
    report = json.loads((out / "check.json").read_text())
    assert done.returncode == 0, done.stdout[-3000:]
    assert [s["name"] for s in report["steps"]] == ["env", "wheels", "ext", "model", "tests", "parity", "kernel"]
    assert report["ok"] and report["parity"]["parity"]["ok"]
    assert all(report["kernel"][phase]["ok"] for phase in ("snapshot", "preemption", "decode"))
    assert set(report["parity"]["decode_tok_s"]["hf"]) == {"1", "8"}
    log = (out / "check.log").read_text()
    assert "aios_probe_dist-1.0-py3-none-any.whl" in log.split("to install:")[1].splitlines()[0]
    assert "model: ok in" in log and "PASSED" in log


def test_dry_run_stops_at_the_first_failing_step(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    done = run_check(tmp_path, tmp_path / "no-payload", MODEL=str(tmp_path / "not-a-model"))
    report = json.loads((tmp_path / "out" / "check.json").read_text())
    assert done.returncode != 0 and not report["ok"]
    assert [(s["name"], s["ok"]) for s in report["steps"]] == [
        ("env", True),
        ("wheels", True),
        ("ext", True),
        ("model", False),
    ]
    assert "parity" not in report and "kernel" not in report
    assert "no config.json" in (tmp_path / "out" / "check.log").read_text()


def test_dry_run_goes_on_after_a_failed_measuring_step(tmp_path):
    broken = tmp_path / "weightless"  # passes the model step, fails every engine load
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    done = run_check(tmp_path, tmp_path / "no-payload", MODEL=str(broken))
    report = json.loads((tmp_path / "out" / "check.json").read_text())
    assert done.returncode != 0 and not report["ok"]
    assert [(s["name"], s["ok"]) for s in report["steps"]] == [
        ("env", True),
        ("wheels", True),
        ("ext", True),
        ("model", True),
        ("tests", True),
        ("parity", False),
        ("kernel", False),
    ]
    assert "error" in report["kernel"]["snapshot"]  # the daemon did not start: recorded, and the phases stopped
