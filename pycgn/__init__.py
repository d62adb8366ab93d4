"""pycgn: fast, dependable counterfactual images from Counterfactual Generative Networks."""
from ._version import __version__
from . import _ext
from .checkpoint import CheckpointError, ModelInfo, load, save
from .models import MnistCGN
from .sampler import Draw, Sampler

__all__ = ["__version__", "CheckpointError", "Draw", "MnistCGN", "ModelInfo", "Sampler", "load", "save"]
