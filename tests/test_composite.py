"""pycgn.ops.composite (the fused kernel) against pycgn.reference.composite on random inputs, bit for
bit, on every device (the `device` fixture of conftest.py)."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import pycgn
from pycgn import reference
from pycgn.ops import composite

from _helpers import assert_same, expected, make, offsets

needs_ext = pytest.mark.skipif(not pycgn._ext.AVAILABLE, reason=f"extension pycgn._C not built: {pycgn._ext.ERROR}")
DTYPES = {"float32": torch.float32, "uint8": torch.uint8}


SHAPES = [  # n, mask channels, c, h, w, hf, wf, hb, wb
    (1, 1, 3, 1, 1, 1, 1, 1, 1),
    (2, 1, 3, 7, 5, None, None, None, None),
    (3, 3, 3, 13, 17, 5, 23, 40, 3),      # C-channel mask, textures smaller and larger
    (2, 1, 1, 9, 11, 4, 3, 9, 11),         # one channel, textures narrower than the output
    (2, 4, 4, 6, 33, 7, 34, 1, 1),         # four channels, 1x1 background
    (4, 1, 3, 32, 32, None, None, None, None),
    (0, 1, 3, 32, 32, None, None, None, None),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("out_dtype,layout", list(itertools.product(DTYPES, ("NCHW", "NHWC"))))
@pytest.mark.parametrize("off_dtype", [None, torch.int32, torch.int64])
def test_matches_reference(shape, out_dtype, layout, off_dtype, device):
    n, mc, c, h, w, hf, wf, hb, wb = shape
    mask, fg, bg = make(n, mc, c, h, w, hf, wf, hb, wb, seed=sum(shape[:5]), device=device)
    fo = bo = None
    if off_dtype is not None:
        fo, bo = offsets(n, off_dtype, -100, 100, seed=2, device=device), offsets(n, off_dtype, 0, 65, seed=3, device=device)
    got = composite(mask, fg, bg, fo, bo, out_dtype=out_dtype, layout=layout)
    assert_same(got, expected(mask, fg, bg, fo, bo, out_dtype, layout))


@pytest.mark.parametrize("out_dtype,layout", list(itertools.product(DTYPES, ("NCHW", "NHWC"))))
@pytest.mark.parametrize("mc", [1, 3])
@pytest.mark.parametrize("hf,hb", [(29, 29), (5, 40), (1, 29)])
@pytest.mark.parametrize("threads", [1, 3])
def test_rows_joined_up_to_texture_wraps(out_dtype, layout, mc, hf, hb, threads, device):
    """Textures as wide as the output, shifted only vertically (dx a multiple of the width) in
    most images: the CPU kernel blends the rows of such an image as one run, cut where the image
    ends, where either texture wraps to its top row, and where a thread's rows end (three
    threads start mid-image). The other images, shifted sideways too, take the per-row path."""
    n, h, w = 8, 29, 37  # 232 rows: three threads take 78 each
    mask, fg, bg = make(n, mc, 3, h, w, hf, w, hb, w, seed=hf + hb + mc, device=device)
    g = torch.Generator().manual_seed(hf * hb)
    fo = torch.stack([torch.randint(-99, 99, (n,), generator=g), w * torch.randint(-3, 3, (n,), generator=g)], 1)
    bo = torch.stack([torch.randint(-99, 99, (n,), generator=g), w * torch.randint(-3, 3, (n,), generator=g)], 1)
    fo[1, 1] += 5  # sideways
    bo[2, 1] -= 1
    fo, bo = fo.to(device), bo.to(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for fo_, bo_ in ((None, None), (fo, None), (None, bo), (fo, bo)):
            got = composite(mask, fg, bg, fo_, bo_, out_dtype=out_dtype, layout=layout)
            assert_same(got, expected(mask, fg, bg, fo_, bo_, out_dtype, layout))
    finally:
        torch.set_num_threads(before)


@needs_ext
@pytest.mark.parametrize("variant", ["0", "1", "yes please"])
def test_cpu_variant_in_a_child(variant):
    """The CPU kernel picks one of two variants by vendor (csrc/cpu/composite_cpu.cpp): joined
    rows elsewhere, per-row with prefetch on Intel. A child process runs the tests above under
    each (PYCGN_CPU_PREFETCH), so both are checked on whatever CPU runs the suite; any other
    value leaves the choice to the vendor, and the results stay the reference's."""
    env = dict(os.environ, PYCGN_CPU_PREFETCH=variant, CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
           "-k", "joined or matches_reference"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-2000:]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("out_dtype,layout", [("float32", "NCHW"), ("uint8", "NHWC"), ("uint8", "NCHW"),
                                              ("float32", "NHWC")])
