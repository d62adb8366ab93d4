"""The MNIST CGN of Sauer & Geiger (ICLR 2021), compatible with the published checkpoints.

Module indices inside each ``nn.Sequential`` are part of the state-dict keys
(``f_shape.4.weight``...), so the layer order below must not change.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

import numpy as np

from .. import _checks
from ..sampler import Sampler
from .base import DIGITS, ExportSpec
from .fold import bn_affine, conv_bn, upsample_conv_as_deconv
from .spatial import BG_NETS, FoldedSpatial, SpatialTexture

N_CLASSES = 10
LATENT_DIM = 32
NGF = 32
IMAGE_SIZE = 32


class Reshape(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


def _shape_net(in_dim: int, ngf: int, init: int) -> nn.Sequential:
    c = ngf * 2
    return nn.Sequential(
        nn.Linear(in_dim, c * init * init),
        Reshape(c, init, init),
        nn.InstanceNorm2d(c),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(c, ngf, 3, padding=1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.LeakyReLU(0.2),
        nn.InstanceNorm2d(ngf),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(ngf, 1, 3, padding=1, bias=False),
        nn.BatchNorm2d(1),
        nn.LeakyReLU(0.2),
        nn.InstanceNorm2d(1),
    )


def _texture_net(in_dim: int, ngf: int, init: int) -> nn.Sequential:
    c = ngf * 2
    return nn.Sequential(
        nn.Linear(in_dim, c * init * init),
        Reshape(c, init, init),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(c, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.LeakyReLU(0.2),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(c, ngf, 3, padding=1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ngf, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Tanh(),
    )


# Inference form of the nets: the same functions with fewer operations. Every module between the
# texture nets' Linear and their first LeakyReLU is linear (Linear, reshape, nearest upsample, conv,
# eval-mode BatchNorm), so that chain is one Linear straight to the 16x16 map; a nearest x2 upsample
# followed by a 3x3 conv is a stride-2 4x4 transposed conv (4 instead of 9 multiply-adds per output
# and input channel); each remaining BatchNorm folds into the conv before it. The MNIST CGN then
# needs ~22 M multiply-adds per image instead of ~64 M. Folding is done in float64, so the
# folded nets match the published ones to float32 rounding (~1e-6; the mask's logits ~1e-5).

def _fold_shape_net(net: nn.Sequential) -> nn.Sequential:
    lin, reshape, norm0, _, conv1, bn1, act1, norm1, _, conv2, bn2, act2, norm2 = net
    return nn.Sequential(copy.deepcopy(lin), reshape, norm0,
                         upsample_conv_as_deconv(conv1, bn1), act1, norm1,
                         upsample_conv_as_deconv(conv2, bn2), act2, norm2)


class _ChannelsLast(nn.Module):
    """(N, size * size * c) in (y, x, channel) order -> (N, c, size, size) with channels-last
    strides, without a copy: oneDNN's convolutions ran ~25% faster on NHWC here (eager CPU)."""

    def __init__(self, c: int, size: int):
        super().__init__()
        self.c, self.size = c, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.size, self.size, self.c).permute(0, 3, 1, 2)


