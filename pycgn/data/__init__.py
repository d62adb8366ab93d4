"""Datasets: the paper's MNIST variants (``pycgn.data.mnist``) and readers of synthesized data.

Submodules are imported on first use so that ``import pycgn`` stays light.
"""
from importlib import import_module

_LAZY = {
    # name -> submodule that defines it
    "SynthDataset": "pycgn.synth.dataset",
    "CounterfactualStream": "pycgn.synth.stream",
    "BenchmarkSplit": "pycgn.synth.stream",
    "MnistSplit": "pycgn.data.mnist",
    "build_mnist": "pycgn.data.mnist",
    "load_digits": "pycgn.data.mnist",
    "texture": "pycgn.data.textures",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pycgn.data' has no attribute {name!r}")
