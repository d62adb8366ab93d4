"""Group evaluation on a benchmark (``pycgn benchmark evaluate``): does a classifier learn the label
or the factors that correlate with it?

Two copies of the paper's CNN (``pycgn.evaluate``): one trained on the benchmark's train split
(``biased``), one on the same split plus as many CGN counterfactuals, whose factors are drawn
independently of the label (``counterfactual``). Each is scored on every split: overall, per
group (the label's class x whether each factor agrees with the label) and on its worst group
(over groups of at least ``min_group`` images: a group of three says little).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .evaluate import accuracy, fit_classifier


def load_split(root, split: str) -> tuple[torch.Tensor, dict[str, np.ndarray], dict]:
    """(images uint8 (N, H, W, 3), label columns, manifest) of a benchmark split."""
    from .synth.stream import BenchmarkSplit
    from .synth.benchmark import split_labels
    ds = BenchmarkSplit(root, split, verify=False)
    if ds.format == "npz":
        images = np.concatenate([np.load(p)["images"] for p in ds._paths])
    else:
        images = np.stack([ds[i][0].permute(1, 2, 0).numpy() for i in range(len(ds))])
    return torch.from_numpy(images), split_labels(Path(root) / split), ds.manifest


def _scores(clf, images, labels: dict, design: dict, positions: dict, min_group: int) -> dict:
    y = labels[design["label"]]
    target = torch.from_numpy(np.array([positions.get(int(c), -1) for c in y], dtype=np.int64))
    with torch.no_grad():
        pred = torch.cat([clf(_float(images[i:i + 1000])).argmax(1) for i in range(0, len(y), 1000)])
    right = (pred == target).numpy()
    factors = [m for m in ("shape", "texture", "bg") if m != design["label"]]
    agree = {m: labels[m] == y for m in factors}
    groups = []
    for c in sorted(set(y.tolist())):
        for flags in np.ndindex(*(2,) * len(factors)):
            sel = y == c
            for m, f in zip(factors, flags):
                sel = sel & (agree[m] == bool(f))
            if sel.any():
                groups.append({"label": int(c), **{m: "agrees" if f else "differs" for m, f in zip(factors, flags)},
                               "n": int(sel.sum()), "accuracy": round(float(right[sel].mean()), 4)})
    big = [g for g in groups if g["n"] >= min_group]
    worst = min(big, key=lambda g: g["accuracy"]) if big else None
    return {"n": int(len(y)), "accuracy": round(float(right.mean()), 4),
            "worst_group_accuracy": worst["accuracy"] if worst else None, "worst_group": worst, "groups": groups}


def _float(x):
    from .evaluate import _as_float
    return _as_float(x)


def counterfactual_images(model, design: dict, n: int, seed: int, backend: str, progress: bool = False):
    """n CGN images whose factors are independent of the label (the design's label and classes,
    every other mechanism uniform), and their labels."""
    from tqdm import tqdm
    from .api import Generator
    from .synth.design import Design, DesignSampler, split_seed
    gen = Generator(model, backend=backend, device="cpu")
    d = Design(design["label"], tuple(design["classes"])).resolve(gen)
    seed = split_seed(seed, "counterfactuals")
    sampler = DesignSampler(gen.sampler(seed), d, seed)
    images, labels = [], []
    for a in tqdm(range(0, n, 500), disable=not progress, desc="counterfactuals", unit="chunk"):
        draw = sampler.draw(range(a, min(n, a + 500)))
        images.append(gen.images(draw).cpu())
        labels.append(getattr(draw, d.label).numpy())
    return torch.cat(images), np.concatenate(labels)


def evaluate_benchmark(root, train: str = "train", epochs: int = 3, counterfactuals: int | None = None,
                       seed: int = 0, model=None, min_group: int = 10, progress: bool = False) -> dict:
    """Biased vs counterfactual-trained classifier on every split of the benchmark ``root``."""
    from tqdm import tqdm
    from .synth.benchmark import read_datasheet
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    sheet = read_datasheet(root)
    if train not in sheet["splits"]:
        raise ValueError(f"train: the benchmark has no split {train!r} (it has {', '.join(sheet['splits'])})")
    x, labels, man = load_split(root, train)
    design = man["design"]
    classes = design["classes"]
    if len(classes) > 10:
        raise ValueError(f"the paper's classifier has 10 outputs; the benchmark has {len(classes)} classes")
    positions = {int(c): j for j, c in enumerate(classes)}
    y = torch.from_numpy(np.array([positions[int(c)] for c in labels[design["label"]]], dtype=np.int64))
    n_cf = len(y) if counterfactuals is None else int(counterfactuals)
    if n_cf < 1:
        raise ValueError(f"counterfactuals must be >= 1, got {counterfactuals!r}")
    t0 = time.perf_counter()
    x_cf, y_cf = counterfactual_images(model or sheet["model"]["source"], design, n_cf, seed, sheet["backend"],
                                       progress)
    y_cf = torch.from_numpy(np.array([positions[int(c)] for c in y_cf], dtype=np.int64))
    clfs = {
        "biased": fit_classifier(x, y, epochs=epochs, seed=seed, progress=progress, desc="CNN on train (biased)"),
        "counterfactual": fit_classifier(torch.cat([x, x_cf]), torch.cat([y, y_cf]), epochs=epochs, seed=seed,
                                         progress=progress, desc="CNN on train + counterfactuals"),
    }
    result = {"benchmark": str(root), "train": train, "epochs": epochs, "seed": seed, "n_train": len(y),
              "n_counterfactuals": n_cf, "min_group": min_group, "classes": classes,
              "train_accuracy": {k: round(accuracy(c, x, y), 4) for k, c in clfs.items()},
              "splits": {}}
    for name in tqdm(sheet["splits"], disable=not progress, desc="evaluating", unit="split"):
        xs, ls, m = load_split(root, name)
        if not set(m["design"]["classes"]) <= set(classes) or m["design"]["label"] != design["label"]:
            result["splits"][name] = {"skipped": "its label or classes differ from the train split's"}
            continue
        result["splits"][name] = {k: _scores(c, xs, ls, m["design"], positions, min_group)
                                  for k, c in clfs.items()}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def markdown(r: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"
    lines = [f"Trained on `{r['train']}` ({r['n_train']} images; counterfactual-trained: plus "
             f"{r['n_counterfactuals']} CGN counterfactuals), {r['epochs']} epochs; worst group over groups "
             f"of >= {r['min_group']} images.", "",
             "| split | n | biased: accuracy | biased: worst group | counterfactual: accuracy | "
             "counterfactual: worst group |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in r["splits"].items():
        if "skipped" in s:
            lines.append(f"| {name} | - | skipped: {s['skipped']} | | | |")
            continue
        b, c = s["biased"], s["counterfactual"]
        lines.append(f"| {name} | {b['n']} | {pct(b['accuracy'])} | {pct(b['worst_group_accuracy'])} | "
                     f"{pct(c['accuracy'])} | {pct(c['worst_group_accuracy'])} |")
    return "\n".join(lines) + "\n"
