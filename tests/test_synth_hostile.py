"""pycgn synth against hostile or broken surroundings: tampered shards, manifests that point out of
the dataset folder, an unreachable Ray cluster, unknown models and dying Ray workers."""
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pycgn import synth as S
from pycgn.data import SynthDataset
from test_synth import random_checkpoint, run, shard_files


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _rewrite_npz(path: Path, **changes) -> None:
    """Rewrite an npz shard with some arrays changed, keeping its structure (what a hand edit does)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w") as w:
                np.lib.format.write_array(w, arr)
    path.write_bytes(f.getvalue())


def test_unrecorded_shard_with_changed_labels_is_not_kept(ckpt, tmp_path):
    """A kill between a shard's rename and the manifest write leaves a shard the manifest does not
    list; a hand-edited one must not survive the resume."""
    kw = dict(n=30, shard_size=10, seed=2)
    run(ckpt, tmp_path / "ref", **kw)
    run(ckpt, tmp_path / "d", **kw)
    manifest = tmp_path / "d" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["shards"] = [s for s in m["shards"] if s["name"] != "shard-00001.npz"]
    m["complete"] = False
    manifest.write_text(json.dumps(m))
    shard = tmp_path / "d" / "shard-00001.npz"
    with np.load(shard) as z:
        texture = (z["texture"] + 1) % 10
    _rewrite_npz(shard, texture=texture)
    run(ckpt, tmp_path / "d", **kw)
    assert shard_files(tmp_path / "d") == shard_files(tmp_path / "ref")
    ds = SynthDataset(tmp_path / "d")
    with np.load(tmp_path / "ref" / "shard-00001.npz") as z:
        assert [ds[10 + j][1]["texture"] for j in range(10)] == z["texture"].tolist()


@pytest.mark.parametrize("name", ["../elsewhere/shard-00000.npz", "ABSOLUTE", "link.npz"])
def test_reader_stays_inside_its_folder(ckpt, tmp_path, name):
    run(ckpt, tmp_path / "d", n=8, shard_size=8, seed=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "d" / "shard-00000.npz").rename(elsewhere / "shard-00000.npz")
    if name == "ABSOLUTE":
        name = str(elsewhere / "shard-00000.npz")
    if name == "link.npz":
        (tmp_path / "d" / name).symlink_to(elsewhere / "shard-00000.npz")
    manifest = tmp_path / "d" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["shards"][0]["name"] = name
    manifest.write_text(json.dumps(m))
    for verify in (True, False):
        with pytest.raises(ValueError, match="outside the dataset folder"):
            SynthDataset(tmp_path / "d", verify=verify)


@pytest.fixture(scope="module")
def small(ckpt, tmp_path_factory):
    """A finished two-shard npz dataset and its manifest."""
    out = tmp_path_factory.mktemp("small") / "d"
    run(ckpt, out, n=6, shard_size=3, seed=4)
    return out, (out / "manifest.json").read_text()


@settings(max_examples=60, deadline=None)
@given(name=st.one_of(st.text(max_size=40),
                      st.builds("".join, st.lists(st.sampled_from(["..", "/", ".", "shard-00000.npz", "d", "x"]),
                                                  max_size=6))))
def test_fuzzed_shard_names_never_lead_out(small, name):
    out, text = small
    m = json.loads(text)
    m["shards"][1]["name"] = name
    (out / "manifest.json").write_text(json.dumps(m))
    try:
        ds = SynthDataset(out, verify=False)
    except (ValueError, FileNotFoundError, OSError):
        return
    root = out.resolve()
    assert all(p.parent == root for p in ds._paths), ds._paths


def test_png_shard_with_a_link_out_is_refused(ckpt, tmp_path):
    run(ckpt, tmp_path / "d", n=4, shard_size=4, seed=1, format="png")
    secret = tmp_path / "secret.csv"
    labels = tmp_path / "d" / "shard-00000" / "labels.csv"
    secret.write_bytes(labels.read_bytes())
    labels.unlink()
    labels.symlink_to(secret)
    with pytest.raises(ValueError, match="outside the dataset folder"):
        SynthDataset(tmp_path / "d", verify=False)
    with pytest.raises(ValueError, match="does not match its sha256|outside the dataset folder"):
        SynthDataset(tmp_path / "d")
    # the writer does not follow it either: the resume replaces the link with the real file
    run(ckpt, tmp_path / "d", n=4, shard_size=4, seed=1, format="png")
    assert not labels.is_symlink() and secret.read_bytes() == labels.read_bytes()
    assert len(SynthDataset(tmp_path / "d")) == 4


def _cli(argv, capsys):
    from pycgn.cli import main
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def test_unknown_model_creates_nothing(tmp_path, capsys):
    rc, err = _cli(["synth", "--model", "nosuch", "--n", "5", "--out", str(tmp_path / "d")], capsys)
    assert rc == 2 and err.count("\n") == 1 and "nosuch" in err, err
    assert not (tmp_path / "d").exists()
    rc, err = _cli(["synth", "--model", "colored_mnist", "--backend", "nosuch", "--n", "5", "--out",
                    str(tmp_path / "d")], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "d").exists()


def test_unreachable_ray_cluster_is_one_line_and_leaves_nothing(ckpt, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray", reason="ray is the extra pycgn[ray]")
    import ray
    if ray.is_initialized():
        pytest.skip("a Ray session is already open in this process")
    # no cluster anywhere: neither a RAY_ADDRESS nor a running local one may be found
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray-tmp"))
    out = tmp_path / "d"
    rc, err = _cli(["synth", "--model", str(ckpt), "--n", "5", "--out", str(out), "--backend", "torch",
                    "--engine", "ray", "--ray-address", "auto", "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "ray_address" in err, err
    assert not out.exists()
    assert not ray.is_initialized()


# ---------------------------------------------------------------------------------------------
# Ray workers that die: the lost shards go to the surviving workers

class _DiesOnce(S.engines._RayWorker):
    """A worker whose first ``make`` in the whole cluster kills its process (a lost node)."""
    flag = ""

    def make(self, sid, batch_size):
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))
            os._exit(1)
        except FileExistsError:
            return super().make(sid, batch_size)


class _AlwaysDies(S.engines._RayWorker):
    def make(self, sid, batch_size):
        os._exit(1)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="ray is the extra pycgn[ray]; the local engine needs no Ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_shards_of_a_dead_worker_are_made_by_the_others(ckpt, tmp_path, ray_session, monkeypatch):
    kw = dict(n=50, shard_size=10, counterfactuals=2, seed=3)
    run(ckpt, tmp_path / "local", **kw)
    monkeypatch.setattr(_DiesOnce, "flag", str(tmp_path / "died"))
    monkeypatch.setattr(S.engines, "_RayWorker", _DiesOnce)
    m = run(ckpt, tmp_path / "ray", engine="ray", workers=2, **kw)
    assert (tmp_path / "died").exists()  # a worker did die
    assert m["complete"] and shard_files(tmp_path / "ray") == shard_files(tmp_path / "local")


def test_ray_cluster_that_cannot_finish_is_a_clear_error(ckpt, tmp_path, ray_session, monkeypatch):
    monkeypatch.setattr(S.engines, "_RayWorker", _AlwaysDies)
    with pytest.raises(S.SynthError, match="Ray worker"):
        run(ckpt, tmp_path / "d", n=20, shard_size=10, seed=3, engine="ray", workers=2)
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert not m["complete"] and m["shards"] == []

