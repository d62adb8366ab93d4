"""The aoti format and backend: AOTInductor packages (.pt2) of each mechanism, their checks, and the
runner that loads them from the cache.

Compiling is slow (about 40 s per MNIST mechanism on 2 busy cores, plus ~2 min the first time on a
machine), so every compiling test shares the packages of the session-scoped fixtures below and is
in conftest's SLOW set; the quick tests check the refusals on hand-made packages.
"""
import importlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from pycgn import runtime
from pycgn.checkpoint import weights_sha256
from conftest import random_mnist

ex = importlib.import_module("pycgn.export")  # the module, even if pycgn re-exports a function named export
META = "/data/aotinductor/model/x.wrapper_metadata.json"


def _fields(**change):
    return {**ex.aoti_fields("float32", "cpu"), **change}


def _hand_made(d: Path, model, meta_change=None, side_change=None, drop_member=False) -> dict:
    """An aoti export folder with a real sidecar and packages that are zip archives holding only a
    metadata record (no native code): enough for every check made before loading."""
    d.mkdir(parents=True, exist_ok=True)
    side = ex.sidecar_for(model, "aoti", aoti=_fields(**(side_change or {})))
    (d / ex.SIDECAR).write_text(json.dumps(side))
    for m in ex.MECHANISMS:
        meta = {"mechanism": m, "weights_sha256": side["weights_sha256"], "format_version": "1",
                **_fields(), **(meta_change or {})}
        with zipfile.ZipFile(d / side["files"][m], "w") as z:
            if not drop_member:
                z.writestr(m + META, json.dumps({ex.AOTI_META + k: str(v) for k, v in meta.items()}))
            z.writestr(m + "/archive_format", "pt2")
    return ex.read_sidecar(d, "aoti", side["weights_sha256"])