class _Contiguous(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()  # callers get NCHW images, whatever layout the convolutions used


def _fold_texture_net(net: nn.Sequential, channels_last: bool) -> nn.Sequential:
    """``channels_last``: the Linear writes NHWC and the convolutions run on it (eager CPU);
    otherwise a plain NCHW graph (exports: ONNX would add transposes, ~20% slower in onnxruntime)."""
    lin, reshape, up1, conv1, bn1, act1, _, conv2, bn2, act2, conv3, bn3, tanh = net
    c, size = conv1.out_channels, 2 * reshape.shape[-1]
    scale, shift = bn_affine(bn1)

    def chain(x: torch.Tensor) -> torch.Tensor:  # the linear part after the Linear, in float64
        x = F.interpolate(x.reshape(-1, *reshape.shape), scale_factor=2.0, mode="nearest")
        return F.conv2d(x, conv1.weight.double(), padding=1) * scale.view(1, -1, 1, 1)

    def flat(x: torch.Tensor) -> torch.Tensor:  # (n, c, size, size) -> (n, features) in the net's order
        return (x.permute(0, 2, 3, 1) if channels_last else x).reshape(x.shape[0], -1)

    first = nn.Linear(lin.in_features, c * size * size)
    first.weight.data = flat(chain(lin.weight.double().T)).T.float().contiguous()
    first.bias.data = flat(chain(lin.bias.double()) + shift.view(1, -1, 1, 1)).reshape(-1).float()
    last = conv_bn(conv3, bn3, padding=1)
    if not channels_last:
        return nn.Sequential(first, Reshape(c, size, size), act1, upsample_conv_as_deconv(conv2, bn2), act2,
                             last, tanh)
    return nn.Sequential(first, _ChannelsLast(c, size), act1, upsample_conv_as_deconv(conv2, bn2), act2,
                         last, tanh, _Contiguous()).to(memory_format=torch.channels_last)


class Mechanism(nn.Module):
    """One mechanism as a standalone net: ``(u, y) -> image``; the unit that is exported."""

    def __init__(self, label_emb: nn.Embedding, net: nn.Sequential):
        super().__init__()
        self.label_emb = label_emb
        self.net = net

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.is_floating_point():
            # a class vector (N, n_classes): a one-hot row picks the embedding exactly, a blend of
            # two classes blends their embeddings (interpolation)
            return self.net(torch.cat([u, y.to(u.dtype) @ self.label_emb.weight], dim=1))
        return self.net(torch.cat([u, self.label_emb(y)], dim=1))


class MnistCGN(nn.Module):
    """Shape (mask), texture (foreground) and background generators for 32x32 RGB digits.

    Every input is explicit: latents ``u_*`` (N, 32) float32 and class ids ``y_*`` (N,) int64.
    The texture crop offsets are applied at composition (``pycgn.reference.composite``),
    not here, so the nets hold no randomness.
    """

    kind = "mnist_cgn"
    # On the CPU the runners compute every batch in chunks of exactly this many samples (the last
    # padded): a sample's bits then never depend on its batch (pycgn.runtime._in_chunks), and 64
    # runs as fast per image as larger batches here. One image costs ~30 ms instead of ~3.
    cpu_chunk = 64
    auto_exports = True  # exported in seconds: backend auto exports it on first use

    def __init__(self, n_classes: int = N_CLASSES, latent_dim: int = LATENT_DIM, ngf: int = NGF,
                 image_size: int = IMAGE_SIZE, bg_net: str = "dense"):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        if bg_net not in BG_NETS:
            raise ValueError(f"bg_net must be one of {', '.join(BG_NETS)}, got {bg_net!r}")
        self.bg_net = bg_net
        self.n_classes = n_classes
        self.latent_dim = latent_dim
        self.image_size = image_size
        in_dim = latent_dim + n_classes
        init = image_size // 4
        self.label_emb = nn.Embedding(n_classes, n_classes)
        self.f_shape = _shape_net(in_dim, ngf, init)
        self.f_text1 = _texture_net(in_dim, ngf, init)
        self.f_text2 = (_texture_net(in_dim, ngf, init) if bg_net == "dense" else
                        SpatialTexture(latent_dim, n_classes, ngf, image_size, waves=bg_net == "periodic"))
        self.eval()

    def mechanisms(self) -> dict[str, Mechanism]:
        """The three nets as separate ``(u, y) -> image`` modules sharing this model's weights."""
        return {
            "shape": Mechanism(self.label_emb, self.f_shape),
            "texture": Mechanism(self.label_emb, self.f_text1),
            "background": Mechanism(self.label_emb, self.f_text2),
        }

    def inference_mechanisms(self, channels_last: bool = True) -> dict[str, Mechanism]:
        """What runners and exports run: the three mechanisms with a snapshot of the current
        weights, folded into ~2.9x fewer operations (see ``_fold_texture_net``); equal to
        ``mechanisms()`` up to float32 rounding. Later changes to the weights do not reach them.
        ``channels_last``: NHWC texture nets (eager); exports take the plain NCHW graph."""
        with torch.no_grad():
            emb = copy.deepcopy(self.label_emb)
            return {
                "shape": Mechanism(emb, _fold_shape_net(self.f_shape)).eval(),
                "texture": Mechanism(emb, _fold_texture_net(self.f_text1, channels_last)).eval(),
                "background": Mechanism(emb, _fold_texture_net(self.f_text2, channels_last)
                                        if self.bg_net == "dense" else FoldedSpatial(self.f_text2, channels_last)).eval(),
            }

    def low_precision_mechanisms(self, dtype: torch.dtype) -> dict[str, Mechanism]:
        """The inference mechanisms computing in ``dtype`` (copies; the model stays float32)."""
        return {k: m.to(dtype) for k, m in self.inference_mechanisms().items()}

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(getattr(getattr(self, "info", None), "class_names", DIGITS))

    def class_id(self, value, name: str = "class") -> int:
        """A class id from an id (int or digit string) or one of ``class_names``."""
        names = self.class_names
        if isinstance(value, str):
            if value in names:
                return names.index(value)
            if not value.strip().lstrip("-").isdigit():
                raise ValueError(f"{name}: unknown class {value!r}; expected an id 0..{len(names) - 1} or one of "
                                 f"{', '.join(names[:12])}{'...' if len(names) > 12 else ''}")
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be a class id or a class name, got {type(value).__name__}")
        if not 0 <= value < len(names):
            raise ValueError(f"{name} has class id {value}, expected 0..{len(names) - 1}")
        return int(value)

    def set_truncation(self, truncation) -> None:
        raise ValueError("truncation applies to the ImageNet CGN only")

    def sampler(self, seed: int, counterfactuals: int = 1) -> Sampler:
        """The seeded sampler of this model's inputs: normal latents, uniform classes, crop offsets."""
        return Sampler(seed, n_classes=self.n_classes, latent_dim=self.latent_dim, max_offset=self.image_size,
                       counterfactuals=counterfactuals)

    def export_spec(self) -> ExportSpec:
        """What ``pycgn.export`` writes for this model: the mechanisms take class ids."""
        g = torch.Generator().manual_seed(0)
        example = (torch.randn(3, self.latent_dim, generator=g),
                   torch.randint(0, self.n_classes, (3,), generator=g, dtype=torch.int64))
        return ExportSpec(
            mechanisms=self.inference_mechanisms(channels_last=False), example=example,
            file_meta={"nets": "folded"},  # the inference form; in the cache entry's name as well
            y_input={"name": "y", "shape": ["batch"], "dtype": "int64"},
            sidecar={"class_names": list(getattr(getattr(self, "info", None), "class_names", DIGITS)),
                     "max_offset": self.image_size,  # the published shuffler: offsets {0, ..., size}
                     # C++ computes in the same chunks: the same bits (none: batches as they come)
                     **({"cpu_chunk": self.cpu_chunk} if self.cpu_chunk else {}),
                     "nets": "folded"})

    def _run(self, net: nn.Sequential, u: torch.Tensor, y: torch.Tensor, which: str) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            _checks.latent(f"u_{which}", u, self.latent_dim)
            _checks.class_ids(f"y_{which}", y, self.n_classes, u.shape[0])
        return net(torch.cat([u.float(), self.label_emb(y.long())], dim=1))

    def shape(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pre-clamp mask, (N, 1, H, W)."""
        return self._run(self.f_shape, u, y, "shape")

    def texture(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Foreground texture before the crop, (N, 3, H, W) in [-1, 1]."""
        return self._run(self.f_text1, u, y, "texture")

    def background(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Background before the crop, (N, 3, H, W) in [-1, 1]."""
        return self._run(self.f_text2, u, y, "bg")

    def forward(self, u_shape, y_shape, u_texture, y_texture, u_bg, y_bg):
        return (self.shape(u_shape, y_shape), self.texture(u_texture, y_texture),
                self.background(u_bg, y_bg))
