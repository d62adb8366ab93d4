"""Background nets without position-dependent weights for the MNIST CGN (``bg_net="spatial"`` or
``"periodic"``; Wildlife's since 2026-11-30, issue 20), and their inference form.

The published texture net starts with a Linear that gives each position of its 8x8 map its own
weights: a background net then draws one mark at one place in every tile of a class and ignores
its latent (model card). Here the latent goes through a fixed projection to a stationary noise
field, the class is broadcast over it and circular convolutions draw the texture (spatial texture
GANs, Jetchev et al. 2016): nothing depends on the position, so no class has a recurring mark and
the latent sets the pattern. ``"periodic"`` adds channels of sinusoids with integer wave numbers on
the 32 px tile (seamless as a wrap-around crop), per-class learned amplitudes and phases drawn from
the latent, for the regular patterns (checks, stripes, dot grids) that noise turns into blotches
(periodic spatial GANs, Bergmann et al. 2017). Uniform phases keep the field stationary.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .fold import bn_affine, conv_bn, upsample_conv_as_deconv

BG_NETS = ("dense", "spatial", "periodic")
FIELD_CHANNELS = 8
WAVE_CHANNELS = 8
_FIELD_SEED = 0x5EED  # the fixed projections are buffers saved with the weights; the seed only starts them


def _wrap(x: torch.Tensor) -> torch.Tensor:
    """Circular padding by one pixel on both spatial axes, as slices (every exporter takes them)."""
    x = torch.cat([x[..., -1:, :], x, x[..., :1, :]], dim=-2)
    return torch.cat([x[..., -1:], x, x[..., :1]], dim=-1)


def _wrap_into(x: torch.Tensor) -> torch.Tensor:
    """``_wrap`` for eager inference: one buffer in ``x``'s layout, filled by slices (2.7x faster
    than the two concatenations on a channels-last 64x32x32x32 map here; exports keep ``_wrap``)."""
    n, c, h, w = x.shape
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=fmt)
    out[:, :, 1:-1, 1:-1] = x
    out[:, :, 0, 1:-1] = x[:, :, -1]
    out[:, :, -1, 1:-1] = x[:, :, 0]
    out[:, :, :, 0] = out[:, :, :, -2]  # the columns last: they carry the corners
    out[:, :, :, -1] = out[:, :, :, 1]
    return out


class Wrap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _wrap(x)


def _half_plane(top: int) -> torch.Tensor:
    """Integer wave numbers (a, b), |a|, |b| <= top, one of each pair +-(a, b): (k, 2) float64."""
    return torch.tensor([(a, b) for a in range(top + 1) for b in range(-top, top + 1) if a > 0 or b > 0],
                        dtype=torch.float64)


def _angles(ab: torch.Tensor, side: int) -> torch.Tensor:
    """(side * side, k): the phase 2 pi (a y + b x) / side of each wave (a, b) at each pixel (y, x)."""
    pos = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    return pos.double() @ ab.T * (2 * torch.pi / side)


def _stationary_projection(latent_dim: int, r: int) -> torch.Tensor:
    """(FIELD_CHANNELS * r * r, latent_dim): u -> a noise field whose distribution does not depend on
    the position. Each pair of latent values is the complex amplitude of one wave with integer wave
    numbers on the r x r torus (a distinct one per pair); every channel is a sum of these waves with
    its own fixed complex weights (sum of squared moduli 1). So the field is Gaussian with variance 1
    everywhere and with (cross-)covariances that depend only on the offset between positions. A
    plain random projection gives each position its own variance and its own covariances, which the
    nets' nonlinearities turn into faint fixed marks."""
    g = torch.Generator().manual_seed(_FIELD_SEED)
    top = max(1, (r - 1) // 2)  # below the Nyquist wave number, whose sine vanishes on the grid
    half_plane = _half_plane(top)
    n_waves = latent_dim // 2
    f = half_plane[torch.randperm(len(half_plane), generator=g)[:n_waves]]        # (waves, 2)
    if len(f) < n_waves:  # a tiny torus has fewer waves than latent pairs: reuse them
        f = f[torch.arange(n_waves) % len(f)]
    theta = _angles(f, r)                                                           # (r*r, waves)
    w = torch.randn(FIELD_CHANNELS, n_waves, 2, generator=g, dtype=torch.float64)
    w = w / w.square().sum(dim=(1, 2), keepdim=True).sqrt()                         # per channel: sum |alpha|^2 = 1
    re, im = w[..., 0][:, None], w[..., 1][:, None]                                 # (channels, 1, waves)
    # Re[alpha (u0 + i u1) e^{i theta}] = u0 (re cos - im sin) + u1 (-re sin - im cos)
    cos, sin = theta.cos()[None], theta.sin()[None]
    proj = torch.stack([re * cos - im * sin, -re * sin - im * cos], -1).reshape(FIELD_CHANNELS * r * r, -1)
    if latent_dim % 2:  # an odd latent's last value is not read
        proj = torch.cat([proj, torch.zeros(len(proj), 1, dtype=torch.float64)], 1)
    return proj.float()


class NoiseField(nn.Module):
    """``(u, class embedding) -> (N, c, size/2, size/2)``: the latent projected to a ``size/4`` noise
    field (each value N(0, 1) for u ~ N(0, I)), the class broadcast, a 1x1 conv, a nearest x2."""

    def __init__(self, latent_dim: int, n_classes: int, c: int, size: int):
        super().__init__()
        self.r = size // 4
        self.register_buffer("proj", _stationary_projection(latent_dim, self.r))
        self.mix = nn.Conv2d(FIELD_CHANNELS + n_classes, c, 1)

    def forward(self, u: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        n, r = u.shape[0], self.r
        z = (u @ self.proj.T).reshape(n, FIELD_CHANNELS, r, r)
        h = self.mix(torch.cat([z, emb[:, :, None, None].expand(n, emb.shape[1], r, r)], dim=1))
        return F.interpolate(h, scale_factor=2.0, mode="nearest")


class Waves(nn.Module):
    """``(u, class embedding) -> (N, WAVE_CHANNELS, size/2, size/2)``: each channel a per-class
    weighted sum of every sinusoid with integer wave numbers (a, b), |a|, |b| < size/4, on the tile;
    wave j's phase is 2*pi * (q_j . u) with |q_j| = 1, so mod 2*pi it is uniform to ~1e-8."""

    def __init__(self, latent_dim: int, n_classes: int, size: int):
        super().__init__()
        self.half = size // 2
        ab = _half_plane(size // 4 - 1)
        self.n = len(ab)
        g = torch.Generator().manual_seed(_FIELD_SEED + 1)
        q = torch.randn(self.n, latent_dim, generator=g)
        self.register_buffer("phase", q / q.norm(dim=1, keepdim=True))
        pos = torch.arange(self.half, dtype=torch.float64) * (2 * torch.pi / self.half)
        # the same angles as _angles(ab, half).T, summed in this order (the basis the weights were trained with)
        theta = (ab[:, 0, None, None] * pos[:, None] + ab[:, 1, None, None] * pos[None, :]).reshape(self.n, -1)
        # sin(theta + phi) = sin(theta) cos(phi) + cos(theta) sin(phi): one matmul with this basis
        self.register_buffer("basis", torch.cat([theta.sin(), theta.cos()]).float(), persistent=False)
        self.amp = nn.Linear(n_classes, WAVE_CHANNELS * self.n, bias=False)

    def forward(self, u: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        n, half = u.shape[0], self.half
        phi = (u @ self.phase.T) * (2 * torch.pi)
        a = self.amp(emb).reshape(n, WAVE_CHANNELS, self.n)
        coef = torch.cat([a * phi.cos()[:, None], a * phi.sin()[:, None]], dim=2)
        return (coef @ self.basis).reshape(n, WAVE_CHANNELS, half, half)


class SpatialTexture(nn.Module):
    """A texture net whose weights do not depend on the position (see ``BG_NETS``)."""

    def __init__(self, latent_dim: int, n_classes: int, ngf: int, size: int, waves: bool):
        super().__init__()
        c, p = ngf * 2, WAVE_CHANNELS if waves else 0
        self.latent_dim = latent_dim
        self.field = NoiseField(latent_dim, n_classes, c, size)
        self.waves = Waves(latent_dim, n_classes, size) if waves else None
        self.body = nn.Sequential(
            Wrap(), nn.Conv2d(c + p, c, 3, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            Wrap(), nn.Conv2d(c, ngf, 3, bias=False), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2),
            Wrap(), nn.Conv2d(ngf, 3, 3), nn.BatchNorm2d(3), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, emb = x[:, :self.latent_dim], x[:, self.latent_dim:]
        h = self.field(u, emb)
        if self.waves is not None:
            h = torch.cat([h, self.waves(u, emb)], dim=1)
        return self.body(h)


class FoldedSpatial(nn.Module):
    """``SpatialTexture`` in inference form: everything up to the first BatchNorm except the waves
    is affine in ``(u, class embedding)``, so it is one Linear straight to the 16x16 map (as in
    ``mnist._fold_texture_net``); the waves enter through their slice of the first conv; the upsample +
    circular conv is a transposed conv on the wrapped map, cropped; BatchNorms fold into convs."""

    def __init__(self, net: SpatialTexture, channels_last: bool):
        super().__init__()
        self.channels_last = channels_last
        _, conv1, bn1, act1, _, _, conv2, bn2, act2, _, conv3, bn3, tanh = net.body
        c, half = conv1.out_channels, net.field.r * 2
        scale, shift = bn_affine(bn1)
        w1 = conv1.weight.double() * scale.view(-1, 1, 1, 1)
        field = copy.deepcopy(net.field).double()
        self.latent_dim = net.latent_dim
        n_in = net.latent_dim + field.mix.in_channels - FIELD_CHANNELS  # latent + class embedding
        x = torch.cat([torch.zeros(1, n_in, dtype=torch.float64), torch.eye(n_in, dtype=torch.float64)])
        out = F.conv2d(_wrap(field(x[:, :net.latent_dim], x[:, net.latent_dim:])), w1[:, :c])
        out = (out.permute(0, 2, 3, 1) if channels_last else out).reshape(len(x), -1)  # the Linear's order
        self.first = nn.Linear(x.shape[1], c * half * half)
        self.first.weight.data = (out[1:] - out[0]).T.float().contiguous()
        self.first.bias.data = (out[0] + (shift.repeat(half * half) if channels_last
                                          else shift.repeat_interleave(half * half))).float()
        self.map_shape = (c, half, half)
        self.waves = copy.deepcopy(net.waves)
        if self.waves is not None:
            self.wave_conv = nn.Conv2d(conv1.in_channels - c, c, 3, bias=False)
            self.wave_conv.weight.data = w1[:, c:].float().contiguous()
        self.act = act1
        self.up = upsample_conv_as_deconv(conv2, bn2)
        self.act2 = act2
        self.last = conv_bn(conv3, bn3, padding=0)  # on the wrapped map
        self.tanh = tanh
        if channels_last:  # as in mnist._fold_texture_net: oneDNN's convolutions run faster on NHWC (eager)
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wrap = _wrap_into if self.channels_last else _wrap
        c, size, _ = self.map_shape
        h = (self.first(x).reshape(x.shape[0], size, size, c).permute(0, 3, 1, 2) if self.channels_last
             else self.first(x).reshape(x.shape[0], c, size, size))
        if self.waves is not None:
            u, emb = x[:, :self.latent_dim], x[:, self.latent_dim:]
            h = h + self.wave_conv(wrap(self.waves(u, emb)))
        # on the wrapped map, output pixel o of the transposed conv is pixel o - 2 of the tile
        h = self.up(wrap(self.act(h)))[..., 2:2 * size + 2, 2:2 * size + 2]
        return self.tanh(self.last(wrap(self.act2(h)))).contiguous()  # callers get NCHW images
