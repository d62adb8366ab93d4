"""The ImageNet CGN of Sauer & Geiger (ICLR 2021), compatible with the published weights.

Three BigGAN-deep-256 generators give a pre-mask (``f_shape``), a foreground texture
(``f_text``) and a background (``f_bg``); a U^2-Net turns the pre-mask into the mask;
``image = mask * fg + (1 - mask) * bg`` (no texture crop: offsets are zero). The unconstrained
BigGAN the CGN was trained against (``biggan_GT``) is part of the published ``cgn.pth``;
``gt=False`` leaves it out (its weights are then checked and dropped on load).

Inputs are explicit: noise ``u`` (N, 128) is already truncated and scaled (``truncation *``
a standard normal restricted to [-2, 2], see ``truncated_normal``), classes are ids (N,) or
class vectors (N, 1000) (one-hot for an id; mixtures interpolate). ``truncation`` also picks
the batch-norm statistics of every BigGAN, so the same value must drive both.

Sampling streams (``pycgn.sampler`` numbering, part of the format, never renumber):
16 ``U_TRUNC`` truncated noise of the shape mechanism, also used by texture and background
when ``shared_noise`` (the published scheme: one noise vector for the three mechanisms);
17 ``U_TRUNC_TEXTURE`` and 18 ``U_TRUNC_BG`` their own noise otherwise. Classes use the
sampler's streams 3-5 over 1000 classes.

Why one module of ~560 lines: the model, its sampling (truncated noise, class names) and its
strict loader of the published files are one format; the nets themselves are in ``biggan.py``
and ``u2net.py``.
"""
from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .. import _checks
from .._io import atomic_path
from ..sampler import U_TRUNC, U_TRUNC_BG, U_TRUNC_TEXTURE, Draw, Sampler, normal
from .base import CheckpointError, ExportSpec, ModelInfo, check_weights, read_torch_file, weights_sha256
from .biggan import BigGAN, BigGANConfig, fold_spectral_norms
from .u2net import U2NET

N_CLASSES = 1000
Z_DIM = 128
TRUNCATION = 0.5       # the published CGN's default (and its README's sampling command)
TRUNC_BOUND = 2.0      # the published noise is scipy truncnorm(-2, 2)
_ATTEMPTS = 16         # rejection tries per value: all fail with probability 0.0455**16 ~ 3e-22
CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")
CLASS_INPUTS = ("ids", "vector")


# ---------------------------------------------------------------------------------------------
# Class names

@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k labels by class id, e.g. ``class_names()[425] == 'barn'``."""
    lines = [ln.strip() for ln in CLASSES_FILE.read_text(encoding="utf-8").splitlines()]
    names = tuple(ln for ln in lines if ln and not ln.startswith("#"))
    if len(names) != N_CLASSES:
        raise RuntimeError(f"{CLASSES_FILE}: expected {N_CLASSES} class names, found {len(names)}")
    return names


@lru_cache(maxsize=1)
def _name_index() -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for i, label in enumerate(class_names()):
        keys = {label.lower()} | {s.strip().lower() for s in label.split(",")}
        for k in keys:
            index.setdefault(k, []).append(i)
    return index


def class_id(value, name: str = "class") -> int:
    """An ImageNet class id from an id (int or digit string) or a name (any listed synonym)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        i = int(value)
    elif isinstance(value, str):
        s = value.strip()
        if s.isdigit():
            i = int(s)
        else:
            ids = _name_index().get(s.lower())
            if not ids:
                raise ValueError(f"{name}: unknown ImageNet class name {value!r} "
                                 f"(use an id 0..{N_CLASSES - 1} or a name from {CLASSES_FILE.name})")
            if len(ids) > 1:
                raise ValueError(f"{name}: class name {value!r} is ambiguous: ids {ids} "
                                 f"({'; '.join(class_names()[j] for j in ids)}); use an id")
            return ids[0]
    else:
        raise TypeError(f"{name} must be a class id (int) or an ImageNet class name (str), "
                        f"got {type(value).__name__}")
    if not 0 <= i < N_CLASSES:
        raise ValueError(f"{name} has class id {i}, expected 0..{N_CLASSES - 1}")
    return i


