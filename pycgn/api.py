"""The user-facing API: pycgn.Generator and pycgn.generate (work in progress by the lead)."""
from __future__ import annotations

import threading

import torch

from . import reference
from .checkpoint import load
from .models import MnistCGN
from .sampler import Draw, Sampler


def _device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _composite(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout):
    try:
        from .ops import composite
    except ImportError:
        return reference.composite(mask, fg, bg, fg_offset, bg_offset, out_dtype=out_dtype, layout=layout)
    return composite(mask, fg, bg, fg_offset, bg_offset, out_dtype=out_dtype, layout=layout)


class Generator:
    """A CGN held on one device, for many calls: ``Generator("colored_mnist").images(draw)``."""

    def __init__(self, model="colored_mnist", backend="auto", device="auto"):
        self.model = model if isinstance(model, MnistCGN) else load(model)
        self.device = _device(device)
        self.model.to(self.device).eval()
        self.backend = backend
        self._runner = None
        self._lock = threading.Lock()

    @property
    def info(self):
        return self.model.info

    def sampler(self, seed: int, counterfactuals: int = 1) -> Sampler:
        m = self.model
        return Sampler(seed, n_classes=m.n_classes, latent_dim=m.latent_dim, max_offset=m.image_size,
                       counterfactuals=counterfactuals)

    def _mechanisms(self, draw: Draw):
        d = draw.to(self.device)
        with torch.inference_mode():
            return self.model(d.u_shape, d.shape, d.u_texture, d.texture, d.u_bg, d.bg), d

    def images(self, draw: Draw) -> torch.Tensor:
        """uint8 images (N, H, W, 3) for the inputs ``draw``."""
        (mask, fg, bg), d = self._mechanisms(draw)
        return _composite(mask, fg, bg, d.fg_offset, d.bg_offset, "uint8", "NHWC")
