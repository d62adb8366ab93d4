#!/usr/bin/env python
"""img/s of the full-size ImageNet CGN (3 x BigGAN-deep-256 + U^2-Net, random weights) per backend.

    python benchmarks/imagenet.py                                   # -> benchmarks/results/imagenet.md
    python benchmarks/imagenet.py --batches 1,8 --backends eager --out /tmp/i.md

One sample = the shape net (pre-mask) + U^2-Net (mask) + texture net + background net +
compositing to uint8 NHWC 256x256 (``pycgn.composite`` when the extension is built). Backends:
``eager`` (``torch.inference_mode``) and ``onnxruntime`` (the three ``export_imagenet`` ONNX files,
CPU execution provider, as many intra-op threads as torch uses). For each batch size the
backends take turns (interleaved, so a shared machine's load hits both alike); after one
warm-up call per backend, each gets ``--rounds`` timed calls and its best is kept (other
processes can only slow a call down). Also reported: the useful FLOPs per image (counted with
``torch.utils.flop_counter`` on the meta device) and the achieved FLOP rate as a fraction of this
machine's best float32 matmul rate (``torch.mm`` 2048^2, measured in the same process).

The allocator is the process's: run under ``LD_PRELOAD=.../libtcmalloc_minimal.so.4`` for the
baselines at their best (glibc's malloc page-faults eager PyTorch's large temporaries).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pycgn import reference  # noqa: E402
from pycgn._io import atomic_write_bytes  # noqa: E402
from pycgn.models import imagenet as inet  # noqa: E402


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_limit(device: torch.device = torch.device("cpu")) -> float:
    """Best float32 GFLOP/s of torch.mm (2048^2 on CPU, 8192^2 on a GPU) over a few tries."""
    k = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(k, k, device=device), torch.randn(k, k, device=device)
    best = 0.0
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = max(best, 2 * k ** 3 / (time.perf_counter() - t) / 1e9)
    return best


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


class Eager:
    name = "eager"

    def __init__(self, model):
        self.model = model

    def __call__(self, d):
        with torch.inference_mode():
            return self.model(d.u_shape, d.shape, d.u_texture, d.texture, d.u_bg, d.bg)


class Ort:
    name = "onnxruntime"

    def __init__(self, export_dir: Path, threads: int):
        import json
        import onnxruntime as ort
        side = json.loads((export_dir / "pycgn_export.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sessions = {m: ort.InferenceSession(str(export_dir / side["files"][m]), opts,
                                                 providers=["CPUExecutionProvider"])
                         for m in inet.MECHANISMS}

    def __call__(self, d):
        out = []
        for m, u, y in (("shape", d.u_shape, d.shape), ("texture", d.u_texture, d.texture),
                        ("background", d.u_bg, d.bg)):
            out.append(torch.from_numpy(self.sessions[m].run(None, {"u": u.numpy(), "y": y.numpy()})[0]))
        return tuple(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--backends", default="eager,onnxruntime")
    ap.add_argument("--rounds", type=int, default=1, help="timed calls per backend and batch (best kept)")
    ap.add_argument("--truncation", type=float, default=0.5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: eager on the GPU (timed with synchronisation); onnxruntime stays on the CPU")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "imagenet.md"))
    args = ap.parse_args()
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    backends = args.backends.split(",")
    threads = torch.get_num_threads()
    alloc = "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc malloc"
    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    limit = matmul_limit(device)
    flops = flops_per_image()
    print(f"{cpu_name()}, {threads} threads, {alloc}; mm limit {limit:.1f} GFLOP/s; "
          f"{flops / 1e9:.1f} GFLOP per image", flush=True)

    torch.manual_seed(0)
    t = time.perf_counter()
    model = inet.ImagenetCGN(gt=False, truncation=args.truncation).to(device)
    print(f"model built in {time.perf_counter() - t:.0f} s", flush=True)
    runners, notes = {}, []
    if "eager" in backends:
        runners["eager"] = Eager(model)
    tmp = None
    if "onnxruntime" in backends and device.type == "cpu":
        tmp = tempfile.TemporaryDirectory(prefix="pycgn-imagenet-bench-")
        t = time.perf_counter()
        inet.export_imagenet(model, tmp.name, "onnx", truncation=args.truncation)
        notes.append(f"ONNX export of the three mechanisms (dynamo, opset 20): {time.perf_counter() - t:.0f} s")
        print(notes[-1], flush=True)
        runners["onnxruntime"] = Ort(Path(tmp.name), threads)
    composite, comp_name = composite_fn()

    warm = inet.imagenet_draw(1, range(1), truncation=args.truncation).to(device)
    for r in runners.values():
        r(warm)
    rows = []
    for n in batches:
        d = inet.imagenet_draw(0, range(n), truncation=args.truncation, shared_noise=False).to(device)
        best = {k: float("inf") for k in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():  # interleaved
                sync(device)
                t = time.perf_counter()
                mask, fg, bg = run(d)
                composite(mask, fg, bg, d.fg_offset, d.bg_offset, out_dtype="uint8", layout="NHWC")
                sync(device)
                best[name] = min(best[name], time.perf_counter() - t)
        for name, s in best.items():
            rows.append((name, n, s))
            print(f"{name:12s} batch {n}: {s:.2f} s, {n / s:.3f} img/s", flush=True)

    base = {n: s for name, n, s in rows if name == "eager"}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else alloc
    lines = [f"### ImageNet CGN, full size (256x256), {where}", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads; "
             f"started {started}; load average {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end "
             "(the machine is shared: figures are lower bounds).", "",
             f"One image = BigGAN-deep-256 x 3 + U^2-Net 256x256 + {comp_name} to uint8 NHWC: "
             f"{flops / 1e9:.1f} GFLOP (useful, counted). Machine limit: {limit:.1f} GFLOP/s "
             f"(best float32 torch.mm 2048^2, same process). Best of {args.rounds} timed call(s) "
             "after one warm-up per backend; random weights, truncation "
             f"{args.truncation}.", "",
             "| backend | batch | s / batch | img/s | vs eager | GFLOP/s | of mm limit |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, n, s in rows:
        rate = flops * n / s / 1e9
        ratio = f"{base[n] / s:.2f}x" if n in base else "-"
        lines.append(f"| {name} | {n} | {s:.2f} | {n / s:.3f} | {ratio} | {rate:.1f} | {rate / limit:.0%} |")
    lines += [""] + [f"- {x}" for x in notes] + [""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prev = out.read_text() if out.exists() and os.environ.get("PYCGN_BENCH_APPEND") else ""
    atomic_write_bytes(out, (prev + "\n".join(lines) + "\n").encode())
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
