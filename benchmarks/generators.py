#!/usr/bin/env python
"""img/s of the three CGN generators for every pycgn backend, side by side, under three allocators.

    python benchmarks/generators.py                       # writes benchmarks/results/generators.md
    python benchmarks/generators.py --batches 1,256 --rounds 3 --no-compile

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
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
CONFIGS = {
    "glibc": ("glibc malloc, PYCGN_MALLOC=default (plain PyTorch)", {"PYCGN_MALLOC": "default"}),
    "glibc+pycgn": ("glibc malloc with pycgn's mallopt setting (the default)", {}),
    "tcmalloc": ("tcmalloc preloaded", {"LD_PRELOAD": TCMALLOC}),
}
PUBLISHED = ROOT.parent / "shared" / "reference" / "cgn_mnist_official" / "colored_mnist.pth"


def _model():
    import torch
    import pycgn
    if PUBLISHED.is_file():
        return pycgn.load(PUBLISHED), f"published {PUBLISHED.name}"
    torch.manual_seed(0)  # speed does not depend on the weights
    return pycgn.MnistCGN().eval(), "random weights"


def flops_per_image(model) -> float:
    """Multiply-adds x 2 of the convolutions and linear layers of the three nets, batch 1."""
    import torch
    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.weight[0].numel()  # in/groups * kh * kw
            total[0] += 2.0 * k * out.numel()
        elif isinstance(mod, torch.nn.Linear):
            total[0] += 2.0 * mod.in_features * out.numel()

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    u, y = torch.randn(1, model.latent_dim), torch.zeros(1, dtype=torch.int64)
    with torch.inference_mode():
        model(u, y, u, y, u, y)
    for h in hs:
        h.remove()
    return total[0]


def matmul_limit(dtype=None, seconds=1.0) -> float:
    """Best FLOP/s of ``torch.mm`` 2048^2 in ``dtype`` (default float32): the machine's limit."""
    import torch
    a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds / 5:
            torch.mm(a, b)
            n += 1
        best = max(best, n * 2 * 2048**3 / (time.perf_counter() - t0))
    return best


