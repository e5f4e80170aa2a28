#!/usr/bin/env bash
# Configure, build and test the CMake build of pgsl_ext (CMakeLists.txt, tests/cpp/).
#
#   scripts/cmake_test.sh                   # CUDA kernels too when nvcc is found (arch 90)
#   PGSL_EXT_CUDA=0 scripts/cmake_test.sh   # CPU-only
#
# Environment: BUILD_DIR (default build/cmake), BUILD_TYPE (Release), JOBS (2), PYTHON (the
# python with torch; default python, as scripts/install.sh, else python3), CUDA_ARCHS
# (CMAKE_CUDA_ARCHITECTURES, default 90), CTEST_ARGS (extra ctest arguments, e.g. "--parallel 8"
# or "-R ^emulat").
# Extra arguments go to the cmake configure step. Exits non-zero if any step fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD_DIR="${BUILD_DIR:-build/cmake}"
BUILD_TYPE="${BUILD_TYPE:-Release}"
JOBS="${JOBS:-2}"
PYTHON="$(command -v "${PYTHON:-python}" || command -v python3)"
PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)')"  # through pyenv shims

args=(-S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DPython3_EXECUTABLE="$PYTHON"
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}")

# Ninja when there is one (on PATH, or the pip package's binary); a build folder keeps the
# generator it was made with.
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  generator="$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$BUILD_DIR/CMakeCache.txt")"
  echo "cmake_test: reusing $BUILD_DIR ($generator)"
elif command -v ninja >/dev/null 2>&1; then
  args+=(-G Ninja)
elif ninja_bin="$("$PYTHON" -c 'import ninja, os; print(os.path.join(ninja.BIN_DIR, "ninja"))' \
                   2>/dev/null)" && [[ -x "$ninja_bin" ]]; then
  args+=(-G Ninja -DCMAKE_MAKE_PROGRAM="$ninja_bin")
fi

# PGSL_EXT_CUDA=0 forces CPU-only, as for setup.py; otherwise CMakeLists.txt decides afresh
# (-U drops what an earlier configure of this folder chose).
if [[ "${PGSL_EXT_CUDA:-}" == "0" ]]; then
  args+=(-DPGSL_WITH_CUDA=OFF)
else
  args+=(-UPGSL_WITH_CUDA)
fi

timed() {
  local start=$SECONDS
  "$@"
  echo "cmake_test: '$*' took $((SECONDS - start)) s"
}

timed cmake "${args[@]}" "$@"
timed cmake --build "$BUILD_DIR" --parallel "$JOBS"
# shellcheck disable=SC2086  # CTEST_ARGS is a list of words
timed ctest --test-dir "$BUILD_DIR" --output-on-failure ${CTEST_ARGS:-}
