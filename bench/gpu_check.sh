#!/usr/bin/env bash
# The GPU checks as one command, for a machine with a GPU where only this working tree arrives
# (the device machine, a workstation, a cluster node), all within 8 minutes:
#
#   bash bench/gpu_check.sh               # results under $OUT (default bench/out/gpu)
#   bash bench/gpu_check.sh --dry-run     # the same steps on CPU, small sizes, nothing installed
#   GPU_CHECK_STEPS="info gpu-fetch" bash bench/gpu_check.sh    # only these steps
#
# Steps (each writes $OUT/<step>.txt; a failed step does not stop the others):
#   wheels      install the wheels of .gpu-wheels/ whose distribution is not installed yet
#               (no network: pip --no-index --no-deps). Fetch them once, where there is a
#               network, with: pip download --no-deps -d .gpu-wheels ucxx-cu13 libucxx-cu13
#               'libucx-cu13<1.22' rmm-cu13 librmm-cu13   (about 55 MB)
#   install     gpupart itself, editable, without dependencies
#   deps        what gpupart needs and what the machine has (versions, or MISSING)
#   info        gpupart info (also as $OUT/info.json), then nvidia-smi
#   tests-gpu   pytest -m gpu over the test files that have GPU tests
#   gpu-fetch   peer fetch between two ranks on one GPU (cuda_ipc) vs a CuPy copy
#   arrays      DistArray elementwise, reduction and X.T @ X on one GPU vs CuPy
#   gpu-ml      LinearRegression and PCA fits on CuPy tiles vs the same in CuPy
# and prints one table of everything against CuPy (bench/gpu_summary.py). Record each GPU
# run in bench/RESULTS.md. Exit status: the number of failed steps.
# The step functions below run through `bash -c` (exported), which shellcheck cannot follow:
# shellcheck disable=SC2329
set -u
cd "$(dirname "$0")/.." || exit 1
DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: bash bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
OUT=${OUT:-bench/out/gpu}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-480}  # seconds for everything; a step gets what is left
mkdir -p "$OUT"
: >"$OUT/summary.txt"
failures=0

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ " $GPU_CHECK_STEPS " != *" $name "* ]]; then
        return  # not among the steps asked for
    fi
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 15 ]; then
        echo "== $name: skipped, the ${BUDGET} s budget is spent" | tee -a "$OUT/summary.txt"
        failures=$((failures + 1))
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name" | tee -a "$OUT/summary.txt"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -n 5 "$OUT/$name.txt" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || failures=$((failures + 1))
}

# The wheels of .gpu-wheels/ whose distribution is not installed, one path a line.
missing_wheels() {
    "$PY" - .gpu-wheels <<'EOF'
import importlib.metadata as md
import pathlib
import sys

for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = wheel.name.split("-")[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(wheel)
EOF
}

install_wheels() {
    local wheels
    mapfile -t wheels < <(missing_wheels)
    if [ "${#wheels[@]}" -eq 0 ]; then
        echo "nothing to install: every wheel of .gpu-wheels/ is installed (or there are none)"
        return 0
    fi
    printf 'missing: %s\n' "${wheels[@]}"
    if [ "$DRY" -eq 1 ]; then
        echo "dry run: not installing"
        return 0
    fi
    "$PY" -m pip install --no-deps --no-index "${wheels[@]}"
}

check_deps() {
    "$PY" - "$DRY" <<'EOF'
import importlib
import sys

dry = sys.argv[1] == "1"
needed = ["numpy", "pandas", "pyarrow", "array_api_compat", "numba", "rich", "ucxx"]
needed += [] if dry else ["cupy", "pynvml"]
optional = ["rmm", "cudf", "sklearn", "mpi4py", "numba.cuda", "pytest"]
missing = []
for name in needed + optional:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install failing as it loads
        print(f"{name}: MISSING ({type(exc).__name__}: {exc})")
        if name in needed:
            missing.append(name)
        continue
    print(f"{name}: {getattr(module, '__version__', '?')}")
if missing:
    sys.exit(f"gpupart needs {', '.join(missing)}: add their wheels to .gpu-wheels/")
EOF
}

write_info_json() {
    "$PY" -m gpupart info --json >"$OUT/info.json" && "$PY" -m gpupart info
}

gpu_test_files() {
    grep -l "pytest.mark.gpu" tests/test_*.py
}

if [ "$DRY" -eq 1 ]; then
    DEVICE=cpu
    FETCH=(--quick)
    ARRAYS=(--n 200000 --rows 20000 --cols 16 --reps 2)
    ML=(--quick)
else
    DEVICE=cuda
    FETCH=()
    ARRAYS=(--n 50000000 --rows 2000000 --cols 32 --reps 5)
    ML=()
fi
mapfile -t GPU_TESTS < <(gpu_test_files)
# `timeout` runs programs, not functions: the steps written as functions run in a child bash.
export PY DRY OUT
export -f missing_wheels install_wheels check_deps write_info_json

step wheels 180 bash -c install_wheels
if [ "$DRY" -eq 1 ]; then
    step install 60 "$PY" -c "import gpupart; print('dry run: using the installed gpupart', gpupart.__version__)"
else
    step install 180 "$PY" -m pip install --no-deps --no-build-isolation -e .
fi
step deps 60 bash -c check_deps
step info 60 bash -c write_info_json
if [ "$DRY" -eq 0 ]; then
    step nvidia-smi 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
step tests-gpu 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider "${GPU_TESTS[@]}"
step gpu-fetch 120 "$PY" bench/gpu_fetch.py --device "$DEVICE" "${FETCH[@]}" --out "$OUT"
step arrays 150 "$PY" bench/arrays.py --device "$DEVICE" --ranks 1 --peers numpy "${ARRAYS[@]}" --out "$OUT"
step gpu-ml 150 "$PY" bench/gpu_ml.py --device "$DEVICE" "${ML[@]}" --out "$OUT"

echo
"$PY" bench/gpu_summary.py "$OUT" | tee "$OUT/table.md"
echo "failures: $failures in $SECONDS s" | tee -a "$OUT/summary.txt"
exit "$failures"
