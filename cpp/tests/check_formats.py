"""ctest: pycgn::Pipeline on every export it runs, bit for bit against Python.

- a tiny random ImageNet CGN exported to TorchScript: cgn_generate's images equal Python's
  ``model.sampler_draw`` (truncated noise, shared, 1000 classes) run through the same TorchScript
  files and ``pycgn.ops.composite``; a sidecar with another truncation must then differ (the
  comparison can fail);
- a random MNIST CGN exported as AOTInductor packages (when this pycgn has the "aoti" format):
  cgn_generate's images equal Python's ``pycgn.Generator(backend="aoti")`` where that backend
  exists, else the same .pt2 files run with ``torch._inductor.aoti_load_package``. Compiled once;
- sidecars the pipeline cannot run (unknown kind / runtime, another pycgn major version, other
  weights, class vectors) are refused with exit 2 and one line naming the field.

usage: check_formats.py --cgn-generate EXE --work DIR   (exit 0/1, 77 skipped)
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import numpy as np
    import torch
    from PIL import Image

    import pycgn
    import pycgn.export
    import pycgn.sheets
    from pycgn.models.imagenet import ImagenetCGN
    from pycgn.ops import composite
except ImportError as e:  # not a pycgn development environment
    print(f"SKIP: cannot import pycgn (and torch, PIL) with {sys.executable}: {e}")
    sys.exit(77)

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def randomize(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.2)
    return m.eval()


def cpp_images(exe, export_dir, png, n, seed, *classes):
    """cgn_generate's images (N, H, W, 3) uint8: one row, scale 1, no padding between tiles."""
    args = [exe, "--model-dir", export_dir, "-n", n, "--seed", seed, "--scale", 1, "--cols", n, "-o", png,
            "--device", "cpu", *classes]
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return np.asarray(Image.open(png).convert("RGB")), ""


def python_images(nets, draw):
    """The export's three nets on Python's draw, composited like pycgn.Generator."""
    def run(name, u, y):
        out = nets[name](u, y)
        return out[0] if isinstance(out, (list, tuple)) else out

    with torch.inference_mode():
        mask = run("shape", draw.u_shape, draw.shape)
        fg = run("texture", draw.u_texture, draw.texture)
        bg = run("background", draw.u_bg, draw.bg)
        if not all(bool(torch.isfinite(t).all()) for t in (mask, fg, bg)):
            raise SystemExit("the generators give NaN or infinite values: no comparison possible")
        return composite(mask.float(), fg.float(), bg.float(), draw.fg_offset, draw.bg_offset,
                         out_dtype="uint8", layout="NHWC").numpy()


def same(exe, export_dir, work, nets, draw, n, seed, classes, what):
    got, err = cpp_images(exe, export_dir, work / f"{export_dir.name}_{seed}.png", n, seed, *classes)
    if got is None:
        check(False, f"{what}: cgn_generate failed: {err}")
        return None
    want = pycgn.sheets.tile(python_images(nets, draw), cols=n, scale=1)
    equal = got.shape == want.shape and np.array_equal(got, want)
    diff = "" if got.shape != want.shape else f", max |diff| {np.abs(got.astype(int) - want).max()}"
    check(equal and np.ptp(want) > 20, f"{what}: C++ images bit-identical to Python's ({got.shape}{diff})")
    return got


def refused(exe, export_dir, work, needle, what):
    out = work / "refused.png"
    r = subprocess.run([str(exe), "--model-dir", str(export_dir), "-o", str(out)], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 2 and len(lines) == 1 and needle in lines[0] and not out.exists(),
          f"{what}: exit {r.returncode}, {lines[:2]}")


def edited(src, dst, **fields):
    shutil.copytree(src, dst)
    side = json.loads((dst / "pycgn_export.json").read_text())
    side.update(fields)
    (dst / "pycgn_export.json").write_text(json.dumps(side))
    return dst


