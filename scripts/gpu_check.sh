#!/usr/bin/env bash
# The check to run on a machine with a GPU, in one command:
#   1. build pgsl_ext for the visible GPU's architecture against this machine's own torch
#      (in a venv over the system site-packages: nothing is downloaded, torch may be older
#      than CI's);
#   2. the CUDA tests of pytest with PGSL_REQUIRE_CUDA=1 (a skipped CUDA test is a failure);
#   3. the CMake build and its C++ tests (ops.cuda compares the CUDA kernels with the CPU ones),
#      PGSL_REQUIRE_CUDA=1;
#   4. the GPU benchmarks (bandwidth ops, svt/rpca, jsma: pgsl_ext against torch, whose
#      linalg on CUDA is cuSOLVER) into bench/RESULTS.md, CPU sections untouched; svt/rpca
#      once per small-matrix kernel design (PGSL_SMALL_MATRIX_KERNEL=group, then thread);
#   5. a "GPU check" section in bench/RESULTS.md: date, device, driver, torch, commit, and the
#      time and result of every step.
# Exits non-zero if there is no GPU (checking nothing), or if any step fails.
#
# Environment: PYTHON (the interpreter whose torch to use; default python, else python3),
# JOBS (parallel compile jobs; default all cores), VENV (default .venv-gpu-check).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JOBS="${JOBS:-$(nproc)}"
VENV="${VENV:-.venv-gpu-check}"
PYTHON="$(command -v "${PYTHON:-python}" || command -v python3)"
START=$SECONDS

# ---------------------------------------------------------------------------- is there a GPU?
gpu_name="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
arch="$("$PYTHON" -c 'import torch
assert torch.cuda.is_available()
major, minor = torch.cuda.get_device_capability(0)
print(f"{major}.{minor}")' 2>/dev/null)"
if [[ -z "$gpu_name" || -z "$arch" ]]; then
  echo "gpu_check: no GPU here (nvidia-smi: '${gpu_name:-no device}'; torch.cuda.is_available()" \
       "in $PYTHON: ${arch:+True}${arch:-False}); nothing was checked" >&2
  exit 1
fi
echo "gpu_check: $gpu_name, compute capability $arch; building for TORCH_CUDA_ARCH_LIST=$arch"

steps=()   # "name|seconds|status" per step
failed=0
step() {  # step NAME COMMAND...: run, time and record one step
  local name="$1"
  shift
  local start=$SECONDS
  echo
  echo "=== gpu_check: $name"
  "$@"
  local rc=$?
  local took=$((SECONDS - start))
  local status="passed"
  if [[ $rc -ne 0 ]]; then
    status="FAILED (exit $rc)"
    failed=1
  fi
  steps+=("$name|$took|$status")
  echo "=== gpu_check: $name: $status in ${took} s"
  return $rc
}

# ---------------------------------------------------------------------------- 1. build
make_venv() {
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv --system-site-packages "$VENV" || return 1
  TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="$JOBS" "$VENV/bin/python" -m pip install \
    --no-build-isolation --no-deps --no-index -e . || return 1
  "$VENV/bin/python" -c "import pgsl_ext, json; info = pgsl_ext.build_info(); print(json.dumps(info))
assert info['cuda'], 'pgsl_ext was built without CUDA kernels'"
}
if ! step "build (pip install -e ., arch $arch)" make_venv; then
  echo "gpu_check: the build failed; nothing else can run" >&2
  exit 1
fi
VPY="$ROOT/$VENV/bin/python"

# ---------------------------------------------------------------------------- 2. pytest
step "pytest -m cuda (PGSL_REQUIRE_CUDA=1)" \
  env PGSL_REQUIRE_CUDA=1 "$VPY" -m pytest tests -m cuda -q -p no:cacheprovider

# ---------------------------------------------------------------------------- 3. C++ tests
step "CMake build + ctest (PGSL_REQUIRE_CUDA=1)" \
  env PGSL_REQUIRE_CUDA=1 PYTHON="$VPY" JOBS="$JOBS" CUDA_ARCHS="${arch/./}" \
      BUILD_DIR=build/gpu-check CTEST_ARGS="--parallel $JOBS" bash scripts/cmake_test.sh

# ---------------------------------------------------------------------------- 4. benchmarks
bench_svt_cuda() {  # bench_svt_cuda DESIGN: one small-matrix kernel design (README, CUDA)
  PGSL_SMALL_MATRIX_KERNEL="$1" "$VPY" - "$1" <<'EOF'
import sys
from bench import results, svt_rpca
design = sys.argv[1]
json_path = svt_rpca.DEFAULT_JSON.with_name(f"svt-cuda-{design}.json")
svt_rpca.run(json_path, ["-m", "cuda"])
sections = {k: v for k, v in svt_rpca.sections(json_path, design).items() if "-cuda-" in k}
assert sections, "no CUDA svt/rpca benchmark ran"
results.update_results(results.DEFAULT_RESULTS, sections)
EOF
}
step "benchmarks: bandwidth ops (CUDA)" "$VPY" -m bench.table --suite bandwidth -- -m cuda
# Both small-matrix svt / rpca designs, side by side in bench/RESULTS.md.
step "benchmarks: svt / rpca (CUDA, group design)" bench_svt_cuda group
step "benchmarks: svt / rpca (CUDA, thread design)" bench_svt_cuda thread
step "benchmarks: jsma (CUDA)" env PYTHONPATH="$ROOT" "$VPY" bench/bench_jsma.py --cuda-only --write bench/RESULTS.md

# ---------------------------------------------------------------------------- 5. the record
total=$((SECONDS - START))
mkdir -p "$ROOT/build"
{
  echo "<!-- bench:gpu-check -->"
  echo "## GPU check (scripts/gpu_check.sh)"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- device: $gpu_name (name, driver), compute capability $arch"
  echo "- torch: $("$VPY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
  echo "- commit: \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- total: ${total} s"
  echo
  echo "| step | time | result |"
  echo "| --- | ---: | --- |"
  for s in "${steps[@]}"; do
    IFS='|' read -r name took status <<<"$s"
    echo "| $name | ${took} s | $status |"
  done
  echo
  echo "<!-- /bench:gpu-check -->"
} >"$ROOT/build/gpu_check_section.md"
"$VPY" - "$ROOT/build/gpu_check_section.md" <<'EOF'
import sys
from pathlib import Path
from bench import results
results.update_results(results.DEFAULT_RESULTS, {"gpu-check": Path(sys.argv[1]).read_text()})
EOF
cat "$ROOT/build/gpu_check_section.md"
echo "gpu_check: wrote bench/RESULTS.md; total ${total} s"
exit $failed
