"""BigGAN-deep generator (Brock et al., ICLR 2019) with the state-dict layout of the published
BigGAN-deep-256 PyTorch weights (huggingface's conversion, used by the ImageNet CGN).

Layout facts that must not change (they are the state-dict keys):
``embeddings`` (Linear, classes -> z_dim, no bias), ``generator.gen_z``,
``generator.layers.{i}`` (GenBlocks, with a self-attention block inserted at position 8 at
256x256), ``generator.bn``, ``generator.conv_to_rgb``. Spectrally normalised layers keep
``weight_orig``, ``weight_u`` and ``weight_v`` as ``torch.nn.utils.spectral_norm`` stores them;
in inference the weight is ``weight_orig / (u . W v)`` with the stored ``u``, ``v`` (no power
iteration), computed here without forward hooks so the nets trace and script cleanly.

Batch norms use precomputed statistics: ``n_stats`` = 51 rows for truncations 0, 0.02, ..., 1;
a truncation between two rows mixes them with the published weights (note: ``coef`` weighs the
*lower* row, as in the published code).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

# (upsample?, in-channel multiplier, out-channel multiplier) of the published 256x256 model
LAYERS_256 = ((False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
              (True, 8, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2),
              (True, 2, 1))
ATTENTION_256 = 8


@dataclass(frozen=True)
class BigGANConfig:
    """``ch=128, resolution=256`` is the published BigGAN-deep-256; smaller ones are for tests.

    A smaller resolution keeps the last ``log2(resolution / 4)`` upsampling stages of the
    256x256 model (and its attention block at resolution / 4).
    """
    ch: int = 128
    resolution: int = 256
    z_dim: int = 128
    n_classes: int = 1000
    n_stats: int = 51
    eps: float = 1e-4

    def __post_init__(self):
        ups = {16: 2, 32: 3, 64: 4, 128: 5, 256: 6}
        if self.resolution not in ups:
            raise ValueError(f"resolution must be one of {sorted(ups)}, got {self.resolution}")
        if self.ch < 3:  # conv_to_rgb keeps the first 3 of ch channels
            raise ValueError(f"ch must be >= 3, got {self.ch}")
        if self.z_dim < 1 or self.n_classes < 1 or self.n_stats < 2:
            raise ValueError("z_dim and n_classes must be >= 1 and n_stats >= 2")

    @property
    def layers(self) -> tuple:
        drop = 2 * (6 - int(math.log2(self.resolution // 4)))
        return LAYERS_256[drop:]

    @property
    def attention(self) -> int:
        return ATTENTION_256 - 2 * (6 - int(math.log2(self.resolution // 4)))


def _power_init_(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, steps: int = 2) -> None:
    """u, v from a few power iterations on ``weight``: sigma = |W v| > 0, a sane scale for random weights."""
    with torch.no_grad():
        w = weight.reshape(weight.shape[0], -1)
        u.normal_()
        u.copy_(F.normalize(u, dim=0, eps=1e-12))
        for _ in range(steps):
            v.copy_(F.normalize(u @ w, dim=0, eps=1e-12))  # not mv(w.t(), u): a slow strided path
            u.copy_(F.normalize(torch.mv(w, v), dim=0, eps=1e-12))


class _SpectralNorm(nn.Module):
    """Holds ``weight_orig`` (+ ``bias``) and the power-iteration vectors ``weight_u``, ``weight_v``."""

    def _setup(self, shape: tuple, bias: bool) -> None:
        # Registration order = key order of a spectral_norm'd torch layer: bias, weight_orig, u, v.
        if bias:
            self.bias = nn.Parameter(torch.empty(shape[0]))
        else:
            self.register_parameter("bias", None)
        self.weight_orig = nn.Parameter(torch.empty(shape))
        self.register_buffer("weight_u", torch.empty(shape[0]))
        self.register_buffer("weight_v", torch.empty(math.prod(shape[1:])))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.weight_orig.device.type != "meta":
            _power_init_(self.weight_orig, self.weight_u, self.weight_v)

    def weight(self) -> torch.Tensor:
        # Same ops as torch's SpectralNorm.compute_weight in eval mode.
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma


class SNLinear(_SpectralNorm):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self._setup((out_features, in_features), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class SNConv2d(_SpectralNorm):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.padding = padding
        self._setup((out_channels, in_channels, kernel_size, kernel_size), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


def fold_spectral_norms(module: nn.Module) -> nn.Module:
    """Replace, in place, every spectral-normed layer of ``module`` by a plain ``nn.Linear`` /
    ``nn.Conv2d`` holding ``weight_orig / sigma``, computed once in float32: the same function
    without the per-call division (and its reduction, which low precision would spoil). For
    copies that run in bfloat16/float16; returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, _SpectralNorm):
            w = child.weight().detach()
            if isinstance(child, SNConv2d):
                plain = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=child.padding,
                                  bias=child.bias is not None, device="meta")
            else:
                plain = nn.Linear(w.shape[1], w.shape[0], bias=child.bias is not None, device="meta")
            plain.weight = nn.Parameter(w, requires_grad=False)
            if child.bias is not None:
                plain.bias = nn.Parameter(child.bias.detach(), requires_grad=False)
            setattr(module, name, plain)
        else:
            fold_spectral_norms(child)
    return module


