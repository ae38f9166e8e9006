#!/usr/bin/env bash
# The device check: everything nncore has to show on a machine with a CUDA GPU and no network,
# in one run of at most 6 minutes, written to one report.
#
#   bash benchmarks/gpu_check.sh            # from anywhere; works in the repository root
#   bash benchmarks/gpu_check.sh --dry-run  # write the report's commands, run only bench.py --dry-run
#
# Before: on a machine with network, `bash benchmarks/fetch_wheels.sh` puts the pure-Python wheels
# the GPU machine may lack (array-api-compat, array-api-strict, tqdm) into the git-ignored .whl/,
# which must travel with the working tree (the device tool's carry: [".whl"]).
#
# Steps, each under its own `timeout` and all under one budget (GPU_CHECK_BUDGET, default 345 s):
#   1. install the missing wheels from .whl/ into /tmp/site (PYTHONPATH=/tmp/site:$PWD)
#   2. versions: nvidia-smi, Python, NumPy, SciPy, scikit-learn, CuPy and its CUDA, torch and its CUDA
#   3. the GPU tests: python -m pytest -m gpu (CUPY_TF32 unset)
#   4. benchmarks/bench.py --backend cupy, workload B at batch 128, 1024 and 8192, training and
#      inference, interleaved with torch on CUDA with its default TF32 settings and with TF32 off
#   5. the main job (python -m nncore: digits, 30 epochs) on CuPy, then the same on NumPy
#   6. step 4 again with CUPY_TF32=1 (nncore's float32 products on TF32 tensor cores)
# A step that fails or times out is recorded and the next one runs. The report goes to
# $OUT/gpu_report.md when OUT is set, else benchmarks/gpu_report.md.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1
BUDGET=${GPU_CHECK_BUDGET:-345}  # seconds for everything
SITE=/tmp/site
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ -n "${OUT:-}" ]]; then
    REPORT="$OUT/gpu_report.md"
elif (( DRY_RUN )); then
    REPORT="${TMPDIR:-/tmp}/gpu_report.dry-run.md"
else
    REPORT=benchmarks/gpu_report.md
fi
DRY=()
(( DRY_RUN )) && DRY=(--dry-run)
SUMMARY=()

# run_step TITLE SECONDS COMMAND...: run COMMAND under `timeout`, at most SECONDS and never past the
# budget, copying its output to the terminal and into the report.
run_step() {
    local title=$1 cap=$2
    shift 2
    local left=$(( BUDGET - SECONDS ))
    local limit=$(( cap < left ? cap : left ))
    printf '\n## %s\n\n```\n$ %s\n' "$title" "$*" >> "$REPORT"
    echo "== $title (limit ${limit}s): $*"
    if (( limit < 10 )); then
        echo "not run: ${left}s of the ${BUDGET}s budget left" | tee -a "$REPORT"
        printf '```\n' >> "$REPORT"
        SUMMARY+=("| $title | not run (budget spent) | 0 |")
        return
    fi
    if (( DRY_RUN )) && [[ " $* " != *" --dry-run "* ]]; then
        echo "(dry run: not run; limit ${limit}s)" | tee -a "$REPORT"
        printf '```\n' >> "$REPORT"
        SUMMARY+=("| $title | dry run | 0 |")
        return
    fi
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$REPORT"
    local rc=${PIPESTATUS[0]} status
    status="exit $rc"
    (( rc == 124 || rc == 137 )) && status="timed out after ${limit}s (exit $rc)"
    printf '```\n\n%s, %ss\n' "$status" "$(( SECONDS - start ))" >> "$REPORT"
    SUMMARY+=("| $title | $status | $(( SECONDS - start )) |")
}

INSTALL_PY='
import importlib.util, pathlib, subprocess, sys, zipfile
site, wheels = pathlib.Path(sys.argv[1]), pathlib.Path(".whl")
for module in ("array_api_compat", "array_api_strict", "tqdm"):
    if importlib.util.find_spec(module):
        print(f"{module}: importable")
        continue
    found = sorted(wheels.glob(f"{module}-*.whl"))
    if not found:
        print(f"{module}: MISSING, and no wheel in .whl/ (benchmarks/fetch_wheels.sh downloads it)")
        continue
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(site), str(found[-1])]
    print("$", " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:  # no pip: a pure-Python wheel is a zip of the package
        print(f"pip failed: unpacking {found[-1].name} into {site}", flush=True)
        zipfile.ZipFile(found[-1]).extractall(site)
'

VERSIONS_PY='
import importlib, platform
print("python", platform.python_version(), platform.platform())
for name in ("numpy", "scipy", "sklearn", "array_api_compat", "array_api_strict", "tqdm", "cupy", "torch"):
    try:
        module = importlib.import_module(name)
        version = getattr(module, "__version__", "?")
        print(f"{name} {version} ({module.__file__})")
    except Exception as exc:
        print(f"{name}: NOT importable ({type(exc).__name__}: {exc})")
try:
    import cupy
    rt = cupy.cuda.runtime
    print("cupy CUDA: driver", rt.driverGetVersion(), "runtime", rt.runtimeGetVersion(), "devices", rt.getDeviceCount(),
          "device 0", rt.getDeviceProperties(0)["name"].decode())
except Exception as exc:
    print(f"cupy CUDA: {type(exc).__name__}: {exc}")
try:
    import torch
    print("torch CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "available",
          torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as exc:
    print(f"torch CUDA: {type(exc).__name__}: {exc}")
import backends, nncore
print("nncore", nncore.__version__, nncore.__file__, "backends available:", backends.available())
'

BENCH=(python benchmarks/bench.py --backend cupy --workloads B --batch-sizes 128,1024,8192 --torch-tf32 both
       --gap 0.05 --heap default)

mkdir -p "$(dirname "$REPORT")"
{
    echo "# nncore device check"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- host: $(hostname); commit: $(git rev-parse --short HEAD 2>/dev/null || echo 'unknown (no .git)')"
    echo "- script: bash benchmarks/gpu_check.sh $*; budget ${BUDGET}s"
    echo "- PYTHONPATH=$PYTHONPATH; CUPY_TF32=${CUPY_TF32:-unset}"
} > "$REPORT"

run_step "Install missing wheels from .whl/" 60 python -c "$INSTALL_PY" "$SITE"
run_step "GPU" 15 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
run_step "Versions" 40 python -c "$VERSIONS_PY"
run_step "GPU tests" 150 env -u CUPY_TF32 python -m pytest -m gpu -q -rs -p no:cacheprovider --durations=5 \
    --continue-on-collection-errors
run_step "Benchmark: nncore on CuPy vs torch on CUDA" 100 env -u CUPY_TF32 "${BENCH[@]}" --reps 7 \
    ${DRY[@]+"${DRY[@]}"}
run_step "Main job on CuPy" 60 env -u CUPY_TF32 python -m nncore --backend cupy --quiet
run_step "Main job on NumPy" 60 python -m nncore --backend numpy --quiet
run_step "Benchmark with CUPY_TF32=1" 80 env CUPY_TF32=1 "${BENCH[@]}" --reps 5 --no-memory ${DRY[@]+"${DRY[@]}"}

{
    echo
    echo "## Summary"
    echo
    echo "| step | result | seconds |"
    echo "|---|---|---:|"
    printf '%s\n' "${SUMMARY[@]}"
    echo
    echo "total: ${SECONDS}s of the ${BUDGET}s budget; finished $(date -u '+%H:%M:%S UTC')"
} >> "$REPORT"
echo "report: $REPORT (${SECONDS}s)"
