#!/usr/bin/env bash
# The native CPU module under AddressSanitizer and UndefinedBehaviorSanitizer:
# builds it into build/sanitize (the installed, optimized module is left as it
# is), then runs the op tests and the fuzz targets against it, the sanitizer
# runtimes preloaded into the (uninstrumented) Python. Any report aborts the
# run (-fno-sanitize-recover, halt_on_error) with a non-zero status.
#
#   tools/sanitize.sh                 # the op, host-store and fuzz tests
#   tools/sanitize.sh tests/test_x.py # other tests
#
# Leak detection is off: CPython and jaxlib keep allocations until exit by
# design, which LeakSanitizer reports as leaks that are not ours.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUILD=${BUILD:-build/sanitize}
CXX=${CXX:-g++}
BIN=$(dirname "$PY")
PATH="$BIN:$PATH" cmake -S . -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER="$CXX" \
  -DHYPERECA_CUDA=OFF -DHYPERECA_SANITIZE=address,undefined \
  -DPython_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
PATH="$BIN:$PATH" cmake --build "$BUILD" --target _hypereca_cpu
SO=$(ls "$BUILD"/_hypereca_cpu*.so)
if [ $# -eq 0 ]; then
  set -- tests/test_table_ops.py tests/test_native.py tests/test_host_store.py \
    tests/test_fuzz_table_args.py tests/test_table_hypothesis.py tests/test_single_device.py
fi
export LD_PRELOAD="$($CXX -print-file-name=libasan.so) $($CXX -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export HYPERECA_NATIVE_CPU="$SO"
echo "sanitize: $SO (address,undefined) on $*"
"$PY" -m pytest -q -p no:cacheprovider "$@"
echo "sanitize: no report (AddressSanitizer, UndefinedBehaviorSanitizer)"
