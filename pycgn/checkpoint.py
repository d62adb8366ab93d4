"""Loading and saving CGN weights: the published state dicts and pycgn's own format."""
from __future__ import annotations

import io
import os
from dataclasses import asdict
from pathlib import Path

import torch

from ._io import atomic_write_bytes
from .models import MnistCGN
from .models.base import DIGITS, VARIANTS, CheckpointError, ModelInfo, read_torch_file, weights_sha256

__all__ = ["CheckpointError", "DIGITS", "ModelInfo", "SHIPPED", "load", "resolve", "save", "weights_sha256"]

FORMAT = "pycgn-checkpoint"
FORMAT_VERSION = 1
SHIPPED = VARIANTS  # every variant ships trained weights
WEIGHTS_DIR = Path(__file__).parent / "weights"


def shipped_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def resolve(name_or_path) -> Path:
    """A shipped model's name or a path -> an existing file path, or a clear error."""
    if isinstance(name_or_path, (str, os.PathLike)):
        s = os.fspath(name_or_path)
        if s in SHIPPED:
            p = shipped_path(s)
            if not p.is_file():
                raise FileNotFoundError(f"model {s!r}: its shipped weights {p} are missing from this install")
            return p
        p = Path(s).expanduser()
        if p.is_file():
            return p
        if p.exists():
            raise CheckpointError(f"{p}: is not a file")
        if os.sep in s or s.endswith((".pt", ".pth", ".ckpt")):
            raise FileNotFoundError(f"checkpoint {s}: no such file")
        raise ValueError(f"model must be one of {', '.join(SHIPPED)} or a checkpoint path, got {s!r}")
    raise TypeError(f"model must be a name or a path, got {type(name_or_path).__name__}")


def _state_dict_and_info(obj, path: Path) -> tuple[dict, ModelInfo]:
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        meta = obj.get("meta", {})
        info = ModelInfo(**{k: v for k, v in meta.items() if k in ModelInfo.__dataclass_fields__})
        info.class_names = tuple(info.class_names)
        sd = obj.get("state_dict")
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path}: pycgn checkpoint without a state_dict")
        actual = weights_sha256(sd)
        if info.sha256 and info.sha256 != actual:
            raise CheckpointError(f"{path}: weights do not match their recorded sha256 "
                                  f"({info.sha256[:12]}... recorded, {actual[:12]}... found): corrupt file")
        info.sha256 = actual
        return sd, info
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        stem = path.stem
        variant = stem if stem in SHIPPED else "custom"
        return obj, ModelInfo(variant=variant, sha256=weights_sha256(obj), pycgn_version="published")
    raise CheckpointError(f"{path}: not a CGN checkpoint (expected a state dict of tensors or a "
                          f"pycgn checkpoint, found {type(obj).__name__})")


def load(name_or_path="colored_mnist", device="cpu", truncation: float | None = None):
    """Load a shipped model by name, a published CGN state dict, or a pycgn checkpoint.

    A published ImageNet CGN (``cgn.pth``) loads as ``pycgn.models.imagenet.ImagenetCGN`` with
    ``truncation`` (default 0.5); MNIST CGNs load as ``MnistCGN``. The model is in eval mode and
    carries ``model.info`` (a ``ModelInfo``).
    """
    path = resolve(name_or_path)
    obj = read_torch_file(path, mmap=True)  # an ImageNet CGN is ~1 GB: map it
    if isinstance(obj, dict) and obj.get("format") != FORMAT:
        from .models.imagenet import TRUNCATION, load_imagenet_cgn, looks_like_imagenet_cgn
        if looks_like_imagenet_cgn(obj.keys()):
            del obj
            return load_imagenet_cgn(path, truncation=TRUNCATION if truncation is None else truncation,
                                     device=device)
    if truncation is not None:
        raise ValueError(f"truncation applies to the ImageNet CGN only; {path} is an MNIST CGN")
    sd, info = _state_dict_and_info(obj, path)
    model = MnistCGN(image_size=info.image_size, n_classes=len(info.class_names))
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{path}: keys do not match the MNIST CGN: missing {missing or 'none'}; "
                              f"unexpected {unexpected or 'none'}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {' '.join(str(e).split())}") from e
    info.source = str(path)
    model.info = info
    return model.eval().to(device)


def save(model: MnistCGN, path, variant: str = "custom", class_names=DIGITS, extra: dict | None = None) -> Path:
    """Write a pycgn checkpoint atomically (temporary name, then rename)."""
    path = Path(path)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    info = ModelInfo(variant=variant, image_size=model.image_size, class_names=tuple(class_names),
                     sha256=weights_sha256(sd), extra=dict(extra or {}))
    meta = asdict(info)
    meta.pop("source")
    meta["class_names"] = list(meta["class_names"])
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta, "state_dict": sd}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path
