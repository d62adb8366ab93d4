"""The user-facing API: ``pycgn.generate``, ``pycgn.Generator``, ``pycgn.grid``, ``pycgn.interpolate``."""
from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import _checks, reference
from ._io import atomic_path
from .checkpoint import load
from .sampler import Draw, Sampler

MECHANISMS = ("shape", "texture", "bg")
OUTPUTS = ("numpy", "torch", "pil")


def _device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA device here")
    return dev


def _composite(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, out=None):
    try:
        from .ops import composite
    except ImportError:  # the kernel module is not part of this install
        images = reference.composite(mask, fg, bg, fg_offset, bg_offset, out_dtype=out_dtype, layout=layout)
        if out is not None:
            out.copy_(images)
            return out
        return images
    return composite(mask, fg, bg, fg_offset, bg_offset, out_dtype=out_dtype, layout=layout, out=out)


class _EagerRunner:
    name = "torch"
    providers = ("torch-eager",)

    def __init__(self, model):
        self.model = model

    def __call__(self, *inputs):
        with torch.inference_mode():
            return self.model(*inputs)


def _make_runner(model, backend, device):
    if getattr(model, "kind", "mnist_cgn") != "mnist_cgn":
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend {backend!r} is not available for the {model.kind}; use 'torch' "
                             "(or export it with pycgn.export.export)")
        return _EagerRunner(model)
    try:
        from .runtime import make_runner
    except ImportError:
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend {backend!r} is not available in this install; use 'torch'") from None
        return _EagerRunner(model)
    return make_runner(model, backend=backend, device=device)


@dataclass
class Parts:
    """Everything that fixes a batch of images; ``pycgn.reference`` recomputes ``images`` from it."""
    images: np.ndarray | torch.Tensor  # (N, H, W, 3) uint8
    mask: torch.Tensor                 # (N, 1, H, W) float32, clamped
    foreground: torch.Tensor           # (N, 3, H, W) float32, after the crop
    background: torch.Tensor           # (N, 3, H, W) float32, after the crop
    shape: torch.Tensor                # (N,) int64 classes
    texture: torch.Tensor
    bg: torch.Tensor
    u_shape: torch.Tensor              # (N, latent) float32
    u_texture: torch.Tensor
    u_bg: torch.Tensor
    fg_offset: torch.Tensor            # (N, 2) int64, (dy, dx)
    bg_offset: torch.Tensor
    index: torch.Tensor                # (N,) int64 sample numbers
    seed: int
    backend: str

    def __len__(self) -> int:
        return int(self.shape.shape[0])


class _ImagenetSampler:
    """The ImageNet CGN's draws (truncated noise, 1000 classes, zero offsets) behind the Sampler API."""

    def __init__(self, model, seed: int, counterfactuals: int = 1):
        self.model, self.seed, self.counterfactuals = model, seed, counterfactuals
        model.sampler_draw(seed, [])  # validates the seed now rather than at the first draw

    def draw(self, indices, shape=None, texture=None, bg=None) -> Draw:
        return self.model.sampler_draw(self.seed, indices, shape=shape, texture=texture, bg=bg,
                                       counterfactuals=self.counterfactuals)

    def draw_n(self, n: int, start: int = 0, **classes) -> Draw:
        n = _checks.count("n", n)
        return self.draw(range(start, start + n), **classes)


