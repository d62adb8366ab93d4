"""Compositing, side by side: the published eager expression, the same under torch.compile,
numpy, and pycgn.composite (the fused kernel), for 1024x3x32x32 and 64x3x256x256, float32
NCHW and uint8 NHWC outputs.

Reported per candidate: median ms per call (calls interleaved across candidates, so a
shared machine's load hits all alike), effective GB/s of the minimal bytes (each input read
once, the output written once), that as a fraction of this machine's copy bandwidth
(torch copy_ of 256 MiB, read + write, measured in the same process), and minor page
faults per call (resource.getrusage).

The baselines run at their best too: the script runs itself twice, with glibc's allocator
and with tcmalloc preloaded (Debian: libtcmalloc-minimal4), and writes one markdown report.

    python benchmarks/composite.py                        # -> benchmarks/results/composite.md
    python benchmarks/composite.py --quick --out /tmp/c.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
LO, HI = 1e-4, 0.9999
CASES = [(1024, 32), (64, 256)]  # (N, H=W)
OUTS = [("float32", "NCHW"), ("uint8", "NHWC")]


# ---- the candidates: (mask, fg, bg, fo, bo) -> image, same semantics as pycgn.reference ----

def eager(mask, fg, bg, fo, bo, uint8: bool):
    """The published expression: clamp, repeat the mask to 3 channels, tile each texture
    2x2 and crop it at its offset, blend, then map to uint8 and reorder to HWC."""
    n, _, h, w = mask.shape
    m = mask.clamp(LO, HI).repeat(1, 3, 1, 1)
    b = torch.arange(n, device=mask.device)[:, None, None]

    def shuffle(t, o):
        tiled = t.repeat(1, 1, 2, 2)
        ys = o[:, :1] + torch.arange(h, device=t.device)  # offsets in {0..H}: inside the tiled texture
        xs = o[:, 1:] + torch.arange(w, device=t.device)
        return tiled[b, :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)

    x = m * shuffle(fg, fo) + (1 - m) * shuffle(bg, bo)
    if uint8:
        x = ((x + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return x


def numpy_composite(mask, fg, bg, fo, bo, uint8: bool):
    n, _, h, w = mask.shape
    m = np.clip(mask, LO, HI)
    b = np.arange(n)[:, None, None]

    def shuffle(t, o):  # circular crop by fancy indexing -> (N, H, W, C)
        ys = (o[:, :1] + np.arange(h)) % t.shape[2]
        xs = (o[:, 1:] + np.arange(w)) % t.shape[3]
        return t[b, :, ys[:, :, None], xs[:, None, :]]

    mh = m.transpose(0, 2, 3, 1)  # (N, H, W, 1)
    x = mh * shuffle(fg, fo) + (1 - mh) * shuffle(bg, bo)
    if uint8:
        return np.rint(np.clip((x + 1) * 127.5, 0, 255)).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def copy_bandwidth(reps=15):
    """Best read+write GB/s of torch copy_ over 256 MiB (all threads): this machine's limit."""
    src = torch.rand(64 << 20)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(reps))
    return 2 * src.numel() * 4 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(args):
    import pycgn
    from pycgn.ops import composite

    torch.manual_seed(0)
    compiled = torch.compile(eager, dynamic=False)
    rows = []
    bw_before = copy_bandwidth()
    for n, s in CASES:
        mask = torch.rand(n, 1, s, s) * 1.2 - 0.1
        fg, bg = torch.rand(n, 3, s, s) * 2 - 1, torch.rand(n, 3, s, s) * 2 - 1
        fo, bo = torch.randint(0, s + 1, (n, 2)), torch.randint(0, s + 1, (n, 2))
        npargs = tuple(t.numpy() for t in (mask, fg, bg, fo, bo))
        for out_dtype, layout in OUTS:
            u8 = out_dtype == "uint8"
            out = torch.empty((n, s, s, 3) if u8 else (n, 3, s, s), dtype=torch.uint8 if u8 else torch.float32)
            nbytes = n * s * s * (4 + 2 * 3 * 4 + 3 * (1 if u8 else 4))
            # the machine's limit, timed in the same interleaved rounds: a copy moving the same bytes
            csrc = torch.rand(nbytes // 8)
            cdst = torch.empty_like(csrc)
            cands = {
                "copy (same bytes)": lambda: cdst.copy_(csrc),
                "eager": lambda: eager(mask, fg, bg, fo, bo, u8),
                "torch.compile": lambda: compiled(mask, fg, bg, fo, bo, u8),
                "numpy": lambda: numpy_composite(*npargs, u8),
                "pycgn": lambda: composite(mask, fg, bg, fo, bo, out_dtype, layout),
                "pycgn out=": lambda: composite(mask, fg, bg, fo, bo, out_dtype, layout, out=out),
            }
            ref = pycgn.reference.composite(mask, fg, bg, fo, bo, out_dtype, layout)
            for name, fn in cands.items():  # warm up (compiles) and check every candidate
                if name.startswith("copy"):
                    fn()
                    continue
                got = fn()
                got = torch.from_numpy(got) if isinstance(got, np.ndarray) else got
                err = (got.float() - ref.float()).abs().max().item()
                assert err <= (1 if u8 else 1e-5), f"{name} differs from the reference by {err}"
                fn()
            times = {k: [] for k in cands}
            faults = {k: 0 for k in cands}
            budget = time.perf_counter() + args.seconds
            r = 0
            while r < args.min_reps or (time.perf_counter() < budget and r < args.max_reps):
                for name, fn in cands.items():
                    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    times[name].append(_timed(fn))
                    faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
                r += 1
            copy_gbs = nbytes / statistics.median(times["copy (same bytes)"]) / 1e9
            for name in cands:
                t = statistics.median(times[name])
                rows.append(dict(case=f"{n}x3x{s}x{s}", out=f"{out_dtype} {layout}", cand=name, ms=t * 1e3,
                                 gbs=nbytes / t / 1e9, faults=faults[name] / r, reps=r,
                                 frac=nbytes / t / 1e9 / copy_gbs))
    bw = max(bw_before, copy_bandwidth())
    return dict(rows=rows, copy_gbs=bw, threads=torch.get_num_threads(),
                allocator="tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc",
                ext=pycgn._ext.AVAILABLE)


def run_cuda(args):
    """The CUDA side: CUDA events, median of many runs, inputs rotated through enough copies
    to exceed the L2 cache, the output poisoned before each run; the device's copy bandwidth
    (copy_ of 1 GiB, read + write) measured in the same run."""
    import pycgn
    from pycgn.ops import composite

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)

    def timed(fn, poison, reps):
        ts = []
        for i in range(reps):
            poison(i)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end) / 1e3)
        return statistics.median(ts)

    src = torch.empty(1 << 28, device=dev)  # 1 GiB
    dst = torch.empty_like(src)
    copy_t = timed(lambda i: dst.copy_(src), lambda i: None, 30)
    copy_gbs = 2 * src.numel() * 4 / copy_t / 1e9
    compiled = torch.compile(eager, dynamic=False) if args.cuda_compile else None
    rows = []
    for n, s in CASES:
        per = n * s * s * (4 + 2 * 3 * 4)
        k = max(2, int(4 * l2 // per) + 1)  # copies of the inputs: > 4x L2 in all
        g = torch.Generator(device=dev).manual_seed(0)
        sets = [(torch.rand(n, 1, s, s, device=dev, generator=g) * 1.2 - 0.1,
                 torch.rand(n, 3, s, s, device=dev, generator=g) * 2 - 1,
                 torch.rand(n, 3, s, s, device=dev, generator=g) * 2 - 1,
                 torch.randint(0, s + 1, (n, 2), device=dev, generator=g),
                 torch.randint(0, s + 1, (n, 2), device=dev, generator=g)) for _ in range(k)]
        for out_dtype, layout in OUTS:
            u8 = out_dtype == "uint8"
            out = torch.empty((n, s, s, 3) if u8 else (n, 3, s, s), dtype=torch.uint8 if u8 else torch.float32,
                              device=dev)
            poison = (lambda i: out.fill_(0xA5)) if u8 else (lambda i: out.fill_(float("nan")))
            cands = {"pycgn out=": lambda i: composite(*sets[i % k], out_dtype, layout, out=out),
                     "pycgn": lambda i: composite(*sets[i % k], out_dtype, layout),
                     "eager": lambda i: eager(*sets[i % k], u8)}
            if compiled is not None:
                cands["torch.compile"] = lambda i: compiled(*sets[i % k], u8)
            ref = pycgn.reference.composite(*sets[0], out_dtype, layout)
            for name, fn in cands.items():
                fn(0)
                got = out if name == "pycgn out=" else fn(0)
                err = (got.float() - ref.float()).abs().max().item()
                assert err <= (1 if u8 else 1e-5), f"{name} differs from the reference by {err}"
            nbytes = n * s * s * (4 + 2 * 3 * 4 + 3 * (1 if u8 else 4))
            for name, fn in cands.items():
                t = timed(fn, poison, args.cuda_reps)
                rows.append(dict(case=f"{n}x3x{s}x{s}", out=f"{out_dtype} {layout}", cand=name, ms=t * 1e3,
                                 gbs=nbytes / t / 1e9, frac=nbytes / t / 1e9 / copy_gbs, copies=k))
    lines = [f"## CUDA: {props.name} (torch {torch.__version__}, CUDA {torch.version.cuda})", "",
             f"Device copy bandwidth (copy_ of 1 GiB, read + write, median of 30): {copy_gbs:.0f} GB/s; "
             f"L2 {l2 >> 20} MiB; inputs rotated through copies exceeding 4x L2; output poisoned before each run; "
             f"median of {args.cuda_reps} runs timed with CUDA events.", "",
             "| case | output | candidate | ms | GB/s | of copy bw | pycgn speed-up |", "|---|---|---|---:|---:|---:|---:|"]
    for row in rows:
        mine = next(r["ms"] for r in rows if (r["case"], r["out"], r["cand"]) == (row["case"], row["out"], "pycgn"))
        lines.append(f"| {row['case']} | {row['out']} | {row['cand']} | {row['ms']:.3f} | {row['gbs']:.0f} | "
                     f"{row['frac']:.0%} | {row['ms'] / mine:.1f}x |")
    worst = min(r["frac"] for r in rows if r["cand"].startswith("pycgn") and r["case"].endswith("256"))
    lines += ["", f"Bar: pycgn >= 80% of the device copy bandwidth at 256x256: worst {worst:.0%} -> "
              f"{'PASS' if worst >= 0.8 else 'FAIL'}", ""]
    return "\n".join(lines)


def report(results, args):
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except Exception:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    lines = ["# Compositing: the fused kernel against the published expression", "",
             f"Machine: {os.cpu_count()}-core CPU, {cpu}; torch {torch.__version__}, "
             f"{results[0]['threads']} threads; load average {load:.1f} at the end of the run "
             "(a shared machine: absolute times vary, the side-by-side ratios less).",
             f"Command: `python benchmarks/composite.py{' --quick' if args.quick else ''}`. "
             "Minimal bytes: mask + fg + bg read once, the output written once. "
             "Fraction of copy bandwidth: against `copy (same bytes)`, a torch `copy_` moving the case's minimal "
             "bytes (read + write), timed in the same interleaved rounds, so load swings hit it alike; the "
             "allocator headings give the best 256 MiB copy_ of each run for scale.", ""]
    base = {}
    for res in results:
        for row in res["rows"]:
            if res["allocator"] == "tcmalloc":
                base[(row["case"], row["out"], row["cand"])] = row["ms"]
    for res in results:
        lines += [f"## Allocator: {res['allocator']} (best copy_ of 256 MiB: {res['copy_gbs']:.1f} GB/s)", "",
                  "| case | output | candidate | ms | GB/s | of copy bw | minor faults/call | pycgn speed-up |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for row in res["rows"]:
            key = (row["case"], row["out"])
            mine = next(r["ms"] for r in res["rows"] if (r["case"], r["out"]) == key and r["cand"] == "pycgn")
            lines.append(f"| {row['case']} | {row['out']} | {row['cand']} | {row['ms']:.2f} | {row['gbs']:.1f} | "
                         f"{row['frac']:.0%} | {row['faults']:.0f} | {row['ms'] / mine:.1f}x |")
        lines.append("")
    # the bar: pycgn (best allocator) against the tcmalloc baselines
    lines += ["## Bar (against the tcmalloc baselines)", "",
              "| case | output | pycgn / eager | pycgn / torch.compile | pycgn of copy bw (best allocator) |",
              "|---|---|---:|---:|---:|"]
    for n, s in CASES:
        for out_dtype, layout in OUTS:
            case, out = f"{n}x3x{s}x{s}", f"{out_dtype} {layout}"
            mine = min((r for res in results for r in res["rows"] if (r["case"], r["out"], r["cand"]) ==
                        (case, out, "pycgn")), key=lambda r: -r["frac"])
            e, c = base.get((case, out, "eager")), base.get((case, out, "torch.compile"))
            lines.append(f"| {case} | {out} | {e / mine['ms']:.1f}x (bar 5x) | {c / mine['ms']:.2f}x (bar 1.0x) | "
                         f"{mine['frac']:.0%}{' (bar 80%)' if out_dtype == 'uint8' and s == 256 else ''} |"
                         if e and c else f"| {case} | {out} | n/a | n/a | {mine['frac']:.0%} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "composite.md"))
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--child-json", help=argparse.SUPPRESS)
    p.add_argument("--no-tcmalloc", action="store_true", help="only the default allocator")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cuda-reps", type=int, default=100, help="timed runs per candidate on CUDA")
    p.add_argument("--cuda-compile", action="store_true", help="also time torch.compile on CUDA (slow to compile)")
    args = p.parse_args()
    if args.device == "cuda":
        text = run_cuda(args)
        from pycgn._io import atomic_write_bytes
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, text.encode())
        print(text)
        return 0
    args.seconds, args.min_reps, args.max_reps = (2.0, 5, 20) if args.quick else (8.0, 15, 200)
    if args.child_json:
        Path(args.child_json).write_text(json.dumps(run(args)))
        return 0
    results = []
    allocators = [("glibc", None)]
    if not args.no_tcmalloc:
        if os.path.exists(TCMALLOC):
            allocators.append(("tcmalloc", TCMALLOC))
        else:
            print(f"warning: {TCMALLOC} absent (apt-get install libtcmalloc-minimal4): glibc only", file=sys.stderr)
    for name, preload in allocators:
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if preload:
            env["LD_PRELOAD"] = preload
        tmp = Path(args.out).with_suffix(f".{name}.json.tmp")
        cmd = [sys.executable, __file__, "--child-json", str(tmp)] + (["--quick"] if args.quick else [])
        print(f"running with {name} ...", file=sys.stderr)
        subprocess.run(cmd, env=env, check=True)
        results.append(json.loads(tmp.read_text()))
        tmp.unlink()
    text = report(results, args)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pycgn._io import atomic_write_bytes
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
