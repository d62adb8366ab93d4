"""Off-palette test sets: the held-out digits in colours and textures no model was trained on.

The palette test (``pycgn.data.mnist``, ``biased=False``) draws test colours from the same ten
palette colours the models saw in training, so it cannot tell whether a classifier trained
on counterfactuals learned "shape" or only "shape, in one of ten colours". Here:

- ``colored_mnist``: the stroke colour is uniform in the RGB cube, the background black as in
  training (the CGN's own background is black, so only the stroke colour is off the palette).
- ``double_colored_mnist``: stroke and background colours both uniform in the RGB cube.
- ``wildlife_mnist``: object and background textures cut from the published texture photos
  (striped objects, veined backgrounds) found under ``texture_dir`` at run time; they are
  data of the published code and are never copied into this package. Absent: ``TexturesMissing``.

Contrast: a uniform stroke colour may land next to its background colour and leave a digit no
one could read. Colours are redrawn until their Euclidean RGB distance (on [0, 1]) is at least
``MIN_CONTRAST`` = 0.4: about three standard deviations of the training colour jitter
(std 0.14 per channel) and a quarter of the cube's diagonal, so near-invisible digits are out
while most of the cube stays in (about 90 % of uniform pairs pass).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import mnist
from ..models.base import VARIANTS

MIN_CONTRAST = 0.4
# where the published checkpoints' texture photos usually are (read at test time only)
TEXTURE_DIR_ENV = "PYCGN_TEXTURE_DIR"
_REFERENCE = Path("shared", "reference", "cgn_mnist_official", "textures")
# beside the checkout (a source install) and beside the working directory
_DEFAULT_TEXTURE_DIRS = (Path(__file__).resolve().parents[3] / _REFERENCE, Path("..") / _REFERENCE)
PHOTO_SIZE = 64  # photos are resized to this square; 32x32 windows are cut from it


class TexturesMissing(FileNotFoundError):
    """The texture photos of the off-palette wildlife test are not on this machine."""


def contrasting_colours(n: int, g: torch.Generator, background=None,
                        min_contrast: float = MIN_CONTRAST) -> tuple[torch.Tensor, torch.Tensor]:
    """n (stroke, background) colour pairs, each (n, 3) in [0, 1], uniform in the RGB cube
    subject to a distance of at least ``min_contrast``. ``background`` (3 values) fixes the
    background colour (black for colored MNIST); otherwise it is drawn too. Seeded by ``g``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not 0.0 <= min_contrast <= 1.0:
        raise ValueError(f"min_contrast must be in [0, 1] (a distance reachable from any colour), "
                         f"got {min_contrast!r}")
    fg = torch.rand(n, 3, generator=g)
    bg = (torch.tensor(background, dtype=torch.float32).expand(n, 3).clone() if background is not None
          else torch.rand(n, 3, generator=g))
    bad = (fg - bg).norm(dim=1) < min_contrast
    while bool(bad.any()):  # redraw only the failures: the accepted ones keep their draws
        k = int(bad.sum())
        fg[bad] = torch.rand(k, 3, generator=g)
        if background is None:
            bg[bad] = torch.rand(k, 3, generator=g)
        bad = (fg - bg).norm(dim=1) < min_contrast
    return fg, bg


def texture_dir(path=None) -> Path:
    """The directory with ``object/`` and ``background/`` photos, or ``TexturesMissing``."""
    cands = [path] if path is not None else [os.environ.get(TEXTURE_DIR_ENV), *_DEFAULT_TEXTURE_DIRS]
    for c in cands:
        if c and (Path(c) / "object").is_dir() and (Path(c) / "background").is_dir():
            return Path(c)
    raise TexturesMissing(f"texture photos not found (looked in {', '.join(str(c) for c in cands if c)}): "
                          f"set {TEXTURE_DIR_ENV} or pass texture_dir= to a directory with object/ "
                          "and background/ photos")


def _photos(folder: Path) -> torch.Tensor:
    """All images in ``folder``, resized to PHOTO_SIZE squares: float (K, 3, S, S) in [0, 1]."""
    from PIL import Image
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise TexturesMissing(f"{folder}: no .jpg/.png photos")
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            s = min(im.size)  # centre square, then down: keeps the texture's aspect
            left, top = (im.size[0] - s) // 2, (im.size[1] - s) // 2
            im = im.crop((left, top, left + s, top + s)).resize((PHOTO_SIZE, PHOTO_SIZE), Image.BILINEAR)
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(out)


def _windows(tex: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n 32x32 windows of random photos at random offsets (not circular: photos do not tile)."""
    k, size = tex.shape[0], tex.shape[-1]
    idx = torch.randint(k, (n,), generator=g)
    off = torch.randint(size - mnist.IMAGE_SIZE + 1, (n, 2), generator=g)
    r = torch.arange(mnist.IMAGE_SIZE)
    ys, xs = r[None] + off[:, :1], r[None] + off[:, 1:]
    return tex[idx[:, None, None], :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)


def build(variant: str, seed: int = 0, mnist_dir=None, texture_dir_=None) -> mnist.MnistSplit:
    """The off-palette test set of ``variant``: the held-out digits (split 'test'), images
    float32 (N, 3, 32, 32) in [-1, 1]. The same arguments give the same tensors."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    digits, labels = mnist.load_digits("test", mnist_dir)
    d = mnist._resize(digits)
    n = d.shape[0]
    # a stream of its own: the palette test at the same seed uses seed * 2 + 1
    g = torch.Generator().manual_seed(int(seed) * 2 + 7919)
    if variant == "colored_mnist":
        m = d  # grey strokes times the colour on black, as in training
        fg, bg = contrasting_colours(n, g, background=(0.0, 0.0, 0.0))
        fg, bg = fg[:, :, None, None].expand(n, 3, 32, 32), bg[:, :, None, None].expand(n, 3, 32, 32)
    elif variant == "double_colored_mnist":
        m = (d > 0.1).float()
        fg, bg = contrasting_colours(n, g)
        fg, bg = fg[:, :, None, None].expand(n, 3, 32, 32), bg[:, :, None, None].expand(n, 3, 32, 32)
    else:
        m = (d > 0.1).float()
        root = texture_dir(texture_dir_)
        fg = _windows(_photos(root / "object"), n, g)
        bg = _windows(_photos(root / "background"), n, g)
    images = (m * (fg * 2 - 1) + (1.0 - m) * (bg * 2 - 1)).contiguous()
    return mnist.MnistSplit(images, torch.from_numpy(labels), variant, "test", False)
