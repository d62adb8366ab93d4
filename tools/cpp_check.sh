#!/usr/bin/env bash
# The C++ side of pycgn, end to end: configure and build the CMake project (pycgn::core,
# pycgn::pipeline, cgn_generate, tests), run ctest, install to a temporary prefix, then build
# examples/cpp_consumer against that install alone (no libtorch on its search path) and run it,
# plus the installed cgn_generate, on a freshly exported random-weight model.
#
#   tools/cpp_check.sh            # build dir: build/cmake (kept: libtorch code compiles slowly)
#   PYCGN_CPP_BUILD=/tmp/b PYTHON=python3 tools/cpp_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-$(command -v python || command -v python3)}
build=${PYCGN_CPP_BUILD:-$root/build/cmake}
jobs=${PYCGN_CPP_JOBS:-2}
step() { printf '\n--- cpp_check: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

torch_prefix=$("$py" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
work=$(mktemp -d /tmp/pycgn-cpp-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

step "configure ($build)"
nice -n 10 cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DPython3_EXECUTABLE="$py"
grep -q '^Torch_DIR:PATH=.*-NOTFOUND' "$build/CMakeCache.txt" && { echo "libtorch not found: no pipeline"; exit 1; }

step "build"
nice -n 10 cmake --build "$build" -j"$jobs"

step "ctest"
(cd "$build" && nice -n 10 ctest --output-on-failure)

step "install to a temporary prefix"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/pycgn/composite.h include/pycgn/pipeline.h include/pycgn/sampler.h include/pycgn/export.h bin/cgn_generate; do
  test -e "$prefix/$f" || { echo "not installed: $f"; exit 1; }
done
find "$prefix" -name 'pycgnConfig.cmake' | grep -q . || { echo "not installed: pycgnConfig.cmake"; exit 1; }

step "examples/cpp_consumer against the install"
# Only the install prefix is searched: the package must bring everything it needs.
nice -n 10 cmake -S "$root/examples/cpp_consumer" -B "$work/consumer" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix"
nice -n 10 cmake --build "$work/consumer" -j"$jobs"
"$py" - "$work/export" <<'PY'
import sys, torch, pycgn, pycgn.export
torch.manual_seed(0)
m = pycgn.MnistCGN()
with torch.no_grad():
    for k, t in m.state_dict().items():
        if t.is_floating_point():
            t.copy_(torch.rand_like(t) + 0.5 if k.endswith("running_var") else torch.randn_like(t) * 0.2)
pycgn.export.export(m.eval(), sys.argv[1], format="torchscript")
PY
"$work/consumer/pycgn_core_consumer"
# The torch-free core must stay torch-free: nothing of libtorch may be loaded with it.
if ldd "$work/consumer/pycgn_core_consumer" | grep -E 'lib(torch|c10)'; then
  echo "pycgn_core_consumer (pycgn::core alone) pulls in libtorch"; exit 1
fi
ldd "$work/consumer/pycgn_core_consumer" | grep -q libpycgn_core || { echo "pycgn_core_consumer: no libpycgn_core"; exit 1; }
"$work/consumer/pycgn_consumer" "$work/export"
# The AOTInductor and tiny ImageNet exports ctest's pycgn.pipeline.formats made (and compared
# bit for bit with Python): the installed package runs them too, without compiling them again.
for d in "$build/cpp/formats_check/export_aoti" "$build/cpp/formats_check/export_imagenet"; do
  if [ -f "$d/pycgn_export.json" ]; then
    "$work/consumer/pycgn_consumer" "$d"
  else
    echo "note: $d not made by ctest (no aoti format in this pycgn?)"
  fi
done

step "installed cgn_generate"
"$prefix/bin/cgn_generate" --model-dir "$work/export" --shape 3 --texture 7 --bg 1 -n 8 --seed 1 -o "$work/grid.png"
test -s "$work/grid.png"

step "the shared C++ runtime, also under a compiler that links libstdc++ statically"
# The lent H200's g++ does so by default (see CMakeLists.txt): the libraries must load
# libstdc++.so.6, not carry a copy of their own beside libtorch's. The core, rebuilt with that
# default forced, and the libraries built above:
nice -n 10 cmake -S "$root" -B "$work/static" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DPYCGN_BUILD_PIPELINE=OFF -DPYCGN_WITH_CUDA=OFF -DCMAKE_SHARED_LINKER_FLAGS=-static-libstdc++ >/dev/null
nice -n 10 cmake --build "$work/static" -j"$jobs" >/dev/null
libs=("$work/static/libpycgn_core.so" "$build/libpycgn_core.so")
[ -e "$build/cpp/libpycgn_pipeline.so" ] && libs+=("$build/cpp/libpycgn_pipeline.so")
"$root/tools/shared_cxx_runtime.sh" "${libs[@]}"
step "ok"