def worker(args) -> dict:
    import torch
    from pycgn import runtime
    model, source = _model()
    cands = {"eager": None}
    backends = ["torch", "torch-bf16", "torchscript", "onnxruntime", "auto"]
    if args.compile and "torch.compile" in runtime.available_backends():
        backends.insert(1, "torch.compile")
    for b in backends:
        if b in runtime.available_backends():
            cands[b] = runtime.make_runner(model, backend=b, device="cpu")

    def call(name, a):
        if name == "eager":
            with torch.inference_mode():
                return model(*a)
        return cands[name](*a)

    res = {"source": source, "malloc_tuned": runtime.tune_malloc() if "torch" in cands else False,
           "threads": torch.get_num_threads(), "flops_per_image": flops_per_image(model),
           "matmul_flops": matmul_limit(), "rows": {}}
    if "torch-bf16" in cands:  # its fraction is of the bfloat16 rate (AMX makes that ~6x float32's)
        res["matmul_flops_bf16"] = matmul_limit(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    for n in args.batches:
        a = (torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g),
             torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g),
             torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
        best = {c: 0.0 for c in cands}
        faults = {c: [0, 0] for c in cands}
        for c in cands:
            call(c, a)  # warm-up: compile, auto's measurement, first-touch of buffers
        took = 0.0
        for c in cands:
            t0 = time.perf_counter()
            call(c, a)
            took += max(args.seconds, time.perf_counter() - t0)
        # many short rounds: the best of more rounds is closer to the unloaded speed; capped
        # by --budget seconds per batch size so that slow eager batches of 1024 stay bearable
        rounds = max(3, min(args.rounds, int(args.budget / took)))
        for _ in range(rounds):
            for c in cands:
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0, k = time.perf_counter(), 0
                while True:
                    call(c, a)
                    k += 1
                    dt = time.perf_counter() - t0
                    if dt >= args.seconds:
                        break
                faults[c][0] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
                faults[c][1] += k
                best[c] = max(best[c], n * k / dt)
        row = {c: {"img_s": best[c], "faults": faults[c][0] / faults[c][1], "rounds": rounds} for c in cands}
        if "auto" in cands:
            row["auto"]["picked"] = cands["auto"].backend_for(n) or cands["auto"].name
        res["rows"][str(n)] = row
        print(f"  batch {n}: " + ", ".join(f"{c} {row[c]['img_s']:.0f}" for c in cands), file=sys.stderr,
              flush=True)
    return res


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def markdown(results: dict, args) -> str:
    import torch
    import onnxruntime
    any_res = next(iter(results.values()))
    lines = [
        "# Generators: img/s of the three CGN mechanisms per backend",
        "",
        f"Machine: {_cpu()}, {os.cpu_count()} cores, {any_res['threads']} torch threads; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}. Weights: {any_res['source']}. Command: "
        f"`python benchmarks/generators.py {' '.join(sys.argv[1:])}`.",
        "",
        "Each figure: images per second through shape + texture + background (one batch of N each), best "
        f"of 3 to {args.rounds} interleaved rounds (column 'rounds') of at least {args.seconds} s or one call "
        "(the machine is shared with other jobs: a busy round is only ever slower, so the best round is "
        "closest to the unloaded speed). x: ratio to eager in the same table. f: minor page faults per call. "
        f"Useful work: {any_res['flops_per_image'] / 1e6:.1f} MFLOP per image; the fraction (%) is of the "
        f"machine's measured float32 matmul rate ({any_res['matmul_flops'] / 1e9:.0f} GFLOP/s, "
        "torch.mm 2048^2)" + (f", for torch-bf16 of the bfloat16 one ({any_res['matmul_flops_bf16'] / 1e9:.0f} "
                               "GFLOP/s)" if "matmul_flops_bf16" in any_res else "") + ". auto / best: auto "
        "against the best float32 candidate (auto never picks torch-bf16, whose images are not float32's).",
        "",
    ]
    for key, res in results.items():
        title = CONFIGS[key][0]
        lines += [f"## {title}", ""]
        rows = res["rows"]
        cands = list(next(iter(rows.values())))
        lines.append("| batch | rounds | " + " | ".join(cands) + " | auto picked | auto / best float32 |")
        lines.append("|---:|---:|" + "---:|" * len(cands) + "---|---:|")
        for n, row in rows.items():
            eager = row["eager"]["img_s"]
            cells = []
            for c in cands:
                v = row[c]["img_s"]
                limit = res["matmul_flops_bf16"] if c == "torch-bf16" else res["matmul_flops"]
                frac = v * res["flops_per_image"] / limit
                cells.append(f"{v:,.0f} ({v / eager:.2f}x, {row[c]['faults']:,.0f} f, {100 * frac:.0f}%)")
            if "auto" in row:
                bestv = max(row[c]["img_s"] for c in cands if c not in ("auto", "torch-bf16"))
                tail = f" | {row['auto'].get('picked', '')} | {row['auto']['img_s'] / bestv:.2f} |"
            else:
                tail = " | | |"
            lines.append(f"| {n} | {row['eager']['rounds']} | " + " | ".join(cells) + tail)
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,16,64,256,1024")
    p.add_argument("--rounds", type=int, default=12, help="most rounds per batch size")
    p.add_argument("--seconds", type=float, default=0.15, help="least time of one candidate in a round")
    p.add_argument("--budget", type=float, default=40.0, help="seconds of timed rounds per batch size")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generators.md"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        Path(args.json).write_text(json.dumps(worker(args)))
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.environ.get("PYCGN_BENCH_CACHE") or os.path.join(tmp, "cache")  # exports shared by workers
        for key in args.configs.split(","):
            title, env = CONFIGS[key]
            if "LD_PRELOAD" in env and not os.path.exists(env["LD_PRELOAD"]):
                print(f"skipping {key}: {env['LD_PRELOAD']} is missing (apt-get install libtcmalloc-minimal4)",
                      file=sys.stderr)
                continue
            print(f"{title}:", file=sys.stderr, flush=True)
            out = os.path.join(tmp, f"{key}.json")
            full = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYCGN_MALLOC")}
            full.update(env, PYCGN_CACHE_DIR=cache)
            cmd = [sys.executable, __file__, "--worker", key, "--json", out, "--batches",
                   ",".join(map(str, args.batches)), "--rounds", str(args.rounds), "--seconds", str(args.seconds),
                   "--budget", str(args.budget)]
            if not args.compile:
                cmd.append("--no-compile")
            subprocess.run(cmd, env=full, check=True)
            results[key] = json.loads(Path(out).read_text())
    text = markdown(results, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from pycgn._io import atomic_write_bytes
    atomic_write_bytes(args.out, text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