def test_aoti_export_argument_errors(tmp_path):
    model = random_mnist(5)
    with pytest.raises(ValueError, match="'float16' needs a CUDA device.*use precision 'bfloat16'"):
        ex.export(model, tmp_path / "a", format="aoti", precision="float16")
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, float16, got 'int8'"):
        ex.export(model, tmp_path / "a", format="aoti", precision="int8")
    with pytest.raises(ValueError, match="precision and device apply to the aoti format only"):
        ex.export(model, tmp_path / "a", format="onnx", precision="bfloat16")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        ex.export(model, tmp_path / "a", format="aoti", device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            ex.export(model, tmp_path / "a", format="aoti", device="cuda")
    assert not (tmp_path / "a").exists()  # every refusal comes before anything is written


def test_hand_made_packages_are_refused(tmp_path):
    model = random_mnist(5)
    side = _hand_made(tmp_path / "ok", model)
    assert side["precision"] == "float32" and side["torch_version"] == torch.__version__
    assert side["device"] == "cpu" and side["arch"] == ex.device_arch("cpu")
    assert [p.name for p in side["paths"].values()] == ["shape.pt2", "texture.pt2", "background.pt2"]
    p = side["paths"]["shape"]
    # every check passes, so the loader meets an archive without code and must say so
    with pytest.raises(ex.ExportError, match=r"shape\.pt2: AOTInductor cannot load it"):
        ex.load_aoti_file(p, "shape", side)
    with pytest.raises(ex.ExportError, match=r"shape\.pt2: holds the 'shape' generator, expected 'texture'"):
        ex.load_aoti_file(p, "texture", side)

    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ex.ExportError, match=r"shape\.pt2: not a readable AOTInductor package \(truncated"):
        ex.load_aoti_file(p, "shape", side)
    bad = bytearray(data)
    at = data.index(b'"pycgn.mechanism"')  # a byte of the stored record: its CRC no longer matches
    bad[at + 2] ^= 1
    p.write_bytes(bytes(bad))
    with pytest.raises(ex.ExportError, match=r"shape\.pt2: member .* is corrupt \(CRC mismatch\)"):
        ex.load_aoti_file(p, "shape", side)

    other = _hand_made(tmp_path / "weights", model, meta_change={"weights_sha256": "ab" * 32})
    with pytest.raises(ex.ExportError, match=r"shape\.pt2: exported from weights abababababab\.\.\., but the "
                                             r"sidecar says"):
        ex.load_aoti_file(other["paths"]["shape"], "shape", other)
    old = _hand_made(tmp_path / "torch", model, meta_change={"torch_version": "2.12.0"},
                     side_change={"torch_version": "2.12.0"})
    with pytest.raises(ex.ExportError, match=r"shape\.pt2: compiled by torch 2\.12\.0, this is torch "
                                             r".*runs only with the torch that compiled it"):
        ex.load_aoti_file(old["paths"]["shape"], "shape", old)
    mixed = _hand_made(tmp_path / "mixed", model, side_change={"torch_version": "2.12.0"})
    with pytest.raises(ex.ExportError, match=r"background\.pt2: torch_version '.*' in the package, but the "
                                             r"sidecar says '2\.12\.0'"):
        ex.load_aoti_file(mixed["paths"]["background"], "background", mixed)
    bf16 = _hand_made(tmp_path / "bf16", model, meta_change={"precision": "bfloat16"})
    with pytest.raises(ex.ExportError, match=r"precision 'bfloat16' in the package, but the sidecar says "
                                             r"'float32'"):
        ex.load_aoti_file(bf16["paths"]["shape"], "shape", bf16)
    cuda = _hand_made(tmp_path / "cuda", model, meta_change={"device": "cuda", "arch": "sm_90"},
                      side_change={"device": "cuda", "arch": "sm_90"})
    with pytest.raises(ex.ExportError, match=r"shape\.pt2: compiled for cuda, cannot run on cpu"):
        ex.load_aoti_file(cuda["paths"]["shape"], "shape", cuda)
    empty = _hand_made(tmp_path / "empty", model, drop_member=True)
    with pytest.raises(ex.ExportError, match=r"shape\.pt2: not an AOTInductor package of one model"):
        ex.load_aoti_file(empty["paths"]["shape"], "shape", empty)


@pytest.mark.parametrize("field, value, words", [
    ("precision", "float64", "field 'precision' is 'float64', expected one of float32, bfloat16, float16"),
    ("device", "tpu", "field 'device' is 'tpu', expected one of cpu, cuda"),
    ("torch_version", 2, "field 'torch_version' must be str"),
    ("arch", None, "field 'arch' must be str"),
])
def test_aoti_sidecar_fields_are_checked(tmp_path, field, value, words):
    model = random_mnist(5)
    _hand_made(tmp_path, model)
    side = json.loads((tmp_path / ex.SIDECAR).read_text())
    side[field] = value
    (tmp_path / ex.SIDECAR).write_text(json.dumps(side))
    with pytest.raises(ex.ExportError, match=words):
        ex.read_sidecar(tmp_path, "aoti")


# --- compiled packages (slow) -----------------------------------------------------------------

def _skip_without_compiler():
    if not runtime._have_compile():
        pytest.skip("AOTInductor compiles C++: no compiler (g++ or $CXX) on this machine")


@pytest.fixture(scope="session")
def aoti_model():
    return random_mnist(777)


def _in_session_cache(tmp_path_factory, fn):
    """Run ``fn`` with PYCGN_CACHE_DIR at the session's cache (conftest's ``_cache_dir`` points every
    test there too), so the runner tests load what the fixtures compiled."""
    old = os.environ.get("PYCGN_CACHE_DIR")
    os.environ["PYCGN_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "pycgn-cache")
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop("PYCGN_CACHE_DIR", None)
        else:
            os.environ["PYCGN_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def aoti_f32(aoti_model, tmp_path_factory):
    """The float32 packages of ``aoti_model``, compiled once per session into the session's cache."""
    _skip_without_compiler()
    return _in_session_cache(tmp_path_factory, lambda: runtime.cached_export(aoti_model, "aoti"))


def _inputs(n, seed, model):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, model.latent_dim, generator=g) * 1.5,
            torch.randint(0, model.n_classes, (n,), generator=g))