def test_half_inputs_computed_in_float32(dtype, out_dtype, layout, device):
    mask, fg, bg = make(3, 1, 3, 11, 14, 13, 9, 11, 14, dtype=dtype, seed=5, device=device)
    fo, bo = offsets(3, torch.int64, 0, 40, device=device), offsets(3, torch.int32, -40, 0, device=device)
    got = composite(mask, fg, bg, fo, bo, out_dtype=out_dtype, layout=layout)
    assert_same(got, expected(mask, fg, bg, fo, bo, out_dtype, layout))


def test_256_and_batch_1000(device):
    mask, fg, bg = make(1, 1, 3, 256, 256, seed=7, device=device)
    fo, bo = offsets(1, torch.int64, 0, 257, device=device), offsets(1, torch.int64, 0, 257, seed=8, device=device)
    for out_dtype, layout in (("uint8", "NHWC"), ("float32", "NCHW")):
        assert_same(composite(mask, fg, bg, fo, bo, out_dtype, layout),
                       expected(mask, fg, bg, fo, bo, out_dtype, layout))
    mask, fg, bg = make(1000, 1, 3, 32, 32, seed=9, device=device)
    fo, bo = offsets(1000, torch.int64, 0, 33, device=device), offsets(1000, torch.int64, 0, 33, seed=10, device=device)
    assert_same(composite(mask, fg, bg, fo, bo, "uint8", "NHWC"), expected(mask, fg, bg, fo, bo, "uint8", "NHWC"))


def test_generator_path(device):
    """The call pycgn.api makes: (N,1,32,32) mask, (N,3,32,32) textures, int64 offsets, uint8 NHWC."""
    mask, fg, bg = make(17, 1, 3, 32, 32, seed=11, device=device)
    fo, bo = offsets(17, torch.int64, 0, 33, device=device), offsets(17, torch.int64, 0, 33, seed=12, device=device)
    got = composite(mask, fg, bg, fo, bo, out_dtype="uint8", layout="NHWC")
    assert got.shape == (17, 32, 32, 3) and got.is_contiguous()
    assert_same(got, expected(mask, fg, bg, fo, bo, "uint8", "NHWC"))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_huge_and_negative_offsets(dtype, device):
    info = torch.iinfo(dtype)
    n = 8
    mask, fg, bg = make(n, 1, 3, 9, 10, 7, 13, 5, 3, seed=13, device=device)
    fo = torch.tensor([[info.min, info.max], [info.max, info.min], [-1, -1], [info.min + 1, -7],
                       [0, 0], [12345, -99], [info.max - 1, 1], [-info.max, info.min + 3]], dtype=dtype, device=device)
    bo = fo.flip(1).contiguous()
    for out_dtype, layout in itertools.product(DTYPES, ("NCHW", "NHWC")):
        assert_same(composite(mask, fg, bg, fo, bo, out_dtype, layout),
                       expected(mask, fg, bg, fo, bo, out_dtype, layout))


def test_offset_semantics_equal_published_shuffler(device):
    """Tiling 2x2 and cropping at (oy, ox) in {0..H} is the circular shift the kernel does."""
    mask, fg, bg = make(4, 1, 3, 8, 8, seed=14, device=device)
    fo = torch.tensor([[0, 0], [8, 8], [3, 5], [8, 1]], device=device)
    got = composite(torch.ones_like(mask), fg, bg, fo, None, clamp=(1.0, 1.0))
    tiled = fg.repeat(1, 1, 2, 2)
    crop = torch.stack([tiled[i, :, oy:oy + 8, ox:ox + 8] for i, (oy, ox) in enumerate(fo.tolist())])
    torch.testing.assert_close(got, crop, rtol=0, atol=0)


