"""ctest: the C++ pipeline's images equal pycgn's Python images: within one uint8 level of eager
PyTorch, bit for bit with Python's runner of the same TorchScript files.

Exports a random-weight model (and the published colored/wildlife MNIST checkpoints where
../shared has them) with ``pycgn.export``, runs ``cgn_generate`` for several seeds, class
settings and sizes, and compares its PNG grid with ``pycgn.sheets.tile`` of
``pycgn.Generator(model, backend="torch").generate(...)`` for the same arguments; one grid also
against the ``pycgn generate`` command's PNG. Runs ``pycgn_pipeline_test`` on the export and
checks ``cgn_generate``'s errors (exit 2, one line).

usage: check_pipeline.py --cgn-generate EXE --pipeline-test EXE --work DIR   (exit 0/1, 77 skipped)
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import numpy as np
    import torch
    from PIL import Image

    import pycgn
    import pycgn.api
    import pycgn.sheets
    import pycgn.export
except ImportError as e:  # not a pycgn development environment
    print(f"SKIP: cannot import pycgn (and torch, PIL) with {sys.executable}: {e}")
    sys.exit(77)

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "reference" / "cgn_mnist_official"

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def random_model(path: Path):
    """A model with random, non-trivial weights and running statistics, saved with pycgn.save."""
    g = torch.Generator().manual_seed(5)
    m = pycgn.MnistCGN()
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.2)
    pycgn.save(m.eval(), path, variant="random")
    return pycgn.load(path)


def run_cpp(exe, args):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)


def py_classes(text):
    """The cgn_generate/pycgn argument text -> pycgn.generate's class argument."""
    if text is None:
        return None
    parts = [None if p in ("random", "") else int(p) for p in text.split(",")]
    return parts[0] if len(parts) == 1 else parts


def compare_grid(exe, model, export_dir, work, seed, n, shape=None, texture=None, bg=None, cols=0):
    out = work / f"grid_{export_dir.name}_{seed}_{n}.png"
    args = ["--model-dir", export_dir, "-n", n, "--seed", seed, "--scale", 1, "--cols", cols, "-o", out,
            "--device", "cpu"]
    for flag, v in (("--shape", shape), ("--texture", texture), ("--bg", bg)):
        if v is not None:
            args += [flag, v]
    what = f"{export_dir.name} seed={seed} n={n} shape={shape} texture={texture} bg={bg}"
    r = run_cpp(exe, args)
    if r.returncode != 0:
        check(False, f"{what}: cgn_generate failed: {r.stderr.strip()}")
        return
    got = np.asarray(Image.open(out).convert("RGB"))
    gen = pycgn.api.Generator(model, backend="torch", device="cpu")
    images = gen.generate(py_classes(shape), py_classes(texture), py_classes(bg), n=n, seed=seed, output="numpy")
    want = pycgn.sheets.tile(images, cols=cols or int(np.ceil(np.sqrt(len(images)))), scale=1)
    if got.shape != want.shape:
        check(False, f"{what}: grid {got.shape} vs Python {want.shape}")
        return
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    check(diff.max() <= 1 and np.ptp(want) > 50,
          f"{what}: max |C++ - Python| = {diff.max()} uint8 levels, {int((diff > 0).sum())} of {diff.size} "
          f"values differ")


