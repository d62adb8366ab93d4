import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import pycgn


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(1)
    m = pycgn.MnistCGN()
    return pycgn.save(m, tmp_path_factory.mktemp("cli") / "m.pt")


def run(*args):
    return subprocess.run([sys.executable, "-m", "pycgn", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_generate_writes_grid_png(model_path, tmp_path):
    out = tmp_path / "out.png"
    r = run("generate", "--model", model_path, "--shape", "3", "--texture", "7", "--bg", "1", "-n", "16",
            "--seed", "5", "--scale", "1", "-o", out)
    assert r.returncode == 0, r.stderr
    img = np.asarray(Image.open(out))
    assert img.shape == (4 * 34 + 2, 4 * 34 + 2, 3)
    same = pycgn.generate(shape=3, texture=7, bg=1, n=16, seed=5, model=model_path, backend="torch")
    assert np.abs(img[2:34, 2:34].astype(int) - same[0].astype(int)).max() <= 1
    assert list(tmp_path.iterdir()) == [out], "temporary files left behind"


def test_grid_and_interpolate_and_info(model_path, tmp_path):
    for labels in ([], ["--no-labels"]):
        r = run("grid", "--model", model_path, "--rows", "texture", "--cols", "shape", "--row-classes", "1,2",
                "--scale", "1", *labels, "-o", tmp_path / f"g{len(labels)}.png")
        assert r.returncode == 0, r.stderr
        r = run("interpolate", "--model", model_path, "--start", "0", "--end", "9", "--steps", "3", "--rows", "1",
                "--scale", "1", *labels, "-o", tmp_path / f"i{len(labels)}.png")
        assert r.returncode == 0, r.stderr
    grid, plain = (np.asarray(Image.open(tmp_path / f"g{k}.png")) for k in (0, 1))
    assert plain.shape == (2 * 34 + 2, 10 * 34 + 2, 3)
    top, left = grid.shape[0] - plain.shape[0], grid.shape[1] - plain.shape[1]
    assert top > 0 and left > 0 and np.array_equal(grid[top:, left:], plain)  # class names above and left
    interp, plain = (np.asarray(Image.open(tmp_path / f"i{k}.png")) for k in (0, 1))
    assert plain.shape == (36, 3 * 34 + 2, 3)
    top = interp.shape[0] - plain.shape[0]
    assert top > 0 and interp.shape[1] == plain.shape[1] and np.array_equal(interp[top:], plain)
    r = run("info")
    assert r.returncode == 0 and "backends:" in r.stdout and "precision bfloat16: torch" in r.stdout
    assert "CPU bfloat16: " in r.stdout
    # a fresh process must load the extension (it links libtorch, which torch must load first)
    assert "extension: loaded; CPU kernels: yes" in r.stdout, r.stdout


@pytest.mark.parametrize("args, words", [
    (["generate", "--model", "nosuchmodel", "-o", "{tmp}/x.png"], "model must be one of"),
    (["generate", "--shape", "12", "-o", "{tmp}/x.png"], "shape has class id 12"),
    (["generate", "--texture", "purple", "-o", "{tmp}/x.png"], "unknown class 'purple'"),
    (["generate", "-o", "{tmp}/no/such/dir/x.png"], "does not exist"),
    (["generate", "-n", "0", "-o", "{tmp}/x.png"], "-n must be >= 1"),
    (["generate", "-o", "{tmp}"], "is a directory"),
    (["generate", "--precision", "float64", "-o", "{tmp}/x.png"], "argument --precision: invalid choice: 'float64'"),
    (["generate", "--precision", "float16", "--device", "cpu", "-o", "{tmp}/x.png"],
     "precision 'float16' needs a CUDA device"),
    (["generate", "--backend", "onnxruntime", "--precision", "bfloat16", "-o", "{tmp}/x.png"],
     "backend 'onnxruntime' computes in float32 only, precision 'bfloat16'"),
    (["synth", "--n", "2", "--precision", "half", "--out", "{tmp}/s"], "argument --precision: invalid choice: 'half'"),
])
def test_bad_arguments_exit_2_with_one_line(model_path, tmp_path, args, words):
    args = [a.format(tmp=tmp_path) for a in args]
    if "--model" not in args:
        args += ["--model", str(model_path)]
    r = run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not (tmp_path / "x.png").exists()


def test_unwritable_output(model_path, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write into a read-only folder, so the error cannot be provoked as root")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = run("generate", "--model", model_path, "-o", ro / "x.png")
    assert r.returncode == 2 and "not writable" in r.stderr


def test_help_for_each_command():
    for cmd in ("generate", "grid", "interpolate", "info"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "usage: pycgn " + cmd in r.stdout


@pytest.mark.parametrize("cmd", ["generate", "grid", "synth"])
def test_backend_help_names_every_backend(cmd):
    from pycgn.runtime import BACKENDS
    r = subprocess.run([sys.executable, "-m", "pycgn", cmd, "--help"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0
    help_line = next(line for line in r.stdout.splitlines() if line.strip().startswith("--backend BACKEND"))
    assert [b for b in BACKENDS if b not in help_line] == []


def _subcommands():
    from pycgn.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)


# One bad-value case per subcommand, beyond argparse's own errors: each must end in one line, exit 2.
BAD_VALUE = {
    "generate": (["--model", "nosuchmodel", "-o", "{tmp}/x.png"], "model must be one of"),
    "grid": (["--rows", "shape", "--cols", "bg", "--row-classes", "42", "-o", "{tmp}/x.png"], "class id 42"),
    "interpolate": (["--start", "0", "--end", "12", "-o", "{tmp}/x.png"], "end has class id 12"),
    "info": (["--json", "extra"], "unrecognized arguments"),
    "export": (["--model", "nosuchmodel", "--out", "{tmp}/e"], "model must be one of"),
    "synth": (["--model", "nosuchmodel", "--n", "4", "--out", "{tmp}/s"], "model must be one of"),
    "train": (["--variant", "colored_mnist", "--out", "{tmp}/t", "--epochs", "0"], "--epochs must be >= 1"),
    "evaluate": (["invariance", "--model", "nosuchmodel"], "model must be one of"),
    "cache": (["--clear", "now"], "unrecognized arguments"),
    "explore": (["--port", "70000"], "--port must be in 0..65535"),
    "benchmark": (["make", "--out", "{tmp}/b", "--split", "train:10:texture=agree:1.5"],
                  "--split train.texture: p must be in [0, 1]"),
}


def test_every_subcommand_has_a_bad_value_case():
    assert _subcommands() == sorted(BAD_VALUE)


@pytest.mark.parametrize("cmd", sorted(BAD_VALUE))
def test_every_subcommand_reports_errors_in_one_line(cmd, tmp_path, capsys):
    from pycgn.cli import main
    for args, words in ((["--no-such-option"], "error: "), BAD_VALUE[cmd]):
        args = [cmd, *(a.format(tmp=tmp_path) for a in args)]
        try:
            code = main(args)
        except SystemExit as e:  # argparse's errors
            code = e.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(err) == 1 and words in err[0] and err[0].startswith(f"pycgn {cmd}"), (args, err)


def test_status_messages_cache_listing_and_clearing(model_path, tmp_path):
    env = {**os.environ, "PYCGN_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYCGN_QUIET", None)

    def pycgn_cli(*args):
        return subprocess.run([sys.executable, "-m", "pycgn", *map(str, args)], capture_output=True, text=True,
                              timeout=300, env=env)
    r = pycgn_cli("generate", "--model", model_path, "-n", 2, "--backend", "onnxruntime", "--quiet",
                  "-o", tmp_path / "a.png")
    assert r.returncode == 0 and r.stderr == "", r.stderr  # --quiet: no status lines
    r = pycgn_cli("cache")
    assert r.returncode == 0 and "1 entry" in r.stdout and "onnx export" in r.stdout, r.stdout
    r = pycgn_cli("cache", "--clear")
    assert r.returncode == 0 and "cleared" in r.stdout
    assert list((tmp_path / "cache").iterdir()) == []
    r = pycgn_cli("generate", "--model", model_path, "-n", 2, "-o", tmp_path / "b.png")
    assert r.returncode == 0, r.stderr
    assert "pycgn: exporting the model's nets to onnx" in r.stderr, r.stderr
    assert "pycgn: backend auto: timing" in r.stderr, r.stderr
    r = pycgn_cli("info")
    # on the CPU the MNIST nets run in chunks of 64 (MnistCGN.cpu_chunk): one batch class
    assert f"cache: {tmp_path / 'cache'}" in r.stdout and "backend auto chose: batch <= 64:" in r.stdout, r.stdout


def test_synth_records_the_precision_and_refuses_another_on_resume(model_path, tmp_path, capsys):
    from pycgn.cli import main
    out = tmp_path / "ds"
    base = ["synth", "--model", str(model_path), "--n", "6", "--shard-size", "3", "--out", str(out), "--quiet",
            "--device", "cpu"]
    assert main(base + ["--backend", "torch", "--precision", "bfloat16"]) == 0
    import json
    man = json.loads((out / "manifest.json").read_text())
    assert man["precision"] == "bfloat16" and man["backend"] == "torch" and "--precision bfloat16" in man["command"]
    capsys.readouterr()
    assert main(base + ["--backend", "torch"]) == 2  # float32 now: another dataset
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precision 'bfloat16' there, 'float32' here" in err[0]
    # the deprecated name stands for the same setting: it resumes the same dataset
    assert main(base + ["--backend", "torch-bf16"]) == 0
    assert json.loads((out / "manifest.json").read_text())["shards"] == man["shards"]
