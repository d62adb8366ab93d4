"""What every benchmark in benchmarks/ shares: interleaved timing, allocator runs, machine limits, reports.

A benchmark keeps only what is its own (candidates, sizes, FLOP counts) and imports this module
first (``import _harness as H``): importing it makes ``import pycgn`` find this checkout where it
is only built in place (``python setup.py build_ext --inplace``, as ``tools/gpu_check.sh`` falls
back to), and find the installed package otherwise.

- Timing (:func:`interleave`): candidates take turns round by round, after a warm-up, so a shared
  machine's load swings hit them alike; each gets the median, the best and the spread of its turns,
  and its minor page faults per call. On a GPU a turn is timed with CUDA events.
- Allocators (:func:`rerun`, :func:`allocator_env`): the baselines run at their best. glibc's
  allocator page-faults eager PyTorch's large temporaries and costs it 2-3.5x, so a benchmark is
  re-run, in fresh processes, under glibc and with tcmalloc preloaded, and each run says which
  allocator it really had (:func:`allocator_in_use`).
- Machine limits: copy bandwidth (:func:`copy_bandwidth`, :func:`same_bytes_copy`), matmul rate
  (:func:`matmul_rate`), the CPU model and its ISA flags (:func:`machine_line`, named in every report).
- Reports: markdown tables (:func:`table`, :func:`ratio`, :func:`share`) written atomically
  (:func:`write_report`).
"""
from __future__ import annotations

import glob
import importlib.util
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The published checkpoints: ../shared beside the repository, on developer and CI machines only.
PUBLISHED = ROOT.parent / "shared" / "reference" / "cgn_mnist_official"


def _use_this_checkout() -> None:
    # `python benchmarks/X.py` puts benchmarks/, not the root, on sys.path. The checkout wins when it
    # has an in-place build (that build is what is being measured) or when no pycgn is installed; an
    # installed pycgn wins over an unbuilt checkout, which would only give the slow fallback path.
    built = any((ROOT / "pycgn").glob("_C*.so")) or any((ROOT / "pycgn").glob("_C*.pyd"))
    if str(ROOT) not in sys.path and (built or importlib.util.find_spec("pycgn") is None):
        sys.path.insert(0, str(ROOT))


_use_this_checkout()

import torch  # noqa: E402  (below the path fix-up, which has to run before any import of pycgn)


# ---------------------------------------------------------------------------------------------
# Timing

@dataclass
class Timing:
    """One candidate's turns: seconds per call of each turn, and what the turns cost."""
    per_call: list[float] = field(default_factory=list)
    calls: int = 0
    faults: int = 0  # minor page faults over all timed calls (this process only)

    @property
    def median(self) -> float:
        return statistics.median(self.per_call)

    @property
    def best(self) -> float:
        return min(self.per_call)

    @property
    def spread(self) -> float:
        """Interquartile range over the median (max - min under four turns): the noise of the figure."""
        t = sorted(self.per_call)
        if len(t) < 4:
            return (t[-1] - t[0]) / self.median
        q1, _, q3 = statistics.quantiles(t, n=4)
        return (q3 - q1) / self.median

    @property
    def faults_per_call(self) -> float:
        return self.faults / max(1, self.calls)

    @property
    def rounds(self) -> int:
        return len(self.per_call)


