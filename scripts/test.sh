#!/usr/bin/env bash
# Install pgsl_ext, then run every test: the CMake build with its C++ tests (ctest), and pytest.
# Exits non-zero if anything fails. CUDA kernels are compiled whenever a CUDA toolkit and a CUDA
# build of torch are present; their tests run where a GPU exists (PGSL_REQUIRE_CUDA=1 makes a
# missing GPU a failure instead of a skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/cmake_test.sh
python -m pytest tests
