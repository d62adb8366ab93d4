"""Loading and saving CGN weights: the published state dicts and pycgn's own format."""
from __future__ import annotations

import io
import os
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import torch

from ._io import atomic_write_bytes
from .models import MnistCGN
from .models.mnist import BG_NETS, LATENT_DIM, NGF
from .models.base import (DIGITS, VARIANTS, CheckpointError, ModelInfo, check_weights, read_torch_file,
                          weights_sha256)

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


# Sane bounds for a pycgn checkpoint's meta, checked before anything is built from it.
MAX_IMAGE_SIZE = 1024
MAX_CLASSES = 100_000


def _meta_field(path: Path, meta: dict, name: str, kinds, default):
    v = meta.get(name, default)
    if not isinstance(v, kinds) or isinstance(v, bool):
        want = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise CheckpointError(f"{path}: meta.{name} must be {want}, found {type(v).__name__}")
    return v


def _info_from_meta(path: Path, meta) -> ModelInfo:
    """A pycgn checkpoint's meta -> ModelInfo; any field of the wrong type or size -> CheckpointError."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: meta must be a dict, found {type(meta).__name__}")
    d = ModelInfo()
    kind = _meta_field(path, meta, "kind", str, d.kind)
    if kind != d.kind:
        raise CheckpointError(f"{path}: meta.kind {kind!r}: a pycgn checkpoint holds an {d.kind!r}")
    size = _meta_field(path, meta, "image_size", int, d.image_size)
    if not (4 <= size <= MAX_IMAGE_SIZE and size % 4 == 0):
        raise CheckpointError(f"{path}: meta.image_size {size}, expected a multiple of 4 in 4..{MAX_IMAGE_SIZE}")
    names = _meta_field(path, meta, "class_names", (list, tuple), d.class_names)
    if not (1 <= len(names) <= MAX_CLASSES) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: meta.class_names must be 1..{MAX_CLASSES} strings")
    sha = _meta_field(path, meta, "sha256", str, d.sha256)
    return ModelInfo(variant=_meta_field(path, meta, "variant", str, d.variant), image_size=size,
                     class_names=tuple(names), sha256=sha,
                     pycgn_version=_meta_field(path, meta, "pycgn_version", str, d.pycgn_version),
                     extra=dict(_meta_field(path, meta, "extra", dict, {})))


def _check_state_dict(path: Path, sd) -> dict:
    if not (isinstance(sd, dict) and sd and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in sd.items())):
        raise CheckpointError(f"{path}: its state_dict is not a dict of named tensors")
    check_weights(sd, str(path))
    return sd


def _state_dict_and_info(obj, path: Path) -> tuple[dict, ModelInfo]:
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise CheckpointError(f"{path}: format_version {version!r}, this pycgn reads {FORMAT_VERSION}")
        info = _info_from_meta(path, obj.get("meta", {}))
        if "state_dict" not in obj:
            raise CheckpointError(f"{path}: pycgn checkpoint without a state_dict")
        sd = _check_state_dict(path, obj["state_dict"])
        actual = weights_sha256(sd)
        if info.sha256 and info.sha256 != actual:
            raise CheckpointError(f"{path}: weights do not match their recorded sha256 "
                                  f"({info.sha256[:12]}... recorded, {actual[:12]}... found): corrupt file")
        info.sha256 = actual
        return sd, info
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = _check_state_dict(path, obj)
        stem = path.stem
        variant = stem if stem in SHIPPED else "custom"
        return sd, ModelInfo(variant=variant, sha256=weights_sha256(sd), pycgn_version="published")
    raise CheckpointError(f"{path}: not a CGN checkpoint (expected a state dict of tensors or a "
                          f"pycgn checkpoint, found {type(obj).__name__})")


@lru_cache(maxsize=len(BG_NETS))
def _mnist_keys(bg_net: str) -> frozenset:
    return frozenset(MnistCGN(bg_net=bg_net).state_dict())  # the keys do not depend on the sizes


def _bg_net(path: Path, obj) -> str:
    """The background net's kind: a pycgn checkpoint's ``meta.bg_net``; published ones are "dense"."""
    meta = obj.get("meta") if isinstance(obj, dict) and obj.get("format") == FORMAT else None
    v = meta.get("bg_net", "dense") if isinstance(meta, dict) else "dense"
    if not isinstance(v, str) or v not in BG_NETS:
        raise CheckpointError(f"{path}: meta.bg_net {v!r}, expected one of {', '.join(BG_NETS)}")
    return v


def _check_sizes(path: Path, sd: dict, info: ModelInfo, bg_net: str = "dense") -> None:
    """Keys, then the meta's sizes against the shapes of the two weights that grow with them,
    before a model is built: a meta claiming a huge model is refused without allocating it, and
    what is built is then no larger than the weights in the file (strict loading checks the rest)."""
    keys = _mnist_keys(bg_net)
    missing, unexpected = sorted(keys - set(sd)), sorted(set(sd) - keys)
    if missing or unexpected:
        raise CheckpointError(f"{path}: keys do not match the MNIST CGN: missing {missing or 'none'}; "
                              f"unexpected {unexpected or 'none'}")
    n, init = len(info.class_names), info.image_size // 4
    for key, shape in (("label_emb.weight", (n, n)), ("f_shape.0.weight", (2 * NGF * init * init, LATENT_DIM + n))):
        if tuple(sd[key].shape) != shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(sd[key].shape)}, but the MNIST CGN of "
                                  f"image_size {info.image_size} and {n} classes (its meta) needs {shape}")


def load(name_or_path="colored_mnist", device="cpu", truncation: float | None = None):
    """Load a shipped model by name, a published CGN state dict, or a pycgn checkpoint.

    A published ImageNet CGN (``cgn.pth``) loads as ``pycgn.models.imagenet.ImagenetCGN`` with
    ``truncation`` (default 0.5); MNIST CGNs load as ``MnistCGN``. The model is in eval mode and
    carries ``model.info`` (a ``ModelInfo``). Files that are not sound (unreadable, wrong keys,
    shapes or meta, NaN/infinite weights) raise ``CheckpointError`` naming the file.
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
    bg_net = _bg_net(path, obj)
    _check_sizes(path, sd, info, bg_net)
    model = MnistCGN(image_size=info.image_size, n_classes=len(info.class_names), bg_net=bg_net)
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
    if model.bg_net != "dense":  # files of the published architecture stay as they were
        meta["bg_net"] = model.bg_net
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta, "state_dict": sd}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path
