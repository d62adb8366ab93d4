"""Throughput of the C++ pipeline against pycgn's Python Generator, side by side in one run.

Every candidate generates the same n images (sampling, the three generators, compositing to
uint8) on the CPU with libtorch's default threads, timed as the median of `--repeats` calls
after a warm-up call, under three allocators: glibc's default, glibc with large blocks kept
on the heap (MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1GiB, what pycgn.runtime.tune_malloc
sets from Python) and tcmalloc (LD_PRELOAD). Prints a markdown table.

usage: python cpp/bench/bench_pipeline.py --bench BUILD/cpp/pycgn_pipeline_bench [--model CKPT] [-n 1000]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
ALLOCATORS = {
    "glibc": {"PYCGN_MALLOC": "default"},
    "glibc, mmap off": {"PYCGN_MALLOC": "default", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
    "tcmalloc": {"PYCGN_MALLOC": "default", "LD_PRELOAD": TCMALLOC},
}


def python_candidate(backend, model, n, repeats):
    """Runs in a child process (so the allocator applies): median seconds of Generator.generate."""
    import torch  # noqa: F401
    import pycgn
    import pycgn.api
    gen = pycgn.api.Generator(pycgn.load(model), backend=backend, device="cpu")
    gen.generate(n=n, seed=0)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        gen.generate(n=n, seed=r + 1)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run(cmd, env_extra):
    env = dict(os.environ, **env_extra)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{cmd[0]} failed: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", type=Path, help="pycgn_pipeline_bench binary")
    ap.add_argument("--model", default=str(ROOT.parent / "shared/reference/cgn_mnist_official/colored_mnist.pth"))
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps({"median_s": python_candidate(a.child, a.model, a.n, a.repeats)}))
        return
    import pycgn
    import pycgn.export
    with tempfile.TemporaryDirectory() as tmp:
        export = pycgn.export.export(pycgn.load(a.model), Path(tmp) / "export", format="torchscript")
        rows = []
        for alloc, env in ALLOCATORS.items():
            if "LD_PRELOAD" in env and not Path(TCMALLOC).is_file():
                continue
            cands = {"C++ pycgn::Pipeline (TorchScript)": [str(a.bench), str(export), str(a.n), str(a.repeats)]}
            for backend in ("torch", "torchscript"):
                cands[f"Python Generator, backend {backend}"] = [
                    sys.executable, __file__, "--child", backend, "--model", a.model, "-n", str(a.n),
                    "--repeats", str(a.repeats)]
            for name, cmd in cands.items():
                s = run(cmd, env)["median_s"]
                rows.append((alloc, name, s))
                print(f"{alloc:16s} {name:36s} {s * 1e3:8.1f} ms  {a.n / s:8.0f} images/s", file=sys.stderr)
    best = min(s for _, _, s in rows)
    print(f"n = {a.n} images per call, median of {a.repeats} calls after a warm-up; model {Path(a.model).name}\n")
    print("| allocator | candidate | ms per call | images/s | time vs. fastest |")
    print("|---|---|---:|---:|---:|")
    for alloc, name, s in rows:
        print(f"| {alloc} | {name} | {s * 1e3:.1f} | {a.n / s:.0f} | {s / best:.2f}x |")


if __name__ == "__main__":
    main()
