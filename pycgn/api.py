"""The generator API: ``pycgn.generate``, ``pycgn.Generator`` and ``pycgn.info``.

Sheets (``grid``, ``interpolate``, PNG files) are in ``pycgn.sheets``; the command line in ``pycgn.cli``.
"""
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
from ._memory import check_fits
from .checkpoint import load
from .models.base import CLASS_ARGS
from .sampler import Draw, Sampler

MECHANISMS = CLASS_ARGS  # the public names of the mechanisms' class arguments (bg=, rows="bg"...)
OUTPUTS = ("numpy", "torch", "pil")
BATCH_PIXELS = 256 * 32 * 32  # pixels per batch in generate: 256 MNIST images, 4 of 256x256


def _device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
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


@dataclass
class Parts:
    """Everything that fixes a batch of images; ``pycgn.reference`` recomputes ``images`` from it.

    All fields are of the kind ``output=`` asks for: numpy arrays (the default), torch tensors
    (``"torch"``), or for ``"pil"`` a list of PIL images and numpy arrays for the rest."""
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

    def __repr__(self) -> str:  # shapes and dtypes, not whole arrays
        def show(v):
            if isinstance(v, (torch.Tensor, np.ndarray)):
                return f"{str(v.dtype).replace('torch.', '')} {tuple(v.shape)}"
            if isinstance(v, list):
                return f"list of {len(v)}"
            return repr(v)
        inner = ", ".join(f"{k}={show(getattr(self, k))}" for k in self.__dataclass_fields__)
        return f"Parts(n={len(self)}, {inner})"