@pytest.mark.parametrize("out_dtype,layout", list(itertools.product(DTYPES, ("NCHW", "NHWC"))))
def test_non_contiguous_inputs(out_dtype, layout, device):
    mask, fg, bg = make(6, 3, 3, 20, 26, 12, 18, 9, 30, seed=15, device=device)
    cases = [
        (mask[::2, :, :, ::2], fg[::2], bg[::2]),                                      # strided batch and x
        (mask.contiguous(memory_format=torch.channels_last), fg.contiguous(memory_format=torch.channels_last),
         bg.transpose(2, 3).contiguous().transpose(2, 3)),                             # x stride != 1
        (mask[:, :1], fg[:1].expand(6, -1, -1, -1), bg[:, [2, 0, 1]]),                 # batch stride 0
        (mask[:, :, 3:17, 5:21], fg[:, :, 1:, 2:], bg[:, :, :, ::3]),
    ]
    for m, f, b in cases:
        n = m.shape[0]
        fo = offsets(n, torch.int64, -50, 50, seed=16, device=device)[:, [1, 0]]  # a non-contiguous offsets view
        bo = offsets(2 * n, torch.int32, -50, 50, seed=17, device=device)[::2]
        assert_same(composite(m, f, b, fo, bo, out_dtype, layout), expected(m, f, b, fo, bo, out_dtype, layout))


@pytest.mark.parametrize("out_dtype,layout", list(itertools.product(DTYPES, ("NCHW", "NHWC"))))
def test_out_variant(out_dtype, layout, device):
    mask, fg, bg = make(3, 1, 3, 10, 12, 10, 12, 5, 5, seed=18, device=device)
    fo = offsets(3, torch.int64, 0, 20, device=device)
    exp = expected(mask, fg, bg, fo, None, out_dtype, layout)
    out = torch.full(exp.shape, 7, dtype=exp.dtype, device=device)
    res = composite(mask, fg, bg, fo, None, out_dtype, layout, out=out)
    assert res is out
    assert_same(out, exp)
    # a strided view as out
    big = torch.full((exp.shape[0], exp.shape[1], exp.shape[2], 2 * exp.shape[3]), 7, dtype=exp.dtype, device=device)
    view = big[..., ::2]
    composite(mask, fg, bg, fo, None, out_dtype, layout, out=view)
    assert_same(view, exp)
    assert (big[..., 1::2] == 7).all()
    with pytest.raises(ValueError, match=r"out must have shape [\[(]3, "):
        composite(mask, fg, bg, fo, None, out_dtype, layout, out=torch.empty(1, dtype=exp.dtype, device=device))
    with pytest.raises(TypeError, match="out"):
        wrong = torch.float32 if exp.dtype == torch.uint8 else torch.uint8
        composite(mask, fg, bg, fo, None, out_dtype, layout, out=torch.empty(exp.shape, dtype=wrong))


def test_numpy_in_numpy_out():
    mask, fg, bg = make(4, 1, 3, 9, 7, 5, 8, 9, 7, seed=19)
    fo, bo = offsets(4, torch.int64, -9, 9), offsets(4, torch.int32, -9, 9, seed=20)
    exp = expected(mask, fg, bg, fo, bo, "uint8", "NHWC")
    got = composite(mask.numpy(), fg.numpy(), bg.numpy(), fo.numpy(), bo.numpy(), "uint8", "NHWC")
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8
    assert_same(torch.from_numpy(got), exp)
    # read-only, negative-stride, float16 and out= arrays
    m = mask.numpy().copy()
    m.flags.writeable = False
    f = np.ascontiguousarray(fg.numpy()[:, :, ::-1])[:, :, ::-1]
    out = np.zeros(exp.shape, np.uint8)
    res = composite(m, f, bg.numpy(), fo.numpy(), bo.numpy(), "uint8", "NHWC", out=out)
    assert res is out
    assert_same(torch.from_numpy(out), exp)
    got16 = composite(mask.numpy().astype(np.float16), fg.numpy().astype(np.float16),
                      bg.numpy().astype(np.float16))
    assert got16.dtype == np.float32
    assert_same(torch.from_numpy(got16), expected(mask.half(), fg.half(), bg.half(), None, None))


