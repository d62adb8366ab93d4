"""pycgn synth: formats, determinism, resume after SIGKILL, refusals, errors, the reader, Ray."""
import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pycgn
from _helpers import kill_after
from pycgn import synth as S
from pycgn.api import Generator
from pycgn.data import SynthDataset
from pycgn.models import MnistCGN

ROOT = Path(__file__).resolve().parents[1]


def random_checkpoint(folder: Path) -> Path:
    """A random-weight MnistCGN saved with pycgn.save (the shipped weights are trained elsewhere)."""
    g = torch.Generator().manual_seed(99)
    m = MnistCGN()
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                       else torch.randn(t.shape, generator=g) * 0.2)
    return pycgn.save(m, folder / "random.pt")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt"))


def run(ckpt, out, **kw):
    kw.setdefault("backend", "torch")
    kw.setdefault("quiet", True)
    return S.synth(model=str(ckpt), out=out, **kw)


def listing(out):
    """name -> sha256 of every file under ``out``, the manifest included."""
    out = Path(out)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def shard_files(out):
    """``listing`` without the manifest (whose command names the folder)."""
    return {k: v for k, v in listing(out).items() if k != "manifest.json"}


def temps(out):
    return [p.name for p in Path(out).rglob(".*")]


def expected(ckpt, n, k, seed, backend="torch"):
    gen = Generator(str(ckpt), backend, "cpu")
    draw = gen.sampler(seed, counterfactuals=k).draw(range(n))
    return gen.images(draw).numpy(), draw


@pytest.mark.parametrize("fmt,n,shard,k,seed", [("npz", 37, 16, 2, 3), ("webdataset", 23, 10, 3, 0),
                                                ("png", 19, 7, 1, 11)])