class Generator:
    """A CGN held on one device for many calls, without reloading.

    ``Generator("colored_mnist").generate(shape=3, n=8, seed=0)``. Thread safety: a Generator may
    be shared by threads; calls are serialised by a lock (each call already uses every core
    through PyTorch's intra-op threads, and the runtimes reuse internal buffers between calls).
    """

    def __init__(self, model="colored_mnist", backend="auto", device="auto", truncation: float | None = None):
        self.device = _device(device)
        if isinstance(model, torch.nn.Module):
            self.model = model
            if truncation is not None:
                if getattr(model, "kind", "") != "imagenet_cgn":
                    raise ValueError("truncation applies to the ImageNet CGN only")
                from .models.imagenet import _check_truncation
                model.truncation = _check_truncation(truncation)
        else:
            self.model = load(model, truncation=truncation)
        if not hasattr(self.model, "info"):
            from .checkpoint import ModelInfo, weights_sha256
            self.model.info = ModelInfo(sha256=weights_sha256(self.model.state_dict()),
                                        image_size=self.model.image_size)
        self.model.to(self.device).eval()
        self._runner = _make_runner(self.model, backend, self.device)
        self._lock = threading.Lock()

    @property
    def info(self):
        return self.model.info

    @property
    def kind(self) -> str:
        return getattr(self.model, "kind", "mnist_cgn")

    @property
    def backend(self) -> str:
        return self._runner.name

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.model.info.class_names)

    def pin(self, n: int) -> str:
        """Fix ``backend="auto"`` to the backend it picks for batches of ``n`` (measured now on
        first use) and return its name. Backends differ in the last bits, so a dataset that must be
        bit-identical whatever the batch size pins one backend for its whole run."""
        candidates = getattr(self._runner, "candidates", None)
        if not candidates:
            return self._runner.name
        chosen = self._runner.backend_for(n)
        if not chosen:  # first use of this batch-size class here: one call measures the candidates
            self.images(self.sampler(0).draw(range(n)))
            chosen = self._runner.backend_for(n) or self._runner.name
        with self._lock:
            self._runner = candidates[chosen]
        return chosen

    def sampler(self, seed: int, counterfactuals: int = 1) -> Sampler:
        """The seeded sampler of this model's inputs (for the ImageNet CGN: truncated noise)."""
        m = self.model
        if self.kind == "imagenet_cgn":
            return _ImagenetSampler(m, seed, counterfactuals)
        return Sampler(seed, n_classes=m.n_classes, latent_dim=m.latent_dim, max_offset=m.image_size,
                       counterfactuals=counterfactuals)

    def _forward(self, d: Draw):
        return self._runner(d.u_shape, d.shape, d.u_texture, d.texture, d.u_bg, d.bg)

    def images(self, draw: Draw, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 images (N, H, W, 3) for the inputs ``draw``, written into ``out`` if given."""
        d = draw.to(self.device)
        with self._lock, torch.inference_mode():
            mask, fg, bg = self._forward(d)
            return _composite(mask, fg, bg, d.fg_offset, d.bg_offset, "uint8", "NHWC", out=out)

    def parts(self, draw: Draw, seed: int = -1) -> Parts:
        """Images and every part that made them (mask, cropped textures, inputs)."""
        d = draw.to(self.device)
        with self._lock, torch.inference_mode():
            mask, fg, bg = self._forward(d)
            images = _composite(mask, fg, bg, d.fg_offset, d.bg_offset, "uint8", "NHWC")
            h, w = mask.shape[-2:]
            return Parts(images=images, mask=mask.clamp(*reference.CLAMP),
                         foreground=reference.crop(fg, d.fg_offset, h, w),
                         background=reference.crop(bg, d.bg_offset, h, w),
                         shape=d.shape, texture=d.texture, bg=d.bg, u_shape=d.u_shape,
                         u_texture=d.u_texture, u_bg=d.u_bg, fg_offset=d.fg_offset, bg_offset=d.bg_offset,
                         index=d.index, seed=seed, backend=self.backend)

    def class_ids(self, name: str, value, n: int):
        """Class arguments (id, name, sequence with None entries) -> what ``Sampler.draw`` takes."""
        names = self.class_names

        def one(v):
            if v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)):
                return v
            if isinstance(v, str):
                if self.kind == "imagenet_cgn":
                    from .models.imagenet import class_id
                    return class_id(v, name)
                if v in names:
                    return names.index(v)
                if v.strip().lstrip("-").isdigit():
                    return int(v)
                raise ValueError(f"{name}: unknown class {v!r}; expected an id 0..{len(names) - 1} or one of "
                                 f"{', '.join(names[:12])}{'...' if len(names) > 12 else ''}")
            raise TypeError(f"{name} must be a class id, a class name, a sequence of them or None, "
                            f"got {type(v).__name__}")

        if value is None or isinstance(value, (str, int, np.integer)):
            return one(value)
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if isinstance(value, np.ndarray):
            if value.ndim != 1:
                raise ValueError(f"{name} must be one-dimensional, got shape {value.shape}")
            value = value.tolist()
        try:
            items = [one(v) for v in value]
        except TypeError as e:
            if "must be a class id" in str(e):
                raise
            raise TypeError(f"{name} must be a class id, a class name, a sequence of them or None, "
                            f"got {type(value).__name__}") from None
        return items

    def generate(self, shape=None, texture=None, bg=None, n: int = 1, seed: int | None = None,
                 output: str = "numpy", return_parts: bool = False, start: int = 0):
        """See ``pycgn.generate``."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        classes = {k: self.class_ids(k, v, n) for k, v in (("shape", shape), ("texture", texture), ("bg", bg))}
        lengths = {k: len(v) for k, v in classes.items() if isinstance(v, list) and len(v) != 1}
        count = int(n)
        for k, length in lengths.items():
            if count == 1 and n == 1:
                count = length
            elif length != count:
                raise ValueError(f"{k} has {length} entries, which does not broadcast against n={count}")
        if seed is None:
            seed = secrets.randbits(63)
        draw = self.sampler(seed).draw(range(start, start + count), **classes)
        if return_parts:
            parts = self.parts(draw, seed=seed)
            parts.images = _as_output(parts.images, output)
            return parts
        return _as_output(self.images(draw), output)


def _as_output(images: torch.Tensor, output: str):
    if output == "torch":
        return images
    arr = images.cpu().numpy()
    if output == "pil":
        from PIL import Image
        return [Image.fromarray(a) for a in arr]
    return arr


@lru_cache(maxsize=4)
def _cached_generator(model, backend, device, truncation) -> Generator:
    return Generator(model, backend=backend, device=device, truncation=truncation)


def get_generator(model="colored_mnist", backend="auto", device="auto", truncation=None) -> Generator:
    """A Generator kept for reuse across ``pycgn.generate`` calls (by model, backend, device, truncation)."""
    if isinstance(model, torch.nn.Module):
        return Generator(model, backend=backend, device=device, truncation=truncation)
    if isinstance(model, os.PathLike) or (isinstance(model, str) and os.sep in model):
        model = str(Path(model).expanduser().resolve())
    return _cached_generator(model, backend, str(_device(device)), truncation)


def generate(shape=None, texture=None, bg=None, n: int = 1, model="colored_mnist", seed: int | None = None,
             backend: str = "auto", device: str = "auto", output: str = "numpy", return_parts: bool = False,
             truncation: float | None = None):
    """Counterfactual images in one call.

    ``shape``, ``texture``, ``bg``: a class id, a class name, a sequence of ids/names (entries may be
    None = random), or None (all random); broadcast against ``n``. Returns uint8 images
    ``(N, H, W, 3)`` as numpy (``output="torch"`` or ``"pil"`` also); with ``return_parts=True`` a
    ``Parts`` object with the images, masks, cropped textures and every input. The same ``seed``
    gives the same images; ``seed=None`` draws one (recorded in ``Parts.seed``).

    ``model`` may also be a published ImageNet CGN (``cgn.pth``): classes are ImageNet-1k ids or
    names, ``truncation`` (default 0.5) scales the noise and picks the BigGANs' statistics.

    >>> img = pycgn.generate(shape=3, texture=7, bg=1, seed=0)  # a "3" coloured like a "7" on a "1"'s background
    """
    return get_generator(model, backend, device, truncation).generate(shape, texture, bg, n=n, seed=seed, output=output,
                                                          return_parts=return_parts)


# -- sheets -----------------------------------------------------------------------------------------

def tile(images, cols: int, pad: int = 2, scale: int = 1, fill: int = 255) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) sheet, row-major."""
    images = np.asarray(images.cpu() if isinstance(images, torch.Tensor) else images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, _ = images.shape
    rows = max(1, -(-n // cols))
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), fill, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = images[i]
    return sheet


def check_writable(path) -> Path:
    """Fail before any work if ``path`` cannot be written (its folder is missing or read-only)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a directory; give a file name such as {path / 'out.png'}")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output folder {folder} is not writable")
    return path


