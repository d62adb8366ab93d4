"""U^2-Net (Qin et al., 2020), the salient-object masker of the ImageNet CGN, with the state-dict
layout of the published ``u2net.pth``.

Layout facts (state-dict keys): ``stage1``..``stage6``, ``stage5d``..``stage1d`` (residual
U-blocks "RSU-L" and the dilated "RSU-4F"), ``side1``..``side6`` and ``outconv``; inside a block
``rebnconvin``, ``rebnconv1``.., ``rebnconv{L-1}d``..``rebnconv1d``, each ``conv_s1`` + ``bn_s1``.
Decoder upsampling is bilinear with ``align_corners=True`` (as in the CGN's copy); pooling is
2x2 with ``ceil_mode``, so any input size works. The output is the fused side map after a
sigmoid, (N, 1, H, W) in [0, 1].
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def _up(src: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(src, size=like.shape[2:], mode="bilinear", align_corners=True)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class REBNCONV(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block of depth L (RSU-7 .. RSU-4): L-2 poolings, dilation 2 at the bottom.

    With ``dilated=True`` it is RSU-4F: no pooling, dilations 1, 2, 4, 8 instead.
    """

    def __init__(self, depth: int, cin: int, mid: int, cout: int, dilated: bool = False):
        super().__init__()
        self.depth = depth
        self.dilated = dilated
        dil = [2 ** i for i in range(depth)] if dilated else [1] * (depth - 1) + [2]
        self.rebnconvin = REBNCONV(cin, cout, 1)
        self.rebnconv1 = REBNCONV(cout, mid, dil[0])
        for i in range(2, depth + 1):
            setattr(self, f"rebnconv{i}", REBNCONV(mid, mid, dil[i - 1]))
        for i in range(depth - 1, 0, -1):
            setattr(self, f"rebnconv{i}d", REBNCONV(2 * mid, cout if i == 1 else mid, dil[i - 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        enc = [self.rebnconv1(hxin)]
        for i in range(2, self.depth + 1):
            h = enc[-1]
            if not self.dilated and i < self.depth:  # the bottom level keeps its input's size
                h = _pool(h)
            enc.append(getattr(self, f"rebnconv{i}")(h))
        d = enc[-1]
        for i in range(self.depth - 1, 0, -1):
            d = getattr(self, f"rebnconv{i}d")(torch.cat([d, enc[i - 1]], dim=1))
            if not self.dilated and i > 1:
                d = _up(d, enc[i - 2])
        return d + hxin


# (name, depth, in, mid, out, dilated) of the published U2NET(3, 1); channels divided by ``div``
_STAGES = (("stage1", 7, 3, 32, 64, False), ("stage2", 6, 64, 32, 128, False),
           ("stage3", 5, 128, 64, 256, False), ("stage4", 4, 256, 128, 512, False),
           ("stage5", 4, 512, 256, 512, True), ("stage6", 4, 512, 256, 512, True),
           ("stage5d", 4, 1024, 256, 512, True), ("stage4d", 4, 1024, 128, 256, False),
           ("stage3d", 5, 512, 64, 128, False), ("stage2d", 6, 256, 32, 64, False),
           ("stage1d", 7, 128, 16, 64, False))
_SIDES = (64, 64, 128, 256, 512, 512)


class U2NET(nn.Module):
    """``image (N, 3, H, W) -> saliency (N, 1, H, W)``; ``div`` in {1, 2, 4, 8, 16} narrows it for tests."""

    def __init__(self, div: int = 1):
        super().__init__()
        if div not in (1, 2, 4, 8, 16):
            raise ValueError(f"div must be one of 1, 2, 4, 8, 16, got {div}")
        self.div = div
        for name, depth, cin, mid, cout, dilated in _STAGES:
            cin = cin if name == "stage1" else cin // div
            setattr(self, name, RSU(depth, cin, mid // div, cout // div, dilated))
        for i, c in enumerate(_SIDES, 1):
            setattr(self, f"side{i}", nn.Conv2d(c // div, 1, 3, padding=1))
        self.outconv = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hx1 = self.stage1(x)
        hx2 = self.stage2(_pool(hx1))
        hx3 = self.stage3(_pool(hx2))
        hx4 = self.stage4(_pool(hx3))
        hx5 = self.stage5(_pool(hx4))
        hx6 = self.stage6(_pool(hx5))
        hx5d = self.stage5d(torch.cat([_up(hx6, hx5), hx5], dim=1))
        hx4d = self.stage4d(torch.cat([_up(hx5d, hx4), hx4], dim=1))
        hx3d = self.stage3d(torch.cat([_up(hx4d, hx3), hx3], dim=1))
        hx2d = self.stage2d(torch.cat([_up(hx3d, hx2), hx2], dim=1))
        hx1d = self.stage1d(torch.cat([_up(hx2d, hx1), hx1], dim=1))
        d1 = self.side1(hx1d)
        sides = [d1] + [_up(getattr(self, f"side{i}")(h), d1)
                        for i, h in enumerate((hx2d, hx3d, hx4d, hx5d, hx6), 2)]
        return torch.sigmoid(self.outconv(torch.cat(sides, dim=1)))
