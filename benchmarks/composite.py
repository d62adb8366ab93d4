"""Compositing, side by side: the published eager expression, the same under torch.compile,
numpy, and pycgn.composite (the fused kernel), for 1024x3x32x32 and 64x3x256x256, float32
NCHW and uint8 NHWC outputs, each with the published texture shuffle and as the plain blend
(no offsets). The report's machine line names the CPU model.

Reported per candidate: median ms per call (calls interleaved across candidates, so a
shared machine's load hits all alike), effective GB/s of the minimal bytes (each input read
once, the output written once), that as a fraction of this machine's copy bandwidth
(torch copy_ of 256 MiB, read + write, measured in the same process), and minor page
faults per call (resource.getrusage).

The baselines run at their best too: the script runs itself twice, with glibc's allocator
and with tcmalloc preloaded (Debian: libtcmalloc-minimal4), and writes one markdown report.

    python benchmarks/composite.py                        # -> benchmarks/results/composite.md
    python benchmarks/composite.py --quick --out /tmp/c.md   # a smoke run: 3 rounds, N / 8
    python benchmarks/composite.py --cpu-variants         # + the CPU kernel's two variants side by side

``--cpu-variants`` adds two children (tcmalloc, pycgn and the copy only) with PYCGN_CPU_PREFETCH=0
(contiguous rows joined into one run) and =1 (row by row, software prefetch): the kernel picks one
by CPU vendor, and this is how a machine shows which of the two suits it.
"""
from __future__ import annotations

import argparse
import sys

import _harness as H  # first: it makes this checkout's pycgn importable
import numpy as np
import torch

LO, HI = 1e-4, 0.9999
CASES = [(1024, 32), (64, 256)]  # (N, H=W)
QUICK_CASES = [(128, 32), (8, 256)]  # --quick: a smoke run, the same shapes but N / 8
OUTS = [("float32", "NCHW"), ("uint8", "NHWC")]
SAME_BYTES = "copy (same bytes)"  # the yardstick row, timed beside the candidates (CPU and CUDA)
# The published texture shuffle (random circular crops), and the plain blend (no offsets), where
# every candidate is bound by memory and the kernel's bar is the same-bytes copy.
BLENDS = ("shuffle", "plain")


# ---- the candidates: (mask, fg, bg, fo, bo) -> image, same semantics as pycgn.reference ----

def eager(mask, fg, bg, fo, bo, uint8: bool):
    """The published expression: clamp, repeat the mask to 3 channels, tile each texture
    2x2 and crop it at its offset, blend, then map to uint8 and reorder to HWC."""
    n, _, h, w = mask.shape
    m = mask.clamp(LO, HI).repeat(1, 3, 1, 1)
    b = torch.arange(n, device=mask.device)[:, None, None]

    def shuffle(t, o):
        if o is None:  # the plain blend
            return t
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
        if o is None:  # the plain blend
            return t.transpose(0, 2, 3, 1)
        ys = (o[:, :1] + np.arange(h)) % t.shape[2]
        xs = (o[:, 1:] + np.arange(w)) % t.shape[3]
        return t[b, :, ys[:, :, None], xs[:, None, :]]

    mh = m.transpose(0, 2, 3, 1)  # (N, H, W, 1)
    x = mh * shuffle(fg, fo) + (1 - mh) * shuffle(bg, bo)
    if uint8:
        return np.rint(np.clip((x + 1) * 127.5, 0, 255)).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def check(cands, ref, u8: bool, skip=(), reset=None):
    """Every candidate's image against pycgn.reference: a benchmark of a wrong answer is no benchmark.
    ``reset()``, if given, runs before each candidate (so each reads the inputs ``ref`` was made of)."""
    for name, fn in cands.items():
        if name in skip:
            continue
        if reset is not None:
            reset()
        got = fn()
        got = torch.from_numpy(got) if isinstance(got, np.ndarray) else got
        err = (got.float() - ref.float()).abs().max().item()
        assert err <= (1 if u8 else 1e-5), f"{name} differs from the reference by {err}"


