#!/usr/bin/env bash
# Run here (with network) before the GPU window: puts into bench/gpu/payload/ (git-ignored; it travels with the
# working tree) what the GPU machine lacks for bench/gpu/check.sh:
#   payload/wheels/     the wheels, CPython 3.12 manylinux x86-64, resolved by bench/gpu/wheels.py, + manifest.json
#   payload/tokenizer/  the bundled SmolLM2 tokenizer (tokenizer.json, tokenizer_config.json) for the model builder
# and prints their total size, which must stay under 48 MiB (the tree may carry 64 MiB of extra files).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PAYLOAD=${PAYLOAD:-$REPO/bench/gpu/payload}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
cd "$REPO"
rm -rf "$PAYLOAD/wheels" "$PAYLOAD/tokenizer"
echo "wheels for CPython 3.12 manylinux x86-64 into $PAYLOAD/wheels:"
"$PYTHON" -m bench.gpu.wheels fetch "$PAYLOAD/wheels"
"$PYTHON" -m bench.gpu.build_model export-tokenizer "$PAYLOAD/tokenizer"
total=$(du -sb "$PAYLOAD" | cut -f1)
printf 'payload: %s, %.1f MiB in all (wheels %.1f MiB, tokenizer %.1f MiB)\n' "$PAYLOAD" \
  "$(awk "BEGIN{print $total / 1048576}")" \
  "$(du -sb "$PAYLOAD/wheels" | awk "{print \$1 / 1048576}")" \
  "$(du -sb "$PAYLOAD/tokenizer" | awk "{print \$1 / 1048576}")"
if ((total > 48 * 1048576)); then
  echo "over 48 MiB: too big to travel with the tree" >&2
  exit 1
fi
