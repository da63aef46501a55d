#!/usr/bin/env bash
# One command for an offline CUDA machine: build and install jax_hypereca with
# its CUDA extension, run the CUDA op tests (GPU vs CPU, bit for bit, and
# compute-sanitizer memcheck) and the op benchmark, then print a summary.
#
#   tools/gpu_check.sh [RESULTS_DIR]      run as root from anywhere
#
# RESULTS_DIR (default $HYPERECA_RESULTS, else ./gpu_results) receives
#   gpu_check.jsonl     first line: the GPU (nvidia-smi), then one line per step
#   gpu_check.log       everything the steps printed
#   test_ops_cuda.xml   the tests' junit report (test_ops_cuda.py, test_step_cuda.py)
#   bench_ops_gpu.jsonl the benchmark's output (when experiments/bench_ops exists)
# Needs python3 with jax (+ CUDA plugin), nanobind, scikit-build-core, cmake,
# ninja and pytest installed; no package index is used. Exits non-zero when the
# build, the tests or the benchmark fail (skips are not failures).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="${1:-${HYPERECA_RESULTS:-./gpu_results}}"
mkdir -p "$RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
LOG="$RESULTS/gpu_check.log"
JSONL="$RESULTS/gpu_check.jsonl"
PY="${PYTHON:-python3}"
BUILD_DIR="${HYPERECA_BUILD_DIR:-/tmp/hypereca-gpu-build}"
WORK="$(mktemp -d /tmp/hypereca-gpu-check.XXXXXX)"
: >"$LOG"
: >"$JSONL"

BUILD_STATUS="not run"
TEST_STATUS="not run"
BENCH_STATUS="not run"
TEST_COUNTS=""
BUILD_SECONDS=0
TEST_SECONDS=0
BENCH_SECONDS=0
T_START=$SECONDS

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# json_line key=value ... -> one JSON object appended to gpu_check.jsonl
json_line() {
  "$PY" - "$@" >>"$JSONL" <<'EOF' || true
import json, sys
obj = {}
for arg in sys.argv[1:]:
    k, _, v = arg.partition("=")
    try:
        obj[k] = json.loads(v)
    except ValueError:
        obj[k] = v
print(json.dumps(obj))
EOF
}

summary() {
  local rc=$?
  set +e
  {
    echo
    echo "==================== jax_hypereca gpu_check summary ===================="
    printf '%-10s %s\n' "gpu" "${GPU_LINE:-unknown}"
    printf '%-10s %-8s %5ss\n' "build" "$BUILD_STATUS" "$BUILD_SECONDS"
    printf '%-10s %-8s %5ss  %s\n' "tests" "$TEST_STATUS" "$TEST_SECONDS" "$TEST_COUNTS"
    printf '%-10s %-8s %5ss\n' "bench" "$BENCH_STATUS" "$BENCH_SECONDS"
    if [[ -s "$RESULTS/bench_ops_gpu.jsonl" ]]; then
      echo "key benchmark lines ($RESULTS/bench_ops_gpu.jsonl):"
      "$PY" - "$RESULTS/bench_ops_gpu.jsonl" <<'EOF' 2>/dev/null ||
import json, sys
keep = ("copy_bandwidth", "jnp_take", "find", "gather", "find_or_insert",
        "find_or_insert_gather", "apply_rowwise_adagrad")
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("bench") == "ops" and d.get("op") in keep:
        t = d.get("seconds")
        ms = f"{t * 1e3:8.3f} ms" if t is not None else "       -   "
        r = d.get("ratio_vs_baseline")
        extra = f"  x{r:.2f} vs {d.get('baseline')}" if r is not None else ""
        if d.get("skipped"):
            extra = "  skipped: " + str(d["skipped"])
        print(f"  {d['op']:<22} C={d.get('capacity')} dim={d.get('dim')} "
              f"load={d.get('load')} {ms}{extra}")
    elif d.get("bench") == "ops_summary":
        for k, v in d.get("measured", {}).items():
            print(f"  goal {k:<40} {v:12.4g} vs {d['goals'][k]:10.4g}  "
                  f"{'met' if d['met'][k] else 'NOT met'}")
        if "measured" not in d:
            print("  summary: " + json.dumps(d)[:400])
EOF
        head -n 12 "$RESULTS/bench_ops_gpu.jsonl" | cut -c1-200 | sed 's/^/  /'
    fi
    if [[ "$TEST_STATUS" == "FAILED" ]]; then
      echo "first failures (see $LOG):"
      grep -E "^(FAILED|ERROR) |Error|assert" "$LOG" | head -n 8 | cut -c1-240 | sed 's/^/  /'
    fi
    echo "total ${SECONDS}s; results in $RESULTS"
    echo "========================================================================"
  } | tee -a "$LOG"
  rm -rf "$WORK"
  if [[ $rc -eq 0 && ( "$BUILD_STATUS" == "FAILED" || "$TEST_STATUS" == "FAILED" ||
        "$BENCH_STATUS" == "FAILED" ) ]]; then
    rc=1
  fi
  exit $rc
}
trap summary EXIT

# ---------------------------------------------------------------- 1. the GPU
if command -v nvidia-smi >/dev/null 2>&1; then
  GPU_LINE="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1 || true)"