def sync(device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(cands: dict[str, Callable[[], object]], *, min_rounds: int = 5, max_rounds: int = 20,
               budget: float = 0.0, turn_calls: int = 1, turn_seconds: float = 0.0, warmup: int = 1,
               before: Callable[[int], None] | None = None, device="cpu") -> dict[str, Timing]:
    """Time candidates round-robin: each round, every candidate takes one turn.

    A turn repeats the call until it has made ``turn_calls`` calls and run ``turn_seconds``;
    its figure is seconds per call. Rounds go on until ``min_rounds`` and then while the
    ``budget`` (seconds, from the first timed round) lasts, up to ``max_rounds``. ``warmup``
    untimed calls per candidate come first (compiles, autotuning, first touch of buffers).
    ``before(i)``, untimed, precedes the i-th turn over all candidates (poison an output,
    rotate inputs). On a CUDA device a turn is timed with CUDA events.
    """
    cuda = torch.device(device).type == "cuda"
    for fn in cands.values():
        for _ in range(warmup):
            fn()
    sync(device)
    out = {name: Timing() for name in cands}
    turn, end = 0, time.perf_counter() + budget
    for r in range(max_rounds):
        if r >= min_rounds and time.perf_counter() >= end:
            break
        for name, fn in cands.items():
            if before is not None:
                before(turn)
            turn += 1
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            k, dt = _turn(fn, turn_calls, turn_seconds, cuda)
            res = out[name]
            res.faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            res.calls += k
            res.per_call.append(dt / k)
    return out


def _turn(fn, calls: int, seconds: float, cuda: bool) -> tuple[int, float]:
    """(calls made, seconds taken) of one turn."""
    if cuda:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0, k = time.perf_counter(), 0
    while True:
        fn()
        k += 1
        if cuda and seconds > 0:  # else the host queues launches for seconds' worth of host time:
            torch.cuda.synchronize()  # minutes of GPU work for a large torch.mm
        if k >= calls and (seconds <= 0 or time.perf_counter() - t0 >= seconds):
            break
    if cuda:
        stop.record()
        stop.synchronize()
        return k, start.elapsed_time(stop) / 1e3
    return k, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Allocators

TCMALLOC = "libtcmalloc_minimal.so.4"  # Debian/Ubuntu: apt-get install libtcmalloc-minimal4


def tcmalloc_path() -> str | None:
    """Where libtcmalloc_minimal.so.4 is: $PYCGN_TCMALLOC, else the loader's cache, else the usual dirs."""
    env = os.environ.get("PYCGN_TCMALLOC")
    if env:
        return env if os.path.isfile(env) else None
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in cache.splitlines():
            if line.strip().startswith(TCMALLOC + " ") and "=>" in line:
                path = line.split("=>", 1)[1].strip()
                if os.path.isfile(path):
                    return path
    except (OSError, subprocess.SubprocessError):
        pass
    for d in ("/usr/lib/*-linux-gnu", "/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        hits = sorted(glob.glob(os.path.join(d, TCMALLOC)))
        if hits:
            return hits[0]
    return None


def allocator_in_use() -> str:
    """'tcmalloc' where libtcmalloc is mapped into this process (preloaded and loaded), else 'glibc'."""
    try:
        with open("/proc/self/maps") as f:
            return "tcmalloc" if "libtcmalloc" in f.read() else "glibc"
    except OSError:  # not Linux: whatever LD_PRELOAD says
        return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc"


def allocator_env(allocator: str, **extra: str | None) -> dict[str, str]:
    """This process's environment for a child under ``allocator`` ('glibc' or 'tcmalloc'), plus
    ``extra`` variables (None removes one). Raises FileNotFoundError where tcmalloc is absent."""
    if allocator not in ("glibc", "tcmalloc"):
        raise ValueError(f"allocator must be 'glibc' or 'tcmalloc', got {allocator!r}")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if allocator == "tcmalloc":
        path = tcmalloc_path()
        if path is None:
            raise FileNotFoundError(f"{TCMALLOC} not found (apt-get install libtcmalloc-minimal4, "
                                    "or set PYCGN_TCMALLOC to its path)")
        env["LD_PRELOAD"] = path
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


CHILD_FLAG = "--child-json"


def add_child_option(parser) -> None:
    """The hidden option by which :func:`rerun` asks a benchmark's child to write its results."""
    import argparse
    parser.add_argument(CHILD_FLAG, help=argparse.SUPPRESS)


def child_result(path: str, result: dict) -> int:
    """In a child of :func:`rerun`: write ``result`` (JSON), with the allocator the child really had."""
    Path(path).write_text(json.dumps({**result, "allocator": allocator_in_use()}))
    return 0


def rerun(script: str, argv: list[str], variants: dict[str, tuple[str, dict]]) -> dict[str, dict]:
    """Run ``python script argv --child-json F`` once per variant, one after another, each in a
    fresh process (malloc is chosen per process). ``variants``: key -> (allocator, extra env, as
    for :func:`allocator_env`). Returns key -> the child's results, whose 'allocator' is the one it
    found loaded. A tcmalloc variant is left out, with a warning, where tcmalloc is absent."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="pycgn-bench-") as tmp:
        for key, (allocator, extra) in variants.items():
            try:
                env = allocator_env(allocator, **extra)
            except FileNotFoundError as e:
                print(f"warning: leaving out {key}: {e}", file=sys.stderr)
                continue
            out = os.path.join(tmp, f"{len(results)}.json")
            print(f"running {key} ({allocator}) ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, script, *argv, CHILD_FLAG, out], env=env, check=True)
            results[key] = json.loads(Path(out).read_text())
    if not results:
        raise SystemExit("no allocator variant could run: nothing to report")
    return results


# ---------------------------------------------------------------------------------------------
# Machine limits

def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (lscpu, then platform as fallbacks)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


ISA = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "avx512f": "AVX512F"}


def cpu_flags() -> dict[str, bool]:
    """Which of the ISA extensions that set CPU matmul rates (:data:`ISA`) the CPU has."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((ln for ln in f if ln.startswith("flags")), ":").split(":", 1)[1].split())
    except OSError:
        pass
    return {k: k in flags for k in ISA}


def machine_line() -> str:
    """'Machine: ...': CPU model, cores, ISA flags, torch and its threads, allocator, load average."""
    isa = ", ".join(f"{ISA[k]} {'yes' if v else 'no'}" for k, v in cpu_flags().items())
    try:
        load = f"; load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    return (f"Machine: `{cpu_model()}`, {os.cpu_count()} cores ({isa}); torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; allocator {allocator_in_use()}{load} "
            "(on a shared machine absolute figures vary; side-by-side ratios less).")


def same_bytes_copy(nbytes: int, device="cpu", sources: int = 1) -> Callable[[], object]:
    """A call that moves ``nbytes`` (read + write) with torch ``copy_``: the machine's limit for a
    candidate moving as many bytes, timed beside it. ``sources`` > 1 rotates the read side through
    that many buffers, as a candidate's inputs are, so the copy too reads what no cache holds."""
    srcs = itertools.cycle([torch.rand(max(1, nbytes // 8), device=device) for _ in range(sources)])
    dst = torch.empty(max(1, nbytes // 8), device=device)  # half read, half written
    return lambda: dst.copy_(next(srcs))


def copy_bandwidth(nbytes: int = 256 << 20, device="cpu", rounds: int = 15) -> float:
    """Best read + write GB/s of torch ``copy_`` of ``nbytes`` over ``rounds`` (all threads)."""
    t = interleave({"copy": same_bytes_copy(2 * nbytes, device)}, min_rounds=rounds, max_rounds=rounds,
                   device=device)["copy"]
    return 2 * nbytes / t.best / 1e9


def matmul_rate(dtype=torch.float32, device="cpu", n: int | None = None, seconds: float = 1.0) -> float:
    """Best FLOP/s of ``torch.mm`` n x n (2048 on a CPU, 8192 on a GPU) in ``dtype``: the GEMM limit."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    t = interleave({"mm": lambda: torch.mm(a, b)}, min_rounds=5, max_rounds=5, turn_seconds=seconds / 5,
                   device=device)["mm"]
    return 2 * n ** 3 / t.best


# ---------------------------------------------------------------------------------------------
# The MNIST CGN's work (generators.py and bf16.py)

def mnist_flops_per_image(model) -> float:
    """Multiply-adds x 2 of the convolutions and linear layers of an MNIST CGN's three nets, batch 1."""
    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += 2.0 * mod.weight[0].numel() * out.numel()  # weight[0]: in/groups * kh * kw
        elif isinstance(mod, torch.nn.Linear):
            total[0] += 2.0 * mod.in_features * out.numel()

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    u, y = torch.randn(1, model.latent_dim), torch.zeros(1, dtype=torch.int64)
    try:
        with torch.inference_mode():
            model(u, y, u, y, u, y)
    finally:
        for h in hs:
            h.remove()
    return total[0]


def mnist_inputs(model, n: int, seed: int = 0) -> tuple:
    """(u_shape, y_shape, u_texture, y_texture, u_bg, y_bg) for a batch of n, seeded."""
    g = torch.Generator().manual_seed(seed)
    args = []
    for _ in range(3):
        args += [torch.randn(n, model.latent_dim, generator=g), torch.randint(0, model.n_classes, (n,), generator=g)]
    return tuple(args)


# ---------------------------------------------------------------------------------------------
# Reports

def table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    """Markdown table lines; ``align`` one letter a column, 'l' or 'r' (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", rule] + ["| " + " | ".join(str(c) for c in row) + " |"
                                                      for row in rows]


def ratio(x: float) -> str:
    return f"{x:.2f}x"


def share(x: float) -> str:
    """A fraction of a machine limit, as a percentage."""
    return f"{x:.0%}"


def command() -> str:
    """The command line that ran this benchmark, for its report (in a child of :func:`rerun`, its parent's)."""
    argv = list(sys.argv[1:])
    if CHILD_FLAG in argv:
        i = argv.index(CHILD_FLAG)
        del argv[i:i + 2]
    return "`python benchmarks/" + " ".join([Path(sys.argv[0]).name, *argv]) + "`"


def write_report(path, text: str, echo: bool = True) -> None:
    """Write the report atomically (a reader never sees half of it); '-' prints it only."""
    if str(path) == "-":
        print(text)
        return
    from pycgn._io import atomic_write_bytes
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    if echo:
        print(text)
