#!/usr/bin/env bash
# pycgn's checks for a machine with an NVIDIA GPU: a CUDA build of torch (any version: the
# extension is built against the installed one, never resolving dependencies), nvcc, Python;
# no network. Runs only what needs the GPU, in about 6 minutes on an H100/H200.
#
#   OUT=/tmp/out tools/gpu_check.sh                       # every section, in order
#   OUT=/tmp/out tools/gpu_check.sh build op_tests        # chosen sections
#   tools/gpu_check.sh --dry-run                          # no GPU needed: each section's setup
#       and arguments (files, commands and flags it will use) up to the first thing that needs
#       CUDA; CI runs it so the script cannot rot unseen.
#
# Written as it goes, so a run cut short still returns what it got: $OUT/report.md (one table
# row per finished section, then each section's details; rewritten atomically after each),
# $OUT/gpu_check.log (all output), $OUT/<section>.log, and all of them in $OUT/gpu_check.tgz.
# Each section runs in its own process under `timeout` (limits below, in seconds;
# PYCGN_GPU_LIMIT_<section>=N overrides), within a total of PYCGN_GPU_BUDGET seconds (360):
# sections left when it is spent are reported as not run. The CMake build of the pipeline
# section starts in the background at the beginning, so it overlaps the extension's. Exit
# status: 0 when every section wanted passed.
# Without a GPU, a CUDA build of torch (PyPI's torch 2.11.0 is the lent H200's 2.11.0+cu130) still
# runs `build` and `pipeline` for real (ctest then skips the CUDA test): a pre-flight of the builds.
# Environment: PYTHON, CUDA_HOME, TORCH_CUDA_ARCH_LIST ("8.0;9.0", "9.0+PTX"; default: GPU 0's
# compute capability), MAX_JOBS, PYCGN_PYDEPS (a folder of extra pure-Python packages, e.g.
# pytest and hypothesis, put on PYTHONPATH when the machine lacks them).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SELF=$ROOT/tools/gpu_check.sh
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The extension is built in place (no pip, no dependency resolution: the torch pin of
# pyproject.toml is for users' installs); this checkout is what Python imports.
export PYTHONPATH=$ROOT${PYCGN_PYDEPS:+:$PYCGN_PYDEPS}${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-$(command -v python3 || command -v python)}

# In order of importance: a run short of time loses the last ones.
SECTIONS=(env build op_tests sanitizer composite_bench synth imagenet_dtypes pipeline aoti imagenet_bench)
declare -A LIMIT=([env]=30 [build]=150 [op_tests]=100 [sanitizer]=60 [composite_bench]=60 [synth]=90
                  [imagenet_dtypes]=60 [pipeline]=120 [aoti]=150 [imagenet_bench]=90)
BUDGET=${PYCGN_GPU_BUDGET:-360}

# ---- tools ------------------------------------------------------------------------------------
# The toolkit: CUDA_HOME, else /usr/local/cuda, else where nvcc resolves to (nvcc may be a
# wrapper outside the toolkit, so prefer a directory that has include/cuda_runtime.h).
if [[ -z ${CUDA_HOME:-} ]]; then
  for d in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")"; do
    [[ -e $d/include/cuda_runtime.h ]] && { CUDA_HOME=$d; break; }
  done
fi
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=$CUDA_HOME/bin/nvcc
[[ -x $NVCC ]] || NVCC=$(command -v nvcc || echo "$CUDA_HOME/bin/nvcc")
tool() { command -v "$1" 2>/dev/null || { [[ -x $CUDA_HOME/bin/$1 ]] && echo "$CUDA_HOME/bin/$1"; } || echo ""; }
SANITIZER=$(tool compute-sanitizer)
NCU=$(tool ncu)

# ---- architectures: TORCH_CUDA_ARCH_LIST as torch spells it, else GPU 0's --------------------
# (not CC: images export CC as the C compiler, and torch passes $CC to nvcc as -ccbin)
GPU_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-${GPU_CAP:-8.0;9.0}}
GENCODE=()    # nvcc flags
CMAKE_ARCHS=  # CMAKE_CUDA_ARCHITECTURES
for a in ${TORCH_CUDA_ARCH_LIST//;/ }; do
  ptx=0
  [[ $a == *+PTX ]] && { ptx=1; a=${a%+PTX}; }
  [[ $a =~ ^[0-9]+\.[0-9]+[af]?$ ]] || { echo "gpu_check: bad TORCH_CUDA_ARCH_LIST entry '$a' (expected e.g. 9.0, 9.0a, 9.0+PTX)"; exit 2; }
  n=${a//./}
  GENCODE+=(-gencode "arch=compute_$n,code=sm_$n")
  ((ptx)) && GENCODE+=(-gencode "arch=compute_$n,code=compute_$n")
  CMAKE_ARCHS+=${CMAKE_ARCHS:+;}$n
done

DRY=${DRY:-0}
step() { printf '\n=== gpu_check: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
need() {  # need FILE-or-COMMAND...: each must exist (checked in dry runs too)
  local x ok=0
  for x in "$@"; do
    [[ -e $x ]] || command -v "$x" >/dev/null 2>&1 || { echo "gpu_check: missing $x"; ok=1; }
  done
  return $ok
}
dry_stop() { ((DRY)) && { echo "dry run: $CURRENT ready (stopped before CUDA)"; exit 0; }; return 0; }
have_kernels() {  # the in-place extension has CUDA kernels (else the CUDA tests would only skip)
  "$PY" -c 'import pycgn; assert pycgn._ext.has_cuda_kernels(), "pycgn._C is not built with CUDA kernels (see build)"'
}
detail() { printf '%s\n' "$@" >>"$OUT/$CURRENT.md"; }  # markdown for the report's details

# ---- sections: each runs as `gpu_check.sh --section NAME` in its own process ------------------
section_env() {
  need "$PY" "$NVCC" || return 1
  detail "### Environment" "" '```'
  { nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$NVCC" --version 2>&1 | tail -1
    echo "compute-sanitizer: ${SANITIZER:-not found}; ncu: ${NCU:-not found}; arch: $TORCH_CUDA_ARCH_LIST"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    "$PY" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())' 2>&1 | tail -1
    "$PY" -c 'import pytest, hypothesis; print("pytest", pytest.__version__, "hypothesis", hypothesis.__version__)' 2>&1 | tail -1
  } | tee -a "$OUT/$CURRENT.md"
  detail '```' ""
  dry_stop
  "$PY" -c 'import torch; assert torch.version.cuda and torch.cuda.is_available(), "torch sees no CUDA device"'
}

section_build() {
  need setup.py csrc/composite.cpp csrc/cuda/composite_cuda.cu || return 1
  "$PY" -c 'import torch.utils.cpp_extension, setuptools' || return 1
  echo "build: FORCE_CUDA=1 PYCGN_BUILD_PIPELINE=0 python setup.py build_ext --inplace, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  dry_stop
  local t0=$SECONDS
  # pycgn._C only: pycgn._pipeline (the C++ pipeline's Python bindings) is CPU code, CI's, and its
  # longest file alone compiles in ~35 s after _C's on a 2-core EPYC (run 2 built both in 63 s). Its CUDA
  # path is the CMake build's (section pipeline).
  FORCE_CUDA=1 PYCGN_BUILD_PIPELINE=0 PYCGN_STRICT_BUILD=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py -q build_ext --inplace || return 1
  "$PY" -c 'import pycgn; assert pycgn._ext.has_cuda_kernels(), "pycgn._C has no CUDA kernels"' || return 1
  detail "pycgn._C built in place with FORCE_CUDA=1 for $TORCH_CUDA_ARCH_LIST in $((SECONDS - t0)) s (pycgn._pipeline, CPU code, not built)."
}

# CPU vs CUDA bit for bit, the caller's stream, CUDA graphs (tests/test_cuda.py), and every
# compositing test on the CUDA device (the `device` fixture); the CPU cases are CI's.
section_op_tests() {
  local tests=(tests/test_cuda.py tests/test_composite.py tests/test_composite_props.py tests/test_composite_hostile.py
               tests/test_ext_runtime.py)
  need "${tests[@]}" || return 1
  "$PY" -c 'import pytest' || { detail "pytest is not installed (set PYCGN_PYDEPS): not run."; return 1; }
  if ((DRY)); then
    "$PY" -m pytest -q -p no:cacheprovider --collect-only "${tests[@]}" >/dev/null || return 1
  fi
  dry_stop
  have_kernels || return 1
  detail "### Operator tests on CUDA" ""
  # pytest-xdist, where installed, turns a crash into one failed test and runs the rest.
  local xd=()
  "$PY" -c 'import xdist' 2>/dev/null && xd=(-n 2)
  # (and the modules' link to the shared C++ runtime, with the CPU error test: the machine's g++
  # links a static one by default, and pycgn's errors crashed on both devices with it)
  "$PY" -m pytest -q -p no:cacheprovider -rs "${xd[@]}" -k "cuda or test_cuda or shared_cxx_runtime or raised_whole" --junitxml "$OUT/op_tests.xml" "${tests[@]}" \
    2>&1 | tee "$OUT/op_tests.txt"
  local rc=${PIPESTATUS[0]}
  detail "" '```' "$(grep -E 'crashed|FAILED|passed|failed' "$OUT/op_tests.txt" | tail -n 25)" '```' ""
  # Runs 2 and 3 on the H200 (2026-11-30) crashed at the first argument error pycgn's operator
  # raised, on CPU and CUDA: the machine's g++ linked a private libstdc++ into the module (fixed,
  # tests/test_ext_runtime.py). Kept as a guard, after the tests so a diagnosis cannot eat their
  # time: does raising crash the process, on each device, from pycgn's operator and from torch's
  # own (the four side by side)? cuda-gdb's backtrace of the first crash if so.
  local dev who r prc probe='import sys, torch, pycgn
dev, who = sys.argv[1], sys.argv[2]
m = torch.rand(1, 1, 4, 4, device=dev); f = torch.rand(1, 3, 4, 4, device=dev)
try:
    if who == "torch":
        torch.empty(2, device=dev).view(3)
    else:
        pycgn.composite(m, f, f, out_dtype="uint8", layout="NHWC", out=torch.empty(1, dtype=torch.uint8, device=dev))
except (ValueError, RuntimeError) as e:
    print("raised", type(e).__name__ + ":", str(e).splitlines()[0])'
  local k probes=(cpu_torch cpu_pycgn cuda_torch cuda_pycgn) gdb_done=0
  local -A pid=()
  for k in "${probes[@]}"; do
    "$PY" -c "$probe" "${k%_*}" "${k#*_}" >"$OUT/op_probe_$k.txt" 2>&1 &
    pid[$k]=$!
  done
  for k in "${probes[@]}"; do
    dev=${k%_*} who=${k#*_}
    wait "${pid[$k]}"
    prc=$?
    r=$(tail -n 1 "$OUT/op_probe_$k.txt")
    detail "- an argument error from $who's $dev operator: exit $prc, $r"
    if ((prc >= 128 && !gdb_done)) && [[ -n $(tool cuda-gdb) ]]; then  # killed by a signal
      gdb_done=1
      timeout 30 "$(tool cuda-gdb)" -q -batch -ex run -ex bt --args "$PY" -c "$probe" "$dev" "$who" \
        >"$OUT/op_crash_$k.txt" 2>&1
      detail '```' "$(grep -E '^#[0-9]+ ' "$OUT/op_crash_$k.txt" | head -n 30)" '```'
    fi
  done
  detail ""
  return "$rc"
}

# The core's own test program (CUDA vs a scalar loop; `bench` mode too), built into $OUT once
# by whichever section needs it first: $OUT/composite_cuda_test, $OUT/composite_cuda_test_wide
# with the kernel's int64 indexing forced (the path of calls with 2^31 or more elements) and
# $OUT/composite_cuda_test_scalar with 4-byte texture loads forced (no float4 columns, vec4.h),
# so every variant is checked on every case and timed side by side. `core_test --dryrun` (dry
# runs) only asks nvcc whether it takes the commands.
declare -A CORE_FLAG=([_wide]=-DPYCGN_CUDA_WIDE_INDEX [_scalar]=-DPYCGN_CUDA_SCALAR_TEXTURE)
core_test() {
  local bin=$OUT/composite_cuda_test variant
  local src=(csrc/tests/composite_cuda_test.cu csrc/cuda/composite_cuda.cu csrc/cpu/composite_cpu.cpp)
  need "${src[@]}" || return 1
  [[ $# -eq 0 && -x $bin && -x ${bin}_wide && -x ${bin}_scalar ]] && return 0
  local pids=() pid rc=0
  for variant in "" _wide _scalar; do  # independent builds: side by side on the GPU host's cores
    local cmd=("$NVCC" -std=c++17 -O2 -lineinfo -Iinclude -Icsrc/tests -Xcompiler=-fopenmp,-ffp-contract=off
               "${GENCODE[@]}" "${src[@]}" -o "$bin$variant" -lgomp "$@")
    [[ -n $variant ]] && cmd+=("${CORE_FLAG[$variant]}")
    if (($#)); then
      "${cmd[@]}" >/dev/null 2>&1 || { echo "nvcc rejects: ${cmd[*]}"; return 1; }
    else
      "${cmd[@]}" &
      pids+=($!)
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  return $rc
}

# The core's own test program under compute-sanitizer.
section_sanitizer() {
  local bin=$OUT/composite_cuda_test
  if ((DRY)); then core_test --dryrun || return 1; fi
  [[ -n $SANITIZER ]] || echo "compute-sanitizer not found: the section will only run the test program"
  dry_stop
  core_test || return 1
  local rc=0 tool r variant line
  detail "### The core's test program (CUDA vs the scalar loop, bit for bit), then compute-sanitizer" ""
  for variant in "" _wide _scalar; do  # to a file as it runs: a timeout must not lose the output
    "$bin$variant" 2>&1 | tee "$OUT/core_test$variant.txt"
    ((PIPESTATUS[0] == 0)) || rc=1
    detail "- composite_cuda_test$variant: $(tail -n 1 "$OUT/core_test$variant.txt")"
  done
  detail "" "compute-sanitizer (small cases):" ""
  if [[ -z $SANITIZER ]]; then
    detail "compute-sanitizer not found: not run." ""
    return $rc
  fi
  for tool in memcheck racecheck memcheck_wide; do  # the int64 kernel under memcheck too
    r=clean variant=""
    [[ $tool == *_wide ]] && variant=_wide
    "$SANITIZER" --tool "${tool%_wide}" --error-exitcode 3 "$bin$variant" small >"$OUT/sanitizer_$tool.txt" 2>&1 || { r=FAILED; rc=1; }
    tail -n 3 "$OUT/sanitizer_$tool.txt"
    detail "- $tool: $r ($(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.txt" || echo 'no summary'))"
  done
  detail ""
  return $rc
}

# Bandwidth at 64x3x256x256 uint8 NHWC against a same-bytes device copy: the core program's
# bench mode (and ncu's metrics of the kernel), then benchmarks/composite.py's CUDA mode.
section_composite_bench() {
  need benchmarks/composite.py || return 1
  "$PY" benchmarks/composite.py --help | grep -q -- '--cuda-reps' || { echo "benchmarks/composite.py has no --cuda-reps"; return 1; }
  dry_stop
  have_kernels || return 1
  local bin=$OUT/composite_cuda_test rc=0
  core_test || return 1
  detail "### Compositing bandwidth (64x3x256x256 float32 -> uint8 NHWC)" ""
  local line
  line=$("$bin" bench) || rc=1
  echo "$line"
  detail "- core program (int32 indices, the default): $line"
  line=$("${bin}_wide" bench) || rc=1
  echo "$line"
  detail "- core program, int64 indices forced (the first H200 run's kernel had only these): $line"
  line=$("${bin}_scalar" bench) || rc=1
  echo "$line"
  detail "- core program, 4-byte texture loads forced (no float4 columns): $line"
  if [[ -n $NCU ]]; then
    timeout 40 "$NCU" --kernel-name regex:composite_kernel --launch-skip 3 --launch-count 1 \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,launch__occupancy_limit_registers,sm__warps_active.avg.pct_of_peak_sustained_active,lts__t_bytes.sum,l1tex__t_bytes.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum \
      "$bin" bench >"$OUT/ncu.txt" 2>&1 && detail "- ncu:" '```' "$(grep -E '^\s+(gpu__|dram__|sm__|launch__|lts__|l1tex__|smsp__)' "$OUT/ncu.txt")" '```' \
      || detail "- ncu failed or timed out (see ncu.txt)"
  fi
  "$PY" benchmarks/composite.py --device cuda --cuda-reps 50 --out "$OUT/composite_cuda.md" || rc=1
  [[ -s $OUT/composite_cuda.md ]] && cat "$OUT/composite_cuda.md" >>"$OUT/$CURRENT.md"
  detail ""
  return $rc
}

# `pycgn synth` on the GPU, the users' main job (the default device wherever torch sees one), never
# run on one before: float32 and float16 datasets of the shipped colored_mnist with the default
# backend (auto) against a CPU one of the same seed (backend torch). Sample i depends only on
# (seed, i), so labels, latents and offsets must be identical and the images close (backends differ
# in the last bits, and cuDNN may compute float32 convolutions in TF32); img/s of each whole call.
# A dry run makes tiny CPU datasets in place of the CUDA ones: the same checks run.
section_synth() {
  DRY=$DRY "$PY" - "$OUT/$CURRENT.md" "$OUT/synth" <<'PYEOF'
import os, shutil, sys, time
import numpy as np
from pycgn.data import SynthDataset
from pycgn.synth import synth

report, root = sys.argv[1], sys.argv[2]
dry = os.environ.get("DRY") == "1"
dev = "cpu" if dry else "cuda"
n_dev, n_cpu, shard = (600, 300, 200) if dry else (50_000, 10_000, 10_000)
shutil.rmtree(root, ignore_errors=True)
KEYS = ("shape", "texture", "bg", "u_shape", "u_texture", "u_bg", "fg_offset", "bg_offset")


def run(name, device, n, precision="float32", backend="auto"):
    out = os.path.join(root, name)
    t = time.perf_counter()
    manifest = synth("colored_mnist", n=n, out=out, shard_size=shard, seed=0, backend=backend, device=device,
                     precision=precision, quiet=True)
    s = time.perf_counter() - t
    ds = SynthDataset(out)  # the manifest and every shard's sha256 verified
    assert len(ds) == n
    parts = [np.load(os.path.join(out, sh["name"])) for sh in ds.shards]  # in sample order
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in ("images",) + KEYS}
    return device, manifest["backend"], precision, n, s, arrays


runs = [run("cpu", "cpu", n_cpu, backend="torch"), run("dev32", dev, n_dev)]
if not dry:
    runs.append(run("dev16", dev, n_dev, "float16"))
base = runs[0][-1]
lines = ["### pycgn synth on the GPU (colored_mnist, seed 0, npz)", "",
         "| device | backend | precision | images | s (whole call) | img/s | labels and inputs as on the CPU "
         "| uint8 levels from the CPU (max / mean) |", "|---|---|---|---:|---:|---:|---|---:|"]
ok = True
for device, backend, precision, n, s, d in runs:
    same = all(np.array_equal(d[k][:n_cpu], base[k]) for k in KEYS)
    diff = np.abs(d["images"][:n_cpu].astype(np.int16) - base["images"].astype(np.int16))
    ok &= same and diff.mean() <= 1.0
    lines.append(f"| {device} | {backend} | {precision} | {n:,} | {s:.1f} | {n / s:,.0f} | {'yes' if same else 'NO'} "
                 f"| {int(diff.max())} / {diff.mean():.3f} |")
    print(lines[-1], flush=True)
with open(report, "a") as f:
    f.write("\n".join(lines) + "\n\n")
shutil.rmtree(root, ignore_errors=True)
sys.exit(0 if ok else 1)
PYEOF
}

# The CMake project against this torch's libtorch: the core, its CUDA test, the pipeline's
# CUDA path (pipeline_test runs it when libtorch sees a GPU) and their ctest tests.
PIPELINE_BUILD=$ROOT/build/gpu-check-cmake
pipeline_configure_and_build() {  # in the background from the start; leaves $OUT/pipeline_build.rc
  local prefix gen=() nvrtc=() lib rc=0
  command -v ninja >/dev/null && gen=(-G Ninja)
  # libtorch links NVRTC; a toolkit without it (nvcc only) can use the copy pip installed beside torch
  if ! compgen -G "$CUDA_HOME/lib*/libnvrtc.so*" >/dev/null; then
    lib=$("$PY" -c 'import glob, os, torch; d = os.path.dirname(os.path.dirname(torch.__file__))
print(next(iter(sorted(glob.glob(os.path.join(d, "nvidia", "*", "lib", "libnvrtc.so.*")))), ""))' 2>/dev/null)
    [[ -n $lib ]] && nvrtc=(-DCUDA_nvrtc_LIBRARY="$lib")
  fi
  prefix=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)') &&
    cmake -S . -B "$PIPELINE_BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON -DPYCGN_WITH_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$CMAKE_ARCHS" -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_PREFIX_PATH="$prefix" \
      -DPython3_EXECUTABLE="$PY" "${nvrtc[@]}" && cmake --build "$PIPELINE_BUILD" -j"${MAX_JOBS:-$(nproc)}" || rc=$?
  echo "$rc" >"$OUT/pipeline_build.rc.tmp" && mv "$OUT/pipeline_build.rc.tmp" "$OUT/pipeline_build.rc"
}

section_pipeline() {
  need cmake CMakeLists.txt cpp/CMakeLists.txt tools/shared_cxx_runtime.sh readelf nm || return 1
  "$PY" -c 'import torch.utils; print("libtorch at", torch.utils.cmake_prefix_path)' || return 1
  echo "pipeline: cmake in $PIPELINE_BUILD, CMAKE_CUDA_ARCHITECTURES=$CMAKE_ARCHS"
  dry_stop
  local bg
  bg=$(cat "$OUT/pipeline_build.pid" 2>/dev/null)
  if [[ -z $bg ]]; then  # not started in the background (gpu_check.sh run as one child)
    pipeline_configure_and_build >"$OUT/pipeline_build.txt" 2>&1
  fi
  while [[ ! -e $OUT/pipeline_build.rc ]] && kill -0 "$bg" 2>/dev/null; do sleep 2; done
  [[ -e $OUT/pipeline_build.rc ]] || { echo "the background CMake build ended without a result"; tail -n 40 "$OUT/pipeline_build.txt"; return 1; }
  [[ $(cat "$OUT/pipeline_build.rc") == 0 ]] || { tail -n 40 "$OUT/pipeline_build.txt"; return 1; }
  # pycgn.pipeline.formats is CPU-only (cgn_generate --device cpu, AOTInductor compiles): CI's
  (cd "$PIPELINE_BUILD" && ctest -V --output-on-failure --timeout 100 -E 'pycgn\.pipeline\.formats') 2>&1 | tee "$OUT/ctest.txt"
  local rc=${PIPESTATUS[0]} bad
  # The libraries load the shared libstdc++ (CMakeLists.txt names it: this machine's g++ links a
  # static copy by default, and pycgn._C crashed at its first error message with one).
  bad=$(tools/shared_cxx_runtime.sh $(find "$PIPELINE_BUILD" -maxdepth 2 -name 'libpycgn_*.so')) || { detail "- $bad"; rc=1; }
  detail "### CMake build and ctest (CUDA on, libtorch of torch $("$PY" -c 'import torch; print(torch.__version__)'))" "" \
    '```' "$(grep -E 'Test +#|tests passed|cuda:' "$OUT/ctest.txt")" '```' ""
  return "$rc"
}

# The aoti backend on CUDA: an MNIST CGN's packages compiled for this GPU in float32 and float16,
# each mechanism against eager float32 at batch 1, 7 and 256 (TF32 off on both sides), the load time
# of a runner from the cache, and img/s of aoti vs eager at batch 256. The two precisions compile
# side by side, each in its own process (run 3 on the H200: 81 s for float32 alone, and the float16
# compile then ran past the section's limit); the measuring process finds both in the cache.
section_aoti() {
  local p rc=0 pkg bad compiled=()
  local -A pid=()
  rm -rf "$OUT/aoti_cache"
  for p in float32 float16; do
    DRY=$DRY "$PY" -c "$AOTI_PY" compile "$p" "$OUT/aoti_cache" >"$OUT/aoti_compile_$p.txt" 2>&1 &
    pid[$p]=$!
  done
  for p in float32 float16; do  # these two only (not the section's other jobs)
    if wait "${pid[$p]}"; then
      compiled+=("$p")
    else
      rc=1
      detail "- the aoti $p compile failed: $(tail -n 1 "$OUT/aoti_compile_$p.txt")" ""
    fi
    cat "$OUT/aoti_compile_$p.txt"
  done
  ((${#compiled[@]})) || return 1
  # the precisions that compiled, measured (a failed one is reported above)
  DRY=$DRY "$PY" -c "$AOTI_PY" measure "$(IFS=,; echo "${compiled[*]}")" "$OUT/aoti_cache" "$OUT/$CURRENT.md" || rc=1
  # Whether the packages' native code shares torch's C++ runtime: inductor compiles it with this
  # machine's g++, whose default links a static copy (pycgn's own modules guard against that).
  if ((!DRY)); then
    pkg=$(find "$OUT/aoti_cache" -name '*.pt2' | head -n 1)
    rm -rf "$OUT/aoti_so" && mkdir -p "$OUT/aoti_so"
    if [[ -n $pkg ]] && "$PY" -m zipfile -e "$pkg" "$OUT/aoti_so" && [[ -n $(find "$OUT/aoti_so" -name '*.so') ]]; then
      if bad=$(tools/shared_cxx_runtime.sh $(find "$OUT/aoti_so" -name '*.so')); then
        detail "- the packages' native code loads the shared libstdc++ ($(basename "$pkg") checked)" ""
      else  # not pycgn's build: reported, not failed
        detail "- the packages' native code as inductor compiled it here: ${bad//$OUT\//} (an exception" \
               "  thrown inside a package would cross two C++ runtimes)" ""
      fi
    else
      detail "- no shared object found in the aoti packages to check" ""
    fi
    rm -rf "$OUT/aoti_so"
  fi
  return $rc
}
# compile PRECISION CACHE: fill the cache; measure PRECISIONS CACHE REPORT: the table. Both build
# the same random weights from the same seed, so the measuring process finds the packages compiled.
read -r -d '' AOTI_PY <<'PYEOF'
import os, sys, time
import torch
mode, precisions, cache = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
os.environ["PYCGN_CACHE_DIR"] = cache  # a fresh cache: the packages are compiled here
from pycgn import runtime, export
from pycgn.models import MnistCGN

if os.environ.get("DRY") == "1":
    assert mode in ("compile", "measure") and set(precisions) <= {"float32", "float16"}, sys.argv
    assert "aoti" in runtime.BACKENDS and callable(runtime.AotiRunner) and callable(export.load_aoti_file)
    print(f"dry run: aoti {mode} {','.join(precisions)} ready (stopped before CUDA)")
    sys.exit(0)
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on both sides
torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
model = MnistCGN().eval()
with torch.no_grad():  # non-trivial statistics, so every layer matters
    for k, t in model.state_dict().items():
        if k.endswith("running_var"):
            t.uniform_(0.5, 1.5)
        elif t.is_floating_point():
            t.normal_(0, 0.2)
model = model.to(dev)
if mode == "compile":
    (precision,) = precisions
    t = time.perf_counter()
    runtime.cached_export(model, "aoti", precision=precision, device=dev)
    print(f"aoti {precision}: compiled in {time.perf_counter() - t:.1f} s", flush=True)
    sys.exit(0)

report = sys.argv[4]
tol = {"float32": 1e-4, "float16": 0.05}
lines = ["### aoti on CUDA (MNIST CGN, random weights; the precisions compiled side by side)", "",
         "| precision | compile s | load ms | max abs diff vs eager float32 | aoti img/s (256) | eager img/s (256) |",
         "|---|---:|---:|---:|---:|---:|"]
ok = True


def rate(fn, n):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    return 10 * n / (time.perf_counter() - t)


for precision in precisions:
    with open(os.path.join(os.path.dirname(report), f"aoti_compile_{precision}.txt")) as f:
        compile_s = [line.split()[-2] for line in f if "compiled in" in line]
    assert runtime.aoti_cached(model, precision, dev), f"{precision}: the compiling process left no package"
    t = time.perf_counter()
    runner = runtime.make_runner(model, backend="aoti", device=dev, precision=precision)  # from the cache
    load_ms = 1000 * (time.perf_counter() - t)
    worst = 0.0
    for n in (1, 7, 256):
        g = torch.Generator().manual_seed(n)
        u = (torch.randn(n, 32, generator=g) * 1.5).to(dev)
        y = torch.randint(0, 10, (n,), generator=g).to(dev)
        got = runner(u, y, u, y, u, y)
        with torch.inference_mode():
            want = model(u, y, u, y, u, y)
        for a, b in zip(got, want):
            assert a.dtype == torch.float32 and a.device.type == "cuda" and a.shape == b.shape
            worst = max(worst, (a - b).abs().max().item())
    ok &= worst <= tol[precision]
    u = torch.randn(256, 32, device=dev)
    y = torch.randint(0, 10, (256,), device=dev)
    fast = rate(lambda: runner(u, y, u, y, u, y), 256)
    with torch.inference_mode():
        slow = rate(lambda: model(u, y, u, y, u, y), 256)
    lines.append(f"| {precision} | {compile_s[-1] if compile_s else '?'} | {load_ms:.0f} | {worst:.2e} "
                 f"(bar {tol[precision]:g}) | {fast:,.0f} | {slow:,.0f} |")
    print(lines[-1], flush=True)
with open(report, "a") as f:
    f.write("\n".join(lines) + "\n\n")
sys.exit(0 if ok else 1)
PYEOF

# The full-size ImageNet CGN on the GPU, eager float32 (benchmarks/imagenet.py).
section_imagenet_bench() {
  need benchmarks/imagenet.py || return 1
  "$PY" benchmarks/imagenet.py --help | grep -q -- '--device' || { echo "benchmarks/imagenet.py has no --device"; return 1; }
  dry_stop
  # SIGABRT a little before the section's limit: Python's faulthandler then prints where it was.
  PYTHONFAULTHANDLER=1 timeout -s ABRT $((${SECTION_LIMIT:-90} - 10)) \
    "$PY" benchmarks/imagenet.py --device cuda --backends eager --batches 1,4,16,64 --rounds 2 \
    --out "$OUT/imagenet_cuda.md" || return 1
  cat "$OUT/imagenet_cuda.md" >>"$OUT/$CURRENT.md"
}

# float16 / bfloat16 (autocast) against float32 with TF32 off: img/s at batch 1-64 and how far
# the uint8 images move.
section_imagenet_dtypes() {
  DRY=$DRY "$PY" - "$OUT/$CURRENT.md" <<'PYEOF'
import os, sys, time
import torch
import pycgn
from pycgn.models import imagenet as inet

report, batches = sys.argv[1], (1, 4, 16, 64)
if os.environ.get("DRY") == "1":
    assert callable(inet.ImagenetCGN) and callable(inet.imagenet_draw) and callable(pycgn.composite)
    print("dry run: imagenet_dtypes ready (stopped before CUDA)")
    sys.exit(0)
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False  # the float32 baseline is true float32
torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
model = inet.ImagenetCGN(gt=False, truncation=0.5).to(dev).eval()


def images(d, dtype):
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        mask, fg, bg = model(d.u_shape, d.shape, d.u_texture, d.texture, d.u_bg, d.bg)
    return pycgn.composite(mask.float(), fg.float(), bg.float(), d.fg_offset, d.bg_offset, "uint8", "NHWC")


lines = ["### ImageNet CGN on the GPU by dtype (autocast; float32 with TF32 off)", "",
         "| dtype | batch | img/s | max abs diff vs float32 (uint8) | mean abs diff |", "|---|---:|---:|---:|---:|"]
for n in batches:
    d = inet.imagenet_draw(0, range(n), truncation=0.5, shared_noise=False).to(dev)
    base = None
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        images(d, dtype)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        img = images(d, dtype)
        torch.cuda.synchronize()
        s = time.perf_counter() - t
        if base is None:
            base = img
        diff = (img.int() - base.int()).abs()
        lines.append(f"| {str(dtype)[6:]} | {n} | {n / s:.1f} | {int(diff.max())} | {diff.float().mean():.3f} |")
        print(lines[-1], flush=True)
with open(report, "a") as f:
    f.write("\n".join(lines) + "\n\n")
PYEOF
}

# ---- driver -----------------------------------------------------------------------------------
if [[ ${1:-} == --section ]]; then  # the child process of one section
  CURRENT=$2
  "section_$CURRENT"
  exit $?
fi
if [[ ${1:-} == --build-pipeline ]]; then  # the pipeline's CMake build, in the background
  pipeline_configure_and_build
  exit $?
fi
wanted=()
for a in "$@"; do
  case $a in
    --dry-run) DRY=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$SELF"; exit 0 ;;
    -*) echo "gpu_check: unknown option $a"; exit 2 ;;
    *) wanted+=("$a") ;;
  esac
done
export DRY
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${SECTIONS[@]}")
for s in "${wanted[@]}"; do
  declare -F "section_$s" >/dev/null || { echo "gpu_check: unknown section '$s' (known: ${SECTIONS[*]})"; exit 2; }
done
if ((DRY)); then
  OUT=${OUT:-$(mktemp -d /tmp/pycgn-gpu-check-dry.XXXXXX)}
else
  OUT=${OUT:-$ROOT/gpu_out}
fi
mkdir -p "$OUT"
export OUT
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
HEAD="# pycgn GPU check$( ((DRY)) && echo ' (dry run)') ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $TORCH_CUDA_ARCH_LIST)"
rows=()
write_report() {  # the table, then the details of the sections run so far; renamed into place
  {
    printf '%s\n\n| section | result | seconds | limit |\n|---|---|---:|---:|\n' "$HEAD"
    printf '%s\n' "${rows[@]}"
    local w
    for w in "${wanted[@]}"; do
      if [[ -s $OUT/$w.md ]]; then echo; cat "$OUT/$w.md"; fi
    done
  } >"$OUT/report.md.tmp"
  mv "$OUT/report.md.tmp" "$OUT/report.md"
  # Every text file in one archive too: the lent machine's tool brings back at most 8 files.
  (cd "$OUT" && find . -maxdepth 2 -type f \( -name '*.md' -o -name '*.log' -o -name '*.txt' -o -name '*.xml' \) \
     -print0 | tar czf gpu_check.tgz.tmp --null -T - 2>/dev/null; mv -f gpu_check.tgz.tmp gpu_check.tgz)
}
for s in "${wanted[@]}"; do : >"$OUT/$s.md"; done
write_report
BG=
rm -f "$OUT/pipeline_build.rc" "$OUT/pipeline_build.pid"
if ! ((DRY)) && [[ " ${wanted[*]} " == *" pipeline "* ]]; then
  timeout -k 10 "$BUDGET" "$SELF" --build-pipeline >"$OUT/pipeline_build.txt" 2>&1 </dev/null &
  BG=$!
  echo "$BG" >"$OUT/pipeline_build.pid"
fi
status=0
start=$SECONDS
for s in "${wanted[@]}"; do
  step "$s"
  limit_var=PYCGN_GPU_LIMIT_$s
  limit=${!limit_var:-${LIMIT[$s]}}
  left=$((BUDGET - (SECONDS - start)))
  if ((left < 5)); then
    rows+=("| $s | not run (time budget of $BUDGET s spent) | 0 | $limit |"); status=1; write_report; continue
  fi
  ((limit > left)) && limit=$left
  t0=$SECONDS
  SECTION_LIMIT=$limit timeout -k 10 "$limit" "$SELF" --section "$s" 2>&1 | tee "$OUT/$s.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) r=pass ;;
    124|137) r=TIMEOUT; status=1 ;;
    *) r="FAIL ($rc)"; status=1 ;;
  esac
  rows+=("| $s | $r | $((SECONDS - t0)) | $limit |")
  write_report
  echo "--- $s: $r"
done
[[ -n $BG ]] && kill "$BG" 2>/dev/null  # timeout passes it on to the whole build
step "done: $OUT/report.md"
cat "$OUT/report.md"
exit $status
