"""pycgn.composite on hostile input: read-only, aliased, reversed, big-endian and non-finite
arrays. Each case either gives the reference's values (in the caller's own out=) or a clear
error naming the argument; never a crash, a silent write into read-only memory, or an out=
left untouched. Regression tests first, then a hypothesis fuzz against pycgn.reference."""
import contextlib

import numpy as np
import pytest
import torch

import pycgn
from _helpers import assert_same, expected, make, offsets
from pycgn.ops import composite

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install pycgn[test])")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@contextlib.contextmanager
def extension(on: bool):
    """With the compiled operator (where built) or forced onto the plain-PyTorch fallback."""
    saved = pycgn.ops._ext.AVAILABLE
    pycgn.ops._ext.AVAILABLE = saved and on
    try:
        yield
    finally:
        pycgn.ops._ext.AVAILABLE = saved


BOTH = pytest.mark.parametrize("ext", [True, False], ids=["operator", "fallback"])


def np_case(seed=0, n=2, h=5, w=6):
    mask, fg, bg = make(n, 1, 3, h, w, 4, 7, h, w, seed=seed)
    fo = offsets(n, torch.int64, -9, 9, seed=seed + 1)
    return [t.numpy() for t in (mask, fg, bg, fo)], expected(mask, fg, bg, fo, None, "uint8", "NHWC")


# ---- read-only out= -------------------------------------------------------------------------

@BOTH
def test_read_only_memmap_out_is_refused(tmp_path, ext):
    (m, f, g, fo), exp = np_case()
    path = tmp_path / "out.u8"
    path.write_bytes(bytes(exp.numel()))
    out = np.memmap(path, np.uint8, "r", shape=tuple(exp.shape))  # used to segfault
    with extension(ext), pytest.raises(ValueError, match="out is a read-only"):
        composite(m, f, g, fo, None, "uint8", "NHWC", out=out)
    assert path.read_bytes() == bytes(exp.numel())


@BOTH
def test_frombuffer_and_unwriteable_out_are_refused(ext):
    (m, f, g, fo), exp = np_case(seed=3)
    frozen = bytes(exp.numel())
    outs = [np.frombuffer(frozen, np.uint8).reshape(tuple(exp.shape))]
    flagged = np.zeros(tuple(exp.shape), np.uint8)
    flagged.setflags(write=False)
    outs.append(flagged)
    for out in outs:
        with extension(ext), pytest.raises(ValueError, match="out is a read-only"):
            composite(m, f, g, fo, None, "uint8", "NHWC", out=out)
        assert not out.any()  # nothing was written through
    assert frozen == bytes(exp.numel())


# ---- out= that torch cannot view: the caller's array still gets the values --------------------

@BOTH
def test_negative_stride_out_is_written(ext):
    (m, f, g, fo), exp = np_case(seed=5)
    base = np.zeros(tuple(exp.shape), np.uint8)
    out = base[:, ::-1, :, ::-1]  # used to come back all zeros
    with extension(ext):
        assert composite(m, f, g, fo, None, "uint8", "NHWC", out=out) is out
    assert_same(torch.from_numpy(out.copy()), exp)
    assert_same(torch.from_numpy(base[:, ::-1, :, ::-1].copy()), exp)


@BOTH
@pytest.mark.parametrize("order", [">", "<"])
def test_byte_order_of_out_and_inputs(ext, order):
    (m, f, g, fo), _ = np_case(seed=7)
    exp = expected(*(torch.from_numpy(a) for a in (m, f, g, fo)), None, "float32", "NCHW")
    swapped = [a.astype(a.dtype.newbyteorder(order)) for a in (m, f, g, fo)]
    out = np.zeros(tuple(exp.shape), np.dtype(np.float32).newbyteorder(order))  # big-endian used to stay 0
    with extension(ext):
        assert composite(*swapped, None, "float32", "NCHW", out=out) is out
    assert_same(torch.from_numpy(out.astype(np.float32)), exp)


# ---- out= sharing memory with an input ------------------------------------------------------

@BOTH
def test_out_aliasing_an_input_is_refused(ext):
    mask, fg, bg = make(2, 3, 3, 6, 7, seed=9)
    for name, out in (("fg", fg), ("bg", bg), ("mask", mask)):
        before = out.clone()
        with extension(ext), pytest.raises(ValueError, match=f"out shares memory with {name}"):
            composite(mask, fg, bg, out=out)
        assert torch.equal(out, before)
    # a partial overlap: out starts inside mask's memory
    buf = torch.rand(2 * 3 * 6 * 7 + 10)
    m = buf[: 2 * 3 * 6 * 7].view(2, 3, 6, 7)
    out = buf[10:].view(2, 3, 6, 7)
    with extension(ext), pytest.raises(ValueError, match="out shares memory with mask"):
        composite(m, fg, bg, out=out)
    # numpy: the same memory through two arrays
    a = mask.numpy().copy()
    with extension(ext), pytest.raises(ValueError, match="out shares memory with mask"):
        composite(a, fg.numpy(), bg.numpy(), out=a)
    # and through an out numpy cannot hand to torch (reversed): refused before any copy
    with extension(ext), pytest.raises(ValueError, match="out shares memory with fg"):
        f = fg.numpy().copy()
        composite(mask.numpy(), f, bg.numpy(), out=f[:, :, ::-1])


@BOTH
def test_out_with_repeated_elements_is_refused(ext):
    mask, fg, bg = make(2, 1, 3, 4, 4, seed=10)
    out = torch.zeros(1, 3, 4, 4).expand(2, 3, 4, 4)
    with extension(ext), pytest.raises(ValueError, match="out has elements that share memory"):
        composite(mask, fg, bg, out=out)


# ---- non-finite values: the operator and the fallback agree with the reference ---------------

