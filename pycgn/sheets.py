"""Sheets of images: ``tile``, ``grid`` (one mechanism down, another across), ``interpolate``
(one mechanism's class blended), class-name labels on their axes, and image files (PNG, JPEG...)
written atomically.

``tile`` stays label-free: it is the plain layout that the C++ pipeline's PNG grid is compared with."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_path, check_replaceable
from ._memory import check_fits
from .api import MECHANISMS, _composite, get_generator


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
MAX_DEFAULT_CLASSES = 100  # a grid of every class is the default up to this many (not ImageNet's 1000)
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
    check_fits("the sheet's size", 1, height * width * 3, torch.device("cpu"))
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


LABEL_MARGIN = 3  # px of white around label text


def _font(cell_height: int):
    """Pillow's own font (nothing to download), a little larger on large cells (--scale 4: 128 px)."""
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=max(10, round(cell_height / 8)))
    except (TypeError, ImportError):  # Pillow < 10.1, or without FreeType: the fixed-size bitmap font
        return ImageFont.load_default()


def _fit(font, text: str, width: float) -> str:
    """``text`` cut (with "..") to at most ``width`` pixels: long names must not run into the next column."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "..") > width:
        text = text[:-1]
    return text + ".." if text else ""


def label_axes(sheet: np.ndarray, cell: tuple[int, int], pad: int, col_names=(), row_names=(),
               col_title: str = "", row_title: str = "") -> np.ndarray:
    """``sheet`` (a ``tile`` of (h, w) cells) with names above its columns and left of its rows.

    Above: ``col_title`` over the columns, then one name per column; left: one name per row, under
    ``row_title`` (which sits on the column names' line, like a table's header). The sheet itself is
    unchanged in the bottom-right corner of the result."""
    from PIL import Image, ImageDraw
    h, w = cell
    font = _font(h)
    x0, y0, x1, y1 = font.getbbox("Ag")  # the line's height, whatever the letters
    line = y1 - y0 + 2 * LABEL_MARGIN
    lines = int(bool(col_title)) + int(any(col_names) or bool(row_title))
    left = 0
    if any(row_names) or row_title:
        left = int(max(font.getlength(str(t)) for t in (*row_names, row_title))) + 2 * LABEL_MARGIN
    top = lines * line
    sh, sw = sheet.shape[:2]
    image = Image.new("RGB", (left + sw, top + sh), (255, 255, 255))
    image.paste(Image.fromarray(sheet), (left, top))
    draw = ImageDraw.Draw(image)

    def put(text, x, y, anchor):
        draw.text((x, y), text, fill=(0, 0, 0), font=font, anchor=anchor)

    if col_title:
        put(_fit(font, col_title, sw), left + sw / 2, line / 2, "mm")
    names_y = top - line / 2
    for c, name in enumerate(col_names):
        put(_fit(font, str(name), w + pad), left + pad + c * (w + pad) + w / 2, names_y, "mm")
    if row_title:
        put(row_title, left - LABEL_MARGIN, names_y, "rm")
    for r, name in enumerate(row_names):
        put(str(name), left - LABEL_MARGIN, top + pad + r * (h + pad) + h / 2, "rm")
    return np.asarray(image)


def _listed(classes) -> list:
    """One class (an id or a name such as "42") or a sequence of them, as a list."""
    return [classes] if isinstance(classes, (str, int, np.integer)) else list(classes)


def grid(rows: str = "shape", cols: str = "bg", row_classes=None, col_classes=None, shape=None, texture=None,
         bg=None, model="colored_mnist", seed: int = 0, same_noise: bool = True, backend="auto", device="auto",
         path=None, pad: int = 2, scale: int = 1, truncation: float | None = None, labels: bool = True,
         precision: str = "float32") -> np.ndarray:
    """A table of images: mechanism ``rows`` takes each of ``row_classes`` down the rows, ``cols``
    each of ``col_classes`` across; the third mechanism takes its argument (None = random).

    With ``same_noise`` every cell shares the latents and crop offsets of sample 0, so only the
    classes change across the table (the paper's figures). ``labels``: class names on the axes.
    ``precision``: as in ``pycgn.generate``. Returns the sheet; writes a PNG to ``path``.
    """
    for name, mech in (("rows", rows), ("cols", cols)):
        if mech not in MECHANISMS:
            raise ValueError(f"{name} must be one of {', '.join(MECHANISMS)}, got {mech!r}")
    if rows == cols:
        raise ValueError(f"rows and cols must be different mechanisms, both are {rows!r}")
    if path is not None:
        check_writable(path)
    gen = get_generator(model, backend, device, truncation, precision)
    k = len(gen.class_names)
    if k > MAX_DEFAULT_CLASSES and (row_classes is None or col_classes is None):
        raise ValueError(f"row_classes and col_classes are required for a model of {k} classes (the ImageNet CGN)")
    rc = list(range(k)) if row_classes is None else gen.class_ids("row_classes", _listed(row_classes), 0)
    cc = list(range(k)) if col_classes is None else gen.class_ids("col_classes", _listed(col_classes), 0)
    n = len(rc) * len(cc)
    fixed = {"shape": shape, "texture": texture, "bg": bg}
    fixed[rows] = [r for r in rc for _ in cc]
    fixed[cols] = [c for _ in rc for c in cc]
    classes = {m: gen.class_ids(m, v, n) for m, v in fixed.items()}
    sampler = gen.sampler(seed)
    draw = sampler.draw([0] * n if same_noise else range(n), **classes)
    images = gen.images_in_batches(draw)
    sheet = tile(images, cols=len(cc), pad=pad, scale=scale)
    if labels:
        cell = (images.shape[1] * scale, images.shape[2] * scale)
        sheet = label_axes(sheet, cell, pad, [_class_name(gen, c) for c in cc],
                           [_class_name(gen, r) for r in rc], col_title=cols, row_title=rows)
    if path is not None:
        save_image(sheet, path)
    return sheet


def interpolate(mechanism: str = "shape", start=0, end=1, steps: int = 8, rows: int = 4, shape=None,
                texture=None, bg=None, model="colored_mnist", seed: int = 0, device="auto", path=None,
                pad: int = 2, scale: int = 1, truncation: float | None = None, labels: bool = True,
                precision: str = "float32") -> np.ndarray:
    """An interpolation sheet: one mechanism's class moves from ``start`` to ``end`` in ``steps``
    columns (its one-hot class vector blended, which blends the MNIST CGNs' class embeddings and
    the BigGANs' class vectors alike); each of ``rows`` rows keeps its own latents, offsets and
    other classes. ``labels``: the two class names above the first and last columns.
    ``precision``: as in ``pycgn.generate``. Returns the sheet; writes a PNG to ``path``."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be an int >= 1, got {rows!r}")
    if path is not None:
        check_writable(path)
    # class vectors go through the nets as they are: only eager torch takes them (exports take ids)
    gen = get_generator(model, "torch", device, truncation, precision)
    check_fits("rows x steps", rows * steps, 3 * gen.model.image_size ** 2 * 8, gen.device)  # + float32 parts
    a, b = gen.class_ids("start", start, 1), gen.class_ids("end", end, 1)
    for name, v in (("start", a), ("end", b)):
        if not isinstance(v, int):
            raise ValueError(f"{name} must be one class, got {v!r}")
        if not 0 <= v < len(gen.class_names):
            raise ValueError(f"{name} has class id {v}, expected 0..{len(gen.class_names) - 1}")
    classes = {m: gen.class_ids(m, v, rows) for m, v in (("shape", shape), ("texture", texture), ("bg", bg))}
    classes[mechanism] = a
    draw = gen.sampler(seed).draw(range(rows), **classes).to(gen.device)
    alphas = torch.linspace(0, 1, steps, device=gen.device)
    per = max(1, gen.batch_size() // steps)  # rows per forward pass: bounded memory for any rows x steps
    images = torch.cat([_blend(gen, draw.slice(r, r + per), mechanism, a, b, alphas, steps)
                        for r in range(0, rows, per)])
    sheet = tile(images, cols=steps, pad=pad, scale=scale)
    if labels:
        cell = (images.shape[1] * scale, images.shape[2] * scale)
        names = [_class_name(gen, a), *[""] * (steps - 2), _class_name(gen, b)]
        sheet = label_axes(sheet, cell, pad, names, col_title=mechanism)
    if path is not None:
        save_image(sheet, path)
    return sheet


def _class_name(gen, class_id: int) -> str:
    """A class's name for a label (ImageNet's "goldfish, Carassius auratus" -> "goldfish")."""
    return gen.class_names[class_id].split(",")[0]


def _blend(gen, draw, mechanism, a, b, alphas, steps):
    """``steps`` images per row of ``draw``: noise, offsets and the other classes fixed, the class
    vector of ``mechanism`` moving from one-hot ``a`` to one-hot ``b``."""
    import torch.nn.functional as F
    k = gen.model.n_classes
    vec = {m: F.one_hot(getattr(draw, m), k).float().repeat_interleave(steps, 0) for m in MECHANISMS}
    ends = F.one_hot(torch.tensor([a, b], device=alphas.device), k).float()
    vec[mechanism] = ((1 - alphas)[:, None] * ends[0] + alphas[:, None] * ends[1]).repeat(len(draw), 1)
    u = {m: getattr(draw, f"u_{m}").repeat_interleave(steps, 0) for m in MECHANISMS}
    mask, fg, bg = gen.run(u["shape"], vec["shape"], u["texture"], vec["texture"], u["bg"], vec["bg"])
    fo = draw.fg_offset.repeat_interleave(steps, 0)
    bo = draw.bg_offset.repeat_interleave(steps, 0)
    with torch.inference_mode():
        return _composite(mask, fg, bg, fo, bo, "uint8", "NHWC")
