#!/usr/bin/env bash
# Compiles every CUDA source of pycgn (csrc/**/*.cu, cpp/**/*.cu) with nvcc for sm_80 and
# sm_90: catches CUDA compile errors on machines without a GPU. Torch-free sources only need
# include/; the rest also get torch's include directories.
#   tools/check_cuda.sh                 # nvcc from CUDA_HOME, PATH or /usr/local/cuda
#   NVCC=/path/to/nvcc tools/check_cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc=${NVCC:-}
if [[ -z $nvcc ]]; then
  for c in "${CUDA_HOME:-}/bin/nvcc" "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc; do
    [[ -n $c && -x $c ]] && { nvcc=$c; break; }
  done
fi
[[ -n $nvcc ]] || { echo "check_cuda: nvcc not found (set NVCC or CUDA_HOME)"; exit 1; }
mapfile -t sources < <(find csrc cpp -name '*.cu' 2>/dev/null | sort)
[[ ${#sources[@]} -gt 0 ]] || { echo "check_cuda: no .cu files"; exit 1; }
py=${PYTHON:-$(command -v python || command -v python3 || true)}
torch_inc=()
if [[ -n $py ]]; then
  while read -r d; do torch_inc+=(-I"$d"); done < <("$py" -c \
    'from torch.utils.cpp_extension import include_paths; print("\n".join(include_paths()))' 2>/dev/null || true)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "check_cuda: $("$nvcc" --version | tail -1)"
fail=0
for src in "${sources[@]}"; do
  for arch in 80 90; do
    if nice -n 10 "$nvcc" -std=c++17 -O3 -Iinclude -Icsrc/tests "${torch_inc[@]}" -Xcompiler=-ffp-contract=off \
        -gencode "arch=compute_$arch,code=sm_$arch" -c "$src" -o "$out/obj.o" 2>"$out/log"; then
      echo "  ok    sm_$arch  $src"
    else
      echo "  FAIL  sm_$arch  $src"; sed 's/^/        /' "$out/log"; fail=1
    fi
  done
done

# The torch glue's CUDA half (csrc/composite.cpp with PYCGN_WITH_CUDA) is host C++: check it
# parses against torch's headers. A CPU-only torch lacks one generated CUDA header: stub it.
if [[ ${#torch_inc[@]} -gt 0 ]]; then
  mkdir -p "$out/stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$out/stub/c10/cuda/impl/cuda_cmake_macros.h"
  cuda_inc=$(dirname "$(dirname "$(readlink -f "$nvcc")")")/include
  [[ -e $cuda_inc/cuda_runtime.h ]] || cuda_inc=${CUDA_HOME:-/usr/local/cuda}/include
  if nice -n 10 "${CXX:-g++}" -std=c++17 -fsyntax-only -w -DPYCGN_WITH_CUDA=1 -Iinclude "${torch_inc[@]}" \
      -idirafter "$out/stub" -I"$cuda_inc" csrc/composite.cpp 2>"$out/log"; then
    echo "  ok    host   csrc/composite.cpp (PYCGN_WITH_CUDA)"
  else
    echo "  FAIL  host   csrc/composite.cpp (PYCGN_WITH_CUDA)"; sed 's/^/        /' "$out/log"; fail=1
  fi
fi
exit $fail
