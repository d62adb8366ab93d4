"""Argument checks shared by the models, sampler and API: errors name the argument."""
from __future__ import annotations

import torch

# every entry point's backend names (runtime.make_runner explains them); here so the CLI's help
# can list them without importing the runtime, which needs onnx
BACKENDS = ("torch", "torch-bf16", "torch.compile", "torchscript", "onnxruntime", "aoti")
BACKEND_HELP = f"auto, {', '.join(BACKENDS)} (default: auto)"
PRECISIONS = ("float32", "bfloat16", "float16")


def latent(name: str, u, latent_dim: int, n: int | None = None) -> None:
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(u).__name__}")
    if not u.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {u.dtype}")
    if u.dim() != 2 or u.shape[1] != latent_dim:
        raise ValueError(f"{name} must have shape (N, {latent_dim}), got {tuple(u.shape)}")
    if n is not None and u.shape[0] != n:
        raise ValueError(f"{name} has batch {u.shape[0]}, expected {n}")
    if u.numel() and not bool(torch.isfinite(u).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


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
