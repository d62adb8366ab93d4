"""Plain-PyTorch reference of the CGN composition: the ground truth for every fast path.

Written for clarity, not speed. Per image b, channel c, pixel (y, x)::

    m = clamp(mask[b, 0 or c, y, x], lo, hi)     (torch.clamp: a NaN mask stays NaN)
    f = fg[b, c, (y + fg_offset[b, 0]) mod Hf, (x + fg_offset[b, 1]) mod Wf]
    g = bg[b, c, (y + bg_offset[b, 0]) mod Hb, (x + bg_offset[b, 1]) mod Wb]
    v = m * f + (1 - m) * g
    out = v (float32) or round(clamp((v + 1) * 127.5, 0, 255)) (uint8, NaN -> 0), NCHW or NHWC

The circular crop equals the published shuffler (tile the texture 2x2, crop an HxW window
at the offset) for offsets in {0, ..., H}.
"""
from __future__ import annotations

import torch

CLAMP = (1e-4, 0.9999)


def crop(tex: torch.Tensor, offset: torch.Tensor | None, height: int, width: int) -> torch.Tensor:
    """Circular crop: out[b, c, y, x] = tex[b, c, (y + dy_b) mod Ht, (x + dx_b) mod Wt]."""
    n, _, ht, wt = tex.shape
    if offset is None:
        offset = torch.zeros(n, 2, dtype=torch.int64, device=tex.device)
    offset = offset.to(device=tex.device, dtype=torch.int64)
    ys = (torch.arange(height, device=tex.device)[None, :] + offset[:, :1]) % ht  # (N, H)
    xs = (torch.arange(width, device=tex.device)[None, :] + offset[:, 1:]) % wt   # (N, W)
    b = torch.arange(n, device=tex.device)[:, None, None]
    return tex[b, :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)  # (N, H, W, C) -> NCHW


def to_uint8(v: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float to uint8: round-half-even of clamp((v + 1) * 127.5, 0, 255), NaN -> 0.

    NaN is mapped explicitly: casting it to uint8 is undefined, and the compiled kernel gives 0."""
    return torch.round(((v + 1.0) * 127.5).clamp(0.0, 255.0).nan_to_num(0.0)).to(torch.uint8)


def composite(mask: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor,
              fg_offset: torch.Tensor | None = None, bg_offset: torch.Tensor | None = None,
              out_dtype: str = "float32", layout: str = "NCHW",
              clamp: tuple[float, float] = CLAMP) -> torch.Tensor:
    """mask (N, 1 or C, H, W), fg (N, C, Hf, Wf), bg (N, C, Hb, Wb) -> images (N, C, H, W)/(N, H, W, C)."""
    n, _, h, w = mask.shape
    c = fg.shape[1]
    m = mask.float().clamp(clamp[0], clamp[1]).expand(n, c, h, w)
    f = crop(fg.float(), fg_offset, h, w)
    g = crop(bg.float(), bg_offset, h, w)
    v = m * f + (1.0 - m) * g
    if out_dtype == "uint8":
        v = to_uint8(v)
    elif out_dtype != "float32":
        raise ValueError(f"out_dtype must be 'float32' or 'uint8', got {out_dtype!r}")
    if layout == "NHWC":
        v = v.permute(0, 2, 3, 1).contiguous()
    elif layout != "NCHW":
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return v


@torch.no_grad()
def generate(model, draw, out_dtype: str = "uint8", layout: str = "NHWC") -> dict[str, torch.Tensor]:
    """The whole CGN for one ``pycgn.sampler.Draw``: parts and composited images."""
    mask, fg, bg = model(draw.u_shape, draw.shape, draw.u_texture, draw.texture, draw.u_bg, draw.bg)
    h, w = mask.shape[-2:]
    images = composite(mask, fg, bg, draw.fg_offset, draw.bg_offset, out_dtype=out_dtype, layout=layout)
    return {
        "images": images,
        "mask": mask.clamp(*CLAMP),
        "foreground": crop(fg, draw.fg_offset, h, w),
        "background": crop(bg, draw.bg_offset, h, w),
    }