def run(args):
    import pycgn
    from pycgn.ops import composite

    torch.manual_seed(0)
    compiled = torch.compile(eager, dynamic=False)
    rows = []
    bw_before = H.copy_bandwidth(rounds=args.copy_rounds)
    for n, s in args.cases:
        mask = torch.rand(n, 1, s, s) * 1.2 - 0.1
        fg, bg = torch.rand(n, 3, s, s) * 2 - 1, torch.rand(n, 3, s, s) * 2 - 1
        offsets = torch.randint(0, s + 1, (n, 2)), torch.randint(0, s + 1, (n, 2))
        for (out_dtype, layout), blend in ((o, b) for o in OUTS for b in BLENDS):
            fo, bo = offsets if blend == "shuffle" else (None, None)
            npargs = tuple(None if t is None else t.numpy() for t in (mask, fg, bg, fo, bo))
            u8 = out_dtype == "uint8"
            out = torch.empty((n, s, s, 3) if u8 else (n, 3, s, s), dtype=torch.uint8 if u8 else torch.float32)
            nbytes = n * s * s * (4 + 2 * 3 * 4 + 3 * (1 if u8 else 4))
            cands = {
                # the machine's limit, timed in the same interleaved rounds: a copy moving the same bytes
                SAME_BYTES: H.same_bytes_copy(nbytes),
                "eager": lambda: eager(mask, fg, bg, fo, bo, u8),
                "torch.compile": lambda: compiled(mask, fg, bg, fo, bo, u8),
                "numpy": lambda: numpy_composite(*npargs, u8),
                "pycgn": lambda: composite(mask, fg, bg, fo, bo, out_dtype, layout),
                "pycgn out=": lambda: composite(mask, fg, bg, fo, bo, out_dtype, layout, out=out),
            }
            if args.pycgn_only:
                cands = {k: v for k, v in cands.items() if k.startswith(("pycgn", "copy"))}
            check(cands, pycgn.reference.composite(mask, fg, bg, fo, bo, out_dtype, layout), u8,
                  skip=(SAME_BYTES,))
            times = H.interleave(cands, min_rounds=args.min_reps, max_rounds=args.max_reps, budget=args.seconds)
            copy_gbs = nbytes / times[SAME_BYTES].median / 1e9
            for name, t in times.items():
                rows.append(dict(case=f"{n}x3x{s}x{s} {blend}", out=f"{out_dtype} {layout}", cand=name, ms=t.median * 1e3,
                                 spread=t.spread, gbs=nbytes / t.median / 1e9, faults=t.faults_per_call,
                                 reps=t.rounds, frac=nbytes / t.median / 1e9 / copy_gbs))
    bw = max(bw_before, H.copy_bandwidth(rounds=args.copy_rounds))
    return dict(rows=rows, copy_gbs=bw, threads=torch.get_num_threads(), ext=pycgn._ext.AVAILABLE)


