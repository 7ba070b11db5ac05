#!/usr/bin/env bash
# The GPU checks, as one script for a machine with a GPU (the device machine or a workstation).
#
#   bash bench/gpu_check.sh            # results under $OUT (default bench/out/gpu)
#
# Installs gpupart without dependencies over what the machine has (CuPy, numba-cuda,
# nvidia-ml-py, pyarrow, pandas, mpi4py), plus the UCX/RMM wheels found in .gpu-wheels/
# (fetch them with: pip download --no-deps -d .gpu-wheels ucxx-cu13 libucxx-cu13
# 'libucx-cu13<1.22' rmm-cu13 librmm-cu13), then runs: the device probe, every test marked
# gpu, the numba-cuda kernels on the device, and the arrays benchmark at 1 and 2 ranks (as
# many ranks as GPUs, sharing GPU 0 when there is one). Each step's output is a file in
# $OUT; a failed step does not stop the others; the exit status is the number of failures.
set -u
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
failures=0
step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name" | tee -a "$OUT/summary.txt"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -n 5 "$OUT/$name.txt" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || failures=$((failures + 1))
}
if compgen -G ".gpu-wheels/*.whl" >/dev/null; then
    step wheels 300 "$PY" -m pip install --no-deps --no-index .gpu-wheels/*.whl
fi
step install 300 "$PY" -m pip install --no-deps --no-build-isolation -e .
step probe 60 "$PY" -c "import gpupart, gpupart.topology as t; print(gpupart.backend.probe()); print(t.local())"
step nvidia-smi 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step tests-gpu 900 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/
step arrays-1 600 "$PY" bench/arrays.py --device cuda --ranks 1 --out "$OUT/r1"
step arrays-2 600 "$PY" bench/arrays.py --device cuda --ranks 2 --out "$OUT/r2"
echo "failures: $failures" | tee -a "$OUT/summary.txt"
exit "$failures"
