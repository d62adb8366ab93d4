"""The CUDA operator against the CPU operator, bit for bit (torch.equal), on a non-default
stream and inside a captured CUDA graph. Needs a GPU and pycgn._C built with CUDA kernels
(tools/gpu_check.sh runs it); skipped, saying which is missing, elsewhere."""
import itertools

import pytest
import torch

import pycgn
from _helpers import make, offsets, same_view
from pycgn.ops import composite

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(not pycgn._ext.has_cuda_kernels(), reason="pycgn._C was built without CUDA kernels"),
]
LAYOUTS = list(itertools.product(("float32", "uint8"), ("NCHW", "NHWC")))
SHAPES = [  # n, mask channels, c, h, w, hf, wf, hb, wb
    (1, 1, 3, 1, 1, 1, 1, 1, 1),
    (2, 1, 3, 7, 5, 7, 5, 7, 5),
    (3, 3, 3, 13, 17, 5, 23, 40, 3),
    (2, 1, 1, 9, 11, 4, 3, 9, 11),
    (2, 4, 4, 6, 33, 7, 34, 1, 1),
    (0, 1, 3, 32, 32, 32, 32, 32, 32),
    (64, 1, 3, 256, 256, 256, 256, 256, 256),
    (1000, 1, 3, 32, 32, 40, 40, 32, 32),
]


def both(args, out_dtype, layout, **kw):
    """(CPU result, CUDA result on the CPU) of the same call; args on the CPU, moved view for view."""
    cpu = composite(*args, out_dtype=out_dtype, layout=layout, **kw)
    cuda = composite(*(same_view(a, "cuda") for a in args), out_dtype=out_dtype, layout=layout, **kw)
    assert cuda.device.type == "cuda"
    return cpu, cuda.cpu()


def shifted(t):
    """The same values at a storage offset of one element (off every alignment grid)."""
    buf = torch.zeros(t.numel() + 1, dtype=t.dtype)
    buf[1:] = t.reshape(-1)
    return buf[1:].view(t.shape)


def assert_equal(cpu, cuda):
    assert cpu.dtype == cuda.dtype and cpu.shape == cuda.shape
    assert torch.equal(cpu, cuda), f"{int((cpu != cuda).sum())} of {cpu.numel()} values differ"


