"""``pycgn evaluate diversity``: how much each mechanism's output changes with its latent.

A CGN whose texture net ignores its noise u draws one texture per class: its counterfactuals
vary only by class and crop, and a classifier trained on them sees far fewer colours than
it could. The statistic, per mechanism (shape, texture, background) and class:

- ``latent``: the mean pairwise distance of the mechanism's outputs for ``n_latents`` latents
  of that class (before the texture crop), distance = root-mean-square pixel difference
  (masks in [0, 1], textures in [-1, 1]);
- ``real``: the same statistic on as many real training images of that class (its masks,
  foregrounds or backgrounds from ``pycgn.data.mnist.components``, biased as in training);
- ``ratio`` = latent / real: the share of the real within-class spread the latent reaches
  (None where the real data do not vary, e.g. colored MNIST's black background);
- ``crop`` (texture and background): the mean pairwise distance of ``n_crops`` crop offsets
  of one texture, averaged over the latents: the variety the shuffler adds;
- ``speckles`` (shape), and ``real_speckles``: isolated mask pixels per mask (``speckles()``).
"""
from __future__ import annotations

import torch

from .models.base import MECHANISMS
from .reference import crop

N_CLASSES = 10
# Regression floor of ``check``: a latent-ignoring mechanism scores exactly 0; the weakest
# mechanism of the shipped and published models scores well above this (see the model card).
MIN_RATIO = 0.01
# What the shipped colour models reach (issue 20's bar): every texture and background net's latent
# moves its output at least this share of the real within-class spread; the tests hold them to it.
# (Wildlife's real variety is the crop; its shipped nets stay near MIN_RATIO: model card.)
SHIPPED_RATIO = 0.25
# a real spread below this is "does not vary" (black backgrounds): no ratio there
_FLAT = 1e-6


def mean_pairwise(x: torch.Tensor) -> float:
    """Mean over pairs i < j of the root-mean-square difference of x[i] and x[j]; x (N, ...), N >= 2."""
    if x.ndim < 1 or x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 samples along dim 0, got shape {tuple(x.shape)}")
    f = x.reshape(x.shape[0], -1).double()
    d = torch.cdist(f, f) / f.shape[1] ** 0.5
    n = f.shape[0]
    return float(d.triu(1).sum() / (n * (n - 1) / 2))


def class_spread(x: torch.Tensor, labels: torch.Tensor, n_classes: int = N_CLASSES, n: int = 64) -> list:
    """Per class, ``mean_pairwise`` of the first ``n`` samples of that class in ``x`` (0.0 where
    fewer than 2): the within-class spread the latent is measured against (and trained towards)."""
    out = []
    for y in range(n_classes):
        s = x[labels == y][:n]
        out.append(mean_pairwise(s) if s.shape[0] >= 2 else 0.0)
    return out


def neighbour_mean(x: torch.Tensor) -> torch.Tensor:
    """Per pixel of x (N, C, H, W), the mean of its 8 neighbours (zero outside the image)."""
    f = torch.nn.functional
    return (f.avg_pool2d(f.pad(x, (1, 1, 1, 1)), 3, 1) * 9 - x) / 8


def speckles(masks: torch.Tensor) -> float:
    """Mean count per mask (N, 1, H, W) of isolated pixels: on (> 0.5) with none of their 8
    neighbours on. Real digit masks have almost none; a mask net's speckles show here."""
    on = (masks > 0.5).float()
    alone = neighbour_mean(on) < 1 / 16  # no neighbour on (one would make the mean 1/8)
    return float(((on == 1) & alone).float().sum((1, 2, 3)).mean())


def _crops(tex: torch.Tensor, n_crops: int, g: torch.Generator) -> float:
    """Mean over textures (N, 3, S, S) of the mean pairwise distance of n_crops circular shifts
    with offsets in {0, ..., S} per axis, as the published shuffler draws them."""
    size = tex.shape[-1]
    out = []
    for t in tex:
        off = torch.randint(size + 1, (n_crops, 2), generator=g)
        out.append(mean_pairwise(crop(t.expand(n_crops, *t.shape), off, size, size)))
    return sum(out) / len(out)


