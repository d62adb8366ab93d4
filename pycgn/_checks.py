"""Argument checks shared by the models, sampler and API: errors name the argument."""
from __future__ import annotations

import torch

# every entry point's backend names (runtime.make_runner explains them); here so the CLI's help
# can list them without importing the runtime, which needs onnx. Deprecated names map to the
# (backend, precision) they stand for.
DEPRECATED_BACKENDS = {"torch-bf16": ("torch", "bfloat16")}
BACKENDS = ("torch", "torch-bf16", "torch.compile", "torchscript", "onnxruntime", "aoti")
BACKEND_HELP = (f"auto, {', '.join(b for b in BACKENDS if b not in DEPRECATED_BACKENDS)} (default: auto; "
                f"torch-bf16 is deprecated: --backend torch --precision bfloat16)")
# the number formats the nets can run in (runtime.make_runner says which backend takes which);
# float32 is the default everywhere and gives the reference images
PRECISIONS = ("float32", "bfloat16", "float16")
PRECISION_HELP = "float32, bfloat16 or float16 (CUDA only) (default: float32)"


def backend_alias(backend, precision: str) -> tuple:
    """``(backend, precision)`` with a deprecated backend name replaced by what it stands for."""
    if not isinstance(backend, str) or backend not in DEPRECATED_BACKENDS:
        return backend, precision
    new, low = DEPRECATED_BACKENDS[backend]
    if precision not in ("float32", low):
        raise ValueError(f"backend {backend!r} computes in {low}, precision {precision!r} was asked for")
    return new, low


def deprecation(backend: str) -> str:
    new, low = DEPRECATED_BACKENDS[backend]
    return f"backend {backend!r} is deprecated; write backend={new!r}, precision={low!r}"


def precision(value, device) -> str:
    """A precision name checked against ``PRECISIONS`` and the device (float16: CUDA only)."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    where = device.type if isinstance(device, torch.device) else str(device)
    if value == "float16" and not where.startswith(("cuda", "auto")):  # auto: checked once resolved
        raise ValueError(f"precision 'float16' needs a CUDA device (CPUs emulate it slowly), device is "
                         f"{device}; use precision 'bfloat16' on a CPU")
    return value


def _batch_and_finite(name: str, t: torch.Tensor, n: int | None) -> None:
    """The checks every float input of the nets shares: its batch, and no NaN or infinity."""
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has batch {t.shape[0]}, expected {n}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def latent(name: str, u, latent_dim: int, n: int | None = None) -> None:
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(u).__name__}")
    if not u.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {u.dtype}")
    if u.dim() != 2 or u.shape[1] != latent_dim:
        raise ValueError(f"{name} must have shape (N, {latent_dim}), got {tuple(u.shape)}")
    _batch_and_finite(name, u, n)


def class_ids(name: str, y, n_classes: int, n: int | None = None) -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor of class ids, got {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has batch {y.shape[0]}, expected {n}")
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} has class id {bad}, expected 0..{n_classes - 1}")


def count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        try:
            import numpy as np
            if isinstance(n, np.integer):
                n = int(n)
        except ImportError:  # pragma: no cover
            pass
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def class_vectors(name: str, y, n_classes: int, n: int | None = None) -> None:
    """Class vectors (N, n_classes): one-hot rows are classes, blends of rows interpolate."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of class vectors")
    if y.dim() != 2 or y.shape[1] != n_classes:
        raise ValueError(f"{name} must be class ids (N,) or class vectors (N, {n_classes}), got {tuple(y.shape)}")
    _batch_and_finite(name, y, n)
