#!/usr/bin/env python
"""img/s of the three CGN generators for every pycgn backend, side by side, under three allocators.

    python benchmarks/generators.py                       # writes benchmarks/results/generators.md
    python benchmarks/generators.py --batches 1,256 --rounds 3 --no-compile
    python benchmarks/generators.py --quick --out /tmp/g.md   # a smoke run

One run starts three worker processes (malloc is per process):

1. glibc malloc, ``PYCGN_MALLOC=default``: what plain eager PyTorch gets (the page-fault trap);
2. glibc malloc with pycgn's setting (``mallopt``, applied when pycgn makes a torch runner): the
   product as users get it;
3. tcmalloc preloaded (``LD_PRELOAD``): the baselines at their best.

In each worker, for each batch size, every candidate runs once to warm up (``torch.compile``
compiles, ``auto`` measures), then ``--rounds`` rounds in which the candidates take turns, each
for ``--seconds``. A candidate's figure is its best round: other processes on a shared machine
only ever slow a round down. Minor page faults per call (``ru_minflt``) are counted over all
timed calls. "eager" is ``model(...)`` under ``torch.inference_mode()``, the baseline of the ratios.
The machine's limit is the best float32 matmul rate (``torch.mm`` 2048^2), against which the
generators' useful FLOP rate is given as a fraction.

``aoti`` (float32) and ``aoti-bf16`` are the AOTInductor packages: the first worker compiles them
into the run's cache (the time is reported apart, with the load time of the later workers), so
``auto`` in every worker sees them cached and may pick ``aoti``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import _harness as H  # first: it makes this checkout's pycgn importable

CONFIGS = {  # key: (title, allocator, environment changes)
    "glibc": ("glibc malloc, PYCGN_MALLOC=default (plain PyTorch)", "glibc", {"PYCGN_MALLOC": "default"}),
    "glibc+pycgn": ("glibc malloc with pycgn's mallopt setting (the default)", "glibc", {}),
    "tcmalloc": ("tcmalloc preloaded", "tcmalloc", {}),
}
PUBLISHED = H.PUBLISHED / "colored_mnist.pth"
BF16 = ("torch-bf16", "aoti-bf16")  # their fraction is of the bfloat16 matmul rate; not float32's images


def _model():
    import torch
    import pycgn
    if PUBLISHED.is_file():
        return pycgn.load(PUBLISHED), f"published {PUBLISHED.name}"
    torch.manual_seed(0)  # speed does not depend on the weights
    return pycgn.MnistCGN().eval(), "random weights"


def worker(args) -> dict:
    import torch
    from pycgn import runtime
    model, source = _model()
    cands = {"eager": None}
    backends = ["torch", "torch-bf16", "torchscript", "onnxruntime", "auto"]
    if args.compile and "torch.compile" in runtime.available_backends():
        backends.insert(1, "torch.compile")
    aoti = {}  # candidate -> (seconds to make the runner, whether the packages were cached)
    for b in backends:
        if b == "auto" and args.aoti and "aoti" in runtime.available_backends():
            for name, precision in (("aoti", "float32"), ("aoti-bf16", "bfloat16")):
                cached, t0 = runtime.aoti_cached(model, precision), time.perf_counter()
                cands[name] = runtime.make_runner(model, backend="aoti", device="cpu", precision=precision)
                aoti[name] = (time.perf_counter() - t0, cached)
        if b == "torch-bf16":  # the row's old name: backend torch with precision bfloat16
            cands[b] = runtime.make_runner(model, backend="torch", device="cpu", precision="bfloat16")
        elif b in runtime.available_backends():
            cands[b] = runtime.make_runner(model, backend=b, device="cpu")

    def call(name, a):
        if name == "eager":
            with torch.inference_mode():
                return model(*a)
        return cands[name](*a)

    res = {"source": source, "malloc_tuned": runtime.tune_malloc() if "torch" in cands else False,
           "threads": torch.get_num_threads(), "flops_per_image": H.mnist_flops_per_image(model),
           "matmul_flops": H.matmul_rate(), "aoti": aoti, "rows": {}}
    if "torch-bf16" in cands:  # its fraction is of the bfloat16 rate (AMX makes that ~6x float32's)
        res["matmul_flops_bf16"] = H.matmul_rate(torch.bfloat16)
    for n in args.batches:
        a = H.mnist_inputs(model, n)
        # many short rounds: the best of more rounds is closer to the unloaded speed; capped by
        # --budget seconds per batch size so that slow eager batches of 1024 stay bearable.
        # Warm-up: compile, auto's measurement, first touch of buffers.
        times = H.interleave({c: (lambda c=c: call(c, a)) for c in cands}, min_rounds=3, max_rounds=max(3, args.rounds),
                             budget=args.budget, turn_seconds=args.seconds)
        row = {c: {"img_s": n / t.best, "faults": t.faults_per_call, "rounds": t.rounds} for c, t in times.items()}
        if "auto" in cands:
            row["auto"]["picked"] = cands["auto"].backend_for(n) or cands["auto"].name
        res["rows"][str(n)] = row
        print(f"  batch {n}: " + ", ".join(f"{c} {row[c]['img_s']:.0f}" for c in cands), file=sys.stderr,
              flush=True)
    return res


def markdown(results: dict, args) -> str:
    import onnxruntime
    any_res = next(iter(results.values()))
    lines = [
        "# Generators: img/s of the three CGN mechanisms per backend",
        "",
        f"{H.machine_line()} Workers: {any_res['threads']} torch threads; onnxruntime {onnxruntime.__version__}. "
        f"Weights: {any_res['source']}. Command: {H.command()}.",
        "",
        "Each figure: images per second through shape + texture + background (one batch of N each), best "
        f"of 3 to {args.rounds} interleaved rounds (column 'rounds') of at least {args.seconds} s or one call "
        "(the machine is shared with other jobs: a busy round is only ever slower, so the best round is "
        "closest to the unloaded speed). x: ratio to eager in the same table. f: minor page faults per call. "
        f"Useful work: {any_res['flops_per_image'] / 1e6:.1f} MFLOP per image, counted on the published nets "
        "(the backends run the folded ones, ~2.9x fewer operations: fractions above 100% are that folding); "
        "the fraction (%) is of the "
        f"machine's measured float32 matmul rate ({any_res['matmul_flops'] / 1e9:.0f} GFLOP/s, "
        "torch.mm 2048^2)" + (f", for torch-bf16 of the bfloat16 one ({any_res['matmul_flops_bf16'] / 1e9:.0f} "
                               "GFLOP/s)" if "matmul_flops_bf16" in any_res else "") + ". auto / best: auto "
        "against the best float32 candidate (auto never picks torch-bf16, whose images are not float32's).",
        "",
    ]
    for key, res in results.items():
        lines += [f"## {CONFIGS[key][0]} (allocator in use: {res['allocator']})", ""]
        for c, (secs, cached) in res.get("aoti", {}).items():
            lines.append(f"- {c}: packages {'loaded from the cache' if cached else 'compiled'} in {secs:.2f} s")
        if res.get("aoti"):
            lines.append("")
        rows = res["rows"]
        cands = list(next(iter(rows.values())))
        body = []
        for n, row in rows.items():
            eager = row["eager"]["img_s"]
            cells = []
            for c in cands:
                v = row[c]["img_s"]
                limit = res["matmul_flops_bf16"] if c in BF16 else res["matmul_flops"]
                frac = v * res["flops_per_image"] / limit
                cells.append(f"{v:,.0f} ({H.ratio(v / eager)}, {row[c]['faults']:,.0f} f, {H.share(frac)})")
            if "auto" in row:
                bestv = max(row[c]["img_s"] for c in cands if c != "auto" and c not in BF16)
                tail = [row["auto"].get("picked", ""), f"{row['auto']['img_s'] / bestv:.2f}"]
            else:
                tail = ["", ""]
            body.append([n, row["eager"]["rounds"], *cells, *tail])
        lines += H.table(["batch", "rounds", *cands, "auto picked", "auto / best float32"], body,
                         "rr" + "r" * len(cands) + "lr")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,16,64,256,1024")
    p.add_argument("--rounds", type=int, default=12, help="most rounds per batch size")
    p.add_argument("--seconds", type=float, default=0.15, help="least time of one candidate in a round")
    p.add_argument("--budget", type=float, default=40.0, help="seconds of timed rounds per batch size")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out")
    p.add_argument("--no-aoti", dest="aoti", action="store_false",
                   help="leave the aoti rows out (their first compile takes minutes)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run (under a minute): batches 1,16, 3 short rounds, no torch.compile")
    p.add_argument("--out", default=str(H.ROOT / "benchmarks" / "results" / "generators.md"))
    H.add_child_option(p)
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.rounds, args.seconds, args.budget, args.compile = "1,16", 3, 0.05, 1.0, False
        args.aoti = False
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.child_json:
        return H.child_result(args.child_json, worker(args))
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        p.error(f"--configs: unknown {','.join(sorted(unknown))}; expected a subset of {','.join(CONFIGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.environ.get("PYCGN_BENCH_CACHE") or os.path.join(tmp, "cache")  # exports shared by workers
        variants = {key: (CONFIGS[key][1], {"PYCGN_MALLOC": None, **CONFIGS[key][2], "PYCGN_CACHE_DIR": cache})
                    for key in args.configs.split(",")}
        argv = ["--batches", ",".join(map(str, args.batches)), "--rounds", str(args.rounds),
                "--seconds", str(args.seconds), "--budget", str(args.budget)]
        argv += ([] if args.compile else ["--no-compile"]) + ([] if args.aoti else ["--no-aoti"])
        results = H.rerun(__file__, argv, variants)
    H.write_report(args.out, markdown(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
