"""pycgn.runtime: every backend against eager PyTorch, the export cache, auto, errors, page faults."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings, strategies as st

import pycgn
import importlib

ex = importlib.import_module("pycgn.export")  # the module, even if pycgn re-exports a function named export
from pycgn import _checks, runtime as rt
from pycgn.checkpoint import weights_sha256
from conftest import published, random_mnist as _random_model


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache folder for the module, so each format is exported once (seconds per net)."""
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture
def use_cache(cache, monkeypatch):
    monkeypatch.setenv("PYCGN_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def model():
    return _random_model(777)


def _inputs(n, seed):
    g = torch.Generator().manual_seed(seed)
    u = [torch.randn(n, 32, generator=g) * 1.3 for _ in range(3)]
    y = [torch.randint(0, 10, (n,), generator=g) for _ in range(3)]
    return u[0], y[0], u[1], y[1], u[2], y[2]


def _assert_matches_eager(runner, model, sizes=(1, 7, 64)):
    for n in sizes:
        args = _inputs(n, n + 11)
        got = runner(*args)
        with torch.no_grad():
            want = model(*args)
        assert len(got) == 3
        for g, w in zip(got, want):
            assert g.dtype == torch.float32 and g.device.type == "cpu" and g.shape == w.shape
            assert w.std() > 0.01
            torch.testing.assert_close(g, w, atol=1e-4, rtol=0)


def test_available_backends():
    got = rt.available_backends()
    assert got[0] == "torch" and got[-1] == "auto"
    assert "torchscript" in got and set(got) <= set(rt.BACKENDS) | {"auto"}


# --- precision ------------------------------------------------------------------------------------

# bfloat16 keeps 8 significant bits. Against eager float32 on random nets its outputs (in [-1, 1])
# differed by at most 0.12 on the MNIST mask (the instance norms amplify rounding), 0.015 on the
# textures and on the ImageNet CGN's outputs; its images stay within a few uint8 levels
# (benchmarks/bf16.py measures that on the published models). The bounds leave 2x headroom.
BF16_ATOL = {"shape": 0.25, "texture": 0.05, "background": 0.05}
PAIRS = [("torch", "float32"), ("torch", "bfloat16"), ("torchscript", "float32"), ("onnxruntime", "float32"),
         ("auto", "float32"), ("auto", "bfloat16")]


def _assert_precision_matches_eager(runner, model, args_list, precision):
    lowered = False
    for args in args_list:
        got = runner(*args)
        with torch.no_grad():
            want = model(*args)
        for m, g, w in zip(rt.MECHANISMS, got, want):
            assert g.dtype == torch.float32 and g.shape == w.shape and g.is_contiguous()
            assert w.std() > 0.01
            err = (g - w).abs().max().item()
            assert err <= (1e-4 if precision == "float32" else BF16_ATOL[m]), (m, err)
            lowered |= err > 1e-4
    assert lowered == (precision != "float32")  # bfloat16 did run in bfloat16


@pytest.mark.parametrize("backend, precision", PAIRS)
def test_backend_and_precision_against_eager(use_cache, model, backend, precision):
    if backend not in rt.available_backends():
        pytest.skip(f"backend {backend} is not available in this environment")
    runner = rt.make_runner(model, backend=backend, device="cpu", precision=precision)
    assert runner.precision == precision
    _assert_precision_matches_eager(runner, model, [_inputs(n, n + 5) for n in (1, 7, 64)], precision)
    assert runner.name in ("torch", "torchscript", "onnxruntime")
    if backend != "auto":
        assert runner.name == backend
    if runner.name == "onnxruntime":
        assert runner.providers == ["CPUExecutionProvider"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_torch_compile_and_precision_against_eager(model, precision):
    if "torch.compile" not in rt.available_backends():
        pytest.skip("torch.compile needs a C++ compiler here")
    runner = rt.make_runner(model, backend="torch.compile", precision=precision)
    _assert_precision_matches_eager(runner, model, [_inputs(n, n + 5) for n in (7, 64)], precision)


def test_precision_errors_name_the_argument(model):
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, float16, got 'float64'"):
        rt.make_runner(model, backend="torch", precision="float64")
    for backend in ("onnxruntime", "torchscript"):
        if backend in rt.available_backends():
            with pytest.raises(ValueError, match=f"backend '{backend}' computes in float32 only, "
                                                 f"precision 'bfloat16' was asked for"):
                rt.make_runner(model, backend=backend, precision="bfloat16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="precision 'float16' needs a CUDA device"):
            rt.make_runner(model, backend="torch", precision="float16")
        with pytest.raises(ValueError, match="precision 'float16' needs a CUDA device"):
            pycgn.Generator(model, device="cpu", precision="float16")
    with pytest.raises(ValueError, match="precision must be one of"):
        pycgn.generate(seed=0, precision=["bfloat16"])  # unhashable: still the argument's error
    with pytest.raises(ValueError, match="precision must be one of"):
        pycgn.grid(precision="half")


def test_torch_bf16_is_a_deprecated_alias(model):
    with pytest.warns(DeprecationWarning, match="backend='torch', precision='bfloat16'"):
        runner = rt.make_runner(model, backend="torch-bf16")
    assert runner.name == "torch" and runner.precision == "bfloat16" and runner.providers == ["torch-cpu-bfloat16"]
    with pytest.raises(ValueError, match="'torch-bf16' computes in bfloat16, precision 'float16'"):
        rt.make_runner(model, backend="torch-bf16", precision="float16")
    assert "torch-bf16" not in rt.available_backends()
    assert rt.backends_for("bfloat16") == [b for b in rt.available_backends()
                                           if b not in ("torchscript", "onnxruntime")]
    assert rt.backends_for("float16", "cpu") == []


def test_float32_is_the_default_and_gives_the_eager_images(model):
    """The runners run the folded nets: the published ones up to float32 rounding, so an image
    value moves by at most one uint8 level, and very rarely (7.6e-6 of them on colored_mnist)."""
    from pycgn import reference
    gen = pycgn.Generator(model, backend="torch", device="cpu")
    assert gen.precision == "float32" and "float32" in repr(gen)
    draw = gen.sampler(5).draw(range(400))
    with torch.no_grad():
        want = reference.generate(model, draw)["images"]
    got = gen.images(draw)
    diff = (got.int() - want.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, (diff.max(), (diff > 0).float().mean())
    explicit = pycgn.Generator(model, backend="torch", device="cpu", precision="float32")
    assert torch.equal(explicit.images(draw), got)


def test_bf16_close_to_eager_and_model_untouched():
    """bfloat16 is not bit-compatible: its images must stay within a few uint8 levels."""
    model = pycgn.load("colored_mnist")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = rt.make_runner(model, backend="torch", precision="bfloat16")
    assert runner.name == "torch" and runner.providers == ["torch-cpu-bfloat16"]
    for k, v in model.state_dict().items():  # the bf16 copy must not convert the caller's model
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    gen = pycgn.Generator(model, backend="torch")
    low = pycgn.Generator(model, backend="torch", precision="bfloat16")
    draw = gen.sampler(5).draw(range(300))
    want, got = gen.images(draw), low.images(draw)
    assert want.shape == got.shape and want.dtype == got.dtype == torch.uint8
    diff = (want.int() - got.int()).abs().float()
    assert diff.mean() < 1.0 and torch.quantile(diff.flatten(), 0.999) <= 8, (diff.mean(), diff.max())
    assert (diff > 0).any()  # it did run in bfloat16
    mask, fg, bg = runner(*_inputs(7, 3))
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in (mask, fg, bg))


def test_bf16_same_bits_whatever_the_batch():
    model = _random_model(778)
    runner = rt.make_runner(model, backend="torch", precision="bfloat16")
    args = _inputs(64, 9)
    whole = runner(*args)
    parts = [runner(*[a[i:i + 16] for a in args]) for i in range(0, 64, 16)]
    for w, p in zip(whole, zip(*parts)):
        assert torch.equal(w, torch.cat(p))


def test_published_model_on_torchscript(use_cache):
    m = pycgn.load(published("double_colored_mnist"))
    _assert_matches_eager(rt.make_runner(m, backend="torchscript"), m, sizes=(5,))


def test_empty_batch_and_input_checks(use_cache, model):
    runner = rt.make_runner(model, backend="torch")
    mask, fg, bg = runner(*_inputs(0, 1))
    assert mask.shape == (0, 1, 32, 32) and fg.shape == bg.shape == (0, 3, 32, 32)
    u, y = torch.randn(2, 32), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="y_texture has class id 10"):
        runner(u, y, u, torch.tensor([1, 10]), u, y)
    with pytest.raises(ValueError, match=r"u_bg must have shape \(N, 32\)"):
        runner(u, y, u, y, torch.randn(2, 31), y)
    with pytest.raises(ValueError, match="u_texture has batch 3, expected 2"):
        runner(u, y, torch.randn(3, 32), torch.tensor([1, 2, 3]), u, y)
    with pytest.raises(TypeError, match="y_shape must be an integer tensor"):
        runner(u, y.float(), u, y, u, y)
    # int32 classes and float64 latents are converted, not rejected
    got = runner(u.double(), y.int(), u, y, u, y)
    with torch.no_grad():
        torch.testing.assert_close(got[0], model.shape(u, y), atol=1e-5, rtol=0)


def test_make_runner_argument_errors(model, tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        rt.make_runner(model, backend="tensorflow")
    with pytest.raises(TypeError, match="model must be an MnistCGN or ImagenetCGN"):
        rt.make_runner("colored_mnist")
    with pytest.raises(ValueError, match="export_dir only applies"):
        rt.make_runner(model, backend="torch", export_dir=tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            rt.make_runner(model, backend="torch", device="cuda")


# --- the cache ----------------------------------------------------------------------------------

def test_cache_exports_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("PYCGN_CACHE_DIR", str(tmp_path / "c"))
    m = _random_model(31)
    calls = []
    real = ex.export

    def counting(*a, **k):
        calls.append(k.get("format"))
        return real(*a, **k)

    monkeypatch.setattr(ex, "export", counting)
    rt.make_runner(m, backend="torchscript")
    assert calls == ["torchscript"]
    entry = tmp_path / "c" / "exports" / weights_sha256(m.state_dict()) / "torchscript-v1-netsfolded"
    assert entry.name == rt.entry_name(m, "torchscript") and (entry / ex.SIDECAR).is_file()
    again = rt.make_runner(m, backend="torchscript")
    assert calls == ["torchscript"], "the second runner exported again instead of loading the cache"
    _assert_matches_eager(again, m, sizes=(3,))
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name], "temporary folders left"


def test_concurrent_processes_share_one_cache_entry(tmp_path):
    path = pycgn.save(_random_model(41), tmp_path / "m.pt")
    code = textwrap.dedent(f"""
        import pycgn, torch
        from pycgn import runtime
        m = pycgn.load(r"{path}")
        r = runtime.make_runner(m, backend="torchscript")
        u, y = torch.randn(4, 32), torch.randint(0, 10, (4,))
        with torch.no_grad():
            assert (r(u, y, u, y, u, y)[1] - m.texture(u, y)).abs().max() < 1e-4
        print("ok")
    """)
    env = dict(os.environ, PYCGN_CACHE_DIR=str(tmp_path / "c"))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err
    roots = list((tmp_path / "c" / "exports").iterdir())
    assert len(roots) == 1 and [p.name for p in roots[0].iterdir()] == ["torchscript-v1-netsfolded"]


@pytest.mark.parametrize("backend, name, damage", [("torchscript", "texture.torchscript.pt", "remove"),
                                                   ("onnxruntime", "texture.onnx", "truncate")])
def test_corrupt_cache_entry_is_exported_again(use_cache, model, backend, name, damage):
    # a damaged cache entry must not break every later run: it is exported again, with a warning
    fmt = "onnx" if backend == "onnxruntime" else backend
    entry = rt.cached_export(model, fmt)
    saved = (entry / name).read_bytes()
    if damage == "truncate":
        (entry / name).write_bytes(saved[: len(saved) // 2])
    else:
        (entry / name).unlink()
    rt._warned.discard(entry)  # the warning is once per entry and process
    with pytest.warns(RuntimeWarning, match=f"cached export {entry} failed its check"):
        runner = rt.make_runner(model, backend=backend)
    assert len((entry / name).read_bytes()) > len(saved) // 2 and runner.paths["texture"] == entry / name
    _assert_matches_eager(runner, model, sizes=(3,))


def test_cache_entry_of_an_older_pycgn_is_exported_again(use_cache, model):
    # an entry whose sidecar lacks a field this pycgn writes (here cpu_chunk, which the C++
    # pipeline computes in) is exported again, though its files are intact and its manifest agrees
    entry = rt.cached_export(model, "torchscript")
    side = json.loads((entry / ex.SIDECAR).read_text())
    del side["cpu_chunk"]
    (entry / ex.SIDECAR).write_text(json.dumps(side))
    (entry / rt.MANIFEST).write_text(json.dumps({"files": rt._file_hashes(entry)}))
    assert rt.cached_entry(model, "torchscript") is None
    rt._warned.discard(entry)
    with pytest.warns(RuntimeWarning, match="sidecar's 'cpu_chunk' is None, this pycgn writes 64"):
        assert rt.cached_export(model, "torchscript") == entry
    assert json.loads((entry / ex.SIDECAR).read_text())["cpu_chunk"] == 64
    assert rt.cached_entry(model, "torchscript") == entry


def test_corrupt_export_dir_names_the_file(use_cache, model, tmp_path):
    # an export the user points to is theirs: it is reported, never rewritten
    d = shutil.copytree(rt.cached_export(model, "torchscript"), tmp_path / "mine")
    name = "texture.torchscript.pt"
    (d / name).write_bytes((d / name).read_bytes()[:1000])
    with pytest.raises(ex.ExportError, match=name.replace(".", r"\.")) as e:
        rt.make_runner(model, backend="torchscript", export_dir=d)
    assert str(d / name) in str(e.value)
    (d / name).unlink()
    with pytest.raises(ex.ExportError, match=f"{name.replace('.', '[.]')}: missing"):
        rt.make_runner(model, backend="torchscript", export_dir=d)


def test_export_dir_from_other_weights_is_refused(use_cache, model, tmp_path):
    other = _random_model(5)
    d = shutil.copytree(rt.cached_export(model, "onnx"), tmp_path / "other")
    with pytest.raises(ex.ExportError, match="not from the model's weights") as e:
        rt.make_runner(other, backend="onnxruntime", export_dir=d)
    assert str(d / ex.SIDECAR) in str(e.value)


def test_silently_altered_weights_are_caught(use_cache, model, tmp_path):
    onnx = pytest.importorskip("onnx")
    d = shutil.copytree(rt.cached_export(model, "onnx"), tmp_path / "altered")
    proto = onnx.load(str(d / "background.onnx"))
    init = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr *= 1.5  # same names, shapes and metadata: only the numbers differ
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(d / "background.onnx"))
    with pytest.raises(ex.ExportError, match=r"background\.onnx: onnxruntime output of the background"):
        rt.make_runner(model, backend="onnxruntime", export_dir=d)


# --- auto -----------------------------------------------------------------------------------

def test_auto_measures_once_per_batch_class_and_remembers(use_cache, model, monkeypatch):
    if "onnxruntime" not in rt.available_backends():
        pytest.skip("auto has a single candidate without onnxruntime")
    for f in rt.cache_dir().glob("auto-*.json"):
        f.unlink()
    chunked = rt.make_runner(model, backend="auto")  # on the CPU every call runs in chunks of 64: one class
    _assert_matches_eager(chunked, model, sizes=(3, 70))
    assert set(chunked.choice) == {64} and chunked.backend_for(3) == chunked.backend_for(500) == chunked.choice[64]
    for f in rt.cache_dir().glob("auto-*.json"):
        f.unlink()
    monkeypatch.setattr(model, "cpu_chunk", None)  # batches as they come (as on a GPU): a class per size
    runner = rt.make_runner(model, backend="auto")
    assert isinstance(runner, rt.AutoRunner) and runner.name == "auto"
    _assert_matches_eager(runner, model, sizes=(3, 20))
    assert set(runner.choice) == {4, 32} and set(runner.choice.values()) <= {"onnxruntime", "torch"}
    assert runner.name == runner.choice[32]
    (saved,) = rt.cache_dir().glob("auto-cpu-*.json")
    assert saved.name.startswith("auto-cpu-mnist_cgn-float32-")  # the choice is per model kind and precision
    assert json.loads(saved.read_text()) == {str(k): v for k, v in runner.choice.items()}

    def no_measure(*a):
        raise AssertionError("measured again although the choice was stored")

    monkeypatch.setattr(rt.AutoRunner, "_measure", no_measure)
    again = rt.make_runner(model, backend="auto")
    _assert_matches_eager(again, model, sizes=(3,))
    assert again.backend_for(17) == runner.choice[32]


# --- the allocator trap ------------------------------------------------------------------------

FAULTS = textwrap.dedent("""
    import resource, torch, pycgn
    from pycgn import runtime
    torch.manual_seed(0)
    m = pycgn.MnistCGN().eval()
    # whole batches of 256: the trap is in their large temporaries (chunks of 64 make blocks small
    # enough for glibc's dynamic mmap threshold, so the trap would show only by chance)
    m.cpu_chunk = None
    r = runtime.make_runner(m, backend="torch")
    u, y = torch.randn(256, 32), torch.randint(0, 10, (256,))
    r(u, y, u, y, u, y)
    # the median call: the heap may still grow once after the warm-up (2,048-6,144 faults in one
    # call, then 0); the trap faults on every call
    per_call = []
    for _ in range(5):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        r(u, y, u, y, u, y)
        per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(sorted(per_call)[2], runtime.tune_malloc())
""")


@pytest.mark.skipif(sys.platform != "linux", reason="the glibc malloc settings are Linux-only")
def test_torch_runner_does_not_page_fault_per_call():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["OMP_NUM_THREADS"] = "1"  # faults counted on the thread that allocates, the same either way

    def faults(**extra):
        r = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, timeout=300,
                           env=dict(env, **extra))
        assert r.returncode == 0, r.stderr
        n, tuned = r.stdout.split()
        return float(n), tuned == "True"

    tuned, on = faults()
    if not on:
        pytest.skip("malloc is not glibc's here: nothing to tune")
    default, off = faults(PYCGN_MALLOC="default")
    assert not off
    # ~49,000 faults per call at batch 256 with the folded nets (their temporaries are large blocks too)
    assert default > 20_000, f"the trap did not show with the default settings ({default:.0f} faults/call)"
    assert tuned < default / 10, f"{tuned:.0f} faults per call with pycgn's setting, {default:.0f} without"


def test_onnxruntime_cuda_options_do_not_freeze_a_stream(monkeypatch, tmp_path):
    """The CUDA provider's options carry no user_compute_stream: it would be fixed at session
    creation, while torch's current stream is the caller's at each call (issue 18). Runs
    without a GPU: only the options are built."""
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    got = rt._ort_providers(torch.device("cuda", 0), tmp_path, 32)
    named = {p[0]: p[1] for p in got if isinstance(p, tuple)}
    assert set(named) == {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
    for opts in named.values():
        assert opts["device_id"] == 0
        assert not any("stream" in k for k in opts), opts


def test_class_vectors_on_torch_blend_the_embeddings(model):
    """Interpolation feeds class vectors: a one-hot row is its class exactly, a blend of two rows
    blends the MNIST CGN's class embeddings (the published interpolation)."""
    runner = rt.make_runner(model, backend="torch")
    u, y = torch.randn(4, 32, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 3, 9, 3])
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    for a, b in zip(runner(u, y, u, y, u, y), runner(u, one_hot, u, one_hot, u, one_hot)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    mix = 0.3 * torch.nn.functional.one_hot(torch.tensor([1] * 4), 10) + 0.7 * one_hot
    emb = model.label_emb.weight.detach()
    with torch.no_grad():
        want = model.f_text1(torch.cat([u, 0.3 * emb[1] + 0.7 * emb[y]], 1))
    torch.testing.assert_close(runner(u, y, u, mix.float(), u, y)[1], want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"y_bg must be class ids \(N,\) or class vectors \(N, 10\)"):
        runner(u, y, u, y, u, torch.zeros(4, 9))
    with pytest.raises(TypeError, match="y_shape must be an integer tensor"):  # exports take ids only
        rt.make_runner(model, backend="torchscript")(u, one_hot, u, y, u, y)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.none(), st.lists(st.text(max_size=3)),
                 st.sampled_from(["float32", "bfloat16", "float16", "Float32", " bfloat16", "fp16"])))
def test_any_precision_value_is_accepted_or_named(value):
    for device in ("cpu", "cuda"):
        try:
            got = _checks.precision(value, device)
        except ValueError as e:
            assert str(e).startswith("precision ")  # the argument is named, whatever the value
            continue
        assert got == value and value in rt.PRECISIONS and (value != "float16" or device == "cuda")


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_samples_bits_never_depend_on_its_batch(model, backend):
    """On the CPU every batch is computed in chunks of ``cpu_chunk`` (the last padded): oneDNN split
    odd batches below ~40 over 2 threads otherwise, and the transposed convs differed in the last bit."""
    if backend not in rt.available_backends():
        pytest.skip(f"{backend} is not installed")
    gen = pycgn.Generator(model, backend=backend, device="cpu")
    draw = gen.sampler(11).draw(range(150))
    args = (draw.u_shape, draw.shape, draw.u_texture, draw.texture, draw.u_bg, draw.bg)
    full = gen.run(*args)  # float32 (mask, fg, bg): the last bit shows, not only a flipped uint8 level
    for a, b in [(0, 1), (0, 3), (5, 26), (7, 44), (0, 64), (1, 66), (30, 150)]:
        part = gen.run(*(t[a:b] for t in args))
        for got, want in zip(part, full):
            assert got.is_contiguous() and torch.equal(got, want[a:b]), (a, b)
    assert torch.equal(gen.images(draw.slice(5, 26)), gen.images(draw)[5:26])
    assert gen._runner.chunk == model.cpu_chunk == 64


def test_sidecar_nets_field_old_and_foreign(tmp_path, model):
    """The sidecar's "nets" field: an export written before it (no field) still loads, the parity
    check standing behind it; another value is refused, naming the field."""
    d = ex.export(model, tmp_path / "e", "torchscript")
    side = json.loads((d / ex.SIDECAR).read_text())
    assert side["nets"] == "folded"
    del side["nets"]
    (d / ex.SIDECAR).write_text(json.dumps(side))
    _assert_matches_eager(rt.make_runner(model, backend="torchscript", export_dir=d), model, sizes=(3,))
    side["nets"] = "unfolded-v9"
    (d / ex.SIDECAR).write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"pycgn_export\.json: exported with nets 'unfolded-v9', the model runs "
                                         r"with 'folded'"):
        rt.make_runner(model, backend="torchscript", export_dir=d)
