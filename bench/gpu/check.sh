#!/usr/bin/env bash
# The ExLlamaV2 engine proved on a lent GPU machine in one command (issue 24). Run from anywhere:
#
#   OUT=/tmp/gpu-check bench/gpu/check.sh            # on the GPU machine (no network needed)
#   OUT=/tmp/dry bench/gpu/check.sh --dry-run        # anywhere: the same steps on the CPU, torch engine, tiny model
#
# Steps, in order, each with a deadline; a progress line as each starts and ends; everything printed also goes to
# $OUT/check.log; $OUT/check.json gathers the results (bench/gpu/report.py). Fail fast: a failed setup step (env,
# wheels, ext, model) ends the run at once, since nothing after it could run. A failed measuring step (tests, parity,
# kernel) is recorded and the next one still runs: each measures something the others do not, and the window is short.
#   env     python, torch, CUDA device, nvcc, cores -> env.json (no CUDA device: fail)
#   wheels  verify bench/gpu/payload/wheels against its manifest, pip install --no-index --no-deps --target $OUT/site
#           the ones whose distribution this machine lacks (fetch_wheels.sh put them there)
#   ext     import exllamav2 once: builds its C++/CUDA extension (ninja + nvcc, this GPU's arch only, all cores) into
#           $OUT/torch_extensions
#   model   $MODEL if set (a real HF / EXL2 folder), else a random-weight llama built here (bench/gpu/build_model.py,
#           shape $SHAPE, default 1b) with the bundled tokenizer from the payload
#   tests   tests/engine_gpu/test_exllama_gpu.py against that model (the CPU-side engine tests run in CI)
#   parity  bench/gpu/parity.py: greedy parity vs HF transformers, decode tok/s at batch 1 and 8 vs HF generate
#   kernel  bench/gpu/kernel_checks.py: aiosd with the engine: KV snapshot round trip through the arena, priority
#           preemption with 8 agents, decode tok/s with 1 and 8 agents
# The whole run is held to $BUDGET seconds (default 480): a step gets what is left of it at most.
# --dry-run: no CUDA needed; wheels are verified if the payload is there but not installed (they are for CPython
# 3.12), the extension build is skipped, the model is the tiny shape on the CPU and the engine the torch one.
set -uo pipefail

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PAYLOAD=${PAYLOAD:-$REPO/bench/gpu/payload}
OUT=${OUT:-$REPO/gpu-check-out}
BUDGET=${BUDGET:-$( ((DRY)) && echo 1200 || echo 480)}
if ((DRY)) && [[ -x $REPO/.venv/bin/python ]]; then PYTHON=${PYTHON:-$REPO/.venv/bin/python}; fi
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/steps.jsonl"
exec > >(tee -a "$OUT/check.log") 2>&1
cd "$REPO" || exit 1
export PYTHONPATH="$OUT/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
START=$(date +%s)

if ((DRY)); then
  SHAPE=tiny; DEVICE=cpu; ENGINE=cpu; SLOW=4   # a shared CI box: the same steps, four times the deadlines
  export AIOS_NATIVE_OPS=0                       # the torch engine's C++ ops are not what this run checks: no build
  PARITY_ARGS=(--decode-tokens 16); KERNEL_ARGS=(--dtype float32 --tokens 40 --decode-tokens 16)
else
  SHAPE=${SHAPE:-1b}; DEVICE=cuda; ENGINE=gpu; SLOW=1
  export TORCH_EXTENSIONS_DIR=$OUT/torch_extensions
  PARITY_ARGS=(); KERNEL_ARGS=()
fi
MODEL_DIR=${MODEL:-$OUT/model}

say() { printf '[%4ds] %s\n' "$(($(date +%s) - START))" "$*"; }

finish() {
  "$PYTHON" -m bench.gpu.report "$OUT"
  local code=$?
  say "check.json and check.log in $OUT"
  exit $code
}

# step NAME MAX_SECONDS NOTE COMMAND...: run it with a deadline, record it, stop everything if it fails
# (measure NAME ...: the same, but the run goes on after a failure)
step() {
  local name=$1 max=$(($2 * SLOW)) note=$3; shift 3
  local left=$((START + BUDGET - $(date +%s)))
  ((left < max)) && max=$left
  if ((max <= 0)); then
    say "$name: no time left in the ${BUDGET} s budget"
    printf '{"name": "%s", "ok": false, "seconds": 0, "note": "no time left"}\n' "$name" >> "$OUT/steps.jsonl"
    finish
  fi
  say "$name: $note (at most ${max} s)"
  local t0=$(date +%s)
  # the step runs in its own bash (timeout cannot run a function of this one): functions and settings are exported
  timeout --kill-after=10 "$max" bash -c '"$@"' "$name" "$@"
  local code=$? seconds=$(($(date +%s) - t0))
  local ok=true
  ((code != 0)) && ok=false
  ((code == 124)) && note="$note; timed out"
  printf '{"name": "%s", "ok": %s, "seconds": %d, "note": "%s"}\n' "$name" "$ok" "$seconds" "$note" \
    >> "$OUT/steps.jsonl"
  if ((code != 0)); then
    say "$name: FAILED (exit $code) after ${seconds} s"
    ((SOFT)) || finish
    return 0
  fi
  say "$name: ok in ${seconds} s"
}
SOFT=0
measure() { SOFT=1 step "$@"; }

