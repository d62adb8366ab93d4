"""pycgn: fast, dependable counterfactual images from Counterfactual Generative Networks."""
from ._version import __version__
from . import _ext
from .api import Generator, Parts, generate, info
from .sheets import grid, interpolate
from .checkpoint import CheckpointError, ModelInfo, load, save
from .models import MnistCGN
from .ops import composite
from .reference import composite as reference_composite
from .sampler import Draw, Sampler


__all__ = ["__version__", "CheckpointError", "Draw", "Generator", "MnistCGN", "ModelInfo", "Parts", "Sampler",
           "composite", "generate", "grid", "info", "interpolate", "load", "reference_composite", "save"]
