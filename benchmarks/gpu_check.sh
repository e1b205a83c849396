#!/usr/bin/env bash
# The GPU check in one call (benchmarks/gpu_check.py says what it measures).
#
#   python benchmarks/gpu_check.py --prepare   # once, here (network): fills .gpu_check/ (ignored, < 64 MiB)
#   bash benchmarks/gpu_check.sh               # on the lent GPU machine, .gpu_check carried: results in $OUT
#   bash benchmarks/gpu_check.sh --dry-run     # here: tiny sizes on the CPU, in a fresh virtual environment
#                                              # built only from the carried wheels and the lent machine's
#                                              # package versions (so a missing wheel fails here, not there)
#
# Exit 0: every section passed; 1: a section failed (named in the output and in $OUT/gpu_check.md);
# 2: a missing piece (a module, a prepared file, CUDA), named.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PREP=.gpu_check
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ ! -f "$PREP/manifest.json" ] || ! ls "$PREP"/wheels/*.whl >/dev/null 2>&1; then
    echo "gpu_check: MISSING: $PREP/manifest.json or $PREP/wheels: run 'python benchmarks/gpu_check.py --prepare' here and carry $PREP" >&2
    exit 2
fi

if [ "${1:-}" = "--dry-run" ]; then
    PY="${GPU_CHECK_PYTHON:-python3}"
    WORK="${GPU_CHECK_VENV:-$(mktemp -d /tmp/gpu-check-dry.XXXXXX)}"
    OUT_DIR="${OUT:-$WORK/out}"
    echo "gpu_check --dry-run: a fresh virtual environment in $WORK/venv ($($PY --version))"
    rm -rf "$WORK/venv"
    "$PY" -m venv "$WORK/venv"
    "$WORK/venv/bin/python" -m pip install -q --upgrade pip packaging >/dev/null
    # The outer Python reads the manifest; pip installs into the fresh environment.
    "$WORK/venv/bin/python" benchmarks/gpu_check.py --dry-run-install "$WORK/venv/bin/python"
    # The checkout is put on the path as it is on the lent machine (not installed).
    PYTHONPATH="$ROOT" "$WORK/venv/bin/python" benchmarks/gpu_check.py --device cpu --tiny --out "$OUT_DIR"
    exit $?
fi

: "${OUT:?gpu_check: MISSING: OUT is not set (the folder whose files come back from the device call)}"
SITE=/tmp/gpu_check_site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$PREP"/wheels/*.whl
export PYTHONPATH="$SITE:$ROOT"
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available())"
set -o pipefail
python3 benchmarks/gpu_check.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
