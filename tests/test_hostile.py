"""Hostile and clumsy input to the Python API and the CLI: one regression test per case found.
Each must end in a clear error (one line and exit 2 in the CLI) or in the right result; nothing
that was not pycgn's is overwritten."""
import errno
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import pycgn
from pycgn import sheets
from pycgn.cli import main


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(3)
    return pycgn.save(pycgn.MnistCGN(), tmp_path_factory.mktemp("hostile") / "m.pt")


def cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.err.strip().splitlines()


def one_line_exit_2(capsys, words, *args):
    code, err = cli(capsys, *args)
    assert code == 2 and len(err) == 1 and words in err[0], (args, code, err)


def _no_temporaries(folder):
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_device_node_is_not_replaced(model_path, tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root (CI runs as root)")
    node = tmp_path / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a copy of /dev/null
    one_line_exit_2(capsys, "not a regular file", "generate", "--model", model_path, "-n", 1, "-o", node)
    assert stat.S_ISCHR(os.stat(node).st_mode), "the device node was replaced"
    _no_temporaries(tmp_path)


def test_fifo_socket_and_folder_are_not_replaced(model_path, tmp_path, capsys):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    one_line_exit_2(capsys, "not a regular file", "generate", "--model", model_path, "-n", 1, "-o", fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    one_line_exit_2(capsys, "is a directory", "grid", "--model", model_path, "-o", tmp_path)
    _no_temporaries(tmp_path)


def test_read_only_file_is_kept(model_path, tmp_path, capsys):
    out = tmp_path / "keep.png"
    out.write_bytes(b"mine")
    out.chmod(0o444)
    one_line_exit_2(capsys, "read-only", "generate", "--model", model_path, "-n", 1, "-o", out)
    assert out.read_bytes() == b"mine" and stat.S_IMODE(os.stat(out).st_mode) == 0o444
    with pytest.raises(PermissionError, match="read-only"):  # the library path too, as root
        sheets.save_image(np.zeros((4, 4, 3), np.uint8), out)


def test_writable_file_is_replaced_with_the_usual_mode(model_path, tmp_path, capsys):
    out = tmp_path / "old.png"
    out.write_bytes(b"old")
    code, err = cli(capsys, "generate", "--model", model_path, "-n", 1, "-o", out)
    assert code == 0, err
    assert Image.open(out).format == "PNG"


def test_jpeg_name_gets_jpeg_bytes_and_unknown_types_are_refused(model_path, tmp_path, capsys):
    for name in ("x.jpg", "x.JPEG"):
        code, err = cli(capsys, "generate", "--model", model_path, "-n", 4, "-o", tmp_path / name)
        assert code == 0, err
        assert (tmp_path / name).read_bytes()[:3] == b"\xff\xd8\xff", "not JPEG bytes"
    one_line_exit_2(capsys, "unknown image type '.gif'", "generate", "--model", model_path, "-o", tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()


@pytest.mark.parametrize("args, words", [
    (["--scale", "72057594037927936"], "the sheet"),
    (["--scale", "9223372036854775807"], "the sheet"),
    (["--scale", "100000"], "the sheet"),
    (["--scale", "0"], "scale must be >= 1"),
    (["--cols", "4611686018427387904"], "the sheet"),
    (["--cols", "-3"], "cols must be >= 1"),
    (["--shape", "99999999999999999999"], "shape has class id 99999999999999999999"),
    (["--texture", "-1"], "texture has class id -1"),
    (["--device", "meta"], "device must be"),
    (["-n", "1000000000000"], "the output needs"),
])
def test_huge_and_odd_numbers(model_path, tmp_path, capsys, args, words):
    one_line_exit_2(capsys, words, "generate", "--model", model_path, "-n", 2, *args, "-o", tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_one_line_and_leaves_nothing(model_path, tmp_path, capsys, monkeypatch):
    def full(self, fp, format=None, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", full)
    one_line_exit_2(capsys, "No space left on device", "generate", "--model", model_path, "-n", 1,
                    "-o", tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_generate_runs_in_bounded_batches(model_path):
    gen = pycgn.Generator(model_path, backend="torch", device="cpu")
    seen = []
    run = gen._runner

    def spy(*inputs):
        seen.append(inputs[0].shape[0])
        return run(*inputs)
    gen._runner = spy
    texture = [1, 2, 3, 4, 5, 6, 7] * 100
    many = gen.generate(n=700, seed=4, texture=texture)
    assert max(seen) <= 256 and sum(seen) == 700, seen
    gen._runner = run
    # the batching changes nothing: any slice equals the same samples drawn on their own
    alone = gen.generate(n=7, seed=4, texture=texture[300:307], start=300)
    assert np.array_equal(many[300:307], alone)
    parts = gen.generate(n=300, seed=4, return_parts=True)
    assert len(parts) == 300 and parts.mask.shape == (300, 1, 32, 32)
    assert np.array_equal(parts.images, gen.generate(n=300, seed=4))


def test_an_output_too_large_for_memory_is_refused_up_front(model_path):
    with pytest.raises(ValueError, match=r"n=1000000000: the output needs 2\.8 TiB, more than"):
        pycgn.generate(n=10**9, model=model_path, backend="torch")


def test_sheets_run_in_bounded_batches(model_path, monkeypatch):
    gen = pycgn.Generator(model_path, backend="torch", device="cpu")
    monkeypatch.setattr(pycgn.api, "BATCH_PIXELS", 5 * 32 * 32)  # 5 images a batch
    seen = []
    run = gen._runner
    gen._runner = lambda *inputs: seen.append(inputs[0].shape[0]) or run(*inputs)
    monkeypatch.setattr(pycgn.api, "get_generator", lambda *a, **k: gen)
    monkeypatch.setattr(sheets, "get_generator", lambda *a, **k: gen)
    small = sheets.grid(row_classes=[1, 2, 3], col_classes=[4, 5, 6, 7], texture=2, seed=1, labels=False)
    assert max(seen) <= 5 and sum(seen) == 12, seen
    monkeypatch.setattr(pycgn.api, "BATCH_PIXELS", 10**6)
    assert np.array_equal(small, sheets.grid(row_classes=[1, 2, 3], col_classes=[4, 5, 6, 7], texture=2, seed=1,
                                             labels=False)), "batching changed the sheet"
    few = sheets.interpolate("texture", start=1, end=7, steps=4, rows=6, seed=2, labels=False)
    monkeypatch.setattr(pycgn.api, "BATCH_PIXELS", 8 * 32 * 32)  # two rows of 4 steps a pass
    assert np.array_equal(few, sheets.interpolate("texture", start=1, end=7, steps=4, rows=6, seed=2, labels=False))
