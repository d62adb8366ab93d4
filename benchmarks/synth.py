"""Dataset synthesis, whole process: the published algorithm vs ``pycgn synth``, side by side.

Each candidate runs in a fresh subprocess on the same weights; the time is from spawn to exit
(imports, model load, generation, writing) and the peak RSS is the child's ``ru_maxrss``.

- ``published``: the published generator (eager PyTorch, batch 100: a plain forward for the
  mask, then a full counterfactual forward per image, K=1; float images kept in memory, one
  ``torch.save`` at the end), written here from the paper's description. Run with glibc's
  allocator and, at its best, with tcmalloc preloaded (``apt-get install libtcmalloc-minimal4``).
- ``pycgn``: ``pycgn synth --format npz`` (default settings: float32, ``--backend auto``).
- ``pycgn synth --precision bfloat16``: bfloat16 generator nets (fast on AMX/AVX512-BF16 CPUs);
  ``--no-bf16`` leaves it out.
- ``pycgn synth --backend aoti`` and plain ``pycgn synth`` once the aoti packages are cached (``auto``
  then times them against the others): both on a cache of their own, filled first by a timed
  compile step (reported apart: once per machine, weights, precision and torch version);
  ``--no-aoti`` leaves them out.

    python benchmarks/synth.py --n 100000                    # the comparison (minutes)
    python benchmarks/synth.py --n 100000 --rounds 3 --fresh-cache --no-glibc --no-aoti
                                    # three runs in a row from an empty cache: median and first run
    python benchmarks/synth.py --n 1000000 --only pycgn      # peak RSS of a large run
    python benchmarks/synth.py --quick --out /tmp/s.md       # a smoke run, under a minute
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as H  # first: it makes this checkout's pycgn importable

PUBLISHED = H.PUBLISHED / "colored_mnist.pth"
# the published weights where ../shared has them; else pycgn's own (the algorithms are the same)
DEFAULT_MODEL = str(PUBLISHED) if PUBLISHED.is_file() else "colored_mnist"


# ---------------------------------------------------------------------------------------------
# Children

def published(model_path: str, n: int, out: str, batch: int = 100, k: int = 1) -> None:
    """The published dataset generator, step for step (two full CGN forwards per image)."""
    import torch
    import pycgn
    from pycgn import reference

    torch.manual_seed(0)
    cgn = pycgn.load(model_path).eval()
    latent, n_classes, size = cgn.latent_dim, cgn.n_classes, cgn.image_size

    def shuffle(tex):  # tile 2x2, crop 32x32 at a random offset per image == circular shift
        off = torch.randint(0, size + 1, (tex.shape[0], 2))
        return reference.crop(tex, off, size, size)

    def forward(ys, counterfactual=False):
        b = ys.shape[0]
        if counterfactual:
            y_shape, y_text, y_bg = ys, ys[torch.randperm(b)], ys[torch.randperm(b)]
            u_shape, u_text, u_bg = torch.randn(b, latent), torch.randn(b, latent), torch.randn(b, latent)
        else:
            y_shape = y_text = y_bg = ys
            u_shape = u_text = u_bg = torch.randn(b, latent)
        mask = cgn.f_shape(torch.cat([u_shape, cgn.label_emb(y_shape)], 1))
        fg = cgn.f_text1(torch.cat([u_text, cgn.label_emb(y_text)], 1))
        bg = cgn.f_text2(torch.cat([u_bg, cgn.label_emb(y_bg)], 1))
        return torch.clamp(mask, 1e-4, 0.9999), shuffle(fg), shuffle(bg)

    xs, ys_all = [], []
    with torch.no_grad():
        for _ in range(n // batch // k):
            ys = torch.randint(n_classes, (batch,))
            mask, _, _ = forward(ys)
            for _ in range(k):
                _, fg, bg = forward(ys, counterfactual=True)
                xs.append(mask * fg + (1 - mask) * bg)
                ys_all.append(ys)
    torch.save([torch.cat(xs), torch.cat(ys_all)], out)


def compile_aoti(model_path: str, stats: str) -> None:
    """Fill $PYCGN_CACHE_DIR with the model's ONNX export and aoti packages, timing each."""
    import pycgn
    from pycgn import runtime
    model = pycgn.load(model_path)
    t0 = time.perf_counter()
    runtime.cached_export(model, "onnx")
    t1 = time.perf_counter()
    runtime.cached_export(model, "aoti")
    Path(stats).write_text(json.dumps({"onnx_s": t1 - t0, "aoti_s": time.perf_counter() - t1}))