def _stats(means: torch.Tensor, variances: torch.Tensor, truncation: float, n_stats: int):
    """Batch-norm statistics for ``truncation``, mixed exactly as the published code does."""
    coef, start = math.modf(truncation / (1.0 / (n_stats - 1)))
    start = int(start)
    if coef != 0.0:
        return (means[start] * coef + means[start + 1] * (1 - coef),
                variances[start] * coef + variances[start + 1] * (1 - coef))
    return means[start], variances[start]


class BigGANBatchNorm(nn.Module):
    """Batch norm with precomputed statistics per truncation; class-conditional gain and bias."""

    def __init__(self, num_features: int, cond_dim: int | None, n_stats: int, eps: float):
        super().__init__()
        self.eps = eps
        self.n_stats = n_stats
        self.conditional = cond_dim is not None
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))
        if self.conditional:
            self.scale = SNLinear(cond_dim, num_features, bias=False)
            self.offset = SNLinear(cond_dim, num_features, bias=False)
        else:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor, truncation: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        mean, var = _stats(self.running_means, self.running_vars, truncation, self.n_stats)
        if not self.conditional:
            return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, momentum=0.0,
                                eps=self.eps)
        mean = mean[None, :, None, None]
        var = var[None, :, None, None]
        weight = 1 + self.scale(cond)[:, :, None, None]
        bias = self.offset(cond)[:, :, None, None]
        return (x - mean) / torch.sqrt(var + self.eps) * weight + bias


class SelfAttn(nn.Module):
    """SAGAN self-attention; keys and values are 2x2 max-pooled."""

    def __init__(self, channels: int):
        super().__init__()
        self.snconv1x1_theta = SNConv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_phi = SNConv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_g = SNConv2d(channels, channels // 2, 1, bias=False)
        self.snconv1x1_o_conv = SNConv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, ch, h, w = x.shape
        theta = self.snconv1x1_theta(x).reshape(-1, ch // 8, h * w)
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2).reshape(-1, ch // 8, h * w // 4)
        attn = torch.softmax(torch.bmm(theta.permute(0, 2, 1), phi), dim=-1)
        g = F.max_pool2d(self.snconv1x1_g(x), 2).reshape(-1, ch // 2, h * w // 4)
        out = torch.bmm(g, attn.permute(0, 2, 1)).reshape(-1, ch // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(out)


class GenBlock(nn.Module):
    """Bottleneck residual block of BigGAN-deep: 1x1 -> 3x3 -> 3x3 -> 1x1, conditional BNs."""

    def __init__(self, in_size: int, out_size: int, cond_dim: int, up: bool, n_stats: int, eps: float):
        super().__init__()
        self.up = up
        mid = in_size // 4
        for i, (cin, cout, k) in enumerate(((in_size, mid, 1), (mid, mid, 3), (mid, mid, 3),
                                            (mid, out_size, 1))):
            setattr(self, f"bn_{i}", BigGANBatchNorm(cin, cond_dim, n_stats, eps))
            setattr(self, f"conv_{i}", SNConv2d(cin, cout, k, padding=k // 2))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, truncation, cond)))
        h = F.relu(self.bn_1(h, truncation, cond))
        if self.up:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, truncation, cond)))
        h = self.conv_3(F.relu(self.bn_3(h, truncation, cond)))
        if h.shape[1] != x.shape[1]:  # fewer output channels: the skip keeps the first ones
            x = x[:, :h.shape[1]]
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return h + x


class Generator(nn.Module):
    def __init__(self, cfg: BigGANConfig):
        super().__init__()
        self.ch = cfg.ch
        self.first = cfg.layers[0][1] * cfg.ch
        cond_dim = 2 * cfg.z_dim
        self.gen_z = SNLinear(cond_dim, 4 * 4 * self.first)
        layers = []
        for i, (up, cin, cout) in enumerate(cfg.layers):
            if i == cfg.attention:
                layers.append(SelfAttn(cin * cfg.ch))
            layers.append(GenBlock(cin * cfg.ch, cout * cfg.ch, cond_dim, up, cfg.n_stats, cfg.eps))
        self.layers = nn.ModuleList(layers)
        self.bn = BigGANBatchNorm(cfg.ch, None, cfg.n_stats, cfg.eps)
        self.conv_to_rgb = SNConv2d(cfg.ch, cfg.ch, 3, padding=1)

    def forward(self, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        # gen_z's output is laid out (4, 4, C) as in the TensorFlow original
        z = self.gen_z(cond).reshape(-1, 4, 4, self.first).permute(0, 3, 1, 2).contiguous()
        for layer in self.layers:
            z = layer(z, cond, truncation) if isinstance(layer, GenBlock) else layer(z)
        z = self.conv_to_rgb(F.relu(self.bn(z, truncation)))
        return torch.tanh(z[:, :3])


class BigGAN(nn.Module):
    """``(u (N, z_dim), class vector (N, n_classes), truncation) -> image (N, 3, R, R)`` in [-1, 1]."""

    def __init__(self, cfg: BigGANConfig = BigGANConfig()):
        super().__init__()
        self.config = cfg
        self.embeddings = nn.Linear(cfg.n_classes, cfg.z_dim, bias=False)
        self.generator = Generator(cfg)

    def forward(self, u: torch.Tensor, y: torch.Tensor, truncation: float) -> torch.Tensor:
        if not 0.0 < truncation <= 1.0:
            raise ValueError(f"truncation must be in (0, 1], got {truncation}")
        return self.generator(torch.cat([u, self.embeddings(y)], dim=1), truncation)
