#!/usr/bin/env python
"""Which part of a CGN limits the invariance experiment: its masks or its textures?

    python benchmarks/invariance_parts.py --model wildlife_mnist                 # all four rows, ~40 min
    python benchmarks/invariance_parts.py --model out/w/wildlife_mnist.pt --rows masks textures
    python benchmarks/invariance_parts.py --quick --out /tmp/inv.md              # a smoke run

Each row trains the paper's CNN (``pycgn.evaluate.fit_classifier``: 10 epochs, Adadelta) on
``--n`` images ``m * fg + (1 - m) * bg`` and scores it on ``--tests`` (the held-out digits with
random training textures, ``palette``, and with unseen colours or texture photos,
``off-palette``), as ``pycgn evaluate invariance`` does; the rows differ only in where the parts
come from:

- ``real``: real digit masks with real random textures (the training digits recomposed; the
  ceiling for 4,000 shapes);
- ``masks``: the CGN's masks (shape classes from the seeded sampler), real random textures;
- ``textures``: real digit masks, the CGN's textures of random classes;
- ``cgn``: everything from the CGN (what ``pycgn evaluate invariance`` measures, in float).
"""
from __future__ import annotations

import argparse
import json
import time

import _harness as H  # first: it makes this checkout's pycgn importable
import torch

import pycgn
from pycgn import evaluate
from pycgn.data import mnist

ROWS = ("real", "masks", "textures", "cgn")


def real_parts(variant: str, n: int, seed: int):
    """n real (mask, fg, bg, label): the training digits again and again with new random textures."""
    digits, labels = mnist.load_digits("train")
    parts, have, r = [], 0, 0
    while have < n:
        m, fg, bg = mnist.components(variant, digits, labels, False, 1000 + 100 * seed + r)
        parts.append((m, fg, bg, torch.from_numpy(labels)))
        have, r = have + len(labels), r + 1
    return [torch.cat(p)[:n] for p in zip(*parts)]


def cgn_parts(model, n: int, seed: int, chunk: int = 1000):
    gen = pycgn.Generator(model, backend="torch", device="cpu")
    sampler = gen.sampler(seed)
    parts = []
    for a in range(0, n, chunk):
        p = gen.parts(sampler.draw(range(a, min(n, a + chunk))))
        parts.append((p.mask, p.foreground, p.background, p.shape))
    return [torch.cat(p) for p in zip(*parts)]


def run(row: str, model, variant: str, n: int, epochs: int, tests: dict) -> dict:
    t0 = time.perf_counter()
    if row == "real":
        m, fg, bg, y = real_parts(variant, n, 0)
    elif row == "masks":
        m, _, _, y = cgn_parts(model, n, 0)
        _, fg, bg, _ = real_parts(variant, n, 1)
    elif row == "textures":
        m, _, _, y = real_parts(variant, n, 0)
        _, fg, bg, _ = cgn_parts(model, n, 1)
    else:
        m, fg, bg, y = cgn_parts(model, n, 0)
    x = m * fg + (1 - m) * bg
    clf = evaluate.fit_classifier(x, y, epochs=epochs, seed=0)
    return {"row": row, **{t: evaluate.accuracy(clf, d.images, d.labels) for t, d in tests.items()},
            "seconds": round(time.perf_counter() - t0)}


TITLES = {"real": "real masks, real random textures (`real`; no CGN involved)",
          "masks": "the CGN's masks, real random textures (`masks`)",
          "textures": "real masks, the CGN's textures (`textures`)",
          "cgn": "all from the CGN (`cgn`; = `pycgn evaluate invariance`)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="wildlife_mnist", help="shipped name or checkpoint path")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--tests", default="palette", help="comma-separated: palette, off-palette")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run (about a minute): --n 1000 --epochs 1, rows real and cgn")
    ap.add_argument("--out", default=None, help="also write the markdown table here ('-': stdout)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.epochs, args.rows = 1000, 1, ["real", "cgn"]
    torch.set_num_threads(args.threads)
    model = pycgn.load(args.model)
    variant = model.info.variant
    head = f"model {args.model} ({variant}, sha256 {model.info.sha256[:8]}...), n={args.n}, epochs={args.epochs}"
    print(f"{H.machine_line()}\n{head}")
    # built first: a missing texture photo fails now, not after a training
    tests = {t: evaluate.test_set(t, variant) for t in evaluate._tests(args.tests)}
    results = []
    for row in args.rows:
        results.append(run(row, model, variant, args.n, args.epochs, tests))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        lines = ["# Invariance: which part of the CGN limits it", "", H.machine_line(),
                 f"Command: {H.command()}; {head}.", ""]
        lines += H.table(["training images", *(f"{t} test" for t in tests), "seconds"],
                         [[TITLES[r["row"]], *(f"{100 * r[t]:.1f} %" for t in tests), r["seconds"]]
                          for r in results])
        H.write_report(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
