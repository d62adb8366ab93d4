"""pycgn.generate, Generator, grid and interpolate: argument forms, errors, reproducibility, parts."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import pycgn
from pycgn import reference
from conftest import random_mnist


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A saved random-weight model: the API does not depend on which weights it runs."""
    m = random_mnist(0)
    return pycgn.save(m, tmp_path_factory.mktemp("models") / "random.pt", variant="custom")


def gen(model_path, **kw):
    return pycgn.generate(model=model_path, backend="torch", device="cpu", **kw)


def test_single_image_and_types(model_path):
    img = gen(model_path, shape=3, texture=7, bg=1, seed=0)
    assert isinstance(img, np.ndarray) and img.shape == (1, 32, 32, 3) and img.dtype == np.uint8
    t = gen(model_path, shape=3, texture=7, bg=1, seed=0, output="torch")
    assert isinstance(t, torch.Tensor) and np.array_equal(t.numpy(), img)
    pil = gen(model_path, shape=3, texture=7, bg=1, seed=0, output="pil")
    assert isinstance(pil[0], Image.Image) and np.array_equal(np.asarray(pil[0]), img[0])
    assert img.std() > 1, "images should not be constant"


def test_same_seed_same_images_other_seed_differs(model_path):
    a = gen(model_path, n=8, seed=5)
    b = gen(model_path, n=8, seed=5)
    c = gen(model_path, n=8, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_seed_none_is_recorded(model_path):
    p = gen(model_path, n=2, return_parts=True)
    again = gen(model_path, n=2, seed=p.seed)
    assert np.array_equal(p.images, again)


def test_class_argument_forms(model_path):
    p = gen(model_path, shape="4", texture=[1, None, 3], bg=np.array([2, 2, 9]), n=3, seed=1, return_parts=True)
    assert p.shape.tolist() == [4, 4, 4]
    assert p.texture[0] == 1 and p.texture[2] == 3
    assert p.bg.tolist() == [2, 2, 9]
    broadcast = gen(model_path, shape=[0, 1, 2, 3, 4], seed=1, return_parts=True)  # n=1 broadcasts to 5
    assert broadcast.shape.tolist() == [0, 1, 2, 3, 4] and len(broadcast.images) == 5
    tensor = gen(model_path, shape=torch.tensor([5, 6]), n=2, seed=1, return_parts=True, output="torch")
    assert tensor.shape.tolist() == [5, 6]


def test_changing_one_class_changes_only_its_part(model_path):
    a = gen(model_path, shape=3, texture=7, bg=1, seed=2, return_parts=True, output="torch")
    b = gen(model_path, shape=3, texture=7, bg=8, seed=2, return_parts=True, output="torch")
    assert torch.equal(a.mask, b.mask) and torch.equal(a.foreground, b.foreground)
    assert not torch.equal(a.background, b.background)


def test_parts_recompute_images_through_the_reference(model_path):
    p = gen(model_path, n=6, seed=3, return_parts=True, output="torch")
    assert p.mask.shape == (6, 1, 32, 32) and p.foreground.shape == p.background.shape == (6, 3, 32, 32)
    assert p.u_shape.shape == (6, 32) and p.fg_offset.shape == (6, 2) and p.fg_offset.dtype == torch.int64
    assert float(p.mask.min()) >= np.float32(1e-4) and float(p.mask.max()) <= np.float32(0.9999)
    again = reference.composite(p.mask, p.foreground, p.background, out_dtype="uint8", layout="NHWC")
    assert torch.equal(again, p.images)  # the kernel and the reference agree bit for bit
    # and from the inputs alone, through the model and the reference
    model = pycgn.load(model_path)
    with torch.no_grad():
        mask, fg, bg = model(p.u_shape, p.shape, p.u_texture, p.texture, p.u_bg, p.bg)
    full = reference.composite(mask, fg, bg, p.fg_offset, p.bg_offset, out_dtype="uint8", layout="NHWC")
    assert np.abs(full.numpy().astype(int) - p.images.numpy().astype(int)).max() <= 1


def test_batch_independence(model_path):
    g = pycgn.Generator(model_path, backend="torch", device="cpu")
    s = g.sampler(9)
    whole = g.images(s.draw(range(0, 20)))
    parts = torch.cat([g.images(s.draw(range(a, min(a + 7, 20)))) for a in range(0, 20, 7)])
    assert (whole.int() - parts.int()).abs().max() <= 1


def test_generator_threads(model_path):
    g = pycgn.Generator(model_path, backend="torch", device="cpu")
    expected = [g.generate(n=4, seed=s) for s in range(8)]
    results = [None] * 8

    def work(i):
        results[i] = g.generate(n=4, seed=i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(expected, results):
        assert np.array_equal(a, b)


def test_one_rule_for_zero_images(model_path, tmp_path):
    # the API, the CLI (test_cli) and synth (test_synth) all ask for at least one image
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        gen(model_path, n=0, seed=0)
    with pytest.raises(ValueError, match="shape has no entries"):
        gen(model_path, shape=[], seed=0)


@pytest.mark.parametrize("output, kind", [("numpy", np.ndarray), ("torch", torch.Tensor), ("pil", np.ndarray)])
def test_parts_are_all_of_the_kind_asked_for(model_path, output, kind):
    p = gen(model_path, n=2, seed=0, return_parts=True, output=output)
    fields = [f for f in p.__dataclass_fields__ if f not in ("images", "seed", "backend")]
    assert [f for f in fields if not isinstance(getattr(p, f), kind)] == []
    if output == "pil":
        assert [im.size for im in p.images] == [(32, 32), (32, 32)]
    else:
        assert isinstance(p.images, kind)


@pytest.mark.parametrize("kw, exc, words", [
    (dict(shape=10), ValueError, "shape has class id 10"),
    (dict(texture=-1), ValueError, "texture has class id -1"),
    (dict(bg="seven"), ValueError, "bg: unknown class 'seven'"),
    (dict(shape=1.5), TypeError, "shape must be a class id"),
    (dict(shape=[1, 2], n=3), ValueError, "shape has 2 entries"),
    (dict(n=-1), ValueError, "n must be >= 1"),
    (dict(n=2.0), TypeError, "n must be an int"),
    (dict(output="jpeg"), ValueError, "output must be one of"),
    (dict(seed=-5), ValueError, "seed must be in"),
])
def test_bad_arguments(model_path, kw, exc, words):
    with pytest.raises(exc, match=words):
        gen(model_path, **kw)


def test_bad_model_and_device():
    with pytest.raises(ValueError, match="model must be one of"):
        pycgn.generate(model="no_such_model")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        pycgn.generate(model="/tmp/nope/nope.pt")
    with pytest.raises(ValueError, match="device"):
        pycgn.Generator(pycgn.MnistCGN(), device="tpu")


def test_grid_table(model_path, tmp_path):
    out = tmp_path / "grid.png"
    sheet = pycgn.grid(rows="shape", cols="bg", row_classes=[1, 2, 3], col_classes=[4, 5], texture=6,
                       model=model_path, seed=0, path=out, pad=2, scale=1, labels=False)
    assert sheet.shape == (3 * 34 + 2, 2 * 34 + 2, 3)
    png = np.asarray(Image.open(out))
    assert np.array_equal(png, sheet)
    labelled = pycgn.grid(rows="shape", cols="bg", row_classes=[1, 2, 3], col_classes=[4, 5], texture=6,
                          model=model_path, seed=0, path=out, pad=2, scale=1)
    assert np.array_equal(np.asarray(Image.open(out)), labelled)
    _assert_labelled(labelled, sheet, left=True)
    # cell (row 2, col 1) is shape 3 on background 5 with texture 6
    one = pycgn.Generator(model_path, backend="torch", device="cpu")
    cell = one.images(one.sampler(0).draw([0], shape=3, texture=6, bg=5))[0].numpy()
    assert np.abs(sheet[2 + 2 * 34: 2 + 2 * 34 + 32, 2 + 34: 2 + 34 + 32].astype(int) - cell.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="rows and cols must be different"):
        pycgn.grid(rows="bg", cols="bg", model=model_path)


def _assert_labelled(labelled, plain, left):
    """``labelled`` is ``plain`` with text above it (and left of it if ``left``), nothing else changed."""
    top, width = labelled.shape[0] - plain.shape[0], labelled.shape[1] - plain.shape[1]
    assert top > 0 and (width > 0) == left, (labelled.shape, plain.shape)
    assert np.array_equal(labelled[top:, width:], plain)
    assert (labelled[:top] < 128).any(), "no text above the sheet"
    if left:
        assert (labelled[top:, :width] < 128).any(), "no text left of the sheet"


def test_interpolation_sheet(model_path, tmp_path):
    out = tmp_path / "interp.png"
    sheet = pycgn.interpolate("texture", start=1, end=8, steps=5, rows=2, shape=3, model=model_path, path=out,
                              scale=1, device="cpu", labels=False)
    assert sheet.shape == (2 * 34 + 2, 5 * 34 + 2, 3) and out.is_file()
    labelled = pycgn.interpolate("texture", start=1, end=8, steps=5, rows=2, shape=3, model=model_path, scale=1,
                                 device="cpu")
    _assert_labelled(labelled, sheet, left=False)
    first = pycgn.Generator(model_path, backend="torch", device="cpu")
    ends = first.images(first.sampler(0).draw(range(2), shape=3, texture=[1, 1]))
    left = sheet[2:34, 2:34]
    assert np.abs(left.astype(int) - ends[0].numpy().astype(int)).max() <= 1
    assert not np.array_equal(sheet[2:34, 2:34], sheet[2:34, 2 + 4 * 34: 34 + 4 * 34])
    with pytest.raises(ValueError, match="steps must be an int >= 2"):
        pycgn.interpolate(steps=1, model=model_path)


def test_unwritable_output(model_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pycgn.grid(model=model_path, path=tmp_path / "missing" / "g.png")


def test_reprs_are_short_and_informative(model_path):
    g = pycgn.Generator(model_path, backend="torch", device="cpu")
    assert repr(g).startswith("Generator(model='custom', kind='mnist_cgn', backend='torch', precision='float32', device='cpu'")
    p = g.generate(n=3, seed=0, return_parts=True)
    text = repr(p)
    assert text.startswith("Parts(n=3, images=uint8 (3, 32, 32, 3), mask=float32 (3, 1, 32, 32)") and len(text) < 600