def save_png(array: np.ndarray, path) -> Path:
    """Write a uint8 (H, W, 3) array as PNG, atomically."""
    from PIL import Image
    path = check_writable(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


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
    rc = list(range(k)) if row_classes is None else gen.class_ids("row_classes", list(row_classes), 0)
    cc = list(range(k)) if col_classes is None else gen.class_ids("col_classes", list(col_classes), 0)
    n = len(rc) * len(cc)
    fixed = {"shape": shape, "texture": texture, "bg": bg}
    fixed[rows] = [r for r in rc for _ in cc]
    fixed[cols] = [c for _ in rc for c in cc]
    classes = {m: gen.class_ids(m, v, n) for m, v in fixed.items()}
    sampler = gen.sampler(seed)
    draw = sampler.draw([0] * n if same_noise else range(n), **classes)
    sheet = tile(gen.images(draw), cols=len(cc), pad=pad, scale=scale)
    if path is not None:
        save_png(sheet, path)
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
    a, b = gen.class_ids("start", start, 1), gen.class_ids("end", end, 1)
    for name, v in (("start", a), ("end", b)):
        if not isinstance(v, int):
            raise ValueError(f"{name} must be one class, got {v!r}")
    classes = {m: gen.class_ids(m, v, rows) for m, v in (("shape", shape), ("texture", texture), ("bg", bg))}
    classes[mechanism] = a
    draw = gen.sampler(seed).draw(range(rows), **classes).to(gen.device)
    m = gen.model
    alphas = torch.linspace(0, 1, steps, device=gen.device)
    if gen.kind == "imagenet_cgn":
        images = _interpolate_class_vectors(m, draw, mechanism, a, b, alphas, rows, steps)
        sheet = tile(images, cols=steps, pad=pad, scale=scale)
        if path is not None:
            save_png(sheet, path)
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
        save_png(sheet, path)
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


# -- info and the command line ----------------------------------------------------------------------

def _cpu_bfloat16() -> str:
    """How this CPU runs bfloat16 (the ``torch-bf16`` backend): AMX, AVX512-BF16 or emulated."""
    # private torch helpers: absent ones (another torch) read as "no"
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "native (AMX)"
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "native (AVX512-BF16)"
    return "emulated (slow: prefer the float32 backends)"


def info() -> dict:
    """What this install can do: version, models, backends, kernels."""
    from . import _ext, checkpoint
    from ._version import __version__
    out = {
        "pycgn": __version__,
        "torch": torch.__version__,
        "python": ".".join(map(str, __import__("sys").version_info[:3])),
        "extension": {"loaded": _ext.AVAILABLE, "cpu_kernels": _ext.has_cpu_kernels() if _ext.AVAILABLE else False,
                      "cuda_kernels": _ext.has_cuda_kernels() if _ext.AVAILABLE else False,
                      "error": None if _ext.AVAILABLE else str(_ext.ERROR)},
        "cuda_available": torch.cuda.is_available(),
        "cpu_bfloat16": _cpu_bfloat16(),
        "models": {name: str(checkpoint.shipped_path(name)) if checkpoint.shipped_path(name).is_file()
                   else None for name in checkpoint.SHIPPED},
    }
    try:
        from .runtime import available_backends
        out["backends"] = available_backends()
    except ImportError:
        out["backends"] = ["torch"]
    try:
        import onnxruntime
        out["onnxruntime"] = {"version": onnxruntime.__version__,
                              "providers": onnxruntime.get_available_providers()}
    except ImportError:
        out["onnxruntime"] = None
    return out


def _classes_arg(text: str | None):
    """'3' -> '3'; '3,7,None' -> ['3', '7', None]; class names stay strings, resolved by the model."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    parts = [None if p.lower() in ("none", "random", "") else p for p in parts]
    return parts[0] if len(parts) == 1 else parts


def _add_common(p, backend=True):
    p.add_argument("--model", default="colored_mnist",
                   help="shipped model name (colored_mnist, double_colored_mnist, wildlife_mnist) or a "
                        "checkpoint path (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same images (default: 0)")
    if backend:
        p.add_argument("--backend", default="auto", help=_checks.BACKEND_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--truncation", type=float, default=None,
                   help="ImageNet CGN only: noise truncation in (0, 1] (default: 0.5)")
    p.add_argument("--scale", type=int, default=4, help="enlarge each image this many times (default: 4)")
    p.add_argument("-o", "--out", required=True, help="output PNG file")


def _mechanism_args(p):
    for m, what in (("shape", "shape (mask)"), ("texture", "texture (foreground)"), ("bg", "background")):
        p.add_argument(f"--{m}", default=None,
                       help=f"class of the {what}: an id, a name, a comma list (one per image) or 'random'")


def _cmd_generate(args) -> int:
    check_writable(args.out)
    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}")
    gen = get_generator(args.model, args.backend, args.device, args.truncation)
    images = gen.generate(_classes_arg(args.shape), _classes_arg(args.texture), _classes_arg(args.bg), n=args.n,
                          seed=args.seed, output="numpy")
    cols = args.cols or int(np.ceil(np.sqrt(len(images))))
    save_png(tile(images, cols=cols, scale=args.scale), args.out)
    print(f"wrote {args.out}: {len(images)} images ({gen.info.variant}, backend {gen.backend}, seed {args.seed})")
    return 0


def _cmd_grid(args) -> int:
    sheet = grid(rows=args.rows, cols=args.cols, row_classes=_classes_arg(args.row_classes),
                 col_classes=_classes_arg(args.col_classes), shape=_classes_arg(args.shape),
                 texture=_classes_arg(args.texture), bg=_classes_arg(args.bg), model=args.model, seed=args.seed,
                 same_noise=not args.vary_noise, backend=args.backend, device=args.device, path=args.out,
                 scale=args.scale, truncation=args.truncation)
    print(f"wrote {args.out}: {args.rows} down x {args.cols} across, {sheet.shape[1]}x{sheet.shape[0]} px")
    return 0


def _cmd_interpolate(args) -> int:
    interpolate(mechanism=args.mechanism, start=_classes_arg(args.start), end=_classes_arg(args.end),
                steps=args.steps, rows=args.rows, shape=_classes_arg(args.shape),
                texture=_classes_arg(args.texture), bg=_classes_arg(args.bg), model=args.model, seed=args.seed,
                device=args.device, path=args.out, scale=args.scale, truncation=args.truncation)
    print(f"wrote {args.out}: {args.mechanism} from {args.start} to {args.end} in {args.steps} steps")
    return 0


def _cmd_info(args) -> int:
    import json
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    ext = data["extension"]
    print(f"pycgn {data['pycgn']} (torch {data['torch']}, python {data['python']})")
    print(f"extension: {'loaded' if ext['loaded'] else 'NOT loaded: ' + str(ext['error'])}; "
          f"CPU kernels: {'yes' if ext['cpu_kernels'] else 'no'}; CUDA kernels: {'yes' if ext['cuda_kernels'] else 'no'}")
    print(f"CUDA device: {'yes' if data['cuda_available'] else 'no'}")
    print(f"CPU bfloat16: {data['cpu_bfloat16']}")
    print(f"backends: {', '.join(data['backends'])}")
    if data["onnxruntime"]:
        print(f"onnxruntime {data['onnxruntime']['version']}: {', '.join(data['onnxruntime']['providers'])}")
    for name, path in data["models"].items():
        print(f"model {name}: {path or 'missing'}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("generate", help="write a PNG grid of counterfactual images",
                       description="Generate counterfactual images: each mechanism takes its own class. "
                                   "Example: pycgn generate --shape 3 --texture 7 --bg 1 -n 16 --seed 5 -o out.png")
    _mechanism_args(p)
    p.add_argument("-n", type=int, default=16, help="number of images (default: 16)")
    p.add_argument("--cols", type=int, default=0, help="images per row of the grid (default: square)")
    _add_common(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("grid", help="a table of classes, e.g. shapes down x backgrounds across",
                       description="One mechanism's classes down the rows, another's across the columns. "
                                   "Example: pycgn grid --rows shape --cols bg --texture 2 -o grid.png")
    p.add_argument("--rows", default="shape", choices=MECHANISMS, help="mechanism that varies down (default: shape)")
    p.add_argument("--cols", default="bg", choices=MECHANISMS, help="mechanism that varies across (default: bg)")
    p.add_argument("--row-classes", default=None, help="comma list of classes down (default: all)")
    p.add_argument("--col-classes", default=None, help="comma list of classes across (default: all)")
    p.add_argument("--vary-noise", action="store_true", help="draw new latents per cell instead of sharing them")
    _mechanism_args(p)
    _add_common(p)
    p.set_defaults(func=_cmd_grid)

    p = sub.add_parser("interpolate", help="an interpolation sheet between two classes of one mechanism",
                       description="Moves one mechanism's class embedding from --start to --end. "
                                   "Example: pycgn interpolate --mechanism shape --start 3 --end 8 -o interp.png")
    p.add_argument("--mechanism", default="shape", choices=MECHANISMS, help="mechanism to interpolate")
    p.add_argument("--start", required=True, help="class at the left")
    p.add_argument("--end", required=True, help="class at the right")
    p.add_argument("--steps", type=int, default=8, help="columns (default: 8)")
    p.add_argument("--rows", type=int, default=4, help="rows, each with its own latents (default: 4)")
    _mechanism_args(p)
    _add_common(p, backend=False)
    p.set_defaults(func=_cmd_interpolate)

    p = sub.add_parser("info", help="models, backends, kernels and versions of this install")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)