@pytest.mark.parametrize("out_dtype,layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(out_dtype, layout, dtype):
    for shape in SHAPES:
        n, mc, c, h, w, hf, wf, hb, wb = shape
        mask, fg, bg = make(n, mc, c, h, w, hf, wf, hb, wb, dtype=dtype, seed=26)
        fo, bo = offsets(n, torch.int64, -(2**40), 2**40), offsets(n, torch.int32, -1000, 1000)
        assert_equal(*both((mask, fg, bg, fo, bo), out_dtype, layout))
        # strided (positive steps: torch has no negative ones), transposed and offset views
        strided = (mask[..., ::2], fg.transpose(2, 3).contiguous().transpose(2, 3), shifted(bg), fo, None)
        assert_equal(*both(strided, out_dtype, layout))


@pytest.mark.parametrize("out_dtype,layout", LAYOUTS)
def test_storage_offsets_and_misaligned_out(out_dtype, layout):
    n, c, h, w = 3, 3, 9, 12
    g = torch.Generator().manual_seed(30)
    buf = torch.rand(4 * n * c * h * w + 7, generator=g) * 2 - 1
    mask = buf[1:1 + n * h * w].view(n, 1, h, w)  # a storage offset of 1 float: not 16-byte aligned
    fg = buf[3 + n * h * w:][: n * c * h * w].view(n, c, h, w)
    bg = buf[5 + n * h * w + n * c * h * w:][: n * c * h * w].view(n, c, h, w)
    fo = offsets(n, torch.int64, -50, 50)
    cpu, cuda = both((mask, fg, bg, fo, None), out_dtype, layout)
    assert_equal(cpu, cuda)
    dt = cpu.dtype
    shape = cpu.shape
    for shift in (1, 2, 3):  # out= whose first element is off the 4-element (vector store) grid
        raw = torch.full((cpu.numel() + shift,), 7, dtype=dt, device="cuda")
        out = raw[shift:].view(shape)
        args = [same_view(a, "cuda") for a in (mask, fg, bg, fo)]
        assert composite(*args, None, out_dtype=out_dtype, layout=layout, out=out) is out
        assert_equal(cpu, out.cpu())
        assert (raw[:shift] == 7).all()


@pytest.mark.parametrize("out_dtype,layout", LAYOUTS)
@pytest.mark.parametrize("mc", [1, 3])
def test_texture_columns_four_at_a_time(out_dtype, layout, mc):
    """Widths in multiples of 4, where the kernel reads 4 texture columns as one float4 (vec4.h):
    shifts that are multiples of 4 beside ones that are not in one call, no shift at all,
    textures narrower and wider than the output, and storage offsets on and off the 16-byte grid."""
    n = 8
    mask, fg, bg = make(n, mc, 3, 10, 24, 7, 8, 12, 40, seed=33)
    fo = offsets(n, torch.int64, -(2**40), 2**40, seed=5)
    fo[::2, 1] -= fo[::2, 1] % 4  # every other image's shift a multiple of 4 (also of 8: fg's width)
    bo = offsets(n, torch.int32, -1000, 1000, seed=6) * 4
    bo[1::3, 1] += 1
    assert_equal(*both((mask, fg, bg, fo, bo), out_dtype, layout))
    assert_equal(*both((mask, fg, bg, None, None), out_dtype, layout))

    def at(t, k):  # t's values at a storage offset of k floats
        buf = torch.zeros(t.numel() + k, dtype=t.dtype)
        buf[k:] = t.reshape(-1)
        return buf[k:].view(t.shape)

    for k in (4, 2):  # 16 bytes: still aligned; 8 bytes: one float at a time
        assert_equal(*both((mask, at(fg, k), at(bg, k), fo, bo), out_dtype, layout))


@pytest.mark.parametrize("w", [1, 3, 5, 7, 33, 255])
def test_uint8_nhwc_odd_widths(w):
    mask, fg, bg = make(5, 1, 3, 7, w, 6, w + 2, 7, max(w - 1, 1), seed=31)
    fo, bo = offsets(5, torch.int64, -99, 99), offsets(5, torch.int32, -99, 99, seed=4)
    assert_equal(*both((mask, fg, bg, fo, bo), "uint8", "NHWC"))


def test_more_than_2_to_the_31_output_elements():
    """2.16e9 uint8 outputs (5 GB on the GPU in all): 64-bit indices everywhere."""
    free, _ = torch.cuda.mem_get_info()
    n, h, w = 11000, 256, 256
    if free < 7 * 2**30:
        pytest.skip(f"needs about 7 GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    g = torch.Generator(device="cuda").manual_seed(32)
    mask = torch.rand(n, 1, h, w, device="cuda", generator=g)
    fg = torch.rand(n, 3, 5, 7, device="cuda", generator=g) * 2 - 1
    bg = torch.rand(n, 3, 8, 9, device="cuda", generator=g) * 2 - 1
    fo = torch.randint(-(2**40), 2**40, (n, 2), device="cuda", generator=g)
    assert n * 3 * h * w > 2**31
    out = composite(mask, fg, bg, fo, None, "uint8", "NHWC")
    for i in (0, 1, n // 2, n - 2, n - 1):  # images independent: check a few against the CPU operator
        s = slice(i, i + 1)
        exp = composite(mask[s].cpu(), fg[s].cpu(), bg[s].cpu(), fo[s].cpu(), None, "uint8", "NHWC")
        assert_equal(exp, out[s].cpu())
    del out, mask


def test_runs_on_the_current_stream():
    """The kernel must wait for work queued on the caller's stream (here: a spin, then the
    writes of its inputs); on the legacy default stream it would read them too early."""
    mask, fg, bg = make(8, 1, 3, 64, 64, seed=33)
    fo = offsets(8, torch.int64, -9, 9)
    exp = composite(mask, fg, bg, fo, None, "uint8", "NHWC")
    s = torch.cuda.Stream()
    dm, df, db, dfo = (torch.zeros_like(t, device="cuda") for t in (mask, fg, bg, fo))
    pinned = [t.pin_memory() for t in (mask, fg, bg, fo)]
    torch.cuda.synchronize()
    with torch.cuda.stream(s):
        torch.cuda._sleep(50_000_000)  # ~tens of ms of spinning before the inputs arrive
        for d, p in zip((dm, df, db, dfo), pinned):
            d.copy_(p, non_blocking=True)
        got = composite(dm, df, db, dfo, None, "uint8", "NHWC")
        out = torch.empty_like(got)
        composite(dm, df, db, dfo, None, "uint8", "NHWC", out=out)
    s.synchronize()
    assert_equal(exp, got.cpu())
    assert_equal(exp, out.cpu())


@pytest.mark.parametrize("out_dtype,layout", [("uint8", "NHWC"), ("float32", "NCHW")])
def test_cuda_graph_capture_and_replay(out_dtype, layout):
    mask, fg, bg = make(4, 1, 3, 32, 32, seed=34)
    fo = offsets(4, torch.int64, -40, 40)
    static = [t.cuda() for t in (mask, fg, bg, fo)]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up off the capture, as torch's docs ask
        composite(*static, None, out_dtype, layout)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = composite(*static, None, out_dtype, layout)
    for seed in (35, 36):
        m2, f2, b2 = make(4, 1, 3, 32, 32, seed=seed)
        fo2 = offsets(4, torch.int64, -40, 40, seed=seed)
        for d, src in zip(static, (m2, f2, b2, fo2)):
            d.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        assert_equal(composite(m2, f2, b2, fo2, None, out_dtype, layout), out.cpu())


def test_fallback_and_backward_helpers_are_capturable():
    """_reduced (used by the backward and the fallback) makes no host-to-device copy: it used
    to build a tensor from the texture sizes, which a capturing stream refuses."""
    fo = torch.randint(-(2**40), 2**40, (6, 2), device="cuda")
    fg = torch.empty(6, 3, 5, 7, device="cuda")
    exp = pycgn.ops._reduced(fo, fg)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        pycgn.ops._reduced(fo, fg)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = pycgn.ops._reduced(fo, fg)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(got, exp)
    assert torch.equal(exp.cpu(), torch.stack((fo[:, 0].cpu() % 5, fo[:, 1].cpu() % 7), 1))


def test_onnxruntime_iobinding_on_a_side_stream(tmp_path, monkeypatch):
    """OrtRunner's CUDA path, called on a non-default stream right after the inputs are made
    there: outputs equal eager torch's (ORT must wait for them, and torch for ORT)."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDA execution provider (onnxruntime-gpu)")
    from conftest import random_mnist
    from pycgn import runtime as rt
    monkeypatch.setenv("PYCGN_CACHE_DIR", str(tmp_path))
    model = random_mnist(778).cuda()
    runner = rt.make_runner(model, backend="onnxruntime", device="cuda")
    assert runner.on_gpu, runner.providers
    g = torch.Generator().manual_seed(5)
    host = [torch.randn(64, 32, generator=g).pin_memory() if k % 2 == 0 else
            torch.randint(0, 10, (64,), generator=g).pin_memory() for k in range(6)]
    with torch.no_grad():
        want = model(*(h.cuda() for h in host))
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.cuda._sleep(50_000_000)
        args = [h.to("cuda", non_blocking=True) for h in host]
        got = runner(*args)
        got = [t * 1.0 for t in got]  # torch reads ORT's outputs on s
    s.synchronize()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
