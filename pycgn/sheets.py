"""Sheets of images: ``tile``, ``grid`` (one mechanism down, another across), ``interpolate``
(one mechanism's class blended), and image files (PNG, JPEG...) written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_path, check_replaceable
from .api import MECHANISMS, _check_fits, _composite, get_generator


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
MAX_SIDE = {"JPEG": 65_535, "WEBP": 16_383}  # the formats' own limits; PNG and the others: 2**31 - 1


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def tile(images, cols: int, pad: int = 2, scale: int = 1, fill: int = 255) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*(H*scale+pad)+pad, cols*(W*scale+pad)+pad, 3) sheet, row-major."""
    images = np.asarray(images.cpu() if isinstance(images, torch.Tensor) else images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    cols, scale = _positive("cols", cols), _positive("scale", scale)
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be an int >= 0, got {pad!r}")
    n, h, w, _ = images.shape
    h, w = h * scale, w * scale  # Python ints: no overflow, however large the request
    rows = max(1, -(-n // cols))
    height, width = rows * (h + pad) + pad, cols * (w + pad) + pad
    if max(height, width) > 2**31 - 1:
        raise ValueError(f"the sheet would be {width} x {height} pixels, more than an image file can hold; "
                         f"lower scale ({scale}) or cols ({cols})")
    _check_fits("the sheet's size", 1, height * width * 3, torch.device("cpu"))
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    sheet = np.full((height, width, 3), fill, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = images[i]
    return sheet


def image_format(path) -> str:
    """The file format a path's suffix names (no suffix: PNG); a clear error for others."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "PNG"
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"output {path}: unknown image type {suffix!r}; use one of "
                         f"{', '.join(sorted(IMAGE_FORMATS))}")
    return IMAGE_FORMATS[suffix]


def check_writable(path) -> Path:
    """Fail before any work if ``path`` cannot be written: its folder is missing or read-only,
    its type is unknown, or something other than a writable regular file is there."""
    path = check_replaceable(path)
    image_format(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output folder {folder} is not writable")
    return path


def save_image(array: np.ndarray, path) -> Path:
    """Write a uint8 (H, W, 3) array atomically, in the format the suffix names (PNG, JPEG...)."""
    from PIL import Image
    path = check_writable(path)
    fmt = image_format(path)
    if max(array.shape[:2]) > MAX_SIDE.get(fmt, 2**31 - 1):
        raise ValueError(f"output {path}: {fmt} holds at most {MAX_SIDE[fmt]} pixels a side, the sheet is "
                         f"{array.shape[1]} x {array.shape[0]}; write a .png")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return path


def _listed(classes) -> list:
    """One class (an id or a name such as "42") or a sequence of them, as a list."""
    return [classes] if isinstance(classes, (str, int, np.integer)) else list(classes)


def grid(rows: str = "shape", cols: str = "bg", row_classes=None, col_classes=None, shape=None, texture=None,
         bg=None, model="colored_mnist", seed: int = 0, same_noise: bool = True, backend="auto", device="auto",
         path=None, pad: int = 2, scale: int = 1, truncation: float | None = None) -> np.ndarray:
    """A table of images: mechanism ``rows`` takes each of ``row_classes`` down the rows, ``cols``
    each of ``col_classes`` across; the third mechanism takes its argument (None = random).

    With ``same_noise`` every cell shares the latents and crop offsets of sample 0, so only the
    classes change across the table (the paper's figures). Returns the sheet; writes a PNG to ``path``.
    """
    for name, mech in (("rows", rows), ("cols", cols)):
        if mech not in MECHANISMS:
            raise ValueError(f"{name} must be one of {', '.join(MECHANISMS)}, got {mech!r}")
    if rows == cols:
        raise ValueError(f"rows and cols must be different mechanisms, both are {rows!r}")
    if path is not None:
        check_writable(path)
    gen = get_generator(model, backend, device, truncation)
    k = len(gen.class_names)
    if gen.kind == "imagenet_cgn" and (row_classes is None or col_classes is None):
        raise ValueError("row_classes and col_classes are required for the ImageNet CGN (1000 classes)")
    rc = list(range(k)) if row_classes is None else gen.class_ids("row_classes", _listed(row_classes), 0)
    cc = list(range(k)) if col_classes is None else gen.class_ids("col_classes", _listed(col_classes), 0)
    n = len(rc) * len(cc)
    fixed = {"shape": shape, "texture": texture, "bg": bg}
    fixed[rows] = [r for r in rc for _ in cc]
    fixed[cols] = [c for _ in rc for c in cc]
    classes = {m: gen.class_ids(m, v, n) for m, v in fixed.items()}
    sampler = gen.sampler(seed)
    draw = sampler.draw([0] * n if same_noise else range(n), **classes)
    sheet = tile(gen.images(draw), cols=len(cc), pad=pad, scale=scale)
    if path is not None:
        save_image(sheet, path)
    return sheet


def interpolate(mechanism: str = "shape", start=0, end=1, steps: int = 8, rows: int = 4, shape=None,
                texture=None, bg=None, model="colored_mnist", seed: int = 0, device="auto", path=None,
                pad: int = 2, scale: int = 1, truncation: float | None = None) -> np.ndarray:
    """An interpolation sheet: one mechanism's class embedding moves from ``start`` to ``end`` in
    ``steps`` columns; each of ``rows`` rows keeps its own latents, offsets and other classes.
    Returns the sheet; writes a PNG to ``path``."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be an int >= 1, got {rows!r}")
    if path is not None:
        check_writable(path)
    gen = get_generator(model, "torch", device, truncation)
    _check_fits("rows x steps", rows * steps, 3 * gen.model.image_size ** 2 * 8, gen.device)  # + float32 parts
    a, b = gen.class_ids("start", start, 1), gen.class_ids("end", end, 1)
    for name, v in (("start", a), ("end", b)):
        if not isinstance(v, int):
            raise ValueError(f"{name} must be one class, got {v!r}")
        if not 0 <= v < len(gen.class_names):
            raise ValueError(f"{name} has class id {v}, expected 0..{len(gen.class_names) - 1}")
    classes = {m: gen.class_ids(m, v, rows) for m, v in (("shape", shape), ("texture", texture), ("bg", bg))}
    classes[mechanism] = a
    draw = gen.sampler(seed).draw(range(rows), **classes).to(gen.device)
    m = gen.model
    alphas = torch.linspace(0, 1, steps, device=gen.device)
    if gen.kind == "imagenet_cgn":
        images = _interpolate_class_vectors(m, draw, mechanism, a, b, alphas, rows, steps)
        sheet = tile(images, cols=steps, pad=pad, scale=scale)
        if path is not None:
            save_image(sheet, path)
        return sheet
    emb = m.label_emb.weight.detach()
    nets = {"shape": m.f_shape, "texture": m.f_text1, "bg": m.f_text2}
    us = {"shape": draw.u_shape, "texture": draw.u_texture, "bg": draw.u_bg}
    ys = {"shape": draw.shape, "texture": draw.texture, "bg": draw.bg}
    with torch.inference_mode():
        outs = {}
        for mech, net in nets.items():
            u = us[mech].repeat_interleave(steps, 0)
            if mech == mechanism:
                e = (1 - alphas)[:, None] * emb[a] + alphas[:, None] * emb[b]
                e = e.repeat(rows, 1)
            else:
                e = emb[ys[mech]].repeat_interleave(steps, 0)
            outs[mech] = net(torch.cat([u, e], 1))
        fo = draw.fg_offset.repeat_interleave(steps, 0)
        bo = draw.bg_offset.repeat_interleave(steps, 0)
        images = _composite(outs["shape"], outs["texture"], outs["bg"], fo, bo, "uint8", "NHWC")
    sheet = tile(images, cols=steps, pad=pad, scale=scale)
    if path is not None:
        save_image(sheet, path)
    return sheet


def _interpolate_class_vectors(model, draw, mechanism, a, b, alphas, rows, steps):
    """The published ImageNet sheets: noise fixed, one mechanism's one-hot class vector blended."""
    import torch.nn.functional as F
    k = model.n_classes
    vec = {m: F.one_hot(getattr(draw, m), k).float().repeat_interleave(steps, 0) for m in MECHANISMS}
    vec[mechanism] = ((1 - alphas)[:, None] * F.one_hot(torch.tensor(a), k).float().to(alphas.device)
                      + alphas[:, None] * F.one_hot(torch.tensor(b), k).float().to(alphas.device)).repeat(rows, 1)
    u = {m: getattr(draw, f"u_{m}").repeat_interleave(steps, 0) for m in MECHANISMS}
    with torch.inference_mode():
        mask, fg, bg = model(u["shape"], vec["shape"], u["texture"], vec["texture"], u["bg"], vec["bg"])
        n = mask.shape[0]
        zero = torch.zeros(n, 2, dtype=torch.int64, device=mask.device)
        return _composite(mask, fg, bg, zero, zero, "uint8", "NHWC")
