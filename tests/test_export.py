"""pycgn.export: ONNX and TorchScript files, their sidecar, and the checks that read them back."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import pycgn
import importlib

ex = importlib.import_module("pycgn.export")  # the module, even if pycgn re-exports a function named export
from pycgn.checkpoint import weights_sha256
from conftest import published, random_mnist as _random_model

onnx = pytest.importorskip("onnx", reason="onnx is a pycgn dependency; this environment lacks it")
# the formats exported in seconds; aoti compiles for minutes and has its own, slow, tests/test_aoti.py
QUICK_FORMATS = ("onnx", "torchscript")


@pytest.fixture(scope="module")
def model():
    return _random_model(4321)


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """One export per format, shared by the module (the ONNX exporter takes seconds per net)."""
    root = tmp_path_factory.mktemp("exports")
    return {fmt: ex.export(model, root / fmt, format=fmt) for fmt in QUICK_FORMATS}


def _inputs(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 32, generator=g) * 1.5, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("fmt", QUICK_FORMATS)
def test_sidecar_content(exports, model, fmt):
    d = exports[fmt]
    side = json.loads((d / ex.SIDECAR).read_text())
    keys = ["format", "format_version", "runtime", "kind", "variant", "weights_sha256", "pycgn_version",
            "image_size", "latent_dim", "n_classes", "class_names", "max_offset", "cpu_chunk", "nets", "clamp"]
    keys += ["opset"] if fmt == "onnx" else []
    assert list(side) == keys + ["files", "inputs", "outputs"]
    assert side["format"] == "pycgn-export" and side["format_version"] == 1 and side["runtime"] == fmt
    assert side["kind"] == "mnist_cgn" and side["variant"] == "custom"
    assert side["weights_sha256"] == weights_sha256(model.state_dict())
    assert side["pycgn_version"] == pycgn.__version__
    assert (side["image_size"], side["latent_dim"], side["n_classes"], side["max_offset"]) == (32, 32, 10, 32)
    assert side["class_names"] == [str(i) for i in range(10)] and side["clamp"] == [0.0001, 0.9999]
    assert side["nets"] == "folded"  # the inference form of the nets (pycgn.models.mnist)
    assert side["cpu_chunk"] == model.cpu_chunk == 64  # the batch the CPU runners compute in
    if fmt == "onnx":
        assert side["opset"] == 20
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    assert side["files"] == {m: m + suffix for m in ("shape", "texture", "background")}
    assert side["inputs"] == [{"name": "u", "shape": ["batch", 32], "dtype": "float32"},
                              {"name": "y", "shape": ["batch"], "dtype": "int64"}]
    assert side["outputs"] == {
        "shape": {"name": "mask", "shape": ["batch", 1, 32, 32], "dtype": "float32"},
        "texture": {"name": "foreground", "shape": ["batch", 3, 32, 32], "dtype": "float32"},
        "background": {"name": "background", "shape": ["batch", 3, 32, 32], "dtype": "float32"}}
    assert sorted(p.name for p in d.iterdir()) == sorted([ex.SIDECAR, *side["files"].values()]), \
        "temporary files left behind"


def test_onnx_passes_full_checker_with_dynamic_batch(exports):
    for m in ex.MECHANISMS:
        proto = onnx.load(str(exports["onnx"] / f"{m}.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        assert {o.domain: o.version for o in proto.opset_import}[""] == 20
        dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in (*proto.graph.input, *proto.graph.output)]
        c = 1 if m == "shape" else 3
        assert dims == [["batch", 32], ["batch"], ["batch", c, 32, 32]]


@pytest.mark.parametrize("n", [1, 7, 64])
def test_onnx_matches_eager(exports, model, n):
    ort = pytest.importorskip("onnxruntime")
    u, y = _inputs(n, n)
    for m, mech in model.mechanisms().items():
        sess = ort.InferenceSession(str(exports["onnx"] / f"{m}.onnx"), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"u": u.numpy(), "y": y.numpy()})
        with torch.no_grad():
            want = mech(u, y)
        assert want.std() > 0.01
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=0)


def test_torchscript_loads_in_a_fresh_process(exports, model, tmp_path):
    out = tmp_path / "out.pt"
    code = (
        "import sys, torch\n"
        "d, out = sys.argv[1], sys.argv[2]\n"
        "g = torch.Generator().manual_seed(5)\n"
        "res = {}\n"
        "for n in (1, 7, 64):\n"
        "    u, y = torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g)\n"
        "    for m in ('shape', 'texture', 'background'):\n"
        "        net = torch.jit.load(f'{d}/{m}.torchscript.pt')\n"
        "        res[(n, m)] = (u, y, net(u, y))\n"
        "torch.save(res, out)\n")
    r = subprocess.run([sys.executable, "-c", code, str(exports["torchscript"]), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    mechs = model.mechanisms()
    for (n, m), (u, y, got) in torch.load(out).items():
        with torch.no_grad():
            want = mechs[m](u, y)
        assert got.shape[0] == n
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_read_sidecar_accepts_the_exports(exports, model):
    sha = weights_sha256(model.state_dict())
    for fmt, d in exports.items():
        side = ex.read_sidecar(d, fmt, sha)
        for m, p in side["paths"].items():
            if fmt == "onnx":
                ex.check_onnx_file(p, m, side)
            else:
                ex.load_torchscript_file(p, m, side)


def test_export_from_published_checkpoint(tmp_path):
    path = published("wildlife_mnist")
    d = ex.export(path, tmp_path / "ts", format="torchscript")
    side = json.loads((d / ex.SIDECAR).read_text())
    m = pycgn.load(path)
    assert side["variant"] == "wildlife_mnist" and side["weights_sha256"] == m.info.sha256
    net = torch.jit.load(str(d / "texture.torchscript.pt"))
    u, y = _inputs(5, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(u, y), m.texture(u, y), atol=1e-4, rtol=0)


# --- errors name the file ---------------------------------------------------------------------

def _copy(exports, fmt, tmp_path):
    return shutil.copytree(exports[fmt], tmp_path / fmt)


def _edit_sidecar(d, **changes):
    p = d / ex.SIDECAR
    side = json.loads(p.read_text())
    side.update(changes)
    p.write_text(json.dumps(side))
    return p


def test_missing_folder_and_missing_file(exports, tmp_path):
    with pytest.raises(ex.ExportError, match="pycgn_export.json: missing"):
        ex.read_sidecar(tmp_path / "nothing")
    d = _copy(exports, "onnx", tmp_path)
    (d / "texture.onnx").unlink()
    with pytest.raises(ex.ExportError, match=r"texture\.onnx: missing"):
        ex.read_sidecar(d)


@pytest.mark.parametrize("change, words", [
    (dict(opset=17), "opset 17"),
    (dict(format_version=2), "format_version 2"),
    (dict(format="other"), "not a pycgn export"),
    (dict(kind="imagenet_cgn"), "model kind"),
    (dict(inputs=[{"name": "latent"}, {"name": "y"}]), r"inputs \['latent', 'y'\]"),
    (dict(outputs={"shape": {"name": "m"}}), "output of shape named 'm'"),
    (dict(files={"shape": "../shape.onnx", "texture": "t", "background": "b"}), "files.shape"),
])
def test_incompatible_sidecar(exports, tmp_path, change, words):
    d = _copy(exports, "onnx", tmp_path)
    p = _edit_sidecar(d, **change)
    with pytest.raises(ex.ExportError, match=words) as e:
        ex.read_sidecar(d)
    assert str(p) in str(e.value)


def test_corrupt_sidecar_and_wrong_runtime_and_weights(exports, tmp_path):
    d = _copy(exports, "torchscript", tmp_path)
    with pytest.raises(ex.ExportError, match="a onnx export was asked for|an onnx export"):
        ex.read_sidecar(d, "onnx")
    with pytest.raises(ex.ExportError, match="not from the model's weights"):
        ex.read_sidecar(d, "torchscript", "0" * 64)
    (d / ex.SIDECAR).write_text('{"format": "pycgn-exp')
    with pytest.raises(ex.ExportError, match="not a readable pycgn export sidecar"):
        ex.read_sidecar(d)


def test_corrupt_and_foreign_onnx_files(exports, tmp_path):
    d = _copy(exports, "onnx", tmp_path)
    side = ex.read_sidecar(d)
    data = (d / "shape.onnx").read_bytes()
    (d / "shape.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ex.ExportError, match=r"shape\.onnx: not a readable ONNX model"):
        ex.check_onnx_file(d / "shape.onnx", "shape", side)
    shutil.copy(d / "texture.onnx", d / "background.onnx")
    with pytest.raises(ex.ExportError, match=r"background\.onnx: holds the 'texture' generator"):
        ex.check_onnx_file(d / "background.onnx", "background", side)
    side["weights_sha256"] = "f" * 64
    with pytest.raises(ex.ExportError, match=r"texture\.onnx: exported from weights"):
        ex.check_onnx_file(d / "texture.onnx", "texture", side)
    side["weights_sha256"] = ex.read_sidecar(d)["weights_sha256"]
    side["opset"] = 18
    with pytest.raises(ex.ExportError, match=r"texture\.onnx: ONNX opset 20, the sidecar says 18"):
        ex.check_onnx_file(d / "texture.onnx", "texture", side)


def test_onnx_file_with_renamed_input(exports, tmp_path):
    d = _copy(exports, "onnx", tmp_path)
    side = ex.read_sidecar(d)
    proto = onnx.load(str(d / "shape.onnx"))
    proto.graph.input[0].name = "z"
    for node in proto.graph.node:
        node.input[:] = ["z" if i == "u" else i for i in node.input]
    onnx.save(proto, str(d / "shape.onnx"))
    with pytest.raises(ex.ExportError, match=r"shape\.onnx: inputs \[\('z', 'FLOAT'\)"):
        ex.check_onnx_file(d / "shape.onnx", "shape", side)


def test_corrupt_and_foreign_torchscript_files(exports, tmp_path):
    d = _copy(exports, "torchscript", tmp_path)
    side = ex.read_sidecar(d)
    data = (d / "shape.torchscript.pt").read_bytes()
    (d / "shape.torchscript.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ex.ExportError, match=r"shape\.torchscript\.pt: not a loadable TorchScript"):
        ex.load_torchscript_file(d / "shape.torchscript.pt", "shape", side)
    shutil.copy(d / "background.torchscript.pt", d / "texture.torchscript.pt")
    with pytest.raises(ex.ExportError, match=r"texture\.torchscript\.pt: holds the 'background' generator"):
        ex.load_torchscript_file(d / "texture.torchscript.pt", "texture", side)
    assert issubclass(ex.ExportError, pycgn.CheckpointError)


def test_export_argument_errors(model, tmp_path):
    with pytest.raises(ValueError, match="format must be one of onnx, torchscript"):
        ex.export(model, tmp_path, format="tflite")
    with pytest.raises(TypeError, match="model must be an MnistCGN"):
        ex.export(object(), tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        ex.export(model, tmp_path / "file", format="torchscript")
    with pytest.raises(TypeError, match="out_dir must be a path"):
        ex.export(model, 3)


# --- command line -----------------------------------------------------------------------------

def _cli(*args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "pycgn", "export", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def test_cli_export_writes_and_reports(tmp_path):
    path = pycgn.save(_random_model(9), tmp_path / "m.pt")
    r = _cli("--model", path, "--format", "torchscript", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert [os.path.basename(x) for x in lines] == ["shape.torchscript.pt", "texture.torchscript.pt",
                                                   "background.torchscript.pt", "pycgn_export.json"]
    side = ex.read_sidecar(tmp_path / "out", "torchscript")
    assert side["weights_sha256"] == pycgn.load(path).info.sha256


@pytest.mark.parametrize("args, words", [
    (("--model", "missing.pt", "--out", "OUT"), "missing.pt: no such file"),
    (("--model", "M", "--format", "tflite", "--out", "OUT"), "invalid choice: 'tflite'"),
    (("--model", "M", "--format", "aoti", "--precision", "float16", "--out", "OUT"), "'float16' needs a CUDA device"),
    (("--model", "M", "--out", "FILE"), "not a folder"),
    (("--model", "M",), "the following arguments are required: --out"),
])
def test_cli_export_errors(tmp_path, args, words):
    path = pycgn.save(_random_model(10), tmp_path / "m.pt")
    (tmp_path / "f").write_text("x")
    subst = {"M": path, "OUT": tmp_path / "o", "FILE": tmp_path / "f"}
    r = _cli(*[subst.get(a, a) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr
    assert "Traceback" not in r.stderr
