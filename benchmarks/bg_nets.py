#!/usr/bin/env python
"""img/s of Wildlife's background net: the published architecture ("dense") against the net without
position-dependent weights that pycgn ships since 2026-11-30 ("periodic"), side by side in one process.

    python benchmarks/bg_nets.py                          # writes benchmarks/results/bg_nets.md
    python benchmarks/bg_nets.py --quick --out -          # a smoke run

Candidates, per batch size, taking turns (``_harness.interleave``; a figure is the best round):
the background mechanism alone, as the runners run it (the folded inference form, eager, float32),
and all three nets through pycgn's ``torch`` and ``onnxruntime`` runners. The dense model is the
published ``wildlife_mnist.pth`` when ``../shared/reference`` has it, else the same architecture with
random weights (speed does not depend on the values); the periodic model is the shipped
``wildlife_mnist``. The machine's limit is the best float32 matmul rate.
"""
from __future__ import annotations

import argparse
import time

import _harness as H  # first: it makes this checkout's pycgn importable

import torch

import pycgn
from pycgn import runtime


def _dense_model():
    path = H.PUBLISHED / "wildlife_mnist.pth"
    if path.is_file():
        return pycgn.load(path), str(path.name)
    from pycgn.models import MnistCGN
    return MnistCGN().eval(), "random weights (published checkpoint absent)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,64,256")
    p.add_argument("--budget", type=float, default=15.0, help="seconds of timed rounds per batch size")
    p.add_argument("--out", default=str(H.ROOT / "benchmarks" / "results" / "bg_nets.md"))
    p.add_argument("--quick", action="store_true", help="batch 16, 1 s per batch size: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.budget = "16", 1.0
    dense, dense_src = _dense_model()
    periodic = pycgn.load("wildlife_mnist")
    if periodic.bg_net == "dense":
        raise SystemExit("the shipped wildlife_mnist has the published background net; nothing to compare")
    models = {"dense": dense, periodic.bg_net: periodic}
    runners = {}
    for name, m in models.items():
        runners[name] = {b: runtime.make_runner(m, backend=b, device="cpu")
                         for b in ("torch", "onnxruntime") if b in runtime.available_backends()}
    bg = {name: m.inference_mechanisms()["background"] for name, m in models.items()}
    gemm = H.matmul_rate()
    flops = {name: H.mnist_flops_per_image(m) for name, m in models.items()}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# Wildlife's background net: published architecture vs {periodic.bg_net} ({when})", "",
             H.machine_line(), "", f"Command: {H.command()}; dense model: {dense_src}; "
             f"float32 matmul limit {gemm / 1e9:.0f} GFLOP/s; torch threads {torch.get_num_threads()}.", ""]
    rows = []
    for n in [int(b) for b in args.batches.split(",")]:
        a = H.mnist_inputs(periodic, n)
        cands = {}  # (nets, net kind, backend) -> call
        for name in models:
            cands["background net", name, ""] = (lambda f=bg[name]: f(a[4], a[5]))
            for b, r in runners[name].items():
                cands["three nets", name, b] = (lambda r=r: r(*a))
        with torch.inference_mode():
            t = H.interleave(cands, budget=args.budget, turn_seconds=0.1)
        for (nets, net, b), v in t.items():
            rows.append([n, ", ".join(filter(None, (nets, net, b))), f"{n / v.best:,.0f}",
                         H.ratio(t[nets, "dense", b].best / v.best),
                         H.share(flops[net] * n / v.best / gemm) if b else "-"])
    lines += H.table(["batch", "candidate", "img/s", "speed vs dense", "useful FLOP rate / matmul limit"], rows)
    lines += ["", f"Multiply-adds x 2 per image, three raw nets: dense {flops['dense'] / 1e6:.1f} M, "
              f"{periodic.bg_net} {flops[periodic.bg_net] / 1e6:.1f} M (the waves' matmul not counted). "
              "The runners compute the folded nets, about a third of these operations (model card), so the "
              "useful rate can pass the matmul limit. Batch 1 runs in the CPU chunks of 64 (bits "
              "independent of the batch), hence its low rate."]
    H.write_report(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
