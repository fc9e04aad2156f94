#!/usr/bin/env bash
# The CUDA check (issue 15), to run as it is from the repository root on a machine with an NVIDIA GPU
# and its driver (nothing else needed but pip): bash benchmarks/gpu_check.sh
# Makes a venv, installs '.[cuda]', then benchmarks/gpu_check.py compares --providers cuda (IO binding) with
# onnxruntime CPU: parity (max |prob diff|, mask IoU), batch-1 p50, images/s, what really ran; segment, video
# and bench run as commands. Writes benchmarks/gpu.json and, when $OUT is set, $OUT/gpu.json.
# Fails loudly: any failed step or check exits non-zero with the reason on stderr. Under 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROVIDERS=${PROVIDERS:-cuda}   # PROVIDERS=cpu runs the same logic on a machine without a GPU
VENV=${VENV:-${TMPDIR:-/tmp}/unetlite-gpu-venv}
LIMIT=${LIMIT:-470}                   # seconds for the whole script
START=$SECONDS
fail() { echo "gpu_check.sh FAILED: $*" >&2; exit 1; }
left() { echo $((LIMIT - (SECONDS - START))); }

if [ "$PROVIDERS" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || fail "nvidia-smi: no NVIDIA driver"
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || fail "python3 -m venv (install python3-venv)"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip || fail "pip upgrade"
if ! timeout "$(left)" python -m pip install -q -c constraints.txt -e '.[cuda]'; then
  echo "gpu_check.sh: the pinned install (constraints.txt) did not resolve here; installing unpinned" >&2
  timeout "$(left)" python -m pip install -q -e '.[cuda]' || fail "pip install -e '.[cuda]'"
fi
python - <<'EOF' || fail "onnxruntime has no CUDA provider (onnxruntime-gpu not what 'import onnxruntime' finds?)"
import os, onnxruntime as ort
print("onnxruntime", ort.__version__, ort.get_available_providers())
assert os.environ.get("PROVIDERS", "cuda") != "cuda" or "CUDAExecutionProvider" in ort.get_available_providers()
EOF
OUTS=(--out benchmarks/gpu.json)
[ -n "${OUT:-}" ] && OUTS+=(--out "$OUT/gpu.json")
echo "gpu_check.sh: installed in $((SECONDS - START)) s; measuring (at most $(left) s)"
timeout "$(left)" python benchmarks/gpu_check.py --providers "$PROVIDERS" "${OUTS[@]}" ${QUICK:+--quick} \
  || fail "benchmarks/gpu_check.py exited $? (see its lines above; the JSON says which check failed)"
echo "gpu_check.sh: done in $((SECONDS - START)) s"
