"""generate / grid / interpolate / synth / the CLI with an ImageNet CGN file (tiny random weights), on
every backend and precision of pycgn.runtime."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import pycgn
from pycgn import reference
from pycgn import runtime as rt
from pycgn.models.imagenet import ImagenetCGN, save_imagenet_cgn

SIZE = dict(ch=4, resolution=16, u2net_div=16)


@pytest.fixture(scope="module")
def cgn_path(tmp_path_factory):
    torch.manual_seed(3)
    m = ImagenetCGN(**SIZE, gt=True)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if name.endswith(("running_var", "running_vars")):
                t.copy_(torch.rand(t.shape) + 0.5)
            elif name.endswith("embeddings.weight"):
                t.copy_(torch.randn(t.shape))
    return save_imagenet_cgn(m, tmp_path_factory.mktemp("inet") / "cgn.pth")


@pytest.fixture(autouse=True, scope="module")
def _plain_convs():
    with torch.backends.mkldnn.flags(enabled=False):  # oneDNN primitive setup dominates tiny convs
        yield


def test_load_dispatches_on_the_keys(cgn_path):
    m = pycgn.load(cgn_path, truncation=0.3)
    assert m.kind == "imagenet_cgn" and m.truncation == 0.3 and m.image_size == 16


def test_generate_with_names_ids_and_truncation(cgn_path):
    p = pycgn.generate(shape="goldfish", texture=207, bg=[970, None], n=2, model=cgn_path, seed=1,
                       truncation=0.4, return_parts=True, backend="torch")
    assert p.images.shape == (2, 16, 16, 3) and p.images.dtype == np.uint8
    assert p.shape.tolist() == [1, 1] and p.texture.tolist() == [207, 207] and p.bg[0] == 970
    assert p.u_shape.shape == (2, 128) and float(np.abs(p.u_shape).max()) <= 0.4 * 2.0 + 1e-6
    assert np.array_equal(p.fg_offset, np.zeros((2, 2), dtype=np.int64))
    again = reference.composite(torch.from_numpy(p.mask), torch.from_numpy(p.foreground),
                                torch.from_numpy(p.background), out_dtype="uint8", layout="NHWC")
    assert np.abs(again.numpy().astype(int) - p.images.astype(int)).max() <= 1
    same = pycgn.generate(shape="goldfish", texture=207, bg=[970, None], n=2, model=cgn_path, seed=1,
                          truncation=0.4)
    assert np.array_equal(same, p.images)
    other = pycgn.generate(shape="goldfish", texture=207, bg=[970, None], n=2, model=cgn_path, seed=1,
                           truncation=0.8)
    assert not np.array_equal(other, p.images)


def test_errors(cgn_path):
    with pytest.raises(ValueError, match="1000|999"):
        pycgn.generate(shape=1000, model=cgn_path, seed=0)
    with pytest.raises(ValueError, match="truncation"):
        pycgn.generate(model=cgn_path, seed=0, truncation=1.5)
    with pytest.raises(ValueError, match="backend 'onnxruntime' computes in float32 only, precision 'bfloat16'"):
        pycgn.generate(model=cgn_path, seed=0, backend="onnxruntime", precision="bfloat16")
    with pytest.raises(ValueError, match="row_classes and col_classes are required"):
        pycgn.grid(model=cgn_path)


def test_grid_and_interpolation(cgn_path, tmp_path):
    sheet = pycgn.grid(rows="shape", cols="bg", row_classes=[1, 2], col_classes=[3, 4, 5], model=cgn_path,
                       path=tmp_path / "g.png", pad=1, labels=False)
    assert sheet.shape == (2 * 17 + 1, 3 * 17 + 1, 3)
    labelled = pycgn.grid(rows="shape", cols="bg", row_classes=[1, 2], col_classes=[3, 4, 5], model=cgn_path, pad=1)
    top, left = labelled.shape[0] - sheet.shape[0], labelled.shape[1] - sheet.shape[1]
    assert top > 0 and left > 0 and np.array_equal(labelled[top:, left:], sheet)  # ImageNet names, cut to fit
    sheet = pycgn.interpolate("texture", start="goldfish", end=980, steps=4, rows=2, model=cgn_path, pad=1,
                              device="cpu", labels=False)
    assert sheet.shape == (2 * 17 + 1, 4 * 17 + 1, 3)
    # the left column is the plain image of the start class
    gen = pycgn.Generator(cgn_path, backend="torch", device="cpu")
    d = gen.sampler(0).draw(range(2), texture=1)
    left = gen.images(d)[0].numpy()
    assert np.abs(sheet[1:17, 1:17].astype(int) - left.astype(int)).max() <= 1


def test_cli_generate(cgn_path, tmp_path):
    r = subprocess.run([sys.executable, "-m", "pycgn", "generate", "--model", str(cgn_path), "--shape", "goldfish",
                        "--texture", "207", "--bg", "970", "-n", "2", "--truncation", "0.5", "--scale", "1",
                        "-o", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "pycgn", "generate", "--model", str(cgn_path), "--shape", "crane",
                        "-o", str(tmp_path / "y.png")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "crane" in r.stderr


def test_synth_with_an_imagenet_cgn(cgn_path, tmp_path):
    from pycgn.data import SynthDataset
    from pycgn.synth import synth
    man = synth(cgn_path, n=7, out=tmp_path / "ds", shard_size=4, backend="torch", device="cpu", quiet=True)
    assert [s["count"] for s in man["shards"]] == [4, 3]
    ds = SynthDataset(tmp_path / "ds")
    image, labels = ds[5]
    assert image.shape == (3, 16, 16) and 0 <= labels["shape"] < 1000
    gen = pycgn.Generator(cgn_path, backend="torch", device="cpu")
    again = gen.images(gen.sampler(0).draw([5]))[0].permute(2, 0, 1)
    assert (again.int() - image.int()).abs().max() <= 1


# --- pycgn.runtime: every backend and precision -------------------------------------------------------

# bfloat16 against eager float32 on these random nets: outputs within 0.015 (see test_runtime's BF16_ATOL)
BF16_ATOL = 0.05


def _check_backend(cgn_path, backend, precision, truncation=None):
    gen = pycgn.Generator(cgn_path, backend=backend, device="cpu", precision=precision, truncation=truncation)
    assert gen.precision == precision
    draw = gen.sampler(2).draw(range(5))
    m = pycgn.load(cgn_path, truncation=0.5 if truncation is None else truncation)
    with torch.no_grad():
        want = m(draw.u_shape, draw.shape, draw.u_texture, draw.texture, draw.u_bg, draw.bg)
    got = gen.run(draw.u_shape, draw.shape, draw.u_texture, draw.texture, draw.u_bg, draw.bg)
    errs = [(g - w).abs().max().item() for g, w in zip(got, want)]
    assert max(errs) <= (1e-4 if precision == "float32" else BF16_ATOL), errs
    ref = reference.generate(m, draw)["images"]
    diff = (gen.images(draw).int() - ref.int()).abs()
    assert diff.max() <= (1 if precision == "float32" else 8) and diff.float().mean() < 1.0
    return gen


@pytest.mark.parametrize("backend, precision", [("torch", "float32"), ("torch", "bfloat16"), ("auto", "float32")])
def test_backend_and_precision_against_eager(cgn_path, backend, precision):
    gen = _check_backend(cgn_path, backend, precision)
    # a tiny ImageNet CGN exports in minutes: auto uses onnxruntime only once its export is cached
    assert gen.backend == "torch"


@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime"])
def test_exported_backends_against_eager(cgn_path, backend):
    _check_backend(cgn_path, backend, "float32")
    if backend == "torchscript":
        # the truncation is fixed in the exported files: another one is another cache entry (the same
        # code for every format; checked on the quicker export), and an export at another one is refused
        _check_backend(cgn_path, backend, "float32", truncation=0.8)
        other = rt.cached_export(pycgn.load(cgn_path, truncation=0.8), "torchscript")
        with pytest.raises(ValueError, match=r"pycgn_export\.json: exported with truncation 0\.8, the model runs "
                                             r"with 0\.5"):
            rt.make_runner(pycgn.load(cgn_path), backend="torchscript", export_dir=other)
    if backend == "onnxruntime":  # cached now: auto considers it
        gen = pycgn.Generator(cgn_path, backend="auto", device="cpu")
        assert isinstance(gen._runner, rt.AutoRunner) and set(gen._runner.candidates) >= {"onnxruntime", "torch"}


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PYCGN_LONG_TESTS") != "1",
                    reason="inductor compiles the ImageNet CGN's U2-Net for 10+ minutes on 2 cores; set "
                           "PYCGN_LONG_TESTS=1 (torch.compile in both precisions is tested on the MNIST CGN, "
                           "and the runner is the same for every model)")
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_torch_compile_against_eager(cgn_path, precision):
    if "torch.compile" not in rt.available_backends():
        pytest.skip("torch.compile needs a C++ compiler here")
    _check_backend(cgn_path, "torch.compile", precision)


def test_interpolation_and_grid_in_bfloat16(cgn_path):
    kw = dict(model=cgn_path, seed=0, pad=1, labels=False, device="cpu")
    f32 = pycgn.interpolate("texture", start=1, end=980, steps=3, rows=2, **kw)
    b16 = pycgn.interpolate("texture", start=1, end=980, steps=3, rows=2, precision="bfloat16", **kw)
    d = np.abs(f32.astype(int) - b16.astype(int))
    assert f32.shape == b16.shape and 0 < d.max() <= 8 and d.mean() < 1.0
    g32 = pycgn.grid(row_classes=[1, 2], col_classes=[3], backend="torch", **kw)
    g16 = pycgn.grid(row_classes=[1, 2], col_classes=[3], backend="torch", precision="bfloat16", **kw)
    assert g32.shape == g16.shape and np.abs(g32.astype(int) - g16.astype(int)).max() <= 8