def _class_arg(name: str, value):
    """int / name / sequence of those or None -> what ``Sampler.draw`` accepts."""
    if value is None or isinstance(value, (int, np.integer, str)):
        return None if value is None else class_id(value, name)
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return [None if v is None else class_id(v, name) for v in value]


# ---------------------------------------------------------------------------------------------
# Seeded truncated noise

def truncated_normal(seed: int, index: np.ndarray, stream: int, dim: int,
                     bound: float = TRUNC_BOUND) -> np.ndarray:
    """(N, dim) float32 standard normal restricted to [-bound, bound], a pure function of
    (seed, index, stream, coordinate).

    Rejection on ``pycgn.sampler.normal``: try ``a`` of coordinate ``j`` is the normal with
    counter ``a * dim + j`` of the stream; the first try with ``|x| <= bound`` is kept. After
    ``_ATTEMPTS`` failed tries (probability ~3e-22 at bound 2) the last try is clipped.
    """
    if stream < U_TRUNC:
        raise ValueError(f"stream must be >= {U_TRUNC} (lower ones belong to pycgn.sampler), got {stream}")
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    out = np.empty((index.shape[0], dim), dtype=np.float32)
    todo = np.ones(index.shape[0], dtype=bool)
    # Few tries settle almost every row; rows left over get all tries (a prefix of the same counters).
    for tries in (4, _ATTEMPTS):
        if not todo.any():
            break
        x = normal(seed, index[todo], stream, tries * dim).reshape(-1, tries, dim)
        ok = np.abs(x) <= bound
        first = np.where(ok.any(axis=1), ok.argmax(axis=1), tries - 1)             # (n, dim)
        pick = np.take_along_axis(x, first[:, None, :], axis=1)[:, 0, :]
        done = ok.any(axis=1).all(axis=1) | (tries == _ATTEMPTS)
        rows = np.flatnonzero(todo)
        out[rows[done]] = np.clip(pick[done], -bound, bound)
        todo[rows[done]] = False
    return out


def _check_truncation(truncation) -> float:
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float, np.floating)):
        raise TypeError(f"truncation must be a float in (0, 1], got {type(truncation).__name__}")
    t = float(truncation)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"truncation must be in (0, 1], got {truncation}")
    return t


