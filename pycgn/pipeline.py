"""``pycgn.Pipeline``: the C++ pipeline (``pycgn::Pipeline``) from Python, in-process.

``Pipeline(export_dir)`` runs an export written by ``pycgn export`` (AOTInductor packages or
TorchScript; MNIST or ImageNet CGN) entirely in C++: sampling from the seed, the three
generators, compositing. Its images equal the C++ ``cgn_generate``'s and ``pycgn.generate``'s
with the same backend for the same seed.

``generate`` releases the GIL while it works, so Python threads (e.g. a DataLoader's) can call
one Pipeline concurrently; it returns a uint8 (N, H, W, 3) tensor over the C++ buffer (no copy;
``.numpy()`` shares it too). The bindings are the optional extension ``pycgn._pipeline``.
"""
from __future__ import annotations

from pathlib import Path

import torch  # noqa: F401  (loads libtorch, which pycgn._pipeline links against)

from . import _checks
from .export import ExportError

__all__ = ["Pipeline", "available"]

try:
    from . import _pipeline as _impl
    _ERROR = None
except ImportError as e:  # not built (PYCGN_BUILD_PIPELINE=0, or the optional build failed)
    _impl, _ERROR = None, e


def available() -> bool:
    """Whether this installation has the C++ pipeline bindings (``pycgn._pipeline``)."""
    return _impl is not None


class Pipeline:
    """The C++ pipeline on one export directory. ``device``: "auto", "cpu" or "cuda" (the
    bindings composite on the CPU); ``batch_size``: samples per forward pass on a GPU and for
    exports without a ``cpu_chunk``; it bounds memory, not the result. ``cpu_chunks``: on the
    CPU the MNIST CGNs compute in the export's chunks of 64 (the last padded), as Python's runners
    do, so the images are Python's bit for bit; False computes a call's images as they come, a
    single image ~7x sooner, its last bits possibly a level off Python's."""

    def __init__(self, export_dir, device: str = "auto", batch_size: int = 512, cpu_chunks: bool = True):
        if _impl is None:
            raise ImportError(f"pycgn.Pipeline needs the extension pycgn._pipeline, which is not built "
                              f"({_ERROR}); reinstall pycgn with a C++ compiler and PYCGN_BUILD_PIPELINE=1")
        if not isinstance(export_dir, (str, Path)):
            raise TypeError(f"export_dir must be a path, got {type(export_dir).__name__}")
        batch_size = _checks.count("batch_size", batch_size)
        if not isinstance(cpu_chunks, bool):
            raise TypeError(f"cpu_chunks must be True or False, got {type(cpu_chunks).__name__}")
        try:
            self._p = _impl.Pipeline(str(export_dir), device, batch_size, cpu_chunks)
        except _impl.ExportError as e:
            raise ExportError(str(e)) from None
        self.info = self._p.info

    @property
    def device(self) -> str:
        return self._p.device

    def _classes(self, name: str, value) -> list[int]:
        """None / id / class name / sequence of those -> ids, -1 for "random"."""
        if value is None:
            return []
        items = [value] if isinstance(value, (int, str)) else list(value)
        names = self.info["class_names"]
        out = []
        for v in items:
            if v is None:
                out.append(-1)
            elif isinstance(v, str) and not v.isdigit():
                if v not in names:
                    raise ValueError(f"{name} has class name {v!r}, which this model does not have")
                out.append(names.index(v))
            elif isinstance(v, bool) or not isinstance(v, (int, str)):
                raise TypeError(f"{name} entries must be class ids, names or None, got {type(v).__name__}")
            else:
                out.append(int(v))
        return out

    def generate(self, shape=None, texture=None, bg=None, n: int = 1, seed: int = 0, start: int = 0,
                 counterfactuals: int = 1) -> torch.Tensor:
        """uint8 (n, H, W, 3) images of samples start .. start + n - 1 of ``seed``."""
        n = _checks.count("n", n)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be an int >= 0, got {start!r}")
        return self._p.generate(seed, n, self._classes("shape", shape), self._classes("texture", texture),
                                self._classes("bg", bg), start, counterfactuals)

    def __repr__(self) -> str:
        i = self.info
        return f"Pipeline({i['directory']!r}, kind={i['kind']!r}, runtime={i['runtime']!r}, device={self.device!r})"
