"""Dataset designs and benchmarks: validation, agreement rates, determinism, stream == offline."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import pycgn
from conftest import random_mnist
from _helpers import kill_after
from pycgn.synth import synth
from pycgn.synth.benchmark import benchmark, read_datasheet
from pycgn.synth.design import RULES, Design, Rule, parse_design, parse_split, read_splits, split_seed


@pytest.fixture(scope="module")
def model():
    return random_mnist(7)


@pytest.fixture(scope="module")
def gen(model):
    return pycgn.Generator(model, backend="torch", device="cpu")


@pytest.fixture(scope="module")
def bench(model, tmp_path_factory):
    """A small benchmark of three splits (the slow part: 160 images), shared by the tests below."""
    out = tmp_path_factory.mktemp("bench") / "b"
    benchmark({"train": (64, "texture=agree:0.9,bg=agree:0.5"), "test": (48, "texture=uniform"),
               "anti": (48, "texture=permute:1.0,classes=2|5|7")},
              model=model, out=out, seed=3, backend="torch", device="cpu", shard_size=20, quiet=True)
    return out


# --- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("texture=agree:1.5", "design.texture: p must be in [0, 1]"),
    ("texture=agree:-0.1", "design.texture: p must be in [0, 1]"),
    ("texture=permute:nan", "design.texture: p must be in [0, 1]"),
    ("texture=agree:x", "design.texture: p must be a number"),
    ("texture=agree", "design.texture: rule 'agree' needs p"),
    ("bg=often", "design.bg: rule must be one of"),
    ("colour=uniform", "unknown field 'colour'"),
    ("label=colour", "design.label: must be a mechanism"),
    ("shape=agree:0.9", "design.shape: shape is the label"),
    ("texture", "expected key=value"),
    ("texture=uniform,texture=agree:0.5", "design.texture: given twice"),
    ("texture=fixed", "design.texture: rule 'fixed' needs a class"),
])
def test_bad_designs_name_the_field(text, words):
    with pytest.raises(ValueError, match=None) as e:
        parse_design(text)
    assert words in str(e.value), str(e.value)


@pytest.mark.parametrize("text, words", [
    ("texture=fixed:12", "design.texture has class id 12"),
    ("classes=1|2|11", "design.classes has class id 11"),
    ("classes=1|2|2", "listed twice"),
    ("texture=subset:zebra", "design.texture: unknown class 'zebra'"),
    ("classes=0|1|2,texture=permute:0.9:0|1|3", "must list each of the design's classes"),
])
def test_unknown_classes_are_named_when_the_design_meets_a_model(gen, text, words):
    with pytest.raises(ValueError) as e:
        parse_design(text).resolve(gen)
    assert words in str(e.value), str(e.value)


def test_json_file_and_command_line_give_the_same_design(tmp_path, gen):
    f = tmp_path / "d.json"
    f.write_text(json.dumps({"classes": [1, 2, 3], "splits": {
        "train": {"n": 10, "texture": {"rule": "agree", "p": 0.9}, "bg": "subset:1|2"},
        "anti": {"n": 5, "texture": {"rule": "permute", "p": 1.0, "permutation": [2, 3, 1]}}}}))
    splits = read_splits(f)
    assert splits["train"] == (10, parse_design("classes=1|2|3,texture=agree:0.9,bg=subset:1|2"))
    assert splits["anti"][1].resolve(gen) == parse_design("classes=1|2|3,texture=permute:1.0:2|3|1").resolve(gen)
    for text in ("texture=agree:0.9,bg=subset:1|2", "classes=1|2|3,texture=permute:1.0:2|3|1,bg=fixed:2",
                 "label=bg,shape=uniform"):
        assert parse_design(parse_design(text).text()) == parse_design(text)  # the text form round-trips
    assert parse_split("val:7:texture=uniform") == ("val", 7, Design("shape", None, {"texture": Rule()}))
    for bad, words in (({"splits": {}}, "must hold"), ({"splits": {"a b": {"n": 1}}}, "split name"),
                       ({"splits": {"t": {"n": 1, "texture": {"rule": "agree", "p": 2}}}},
                        "design.splits.t.texture: p must be in [0, 1]")):
        f.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=None) as e:
            read_splits(f)
        assert words in str(e.value), str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="shapetxurbgl=:,|0123456789.-aeinofmdc", max_size=60))
def test_hostile_design_text_is_parsed_or_refused_in_one_clear_error(text):
    try:
        d = parse_design(text)
    except ValueError as e:
        assert str(e).startswith(("design", "--split")) and "\n" not in str(e)
        return
    for r in d.rules.values():
        assert r.kind in ("uniform", "agree", "permute", "fixed", "subset")
        assert r.p is None or 0.0 <= r.p <= 1.0


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2000), st.floats(allow_nan=True),
                   st.text(max_size=8), st.lists(st.integers(-2, 12), max_size=4))
_RULES = st.one_of(_VALUES, st.dictionaries(st.sampled_from(["rule", "p", "class", "classes", "permutation", "x"]),
                                            st.one_of(_VALUES, st.sampled_from(RULES)), max_size=4))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["label", "classes", "shape", "texture", "bg", "colour"]), _RULES, max_size=5))
def test_hostile_json_designs_resolve_or_are_refused_naming_the_field(spec):
    gen = _CACHE.get("gen") or _CACHE.setdefault("gen", pycgn.Generator(random_mnist(7), backend="torch",
                                                                          device="cpu"))
    try:
        d = parse_design(spec).resolve(gen)
    except ValueError as e:
        assert "design" in str(e) and "\n" not in str(e), str(e)
        return
    c = d.draw(0, np.arange(50))
    assert all(((v >= 0) & (v < 10)).all() for v in c.values())


_CACHE = {}  # one Generator for every example: hypothesis runs the test body hundreds of times


# --- the draws ---------------------------------------------------------------------------------

def test_measured_agreement_is_within_one_point_of_requested_over_20000(gen):
    d = parse_design("texture=agree:0.9,bg=agree:0.5").resolve(gen)
    c = d.draw(split_seed(0, "train"), np.arange(20_000))
    assert abs((c["texture"] == c["shape"]).mean() - 0.9) < 0.01
    assert abs((c["bg"] == c["shape"]).mean() - 0.5) < 0.01
    assert np.bincount(c["shape"], minlength=10).min() > 1700  # label uniform: 2000 each
    wrong = c["texture"] != c["shape"]  # disagreeing classes: uniform over the other nine
    off = (c["texture"][wrong] - c["shape"][wrong]) % 10
    assert off.min() >= 1 and np.bincount(off, minlength=10)[1:].min() > 0.7 * wrong.sum() / 9
    ind = parse_design("texture=uniform").resolve(gen).draw(1, np.arange(20_000))
    assert abs((ind["texture"] == ind["shape"]).mean() - 0.1) < 0.01
    assert abs((ind["bg"] == ind["shape"]).mean() - 0.1) < 0.01


def test_permute_fixed_subset_and_class_subsets(gen):
    d = parse_design("classes=2|5|7,texture=permute:1.0,bg=fixed:9").resolve(gen)
    c = d.draw(4, np.arange(3000))
    assert set(np.unique(c["shape"])) == {2, 5, 7} and (c["bg"] == 9).all()
    assert ({(int(a), int(b)) for a, b in zip(c["shape"], c["texture"])} == {(2, 5), (5, 7), (7, 2)})
    assert d.requested_agreement("texture") == 0.0 and d.requested_agreement("bg") == 0.0
    s = parse_design("texture=subset:1|3,label=bg").resolve(gen).draw(4, np.arange(3000))
    assert set(np.unique(s["texture"])) == {1, 3} and len(np.unique(s["bg"])) == 10
    p = parse_design("classes=0|1|2|3,texture=permute:0.75").resolve(gen)
    assert p.requested_agreement("texture") == pytest.approx(0.25 / 3)


def test_draws_depend_only_on_seed_and_index(gen):
    d = parse_design("texture=agree:0.7,bg=permute:0.6").resolve(gen)
    idx = np.random.default_rng(0).permutation(500)
    whole = d.draw(9, np.arange(500))
    pieces = d.draw(9, idx)
    for k in whole:
        assert (whole[k][idx] == pieces[k]).all()
    other = d.draw(10, np.arange(500))
    assert (other["shape"] != whole["shape"]).any()
    assert split_seed(3, "train") != split_seed(3, "test") and split_seed(3, "train") == split_seed(3, "train")


# --- synth with a design ---------------------------------------------------------------------

def _shards(root):
    return {p.name: p.read_bytes() for p in sorted(root.glob("shard-*"))}


def test_synth_with_a_design_is_the_models_draw_with_the_designs_classes(model, gen, tmp_path):
    man = synth(model, n=40, out=tmp_path / "d", shard_size=16, seed=11, backend="torch", device="cpu",
                quiet=True, design="texture=agree:0.8")
    assert man["design"]["texture"] == {"rule": "agree", "p": 0.8}
    z = {k: np.concatenate([np.load(p)[k] for p in sorted((tmp_path / "d").glob("shard-*"))])
         for k in ("index", "shape", "texture", "bg", "u_shape", "images")}
    want = parse_design("texture=agree:0.8").resolve(gen).draw(11, np.arange(40))
    for k in ("shape", "texture", "bg"):
        assert (z[k] == want[k]).all()
    plain = gen.sampler(11).draw(range(40))
    assert torch.equal(torch.from_numpy(z["u_shape"]), plain.u_shape)  # only the classes change
    again = gen.images(gen.sampler(11).draw(range(8, 16), shape=want["shape"][8:16],
                                             texture=want["texture"][8:16], bg=want["bg"][8:16]))
    assert np.array_equal(again.numpy(), z["images"][8:16])
    with pytest.raises(ValueError, match="different command"):  # the design is part of the identity
        synth(model, n=40, out=tmp_path / "d", shard_size=16, seed=11, backend="torch", device="cpu",
              quiet=True, design="texture=agree:0.7")


def test_benchmark_bytes_do_not_depend_on_batch_size_or_workers(model, bench, tmp_path):
    splits = {"train": (64, "texture=agree:0.9,bg=agree:0.5")}
    benchmark(splits, model=model, out=tmp_path / "b7", seed=3, backend="torch", device="cpu", shard_size=20,
              batch_size=7, quiet=True)
    assert _shards(tmp_path / "b7" / "train") == _shards(bench / "train")
    benchmark(splits, model=model, out=tmp_path / "w2", seed=3, backend="torch", device="cpu", shard_size=20,
              batch_size=5, workers=2, quiet=True)
    assert _shards(tmp_path / "w2" / "train") == _shards(bench / "train")
    before = {name: _shards(bench / name) for name in ("train", "test", "anti")}
    benchmark({"train": (64, "texture=agree:0.9,bg=agree:0.5"), "test": (48, "texture=uniform"),
               "anti": (48, "texture=permute:1.0,classes=2|5|7")},  # a rerun resumes: nothing changes
              model=model, out=bench, seed=3, backend="torch", device="cpu", shard_size=20, quiet=True)
    assert before == {name: _shards(bench / name) for name in ("train", "test", "anti")}
    with pytest.raises(ValueError, match="other splits or seed"):  # a benchmark folder is not taken over
        benchmark({"test": (48, "texture=uniform")}, model=model, out=bench, seed=3, backend="torch",
                  device="cpu", shard_size=20, quiet=True)


def test_datasheet_reports_requested_and_measured_agreement(bench):
    sheet = read_datasheet(bench)
    assert sheet["model"]["sha256"] and sheet["backend"] == "torch" and "--split" in sheet["command"]
    train = sheet["splits"]["train"]
    assert train["factors"]["texture"]["requested_agreement"] == 0.9
    labels = np.concatenate([np.load(p)["shape"] for p in sorted((bench / "train").glob("shard-*"))])
    tex = np.concatenate([np.load(p)["texture"] for p in sorted((bench / "train").glob("shard-*"))])
    assert train["factors"]["texture"]["measured_agreement"] == pytest.approx((labels == tex).mean())
    table = np.array(train["factors"]["texture"]["label_x_factor"]["counts"])
    assert table.sum() == 64 and np.trace(table) == (labels == tex).sum()
    assert sheet["splits"]["anti"]["factors"]["texture"]["measured_agreement"] == 0.0
    assert sheet["splits"]["anti"]["label_counts"].keys() == {"2", "5", "7"}
    md = (bench / "DATASHEET.md").read_text()
    assert "| train | 64 | shape | texture | rule=agree, p=0.9 | 90.00 % |" in md
    from PIL import Image
    for name in ("train", "test", "anti"):
        assert Image.open(bench / f"grid-{name}.png").size[0] > 64


# --- on the fly -------------------------------------------------------------------------------

def test_stream_yields_the_offline_benchmark(model, bench):
    from pycgn.data import BenchmarkSplit, CounterfactualStream
    offline = BenchmarkSplit(bench, "anti")
    stream = CounterfactualStream.from_benchmark(bench, "anti", model=model, batch_size=10)
    got = list(stream)
    assert len(got) == len(offline) == 48
    for i, (image, labels) in enumerate(got):
        o_image, o_labels = offline[i]
        assert torch.equal(image, o_image) and labels == o_labels, i
        assert labels["label"] == labels["shape"] and labels["index"] == i


@pytest.mark.parametrize("n, batch, workers", [(1, 4, 3), (10, 4, 3), (12, 4, 3), (13, 5, 2), (7, 100, 4)])
def test_worker_blocks_cover_every_index_once(n, batch, workers):
    from pycgn.data import CounterfactualStream
    s = CounterfactualStream("texture=uniform", n, batch_size=batch)
    seen = [i for w in range(workers) for a, c in s.blocks(w, workers) for i in range(a, a + c)]
    assert sorted(seen) == list(range(n))


def test_dataloader_workers_split_the_stream_without_overlap(model, bench):
    from pycgn.data import BenchmarkSplit, CounterfactualStream
    stream = CounterfactualStream.from_benchmark(bench, "test", model=model, batch_size=8)
    offline = BenchmarkSplit(bench, "test", verify=False)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    got = {}
    for image, labels in loader:
        assert labels["index"] not in got
        got[labels["index"]] = image
    assert sorted(got) == list(range(48))
    for i in (0, 9, 47):
        assert torch.equal(got[i], offline[i][0])


# --- ImageNet CGN on a class subset ---------------------------------------------------------------

def test_imagenet_cgn_on_a_class_subset(tmp_path):
    from pycgn.data import BenchmarkSplit
    from pycgn.models.imagenet import ImagenetCGN, save_imagenet_cgn
    torch.manual_seed(3)
    # from a file: an in-memory ImagenetCGN carries no ModelInfo (pycgn.Generator then lists 10 classes)
    m = save_imagenet_cgn(ImagenetCGN(ch=4, resolution=16, u2net_div=16).eval(), tmp_path / "cgn.pth")
    with torch.backends.mkldnn.flags(enabled=False):
        sheet = benchmark({"train": (6, "classes=1|207|980,texture=agree:1.0,bg=subset:207|980")}, model=m,
                          out=tmp_path / "inet", backend="torch", device="cpu", quiet=True)
        ds = BenchmarkSplit(tmp_path / "inet", "train")
        labels = [ds[i][1] for i in range(6)]
    assert all(lab["shape"] in (1, 207, 980) and lab["texture"] == lab["shape"] and lab["bg"] in (207, 980)
               for lab in labels)
    assert sheet["splits"]["train"]["factors"]["texture"]["measured_agreement"] == 1.0
    assert ds[0][0].shape == (3, 16, 16)


# --- group evaluation ----------------------------------------------------------------------------

def test_group_evaluation_scores_every_split_and_group(model, bench):
    from pycgn.groups import evaluate_benchmark, markdown
    r = evaluate_benchmark(bench, epochs=1, counterfactuals=40, model=model, min_group=2)
    assert r["n_train"] == 64 and r["n_counterfactuals"] == 40
    anti = r["splits"]["anti"]["biased"]  # its classes 2, 5, 7 are a subset of train's: scored
    assert {g["label"] for g in anti["groups"]} == {2, 5, 7} and all(g["texture"] == "differs"
                                                                      for g in anti["groups"])
    for name in ("train", "test"):
        for clf in ("biased", "counterfactual"):
            s = r["splits"][name][clf]
            assert sum(g["n"] for g in s["groups"]) == s["n"]
            # the overall accuracy is the groups' accuracies weighted by their sizes
            assert s["accuracy"] == pytest.approx(sum(g["n"] * g["accuracy"] for g in s["groups"]) / s["n"],
                                                  abs=1e-3)
            big = [g["accuracy"] for g in s["groups"] if g["n"] >= 2]
            assert s["worst_group_accuracy"] == min(big)
            assert all(set(g) == {"label", "texture", "bg", "n", "accuracy"} for g in s["groups"])
    md = markdown(r)
    assert md.count("\n| ") == 1 + 3 and "| train | 64 |" in md
    with pytest.raises(ValueError, match="no split 'nope'"):
        evaluate_benchmark(bench, train="nope", model=model)


def test_cli_makes_and_evaluates_a_benchmark(model, tmp_path, capsys):
    from pycgn.cli import main
    path = pycgn.save(model, tmp_path / "m.pt")
    out = tmp_path / "b"
    assert main(["benchmark", "make", "--model", str(path), "--out", str(out), "--backend", "torch", "--device",
                 "cpu", "--split", "train:24:texture=agree:1.0", "--split", "test:16:texture=uniform",
                 "--quiet"]) == 0
    assert read_datasheet(out)["splits"]["train"]["factors"]["texture"]["measured_agreement"] == 1.0
    assert main(["benchmark", "evaluate", str(out), "--epochs", "1", "--counterfactuals", "8", "--quiet"]) == 0
    assert "| test | 16 |" in capsys.readouterr().out
    assert json.loads((out / "groups.json").read_text())["splits"]["test"]["biased"]["n"] == 16
    assert (out / "GROUPS.md").is_file()
    assert main(["synth", "--model", str(path), "--n", "8", "--out", str(tmp_path / "s"), "--backend", "torch",
                 "--device", "cpu", "--design", "texture=agree:1.0", "--quiet"]) == 0
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["design"]["texture"] == {"rule": "agree", "p": 1.0} and "--design" in man["command"]
    capsys.readouterr()
    assert main(["synth", "--model", str(path), "--n", "8", "--out", str(tmp_path / "s2"),
                 "--design", "texture=agree:2"]) == 2
    assert capsys.readouterr().err.strip() == "pycgn synth: error: design.texture: p must be in [0, 1], got '2'"


@pytest.mark.slow
def test_sigkill_mid_benchmark_and_rerun_gives_the_uninterrupted_benchmark(model, tmp_path):
    import subprocess
    import sys
    path = pycgn.save(model, tmp_path / "m.pt")
    args = ["--model", str(path), "--backend", "torch", "--device", "cpu", "--shard-size", "16", "--quiet",
            "--split", "train:96:texture=agree:0.9", "--split", "test:64:texture=uniform"]

    def cli(out):
        return [sys.executable, "-m", "pycgn", "benchmark", "make", "--out", str(out), *args]
    assert subprocess.run(cli(tmp_path / "ref"), capture_output=True).returncode == 0
    out, kills = tmp_path / "run", 0
    for delay in (0.0, 0.3, 0.8):  # kill at a few moments after the first shard lands
        kills += kill_after(cli(out), lambda: list(out.glob("*/shard-*")), delay,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert kills >= 1
    r = subprocess.run(cli(out), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for split in ("train", "test"):
        assert _shards(out / split) == _shards(tmp_path / "ref" / split)
    ref, got = read_datasheet(tmp_path / "ref"), read_datasheet(out)
    assert got["splits"] == ref["splits"]


@pytest.mark.slow
def test_colored_mnist_biased_classifier_collapses_and_counterfactuals_repair_it(tmp_path):
    """The issue's bar on the shipped colored-MNIST CGN, smaller than the README's run (minutes)."""
    from pycgn.groups import evaluate_benchmark
    benchmark({"train": (4000, "texture=agree:0.99,bg=agree:0.99"), "test": (1000, "texture=uniform,bg=uniform")},
              model="colored_mnist", out=tmp_path / "b", backend="torch", device="cpu", quiet=True)
    r = evaluate_benchmark(tmp_path / "b", epochs=3, counterfactuals=12000)  # 4000 + 4000: 74 %
    train, test = r["splits"]["train"], r["splits"]["test"]
    assert test["biased"]["accuracy"] < train["biased"]["accuracy"] - 0.4, r
    assert test["counterfactual"]["accuracy"] >= 0.85, r