def test_errors_name_the_argument(device):
    mask, fg, bg = make(2, 1, 3, 8, 8, seed=21, device=device)
    bad = [
        ((mask, fg[:1], bg), ValueError, "fg has batch"),
        ((mask, fg, bg[:1]), ValueError, "bg has batch"),
        ((mask, fg, bg[:, :2]), ValueError, "bg has 2 channels"),
        ((mask.expand(2, 2, 8, 8), fg, bg), ValueError, "mask must have 1 or 3"),
        ((mask[0], fg, bg), ValueError, "mask must have 4 dimensions"),
        ((mask, fg[:, :, :0], bg), ValueError, "fg must have height and width"),
        ((mask, fg.double(), bg), TypeError, "fg is torch.float64"),
        ((mask, fg, bg.half()), TypeError, "bg is torch.float16"),
        ((mask.double(), fg.double(), bg.double()), TypeError, "mask must be float32"),
        ((mask.int(), fg, bg), TypeError, "mask must be float32"),
        ((mask, fg, bg, torch.zeros(2, 2)), TypeError, "fg_offset must be int32 or int64"),
        ((mask, fg, bg, None, torch.zeros(3, 2, dtype=torch.int64)), ValueError, r"bg_offset must have shape \(2, 2\)"),
        ((mask, fg, bg, None, None, "int8"), ValueError, "out_dtype"),
        ((mask, fg, bg, None, None, "uint8", "HWC"), ValueError, "layout"),
        (([1.0], fg, bg), TypeError, "mask must be a torch.Tensor or numpy.ndarray"),
    ]
    for args, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            composite(*args)
    with pytest.raises(ValueError, match="clamp"):
        composite(mask, fg, bg, clamp=(0.9, 0.1))
    with pytest.raises(ValueError, match=f"fg is on meta but mask is on {mask.device}"):
        composite(mask, fg.to("meta"), bg)


@needs_ext
def test_operator_errors_name_the_argument(device):
    mask, fg, bg = make(2, 1, 3, 8, 8, seed=22, device=device)
    op = torch.ops.pycgn.composite
    with pytest.raises(TypeError, match="fg must be float32"):
        op(mask, fg.half(), bg, None, None, torch.float32, "NCHW", 1e-4, 0.9999)
    with pytest.raises(ValueError, match="bg has batch"):
        op(mask, fg, bg[:1], None, None, torch.float32, "NCHW", 1e-4, 0.9999)
    with pytest.raises(TypeError, match="out_dtype"):
        op(mask, fg, bg, None, None, torch.int32, "NCHW", 1e-4, 0.9999)
    with pytest.raises(ValueError, match="layout"):
        op(mask, fg, bg, None, None, torch.uint8, "CHW", 1e-4, 0.9999)
    with pytest.raises(ValueError, match="fg_offset must have shape"):
        op(mask, fg, bg, torch.zeros(2, 3, dtype=torch.int64), None, torch.uint8, "NCHW", 1e-4, 0.9999)


def test_reference_fallback_without_extension(monkeypatch, device):
    mask, fg, bg = make(3, 1, 3, 7, 9, 5, 4, 7, 9, seed=23, device=device)
    fo = torch.tensor([[2**62, -(2**62)], [-3, 4], [5, 6]], device=device)
    monkeypatch.setattr(pycgn.ops._ext, "AVAILABLE", False)
    for out_dtype, layout in itertools.product(DTYPES, ("NCHW", "NHWC")):
        assert_same(composite(mask, fg, bg, fo, None, out_dtype, layout),
                       expected(mask, fg, bg, fo, None, out_dtype, layout))
    out = torch.empty(3, 7, 9, 3, dtype=torch.uint8, device=device)
    assert composite(mask, fg, bg, fo, None, "uint8", "NHWC", out=out) is out
    with pytest.raises(ValueError, match="bg has batch"):
        composite(mask, fg, bg[:2])


