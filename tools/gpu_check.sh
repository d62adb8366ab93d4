#!/usr/bin/env bash
# pycgn's checks for a machine with an NVIDIA GPU (a CUDA torch, nvcc, Python; no network).
# Writes $OUT/gpu_report.md (a markdown summary plus each section's tables) and
# $OUT/gpu_check.log (everything printed).
#
#   OUT=/tmp/out tools/gpu_check.sh                 # every section, in order
#   OUT=/tmp/out tools/gpu_check.sh build composite_tests   # chosen sections
#
# Sections are shell functions named section_<name>, listed in SECTIONS; to add one
# (generators, imagenet, ...), define section_<name> below and append <name> to SECTIONS.
# A section appends markdown to $REPORT and returns non-zero on failure; later sections
# still run. Exit status: 0 when every section passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT"
REPORT=$OUT/gpu_report.md
LOG=$OUT/gpu_check.log
PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONDONTWRITEBYTECODE=1
: >"$LOG"
: >"$REPORT"
exec > >(tee -a "$LOG") 2>&1

SECTIONS=(env build composite_tests composite_bench)

# The toolkit: CUDA_HOME, else /usr/local/cuda, else where nvcc resolves to (nvcc may be a
# wrapper script outside the toolkit, so prefer a directory that has include/cuda_runtime.h).
if [[ -z ${CUDA_HOME:-} ]]; then
  for d in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")"; do
    [[ -e $d/include/cuda_runtime.h ]] && { CUDA_HOME=$d; break; }
  done
fi
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=$CUDA_HOME/bin/nvcc
[[ -x $NVCC ]] || NVCC=$(command -v nvcc || echo nvcc)
SANITIZER=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
# compute capability of GPU 0, e.g. 9.0: compile for this card only (fast builds)
CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-${CC:-9.0}}
ARCH=${TORCH_CUDA_ARCH_LIST//./}

step() { printf '\n=== gpu_check: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
md() { printf '%s\n' "$@" >>"$REPORT"; }

section_env() {
  md "## Environment" "" '```'
  { nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
    "$NVCC" --version 2>&1 | tail -1
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  } | tee -a "$REPORT"
  md '```' ""
  "$PY" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"'
}

section_build() {
  # No network: build against the installed torch, never resolve dependencies.
  local t0=$SECONDS
  FORCE_CUDA=1 PYCGN_STRICT_BUILD=1 MAX_JOBS=${MAX_JOBS:-16} \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . -q ||
    FORCE_CUDA=1 PYCGN_STRICT_BUILD=1 MAX_JOBS=${MAX_JOBS:-16} "$PY" setup.py -q build_ext --inplace || return 1
  "$PY" -c 'import pycgn; assert pycgn._ext.has_cuda_kernels(), "pycgn._C has no CUDA kernels"' || return 1
  md "Extension built with FORCE_CUDA=1 for sm_$ARCH in $((SECONDS - t0)) s." ""
}

section_composite_tests() {
  local rc=0 bin=$OUT/composite_cuda_test
  step "pytest tests/test_composite.py (CUDA cases included)"
  if "$PY" -c 'import pytest' 2>/dev/null; then
    "$PY" -m pytest -q -p no:cacheprovider tests/test_composite.py tests/test_composite_props.py || rc=1
  else
    md "pytest is not installed: the Python CUDA tests were not run." ""
  fi
  step "core ctest program (CUDA core vs the scalar loop)"
  "$NVCC" -std=c++17 -O2 -lineinfo -Iinclude -Icsrc/tests -Xcompiler=-fopenmp,-ffp-contract=off \
    -gencode "arch=compute_$ARCH,code=sm_$ARCH" \
    csrc/tests/composite_cuda_test.cu csrc/cuda/composite_cuda.cu csrc/cpu/composite_cpu.cpp -o "$bin" -lgomp || return 1
  "$bin" || rc=1
  if [[ -x $SANITIZER ]]; then
    step "compute-sanitizer memcheck (small cases)"
    local san=clean
    "$SANITIZER" --tool memcheck --leak-check full --error-exitcode 3 "$bin" small || { san=FAILED; rc=1; }
    md "compute-sanitizer memcheck of the CUDA core (small cases): $san." ""
  else
    md "compute-sanitizer not found: memcheck skipped." ""
  fi
  md "Composite tests (pytest + core vs scalar loop): $([[ $rc == 0 ]] && echo passed || echo FAILED)." ""
  return $rc
}

section_composite_bench() {
  local md_out=$OUT/composite_cuda.md
  "$PY" benchmarks/composite.py --device cuda --out "$md_out" ${PYCGN_BENCH_COMPILE:+--cuda-compile} || return 1
  cat "$md_out" >>"$REPORT"
  grep -q 'PASS' "$md_out"
}

section_imagenet_bench() {
  # the full-size ImageNet CGN (random weights), eager on the GPU, batch 1-8
  local md_out=$OUT/imagenet_cuda.md
  "$PY" benchmarks/imagenet.py --device cuda --backends eager --batches 1,2,4,8 --rounds 3 --out "$md_out" || return 1
  cat "$md_out" >>"$REPORT"
}
SECTIONS+=(imagenet_bench)

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${SECTIONS[@]}")
md "# pycgn GPU check ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))" ""
summary=()
status=0
for s in "${wanted[@]}"; do
  if ! declare -F "section_$s" >/dev/null; then
    echo "gpu_check: unknown section '$s' (known: ${SECTIONS[*]})"; status=2; continue
  fi
  step "$s"
  t0=$SECONDS
  if "section_$s"; then r=pass; else r=FAIL; status=1; fi
  summary+=("| $s | $r | $((SECONDS - t0)) s |")
  echo "--- $s: $r"
done
md "## Summary" "" "| section | result | time |" "|---|---|---:|" "${summary[@]}" ""
step "done: $REPORT"
exit $status
