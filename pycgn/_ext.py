"""The compiled extension ``pycgn._C``: optional, with a single warning when it is absent."""
from __future__ import annotations

import warnings

import torch  # noqa: F401  (loads libc10/libtorch, which pycgn._C links against)

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
