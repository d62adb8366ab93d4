"""Python threads x throughput: pycgn.Pipeline (the C++ pipeline, GIL released while it works)
against pycgn.Generator (serialised by its lock), one process, the same export and images.

Each of T threads makes `--calls` calls (at least 1,024 images) of `-n` images on one shared object; images/s is
all images over the wall time of the slowest thread (median of `--repeats` rounds). torch's
intra-op threads stay at their default (all cores), as a DataLoader process would have them.

usage: python cpp/bench/bench_threads.py [--model CKPT] [--format torchscript|aoti|aoti,torchscript] [-n 64]
       python cpp/bench/bench_threads.py --model colored_mnist --format aoti,torchscript \\
           -n 1,16,64,256,1024 --threads 1      # issue 21 item 8: batch 1-1024, same backend
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
    ap.add_argument("--format", default="torchscript", help="torchscript, aoti or both (comma-separated)")
    ap.add_argument("-n", default="64", help="images per call; a list (1,16,64,256,1024) gives a table per format")
    ap.add_argument("--calls", type=int, default=4, help="calls per thread (at least 1024 images per thread)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2,4")
    a = ap.parse_args()
    if not pipeline.available():
        sys.exit("pycgn._pipeline is not built")
    formats = a.format.split(",")
    if not set(formats) <= {"torchscript", "aoti"}:
        sys.exit(f"--format: torchscript or aoti, got {a.format!r}")
    torch.manual_seed(0)
    model = pycgn.load(a.model) if a.model else pycgn.MnistCGN().eval()
    sizes = [int(n) for n in a.n.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    print(f"{H.cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, at least "
          f"{a.calls} calls and 1,024 images per thread, median of {a.repeats}\n")
    for fmt in formats:
        # both read the same files: the runtime's cached export (an aoti compile happens once per machine)
        out = runtime.cached_export(model, fmt)
        cands = {"pycgn.Pipeline (C++)": pipeline.Pipeline(out, device="cpu"),
                 f"pycgn.Generator ({fmt})": pycgn.Generator(model, backend=fmt, device="cpu")}
        print(f"### {fmt}\n")
        print("| images per call | candidate | " + " | ".join(f"{t} thread{'s' * (t > 1)}" for t in threads) + " |")
        print("|---:|---|" + "---:|" * len(threads))
        for n in sizes:
            calls = max(a.calls, -(-1024 // n))
            rates = {}
            for name, c in cands.items():
                c.generate(n=n, seed=0)  # warm-up
                rates[name] = [rate(c, t, calls, n, a.repeats) for t in threads]
                print(f"| {n} | {name} | " + " | ".join(f"{r:.0f} img/s" for r in rates[name]) + " |")
            cpp, py = rates.values()
            print(f"| {n} | C++ / Python | " + " | ".join(f"{x / y:.2f}x" for x, y in zip(cpp, py)) + " |")
        print()


if __name__ == "__main__":
    main()