else
  GPU_LINE="nvidia-smi not found"
fi
log "gpu: $GPU_LINE"
json_line step=gpu "nvidia_smi=$GPU_LINE"

# ---------------------------------------------------------------- 2. build + install
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
log "python: $("$PY" -c 'import sys, jax, jaxlib; print(sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__)' 2>&1 | tail -n 1)"
log "nvcc: $(nvcc --version 2>&1 | tail -n 1 || echo missing)"
log "building and installing jax_hypereca (CUDA on, sm_90) in $BUILD_DIR"
t0=$SECONDS
if (
  cd "$REPO" &&
    HYPERECA_CUDA=ON CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" CMAKE_BUILD_PARALLEL_LEVEL=16 \
      "$PY" -m pip install --no-build-isolation --no-deps --no-index -v \
      --config-settings=build-dir="$BUILD_DIR" .
) >>"$LOG" 2>&1 &&
  (cd "$WORK" && "$PY" -c '
import jax_hypereca, jax_hypereca._hypereca_cuda as m
print("installed:", jax_hypereca.__file__)
print("cuda build_info:", m.build_info())
assert jax_hypereca.has_platform("CUDA"), "CUDA targets not registered"
') >>"$LOG" 2>&1; then
  BUILD_STATUS=ok
else
  BUILD_STATUS=FAILED
fi
BUILD_SECONDS=$((SECONDS - t0))
log "build: $BUILD_STATUS (${BUILD_SECONDS}s)"
json_line step=build "status=$BUILD_STATUS" "seconds=$BUILD_SECONDS"
if [[ "$BUILD_STATUS" != ok ]]; then
  tail -n 40 "$LOG"
  exit 1
fi

# ---------------------------------------------------------------- 3. tests
# From a scratch directory, so the installed package (not the source tree) is
# imported (the tests import tests/test_collection.py's fixtures too).
# Up to 8 failures before stopping: one run on a lent GPU should show them all.
log "tests: pytest tests/test_ops_cuda.py tests/test_step_cuda.py"
t0=$SECONDS
set +e
(
  cd "$WORK" &&
    timeout "${HYPERECA_TEST_TIMEOUT:-1500}" "$PY" -m pytest -q --maxfail=8 -p no:cacheprovider -rs \
      --junitxml="$RESULTS/test_ops_cuda.xml" "$REPO/tests/test_ops_cuda.py" \
      "$REPO/tests/test_step_cuda.py"
) 2>&1 | tee -a "$LOG"
test_rc=${PIPESTATUS[0]}
set -e
TEST_SECONDS=$((SECONDS - t0))
if [[ -f "$RESULTS/test_ops_cuda.xml" ]]; then
  TEST_COUNTS="$("$PY" - "$RESULTS/test_ops_cuda.xml" <<'EOF' || true
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
print(f"passed={passed} failed={tot['failures']} errors={tot['errors']} skipped={tot['skipped']}")
EOF
)"
fi
if [[ $test_rc -eq 0 ]]; then TEST_STATUS=ok; else TEST_STATUS=FAILED; fi
if [[ $test_rc -eq 124 ]]; then TEST_COUNTS="$TEST_COUNTS (timed out)"; fi
if [[ $test_rc -eq 5 ]]; then TEST_COUNTS="$TEST_COUNTS (nothing ran: does JAX see the GPU?)"; fi
log "tests: $TEST_STATUS rc=$test_rc $TEST_COUNTS (${TEST_SECONDS}s)"
json_line step=tests "status=$TEST_STATUS" "rc=$test_rc" "counts=$TEST_COUNTS" "seconds=$TEST_SECONDS"

# ---------------------------------------------------------------- 4. benchmark
if [[ -f "$REPO/experiments/bench_ops.py" ]]; then
  # experiments/ (and models/) linked beside nothing else, so `-m experiments...`
  # imports the installed jax_hypereca, not the source tree's.
  mkdir -p "$WORK/bench"
  ln -sfn "$REPO/experiments" "$WORK/bench/experiments"
  [[ -d "$REPO/models" ]] && ln -sfn "$REPO/models" "$WORK/bench/models"
  log "bench: python -m experiments.bench_ops --platform gpu --quick"
  t0=$SECONDS
  set +e
  (
    cd "$WORK/bench" &&
      XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}" timeout "${HYPERECA_BENCH_TIMEOUT:-900}" "$PY" -m experiments.bench_ops --platform gpu --quick \
        --out "$RESULTS/bench_ops_gpu.jsonl"
  ) 2>&1 | tee -a "$LOG"
  bench_rc=${PIPESTATUS[0]}
  set -e
  BENCH_SECONDS=$((SECONDS - t0))
  if [[ $bench_rc -eq 0 ]]; then BENCH_STATUS=ok; else BENCH_STATUS=FAILED; fi
  json_line step=bench "status=$BENCH_STATUS" "rc=$bench_rc" "seconds=$BENCH_SECONDS"
else
  BENCH_STATUS=skipped
  log "bench: skipped (experiments/bench_ops.py not found in $REPO)"
  json_line step=bench status=skipped "reason=experiments/bench_ops.py not found"
fi
json_line step=done "seconds=$((SECONDS - T_START))"
