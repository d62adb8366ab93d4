"""pycgn: fast, dependable counterfactual images from Counterfactual Generative Networks."""
from ._version import __version__
from . import _ext  # noqa: F401  (loads the operators; pycgn._ext says which kernels were built)
from .api import Generator, Parts, generate, info
from .sheets import grid, interpolate
from .checkpoint import CheckpointError, ModelInfo, load, save
from .models import MnistCGN
from .ops import composite
from .reference import composite as reference_composite
from .sampler import Draw, Sampler


__all__ = ["__version__", "CheckpointError", "Draw", "Generator", "MnistCGN", "ModelInfo", "Parts", "Pipeline",
           "Sampler",
           "composite", "generate", "grid", "info", "interpolate", "load", "reference_composite", "save"]


def __getattr__(name):
    if name == "Pipeline":  # the C++ pipeline's bindings (optional extension), loaded on first use
        from .pipeline import Pipeline
        return Pipeline
    raise AttributeError(f"module 'pycgn' has no attribute {name!r}")
