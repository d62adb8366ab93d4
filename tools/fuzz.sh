#!/usr/bin/env bash
# Fuzzes the torch-free C++ of pycgn under AddressSanitizer + UndefinedBehaviorSanitizer, a
# fixed number of runs per target from a fixed seed (cpp/fuzz/CMakeLists.txt lists them):
# the compositing core against a scalar reference, cgn_generate's argument parsing and grid
# sizing, and the export sidecar parser. Any sanitizer report, harness check or uncaught
# exception fails the script; libFuzzer leaves the crashing input in the work folder it names.
#
# Uses clang++ with libFuzzer (Debian: clang and libclang-rt-N-dev); without them, g++ and a
# standalone driver (deterministic random and mutated inputs, no coverage feedback), and says so.
#
#   tools/fuzz.sh                               # build dir build/fuzz (kept)
#   PYCGN_FUZZ_SCALE=10 tools/fuzz.sh           # ten times the runs
#   PYCGN_FUZZ_ENGINE=standalone tools/fuzz.sh  # the fallback, on purpose
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${PYCGN_FUZZ_BUILD:-$root/build/fuzz}
scale=${PYCGN_FUZZ_SCALE:-1}
jobs=${PYCGN_CPP_JOBS:-2}
step() { printf '\n--- fuzz: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

work=$(mktemp -d /tmp/pycgn-fuzz.XXXXXX)
keep=0
trap '[ "$keep" = 1 ] || rm -rf "$work"' EXIT

engine=${PYCGN_FUZZ_ENGINE:-}
cxx=${PYCGN_FUZZ_CXX:-clang++}
if [ -z "$engine" ]; then
  engine=standalone
  if command -v "$cxx" >/dev/null; then
    printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
      >"$work/probe.cpp"
    if "$cxx" -fsanitize=fuzzer,address,undefined "$work/probe.cpp" -o "$work/probe" 2>/dev/null; then
      engine=libfuzzer
    fi
  fi
fi
if [ "$engine" = standalone ]; then
  [ "$cxx" = clang++ ] && ! "$cxx" --version >/dev/null 2>&1 && cxx=${CXX:-g++}
  echo "NOTE: no clang++ with libFuzzer here: fuzzing with the standalone driver ($cxx," \
       "deterministic random inputs, no coverage feedback)"
fi

step "configure ($build, $engine, $cxx)"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
# Only the fuzz targets: no libtorch pipeline, no CUDA, no ctest tests.
nice -n 10 cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPYCGN_FUZZ=ON -DPYCGN_FUZZ_ENGINE="$engine" -DPYCGN_BUILD_PIPELINE=OFF -DPYCGN_WITH_CUDA=OFF \
  -DBUILD_TESTING=OFF >/dev/null

step "build"
nice -n 10 cmake --build "$build" -j"$jobs" --target pycgn_fuzz_composite pycgn_fuzz_args pycgn_fuzz_sidecar

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# target[@variant]:runs -- each about half a minute on two busy cores (the core's inputs are the
# costliest). The core twice, once in each CPU variant (PYCGN_CPU_PREFETCH: csrc/cpu/composite_cpu.cpp).
for spec in composite@0:50000 composite@1:50000 args:200000 sidecar:120000; do
  target=${spec%%:*}
  name=${target%%@*}
  variant=${target#"$name"}
  runs=$(( ${spec##*:} * scale ))
  step "$target: $runs runs"
  exe="$build/cpp/fuzz/pycgn_fuzz_$name"
  seeds="$root/cpp/fuzz/corpus/$name"
  args=(-runs="$runs" -seed=1 -max_len=4096)
  [ -f "$root/cpp/fuzz/$name.dict" ] && [ "$engine" = libfuzzer ] && args+=(-dict="$root/cpp/fuzz/$name.dict")
  # libFuzzer adds what it finds to the first folder: a scratch one, not the committed seeds.
  mkdir -p "$work/$name"
  dirs=("$work/$name")
  [ -d "$seeds" ] && dirs+=("$seeds")
  vars=()
  [ -n "$variant" ] && vars=("PYCGN_CPU_PREFETCH=${variant#@}")
  if ! (cd "$work" && env "${vars[@]}" "$exe" "${args[@]}" "${dirs[@]}" >"$work/$target.log" 2>&1); then
    keep=1
    tail -40 "$work/$target.log"
    echo "FAIL: pycgn_fuzz_$name (log and crashing input in $work)"
    exit 1
  fi
  grep -E '^Done|standalone driver' "$work/$target.log" || true
done
step "ok ($engine)"