env_step() {
  "$PYTHON" - "$OUT/env.json" "$DRY" <<'EOF'
import json, os, platform, shutil, subprocess, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cores": os.cpu_count(), "glibc": platform.libc_ver()[1]}
if info["cuda_available"]:
    info["device"] = torch.cuda.get_device_name(0)
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
nvcc = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if "CUDA_HOME" in os.environ else None)
info["nvcc"] = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1] \
    if nvcc and os.path.exists(nvcc) else None
for name in ("flash_attn", "exllamav2", "transformers", "zmq"):
    try:
        info[name] = __import__(name).__version__
    except Exception as exc:
        info[name] = None
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
dry = sys.argv[2] == "1"
if not dry and not info["cuda_available"]:
    sys.exit("no CUDA device visible to torch")
if not dry and not info["nvcc"]:
    sys.exit("no nvcc on PATH or in $CUDA_HOME/bin: exllamav2 cannot build its extension")
EOF
}

wheels_step() {
  local wheels=$PAYLOAD/wheels
  if [[ ! -f $wheels/manifest.json ]]; then
    if ((DRY)); then echo "no payload at $wheels (run bench/gpu/fetch_wheels.sh): nothing to verify"; return 0; fi
    echo "no $wheels/manifest.json: run bench/gpu/fetch_wheels.sh where there is network, then bring the tree"
    return 1
  fi
  "$PYTHON" -m bench.gpu.wheels verify "$wheels" || return 1
  mapfile -t missing < <("$PYTHON" -m bench.gpu.wheels missing "$wheels")
  echo "to install: ${missing[*]:-(none)}"
  if ((DRY)) || ((${#missing[@]} == 0)); then return 0; fi
  "$PYTHON" -m pip install --no-index --no-deps --quiet --target "$OUT/site" "${missing[@]}"
}

ext_step() {
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PYTHON" -c \
    'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')}
  echo "building with MAX_JOBS=$MAX_JOBS TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  # a build cut by the deadline leaves torch's lock file behind, and the next run would wait on it forever; nothing
  # else builds in this run's own extensions folder, so a lock there is stale
  find "$TORCH_EXTENSIONS_DIR" -maxdepth 3 -name lock -type f -delete 2>/dev/null || true
  "$PYTHON" -c 'import exllamav2, exllamav2.ext; print("exllamav2", exllamav2.__version__, "extension loaded")'
}

model_step() {
  if [[ -n ${MODEL:-} ]]; then
    [[ -f $MODEL/config.json ]] || { echo "MODEL=$MODEL has no config.json"; return 1; }
    echo "using the model in $MODEL"; return 0
  fi
  local tokenizer=$PAYLOAD/tokenizer
  if [[ ! -f $tokenizer/tokenizer.json ]]; then
    ((DRY)) || { echo "no $tokenizer/tokenizer.json: run bench/gpu/fetch_wheels.sh"; return 1; }
    tokenizer=$OUT/tokenizer
    "$PYTHON" -m bench.gpu.build_model export-tokenizer "$tokenizer" || return 1
  fi
  rm -rf "$MODEL_DIR"
  "$PYTHON" -m bench.gpu.build_model build "$MODEL_DIR" --tokenizer "$tokenizer" --shape "$SHAPE" --device "$DEVICE"
}

tests_step() {
  AIOS_EXL2_MODEL=$MODEL_DIR "$PYTHON" -m pytest -q -p no:cacheprovider tests/engine_gpu/test_exllama_gpu.py -rs
  local code=$?
  # pytest exits 5 when the module skips itself (no exllamav2 / CUDA): expected in the dry run only
  if ((DRY && code == 5)); then echo "skipped, as it must be without a GPU"; return 0; fi
  return $code
}

export DRY REPO PAYLOAD OUT PYTHON SHAPE DEVICE MODEL_DIR
export -f env_step wheels_step ext_step model_step tests_step
say "GPU check of the ExLlamaV2 engine$( ((DRY)) && echo ' (dry run: CPU, torch engine, tiny model)'); out: $OUT"
step env 60 "python, torch, device, nvcc" env_step
step wheels 90 "verify and install the missing wheels" wheels_step
if ((DRY)); then
  say "ext: skipped in the dry run (would import exllamav2 and build its CUDA extension)"
  printf '{"name": "ext", "ok": true, "seconds": 0, "note": "skipped (dry run)"}\n' >> "$OUT/steps.jsonl"
else
  step ext 330 "build exllamav2's CUDA extension" ext_step
fi
step model 120 "model folder ($([[ -n ${MODEL:-} ]] && echo "$MODEL" || echo "random $SHAPE llama"))" model_step
measure tests 180 "tests/engine_gpu/test_exllama_gpu.py" tests_step
measure parity 240 "greedy parity and decode tok/s vs HF" \
  "$PYTHON" -m bench.gpu.parity "$MODEL_DIR" --engine "$ENGINE" --device "$DEVICE" --out "$OUT/parity.json" \
  "${PARITY_ARGS[@]}"
measure kernel 300 "aiosd: snapshot, 8-agent preemption, decode tok/s" \
  "$PYTHON" -m bench.gpu.kernel_checks "$MODEL_DIR" --engine "$ENGINE" --out "$OUT/kernel.json" --logs "$OUT/kernel" \
  "${KERNEL_ARGS[@]}"
finish