def imagenet(exe, work):
    torch.manual_seed(0)
    # Its own initialisation: random weights like MNIST's below make the tiny BigGANs overflow to NaN.
    m = ImagenetCGN(ch=4, resolution=32, u2net_div=16, gt=False, truncation=0.7).eval()
    out = pycgn.export.export(m, work / "export_imagenet", format="torchscript")
    nets = {k: torch.jit.load(str(out / f"{k}.torchscript.pt")) for k in ("shape", "texture", "background")}
    n, seed = 5, 11
    draw = m.sampler_draw(seed, range(n), shape=[3, None, 999, None, 7], bg="goldfish")
    goldfish = pycgn.models.imagenet.class_id("goldfish", "bg")  # a name of the 1k list
    same(exe, out, work, nets, draw, n, seed, ["--shape", "3,random,999,random,7", "--bg", goldfish],
         "ImageNet CGN (TorchScript, truncation 0.7, classes fixed and random)")
    # The comparison can fail: the same files with the noise of another truncation differ.
    other = edited(out, work / "export_imagenet_t05", truncation=0.5)
    got, err = cpp_images(exe, other, work / "t05.png", n, seed, "--shape", "3,random,999,random,7", "--bg", goldfish)
    want = pycgn.sheets.tile(python_images(nets, draw), cols=n, scale=1)
    check(got is not None and not np.array_equal(got, want),
          f"ImageNet CGN: a sidecar saying truncation 0.5 gives other images than 0.7 {err}")
    refused(exe, edited(out, work / "imagenet_vector", class_input="vector"), work, '"class_input"',
            "ImageNet export with class vectors")
    return out


def aoti(exe, work):
    if "aoti" not in getattr(pycgn.export, "FORMATS", ()):
        print("note: this pycgn has no 'aoti' export format yet: AOTInductor checks skipped")
        return
    torch.manual_seed(0)
    m = randomize(pycgn.MnistCGN(), 5)
    out = pycgn.export.export(m, work / "export_aoti", format="aoti")  # compiles: ~1-2 min per net
    n, seed = 9, 4
    draw = pycgn.Generator(m, backend="torch", device="cpu").sampler(seed).draw_n(n, shape=3)
    nets = {k: torch._inductor.aoti_load_package(str(out / f"{k}.pt2")) for k in ("shape", "texture", "background")}
    same(exe, out, work, nets, draw, n, seed, ["--shape", "3"], "MNIST CGN (AOTInductor .pt2, aoti_load_package)")
    try:
        from pycgn.runtime import make_runner
        gen = pycgn.Generator(m, backend="torch", device="cpu")
        # the "aoti" runner on this very export: the packages are compiled once per test run
        gen._runner = make_runner(m, "aoti", "cpu", export_dir=out)
    except Exception as e:  # the runtime's "aoti" backend may not exist in this checkout yet
        print(f"note: pycgn's 'aoti' backend unavailable ({str(e).splitlines()[0][:100]})")
    else:
        got, err = cpp_images(exe, out, work / "gen_aoti.png", n, seed, "--shape", "3")
        want = pycgn.sheets.tile(gen.generate(shape=3, n=n, seed=seed, output="numpy"), cols=n, scale=1)
        check(got is not None and np.array_equal(got, want),
              f"MNIST CGN (AOTInductor): C++ images bit-identical to Generator(backend='aoti') {err}")
    side = json.loads((out / "pycgn_export.json").read_text())
    refused(exe, edited(out, work / "aoti_torch", torch_version="1.0.0"), work, "torch",
            "AOTInductor package of another torch (sidecar says 1.0.0)")
    # Packages of other weights: the sidecar's sha no longer matches the packages' metadata.
    refused(exe, edited(out, work / "aoti_sha", weights_sha256="0" * 64), work, "exported from weights",
            "AOTInductor packages of other weights")
    refused(exe, edited(out, work / "aoti_gpu", device="cuda"), work, '"device"',
            "AOTInductor packages compiled for CUDA, no GPU here")
    refused(exe, edited(out, work / "aoti_isa", arch="AVX1024"), work, '"arch"',
            "AOTInductor packages for a CPU ISA this machine lacks")
    return side


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cgn-generate", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    exe = a.cgn_generate
    im = imagenet(exe, a.work)
    for name, fields, needle in (
            ("kind", {"kind": "stylegan"}, '"kind" is "stylegan"'),
            ("runtime", {"runtime": "tflite"}, '"runtime" is "tflite"'),
            ("major", {"pycgn_version": "99.0.0"}, '"pycgn_version" is "99.0.0"'),
            ("sha", {"weights_sha256": "f" * 64}, "exported from weights")):
        refused(exe, edited(im, a.work / f"bad_{name}", **fields), a.work, needle, f"sidecar with another {name}")
    aoti(exe, a.work)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