def test_format_round_trips_through_reader(ckpt, tmp_path, fmt, n, shard, k, seed):
    m = run(ckpt, tmp_path / "d", n=n, shard_size=shard, counterfactuals=k, seed=seed, format=fmt, batch_size=5)
    images, draw = expected(ckpt, n, k, seed)
    assert m["complete"] and m["n"] == n and m["counterfactuals"] == k and m["format"] == fmt
    assert [s["count"] for s in m["shards"]] == [min(shard, n - a) for a in range(0, n, shard)]
    ds = SynthDataset(tmp_path / "d")
    assert len(ds) == n
    for i in range(n):
        image, labels = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), images[i])
        assert labels == {"index": i, "shape": int(draw.shape[i]), "texture": int(draw.texture[i]),
                          "bg": int(draw.bg[i])}
    # K counterfactuals share the shape sample: class and latent
    assert all(int(draw.shape[i]) == int(draw.shape[(i // k) * k]) for i in range(n))
    assert ds[-1][1]["index"] == n - 1
    with pytest.raises(IndexError):
        ds[n]


def test_npz_holds_inputs_that_regenerate(ckpt, tmp_path):
    run(ckpt, tmp_path / "d", n=29, shard_size=29, counterfactuals=2, seed=5)
    _, draw = expected(ckpt, 29, 2, 5)
    with np.load(tmp_path / "d" / "shard-00000.npz") as z:
        assert z["images"].shape == (29, 32, 32, 3) and z["images"].dtype == np.uint8
        for name in S.LABELS + S.INPUTS:
            np.testing.assert_array_equal(z[name], getattr(draw, name).numpy())
            assert z[name].dtype == (np.float32 if name.startswith("u_") else np.int64)
        # the stored inputs alone give the stored images
        from pycgn import reference
        model = pycgn.load(ckpt)
        x = torch.from_numpy
        mask, fg, bg = model(x(z["u_shape"]), x(z["shape"]), x(z["u_texture"]), x(z["texture"]),
                             x(z["u_bg"]), x(z["bg"]))
        ref = reference.composite(mask, fg, bg, x(z["fg_offset"]), x(z["bg_offset"]), "uint8", "NHWC")
        assert (ref.numpy().astype(int) - z["images"].astype(int)).__abs__().max() <= 1


def test_webdataset_package_reads_shards(ckpt, tmp_path):
    wds = pytest.importorskip("webdataset", reason="webdataset is the extra pycgn[webdataset]")
    run(ckpt, tmp_path / "d", n=21, shard_size=8, format="webdataset", seed=2)
    images, draw = expected(ckpt, 21, 1, 2)
    urls = sorted(str(p) for p in (tmp_path / "d").glob("shard-*.tar"))
    got = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("png", "json"))
    assert len(got) == 21
    for i, (img, rec) in enumerate(got):
        np.testing.assert_array_equal(img, images[i])
        assert rec["index"] == i and rec["bg"] == int(draw.bg[i])
        np.testing.assert_array_equal(np.float32(rec["u_texture"]), draw.u_texture[i].numpy())


@pytest.mark.parametrize("backend", ["torch", "torch-bf16"])
def test_same_bytes_whatever_batch_size_and_workers(ckpt, tmp_path, backend):
    kw = dict(n=45, shard_size=20, counterfactuals=3, seed=7, backend=backend)
    run(ckpt, tmp_path / "a", batch_size=256, **kw)
    run(ckpt, tmp_path / "b", batch_size=1, **kw)   # padded batches: a batch of one takes other kernels
    run(ckpt, tmp_path / "c", batch_size=6, workers=2, **kw)  # two spawned processes
    a = shard_files(tmp_path / "a")
    assert a == shard_files(tmp_path / "b") == shard_files(tmp_path / "c")
    assert len(a) == 3


def test_shard_regenerated_alone_equals_full_run(ckpt, tmp_path):
    full = run(ckpt, tmp_path / "d", n=50, shard_size=20, seed=4)
    before = listing(tmp_path / "d")
    (tmp_path / "d" / "shard-00001.npz").unlink()
    again = run(ckpt, tmp_path / "d", n=50, shard_size=20, seed=4, batch_size=3)
    assert listing(tmp_path / "d") == before and again["shards"] == full["shards"]
    # a rerun of a complete folder changes nothing
    run(ckpt, tmp_path / "d", n=50, shard_size=20, seed=4)
    assert listing(tmp_path / "d") == before


def test_manifest_records_shards_and_identity(ckpt, tmp_path):
    m = run(ckpt, tmp_path / "d", n=33, shard_size=10, seed=8, format="png")
    on_disk = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert on_disk == m
    assert m["model"]["sha256"] == pycgn.load(ckpt).info.sha256
    assert m["pycgn_version"] == pycgn.__version__ and m["seed"] == 8 and m["backend"] == "torch"
    assert "pycgn synth" in m["command"] and "--n 33" in m["command"]
    for s in m["shards"]:
        folder = tmp_path / "d" / s["name"]
        lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                        for p in sorted(folder.iterdir(), key=lambda p: p.name))
        assert s["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    m2 = run(ckpt, tmp_path / "e", n=12, shard_size=5, seed=8)
    for s in m2["shards"]:
        assert s["sha256"] == hashlib.sha256((tmp_path / "e" / s["name"]).read_bytes()).hexdigest()


def test_reader_refuses_corrupt_and_incomplete(ckpt, tmp_path):
    run(ckpt, tmp_path / "d", n=24, shard_size=10, seed=1)
    good = listing(tmp_path / "d")
    shard = tmp_path / "d" / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00001.npz does not match its sha256"):
        SynthDataset(tmp_path / "d")
    assert len(SynthDataset(tmp_path / "d", verify=False)) == 24
    run(ckpt, tmp_path / "d", n=24, shard_size=10, seed=1)  # the rerun remakes the corrupt shard
    assert listing(tmp_path / "d") == good
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    m["complete"] = False
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="not complete"):
        SynthDataset(tmp_path / "d")


def _cli(ckpt, out, n, shard):
    return [sys.executable, "-m", "pycgn", "synth", "--model", str(ckpt), "--n", str(n), "--shard-size",
            str(shard), "--batch-size", "8", "--backend", "torch", "--seed", "6", "--counterfactuals", "2",
            "--out", str(out), "--quiet"]


def test_resume_after_sigkill_gives_the_uninterrupted_dataset(ckpt, tmp_path):
    n, shard = 400, 40
    run(ckpt, tmp_path / "ref", n=n, shard_size=shard, batch_size=64, seed=6, counterfactuals=2)
    out = tmp_path / "d"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    for delay in (0.0, 0.4, 1.5):
        # wait until it has started writing, then kill at an arbitrary moment
        kills += kill_after(_cli(ckpt, out, n, shard), (out / "manifest.json").exists, delay, env=env, cwd=ROOT)
        m = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else None
        if m and m["complete"]:
            break
    assert kills >= 1
    r = subprocess.run(_cli(ckpt, out, n, shard), env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert temps(out) == []
    ref_manifest = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    got_manifest = json.loads((out / "manifest.json").read_text())
    assert got_manifest["shards"] == ref_manifest["shards"]
    assert shard_files(out) == shard_files(tmp_path / "ref")


def test_different_command_is_refused(ckpt, tmp_path, capsys):
    run(ckpt, tmp_path / "d", n=20, shard_size=10, seed=0)
    before = listing(tmp_path / "d")
    with pytest.raises(ValueError, match=r"different command \(seed 0 there, 1 here\)"):
        run(ckpt, tmp_path / "d", n=20, shard_size=10, seed=1)
    with pytest.raises(ValueError, match="different command.*n 20 there, 30 here"):
        run(ckpt, tmp_path / "d", n=30, shard_size=10, seed=0)
    with pytest.raises(ValueError, match="format 'npz' there, 'png' here"):
        run(ckpt, tmp_path / "d", n=20, shard_size=10, seed=0, format="png")
    assert listing(tmp_path / "d") == before
    from pycgn.cli import main
    rc = main(["synth", "--model", str(ckpt), "--n", "20", "--shard-size", "10", "--out", str(tmp_path / "d"),
               "--seed", "2", "--backend", "torch", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "different command" in err
    # a folder with other files and no manifest is not taken over
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        run(ckpt, tmp_path / "other", n=5)


@pytest.mark.parametrize("argv,message", [
    (["--n", "0"], "n must be >= 1"),
    (["--n", "5", "--counterfactuals", "0"], "counterfactuals must be >= 1"),
    (["--n", "5", "--shard-size", "-3"], "shard_size must be >= 0"),
    (["--n", "5", "--format", "jpeg"], "invalid choice"),
    (["--n", "abc"], "invalid int value"),
    (["--n", "5", "--model", "/nonexistent/x.pt"], "no such file"),
    (["--n", "5", "--seed", "-1"], "seed must be in"),
])
def test_cli_errors_are_one_line_exit_2(ckpt, tmp_path, capsys, argv, message):
    from pycgn.cli import main
    argv = ["synth", "--out", str(tmp_path / "d"), "--backend", "torch", *argv]
    if "--model" not in argv:
        argv += ["--model", str(ckpt)]
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err, err


def test_api_argument_errors(ckpt, tmp_path):
    with pytest.raises(TypeError, match="n must be an int"):
        run(ckpt, tmp_path / "d", n=2.5)
    with pytest.raises(ValueError, match="format must be one of"):
        run(ckpt, tmp_path / "d", n=3, format="tfrecord")
    with pytest.raises(ValueError, match="engine must be one of"):
        run(ckpt, tmp_path / "d", n=3, engine="dask")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run(ckpt, tmp_path / "d", n=3, workers=0)
    with pytest.raises(TypeError, match="out must be a folder path"):
        run(ckpt, 3, n=3)


def test_unwritable_folder_is_a_clear_error(ckpt, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((NotADirectoryError, PermissionError), match="out: "):
        run(ckpt, blocker / "d", n=3)
    with pytest.raises(NotADirectoryError, match="not a folder"):
        run(ckpt, blocker, n=3)
    if os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop root from writing")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            run(ckpt, ro, n=3)
    finally:
        ro.chmod(0o700)


def test_disk_full_leaves_nothing_corrupt_and_resumes(ckpt, tmp_path, monkeypatch):
    run(ckpt, tmp_path / "ref", n=50, shard_size=20, seed=9)
    real = pycgn._io.atomic_write_bytes
    writes = []

    def full_disk(path, data):
        if Path(path).name.startswith("shard-"):
            writes.append(path)
            if len(writes) == 2:  # the second shard: half written, then ENOSPC
                with pycgn._io.atomic_path(path) as tmp:
                    Path(tmp).write_bytes(data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(pycgn._io, "atomic_write_bytes", full_disk)
    with pytest.raises(S.SynthError, match="shard-00001.npz: disk full"):
        run(ckpt, tmp_path / "d", n=50, shard_size=20, seed=9)
    assert temps(tmp_path / "d") == []
    assert not (tmp_path / "d" / "shard-00001.npz").exists()
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert not m["complete"] and [s["name"] for s in m["shards"]] == ["shard-00000.npz"]
    monkeypatch.setattr(pycgn._io, "atomic_write_bytes", real)
    run(ckpt, tmp_path / "d", n=50, shard_size=20, seed=9)
    assert shard_files(tmp_path / "d") == shard_files(tmp_path / "ref")


def test_progress_summary_and_quiet(ckpt, tmp_path, capsys):
    run(ckpt, tmp_path / "a", n=12, shard_size=5, quiet=False)
    err = capsys.readouterr().err
    assert "pycgn synth: 12 images in 3 npz shards" in err and "12 made, 0 resumed" in err
    run(ckpt, tmp_path / "b", n=12, shard_size=5, quiet=True)
    assert capsys.readouterr().err == ""


def test_auto_backend_is_pinned_for_the_whole_dataset(ckpt, tmp_path):
    m = S.synth(model=str(ckpt), out=tmp_path / "d", n=30, shard_size=16, quiet=True, backend="auto",
                batch_size=7)
    assert m["backend"] != "auto"
    m2 = S.synth(model=str(ckpt), out=tmp_path / "e", n=30, shard_size=16, quiet=True, backend=m["backend"],
                 batch_size=16)
    assert [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in m2["shards"]]


def test_published_checkpoint(tmp_path):
    from conftest import published
    path = published("double_colored_mnist")
    m = S.synth(model=str(path), out=tmp_path / "d", n=40, shard_size=25, counterfactuals=4, quiet=True,
                backend="torch", seed=12)
    assert m["model"]["name"] == "double_colored_mnist"
    gen = Generator(str(path), "torch", "cpu")
    images = gen.images(gen.sampler(12, counterfactuals=4).draw(range(40))).numpy()
    ds = SynthDataset(tmp_path / "d")
    assert np.array_equal(np.stack([ds[i][0].permute(1, 2, 0).numpy() for i in range(40)]), images)


def test_ray_engine_equals_local(ckpt, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is the extra pycgn[ray]; the local engine needs no Ray")
    kw = dict(n=60, shard_size=25, counterfactuals=2, seed=13)
    run(ckpt, tmp_path / "local", **kw)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run(ckpt, tmp_path / "ray", engine="ray", workers=2, batch_size=9, **kw)
    finally:
        ray.shutdown()
    assert shard_files(tmp_path / "ray") == shard_files(tmp_path / "local")