def test_aoti_export_matches_eager(aoti_f32, aoti_model):
    sha = weights_sha256(aoti_model.state_dict())
    side = ex.read_sidecar(aoti_f32, "aoti", sha)
    raw = json.loads((aoti_f32 / ex.SIDECAR).read_text())
    assert list(raw)[-7:] == ["precision", "torch_version", "device", "arch", "files", "inputs", "outputs"]
    assert (side["runtime"], side["precision"], side["torch_version"], side["device"]) == \
        ("aoti", "float32", torch.__version__, "cpu")
    mechs = aoti_model.mechanisms()
    for m in ex.MECHANISMS:
        net = ex.load_aoti_file(side["paths"][m], m, side)
        assert net.metadata["pycgn.mechanism"] == m and net.metadata["pycgn.weights_sha256"] == sha
        assert net.metadata["pycgn.precision"] == "float32"
        assert net.metadata["pycgn.torch_version"] == torch.__version__
        for n in (1, 5, 300):  # the batch is dynamic
            u, y = _inputs(n, n, aoti_model)
            with torch.inference_mode():
                got, want = net(u, y), mechs[m](u, y)
            assert got.dtype == torch.float32 and got.shape == want.shape
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def _rewrite_member(p: Path, edit) -> None:
    """Rewrite the package's metadata record with ``edit(dict)``, keeping every other member."""
    buf = io.BytesIO()
    with zipfile.ZipFile(p) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("wrapper_metadata.json"):
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            dst.writestr(info, data)
    p.write_bytes(buf.getvalue())


