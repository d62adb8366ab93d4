#!/usr/bin/env python
"""img/s of the full-size ImageNet CGN (3 x BigGAN-deep-256 + U^2-Net, random weights) per backend
and precision, side by side, through ``pycgn.runtime`` (what ``Generator`` and ``synth`` run).

    python benchmarks/imagenet.py                                   # -> benchmarks/results/imagenet.md
    python benchmarks/imagenet.py --batches 1,8 --backends eager --precisions float32 --out /tmp/i.md
    python benchmarks/imagenet.py --quick --out /tmp/i.md          # a smoke run: batch 1, eager float32

One sample = the shape net (pre-mask) + U^2-Net (mask) + texture net + background net +
compositing to uint8 NHWC 256x256 (``pycgn.composite`` when the extension is built). Backends:
``eager`` (runtime backend ``torch``), ``onnxruntime`` (the runtime's cached ONNX export, CPU
execution provider) and ``aoti`` when this pycgn's runtime has it; each in every ``--precisions``
it computes in (onnxruntime: float32 only). Exports come from the cache (``$PYCGN_CACHE_DIR``):
the first run exports (minutes, reported apart), later runs load. Each row also gives how far its
images are from eager float32's (max and mean uint8 levels), as ``benchmarks/bf16.py`` does.
For each batch size the backends take turns (interleaved, so a shared machine's load hits both alike); after one
warm-up call per backend, each gets ``--rounds`` timed calls and its best is kept (other
processes can only slow a call down). Also reported: the useful FLOPs per image (counted with
``torch.utils.flop_counter`` on the meta device) and the achieved FLOP rate as a fraction of this
machine's best float32 matmul rate (``torch.mm`` 2048^2, measured in the same process).

The allocator is the process's, or, with ``--allocators glibc,tcmalloc``, one fresh process per
allocator (tcmalloc preloaded: the baselines at their best, as glibc's malloc page-faults eager
PyTorch's large temporaries), one section each.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _harness as H  # first: it makes this checkout's pycgn importable
import torch

from pycgn import reference, runtime
from pycgn.models import imagenet as inet


def flops_per_image() -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = inet.ImagenetCGN(gt=False)
        u = torch.zeros(1, 128)
        y = torch.zeros(1, 1000)
        with FlopCounterMode(display=False) as fc:
            for mech in model.mechanisms().values():  # (the input checks cannot read meta tensors)
                mech(u, y)
    return float(fc.get_total_flops())


def composite_fn():
    try:
        import pycgn
        if pycgn._ext.AVAILABLE:
            return pycgn.composite, "pycgn.composite"
    except (ImportError, AttributeError):
        pass
    return reference.composite, "pycgn.reference.composite"


# row name -> runtime backend; "auto" is what Generator(..., backend="auto") runs (list it after the
# backends it should find cached, e.g. onnxruntime)
BACKENDS = {"eager": "torch", "onnxruntime": "onnxruntime", "aoti": "aoti", "auto": "auto"}


class Run:
    """One runtime runner on a draw: (mask, fg, bg)."""

    def __init__(self, runner):
        self.runner = runner

    def __call__(self, d):
        return self.runner(d.u_shape, d.shape, d.u_texture, d.texture, d.u_bg, d.bg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--backends", default="eager,onnxruntime,aoti,auto",
                    help="eager, onnxruntime, aoti, auto (rows for a backend this runtime lacks are left out)")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--rounds", type=int, default=1, help="timed calls per backend and batch (best kept)")
    ap.add_argument("--truncation", type=float, default=0.5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: eager on the GPU (timed with synchronisation); onnxruntime stays on the CPU")
    ap.add_argument("--allocators", default="",
                    help="glibc,tcmalloc: one run (a fresh process) and section per allocator; "
                         "default: this process's allocator")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: --batches 1 --backends eager --precisions float32, no warm-up (no export)")
    ap.add_argument("--out", default=str(H.ROOT / "benchmarks" / "results" / "imagenet.md"))
    H.add_child_option(ap)
    args = ap.parse_args()
    if args.quick:
        args.batches, args.backends, args.precisions = "1", "eager", "float32"
    unknown = set(args.backends.split(",")) - set(BACKENDS)
    if unknown:
        ap.error(f"--backends: unknown {','.join(sorted(unknown))}; expected some of {', '.join(BACKENDS)}")
    bad = set(args.precisions.split(",")) - set(runtime.PRECISIONS)
    if bad:
        ap.error(f"--precisions: unknown {','.join(sorted(bad))}; expected some of {', '.join(runtime.PRECISIONS)}")
    allocators = [a for a in args.allocators.split(",") if a]
    if set(allocators) - {"glibc", "tcmalloc"}:
        ap.error(f"--allocators: expected glibc and/or tcmalloc, got {args.allocators!r}")
    if args.child_json:
        return H.child_result(args.child_json, {"text": measure(args)})
    if allocators:
        runs = H.rerun(__file__, sys.argv[1:], {a: (a, {}) for a in allocators})
        text = "\n".join(r["text"] for r in runs.values())
    else:
        text = measure(args)
    out = Path(args.out)
    prev = out.read_text() if out.exists() and os.environ.get("PYCGN_BENCH_APPEND") else ""
    H.write_report(out, prev + text, echo=False)
    print(f"wrote {out}")
    return 0


def measure(args) -> str:
    """One run in this process: its markdown section."""
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    backends = args.backends.split(",")
    threads = torch.get_num_threads()
    alloc = H.allocator_in_use()
    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    limit = H.matmul_rate(device=device) / 1e9
    flops = flops_per_image()
    print(f"{H.cpu_model()}, {threads} threads, {alloc}; mm limit {limit:.1f} GFLOP/s; "
          f"{flops / 1e9:.1f} GFLOP per image", flush=True)

    torch.manual_seed(0)
    t = time.perf_counter()
    model = inet.ImagenetCGN(gt=False, truncation=args.truncation).to(device)
    print(f"model built in {time.perf_counter() - t:.0f} s", flush=True)
    runners, notes = {}, []
    have = runtime.backends_for
    for name in backends:
        for precision in args.precisions.split(","):
            if BACKENDS[name] not in have(precision, device):
                continue
            label = name if precision == "float32" else f"{name}, {precision}"
            t = time.perf_counter()
            runners[label] = Run(runtime.make_runner(model, BACKENDS[name], device, precision=precision))
            dt = time.perf_counter() - t
            if dt > 5:  # an export or compile (or its cache check and load)
                notes.append(f"{label}: runner made in {dt:.0f} s (export/compile on first use, else cache load "
                             f"and parity check)")
                print(notes[-1], flush=True)
    missing = [b for b in backends if BACKENDS[b] not in runtime.available_backends()]
    if missing:
        notes.append(f"not in this runtime: {', '.join(missing)}")
    composite, comp_name = composite_fn()

    def sample(run, d):
        mask, fg, bg = run(d)
        return composite(mask, fg, bg, d.fg_offset, d.bg_offset, out_dtype="uint8", layout="NHWC")

    if not args.quick:  # (a smoke run's figures may include first-call costs)
        warm = inet.imagenet_draw(1, range(1), truncation=args.truncation).to(device)
        for r in runners.values():
            sample(r, warm)
    rows, dist = [], {}
    for n in batches:
        d = inet.imagenet_draw(0, range(n), truncation=args.truncation, shared_noise=False).to(device)
        times = H.interleave({name: (lambda run=run: sample(run, d)) for name, run in runners.items()},
                             min_rounds=args.rounds, max_rounds=args.rounds, warmup=0, device=device)
        images = {name: sample(run, d).int() for name, run in runners.items()}
        for name, t in times.items():
            rows.append((name, n, t.best))
            if "eager" in images:
                diff = (images[name] - images["eager"]).abs().float()
                dist[name, n] = f"{diff.max():.0f} / {diff.mean():.3f}"
            print(f"{name:18s} batch {n}: {t.best:.2f} s, {n / t.best:.3f} img/s, levels from eager "
                  f"{dist.get((name, n), '-')}", flush=True)

    base = {n: s for name, n, s in rows if name == "eager"}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else alloc
    lines = [f"### ImageNet CGN, full size (256x256), {where}", "",
             f"{H.machine_line()} Started {started}; load average {load0[0]:.1f} at start.", "",
             f"One image = BigGAN-deep-256 x 3 + U^2-Net 256x256 + {comp_name} to uint8 NHWC: "
             f"{flops / 1e9:.1f} GFLOP (useful, counted). Machine limit: {limit:.1f} GFLOP/s "
             f"(best float32 torch.mm {'8192' if device.type == 'cuda' else '2048'}^2, same process). "
             f"Best of {args.rounds} timed call(s) after {'no' if args.quick else 'one'} warm-up per backend; random weights, truncation "
             f"{args.truncation}. Command: {H.command()}.", ""]
    lines += H.table(["backend", "batch", "s / batch", "img/s", "vs eager", "GFLOP/s", "of mm limit",
                      "levels from eager (max / mean)"],
                     [[name, n, f"{s:.2f}", f"{n / s:.3f}", H.ratio(base[n] / s) if n in base else "-",
                       f"{flops * n / s / 1e9:.1f}", H.share(flops * n / s / 1e9 / limit), dist.get((name, n), "-")]
                      for name, n, s in rows])
    lines += [""] + [f"- {x}" for x in notes] + [""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
