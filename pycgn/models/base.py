"""What every model needs and nothing above it: errors, model info, weights hashing and reading.

A leaf: it imports only torch and the version, so ``pycgn.models`` (and everything that loads,
exports or runs a model) can depend on it without depending on each other.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._version import __version__

DIGITS = tuple(str(i) for i in range(10))

# One vocabulary for the mechanisms inside the package (nets, exports, runners, files); the public
# API names each mechanism's class argument ``CLASS_ARGS`` (``bg=``), in the same order.
MECHANISMS = ("shape", "texture", "background")
CLASS_ARGS = ("shape", "texture", "bg")

# The MNIST variants pycgn trains, ships and evaluates: one table for the data, the trainer, the
# shipped weights and the evaluation.
VARIANTS = ("colored_mnist", "double_colored_mnist", "wildlife_mnist")


class CheckpointError(ValueError):
    """A file that is not a usable CGN checkpoint; the message names the file."""


@dataclass
class ModelInfo:
    kind: str = "mnist_cgn"
    variant: str = "custom"
    image_size: int = 32
    class_names: tuple[str, ...] = DIGITS
    pycgn_version: str = __version__
    sha256: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class ExportSpec:
    """What an exporter needs from a model: its mechanisms as ``(u, y) -> image`` modules on the
    CPU in float32, example inputs, and the model's own sidecar fields (see ``pycgn.export``)."""
    mechanisms: dict[str, torch.nn.Module]
    example: tuple[torch.Tensor, torch.Tensor]
    y_input: dict                 # the sidecar's description of input ``y``
    sidecar: dict                 # model-specific sidecar fields (class names, offsets, truncation...)
    file_meta: dict = field(default_factory=dict)  # recorded in every exported file as well


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over (key, dtype, shape, bytes) of every entry in key order: independent of the file."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_weights(state_dict: dict, where: str) -> None:
    """Refuse NaN/infinite weights and negative batch-norm variances, naming ``where`` and the
    first bad key (in file order): such a model loads and runs, but its images come out blank.

    First refuses a tensor whose shape claims more values than its stored bytes (zero strides: a
    1 kB file can declare a 4 TB tensor), so sizes read from shapes never exceed the file.
    """
    for key, t in state_dict.items():
        if t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise CheckpointError(f"{where}: {key} claims shape {tuple(t.shape)} but stores only "
                                  f"{t.untyped_storage().nbytes()} bytes (a crafted or corrupt file)")
        if not t.is_floating_point() or t.numel() == 0:
            continue
        # one reduction per tensor: a float64 sum is finite exactly when every value is (float32
        # values cannot overflow it), and NaN or inf anywhere make it NaN or inf
        if not math.isfinite(t.sum(dtype=torch.float64).item()):
            raise CheckpointError(f"{where}: {key} holds NaN or infinite values (corrupt weights)")
        if key.endswith(("running_var", "running_vars")) and t.min().item() < 0:
            raise CheckpointError(f"{where}: {key} holds negative batch-norm variances (corrupt weights)")


def read_torch_file(path: Path, mmap: bool = False):
    """``torch.load`` with ``weights_only`` (pickled code never runs); any failure -> CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - damaged bytes raise anything (IndexError, struct.error...)
        if mmap:  # legacy (non-zip) files cannot be mapped: read them whole, which reports real faults
            return read_torch_file(path)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt or not a "
                              f"torch file): {first}") from e