def test_aoti_refuses_damaged_packages(aoti_f32, tmp_path):
    d = Path(shutil.copytree(aoti_f32, tmp_path / "e"))
    side = ex.read_sidecar(d, "aoti")
    p = side["paths"]["texture"]
    orig = p.read_bytes()
    p.write_bytes(orig[: len(orig) * 2 // 3])
    with pytest.raises(ex.ExportError, match=r"texture\.pt2: not a readable AOTInductor package"):
        ex.load_aoti_file(p, "texture", side)
    p.write_bytes(orig)
    _rewrite_member(p, lambda m: m.update({"pycgn.weights_sha256": "cd" * 32}))
    with pytest.raises(ex.ExportError, match=r"texture\.pt2: exported from weights cdcdcdcdcdcd"):
        ex.load_aoti_file(p, "texture", side)
    p.write_bytes(orig)
    _rewrite_member(p, lambda m: m.update({"pycgn.torch_version": "2.12.0"}))
    old = {**side, "torch_version": "2.12.0"}
    with pytest.raises(ex.ExportError, match=r"texture\.pt2: compiled by torch 2\.12\.0"):
        ex.load_aoti_file(p, "texture", old)
    p.write_bytes(orig)
    _rewrite_member(p, lambda m: m.update({"pycgn.note": "edited"}))  # passes the archive's checks
    with pytest.raises(ex.ExportError, match=r"texture\.pt2: its metadata record differs from the one "
                                             r"compiled into its code"):
        ex.load_aoti_file(p, "texture", side)
    shutil.copy(side["paths"]["shape"], p)
    with pytest.raises(ex.ExportError, match=r"texture\.pt2: holds the 'shape' generator"):
        ex.load_aoti_file(p, "texture", side)


def test_aoti_export_of_a_tiny_imagenet_cgn(tmp_path):
    """The ImageNet CGN through the same writer (its export_spec: ids one-hot inside the graph,
    the truncation in the metadata). Only the texture mechanism is compiled: the U2-Net of the
    shape mechanism alone takes ~8 minutes on 2 busy cores, and adds nothing the format checks."""
    _skip_without_compiler()
    from pycgn.models import ImagenetCGN
    from test_imagenet import TINY, randomize_
    model = randomize_(ImagenetCGN(**TINY, truncation=0.4)).eval()
    spec = model.export_spec()
    side = ex.sidecar_for(model, "aoti", spec=spec, aoti=ex.aoti_fields("float32", "cpu"))
    assert side["truncation"] == 0.4 and side["class_input"] == "ids" and side["precision"] == "float32"
    mechs, example = ex._aoti_mechanisms(spec, "float32", torch.device("cpu"))
    meta = {"weights_sha256": side["weights_sha256"], "mechanism": "texture", "format_version": 1,
            **spec.file_meta, **ex.aoti_fields("float32", "cpu")}
    p = tmp_path / side["files"]["texture"]
    ex._aoti_package(mechs["texture"].eval(), example, meta, p)
    assert [f.name for f in tmp_path.iterdir()] == ["texture.pt2"]  # no temporary left behind
    net = ex.load_aoti_file(p, "texture", side)
    assert net.metadata["pycgn.truncation"] == "0.4"
    for n in (1, 3):
        g = torch.Generator().manual_seed(n)
        u = torch.randn(n, model.latent_dim, generator=g).clamp(-2, 2) * 0.4
        y = torch.randint(0, model.n_classes, (n,), generator=g)
        with torch.inference_mode():
            torch.testing.assert_close(net(u, y), spec.mechanisms["texture"](u, y), atol=1e-4, rtol=0)
    with pytest.raises(ex.ExportError, match=r"texture\.pt2: holds the 'texture' generator, expected 'shape'"):
        ex.load_aoti_file(p, "shape", side)


def test_aoti_export_of_a_periodic_background_net(tmp_path):
    """The background net without position-dependent weights (circular padding as slices, the waves'
    sin/cos and matmul) compiles and computes the raw net; the other two nets are the published ones."""
    _skip_without_compiler()
    model = random_mnist(41, bg_net="periodic")
    spec = model.export_spec()
    side = ex.sidecar_for(model, "aoti", spec=spec, aoti=ex.aoti_fields("float32", "cpu"))
    mechs, example = ex._aoti_mechanisms(spec, "float32", torch.device("cpu"))
    meta = {"weights_sha256": side["weights_sha256"], "mechanism": "background", "format_version": 1,
            **spec.file_meta, **ex.aoti_fields("float32", "cpu")}
    p = tmp_path / side["files"]["background"]
    ex._aoti_package(mechs["background"].eval(), example, meta, p)
    net = ex.load_aoti_file(p, "background", side)
    for n in (1, 7, 64):
        u, y = _inputs(n, n, model)
        with torch.inference_mode():
            want = model.mechanisms()["background"](u, y)
            torch.testing.assert_close(net(u, y), want, atol=1e-4, rtol=0)
    assert want.std() > 0.01


# --- the aoti backend -------------------------------------------------------------------------

def test_aoti_backend_argument_errors():
    model = random_mnist(5)
    with pytest.raises(ValueError, match="'float16' needs a CUDA device"):
        runtime.make_runner(model, backend="aoti", precision="float16")
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, float16"):
        runtime.make_runner(model, backend="aoti", precision="half")
    assert not runtime.aoti_cached(model)  # nothing was compiled on the way


@pytest.fixture(scope="session")
def aoti_bf16(aoti_model, tmp_path_factory):
    """The bfloat16 packages of ``aoti_model``, compiled once per session into the session's cache."""
    _skip_without_compiler()
    return _in_session_cache(tmp_path_factory,
                             lambda: runtime.cached_export(aoti_model, "aoti", precision="bfloat16"))


def _max_diff(runner, model, n=64, seed=3):
    u, y = _inputs(n, seed, model)
    got = runner(u, y, u, y, u, y)
    with torch.inference_mode():
        want = model(u, y, u, y, u, y)
    assert all(g.dtype == torch.float32 and g.shape == w.shape for g, w in zip(got, want))
    return max((g - w).abs().max().item() for g, w in zip(got, want))


def test_aoti_runner_loads_the_cached_packages(aoti_f32, aoti_model):
    stamp = {p.name: p.stat().st_mtime_ns for p in aoti_f32.iterdir()}
    runner = runtime.make_runner(aoti_model, backend="aoti")
    assert runner.name == "aoti" and runner.precision == "float32" and runner.providers == ["aoti-cpu-float32"]
    assert {p.parent for p in runner.paths.values()} == {aoti_f32}
    assert {p.name: p.stat().st_mtime_ns for p in aoti_f32.iterdir()} == stamp  # loaded, not compiled again
    assert _max_diff(runner, aoti_model) <= 1e-4
    e = runner(*[t[:0] for t in (*_inputs(1, 0, aoti_model),) * 3])  # an empty batch, like every runner
    assert [t.shape[0] for t in e] == [0, 0, 0]
    # auto considers aoti because its packages are cached, and times it against the others
    auto = runtime.make_runner(aoti_model, backend="auto")
    assert "aoti" in auto.candidates
    assert _max_diff(auto, aoti_model, n=16) <= 1e-4 and auto.name in auto.candidates
    other = random_mnist(778)  # nothing cached for these weights: auto leaves aoti out, compiles nothing
    assert "aoti" not in getattr(runtime.make_runner(other, backend="auto"), "candidates", {})
    assert not runtime.aoti_cached(other)


def test_aoti_bfloat16_runner(aoti_bf16, aoti_model):
    """bfloat16 keeps 8 bits of mantissa: outputs within a documented tolerance of float32 (0.25, the
    runner's load-time parity bound; 0.11 measured on the mask), images within a few uint8 levels."""
    import pycgn
    runner = runtime.make_runner(aoti_model, backend="aoti", precision="bfloat16")
    assert runner.precision == "bfloat16" and runner.providers == ["aoti-cpu-bfloat16"]
    assert {p.parent for p in runner.paths.values()} == {aoti_bf16}
    diff = _max_diff(runner, aoti_model, n=256)
    assert 0 < diff <= runtime.AOTI_PARITY_ATOL["bfloat16"], diff  # > 0: it did compute in bfloat16
    gen, low = pycgn.Generator(aoti_model, backend="torch"), pycgn.Generator(aoti_model, backend="torch")
    low._runner = runner  # Generator(..., precision=) is the precision setting of issue 17 item 3
    draw = gen.sampler(5).draw(range(300))
    levels = (gen.images(draw).int() - low.images(draw).int()).abs().float()
    assert levels.mean() < 1.0 and torch.quantile(levels.flatten(), 0.999) <= 8, (levels.mean(), levels.max())
    # a bfloat16 export is not a float32 one
    with pytest.raises(ex.ExportError, match="holds bfloat16 packages, float32 was asked for"):
        runtime.make_runner(aoti_model, backend="aoti", export_dir=aoti_bf16)


def test_synth_compiles_aoti_only_for_large_jobs(monkeypatch):
    from pycgn import synth as synth_mod
    import pycgn
    calls = []
    monkeypatch.setattr(runtime, "cached_export", lambda model, fmt, **kw: calls.append((fmt, kw)))
    gen = pycgn.Generator(random_mnist(6), backend="torch")
    assert not synth_mod._compile_aoti_if_repaid(gen, synth_mod.AOTI_MIN_IMAGES - 1) and calls == []
    if "aoti" in runtime.available_backends():
        assert synth_mod._compile_aoti_if_repaid(gen, synth_mod.AOTI_MIN_IMAGES)
        assert calls == [("aoti", {"precision": "float32", "device": gen.device})]
