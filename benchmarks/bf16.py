#!/usr/bin/env python
"""The ``torch-bf16`` backend against float32: how far its images are, and how much faster it is.

    python benchmarks/bf16.py                    # writes benchmarks/results/bf16.md
    python benchmarks/bf16.py --n 2000 --out -   # quicker, to stdout

Fidelity: for each shipped model, ``--n`` images from the seeded sampler made with ``torch``
(float32, eager) and with ``torch-bf16``; the table gives the absolute difference of the uint8
values (mean, 99.9th percentile, max) and the share of values that differ at all.
Speed: the three generator nets at batch ``--batch`` for ``onnxruntime`` and ``torch`` (float32)
and ``torch-bf16``, taking turns, best of ``--rounds``; beside them the machine's best float32 and
bfloat16 matmul rates (``torch.mm`` 2048^2), the limits the nets' FLOP rate is a fraction of.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import pycgn
from generators import flops_per_image, matmul_limit  # benchmarks/ is on sys.path
from pycgn import runtime

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("colored_mnist", "double_colored_mnist", "wildlife_mnist")
CANDIDATES = ("onnxruntime", "torch", "torch-bf16")


def fidelity(model: str, n: int, chunk: int = 1000) -> dict:
    ref, low = pycgn.Generator(model, backend="torch"), pycgn.Generator(model, backend="torch-bf16")
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
    g = torch.Generator().manual_seed(0)
    args = []
    for _ in range(3):
        args += [torch.randn(batch, model.latent_dim, generator=g), torch.randint(0, 10, (batch,), generator=g)]
    runners = {name: runtime.make_runner(model, name) for name in CANDIDATES
               if name in runtime.available_backends()}
    best = {name: float("inf") for name in runners}
    with torch.inference_mode():
        for r in runners.values():
            r(*args)
        for _ in range(rounds):
            for name, r in runners.items():
                t = time.perf_counter()
                for _ in range(3):
                    r(*args)
                best[name] = min(best[name], (time.perf_counter() - t) / 3)
    return {name: batch / t for name, t in best.items()}, flops_per_image(model)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="images per model for the fidelity table")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bf16.md"), help="'-' for stdout")
    args = p.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "").split()
    lines = [f"# `torch-bf16` against float32 ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Machine: `{cpu}`, {torch.get_num_threads()} torch threads, AMX-BF16: "
             f"{'amx_bf16' in flags}, AVX512-BF16: {'avx512_bf16' in flags}; torch {torch.__version__}.",
             f"Command: `python benchmarks/bf16.py --n {args.n} --batch {args.batch} --rounds {args.rounds}`", "",
             f"## Fidelity: uint8 images, `torch-bf16` vs `torch` (float32), {args.n:,} images per model", "",
             "| model | mean abs. diff (levels) | 99.9th pct | max | values that differ |", "|---|---:|---:|---:|---:|"]
    for m in MODELS:
        f = fidelity(m, args.n)
        lines.append(f"| {m} | {f['mean']:.3f} | {f['p999']:.0f} | {f['max']} | {100 * f['differ']:.1f} % |")
        print(lines[-1], flush=True)
    rates, flops = speed(args.batch, args.rounds)
    f32, b16 = matmul_limit(torch.float32), matmul_limit(torch.bfloat16)
    lines += ["", f"## Speed: the three nets, batch {args.batch}, best of {args.rounds} rounds "
              f"({flops / 1e6:.0f} MFLOP per image)", "",
              "| backend | img/s | vs onnxruntime | GFLOP/s | share of the matmul rate of its dtype |",
              "|---|---:|---:|---:|---:|"]
    base = rates.get("onnxruntime") or rates["torch"]
    for name, r in rates.items():
        peak = b16 if name == "torch-bf16" else f32
        lines.append(f"| {name} | {r:.0f} | {r / base:.2f}x | {r * flops / 1e9:.0f} | {100 * r * flops / peak:.0f} % |")
    lines += ["", f"Matmul rates (`torch.mm` 2048^2): float32 {f32 / 1e9:.0f} GFLOP/s, "
              f"bfloat16 {b16 / 1e9:.0f} GFLOP/s."]
    text = "\n".join(lines) + "\n"
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
