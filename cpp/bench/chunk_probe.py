"""The C++ pipeline's batch_size (images per net call) against the Python Generator, one process,
the same aoti export of a model: does computing in Python's CPU chunk (64) help the C++ path?
Since the pipeline computes in the export's cpu_chunk by default, the batch_size candidates run
with cpu_chunks=False (else batch_size would not apply on the CPU), beside the default.

usage: python cpp/bench/chunk_probe.py [--model colored_mnist] [-n 256,1024] [--batch-sizes 512,64]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import pycgn  # noqa: E402
from pycgn import pipeline, runtime  # noqa: E402
import _harness as H  # noqa: E402


def rate(obj, n: int, repeats: int) -> float:
    obj.generate(n=n, seed=0)  # warm-up
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        obj.generate(n=n, seed=r + 1)
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="colored_mnist")
    ap.add_argument("-n", default="256,1024", help="images per call, a comma list")
    ap.add_argument("--batch-sizes", default="512,64", help="the C++ pipeline's batch_size values")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    if not pipeline.available():
        sys.exit("pycgn._pipeline is not built")
    model = pycgn.load(a.model)
    out = runtime.cached_export(model, "aoti")  # compiled once per machine
    cands = {"C++, cpu_chunks (default)": pipeline.Pipeline(out, device="cpu")}
    cands.update({f"C++, batch_size {b}": pipeline.Pipeline(out, device="cpu", batch_size=int(b), cpu_chunks=False)
                  for b in a.batch_sizes.split(",")})
    cands["Generator (aoti)"] = pycgn.Generator(model, backend="aoti", device="cpu")
    print(f"{H.cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"median of {a.repeats} calls\n")
    print("| images per call | " + " | ".join(cands) + " |")
    print("|---:|" + "---:|" * len(cands))
    for n in (int(x) for x in a.n.split(",")):
        print(f"| {n} | " + " | ".join(f"{rate(c, n, a.repeats):,.0f} img/s" for c in cands.values()) + " |",
              flush=True)


if __name__ == "__main__":
    main()