class Generator:
    """A CGN held on one device for many calls, without reloading.

    ``Generator("colored_mnist").generate(shape=3, n=8, seed=0)``. Thread safety: a Generator may
    be shared by threads; calls are serialised by a lock (each call already uses every core
    through PyTorch's intra-op threads, and the runtimes reuse internal buffers between calls).
    It runs the weights its model had when it was made (folded nets and exports are snapshots):
    make a new Generator after changing them.
    """

    def __init__(self, model="colored_mnist", backend="auto", device="auto", truncation: float | None = None,
                 precision: str = "float32"):
        self.device = _device(device)
        _checks.precision(precision, self.device)  # before a model is loaded
        if isinstance(model, torch.nn.Module):
            self.model = model
            if truncation is not None:
                if not hasattr(model, "set_truncation"):
                    raise TypeError(f"model must be an MnistCGN or ImagenetCGN, got {type(model).__name__}")
                model.set_truncation(truncation)
        else:
            self.model = load(model, truncation=truncation)
        if not hasattr(self.model, "info"):
            from .checkpoint import ModelInfo, weights_sha256
            self.model.info = ModelInfo(kind=self.model.kind, sha256=weights_sha256(self.model.state_dict()),
                                        image_size=self.model.image_size,
                                        class_names=tuple(self.model.class_names))
        self.model.to(self.device).eval()
        from .runtime import make_runner
        self._runner = make_runner(self.model, backend=backend, device=self.device, precision=precision)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Generator(model={self.info.variant!r}, kind={self.kind!r}, backend={self.backend!r}, "
                f"precision={self.precision!r}, device={str(self.device)!r}, sha256={self.info.sha256[:12]!r})")

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
    def precision(self) -> str:
        return self._runner.precision

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
        """The model's seeded sampler of its inputs (for the ImageNet CGN: truncated noise)."""
        return self.model.sampler(seed, counterfactuals)

    def _forward(self, d: Draw):
        return self._runner(d.u_shape, d.shape, d.u_texture, d.texture, d.u_bg, d.bg)

    def run(self, u_shape, y_shape, u_texture, y_texture, u_bg, y_bg):
        """(mask, fg, bg) float32 on the device for explicit inputs, before the clamp and the crop.
        On the ``torch`` backend ``y_*`` may be class vectors (N, n_classes): blends of one-hot
        rows blend classes (``pycgn.sheets.interpolate``)."""
        with self._lock, torch.inference_mode():
            return self._runner(u_shape, y_shape, u_texture, y_texture, u_bg, y_bg)

    def images(self, draw: Draw, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 images (N, H, W, 3) for the inputs ``draw``, written into ``out`` if given."""
        d = draw.to(self.device)
        with self._lock, torch.inference_mode():
            mask, fg, bg = self._forward(d)
            return _composite(mask, fg, bg, d.fg_offset, d.bg_offset, "uint8", "NHWC", out=out)

    def batch_size(self) -> int:
        """Images per forward pass in ``generate`` and the sheets: memory then holds the output and
        one batch's activations, whatever the number of images."""
        return max(1, BATCH_PIXELS // self.model.image_size ** 2)

    def images_in_batches(self, draw: Draw) -> torch.Tensor:
        """``images(draw)``, computed ``batch_size()`` samples at a time."""
        h, step = self.model.image_size, self.batch_size()
        out = torch.empty((len(draw), h, h, 3), dtype=torch.uint8, device=self.device)
        for a in range(0, len(draw), step):
            self.images(draw.slice(a, a + step), out=out[a:a + step])
        return out

    def parts(self, draw: Draw, seed: int = -1, out: torch.Tensor | None = None) -> Parts:
        """Images (written into ``out`` if given) and every part that made them (mask, cropped
        textures, inputs)."""
        d = draw.to(self.device)
        with self._lock, torch.inference_mode():
            mask, fg, bg = self._forward(d)
            images = _composite(mask, fg, bg, d.fg_offset, d.bg_offset, "uint8", "NHWC", out=out)
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
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and not 0 <= v < len(names):
                raise ValueError(f"{name} has class id {v}, expected 0..{len(names) - 1}")
            if v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)):
                return v
            if isinstance(v, str):
                return self.model.class_id(v, name)
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
        if n < 1:  # the rule of the CLI and of synth too: a request draws at least one image
            raise ValueError(f"n must be >= 1, got {n}")
        classes = {k: self.class_ids(k, v, n) for k, v in (("shape", shape), ("texture", texture), ("bg", bg))}
        lengths = {k: len(v) for k, v in classes.items() if isinstance(v, list) and len(v) != 1}
        count = int(n)
        for k, length in lengths.items():
            if count == 1 and n == 1:
                count = length
            elif length != count:
                raise ValueError(f"{k} has {length} entries, which does not broadcast against n={count}")
        if count < 1:
            raise ValueError(f"{', '.join(lengths)} has no entries: nothing to draw")
        if seed is None:
            seed = secrets.randbits(63)
        h = self.model.image_size
        per_image = h * h * (3 + 4 * (1 + 3 + 3) * return_parts)  # uint8 RGB (+ float32 mask, fg and bg)
        check_fits("n", count, per_image, self.device)
        sampler = self.sampler(seed)
        # Bounded batches: memory holds the output and one batch's activations, whatever n is.
        step = self.batch_size()
        images = torch.empty((count, h, h, 3), dtype=torch.uint8, device=self.device)
        parts = []
        for a in range(0, count, step):
            b = min(count, a + step)
            some = {k: v[a:b] if isinstance(v, list) and len(v) == count else v for k, v in classes.items()}
            draw = sampler.draw(range(start + a, start + b), **some)
            if return_parts:
                parts.append(self.parts(draw, seed=seed, out=images[a:b]))
            else:
                self.images(draw, out=images[a:b])
        if return_parts:
            return _parts_as(_cat_parts(parts, images, seed, self.backend), output)
        return _as_output(images, output)


def _cat_parts(parts: list, images: torch.Tensor, seed: int, backend: str) -> "Parts":
    fields = {f: torch.cat([getattr(p, f) for p in parts]) for f in Parts.__dataclass_fields__
              if f not in ("images", "seed", "backend")}
    return Parts(images=images, seed=seed, backend=backend, **fields)


