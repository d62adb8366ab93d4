"""pycgn.Pipeline: the C++ pipeline bound with pybind11, in-process.

Its images must equal Python's for the same export and seed: the export's own TorchScript files
run by torch.jit on pycgn's sampler draw in the sidecar's chunks of 64 (as pycgn's runners
compute), composited by pycgn.ops.composite. Python threads
share one Pipeline (generate releases the GIL) and get the images a single thread gets.
"""
import threading

import pytest
import torch

import pycgn
import pycgn.export
from conftest import random_mnist
from pycgn import pipeline
from pycgn.ops import composite
from pycgn.runtime import _in_chunks

pytestmark = pytest.mark.skipif(not pipeline.available(), reason="pycgn._pipeline (the C++ bindings) is not built")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    m = random_mnist(5)
    return m, pycgn.export.export(m, tmp_path_factory.mktemp("ts"), format="torchscript")


def python_images(model, out, seed, n, chunk=64, **classes):
    nets = [torch.jit.load(str(out / f"{k}.torchscript.pt")) for k in ("shape", "texture", "background")]
    d = pycgn.Generator(model, backend="torch", device="cpu").sampler(seed).draw_n(n, **classes)

    def run(*a):
        return tuple(net(a[2 * i], a[2 * i + 1]) for i, net in enumerate(nets))

    args = [d.u_shape, d.shape, d.u_texture, d.texture, d.u_bg, d.bg]
    with torch.inference_mode():
        mask, fg, bg = _in_chunks(run, args, chunk) if chunk else run(*args)
    return composite(mask, fg, bg, d.fg_offset, d.bg_offset, out_dtype="uint8", layout="NHWC")


def test_images_equal_python_bit_for_bit(export_dir):
    model, out = export_dir
    p = pipeline.Pipeline(out, device="cpu")
    got = p.generate(shape=3, texture=[7, None, 1, 2], n=4, seed=9)
    want = python_images(model, out, 9, 4, shape=3, texture=[7, None, 1, 2])
    s = model.image_size
    assert got.dtype == torch.uint8 and got.shape == (4, s, s, 3)
    assert torch.equal(got, want) and int(want.max()) - int(want.min()) > 50
    # another seed gives other images: the comparison can fail
    assert not torch.equal(p.generate(shape=3, texture=[7, None, 1, 2], n=4, seed=10), want)


def test_chunks_pad_the_last_batch_like_python(export_dir):
    model, out = export_dir
    assert model.cpu_chunk == 64
    want = python_images(model, out, 3, 70)  # a full chunk and a padded one
    assert torch.equal(pipeline.Pipeline(out, device="cpu").generate(n=70, seed=3), want)
    # cpu_chunks=False: the call's 70 in one batch, as Python's nets compute them unchunked
    fast = pipeline.Pipeline(out, device="cpu", cpu_chunks=False).generate(n=70, seed=3)
    assert torch.equal(fast, python_images(model, out, 3, 70, chunk=0))
    assert (fast.int() - want.int()).abs().max() <= 1
    with pytest.raises(TypeError, match="cpu_chunks must be True or False"):
        pipeline.Pipeline(out, cpu_chunks="yes")


def test_output_is_the_pipeline_buffer_without_a_copy(export_dir):
    p = pipeline.Pipeline(export_dir[1], device="cpu")
    t = p.generate(n=2, seed=0)
    a = t.numpy()
    assert a.ctypes.data == t.data_ptr()  # numpy views the same bytes
    del t
    assert a.sum() > 0  # the buffer lives as long as a view of it


def test_threads_share_one_pipeline(export_dir):
    p = pipeline.Pipeline(export_dir[1], device="cpu", batch_size=8)
    want = {s: p.generate(n=16, seed=s) for s in range(4)}
    got = {}

    def work(s):
        got[s] = p.generate(n=16, seed=s)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(got[s], want[s]) for s in range(4))


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(n=-1), ValueError, "n must be >= 0"),
    (dict(seed=-1), ValueError, "seed must be"),
    (dict(shape=10), ValueError, "shape has class id 10"),
    (dict(shape="cat"), ValueError, "class name 'cat'"),
    (dict(bg=[1, 2]), ValueError, "bg has 2 entries"),
])
def test_bad_arguments_name_the_argument(export_dir, kwargs, error, needle):
    p = pipeline.Pipeline(export_dir[1], device="cpu")
    with pytest.raises(error, match=needle):
        p.generate(**{"n": 4, **kwargs})


def test_bad_export_is_an_export_error(tmp_path):
    with pytest.raises(pycgn.export.ExportError, match="no such file"):
        pipeline.Pipeline(tmp_path)


def test_top_level_name_is_the_binding():
    assert pycgn.Pipeline is pipeline.Pipeline and "Pipeline" in pycgn.__all__
    with pytest.raises(AttributeError, match="no attribute 'Pipe'"):
        pycgn.Pipe
