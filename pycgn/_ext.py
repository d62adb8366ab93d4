"""The compiled extension ``pycgn._C``: optional, with a single warning when it is absent."""
from __future__ import annotations

import warnings

import torch  # noqa: F401  (loads libc10/libtorch, which pycgn._C links against)


def _init_vector_math() -> None:
    """Make MKL's vector math initialise on one thread before any parallel call.

    torch's CPU ``tanh`` (and ``exp``, ``log``...) on contiguous float data calls MKL VML per
    OpenMP chunk. When the first such call in a process runs on two threads at once, one thread
    now and then (8 of 150 fresh processes on a loaded 2-core machine) computes its whole chunk
    differently, by up to 4e-5: a texture net's output, and so the dataset's bytes, then depends
    on the process. A first call too small to be split (so on this thread only) removed it
    (0 of 150).
    """
    x = torch.full((8,), 0.5)
    for op in (torch.tanh, torch.exp, torch.log, torch.sqrt, torch.log1p, torch.expm1):
        op(x)


_init_vector_math()

try:
    from . import _C  # noqa: F401  (importing it registers the torch.ops.pycgn operators)
    AVAILABLE = True
    ERROR = None
except ImportError as e:  # not built, or built against another torch
    AVAILABLE = False
    ERROR = e
    warnings.warn(f"pycgn: the compiled extension pycgn._C could not be loaded ({e}); "
                  "using the plain-PyTorch reference path, which is slower.", RuntimeWarning, stacklevel=2)


def _has_kernel(key: str) -> bool:
    import torch
    if not AVAILABLE:
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("pycgn::composite", key)
    except RuntimeError:  # the operator is not registered in this build
        return False


def has_cpu_kernels() -> bool:
    return _has_kernel("CPU")


def has_cuda_kernels() -> bool:
    return _has_kernel("CUDA")