def pycgn_synth(model_path: str, n: int, out: str, stats: str, extra: list[str]) -> None:
    from pycgn import synth as S
    from pycgn.cli import main
    rc = main(["synth", "--model", model_path, "--n", str(n), "--out", out, "--format", "npz", "--quiet",
               *extra])
    Path(stats).write_text(json.dumps(S.LAST_RUN))
    sys.exit(rc)


# ---------------------------------------------------------------------------------------------
# Parent

def _spawn(argv: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, exit status) of a child process, spawn to exit."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    return dt, usage.ru_maxrss / 1024, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint path or shipped model name")
    ap.add_argument("--only", choices=("published", "pycgn"), default=None)
    ap.add_argument("--no-bf16", action="store_true", help="skip the --precision bfloat16 candidate")
    ap.add_argument("--no-aoti", action="store_true", help="skip the aoti candidates (and their compile)")
    ap.add_argument("--pycgn-args", default="", help="extra arguments for pycgn synth, e.g. '--batch-size 512'")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the candidates, interleaved")
    ap.add_argument("--fresh-cache", action="store_true",
                    help="plain pycgn candidates start from an empty cache (kept for later rounds), as issue "
                         "17's bar asks; otherwise they use the user's cache")
    ap.add_argument("--no-glibc", action="store_true",
                    help="leave out the published algorithm under glibc's malloc (not its best; ~2.5x slower)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="a smoke run (under a minute): --n 1000, no aoti")
    ap.add_argument("--out", default=None, help="also write the markdown report here")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n = 1000
        args.no_aoti = True  # its compile alone takes minutes
    if args.child:
        what, rest = args.child[0], args.child[1:]
        if what == "published":
            published(args.model, args.n, rest[0])
        elif what == "compile":
            compile_aoti(args.model, rest[0])
        else:
            pycgn_synth(args.model, args.n, rest[0], rest[1], args.pycgn_args.split())
        return 0
    from pycgn.checkpoint import resolve
    try:
        args.model = str(resolve(args.model))
    except (OSError, ValueError) as e:
        print(f"synth benchmark: --model: {e} (the published checkpoints live in ../shared)", file=sys.stderr)
        return 2
    me = [sys.executable, os.path.abspath(__file__), "--n", str(args.n), "--model", args.model]
    have_tc = H.tcmalloc_path() is not None
    if not have_tc:
        print(f"warning: {H.TCMALLOC} not found: glibc malloc only (apt-get install libtcmalloc-minimal4)",
              file=sys.stderr)
    candidates = []  # (name, what, allocator, extra pycgn synth arguments)
    if args.only in (None, "published"):
        if have_tc:
            candidates.append(("published, tcmalloc", "published", "tcmalloc", []))
        if not (args.no_glibc and have_tc):
            candidates.append(("published, glibc malloc", "published", "glibc", []))
    if args.only in (None, "pycgn"):
        candidates.append(("pycgn synth", "pycgn", "glibc", []))
        if have_tc and args.only is None:
            candidates.append(("pycgn synth, tcmalloc", "pycgn", "tcmalloc", []))
        if not args.no_bf16:
            candidates.append(("pycgn synth --precision bfloat16", "pycgn", "glibc", ["--precision", "bfloat16"]))
    work = Path(tempfile.mkdtemp(prefix="pycgn-bench-synth-"))
    caches = {}  # candidate -> its PYCGN_CACHE_DIR (others: the user's, as a user runs it)
    if args.fresh_cache:  # one cache for the plain candidates, empty before their first round
        caches.update({name: work / "fresh-cache" for name, what, *_ in candidates if what == "pycgn"})
    compiled = None
    if args.only in (None, "pycgn") and not args.no_aoti:
        caches.update({"pycgn synth --backend aoti": work / "aoti-cache", "pycgn synth, aoti cached": work / "aoti-cache"})
        dt, _, rc = _spawn([*me, "--child", "compile", str(work / "compile.json")],
                           H.allocator_env("glibc", PYCGN_CACHE_DIR=str(work / "aoti-cache")))
        if rc != 0:
            raise SystemExit(f"aoti compile: exit status {rc}")
        compiled = {**json.loads((work / "compile.json").read_text()), "process_s": dt}
        print(f"aoti compile: {compiled['aoti_s']:.1f} s (onnx export {compiled['onnx_s']:.1f} s, process "
              f"{dt:.1f} s)", flush=True)
        candidates.append(("pycgn synth --backend aoti", "pycgn", "glibc", ["--backend", "aoti"]))
        candidates.append(("pycgn synth, aoti cached", "pycgn", "glibc", []))
    results = {name: [] for name, *_ in candidates}
    turn = [0]

    def run(name, what, allocator, extra_args):
        r = turn[0] // len(candidates)
        turn[0] += 1
        out = work / f"{what}-{r}"
        stats = work / f"stats-{r}.json"
        child = [*me, "--child", what, str(out if what == "pycgn" else out.with_suffix(".pt"))]
        if what == "pycgn":
            child += [str(stats), "--pycgn-args=" + " ".join([*args.pycgn_args.split(), *extra_args])]
        cache = {"PYCGN_CACHE_DIR": str(caches[name])} if name in caches else {}
        dt, rss, rc = _spawn(child, H.allocator_env(allocator, **cache))
        if rc != 0:
            raise SystemExit(f"{name}: exit status {rc}")
        extra = json.loads(stats.read_text()) if what == "pycgn" else {}
        results[name].append({"seconds": dt, "img_per_s": args.n / dt, "peak_rss_mib": rss, **extra})
        print(f"round {r}: {name:26s} {dt:8.1f} s  {args.n / dt:8.0f} img/s  peak RSS {rss:7.0f} MiB"
              + (f"  (generator waited on the writer {extra.get('generator_waited_s', 0):.2f} s, "
                 f"writer busy {extra.get('writer_busy_s', 0):.1f} s, backend {extra.get('backend')})"
                 if extra else ""), flush=True)
        for p in work.glob(f"{what}-{r}*"):
            p.unlink() if p.is_file() else shutil.rmtree(p, ignore_errors=True)

    try:  # whole processes, each its own warm-up: the spawn-to-exit time is the figure
        H.interleave({c[0]: (lambda c=c: run(*c)) for c in candidates}, min_rounds=args.rounds,
                     max_rounds=args.rounds, warmup=0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {name: max(v, key=lambda x: x["img_per_s"]) for name, v in results.items()}
    ref = best.get("published, tcmalloc") or best.get("published, glibc malloc")
    lines = [f"{H.machine_line()} n = {args.n:,}, K = 1; best of {args.rounds} round(s); model {args.model}; "
             f"command: {H.command()}.", ""]
    lines += H.table(["candidate", "img/s", "seconds", "peak RSS (MiB)", "/ published at its best"],
                     [[name, f"{b['img_per_s']:.0f}", f"{b['seconds']:.1f}", f"{b['peak_rss_mib']:.0f}",
                       H.ratio(b["img_per_s"] / ref["img_per_s"]) if ref else "-"] for name, b in best.items()])
    if args.rounds > 1 and ref:  # issue 17's bar: the median run, and the first one (from an empty cache)
        lines += ["", "Every round against the published algorithm's best round:", ""]
        lines += H.table(["candidate", "rounds (img/s)", "median / published", "first / published"],
                         [[name, " / ".join(f"{x['img_per_s']:.0f}" for x in v),
                           H.ratio(statistics.median(x["img_per_s"] for x in v) / ref["img_per_s"]),
                           H.ratio(v[0]["img_per_s"] / ref["img_per_s"])] for name, v in results.items()])
    if compiled:
        lines += ["", f"aoti packages compiled once before the runs (not in any figure above): "
                      f"{compiled['aoti_s']:.1f} s (whole process {compiled['process_s']:.1f} s)."]
    print()
    if args.out:
        H.write_report(args.out, "# Dataset synthesis: published algorithm vs `pycgn synth` (whole process)\n\n"
                       + "\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": H.machine_line(), "n": args.n, "results": results,
                                               "aoti_compile": compiled}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
