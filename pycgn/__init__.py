"""pycgn: fast, dependable counterfactual images from Counterfactual Generative Networks."""
from ._version import __version__
from . import _ext
from .api import Generator, Parts, generate, grid, info, interpolate
from .checkpoint import CheckpointError, ModelInfo, load, save
from .models import MnistCGN
from .reference import composite as reference_composite
from .sampler import Draw, Sampler


def __getattr__(name):
    # the fused kernel's Python face is imported on first use
    if name == "composite":
        from .ops import composite
        return composite
    raise AttributeError(f"module 'pycgn' has no attribute {name!r}")


__all__ = ["__version__", "CheckpointError", "Draw", "Generator", "MnistCGN", "ModelInfo", "Parts", "Sampler",
           "composite", "generate", "grid", "info", "interpolate", "load", "reference_composite", "save"]
