import pytest
import torch

from pycgn import reference


def published_shuffle(x, dy, dx):
    """The published shuffler for one image: tile 2x2, then crop a HxW window at (dy, dx)."""
    h, w = x.shape[-2:]
    tiled = torch.cat([torch.cat([x, x], -1), torch.cat([x, x], -1)], -2)
    return tiled[..., dy:dy + h, dx:dx + w]


def test_crop_equals_published_tiling_for_every_offset():
    g = torch.Generator().manual_seed(0)
    tex = torch.randn(33 * 33, 3, 32, 32, generator=g)
    offs = torch.tensor([(dy, dx) for dy in range(33) for dx in range(33)])
    out = reference.crop(tex, offs, 32, 32)
    for i, (dy, dx) in enumerate(offs.tolist()):
        assert torch.equal(out[i], published_shuffle(tex[i], dy, dx)), (dy, dx)


def test_crop_reduces_any_offset_modulo_the_size():
    tex = torch.randn(3, 2, 5, 7)
    offs = torch.tensor([[-1, -8], [5 * 1000 + 2, 7 * 3 + 1], [2**40, -(2**40)]])
    wrapped = torch.stack([offs[:, 0] % 5, offs[:, 1] % 7], 1)
    assert torch.equal(reference.crop(tex, offs, 5, 7), reference.crop(tex, wrapped, 5, 7))
    assert torch.equal(reference.crop(tex, None, 5, 7), tex)


def test_composite_formula_and_outputs():
    g = torch.Generator().manual_seed(1)
    n, h, w = 4, 9, 11
    mask = torch.rand(n, 1, h, w, generator=g) * 1.2 - 0.1  # includes values outside [lo, hi]
    fg, bg = torch.rand(n, 3, 13, 5, generator=g) * 2 - 1, torch.rand(n, 3, h, w, generator=g) * 2 - 1
    fo = torch.randint(-50, 50, (n, 2), generator=g)
    out = reference.composite(mask, fg, bg, fo, None)
    assert out.shape == (n, 3, h, w) and out.dtype == torch.float32
    for b in range(n):
        for y, x in [(0, 0), (h - 1, w - 1), (4, 7)]:
            m = min(max(float(mask[b, 0, y, x]), 1e-4), 0.9999)
            f = fg[b, :, (y + int(fo[b, 0])) % 13, (x + int(fo[b, 1])) % 5]
            v = m * f + (1 - m) * bg[b, :, y, x]
            torch.testing.assert_close(out[b, :, y, x], v, atol=1e-6, rtol=0)
    u8 = reference.composite(mask, fg, bg, fo, None, out_dtype="uint8", layout="NHWC")
    assert u8.shape == (n, h, w, 3) and u8.dtype == torch.uint8
    expected = torch.round(((out + 1) * 127.5).clamp(0, 255)).to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(u8, expected)


def test_c_channel_mask_and_custom_clamp():
    mask = torch.rand(2, 3, 4, 4)
    fg, bg = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    out = reference.composite(mask, fg, bg, clamp=(0.25, 0.5))
    m = mask.clamp(0.25, 0.5)
    torch.testing.assert_close(out, m * fg + (1 - m) * bg)


def test_to_uint8_mapping():
    v = torch.tensor([-2.0, -1.0, -0.99, 0.0, 1.0, 3.0])
    assert reference.to_uint8(v).tolist() == [0, 0, 1, 128, 255, 255]


@pytest.mark.parametrize("kw, words", [(dict(out_dtype="int8"), "out_dtype"), (dict(layout="HWC"), "layout")])
def test_bad_options(kw, words):
    t = torch.rand(1, 1, 2, 2)
    with pytest.raises(ValueError, match=words):
        reference.composite(t, t.expand(1, 3, 2, 2), t.expand(1, 3, 2, 2), **kw)