def _parts_as(parts: "Parts", output: str) -> "Parts":
    """Every field of one kind: torch tensors for ``output="torch"``, numpy arrays otherwise
    (with ``"pil"``, the images are PIL images and the rest numpy)."""
    for f in Parts.__dataclass_fields__:
        v = getattr(parts, f)
        if isinstance(v, torch.Tensor):
            setattr(parts, f, _as_output(v, output) if f == "images" else
                    v if output == "torch" else v.cpu().numpy())
    return parts


def _as_output(images: torch.Tensor, output: str):
    if output == "torch":
        return images
    arr = images.cpu().numpy()
    if output == "pil":
        from PIL import Image
        return [Image.fromarray(a) for a in arr]
    return arr


@lru_cache(maxsize=4)
def _cached_generator(model, backend, device, truncation, precision) -> Generator:
    return Generator(model, backend=backend, device=device, truncation=truncation, precision=precision)


def get_generator(model="colored_mnist", backend="auto", device="auto", truncation=None,
                  precision: str = "float32") -> Generator:
    """A Generator kept for reuse across ``pycgn.generate`` calls (by model, backend, device,
    truncation and precision)."""
    if isinstance(model, torch.nn.Module):
        return Generator(model, backend=backend, device=device, truncation=truncation, precision=precision)
    if isinstance(model, os.PathLike) or (isinstance(model, str) and os.sep in model):
        model = str(Path(model).expanduser().resolve())
    dev = _device(device)
    _checks.precision(precision, dev)  # an unhashable or unknown value: the argument's error, not lru_cache's
    return _cached_generator(model, backend, str(dev), truncation, precision)


def generate(shape=None, texture=None, bg=None, n: int = 1, model="colored_mnist", seed: int | None = None,
             backend: str = "auto", device: str = "auto", output: str = "numpy", return_parts: bool = False,
             truncation: float | None = None, precision: str = "float32"):
    """Counterfactual images in one call.

    ``shape``, ``texture``, ``bg``: a class id, a class name, a sequence of ids/names (entries may be
    None = random), or None (all random); broadcast against ``n``. Returns uint8 images
    ``(N, H, W, 3)`` as numpy (``output="torch"`` or ``"pil"`` also); with ``return_parts=True`` a
    ``Parts`` object with the images, masks, cropped textures and every input. The same ``seed``
    gives the same images; ``seed=None`` draws one (recorded in ``Parts.seed``).

    ``model`` may also be a published ImageNet CGN (``cgn.pth``): classes are ImageNet-1k ids or
    names, ``truncation`` (default 0.5) scales the noise and picks the BigGANs' statistics.
    ``precision``: ``"float32"`` (default, the reference images), ``"bfloat16"`` (fast on CPUs
    with AMX or AVX512-BF16; images within a few uint8 levels) or ``"float16"`` (CUDA only).

    >>> img = pycgn.generate(shape=3, texture=7, bg=1, seed=0)  # a "3" coloured like a "7" on a "1"'s background
    """
    return get_generator(model, backend, device, truncation, precision).generate(shape, texture, bg, n=n, seed=seed, output=output,
                                                          return_parts=return_parts)


# -- info ------------------------------------------------------------------------------------------

def _cpu_bfloat16() -> str:
    """How this CPU runs bfloat16 (``precision="bfloat16"``): AMX, AVX512-BF16 or emulated."""
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
    from .runtime import available_backends, backends_for
    out["backends"] = available_backends()
    # which backends compute in which precision on this machine's default device
    dev = _device("auto")
    out["precisions"] = {p: backends_for(p, dev) for p in _checks.PRECISIONS}
    from .cache import cache_dir, entries
    out["cache"] = {"folder": str(cache_dir()),
                    "entries": [{"path": str(e.path), "kind": e.kind, "bytes": e.size, "detail": e.detail}
                                for e in entries()]}
    try:
        import onnxruntime
        out["onnxruntime"] = {"version": onnxruntime.__version__,
                              "providers": onnxruntime.get_available_providers()}
    except ImportError:
        out["onnxruntime"] = None
    return out