def _op_args(n=3, out_dtype=torch.uint8, layout="NHWC", seed=24, device="cpu"):
    mask, fg, bg = make(n, 1, 3, 9, 10, 6, 12, 9, 10, seed=seed, device=device)
    return (mask, fg, bg, offsets(n, torch.int64, -20, 20, device=device), offsets(n, torch.int32, 0, 20, device=device),
            out_dtype, layout, 1e-4, 0.9999)


@needs_ext
@pytest.mark.parametrize("out_dtype,layout", [(torch.uint8, "NHWC"), (torch.float32, "NCHW"),
                                              (torch.float32, "NHWC")])
def test_opcheck(out_dtype, layout, device):
    args = _op_args(out_dtype=out_dtype, layout=layout, device=device)
    torch.library.opcheck(torch.ops.pycgn.composite.default, args)
    torch.library.opcheck(torch.ops.pycgn.composite.default,
                          _op_args(n=0, out_dtype=out_dtype, layout=layout, device=device))
    torch.library.opcheck(torch.ops.pycgn.composite.default, (*args[:3], None, None, *args[5:]))
    if out_dtype == torch.float32:  # with gradients: the autograd registration is checked too
        grad_args = (*[t.clone().requires_grad_() for t in args[:3]], *args[3:])
        torch.library.opcheck(torch.ops.pycgn.composite.default, grad_args)
    out = torch.ops.pycgn.composite(*args)
    # AOT dispatch cannot functionalise a custom op returning an alias (Tensor(a!)), so the
    # out= overload is checked eagerly and under fake tensors; compiled code uses the functional one.
    torch.library.opcheck(torch.ops.pycgn.composite.out, args, {"out": torch.empty_like(out)},
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@needs_ext
def test_gradients_equal_the_reference(device):
    mask, fg, bg = make(3, 1, 3, 7, 9, 5, 11, 7, 9, seed=27, device=device)
    fo, bo = offsets(3, torch.int64, -30, 30, device=device), offsets(3, torch.int32, 0, 30, device=device)
    g = torch.randn(3, 3, 7, 9, generator=torch.Generator().manual_seed(28)).to(device)
    ins = [t.clone().requires_grad_() for t in (mask, fg, bg)]
    composite(*ins, fo, bo).backward(g)
    refs = [t.clone().requires_grad_() for t in (mask, fg, bg)]
    reference.composite(*refs, fo, bo).backward(g)
    for a, b in zip(ins, refs):
        torch.testing.assert_close(a.grad, b.grad)
    # integer images carry no gradient
    assert not composite(*[t.clone().requires_grad_() for t in (mask, fg, bg)], fo, bo, out_dtype="uint8").requires_grad


@needs_ext
def test_torch_compile_fullgraph_and_export():
    args = _op_args(n=5)
    mask, fg, bg, fo, bo = args[:5]

    def f(mask, fg, bg, fo, bo):
        return composite(mask * 1.0, fg, bg, fo, bo, out_dtype="uint8", layout="NHWC")

    exp = f(mask, fg, bg, fo, bo)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(mask, fg, bg, fo, bo), exp, rtol=0, atol=0)

    class M(torch.nn.Module):
        def forward(self, mask, fg, bg, fo, bo):
            return f(mask, fg, bg, fo, bo)

    ep = torch.export.export(M(), (mask, fg, bg, fo, bo))
    assert any(node.target is torch.ops.pycgn.composite.default for node in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(mask, fg, bg, fo, bo), exp, rtol=0, atol=0)


@needs_ext
def test_torch_compile_inductor():
    args = _op_args(n=4, out_dtype=torch.float32, layout="NCHW", seed=25)
    mask, fg, bg, fo, bo = args[:5]

    def f(mask, fg, bg, fo, bo):
        return composite(mask.sigmoid(), fg, bg, fo, bo) * 2.0

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(mask, fg, bg, fo, bo), f(mask, fg, bg, fo, bo))
