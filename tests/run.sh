#!/usr/bin/env bash
# The test suite: set up (packages, MNIST, release build), run every test,
# then rebuild with AddressSanitizer + UBSan and run the tests again.
#
#   bash tests/run.sh           everything
#   NO_SANITIZE=1 bash tests/run.sh   skip the sanitizer pass
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)

bash "$top/deploy/setup.sh"

echo "== tests (release build)"
ctest --test-dir "$top/build" --output-on-failure -j "$jobs" \
    --timeout 900

if [ -z "${NO_SANITIZE:-}" ]; then
    echo "== tests (AddressSanitizer + UBSan build)"
    SKIP_APT=1 BUILD_DIR="$top/build-asan" \
        CMAKE_ARGS="-DDADC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug" \
        bash "$top/deploy/setup.sh"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir "$top/build-asan" --output-on-failure -j "$jobs" \
        --timeout 1200 -LE nosan
fi
