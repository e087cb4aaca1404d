#!/usr/bin/env bash
# One GPU check of tinysr, run from anywhere in the checkout on a machine with one NVIDIA GPU
# (CuPy, torch, pytest and pytest-benchmark installed; no network needed; tinysr need not be
# installed: the checkout is put on PYTHONPATH). Finishes in under 8 minutes: every stage has a
# time cap and the whole script a budget (GPU_CHECK_BUDGET_S, default 450 s).
#
#   bash bench/gpu_check.sh                 # logs in $OUT, default ./gpu_check_out
#   PYTHON=.venv/bin/python OUT=/tmp/gc bash bench/gpu_check.sh
#
# Stages (their logs in $OUT, 7 files at most):
#   env        nvidia-smi, versions, GPU properties, tinysr's cupy probe      -> env.txt
#   kernels    NVRTC compile time per kernels/*.cu; registers, shared and
#              local memory per kernel (CuPy's function attributes)         -> kernels.txt
#   compile    tests/test_nvrtc_compile.py and test_cuda_compile.py (no GPU
#              needed: they skip with the reason where CuPy/nvcc are absent) -> tests.txt
#   gpu-tests  the [gpu] tests (python -m pytest -m gpu tests/)              -> tests.txt
#   data       T91 + Set5 from data/ (copied into the checkout before a device
#              call, see bench/README.md), $TINYSR_SHARED/data or ../shared/data;
#              else synthetic stand-ins with T91's 21,884 x3 patches         -> train.txt
#   train      train.py --backend cupy, x3, 2 epochs, batch 128, fresh --out -> train.txt
#   bench      the GPU benchmark entries (-k "cupy or cuda"), then report.py -> bench.json, bench.txt
# A summary (PASS / FAIL / TIMEOUT / SKIP per stage) goes to $OUT/summary.txt and ends the output.
# Without a usable GPU the GPU stages are skipped, each with a line saying why; exit status 0
# unless a stage that ran failed or timed out (then 1).

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$ROOT/gpu_check_out}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
mkdir -p "$OUT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tinysr-gpu-check.XXXXXX") || exit 2
export ROOT PYTHON OUT TMP  # for the stage functions, which run in a child bash under timeout
trap 'rm -rf "$TMP"' EXIT
for f in summary.txt env.txt kernels.txt tests.txt train.txt bench.txt; do : > "$OUT/$f"; done
rm -f "$OUT/bench.json"
START=$SECONDS
FAILED=0

note() { echo "$*" | tee -a "$OUT/summary.txt"; }

# run_stage NAME CAP_S LOG CMD...: run CMD with its output appended to $OUT/LOG, at most CAP_S
# seconds (less when the budget is nearly spent); one summary line; 10 log lines on failure.
run_stage() {
    local name=$1 cap=$2 log=$OUT/$3
    shift 3
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 15)); then
        note "SKIP    $name: the script's ${BUDGET}s budget is spent"
        return 1
    fi
    ((cap > left)) && cap=$left
    local t0=$SECONDS rc
    printf '\n=== %s (cap %ss): %s\n' "$name" "$cap" "$*" >>"$log"
    timeout --kill-after=15 "$cap" "$@" >>"$log" 2>&1
    rc=$?
    local took=$((SECONDS - t0))
    if ((rc == 0)); then
        note "PASS    $name (${took}s) -> $(basename "$log")"
    elif ((rc == 124 || rc == 137)); then
        FAILED=1
        note "TIMEOUT $name after ${took}s (cap ${cap}s) -> $(basename "$log")"
    else
        FAILED=1
        note "FAIL    $name (exit $rc, ${took}s) -> $(basename "$log"); its last lines:"
        tail -n 10 "$log" | sed 's/^/        /' | tee -a "$OUT/summary.txt"
    fi
    return $rc
}

env_info() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'unknown (no .git)')"
    echo "host: $(uname -srm), $(nproc) CPUs"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit \
            --format=csv || true
        nvidia-smi || true
    else
        echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
    fi
    command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -n 2
    "$PYTHON" bench/gpu_check.py env
}
export -f env_info

echo "tinysr GPU check: logs in $OUT, budget ${BUDGET}s, python: $PYTHON"
run_stage env 60 env.txt bash -c env_info

GPU_REASON=$("$PYTHON" bench/gpu_check.py gpu 2>&1)
if (($? == 0)); then
    HAVE_GPU=1
else
    HAVE_GPU=0
    GPU_REASON=$(printf '%s' "$GPU_REASON" | tail -n 1)
fi
skip_gpu() { note "SKIP    $1: needs a GPU; $GPU_REASON"; }

if ((HAVE_GPU)); then
    run_stage kernels 90 kernels.txt "$PYTHON" bench/gpu_check.py kernels
else
    skip_gpu kernels
fi

run_stage compile 90 tests.txt "$PYTHON" -m pytest -q -rs -p no:cacheprovider \
    tests/test_nvrtc_compile.py tests/test_cuda_compile.py

if ((HAVE_GPU)); then
    run_stage gpu-tests 150 tests.txt "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m gpu tests/
else
    skip_gpu gpu-tests
fi

if ((HAVE_GPU)); then
    if run_stage data 60 train.txt "$PYTHON" bench/gpu_check.py data "$TMP/data"; then
        { read -r TRAIN_DIR; read -r EVAL_DIR; } <"$TMP/data/dirs"
        export TRAIN_DIR EVAL_DIR
        train_run() {
            "$PYTHON" train.py --backend cupy --scale 3 --epochs 2 --batch-size 128 \
                --out "$TMP/run" --train-dir "$TRAIN_DIR" --eval-dir "$EVAL_DIR" || return
            echo "--- $TMP/run/log.jsonl"
            cat "$TMP/run/log.jsonl"
            [ "$(wc -l <"$TMP/run/log.jsonl")" -eq 2 ] || { echo "expected 2 epochs in log.jsonl"; return 1; }
        }
        export -f train_run
        run_stage train 150 train.txt bash -c train_run
    else
        note "SKIP    train: no training data (see the data stage)"
    fi
else
    skip_gpu data
    skip_gpu train
fi

if ((HAVE_GPU)); then
    bench_run() {
        "$PYTHON" -m pytest bench/ --benchmark-only -q -rs -p no:cacheprovider -k "cupy or cuda" \
            --benchmark-min-rounds=3 --benchmark-max-time=0.5 --benchmark-json="$OUT/bench.json" || return
        "$PYTHON" bench/report.py "$OUT/bench.json"
    }
    export -f bench_run
    run_stage bench 240 bench.txt bash -c bench_run
else
    skip_gpu bench
fi

echo
echo "=== summary ($((SECONDS - START))s; logs in $OUT)"
cat "$OUT/summary.txt"
exit $FAILED