@torch.no_grad()
def latent_spread(cgn, n_latents: int = 64, n_crops: int = 8, seed: int = 0) -> dict:
    """Per mechanism: ``latent`` (and for textures ``crop``), lists over the classes."""
    g = torch.Generator().manual_seed(int(seed))
    nets = {"shape": cgn.shape, "texture": cgn.texture, "background": cgn.background}
    out = {m: {"latent": [], "speckles": []} if m == "shape" else {"latent": [], "crop": []} for m in MECHANISMS}
    for y in range(cgn.n_classes):
        u = torch.randn(n_latents, cgn.latent_dim, generator=g)
        ys = torch.full((n_latents,), y, dtype=torch.int64)
        for m in MECHANISMS:
            x = nets[m](u, ys)
            if m == "shape":
                x = x.clamp(0.0, 1.0)  # the mask as composited
                out[m]["speckles"].append(round(speckles(x), 4))
            out[m]["latent"].append(round(mean_pairwise(x), 5))
            if m != "shape":
                out[m]["crop"].append(round(_crops(x, n_crops, g), 5))
    return out


def real_spread(variant: str, n: int = 64, seed: int = 0, mnist_dir=None) -> dict:
    """Per mechanism, a list over the classes: the statistic on n real training parts per class."""
    from .data import mnist
    digits, labels = mnist.load_digits("train", mnist_dir)
    parts = dict(zip(MECHANISMS, mnist.components(variant, digits, labels, True, seed)))
    labels = torch.as_tensor(labels)
    out = {}
    for m, x in parts.items():  # the split is shuffled: the first n of a class are a random sample
        out[m] = [round(v, 5) for v in class_spread(x, labels, N_CLASSES, n)]
        if m == "shape":
            out["speckles"] = [round(speckles(x[labels == y][:n]), 4) for y in range(N_CLASSES)]
    return out


def diversity(model="colored_mnist", variant: str | None = None, n_latents: int = 64, n_crops: int = 8,
              seed: int = 0, mnist_dir=None) -> dict:
    """The statistics above for every mechanism and class; a JSON-ready dict."""
    from .checkpoint import load
    from .evaluate import _variant
    for name, v in (("n_latents", n_latents), ("n_crops", n_crops)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"{name} must be an int >= 2, got {v!r}")
    cgn = load(model) if not isinstance(model, torch.nn.Module) else model
    variant = _variant(cgn, variant)
    cgn.eval()
    out = latent_spread(cgn, n_latents, n_crops, seed)
    real = real_spread(variant, n_latents, seed, mnist_dir)
    out["shape"]["real_speckles"] = real["speckles"]
    for m, v in out.items():
        v["real"] = real[m]
        v["ratio"] = [round(lat / rl, 4) if rl > _FLAT else None for lat, rl in zip(v["latent"], real[m])]
    info = getattr(cgn, "info", None)
    return {"model": str(model) if not isinstance(model, torch.nn.Module) else "in-memory",
            "variant": variant, "sha256": getattr(info, "sha256", ""), "n_latents": n_latents,
            "n_crops": n_crops, "seed": seed, "mechanisms": out,
            "min_ratio": {m: min((r for r in out[m]["ratio"] if r is not None), default=None)
                          for m in MECHANISMS}}


def check(result: dict, min_ratio: float = MIN_RATIO) -> list[str]:
    """Failures (empty: passed): every mechanism and class whose latent reaches less than
    ``min_ratio`` of the real spread; classes whose real data do not vary are not judged."""
    bad = []
    for m, v in result["mechanisms"].items():
        for y, r in enumerate(v["ratio"]):
            if r is not None and r < min_ratio:
                bad.append(f"{result['model']}: {m} of class {y} changes {r:.4f} x the real spread "
                           f"with its latent (floor {min_ratio})")
    return bad


def markdown(results: list[dict]) -> str:
    """One row per model and mechanism: the ratio per class, its minimum, and the crop's."""
    lines = ["| model | variant | mechanism | latent / real spread, classes 0-9 | min | "
             "latent (mean) | real (mean) | crop (mean) | speckles per mask (real) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        for m, v in r["mechanisms"].items():
            ratios = " ".join("-" if x is None else f"{x:.2f}" for x in v["ratio"])
            mn = r["min_ratio"][m]
            crop = f"{sum(v['crop']) / len(v['crop']):.3f}" if "crop" in v else "-"
            spk = (f"{sum(v['speckles']) / len(v['speckles']):.2f} ({sum(v['real_speckles']) / len(v['real_speckles']):.2f})"
                   if "speckles" in v else "-")
            lines.append(f"| {r['model']} | {r['variant']} | {m} | {ratios} | "
                         f"{'-' if mn is None else f'{mn:.2f}'} | {sum(v['latent']) / len(v['latent']):.3f} | "
                         f"{sum(v['real']) / len(v['real']):.3f} | {crop} | {spk} |")
    return "\n".join(lines) + "\n"
