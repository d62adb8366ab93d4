"""Folding helpers for the inference forms of the MNIST nets (``mnist``, ``spatial``): eval-mode
BatchNorm as a per-channel affine map, a conv followed by BatchNorm as one conv, and a nearest x2
upsample + 3x3 conv as one transposed conv."""
from __future__ import annotations

import torch
from torch import nn


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift`` per channel (float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, padding: int) -> nn.Conv2d:
    """``bn(conv(x))`` as one Conv2d with ``padding`` (the conv has a bias)."""
    scale, shift = bn_affine(bn)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=padding)
    out.weight.data = (conv.weight.double() * scale.view(-1, 1, 1, 1)).float()
    out.bias.data = (conv.bias.double() * scale + shift).float()
    return out


def upsample_conv_as_deconv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.ConvTranspose2d:
    """``bn(conv(upsample_nearest_x2(x)))`` as one ConvTranspose2d(kernel 4, stride 2, padding 1).

    Along each axis an even output 2i sees input i-1 through tap 0 and input i through taps 1+2;
    an odd output 2i+1 sees input i through taps 0+1 and input i+1 through tap 2. In the
    transposed conv's kernel (output 2i + k - 1 takes input i) that is k = (w2, w1+w2, w0+w1, w0).
    """
    scale, shift = bn_affine(bn)
    w = conv.weight.double() * scale.view(-1, 1, 1, 1)
    for dim in (2, 3):
        w0, w1, w2 = w.unbind(dim)
        w = torch.stack([w2, w1 + w2, w0 + w1, w0], dim)
    deconv = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, 4, stride=2, padding=1)
    deconv.weight.data = w.transpose(0, 1).float().contiguous()  # (in, out, kh, kw)
    deconv.bias.data = (shift if conv.bias is None else conv.bias.double() * scale + shift).float()
    return deconv