def imagenet_draw(seed: int, indices, truncation: float = TRUNCATION, shape=None, texture=None, bg=None,
                  counterfactuals: int = 1, shared_noise: bool = True, z_dim: int = Z_DIM) -> Draw:
    """Every input of ImageNet CGN samples ``indices`` (a range or ints) from one seed.

    ``u_*`` = truncation * truncated_normal (the published ``truncated_noise_sample``); with
    ``shared_noise`` (published) the three mechanisms get the same noise. ``shape``/``texture``/
    ``bg`` fix classes: an id, a name, or a sequence of those or None (random, uniform over
    1000). Offsets are zero: the ImageNet CGN does not crop its textures.
    """
    t = _check_truncation(truncation)
    d = Sampler(seed, n_classes=N_CLASSES, latent_dim=1, max_offset=0, counterfactuals=counterfactuals).draw(
        indices, shape=_class_arg("shape", shape), texture=_class_arg("texture", texture),
        bg=_class_arg("bg", bg))
    idx = d.index.numpy()
    u_shape = truncated_normal(int(seed), idx // counterfactuals, U_TRUNC, z_dim) * np.float32(t)
    if shared_noise:
        u_texture = u_bg = u_shape
    else:
        u_texture = truncated_normal(int(seed), idx, U_TRUNC_TEXTURE, z_dim) * np.float32(t)
        u_bg = truncated_normal(int(seed), idx, U_TRUNC_BG, z_dim) * np.float32(t)
    d.u_shape, d.u_texture, d.u_bg = (torch.from_numpy(np.ascontiguousarray(a)) for a in (u_shape, u_texture, u_bg))
    return d


# ---------------------------------------------------------------------------------------------
# The model

def class_vector(name: str, y, n_classes: int, n: int | None = None) -> torch.Tensor:
    """Class ids (N,) -> one-hot float32 (N, n_classes); class vectors (N, n_classes) pass through."""
    if isinstance(y, torch.Tensor) and y.is_floating_point():
        if y.dim() != 2 or y.shape[1] != n_classes:
            raise ValueError(f"{name} must be class ids (N,) or class vectors (N, {n_classes}), "
                             f"got {tuple(y.shape)}")
        if n is not None and y.shape[0] != n:
            raise ValueError(f"{name} has batch {y.shape[0]}, expected {n}")
        if y.numel() and not bool(torch.isfinite(y).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return y.float()
    _checks.class_ids(name, y, n_classes, n)
    return F.one_hot(y.long(), n_classes).float()


class ImagenetMechanism(nn.Module):
    """One mechanism as a standalone net ``(u, y) -> image`` at a fixed truncation: the unit
    that is exported. ``y`` is a class vector (N, n_classes) (ids are one-hot encoded first).
    The shape mechanism includes the U^2-Net and returns the mask (N, 1, H, W) in [0, 1]."""

    def __init__(self, net: BigGAN, truncation: float, masker: U2NET | None = None):
        super().__init__()
        self.net = net
        self.truncation = _check_truncation(truncation)
        self.masker = masker

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.to(u.dtype) if y.is_floating_point() else F.one_hot(y.long(), self.net.config.n_classes).to(u.dtype)
        x = self.net(u, y, self.truncation)
        return self.masker(x) if self.masker is not None else x


class ImagenetCGN(nn.Module):
    """Shape (pre-mask -> U^2-Net mask), texture and background BigGANs for 256x256 images.

    ``ch=128, resolution=256, u2net_div=1`` is the published model (~4 x 56M + 44M weights);
    smaller values make small random-weight models for tests. State-dict keys match the
    published ``cgn.pth`` (``biggan_GT.*``, ``f_shape.*``, ``f_text.*``, ``f_bg.*``, ``u2net.*``).
    """

    kind = "imagenet_cgn"
    # exporting it takes minutes: backend auto uses an export only once it is cached
    auto_exports = False

    def __init__(self, ch: int = 128, resolution: int = 256, u2net_div: int = 1,
                 n_classes: int = N_CLASSES, z_dim: int = Z_DIM, truncation: float = TRUNCATION,
                 gt: bool = True):
        super().__init__()
        if u2net_div not in (1, 2, 4, 8, 16):
            raise ValueError(f"u2net_div must be one of 1, 2, 4, 8, 16, got {u2net_div}")
        self.config = BigGANConfig(ch=ch, resolution=resolution, z_dim=z_dim, n_classes=n_classes)
        self.truncation = _check_truncation(truncation)
        self.n_classes = n_classes
        self.latent_dim = z_dim
        self.image_size = resolution
        self.u2net_div = u2net_div
        if gt:
            self.biggan_GT = BigGAN(self.config)
        self.f_shape = BigGAN(self.config)
        self.f_text = BigGAN(self.config)
        self.f_bg = BigGAN(self.config)
        self.u2net = U2NET(u2net_div)
        self.eval()

    @property
    def has_gt(self) -> bool:
        return hasattr(self, "biggan_GT")

    def _run(self, net: BigGAN, u, y, truncation, which: str) -> torch.Tensor:
        t = self.truncation if truncation is None else _check_truncation(truncation)
        if not torch.compiler.is_compiling():
            _checks.latent(f"u_{which}", u, self.latent_dim)
        return net(u.float(), class_vector(f"y_{which}", y, self.n_classes, u.shape[0]), t)

    def premask(self, u: torch.Tensor, y: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """Shape generator output, (N, 3, H, W) in [-1, 1]; the U^2-Net makes it a mask."""
        return self._run(self.f_shape, u, y, truncation, "shape")

    def mask(self, premask: torch.Tensor) -> torch.Tensor:
        """U^2-Net saliency of an image in [-1, 1] (fed as is, as published), (N, 1, H, W) in [0, 1]."""
        if not isinstance(premask, torch.Tensor) or premask.dim() != 4 or premask.shape[1] != 3:
            raise ValueError(f"premask must be a tensor (N, 3, H, W), got "
                             f"{tuple(premask.shape) if isinstance(premask, torch.Tensor) else type(premask).__name__}")
        return self.u2net(premask.float())

    def shape(self, u: torch.Tensor, y: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """Pre-clamp mask (N, 1, H, W) in [0, 1]: U^2-Net of the pre-mask."""
        return self.mask(self.premask(u, y, truncation))

    def texture(self, u: torch.Tensor, y: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """Foreground texture (N, 3, H, W) in [-1, 1]."""
        return self._run(self.f_text, u, y, truncation, "texture")

    def background(self, u: torch.Tensor, y: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """Background (N, 3, H, W) in [-1, 1]."""
        return self._run(self.f_bg, u, y, truncation, "bg")

    def unconstrained(self, u: torch.Tensor, y: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """The plain BigGAN (``biggan_GT``) the CGN was trained to imitate, (N, 3, H, W)."""
        if not self.has_gt:
            raise ValueError("this ImagenetCGN was built with gt=False: it has no biggan_GT")
        return self._run(self.biggan_GT, u, y, truncation, "gt")

    def forward(self, u_shape, y_shape, u_texture, y_texture, u_bg, y_bg, truncation: float | None = None):
        """(mask, foreground, background), as ``MnistCGN``: ``pycgn.reference.generate`` works as is."""
        return (self.shape(u_shape, y_shape, truncation), self.texture(u_texture, y_texture, truncation),
                self.background(u_bg, y_bg, truncation))

    def mechanisms(self, truncation: float | None = None) -> dict[str, ImagenetMechanism]:
        """The three nets as ``(u, class vector) -> image`` modules sharing this model's weights."""
        t = self.truncation if truncation is None else truncation
        return {
            "shape": ImagenetMechanism(self.f_shape, t, self.u2net),
            "texture": ImagenetMechanism(self.f_text, t),
            "background": ImagenetMechanism(self.f_bg, t),
        }

    def inference_mechanisms(self, truncation: float | None = None) -> dict[str, ImagenetMechanism]:
        """What runners and exports run in float32: ``mechanisms()`` itself (a folded copy would
        double ~1 GB of weights for ~3%; its class-conditional batch norms do not fold)."""
        return self.mechanisms(truncation)

    def low_precision_mechanisms(self, dtype: torch.dtype) -> dict[str, ImagenetMechanism]:
        """Copies of the mechanisms computing in ``dtype``: spectral norms folded into plain layers
        in float32 first (a per-call division by a low-precision reduction would lose accuracy),
        then converted. One mechanism is copied at a time, so the extra memory stays ~1/3 of the
        float32 weights. On the 2-core AMX CPU bfloat16 ran batch 1 ~3.4x eager float32 this way
        (channels-last), against 1.2x under autocast."""
        low = {}
        with torch.no_grad():
            for name, mech in self.inference_mechanisms().items():
                low[name] = fold_spectral_norms(copy.deepcopy(mech)).to(dtype).eval()
        return low

    def sampler_draw(self, seed: int, indices, **kwargs) -> Draw:
        """``imagenet_draw`` with this model's truncation and latent size."""
        kwargs.setdefault("truncation", self.truncation)
        return imagenet_draw(seed, indices, z_dim=self.latent_dim, **kwargs)

    def sampler(self, seed: int, counterfactuals: int = 1) -> "ImagenetSampler":
        """The seeded sampler of this model's inputs: truncated noise, uniform classes, no offsets."""
        return ImagenetSampler(self, seed, counterfactuals)

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names() if self.n_classes == N_CLASSES else tuple(str(i) for i in range(self.n_classes))

    def class_id(self, value, name: str = "class") -> int:
        """A class id from an id (int or digit string) or an ImageNet class name (any synonym)."""
        i = class_id(value, name)
        if i >= self.n_classes:
            raise ValueError(f"{name} has class id {i}, expected 0..{self.n_classes - 1}")
        return i

    def set_truncation(self, truncation) -> None:
        """Sample at another truncation: it scales the noise and picks the batch-norm statistics."""
        self.truncation = _check_truncation(truncation)

    def export_spec(self, truncation: float | None = None, class_input: str = "ids") -> ExportSpec:
        """What ``pycgn.export`` writes for this model. ``truncation`` (default: the model's) is
        fixed in the files: it selects the batch-norm statistics. ``class_input``: ``"ids"``
        (int64 (N,), one-hot inside the graph, as MNIST's exports) or ``"vector"`` (float32
        (N, n_classes) class vectors, for interpolations)."""
        if class_input not in CLASS_INPUTS:
            raise ValueError(f"class_input must be one of {', '.join(CLASS_INPUTS)}, got {class_input!r}")
        t = self.truncation if truncation is None else _check_truncation(truncation)
        n = 2
        u = torch.from_numpy(truncated_normal(0, np.arange(n), U_TRUNC, self.latent_dim)) * t
        ids = torch.randint(0, self.n_classes, (n,), generator=torch.Generator().manual_seed(0),
                            dtype=torch.int64)
        if class_input == "ids":
            mechs = {k: _IdsMechanism(m) for k, m in self.inference_mechanisms(t).items()}
            y, y_input = ids, {"name": "y", "shape": ["batch"], "dtype": "int64"}
        else:
            mechs = self.inference_mechanisms(t)
            y = F.one_hot(ids, self.n_classes).float()
            y_input = {"name": "y", "shape": ["batch", self.n_classes], "dtype": "float32"}
        names = class_names() if self.n_classes == N_CLASSES else [str(i) for i in range(self.n_classes)]
        return ExportSpec(
            mechanisms=mechs, example=(u, y), y_input=y_input, file_meta={"truncation": t},
            sidecar={"class_names": list(names),
                     "max_offset": 0,  # no texture crop in the ImageNet CGN
                     # u must be truncation * truncated_normal(bound): the batch norms use this truncation
                     "truncation": t, "truncation_bound": TRUNC_BOUND, "class_input": class_input})


class ImagenetSampler:
    """The ImageNet CGN's draws (truncated noise, its classes, zero offsets) behind the Sampler API."""

    def __init__(self, model: ImagenetCGN, seed: int, counterfactuals: int = 1):
        self.model, self.seed, self.counterfactuals = model, seed, counterfactuals
        model.sampler_draw(seed, [])  # validates the seed now rather than at the first draw

    def draw(self, indices, shape=None, texture=None, bg=None) -> Draw:
        return self.model.sampler_draw(self.seed, indices, shape=shape, texture=texture, bg=bg,
                                       counterfactuals=self.counterfactuals)

    def draw_n(self, n: int, start: int = 0, **classes) -> Draw:
        n = _checks.count("n", n)
        return self.draw(range(start, start + n), **classes)


class _IdsMechanism(nn.Module):
    """``(u, y int64 (N,))``: one-hot inside the graph, so exports take ids like MNIST's."""

    def __init__(self, mech: ImagenetMechanism):
        super().__init__()
        self.mech = mech

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mech(u, F.one_hot(y, self.mech.net.config.n_classes).to(u.dtype))


# ---------------------------------------------------------------------------------------------
# Loading

BIGGANS = ("biggan_GT", "f_shape", "f_text", "f_bg")
_SHOW = 8


def _listing(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _strip_wrappers(sd: dict) -> dict:
    # DataParallel adds a 'module' component; the published loader drops it the same way.
    return {".".join(p for p in k.split(".") if p != "module"): v for k, v in sd.items()}


def _read_state_dict(arg: str, path) -> dict[str, torch.Tensor]:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{arg} must be a path, got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{arg} {p}: no such file")
    if not p.is_file():
        raise CheckpointError(f"{arg} {p}: is not a file")
    obj = read_torch_file(p)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in obj.items())):
        raise CheckpointError(f"{arg} {p}: not a state dict of tensors (found {type(obj).__name__})")
    check_weights(obj, f"{arg} {p}")  # the whole file, biggan_GT too: damage anywhere means a bad copy
    return _strip_wrappers(obj)


def looks_like_imagenet_cgn(keys) -> bool:
    """Whether state-dict keys are an ImageNet CGN's (for dispatching ``model=path``)."""
    return any(isinstance(k, str) and ".".join(p for p in k.split(".") if p != "module").startswith(
        "f_shape.generator.") for k in keys)


def infer_config(biggan: dict | None = None, u2net: dict | None = None) -> dict:
    """ImagenetCGN size arguments from BigGAN keys (``embeddings.weight``, ``generator.*``) and
    U^2-Net keys (``stage1.*``); parts without a state dict keep the published size."""
    cfg: dict = {}
    if biggan:
        emb = biggan.get("embeddings.weight")
        rgb = biggan.get("generator.conv_to_rgb.weight_orig")
        if emb is None or rgb is None or emb.dim() != 2:
            raise ValueError("BigGAN weights lack embeddings.weight or generator.conv_to_rgb.weight_orig")
        cfg.update(z_dim=int(emb.shape[0]), n_classes=int(emb.shape[1]), ch=int(rgb.shape[0]))
        blocks = {int(k.split(".")[2]) for k in biggan if k.startswith("generator.layers.")}
        ups = (len(blocks) - 1) // 2       # one attention block, two GenBlocks per upsampling
        cfg["resolution"] = 4 * 2 ** ups
    if u2net:
        w = u2net.get("stage1.rebnconvin.conv_s1.weight")
        if w is None or w.dim() != 4 or w.shape[0] == 0 or 64 % w.shape[0]:
            raise ValueError("U^2-Net weights lack a usable stage1.rebnconvin.conv_s1.weight")
        cfg["u2net_div"] = 64 // int(w.shape[0])
    return cfg


def _check_layout(where: str, net: str, sd: dict, layout: dict) -> None:
    """``sd`` must hold exactly the keys and shapes of ``layout`` (one BigGAN's state dict)."""
    missing, extra = set(layout) - set(sd), set(sd) - set(layout)
    if missing or extra:
        raise CheckpointError(f"{where}: {net} does not have the BigGAN layout: missing "
                              f"{_listing(missing) if missing else 'none'}; unexpected "
                              f"{_listing(extra) if extra else 'none'}")
    bad = [f"{net}.{k} {tuple(sd[k].shape)} (expected {tuple(s)})" for k, s in layout.items()
           if tuple(sd[k].shape) != tuple(s)]
    if bad:
        raise CheckpointError(f"{where}: shapes do not match the BigGAN layout: {_listing(bad)}")


def _sub(sd: dict, prefix: str) -> dict:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix + ".")}


def _only_known(sds: dict, given: dict, arg: str, known: dict, net: str) -> dict:
    """The state dict read for ``arg``, refused if it has a key that ``net`` does not."""
    extra = set(sds[arg]) - set(known)
    if extra:
        raise CheckpointError(f"{arg} {given[arg]}: unexpected keys for {net}: {_listing(extra)}")
    return sds[arg]


def load_imagenet_cgn(cgn_path=None, biggan_path=None, u2net_path=None, *, truncation: float = TRUNCATION,
                      gt: bool = False, device="cpu") -> ImagenetCGN:
    """Load the ImageNet CGN strictly from the published files.

    ``cgn_path``: the CGN's ``cgn.pth`` (every key of the model). ``biggan_path``: the
    BigGAN-deep-256 weights (``biggan-deep-256-pytorch_model.bin``), the start of all four
    BigGANs; ``u2net_path``: ``u2net.pth``. As in the published code, the base files load
    first and ``cgn.pth`` overrides them; together the files must give every key, exactly,
    with matching shapes (U^2-Net's ``num_batches_tracked``, absent from old files, are
    zeroed). Sizes are read from the weights, so small test models load the same way.
    ``gt=False`` drops ``biggan_GT`` (the CGN does not need it to sample).
    """
    truncation = _check_truncation(truncation)
    given = {k: v for k, v in (("cgn_path", cgn_path), ("biggan_path", biggan_path),
                               ("u2net_path", u2net_path)) if v is not None}
    if not given:
        raise ValueError("load_imagenet_cgn needs cgn_path and/or biggan_path and u2net_path")
    sds = {k: _read_state_dict(k, v) for k, v in given.items()}
    cgn = sds.get("cgn_path", {})

    files = ", ".join(f"{k} {v}" for k, v in given.items())
    try:
        cfg = infer_config(sds.get("biggan_path") or _sub(cgn, "f_shape"),
                           sds.get("u2net_path") or _sub(cgn, "u2net"))
        # sizes come from the weights' shapes and the model is built on the meta device: nothing is
        # allocated for it before every shape is checked (the loaded tensors are then assigned)
        with torch.device("meta"):
            model = ImagenetCGN(truncation=truncation, gt=gt, **cfg)
    except ValueError as e:
        raise CheckpointError(f"{files}: {e}") from e
    expected = {k: v.shape for k, v in model.state_dict().items()}
    floating = {k: v.is_floating_point() for k, v in model.state_dict().items()}
    biggan_keys = {k: v.shape for k, v in model.f_shape.state_dict().items()}
    u2net_keys = {k: v.shape for k, v in model.u2net.state_dict().items()}

    merged: dict[str, torch.Tensor] = {}
    if "biggan_path" in sds:
        # The published code reads this file with strict=False (BigGAN.initialize), but the file is
        # huggingface's ``model.state_dict()`` of a module with exactly this layout
        # (pytorch_pretrained_biggan's convert_tf_to_pytorch, weight_v included): strict=False
        # tolerates no key of the real file, so no unexpected key is accepted here either, and
        # missing ones must come from cgn_path.
        sd = _only_known(sds, given, "biggan_path", biggan_keys, f"BigGAN-deep (ch={cfg.get('ch')})")
        for net in BIGGANS:
            if net != "biggan_GT" or gt:
                merged.update({f"{net}.{k}": v for k, v in sd.items()})
    if "u2net_path" in sds:
        sd = _only_known(sds, given, "u2net_path", u2net_keys, "U^2-Net")
        merged.update({f"u2net.{k}": v for k, v in sd.items()})
    if cgn:
        droppable = set() if gt else {k for k in cgn if k.startswith("biggan_GT.")}
        if droppable:  # the published strict load checks biggan_GT: a damaged one means a damaged file
            _check_layout(f"cgn_path {given['cgn_path']}", "biggan_GT", _sub(cgn, "biggan_GT"), biggan_keys)
        extra = set(cgn) - set(expected) - droppable
        if extra:
            raise CheckpointError(f"cgn_path {given['cgn_path']}: unexpected keys for the ImageNet CGN: "
                                  f"{_listing(extra)}")
        merged.update({k: v for k, v in cgn.items() if k not in droppable})

    missing = set(expected) - set(merged)
    for k in [k for k in missing if k.endswith("num_batches_tracked")]:
        merged[k] = torch.zeros((), dtype=torch.long)
        missing.discard(k)
    if missing:
        raise CheckpointError(f"{files}: missing keys of the ImageNet CGN: {_listing(missing)}")
    bad = [f"{k} {tuple(merged[k].shape)} (expected {tuple(s)})" for k, s in expected.items()
           if tuple(merged[k].shape) != tuple(s)]
    if bad:
        raise CheckpointError(f"{files}: shapes do not match the ImageNet CGN: {_listing(bad)}")
    bad = [f"{k} {merged[k].dtype}" for k in expected if merged[k].is_floating_point() != floating[k]]
    if bad:  # assign=True would keep them as they are and fail only when the model runs
        raise CheckpointError(f"{files}: tensors of the wrong kind (integer for floating point or "
                              f"the reverse): {_listing(bad)}")
    merged = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in merged.items()}
    # assign=True: the meta-device model takes the loaded tensors without a second copy
    model.load_state_dict(merged, strict=True, assign=True)
    model.info = ModelInfo(kind=ImagenetCGN.kind, variant="imagenet", image_size=model.image_size,
                           class_names=class_names() if model.n_classes == N_CLASSES else
                           tuple(str(i) for i in range(model.n_classes)),
                           sha256=weights_sha256(merged), source=str(given.get("cgn_path", "")),
                           extra={"truncation": truncation, **{k: str(v) for k, v in given.items()}})
    return model.eval().to(device)


def save_imagenet_cgn(model: ImagenetCGN, path) -> Path:
    """Write the model's state dict in the published ``cgn.pth`` layout, atomically."""
    if not isinstance(model, ImagenetCGN):
        raise TypeError(f"model must be an ImagenetCGN, got {type(model).__name__}")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    return path
