#!/usr/bin/env bash
# One-command GPU check (issue 16): gsplat backend tests, training and compositing timings on a CUDA GPU.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--budget_s 480] [--steps build,tests,...] [--smoke]
#   WHEEL_DIR=.whl bash benchmarks/gpu_check.sh         # first pip-install the wheels of .whl (no network needed)
#   bash benchmarks/gpu_check.sh --fetch_wheels .whl    # where pip can download: the wheels the GPU image lacks
#
# Python: $PYTHON if set, else ./.venv/bin/python if present, else python3. All options: --help.
# Exit status: 0 = all steps passed, or no CUDA GPU here (prints "skipped: no CUDA GPU ..." and runs nothing);
#              1 = a step failed or ran out of time (summary still written); 2 = bad flag or setup (one error: line).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY="$ROOT/.venv/bin/python"
else
    PY="python3"
fi
cd "$ROOT"
exec "$PY" benchmarks/gpu_check.py "$@"
