#!/usr/bin/env python
"""``precision="bfloat16"`` against float32: how far its images are, and how much faster it is.

    python benchmarks/bf16.py                    # writes benchmarks/results/bf16.md
    python benchmarks/bf16.py --n 2000 --out -   # quicker, to stdout
    python benchmarks/bf16.py --quick --out /tmp/b.md   # a smoke run, under a minute

Fidelity: for each shipped model, ``--n`` images from the seeded sampler made with ``torch``
(float32, eager) and with ``torch`` in bfloat16; the table gives the absolute difference of the uint8
values (mean, 99.9th percentile, max) and the share of values that differ at all.
Speed: the three generator nets at batch ``--batch`` for ``onnxruntime`` and ``torch`` (float32)
and every backend that computes in bfloat16 (``torch``, and ``aoti`` when the runtime has it), taking turns, best of ``--rounds``; beside them the machine's best float32 and
bfloat16 matmul rates (``torch.mm`` 2048^2), the limits the nets' FLOP rate is a fraction of.
"""
from __future__ import annotations

import argparse
import sys
import time

import _harness as H  # first: it makes this checkout's pycgn importable
import numpy as np
import torch

import pycgn
from pycgn import runtime

MODELS = ("colored_mnist", "double_colored_mnist", "wildlife_mnist")
# row name -> (backend, precision); rows of a backend this runtime lacks are left out
CANDIDATES = {"onnxruntime": ("onnxruntime", "float32"), "torch": ("torch", "float32"),
              "torch bfloat16": ("torch", "bfloat16"), "aoti bfloat16": ("aoti", "bfloat16")}


def fidelity(model: str, n: int, chunk: int = 1000) -> dict:
    ref = pycgn.Generator(model, backend="torch")
    low = pycgn.Generator(model, backend="torch", precision="bfloat16")
    sampler = ref.sampler(0)
    diffs = []
    for a in range(0, n, chunk):
        draw = sampler.draw(range(a, min(n, a + chunk)))
        diffs.append((ref.images(draw).int() - low.images(draw).int()).abs().flatten().numpy())
    d = np.concatenate(diffs)
    return {"mean": float(d.mean()), "p999": float(np.percentile(d, 99.9)), "max": int(d.max()),
            "differ": float((d > 0).mean())}


def speed(batch: int, rounds: int) -> dict:
    model = pycgn.load("colored_mnist")
    args = H.mnist_inputs(model, batch)
    runners = {name: runtime.make_runner(model, b, precision=p) for name, (b, p) in CANDIDATES.items()
               if b in runtime.backends_for(p)}
    with torch.inference_mode():
        times = H.interleave({name: (lambda r=r: r(*args)) for name, r in runners.items()},
                             min_rounds=rounds, max_rounds=rounds, turn_calls=3)
    return {name: batch / t.best for name, t in times.items()}, H.mnist_flops_per_image(model)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="images per model for the fidelity table")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="a smoke run (under a minute): --n 300 --batch 32 --rounds 2")
    p.add_argument("--out", default=str(H.ROOT / "benchmarks" / "results" / "bf16.md"), help="'-' for stdout")
    args = p.parse_args()
    if args.quick:
        args.n, args.batch, args.rounds = 300, 32, 2
    lines = [f"# `precision=\"bfloat16\"` against float32 ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             H.machine_line(),
             f"Command: `python benchmarks/bf16.py --n {args.n} --batch {args.batch} --rounds {args.rounds}`", "",
             f"## Fidelity: uint8 images, `torch` bfloat16 vs `torch` float32, {args.n:,} images per model", ""]
    rows = []
    for m in MODELS:
        f = fidelity(m, args.n)
        rows.append([m, f"{f['mean']:.3f}", f"{f['p999']:.0f}", f["max"], f"{100 * f['differ']:.1f} %"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    lines += H.table(["model", "mean abs. diff (levels)", "99.9th pct", "max", "values that differ"], rows)
    rates, flops = speed(args.batch, args.rounds)
    f32, b16 = H.matmul_rate(torch.float32), H.matmul_rate(torch.bfloat16)
    lines += ["", f"## Speed: the three nets, batch {args.batch}, best of {args.rounds} rounds "
              f"({flops / 1e6:.0f} MFLOP per image)", ""]
    base = rates.get("onnxruntime") or rates["torch"]
    lines += H.table(["backend", "img/s", "vs onnxruntime", "GFLOP/s", "share of the matmul rate of its dtype"],
                     [[name, f"{r:.0f}", H.ratio(r / base), f"{r * flops / 1e9:.0f}",
                       f"{100 * r * flops / (b16 if CANDIDATES[name][1] == 'bfloat16' else f32):.0f} %"]
                      for name, r in rates.items()])
    lines += ["", f"Matmul rates (`torch.mm` 2048^2): float32 {f32 / 1e9:.0f} GFLOP/s, "
              f"bfloat16 {b16 / 1e9:.0f} GFLOP/s."]
    H.write_report(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