@BOTH
@pytest.mark.parametrize("out_dtype", ["float32", "uint8"])
def test_non_finite_values(ext, out_dtype, device):
    mask, fg, bg = make(1, 1, 3, 2, 8, seed=11)
    mask[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.5])
    fg[0, :, 1, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    bg[0, :, 1, 3:6] = torch.tensor([float("inf"), -float("inf"), 3e38])
    exp = expected(mask, fg, bg, None, None, out_dtype)
    with extension(ext):
        got = composite(mask.to(device), fg.to(device), bg.to(device), out_dtype=out_dtype)
    assert_same(got, exp)
    if out_dtype == "float32":  # documented: a NaN mask propagates (torch.clamp), as in the reference
        assert got[0, :, 0, 0].isnan().all()
    else:  # and becomes 0 in uint8
        assert (got[0, :, 0, 0] == 0).all()


# ---- the fuzz ---------------------------------------------------------------------------------

SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, 3e38, -3e38, 0.5, 1.0]


@st.composite
def hostile(draw):
    n, c = draw(st.integers(0, 3)), draw(st.sampled_from([1, 3, 4]))
    mc = draw(st.sampled_from([1, c]))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 13))
    sizes = {"mask": (n, mc, h, w), "fg": (n, c, draw(st.integers(1, 9)), draw(st.integers(1, 13))),
             "bg": (n, c, draw(st.integers(1, 9)), draw(st.integers(1, 13)))}
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    arrays = {}
    for name, shape in sizes.items():
        t = torch.rand(shape, generator=g) * 2.4 - 1.2
        flat = t.view(-1)
        for _ in range(draw(st.integers(0, 3)) if t.numel() else 0):
            flat[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from(SPECIAL))
        arrays[name] = t
    kind = draw(st.sampled_from(["torch", "numpy"]))
    dtype = draw(st.sampled_from(["float32", "float16"] + (["bfloat16"] if kind == "torch" else [])))
    order = draw(st.sampled_from(["=", ">"]))
    fo = torch.tensor(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=2 * n, max_size=2 * n)),
                      dtype=torch.int64).reshape(n, 2)
    out_dtype = draw(st.sampled_from(["float32", "uint8"]))
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    lo = draw(st.floats(0.0, 0.5))
    clamp = (lo, draw(st.floats(lo, 1.0)))
    ins = {}
    for name, t in arrays.items():
        t = t.to(getattr(torch, dtype))
        if kind == "numpy":
            a = t.numpy().astype(np.dtype(dtype).newbyteorder(order))
            if draw(st.booleans()):  # reversed views
                a = np.ascontiguousarray(a[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]
            if draw(st.booleans()):
                a.setflags(write=False)
            ins[name] = a
        else:
            if draw(st.booleans()):  # a transposed, strided view
                t = t.transpose(2, 3).contiguous().transpose(2, 3)
            ins[name] = t
    out = draw(st.sampled_from(["none", "plain", "reversed", "swapped", "read-only", "alias"]))
    return ins, fo.numpy() if kind == "numpy" else fo, out_dtype, layout, clamp, out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=hostile(), ext=st.booleans())
def test_fuzz_against_reference(case, ext):
    ins, fo, out_dtype, layout, clamp, out_kind = case
    torch_in = {k: torch.from_numpy(np.array(v, dtype=v.dtype.newbyteorder("="))) if isinstance(v, np.ndarray) else v
                for k, v in ins.items()}
    exp = expected(torch_in["mask"], torch_in["fg"], torch_in["bg"], torch.as_tensor(fo), None, out_dtype, layout,
                   clamp)
    numpy_in = isinstance(ins["mask"], np.ndarray)
    out = None
    if out_kind != "none" and numpy_in:
        np_dtype = np.dtype(out_dtype)
        if out_kind == "reversed":
            out = np.zeros(tuple(exp.shape), np_dtype)[::-1, :, ::-1]
        elif out_kind == "swapped":
            out = np.zeros(tuple(exp.shape), np_dtype.newbyteorder(">"))
        elif out_kind == "read-only":
            out = np.zeros(tuple(exp.shape), np_dtype)
            out.setflags(write=False)
        else:
            out = np.zeros(tuple(exp.shape), np_dtype)
    elif out_kind != "none":
        shape = list(exp.shape)
        if out_kind == "reversed":  # torch has no negative strides: a transposed view instead
            shape[1], shape[2] = shape[2], shape[1]
        out = torch.zeros(shape, dtype=exp.dtype)
        if out_kind == "reversed":
            out = out.transpose(1, 2)
    alias = out_kind == "alias" and exp.numel() > 0 and out_dtype == "float32" and not numpy_in \
        and ins["mask"].dtype == torch.float32 and ins["mask"].numel() > 0
    if alias:  # out starts inside mask's memory
        buf = torch.zeros(ins["mask"].numel() + exp.numel())
        buf[: ins["mask"].numel()] = ins["mask"].reshape(-1)
        ins["mask"] = buf[: ins["mask"].numel()].view(ins["mask"].shape)
        out = buf[ins["mask"].numel() - 1:][: exp.numel()].view(exp.shape)
    with extension(ext):
        if alias or (out_kind == "read-only" and numpy_in):
            with pytest.raises(ValueError, match="out shares memory|out is a read-only"):
                composite(ins["mask"], ins["fg"], ins["bg"], fo, None, out_dtype, layout, clamp, out=out)
            return
        got = composite(ins["mask"], ins["fg"], ins["bg"], fo, None, out_dtype, layout, clamp, out=out)
    if out is not None:
        assert got is out
    got = torch.from_numpy(np.array(got, dtype=got.dtype.newbyteorder("="))) if numpy_in else got
    assert_same(got, exp)
