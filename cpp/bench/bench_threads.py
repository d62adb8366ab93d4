"""Python threads x throughput: pycgn.Pipeline (the C++ pipeline, GIL released while it works)
against pycgn.Generator (serialised by its lock), one process, the same export and images.

Each of T threads makes `--calls` calls of `-n` images on one shared object; images/s is
all images over the wall time of the slowest thread (median of `--repeats` rounds). torch's
intra-op threads stay at their default (all cores), as a DataLoader process would have them.

usage: python cpp/bench/bench_threads.py [--model CKPT] [--format torchscript|aoti] [-n 64]
"""
import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import pycgn  # noqa: E402
from pycgn import pipeline, runtime  # noqa: E402
import _harness as H  # noqa: E402



def rate(obj, threads, calls, n, repeats):
    """images/s with `threads` Python threads sharing obj.generate."""
    def work(k):
        for c in range(calls):
            obj.generate(n=n, seed=1000 * k + c)

    rounds = []
    for _ in range(repeats):
        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rounds.append(threads * calls * n / (time.perf_counter() - t0))
    return statistics.median(rounds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="checkpoint (default: a random-weight MNIST CGN)")
    ap.add_argument("--format", default="torchscript", choices=("torchscript", "aoti"))
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2,4")
    a = ap.parse_args()
    if not pipeline.available():
        sys.exit("pycgn._pipeline is not built")
    torch.manual_seed(0)
    model = pycgn.load(a.model) if a.model else pycgn.MnistCGN().eval()
    # both read the same files: the runtime's cached export (an aoti compile happens once per machine)
    out = runtime.cached_export(model, a.format)
    cands = {"pycgn.Pipeline (C++)": pipeline.Pipeline(out, device="cpu"),
             f"pycgn.Generator ({a.format})": pycgn.Generator(model, backend=a.format, device="cpu")}
    for c in cands.values():
        c.generate(n=a.n, seed=0)  # warm-up
    threads = [int(t) for t in a.threads.split(",")]
    print(f"{H.cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, n={a.n} per call, "
          f"{a.calls} calls per thread, median of {a.repeats}\n")
    print("| candidate | " + " | ".join(f"{t} thread{'s' * (t > 1)}" for t in threads) + " |")
    print("|---|" + "---:|" * len(threads))
    for name, c in cands.items():
        print(f"| {name} | " + " | ".join(f"{rate(c, t, a.calls, a.n, a.repeats):.0f} img/s" for t in threads) + " |")


if __name__ == "__main__":
    main()