def run_cuda(args, device="cuda"):
    """The CUDA side: CUDA events, median of many runs, inputs rotated through enough copies
    to exceed the L2 cache, the output poisoned before each run; the device's copy bandwidth
    (copy_ of 1 GiB, read + write) measured in the same run, and a copy of each case's bytes
    timed in the same turns as the candidates (the bar's yardstick). ``args.cases``: the
    shapes. ``device="cpu"`` is a rehearsal of this same code for tests on machines without a
    GPU (small cases): the lent GPU gives one try."""
    import pycgn
    from pycgn.ops import composite

    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)
        title = f"CUDA: {props.name} (torch {torch.__version__}, CUDA {torch.version.cuda})"
        copy_bytes, copy_name, clock = 1 << 30, "1 GiB", "CUDA events"
    else:  # a rehearsal: a few copies of the inputs will do
        l2 = 1 << 20
        title = f"CPU rehearsal of the CUDA run (torch {torch.__version__})"
        copy_bytes, copy_name, clock = 16 << 20, "16 MiB", "the host clock"
    copy_gbs = H.copy_bandwidth(copy_bytes, dev, rounds=30)
    compiled = torch.compile(eager, dynamic=False) if args.cuda_compile else None
    rows = []
    for n, s in args.cases:
        per = n * s * s * (4 + 2 * 3 * 4)
        k = max(2, int(4 * l2 // per) + 1)  # copies of the inputs: > 4x L2 in all
        g = torch.Generator(device=dev).manual_seed(0)
        sets = [(torch.rand(n, 1, s, s, device=dev, generator=g) * 1.2 - 0.1,
                 torch.rand(n, 3, s, s, device=dev, generator=g) * 2 - 1,
                 torch.rand(n, 3, s, s, device=dev, generator=g) * 2 - 1,
                 torch.randint(0, s + 1, (n, 2), device=dev, generator=g),
                 torch.randint(0, s + 1, (n, 2), device=dev, generator=g)) for _ in range(k)]
        cur = [0]  # which copy the next call reads: a new one every call, so none is still in L2

        def nxt():
            cur[0] = (cur[0] + 1) % k
            return sets[cur[0]]

        for out_dtype, layout in OUTS:
            u8 = out_dtype == "uint8"
            out = torch.empty((n, s, s, 3) if u8 else (n, 3, s, s), dtype=torch.uint8 if u8 else torch.float32,
                              device=dev)

            def before(i, out=out, u8=u8):
                out.fill_(0xA5 if u8 else float("nan"))

            cands = {"pycgn out=": lambda: composite(*nxt(), out_dtype, layout, out=out),
                     "pycgn": lambda: composite(*nxt(), out_dtype, layout),
                     "eager": lambda: eager(*nxt(), u8)}
            if compiled is not None:
                cands["torch.compile"] = lambda: compiled(*nxt(), u8)
            check(cands, pycgn.reference.composite(*sets[0], out_dtype, layout), u8,
                  reset=lambda: cur.__setitem__(0, -1))
            nbytes = n * s * s * (4 + 2 * 3 * 4 + 3 * (1 if u8 else 4))
            # The bar's yardstick, timed in the same turns: a copy reading and writing as many bytes
            # as the call moves, its sources rotated like the inputs (a 1 GiB copy runs faster).
            cands[SAME_BYTES] = H.same_bytes_copy(nbytes, dev, sources=k)
            # A turn is a burst of back-to-back calls (each on the next copy of the inputs): the
            # host's per-call work overlaps the GPU's, as in a generator's loop; a single call timed
            # from an idle GPU would add the op's whole host latency to the kernel's time.
            times = H.interleave(cands, min_rounds=args.cuda_reps, max_rounds=args.cuda_reps, before=before,
                                 turn_calls=args.cuda_burst, device=dev)
            for name, t in times.items():
                rows.append(dict(case=f"{n}x3x{s}x{s}", out=f"{out_dtype} {layout}", cand=name, ms=t.median * 1e3,
                                 gbs=nbytes / t.median / 1e9, frac=nbytes / t.median / 1e9 / copy_gbs,
                                 same=times[SAME_BYTES].median / t.median, copies=k))
    lines = [f"## {title}", "",
             H.machine_line(), "",
             f"Device copy bandwidth (copy_ of {copy_name}, read + write, best of 30): {copy_gbs:.0f} GB/s; "
             f"L2 {l2 >> 20} MiB; inputs rotated through copies exceeding 4x L2; output poisoned before each run; "
             f"median of {args.cuda_reps} interleaved turns of {args.cuda_burst} back-to-back calls, timed with "
             f"{clock}.", ""]
    lines += H.table(["case", "output", "candidate", "ms", "GB/s", f"of {copy_name} copy bw", "of same-bytes copy",
                      "pycgn speed-up"],
                     [[r["case"], r["out"], r["cand"], f"{r['ms']:.3f}", f"{r['gbs']:.0f}", H.share(r["frac"]),
                       H.share(r["same"]), f"{r['ms'] / _mine(rows, r)['ms']:.1f}x"] for r in rows], "lllrrrrr")
    big = max(s for _, s in args.cases)
    worst = min(r["same"] for r in rows if r["cand"].startswith("pycgn") and r["case"].endswith(f"x{big}"))
    lines += ["", f"Bar: pycgn >= 80% of a same-bytes device copy's rate at {big}x{big}: worst {worst:.0%} -> "
              f"{'PASS' if worst >= 0.8 else 'FAIL'}", ""]
    return "\n".join(lines)


def variant_report(kernels: dict) -> str:
    """pycgn under PYCGN_CPU_PREFETCH=0 and =1, each child against its own same-bytes copy."""
    first = next(iter(kernels.values()))
    lines = ["## CPU kernel variants (`--cpu-variants`)", "",
             f"Two more children ({first['allocator']}, pycgn and the copy only), one per `PYCGN_CPU_PREFETCH`: "
             "0 joins contiguous rows into one run, 1 blends row by row with software prefetch. Without the "
             f"variable the kernel takes {1 if 'Intel' in H.cpu_model() else 0} on this CPU. Each row: median ms and the fraction "
             "of its own child's same-bytes copy; the last column, variant 0's time over variant 1's.", ""]
    keyed = {k: {(r["case"], r["out"], r["cand"]): r for r in res["rows"]} for k, res in kernels.items()}
    if len(keyed) < 2:
        return "\n".join(lines + ["Only one variant ran: nothing to compare.", ""])
    (k0, a), (k1, b) = list(keyed.items())[:2]
    rows = []
    for (case, out, cand), ra in a.items():
        rb = b.get((case, out, cand))
        if rb is not None and cand.startswith("pycgn"):
            rows.append([case, out, cand, f"{ra['ms']:.2f}", H.share(ra["frac"]), f"{rb['ms']:.2f}",
                         H.share(rb["frac"]), f"{ra['ms'] / rb['ms']:.2f}x"])
    lines += H.table(["case", "output", "candidate", f"{k0}: ms", "of copy", f"{k1}: ms", "of copy", "0 / 1"], rows,
                     "lllrrrrr")
    return "\n".join(lines) + "\n"


def _mine(rows, row):
    """pycgn's row of the same case and output as ``row``."""
    return next(r for r in rows if (r["case"], r["out"], r["cand"]) == (row["case"], row["out"], "pycgn"))


def report(results, args):
    first = next(iter(results.values()))
    lines = ["# Compositing: the fused kernel against the published expression", "",
             H.machine_line(), f"Children: {first['threads']} torch threads; compiled extension: {first['ext']}.",
             f"Command: {H.command()}. "
             "Minimal bytes: mask + fg + bg read once, the output written once. "
             "Fraction of copy bandwidth: against `copy (same bytes)`, a torch `copy_` moving the case's minimal "
             "bytes (read + write), timed in the same interleaved rounds, so load swings hit it alike; the "
             "allocator headings give the best 256 MiB copy_ of each run for scale. ms: median of the rounds; "
             "spread: their interquartile range over the median.", ""]
    base = {(r["case"], r["out"], r["cand"]): r["ms"] for r in results.get("tcmalloc", {"rows": []})["rows"]}
    for res in results.values():
        lines += [f"## Allocator: {res['allocator']} (best copy_ of 256 MiB: {res['copy_gbs']:.1f} GB/s)", ""]
        lines += H.table(["case", "output", "candidate", "ms", "spread", "GB/s", "of copy bw", "minor faults/call",
                          "pycgn speed-up"],
                         [[r["case"], r["out"], r["cand"], f"{r['ms']:.2f}", H.share(r["spread"]), f"{r['gbs']:.1f}",
                           H.share(r["frac"]), f"{r['faults']:.0f}", f"{r['ms'] / _mine(res['rows'], r)['ms']:.1f}x"]
                          for r in res["rows"]], "lllrrrrrr")
        lines.append("")
    # the bar: pycgn (best allocator) against the tcmalloc baselines
    lines += ["## Bar (against the tcmalloc baselines)", "",
              "| case | output | pycgn / eager | pycgn / torch.compile | pycgn of copy bw (best allocator) |",
              "|---|---|---:|---:|---:|"]
    for n, s in args.cases:
        for (out_dtype, layout), blend in ((o, b) for o in OUTS for b in BLENDS):
            case, out = f"{n}x3x{s}x{s} {blend}", f"{out_dtype} {layout}"
            mine = min((r for res in results.values() for r in res["rows"] if (r["case"], r["out"], r["cand"]) ==
                        (case, out, "pycgn")), key=lambda r: -r["frac"])
            e, c = base.get((case, out, "eager")), base.get((case, out, "torch.compile"))
            # the bars, uint8 NHWC 64x3x256x256: shuffle >= 5x eager and 1.5x torch.compile;
            # plain >= 0.9x torch.compile and 70% of the same-bytes copy
            big = out_dtype == "uint8" and s == 256
            c_bar = (" (bar 1.5x)" if blend == "shuffle" else " (bar 0.9x)") if big else ""
            e_bar = " (bar 5x)" if big and blend == "shuffle" else ""
            f_bar = " (bar 70%)" if big and blend == "plain" else ""
            lines.append(f"| {case} | {out} | {e / mine['ms']:.1f}x{e_bar} | {c / mine['ms']:.2f}x{c_bar} | "
                         f"{mine['frac']:.0%}{f_bar} |"
                         if e and c else f"| {case} | {out} | n/a | n/a | {mine['frac']:.0%} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(H.ROOT / "benchmarks" / "results" / "composite.md"))
    p.add_argument("--quick", action="store_true",
                   help="a smoke run (about a minute): batches of N / 8, and on the CPU 3 rounds (--cuda-reps on CUDA)")
    H.add_child_option(p)
    p.add_argument("--pycgn-only", action="store_true", help=argparse.SUPPRESS)  # a --cpu-variants child
    p.add_argument("--cpu-variants", action="store_true",
                   help="also time pycgn under each CPU kernel variant (PYCGN_CPU_PREFETCH=0 and 1)")
    p.add_argument("--no-tcmalloc", action="store_true", help="only the default allocator")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cuda-reps", type=int, default=100, help="timed runs per candidate on CUDA")
    p.add_argument("--cuda-burst", type=int, default=8,
                   help="back-to-back calls per timed turn on CUDA (1: the latency of one call from an idle GPU)")
    p.add_argument("--cuda-compile", action="store_true", help="also time torch.compile on CUDA (slow to compile)")
    args = p.parse_args()
    args.cases = QUICK_CASES if args.quick else CASES
    if args.device == "cuda":
        H.write_report(args.out, run_cuda(args))
        return 0
    args.seconds, args.min_reps, args.max_reps = (0.0, 3, 3) if args.quick else (8.0, 15, 200)
    args.copy_rounds = 3 if args.quick else 15
    if args.child_json:
        return H.child_result(args.child_json, run(args))
    variants = {"glibc": ("glibc", {})}
    if not args.no_tcmalloc:
        variants["tcmalloc"] = ("tcmalloc", {})
    argv = ["--quick"] if args.quick else []
    results = H.rerun(__file__, argv, variants)
    text = report(results, args)
    if args.cpu_variants:
        kernels = H.rerun(__file__, argv + ["--pycgn-only"],
                          {f"PYCGN_CPU_PREFETCH={v}": ("tcmalloc" if H.tcmalloc_path() else "glibc",
                                                       {"PYCGN_CPU_PREFETCH": v}) for v in ("0", "1")})
        text += "\n" + variant_report(kernels)
    H.write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