def same_backend(exe, model, export_dir, work, seed, n):
    """cgn_generate against Python's ``torchscript`` runner on the same files: bit for bit, as both
    compute in the sidecar's cpu_chunk (64; the last chunk padded); the comparison can fail."""
    from pycgn.runtime import make_runner
    out = work / f"same_{seed}_{n}.png"
    r = run_cpp(exe, ["--model-dir", export_dir, "-n", n, "--seed", seed, "--scale", 1, "--cols", n, "-o", out,
                      "--device", "cpu"])
    if r.returncode != 0:
        check(False, f"same backend, n={n}: cgn_generate failed: {r.stderr.strip()}")
        return
    got = np.asarray(Image.open(out).convert("RGB"))
    gen = pycgn.api.Generator(model, backend="torch", device="cpu")
    gen._runner = make_runner(model, "torchscript", "cpu", export_dir=export_dir)

    def want(s):
        return pycgn.sheets.tile(gen.generate(n=n, seed=s, output="numpy"), cols=n, scale=1)

    w = want(seed)
    diff = np.abs(got.astype(np.int16) - w.astype(np.int16)).max() if got.shape == w.shape else "shape"
    check(got.shape == w.shape and np.array_equal(got, w) and np.ptp(w) > 50,
          f"TorchScript, n={n} (chunks of 64): C++ images bit-identical to Python's torchscript runner "
          f"(max |diff| {diff})")
    check(not np.array_equal(got, want(seed + 1)), f"TorchScript, n={n}: another seed's images differ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cgn-generate", required=True, type=Path)
    ap.add_argument("--pipeline-test", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    a = ap.parse_args()
    torch.manual_seed(0)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)

    models = {"random": random_model(a.work / "random.pt")}
    for variant in ("colored_mnist", "wildlife_mnist"):
        p = SHARED / f"{variant}.pth"
        if p.is_file():
            models[variant] = pycgn.load(p)
        else:
            print(f"note: {p} is absent (../shared is only on developer and CI machines); "
                  f"comparing on the random-weight model only")
    exports = {name: pycgn.export.export(m, a.work / f"export_{name}", format="torchscript")
               for name, m in models.items()}

    r = run_cpp(a.pipeline_test, [exports["random"], a.work / "broken"])
    print(r.stdout + r.stderr, end="")
    check(r.returncode == 0, "pycgn_pipeline_test on the random-weight export")

    exe = a.cgn_generate
    compare_grid(exe, models["random"], exports["random"], a.work, seed=0, n=16, shape="3", texture="7", bg="1")
    compare_grid(exe, models["random"], exports["random"], a.work, seed=2**64 - 1, n=5, cols=2)
    compare_grid(exe, models["random"], exports["random"], a.work, seed=123456789, n=3,
                 shape="0,random,9", bg="4")
    compare_grid(exe, models["random"], exports["random"], a.work, seed=77, n=1, texture="2,5,8,1,0,6,3")
    same_backend(exe, models["random"], exports["random"], a.work, seed=9, n=70)
    same_backend(exe, models["random"], exports["random"], a.work, seed=10, n=5)
    for name in exports.keys() - {"random"}:
        compare_grid(exe, models[name], exports[name], a.work, seed=5, n=16, shape="3", texture="7", bg="1")
        compare_grid(exe, models[name], exports[name], a.work, seed=31337, n=23, cols=6)

    # The whole sheet (scale 4, padding, layout) against the `pycgn generate` command.
    ckpt = a.work / "random.pt"
    py_png, cpp_png = a.work / "py_cli.png", a.work / "cpp_cli.png"
    from pycgn.cli import main as pycgn_main
    rc = pycgn_main(["generate", "--model", str(ckpt), "--backend", "torch", "--device", "cpu", "--shape", "3",
                     "--texture", "7", "--bg", "1", "-n", "16", "--seed", "5", "-o", str(py_png)])
    r = run_cpp(exe, ["--model-dir", exports["random"], "--shape", "3", "--texture", "7", "--bg", "1", "-n", "16",
                      "--seed", "5", "-o", cpp_png])
    if rc == 0 and r.returncode == 0:
        p, c = (np.asarray(Image.open(f).convert("RGB")).astype(np.int16) for f in (py_png, cpp_png))
        check(p.shape == c.shape and np.abs(p - c).max() <= 1,
              f"cgn_generate PNG equals `pycgn generate` PNG ({c.shape[1]}x{c.shape[0]} px) within one level")
    else:
        check(False, f"`pycgn generate` rc={rc} / cgn_generate rc={r.returncode}: {r.stderr.strip()}")

    # Errors: exit status 2 and one line naming the problem.
    out = a.work / "err.png"
    for args, needle in (
        (["-o", out], "--model-dir is required"),
        (["--model-dir", exports["random"], "-o", out, "--shape", "10"], "--shape has class '10'"),
        (["--model-dir", exports["random"], "-o", out, "--seed", "-1"], "--seed must be"),
        (["--model-dir", exports["random"], "-o", out, "-n", "0"], "-n must be >= 1"),
        (["--model-dir", exports["random"], "-o", out, "-n", "4", "--bg", "1,2"], "--bg has 2 entries"),
        (["--model-dir", exports["random"], "-o", a.work / "no" / "x.png"], "does not exist"),
        (["--model-dir", a.work, "-o", out], "pycgn_export.json: no such file"),
        (["--model-dir", exports["random"], "-o", out, "--frobnicate", "1"], "unknown option"),
        (["--model-dir", exports["random"], "-o", out, "--device", "tpu"], "device must be"),
    ):
        r = run_cpp(exe, args)
        lines = r.stderr.strip().splitlines()
        check(r.returncode == 2 and len(lines) == 1 and needle in lines[0] and not out.exists(),
              f"cgn_generate {' '.join(map(str, args[-2:]))}: exit {r.returncode}, {lines}")

    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
