"""Property tests of pycgn.ops.composite: random shapes, strides, offsets and dtypes vs the reference."""
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install pycgn[test])")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from _helpers import assert_same, expected, same_view  # noqa: E402
from pycgn.ops import composite  # noqa: E402

# `device` is a constant per test run, so sharing it across examples is safe.
ON_DEVICE = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def cases(draw):
    n = draw(st.integers(0, 4))
    c = draw(st.sampled_from([1, 2, 3, 4]))
    mc = draw(st.sampled_from([1, c]))
    h, w = draw(st.integers(1, 19)), draw(st.integers(1, 40))
    hf, wf, hb, wb = (draw(st.integers(1, 24)) for _ in range(4))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)

    def tensor(shape, lo, hi):
        # a random view: a bigger buffer sliced with steps, maybe permuted in memory
        steps = [draw(st.integers(1, 2)) for _ in shape]
        base = torch.rand([s * k for s, k in zip(shape, steps)], generator=g) * (hi - lo) + lo
        if draw(st.booleans()):
            base = base.contiguous(memory_format=torch.channels_last)
        return base[tuple(slice(None, None, k) for k in steps)]

    mask = tensor((n, mc, h, w), -0.1, 1.1)
    fg, bg = tensor((n, c, hf, wf), -1.1, 1.1), tensor((n, c, hb, wb), -1.1, 1.1)
    offs = []
    for _ in range(2):
        kind = draw(st.sampled_from([None, torch.int32, torch.int64]))
        if kind is None:
            offs.append(None)
            continue
        info = torch.iinfo(kind)
        vals = draw(st.lists(st.integers(info.min, info.max), min_size=2 * n, max_size=2 * n))
        offs.append(torch.tensor(vals, dtype=kind).reshape(n, 2))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    out_dtype = draw(st.sampled_from(["float32", "uint8"]))
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    lo = draw(st.floats(0.0, 0.5))
    clamp = (lo, draw(st.floats(lo, 1.0)))
    return mask.to(dtype), fg.to(dtype), bg.to(dtype), offs[0], offs[1], out_dtype, layout, clamp


@settings(max_examples=150, **ON_DEVICE)
@given(case=cases())
def test_random_views_match_reference(case, device):
    mask, fg, bg, fo, bo, out_dtype, layout, clamp = case
    moved = [same_view(t, device) for t in (mask, fg, bg, fo, bo)]
    got = composite(*moved, out_dtype=out_dtype, layout=layout, clamp=clamp)
    assert_same(got, expected(mask, fg, bg, fo, bo, out_dtype, layout, clamp))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9), INT64, INT64)
def test_offset_is_periodic(hf, wf, h, dy, dx):
    """Shifting by a whole texture period changes nothing; any int64 value is safe."""
    g = torch.Generator().manual_seed(h * 131 + hf)
    mask = torch.rand(1, 1, h, h + 2, generator=g)
    fg, bg = torch.rand(1, 3, hf, wf, generator=g) * 2 - 1, torch.rand(1, 3, 3, 4, generator=g) * 2 - 1
    off = torch.tensor([[dy % hf, dx % wf]])
    base = composite(mask, fg, bg, off, None)
    for k in (-2, 1):
        shifted = torch.tensor([[off[0, 0] + k * hf, off[0, 1] + k * wf]])
        torch.testing.assert_close(composite(mask, fg, bg, shifted, None), base, rtol=0, atol=0)
    torch.testing.assert_close(composite(mask, fg, bg, torch.tensor([[dy, dx]]), None), base, rtol=0, atol=0)
