"""cgn_generate (the C++ command line tool, cpp/cgn_generate.cpp) against hostile input.

Integer arguments out of range or overflowing the grid's size, export sidecars with fields of
the wrong type or range, and output paths naming a device, FIFO, socket, directory or a
read-only file: each must give exit status 2 and one line on stderr naming the problem, and
leave the filesystem as it was. Runs the built binary: $PYCGN_CGN_GENERATE (set by ctest) or
build/cmake/cpp/cgn_generate (tools/cpp_check.sh); skipped when neither exists.
"""
import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def _binary():
    env = os.environ.get("PYCGN_CGN_GENERATE")
    if env:
        return Path(env)  # named explicitly: a missing file fails the tests instead of skipping them
    p = ROOT / "build" / "cmake" / "cpp" / "cgn_generate"
    return p if p.is_file() else None


EXE = _binary()
pytestmark = pytest.mark.skipif(
    EXE is None, reason="cgn_generate is not built: tools/cpp_check.sh builds it into build/cmake "
                        "(or set PYCGN_CGN_GENERATE to a binary)")
FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run(*args, timeout=120):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          errors="replace")


def refused(r, *needles):
    """Exit 2 with exactly one line on stderr that holds every needle."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    import torch

    import pycgn
    import pycgn.export
    torch.manual_seed(0)
    return pycgn.export.export(pycgn.MnistCGN().eval(), tmp_path_factory.mktemp("export") / "exp",
                               format="torchscript")


@pytest.fixture(scope="module")
def sidecar(export_dir):
    return json.loads((Path(export_dir) / "pycgn_export.json").read_text())


# -- integer arguments and the grid's size ------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["-n", 1, "--scale", 72057594037927936], ["--scale must be <= 2147483647"]),
    (["-n", 1, "--scale", 9223372036854775807], ["--scale must be <= 2147483647"]),
    (["--scale", 2 ** 64], ["--scale must be an integer in 1..2147483647"]),
    (["--scale", 0], ["--scale must be >= 1"]),
    (["--scale", " 4"], ["--scale must be an integer"]),
    (["--cols", 10 ** 30], ["--cols must be an integer in 0..2147483647"]),
    (["--cols", -1], ["--cols must be >= 0"]),
    (["-n", -1], ["-n must be >= 1"]),
    (["-n", "0x10"], ["-n must be an integer"]),
    (["--start", -5], ["--start must be >= 0"]),
    (["--seed", 2 ** 64], ["--seed must be an integer in 0..2**64-1"]),
    (["--seed", "+1"], ["--seed must be an integer"]),
    (["-n", 4, "--start", 2 ** 63 - 2], ["--start 9223372036854775806 with n=4", "beyond 2**63-1"]),
    (["--shape", 10 ** 20], ["--shape has class '100000000000000000000'"]),
    (["--bg", "1,-1"], ["--bg has class '-1'"]),
])
def test_integer_arguments_out_of_range(export_dir, tmp_path, args, needles):
    out = tmp_path / "out.png"
    refused(run("--model-dir", export_dir, "-o", out, *args), *needles)
    assert not out.exists()


@pytest.mark.parametrize("args, needles", [
    # Used to segfault (the sheet's size overflowed) or write a PNG of "-28 x -28".
    (["-n", 1, "--scale", 2 ** 31 - 1], ["-n 1 --cols 1 --scale 2147483647 with 32 px images make a grid of",
                                          "68719476708 x 68719476708 px"]),
    (["-n", 1, "--cols", 2 ** 31 - 1], ["--cols 2147483647", "279172874112 x 132 px"]),
    (["-n", 3, "--scale", 2000], ["-n 3 --cols 2 --scale 2000", "128006 x 128006 px",
                                  "the limit is 2147483647 px per side and 4294967296 bytes"]),
    (["-n", 2 ** 31 - 1], ["-n 2147483647 needs", "bytes for the images and their inputs"]),
])
def test_grid_beyond_the_limits_is_refused_with_its_size(export_dir, tmp_path, args, needles):
    out = tmp_path / "out.png"
    refused(run("--model-dir", export_dir, "-o", out, *args), *needles)
    assert os.listdir(tmp_path) == []  # no temporary file left either


def test_grid_size_and_layout(export_dir, tmp_path):
    from PIL import Image
    out = tmp_path / "out.png"
    r = run("--model-dir", export_dir, "-o", out, "-n", 3, "--cols", 5, "--scale", 3, "--seed", 9)
    assert r.returncode == 0, r.stderr
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert sheet.shape == (1 * (96 + 2) + 2, 5 * (96 + 2) + 2, 3)
    # The images sit at x = 2 + c * 98; padding and the two empty cells stay white.
    assert (sheet[:2] == 255).all() and (sheet[:, 2 + 3 * 98:] == 255).all()
    first = sheet[2:98, 2:98]
    assert np.ptp(first) > 0
    assert (first[0::3] == first[1::3]).all() and (first[:, 0::3] == first[:, 2::3]).all()  # scale 3


@given(flag=st.sampled_from(["-n", "--cols", "--scale", "--start", "--seed"]),
       value=st.one_of(st.integers(-2 ** 70, 2 ** 70), st.integers(-3, 40).map(str),
                       st.text(max_size=30).filter(lambda s: "\x00" not in s)))
@FUZZ
def test_any_integer_argument_gives_one_line(tmp_path_factory, flag, value):
    # Output is a FIFO: every argument that parses is stopped there, before the model loads.
    folder = tmp_path_factory.mktemp("fifo")
    fifo = folder / "out.png"
    os.mkfifo(fifo)
    line = refused(run("--model-dir", folder, "-o", fifo, flag, value, timeout=60))
    assert flag in line or "is a FIFO" in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# -- the output path -----------------------------------------------------------------------------

def _fifo(p):
    os.mkfifo(p)


def _device(p):
    try:
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a copy of /dev/null
    except PermissionError:
        pytest.skip("mknod of a character device needs CAP_MKNOD (root)")


def _socket(p):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()


def _dir(p):
    p.mkdir()


def _link_to_device(p):
    p.symlink_to("/dev/null")


@pytest.mark.parametrize("make, needle, kind", [
    (_fifo, "is a FIFO, not a regular file", stat.S_ISFIFO),
    (_device, "is a character device, not a regular file", stat.S_ISCHR),
    (_socket, "is a socket, not a regular file", stat.S_ISSOCK),
    (_dir, "is a directory", stat.S_ISDIR),
    (_link_to_device, "is a character device", stat.S_ISLNK),
])
def test_output_that_is_not_a_regular_file_is_left_alone(export_dir, tmp_path, make, needle, kind):
    folder = tmp_path / "d"
    folder.mkdir()
    out = folder / "out.png"
    make(out)
    refused(run("--model-dir", export_dir, "-o", out, "-n", 1), needle)
    assert kind(os.lstat(out).st_mode)  # still what it was
    assert os.listdir(folder) == ["out.png"]
    if kind is stat.S_ISLNK:
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_read_only_output_is_left_alone(export_dir, tmp_path):
    # Also as root, who may write anything: no write bit in the mode means the file stays.
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    out.chmod(0o444)
    refused(run("--model-dir", export_dir, "-o", out, "-n", 1), "is read-only (mode 0444)")
    assert out.read_bytes() == b"keep me" and stat.S_IMODE(os.stat(out).st_mode) == 0o444
    assert os.listdir(tmp_path) == ["out.png"]


def test_writable_output_is_replaced_keeping_its_mode(export_dir, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    out.chmod(0o640)
    r = run("--model-dir", export_dir, "-o", out, "-n", 1, "--scale", 1)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["out.png"]


def test_link_to_a_regular_file_replaces_the_link_not_its_target(export_dir, tmp_path):
    target = tmp_path / "target.txt"
    target.write_bytes(b"target")
    out = tmp_path / "out.png"
    out.symlink_to(target)
    r = run("--model-dir", export_dir, "-o", out, "-n", 1, "--scale", 1)
    assert r.returncode == 0, r.stderr
    assert not out.is_symlink() and out.read_bytes()[:4] == b"\x89PNG"
    assert target.read_bytes() == b"target"


# -- the export's sidecar ------------------------------------------------------------------------

def _with(side, path, value):
    side = json.loads(json.dumps(side))
    node = side
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return side


@pytest.mark.parametrize("path, value, needle", [
    (["n_classes"], -1, '"n_classes" is -1, expected 1..100000'),
    (["n_classes"], 2 ** 64 - 1, '"n_classes" is 18446744073709551615'),
    (["n_classes"], 10 ** 30, '"n_classes" has the wrong type'),
    (["n_classes"], "ten", '"n_classes" has the wrong type (string)'),
    (["n_classes"], 10.0, '"n_classes" has the wrong type (number)'),
    (["n_classes"], None, '"n_classes" has the wrong type (null)'),
    (["max_offset"], 2 ** 63 - 1, '"max_offset" is 9223372036854775807, expected 0..2147483647'),
    (["max_offset"], -1, '"max_offset" is -1'),
    (["cpu_chunk"], 0, '"cpu_chunk" is 0, expected 1..65536'),
    (["cpu_chunk"], 64.0, '"cpu_chunk" has the wrong type'),
    (["cpu_chunk"], "64", '"cpu_chunk" has the wrong type (string)'),
    (["image_size"], 0, '"image_size" is 0, expected 1..4096'),
    (["image_size"], 2 ** 31, '"image_size" is 2147483648'),
    (["latent_dim"], 2 ** 32, '"latent_dim" is 4294967296, expected 1..65536'),
    (["latent_dim"], True, '"latent_dim" has the wrong type (boolean)'),
    (["class_names"], "0123456789", '"class_names" has the wrong type (string)'),
    (["class_names"], [str(i) for i in range(5)], "class_names has 5 entries, n_classes is 10"),
    (["class_names", 4], 4, "class_names[4] must be"),
    (["class_names", 4], "", "class_names[4] must be"),
    (["clamp"], [0.9, 0.1], "clamp must be [lo, hi] with 0 <= lo <= hi <= 1"),
    (["clamp"], [0.0, 1e308], "clamp must be"),
    (["clamp"], [0.5], "clamp must be"),
    (["clamp"], None, "clamp must be"),
    (["variant"], "x\u001b[2J", '"variant" must be 1..128 bytes of text without control characters'),
    (["weights_sha256"], ["a"], '"weights_sha256" has the wrong type (array)'),
    (["format_version"], 2 ** 64, '"format_version" has the wrong type'),
    (["format_version"], "1", '"format_version" has the wrong type (string)'),
    (["files"], ["shape.pt"], '"files" must be an object'),
    (["files", "shape"], "../x.pt", "files.shape must be a file name"),
    (["files", "texture"], "", "files.texture must be a file name"),
    (["files", "background"], 7, "files.background must be a file name"),
    (["inputs"], json.loads("[" * 40 + "]" * 40), "JSON nested deeper than 32 levels"),
])
def test_sidecar_field_of_wrong_type_or_range(sidecar, tmp_path, path, value, needle):
    (tmp_path / "pycgn_export.json").write_text(json.dumps(_with(sidecar, path, value)))
    refused(run("--model-dir", tmp_path, "-o", tmp_path / "out.png"), "pycgn_export.json: ", needle)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("data, needle", [
    (b"[" * 200000, "JSON nested deeper than 32 levels"),
    (b'{"a":' * 200000, "JSON nested deeper than 32 levels"),
    (b"[]", "not a JSON object"),
    (b'{"format": "pycgn-export"', "not a JSON object"),
    (b'{"format": "\xff\xfe"}', "not a JSON object"),  # not UTF-8
    (b"", "not a JSON object"),
    (b" " * (2 << 20), "more than a sidecar's limit of 1048576"),
], ids=["deep-array", "deep-object", "array", "unterminated", "not-utf8", "empty", "2-MiB"])
# (short ids: pytest puts the test's id in PYTEST_CURRENT_TEST, and a 200 kB environment
# variable makes every exec of cgn_generate fail with E2BIG)
def test_malformed_sidecar(tmp_path, data, needle):
    (tmp_path / "pycgn_export.json").write_bytes(data)
    refused(run("--model-dir", tmp_path, "-o", tmp_path / "out.png"), needle)


def test_sidecar_that_is_a_fifo_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "pycgn_export.json")  # reading it would block for ever
    refused(run("--model-dir", tmp_path, "-o", tmp_path / "out.png", timeout=30), "not a regular file")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@given(field=st.sampled_from(["format", "format_version", "runtime", "kind", "variant", "weights_sha256",
                              "image_size", "latent_dim", "n_classes", "max_offset", "class_names", "clamp",
                              "files"]),
       value=json_values)
@FUZZ
def test_any_sidecar_field_value_gives_one_line(sidecar, tmp_path_factory, field, value):
    # No generator files here: a value that passes still ends in "no such file", status 2.
    folder = tmp_path_factory.mktemp("side")
    (folder / "pycgn_export.json").write_text(json.dumps(_with(sidecar, [field], value)))
    refused(run("--model-dir", folder, "-o", folder / "out.png", timeout=60), "pycgn_export.json")
    assert os.listdir(folder) == ["pycgn_export.json"]
    shutil.rmtree(folder)

