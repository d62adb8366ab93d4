"""``pycgn evaluate invariance``: the MNIST experiment of the CGN paper (Sauer & Geiger, 2021, Tab. 2).

A classifier trained only on counterfactual images (each shape with a random texture and
background, from the seeded sampler) should recognise digits by shape, so it keeps its
accuracy on a test set whose colours/textures are random. A baseline trained on the biased
training data (colour/texture tied to the class) learns the shortcut and fails there.

Two test sets (``TESTS``): ``palette``, the paper's (colours/textures of the training palette,
at random), and ``off-palette`` (``pycgn.data.offpalette``: colours from the whole RGB cube,
texture photos no model saw), each with a per-digit breakdown. The latent-diversity
measurement is ``pycgn.diversity``.

Recipe as in the paper's code: the small CNN below, Adadelta lr 1.0 decayed x0.7 per epoch,
batch 64, 10 epochs, 50,000 counterfactuals (one per shape).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .models.base import VARIANTS



class CNN(nn.Module):
    """The paper's shape classifier for 32x32 RGB digits; outputs log-probabilities."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.cls = nn.Linear(64, n_classes)

    def forward(self, x):
        return F.log_softmax(self.cls(self.features(x)), dim=1)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC or float NCHW in [-1, 1] -> float NCHW in [-1, 1]."""
    if x.dtype == torch.uint8:
        return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.float()


def fit_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 10, batch_size: int = 64,
                   lr: float = 1.0, gamma: float = 0.7, seed: int = 0, progress: bool = False,
                   desc: str = "classifier") -> CNN:
    """Train the CNN with the paper's recipe. ``images``: uint8 (N, H, W, 3) or float (N, 3, H, W)."""
    from tqdm import tqdm
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"images ({images.shape[0]}) and labels ({labels.shape[0]}) must be "
                         "non-empty and of the same length")
    torch.manual_seed(seed)
    model = CNN()
    opt = torch.optim.Adadelta(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=gamma)
    g = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    model.train()
    with tqdm(total=steps, disable=not progress, desc=desc, unit="step") as bar:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                loss = F.nll_loss(model(_as_float(images[idx])), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: CNN, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted class ids (N,)."""
    model.eval()
    return torch.cat([model(_as_float(images[i:i + batch_size])).argmax(1)
                      for i in range(0, images.shape[0], batch_size)] or [torch.zeros(0, dtype=torch.int64)])


def _share_right(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return int((pred == labels).sum()) / max(1, labels.shape[0])


def accuracy(model: CNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    return _share_right(predict(model, images, batch_size), labels)


def per_class(pred: torch.Tensor, labels: torch.Tensor, n_classes: int = 10) -> list:
    """Accuracy of each class (a list of n_classes floats; None for a class absent from labels)."""
    if pred.shape != labels.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and labels {tuple(labels.shape)} must have the same shape")
    hit = (pred == labels).double()
    count = torch.bincount(labels, minlength=n_classes)[:n_classes]
    right = torch.bincount(labels, weights=hit, minlength=n_classes)[:n_classes]
    return [float(r / c) if c else None for r, c in zip(right.tolist(), count.tolist())]


def counterfactuals(model, n: int, seed: int = 0, chunk: int = 1000,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """n counterfactual images, uint8 (n, 32, 32, 3), and their shape labels: sample i has a
    random shape class, and texture and background of independently random classes."""
    from tqdm import tqdm
    from .api import Generator
    gen = Generator(model, device="cpu")
    sampler = gen.sampler(seed)
    images, labels = [], []
    for a in tqdm(range(0, n, chunk), disable=not progress, desc="counterfactuals", unit="chunk"):
        draw = sampler.draw(range(a, min(n, a + chunk)))
        images.append(gen.images(draw).cpu())
        labels.append(draw.shape.clone())
    return torch.cat(images), torch.cat(labels)


def _variant(model, variant: str | None) -> str:
    v = variant or getattr(getattr(model, "info", None), "variant", None)
    if v not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (the model's is {v!r}): "
                         "pass variant= / --variant for a custom checkpoint")
    return v


TESTS = ("palette", "off-palette")


def test_set(test: str, variant: str, seed: int = 0, mnist_dir=None, texture_dir=None):
    """The held-out digits of ``variant`` with random colours/textures: ``palette`` draws them
    from the training palette/textures (the paper's test), ``off-palette`` from the whole colour
    space / unseen texture photos (``pycgn.data.offpalette``)."""
    from .data import mnist, offpalette
    if test == "palette":
        return mnist.build(variant, "test", mnist_dir=mnist_dir, seed=seed)
    if test == "off-palette":
        return offpalette.build(variant, seed=seed, mnist_dir=mnist_dir, texture_dir_=texture_dir)
    raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")


def _tests(tests) -> tuple[str, ...]:
    if isinstance(tests, str):
        tests = [t.strip() for t in tests.split(",") if t.strip()]
    tests = tuple(tests)
    bad = [t for t in tests if t not in TESTS]
    if not tests or bad:
        raise ValueError(f"tests must be a non-empty selection of {', '.join(TESTS)}, got {list(tests)!r}")
    return tuple(dict.fromkeys(tests))


def invariance(model="colored_mnist", n: int = 50_000, epochs: int = 10, seed: int = 0,
               variant: str | None = None, baseline: bool = True, mnist_dir=None,
               progress: bool = False, tests=TESTS, texture_dir=None) -> dict:
    """The paper's invariance experiment for one CGN; returns a JSON-ready dict of accuracies.

    One classifier is trained on the counterfactuals and scored on each of ``tests``; per test
    the overall and the per-digit accuracy. A test whose data are absent (the off-palette
    wildlife photos) is recorded as skipped, with the reason."""
    from .checkpoint import load
    from .data import mnist
    from .data.offpalette import TexturesMissing
    if isinstance(n, bool) or not isinstance(n, int) or n < 10:
        raise ValueError(f"n must be an int >= 10, got {n!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    tests = _tests(tests)
    cgn = load(model) if not isinstance(model, nn.Module) else model
    variant = _variant(cgn, variant)
    info = getattr(cgn, "info", None)
    sets = {}
    for t in tests:  # before the long part: a missing file fails now, not after the training
        try:
            sets[t] = test_set(t, variant, seed=seed, mnist_dir=mnist_dir, texture_dir=texture_dir)
        except TexturesMissing as e:
            sets[t] = str(e)
    t0 = time.perf_counter()
    x_cf, y_cf = counterfactuals(cgn, n, seed=seed, progress=progress)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    clf = fit_classifier(x_cf, y_cf, epochs=epochs, seed=seed, progress=progress, desc="CNN on counterfactuals")
    t_fit = time.perf_counter() - t0
    base = None
    if baseline:
        train = mnist.build(variant, "train", mnist_dir=mnist_dir, seed=seed)
        # the same number of optimiser steps as the counterfactual classifier would be unfair
        # to neither: the paper trains both for 10 epochs of their own data
        base = fit_classifier(train.images, train.labels, epochs=epochs, seed=seed, progress=progress,
                              desc="CNN on biased data")
    result = {
        "model": str(model) if not isinstance(model, nn.Module) else "in-memory",
        "variant": variant,
        "sha256": getattr(info, "sha256", ""),
        "n": n, "epochs": epochs, "seed": seed,
        "train_accuracy_counterfactual": accuracy(clf, x_cf[:10_000], y_cf[:10_000]),
        "seconds_generate": round(t_gen, 1), "seconds_fit": round(t_fit, 1),
        "tests": {},
    }
    if base is not None:
        result["n_baseline"] = len(train)
    for t, data in sets.items():
        if isinstance(data, str):
            result["tests"][t] = {"skipped": data}
            continue
        pred = predict(clf, data.images)
        r = {"n_test": len(data), "accuracy": _share_right(pred, data.labels),
             "per_class": per_class(pred, data.labels)}
        if base is not None:
            pred = predict(base, data.images)
            r["accuracy_baseline"] = _share_right(pred, data.labels)
            r["per_class_baseline"] = per_class(pred, data.labels)
        result["tests"][t] = r
    pal = result["tests"].get("palette")
    if pal:  # the keys of the palette-only era, kept for scripts that read them
        result["n_test"] = pal["n_test"]
        result["accuracy_counterfactual"] = pal["accuracy"]
        if "accuracy_baseline" in pal:
            result["accuracy_baseline"] = pal["accuracy_baseline"]
    return result


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def markdown(results: list[dict]) -> str:
    """Two tables: the accuracy per model and test, then per digit."""
    lines = ["| model | variant | n | epochs | test | acc. counterfactual-trained | acc. biased baseline |",
             "|---|---|---:|---:|---|---:|---:|"]
    rows = []
    for r in results:
        for t, v in r["tests"].items():
            if "skipped" in v:
                lines.append(f"| {r['model']} | {r['variant']} | {r['n']} | {r['epochs']} | {t} | "
                             f"skipped: {v['skipped']} | - |")
                continue
            lines.append(f"| {r['model']} | {r['variant']} | {r['n']} | {r['epochs']} | {t} | "
                         f"{_pct(v['accuracy'])} | {_pct(v.get('accuracy_baseline'))} |")
            rows.append(f"| {r['model']} | {t} | " + " | ".join(
                "-" if a is None else f"{100 * a:.0f}" for a in v["per_class"]) + " |")
    if rows:
        lines += ["", "Per digit (% correct, counterfactual-trained classifier):", "",
                  "| model | test | " + " | ".join(str(d) for d in range(10)) + " |",
                  "|---|---|" + "---:|" * 10] + rows
    return "\n".join(lines) + "\n"
